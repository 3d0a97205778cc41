"""`tinybev synth`: write a synthetic dataset in the nuScenes format."""

from __future__ import annotations

import argparse
import logging
import time

from tinybev_ros.synth.config import MAP_NAMES, SynthConfig
from tinybev_ros.synth.generator import generate

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    defaults = SynthConfig()
    parser.add_argument("--out", required=True, help="dataroot to create")
    parser.add_argument("--scenes", type=int, default=defaults.scenes, help="number of scenes")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed (same seed, same dataset)")
    parser.add_argument("--duration", type=float, default=defaults.duration_s, help="seconds per scene")
    parser.add_argument("--version", default=defaults.version, choices=["v1.0-mini", "v1.0-trainval"],
                        help="table folder name; scene names come from this version's devkit split lists")
    parser.add_argument("--sweeps", action="store_true", help="also write non-keyframe camera and LiDAR data")
    parser.add_argument("--maps", nargs="+", default=list(defaults.maps), choices=list(MAP_NAMES),
                        help="maps the scenes are spread over")
    parser.add_argument("--force", action="store_true", help="replace an existing non-empty output directory")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    try:
        config = SynthConfig(scenes=args.scenes, seed=args.seed, version=args.version, duration_s=args.duration,
                             sweeps=args.sweeps, maps=tuple(args.maps))
        root = generate(args.out, config, overwrite=args.force)
    except (FileExistsError, ValueError) as exc:
        log.error("synth: %s", exc)
        return 2
    log.info("synth: wrote %d scene(s) to %s in %.1f s", config.scenes, root, time.perf_counter() - start)
    return 0
