"""What `tinybev.launch.py` starts, decided from its arguments without the launch machinery (unit-testable).

The launch file reads its arguments at launch time (an OpaqueFunction) and asks `plan_launch` for:
- the parameter overrides: only the arguments the user gave (non-empty) override the params file, so a file
  saying `device: cpu` stays cpu unless `device:=...` is on the command line;
- the environment: FASTDDS_DEFAULT_PROFILES_FILE is set to the shipped profile only if the user has none;
- what else to start (rviz2, the bag player), after checking that each is installed: a missing rviz2 or
  `ros2 bag` fails the launch with one clear message before any process starts, so nothing is orphaned; so does
  a params file or a bag that does not exist (launch_ros would start the node on its defaults, or leave it
  waiting for a player that exited at once).
The player is started by the launch file only once the node logs its ready line (`READY_MARKER`), never on a
timer: the node needs seconds to import torch and warm up, and frames played before that are lost. It starts
paused and is resumed (rosbag2's resume service) once the node logs that every camera's reader has matched a
writer (`INPUTS_MARKER`): images are best-effort, and those sent before the match are lost (measured under the
real `ros2 launch`: 7 of 8 keyframes on an idle CPU, 3 of 8 on a loaded one, when the player published at once).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tinybev_ros.ros.interface import NAMESPACE, input_remaps
from tinybev_ros.ros.node_config import PerceptionNodeConfig
from tinybev_ros.ros.params_file import node_inputs, node_parameters, sections_for_other_nodes

READY_MARKER = "ready:"  # the node's log line once it subscribes and has warmed up (perception_node.py)
INPUTS_MARKER = "inputs matched:"  # the node's log line once every camera's image reader has a writer
RESUME_COMMAND = ["ros2", "service", "call", "/rosbag2_player/resume", "rosbag2_interfaces/srv/Resume"]
OVERRIDABLE = {"checkpoint": str, "device": str, "publish_images": bool, "use_sim_time": bool}


class LaunchPlanError(RuntimeError):
    """The launch cannot start as asked; nothing has been started."""


@dataclass
class LaunchPlan:
    overrides: dict[str, object] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    remaps: list[tuple[str, str]] = field(default_factory=list)  # camera inputs to the cameras of the launch namespace
    rviz: bool = False
    rviz_sim_time: bool | None = None  # use_sim_time for rviz2: the node's, where the arguments or params file say
    bag_command: list[str] | None = None  # started (paused) when the node is ready
    resume_command: list[str] | None = None  # run when the node's readers have matched the player's writers


def _boolean(name: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise LaunchPlanError(f"launch argument {name}:={text!r} is not a boolean (true or false)")


def _ros2_bag_available() -> bool:
    """`ros2 bag` to play and `ros2 service` to resume the player."""
    if shutil.which("ros2") is None:
        return False
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:
        return False
    try:
        for package in ("ros2bag", "ros2service"):
            get_package_share_directory(package)
    except PackageNotFoundError:
        return False
    return True


def bag_playback(bag: str, inputs: PerceptionNodeConfig, root: str) -> tuple[bool, bool]:
    """Whether the bag's camera images are raw, and whether it holds its own /clock. A bag without every camera's
    images where the node will read them is refused, since the player would stay paused for ever (it is resumed
    once every camera's reader has a writer)."""
    from tinybev_ros.ros.run import RunInputError, bag_camera_topics, bag_message_counts

    try:
        held = bag_message_counts(Path(bag))
        return bag_camera_topics(Path(bag), inputs, held, root)[1], "/clock" in held
    except (RunInputError, FileNotFoundError) as exc:  # not a bag, or not every camera in it
        raise LaunchPlanError(f"bag:={exc}; nothing was started") from None


def plan_launch(arguments: Mapping[str, str], environ: Mapping[str, str], dds_profile: str,
                which: Callable[[str], str | None] = shutil.which,
                ros2_bag_available: Callable[[], bool] = _ros2_bag_available, namespace: str = "") -> LaunchPlan:
    """The plan for these launch arguments (strings as given, "" = not given) in this environment; `namespace`: the
    one the launch was pushed into (launch_ros's PushRosNamespace), under which the node, its params file's section
    and the cameras it reads are found."""
    plan = LaunchPlan()
    root = "/" + namespace.strip("/") if namespace.strip("/") else ""
    node_name = f"{root}{NAMESPACE}/tinybev_node"
    params_file = arguments.get("params_file", "")
    if params_file and not os.path.isfile(params_file):  # launch_ros would warn and start on the defaults
        raise LaunchPlanError(f"params_file:={params_file} is not a file; nothing was started")
    if params_file and (others := sections_for_other_nodes(Path(params_file), node_name)):
        raise LaunchPlanError(f"params_file:={params_file} sets parameters for {', '.join(others)}, none of which "
                              f"is the node, {node_name} (rcl reads a key without a leading slash from the root: "
                              "write /**/tinybev_node); nothing was started")
    inputs = node_inputs(Path(params_file) if params_file else None, node_name)
    plan.remaps = input_remaps(inputs, root or "/")
    for name, kind in OVERRIDABLE.items():
        text = arguments.get(name, "")
        if text != "":
            plan.overrides[name] = _boolean(name, text) if kind is bool else text
    if not environ.get("FASTDDS_DEFAULT_PROFILES_FILE"):
        plan.environment["FASTDDS_DEFAULT_PROFILES_FILE"] = dds_profile
    plan.rviz = _boolean("rviz", arguments.get("rviz", "") or "false")
    if plan.rviz and which("rviz2") is None:
        raise LaunchPlanError("rviz:=true but rviz2 is not installed (apt install ros-$ROS_DISTRO-rviz2); "
                              "nothing was started")
    bag = arguments.get("bag", "")
    if bag:
        if not os.path.exists(bag):  # the player would exit at once and leave the node waiting for images
            raise LaunchPlanError(f"bag:={bag} does not exist; nothing was started")
        if not ros2_bag_available():
            raise LaunchPlanError(f"bag:={bag} needs `ros2 bag` and `ros2 service` (apt install "
                                  "ros-$ROS_DISTRO-ros2bag ros-$ROS_DISTRO-ros2service), which are not installed; "
                                  "nothing was started (without ROS: tinybev run --bag)")
        raw, holds_clock = bag_playback(bag, inputs, root or "/")
        # The node is told what the bag holds, as `tinybev run` does, whatever the params file says: reading the
        # other transport it would never match the player, which would then stay paused.
        plan.overrides["image_transport"] = "raw" if raw else "compressed"
        plan.overrides.setdefault("use_sim_time", True)  # the bag's time, unless use_sim_time:=false was given
        # A bag's own /clock (bag convert writes one) is played as it is: with --clock as well, rosbag2 releases
        # before ros2/rosbag2#1646 (2024) published both clocks, and time stepped back and forth.
        plan.bag_command = ["ros2", "bag", "play", bag, "--start-paused", *([] if holds_clock else ["--clock"])]
        plan.resume_command = RESUME_COMMAND
    # rviz follows the node's clock: the argument or the params file; left to the launch's own (SetParameter) if
    # neither says
    sim_time = plan.overrides.get("use_sim_time", node_parameters(Path(params_file), node_name).get(
        "use_sim_time") if params_file else None)
    plan.rviz_sim_time = sim_time if isinstance(sim_time, bool) else None
    return plan
