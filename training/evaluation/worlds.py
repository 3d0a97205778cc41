"""`tinybev eval-worlds`: a checkpoint on synthetic worlds of seeds no training run saw, one row per seed + mean.

For each seed it writes (once; reused later) `tinybev synth --seed S --scenes N --duration D` into the work
folder, then runs `tinybev eval` over its train split (the larger part: 8 of every 10 scenes; nothing of that seed
was ever trained on) and prints the headline figures per seed with their mean and standard deviation, as
`worlds.md` / `worlds.json`. This is how the README's figures "on unseen worlds" are made.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from nuscenes.nuscenes import NuScenes

from tinybev_ros.atomic_file import write_text
from tinybev_ros.checkpoint import read_checkpoint
from tinybev_ros.errors import ConfigError
from tinybev_ros.paths import check_output_folder
from tinybev_ros.synth import SynthConfig, generate
from training.evaluation.command import evaluate_checkpoint
from training.evaluation.report import summary_row, write_json
from training.evaluation.suite import ALL_TASKS, parse_tasks

COLUMNS = (("mAP", "mAP", 3), ("NDS", "NDS", 3), ("AMOTA", "AMOTA", 3), ("minADE (m)", "minADE", 2),
           ("map mIoU", "map_iou", 3), ("occ IoU", "occ_iou", 3), ("plan L2 (m)", "plan_l2", 2),
           ("collision (%)", "collision", 2))


MAX_WORLD_SCENES = 10  # a world is a v1.0-mini dataset: the devkit's mini scene names (8 mini_train, 2 mini_val)


def check_world_size(scenes: int, duration_s: float, what: str = "--scenes") -> None:
    """Before any world is generated or model trained: what `world` can make."""
    if not 1 <= scenes <= MAX_WORLD_SCENES or not duration_s > 0:
        raise ConfigError(f"{what} {scenes}: a fresh world holds 1 to {MAX_WORLD_SCENES} scenes (the v1.0-mini scene "
                          f"names) of a positive duration (got {duration_s:g} s)")


def world(work: Path, seed: int, scenes: int, duration_s: float) -> Path:
    """The dataroot of a fresh world (generated on first use)."""
    root = work / f"synth_seed{seed}_{scenes}x{duration_s:g}s"
    if not (root / "v1.0-mini").is_dir():
        generate(root, SynthConfig(scenes=scenes, seed=seed, duration_s=duration_s, version="v1.0-mini"))
    return root


def table(rows: dict[str, dict[str, float]]) -> str:
    def cell(value: float, digits: int) -> str:
        return "n/a" if not np.isfinite(value) else f"{value:.{digits}f}"

    lines = ["| world | " + " | ".join(name for name, _, _ in COLUMNS) + " |",
             "|---" * (len(COLUMNS) + 1) + "|"]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(cell(row[key], d) for _, key, d in COLUMNS) + " |")
    values = {key: np.array([row[key] for row in rows.values()], dtype=float) for _, key, _ in COLUMNS}

    def mean_std(key: str, digits: int) -> str:
        """Over the worlds that scored it (a world without, say, a tracked class has none), with the sample
        standard deviation (ddof 1, as `tinybev ablate`'s seed spread), and how many worlds that is when not all."""
        finite = values[key][np.isfinite(values[key])]
        if finite.size == 0:
            return "n/a"
        spread = f"{finite.std(ddof=1):.{digits}f}" if finite.size > 1 else "n/a"
        counted = "" if finite.size == len(rows) else f" ({finite.size} worlds)"
        return f"{finite.mean():.{digits}f} ± {spread}{counted}"

    lines.append(f"| mean ± std ({len(rows)} seeds) | " + " | ".join(mean_std(key, d) for _, key, d in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="student or teacher checkpoint (.safetensors)")
    parser.add_argument("--seeds", type=int, nargs="+", required=True, help="synthetic world seeds (not trained on)")
    parser.add_argument("--scenes", type=int, default=10, help="scenes per world (8 train + 2 val at 10)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per scene")
    parser.add_argument("--work", default="runs/fresh_worlds", help="where the worlds are generated and kept")
    parser.add_argument("--out", required=True, help="output folder: worlds.md, worlds.json, one eval per seed")
    parser.add_argument("--tasks", default=",".join(ALL_TASKS), help="comma-separated subset of " + ",".join(ALL_TASKS))
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")


def run(args: argparse.Namespace) -> int:
    tasks = parse_tasks(args.tasks)
    check_world_size(args.scenes, args.duration)
    if not Path(args.checkpoint).is_file():
        raise SystemExit(f"tinybev eval-worlds: checkpoint {args.checkpoint} does not exist")
    read_checkpoint(args.checkpoint)  # a file that is no checkpoint is named now, not after a world is generated
    if len(set(args.seeds)) != len(args.seeds):
        raise ConfigError(f"--seeds {' '.join(map(str, args.seeds))} names a world twice")
    check_output_folder(args.out)
    out = Path(args.out)
    check_output_folder(args.work, "--work")
    rows: dict[str, dict[str, float]] = {}
    for seed in args.seeds:
        root = world(Path(args.work), seed, args.scenes, args.duration)
        nusc = NuScenes(version="v1.0-mini", dataroot=str(root), verbose=False)
        metrics = evaluate_checkpoint(args.checkpoint, nusc, "mini_train", out / f"seed{seed}", tasks, args.device,
                                      figure_scenes=0, speed=False)
        rows[f"seed {seed}"] = summary_row(metrics)
    text = table(rows)
    write_text(out / "worlds.md", f"`{args.checkpoint}` on unseen synthetic worlds ({args.scenes} scenes x "
               f"{args.duration:g} s each, mini_train split)\n\n{text}")
    write_json(out / "worlds.json", {"checkpoint": str(args.checkpoint), "rows": rows})
    print(text)
    return 0
