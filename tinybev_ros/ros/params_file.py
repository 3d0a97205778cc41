"""What a ROS 2 params file sets for tinybev_node, read without rclpy.

The launch file and `tinybev run` connect the node's relative camera inputs to the cameras at the root with
remaps made before the node starts (interface.input_remaps); they must be made from the cameras and topic
patterns the node will use, which a params file may change (a rig whose cameras are not named CAM_*).
Node keys follow rcl's params-file rules: a fully qualified node name, where `*` stands for one name token
and `**` for any number of them; a key without a leading slash is taken from the root. Later keys win. Values
are not checked here: the node validates them at start-up and names a bad one.
"""

from __future__ import annotations

import re
from dataclasses import fields, replace
from pathlib import Path

import yaml

from tinybev_ros.ros.interface import NAMESPACE
from tinybev_ros.ros.node_config import PerceptionNodeConfig

NODE_NAME = f"{NAMESPACE}/tinybev_node"  # where the launch file and `tinybev run` put the node
INPUT_PARAMETERS = ("cameras", "compressed_topic", "raw_topic", "camera_info_topic")


def _key_pattern(key: str) -> re.Pattern[str]:
    tokens = ("/" + key.lstrip("/")).split("/")[1:]
    parts = ["(/[^/]+)*" if token == "**" else "/" + ("[^/]+" if token == "*" else re.escape(token))
             for token in tokens]
    return re.compile("".join(parts))


def parameter_sections(path: Path) -> list[tuple[str, dict[str, object]]]:
    """(node key, its `ros__parameters`) in file order; [] for a file rclpy would reject (the node then says why)."""
    try:
        document = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []
    sections = []
    for key, section in (document or {}).items() if isinstance(document, dict) else ():
        parameters = section.get("ros__parameters") if isinstance(section, dict) else None
        if isinstance(parameters, dict):
            sections.append((str(key), parameters))
    return sections


def names_node(key: str, node_name: str = NODE_NAME) -> bool:
    """Whether rcl applies a params file's node key to the node of this fully qualified name."""
    return _key_pattern(key).fullmatch(node_name) is not None


def node_parameters(path: Path, node_name: str = NODE_NAME) -> dict[str, object]:
    """The `ros__parameters` that apply to `node_name`, merged in file order."""
    merged: dict[str, object] = {}
    for key, parameters in parameter_sections(path):
        if names_node(key, node_name):
            merged.update(parameters)
    return merged


def sections_for_other_nodes(path: Path, node_name: str = NODE_NAME) -> list[str]:
    """The file's node keys when it has some and none applies to `node_name` (the node would start on its defaults
    without a word: `tinybev_node:` is rcl's /tinybev_node, not /tinybev/tinybev_node); else []."""
    keys = [key for key, _ in parameter_sections(path)]
    return [] if any(names_node(key, node_name) for key in keys) else keys


def node_inputs(path: Path | None, node_name: str = NODE_NAME) -> PerceptionNodeConfig:
    """The defaults, with the cameras and input topic patterns the params file gives (values of the wrong type are
    left to the node's own check)."""
    config = PerceptionNodeConfig()
    if path is None:
        return config
    given = node_parameters(path, node_name)
    kinds = {f.name: type(getattr(config, f.name)) for f in fields(config)}
    chosen = {name: given[name] for name in INPUT_PARAMETERS if isinstance(given.get(name), kinds[name])}
    if not all(isinstance(camera, str) for camera in chosen.get("cameras", [])):
        chosen.pop("cameras")
    return replace(config, **chosen)
