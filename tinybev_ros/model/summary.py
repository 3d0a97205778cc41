"""`tinybev params`: parameter count of the student per part, for a model config."""

from __future__ import annotations

import argparse

from tinybev_ros.model import ModelConfig, build_student, load_model_config


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="model config YAML (default: the built-in base config)")


def format_counts(counts: dict[str, int]) -> str:
    total = counts["total"]
    lines = [f"{name:32s} {count / 1e6:9.3f} M  {100.0 * count / total:5.1f} %"
             for name, count in counts.items() if name != "total"]
    lines.append(f"{'total':32s} {total / 1e6:9.3f} M  ({total:,} parameters)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    config = load_model_config(args.config) if args.config else ModelConfig()
    print(f"TinyBEV student '{config.name}': {config.image_height}x{config.image_width} input, "
          f"BEV {config.grid.shape[0]}x{config.grid.shape[1]} at {config.grid.resolution} m, "
          f"{config.num_depth_bins} depth bins")
    print(format_counts(build_student(config).parameter_counts()))
    return 0
