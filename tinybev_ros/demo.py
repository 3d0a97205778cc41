"""`tinybev demo`: the main job on the embedded default (synthetic scene -> bag -> node -> outputs).

The pipeline is assembled stage by stage as the capabilities land; stages not built yet are reported,
never faked.
"""

from __future__ import annotations

import argparse
import importlib.util

# stage description -> module that implements it
STAGES: dict[str, str] = {
    "synthetic nuScenes-format scene": "tinybev_ros.synth",
    "nuScenes -> rosbag2 conversion": "tinybev_ros.ros.bag_tools",
    "student model and checkpoint": "tinybev_ros.model",
    "perception node": "tinybev_ros.ros.perception_node",
    "evaluation and pictures": "training.evaluate",
}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_out", help="output directory")


def run(args: argparse.Namespace) -> int:
    missing = [name for name, module in STAGES.items() if importlib.util.find_spec(module) is None]
    for name, module in STAGES.items():
        print(f"  {'missing' if name in missing else 'ready  '}  {name} ({module})")
    print(f"demo: {len(missing)} of {len(STAGES)} stages are not built yet; nothing written to {args.out}")
    return 1
