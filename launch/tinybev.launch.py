"""Launch the TinyBEV perception node (and optionally rviz2 and a bag replay).

    ros2 launch tinybev_ros tinybev.launch.py [checkpoint:=PATH] [device:=auto|cpu|cuda]
        [use_sim_time:=true] [rviz:=true] [bag:=PATH] [params_file:=PATH] [publish_images:=true]

Only the arguments given override the params file. `bag:=PATH` starts the player paused (`ros2 bag play PATH
--start-paused`, with `--clock` when the bag has no /clock of its own) once the node is ready (its "ready:" log
line) and resumes it once the node's readers have matched the player's writers ("inputs matched:"), so no frame is
played into a node still loading or lost to discovery; with a bag the node (and rviz2) follow its clock unless
`use_sim_time:=false` is given. A missing rviz2, `ros2 bag`, params file or bag, or a params file none of whose
sections names the node, stops the launch before anything starts; a node, player or resume call that fails ends
it with status 1. Included under a namespace (PushRosNamespace `robot1`), the node is /robot1/tinybev/tinybev_node
and reads the cameras under /robot1 (rviz's shipped config shows /tinybev's topics). Camera topics other than
`/<camera>/image_rect/compressed` are set in the params file (`compressed_topic`, `raw_topic`,
`camera_info_topic`, `cameras`), not by remapping the launch. What is started is decided by
tinybev_ros/ros/launch_plan.py (tested without launch; tools/launch_check.py runs this file under the real
`ros2 launch`). Where `ros2 launch` is absent, `tinybev run` starts the same node with the same params file.
"""

import os

from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    ExecuteProcess,
    OpaqueFunction,
    RegisterEventHandler,
    SetEnvironmentVariable,
    Shutdown,
)
from launch.event_handlers import OnProcessExit, OnProcessIO
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from tinybev_ros.ros.launch_plan import INPUTS_MARKER, OVERRIDABLE, READY_MARKER, plan_launch

ARGUMENTS = ("params_file", *OVERRIDABLE, "rviz", "bag")


def _fail_on_error(name: str, ends_launch: bool):
    """An exit handler: a process that failed ends the launch with status 1 (launch's own for an exception raised
    in a handler), so scripts, CI and `Restart=on-failure` see it; a clean exit ends the launch if `ends_launch`
    (the node), else nothing (the player at the bag's end). Processes the launch itself stops while shutting down
    (SIGINT on Ctrl-C) exit non-zero too, and are not failures."""
    def on_exit(event, context):
        if getattr(context, "is_shutdown", False):  # stopped by the launch (Ctrl-C, the node's end): no failure
            return None
        if event.returncode:
            raise RuntimeError(f"{name} exited with status {event.returncode} (its own lines above say why)")
        return [Shutdown(reason=f"{name} exited")] if ends_launch else None
    return on_exit


def _start(context):
    share = FindPackageShare("tinybev_ros").perform(context)
    arguments = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    namespace = context.launch_configurations.get("ros_namespace", "") or ""  # PushRosNamespace around the include
    plan = plan_launch(arguments, os.environ, os.path.join(share, "config", "fastdds.xml"), namespace=namespace)
    actions = [SetEnvironmentVariable(name, value) for name, value in plan.environment.items()]
    # inputs are relative (namespace-able); the remaps connect them to the cameras at the launch's namespace
    # (interface.py), made from the params file's cameras and topic patterns (launch_plan.py)
    node = Node(package="tinybev_ros", executable="tinybev_node", name="tinybev_node", namespace="tinybev",
                output="screen", parameters=[arguments["params_file"], plan.overrides],
                remappings=plan.remaps)
    actions += [node, RegisterEventHandler(OnProcessExit(target_action=node,
                                                         on_exit=_fail_on_error("tinybev_node", True)))]
    if plan.rviz:
        sim_time = [] if plan.rviz_sim_time is None else [{"use_sim_time": plan.rviz_sim_time}]
        actions.append(Node(package="rviz2", executable="rviz2", name="rviz2",
                            arguments=["-d", os.path.join(share, "config", "tinybev.rviz")], parameters=sim_time))
    if plan.bag_command is not None:
        # in this order, once each
        steps = [(READY_MARKER, "the bag player", plan.bag_command),
                 (INPUTS_MARKER, "the player's resume call", plan.resume_command)]

        def on_output(event):
            text, actions = event.text.decode(errors="replace"), []
            while steps and steps[0][0] in text:
                _, name, command = steps.pop(0)
                process = ExecuteProcess(cmd=command, output="screen")
                # a player (or resume call) that fails would leave the node waiting for images without a word
                actions += [process, RegisterEventHandler(OnProcessExit(target_action=process,
                                                                        on_exit=_fail_on_error(name, False)))]
            return actions or None

        actions.append(RegisterEventHandler(OnProcessIO(target_action=node, on_stdout=on_output,
                                                        on_stderr=on_output)))
    return actions


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("tinybev_ros")
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "config", "tinybev.yaml"]),
                              description="node parameters (YAML)"),
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="student checkpoint (.safetensors); empty: the params file's"),
        DeclareLaunchArgument("device", default_value="", description="auto, cpu or cuda; empty: the params file's"),
        DeclareLaunchArgument("use_sim_time", default_value="",
                              description="follow /clock (bag replay); empty: the params file's"),
        DeclareLaunchArgument("publish_images", default_value="",
                              description="publish the BEV rendering and camera overlays; empty: the params file's"),
        DeclareLaunchArgument("rviz", default_value="false", description="start rviz2 with the shipped config"),
        DeclareLaunchArgument("bag", default_value="", description="play this bag once the node is ready"),
        OpaqueFunction(function=_start),
    ])
