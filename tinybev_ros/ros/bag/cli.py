"""`tinybev bag {convert,play,record,recover}`: the nuScenes converter and rosbag2-style tools in one place."""

from __future__ import annotations

import argparse
import importlib

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "convert": ("tinybev_ros.ros.bag.nuscenes_to_bag", "nuScenes scene(s) -> rosbag2 bag(s) (same as nuscenes_to_bag)"),
    "play": ("tinybev_ros.ros.bag.play", "publish a bag's messages with their recorded timing (like ros2 bag play)"),
    "record": ("tinybev_ros.ros.bag.record", "write live topics to a bag (like ros2 bag record)"),
    "recover": ("tinybev_ros.ros.bag.recover", "make a bag of what a killed recorder left (like ros2 bag reindex)"),
}


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bag_command", metavar="BAG_COMMAND", required=True)
    for name, (module, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).configure(sub_parser)


def run(args: argparse.Namespace) -> int:
    return int(importlib.import_module(SUBCOMMANDS[args.bag_command][0]).run(args) or 0)
