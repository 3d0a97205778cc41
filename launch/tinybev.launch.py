"""Launch the TinyBEV perception node (and optionally rviz2 and a bag replay).

    ros2 launch tinybev_ros tinybev.launch.py [checkpoint:=PATH] [device:=auto|cpu|cuda]
        [use_sim_time:=true] [rviz:=true] [bag:=PATH] [params_file:=PATH] [publish_images:=true]

Only the arguments given override the params file. `bag:=PATH` plays the bag (`ros2 bag play PATH --clock`)
once the node is ready (its "ready:" log line), so no frame is played into a node still loading; combine it
with `use_sim_time:=true` so the node's clock follows the bag. A missing rviz2 or `ros2 bag` stops the launch
before anything starts. What is started is decided by tinybev_ros/ros/launch_plan.py (tested without launch).
Where `ros2 launch` is absent, `tinybev run` starts the same node with the same params file.
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

from tinybev_ros.ros.interface import input_remaps
from tinybev_ros.ros.launch_plan import OVERRIDABLE, READY_MARKER, plan_launch
from tinybev_ros.ros.node_config import PerceptionNodeConfig

ARGUMENTS = ("params_file", *OVERRIDABLE, "rviz", "bag")


def _start(context):
    share = FindPackageShare("tinybev_ros").perform(context)
    arguments = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    plan = plan_launch(arguments, os.environ, os.path.join(share, "config", "fastdds.xml"))
    actions = [SetEnvironmentVariable(name, value) for name, value in plan.environment.items()]
    # inputs are relative (namespace-able); the remaps connect them to the cameras at the root (interface.py)
    node = Node(package="tinybev_ros", executable="tinybev_node", name="tinybev_node", namespace="tinybev",
                output="screen", parameters=[arguments["params_file"], plan.overrides],
                remappings=input_remaps(PerceptionNodeConfig().cameras))
    actions += [node, RegisterEventHandler(OnProcessExit(target_action=node, on_exit=[
        Shutdown(reason="tinybev_node exited")]))]
    if plan.rviz:
        actions.append(Node(package="rviz2", executable="rviz2", name="rviz2",
                            arguments=["-d", os.path.join(share, "config", "tinybev.rviz")],
                            parameters=[{"use_sim_time": bool(plan.overrides.get("use_sim_time", False))}]))
    if plan.bag_command is not None:
        started = []

        def on_output(event):
            if started or READY_MARKER not in event.text.decode(errors="replace"):
                return None
            started.append(True)
            return [ExecuteProcess(cmd=plan.bag_command, output="screen")]

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
