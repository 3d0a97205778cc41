"""Launch the TinyBEV perception node (and optionally rviz2 and a bag replay).

    ros2 launch tinybev_ros tinybev.launch.py [checkpoint:=PATH] [device:=auto|cpu|cuda]
        [use_sim_time:=true] [rviz:=true] [bag:=PATH] [params_file:=PATH] [publish_images:=true]

`bag:=PATH` starts `ros2 bag play PATH --clock`; combine it with `use_sim_time:=true` so the node's clock
follows the bag. Where `ros2 launch` is absent, `tinybev run` starts the same node with the same params file.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution, PythonExpression
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("tinybev_ros")
    arguments = [
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "config", "tinybev.yaml"]),
                              description="node parameters (YAML)"),
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="student checkpoint (.safetensors); empty: the shipped one"),
        DeclareLaunchArgument("device", default_value="auto", description="auto, cpu or cuda"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="follow /clock (bag replay)"),
        DeclareLaunchArgument("publish_images", default_value="false",
                              description="publish the BEV rendering and camera overlays as images"),
        DeclareLaunchArgument("rviz", default_value="false", description="start rviz2 with the shipped config"),
        DeclareLaunchArgument("bag", default_value="", description="play this bag (ros2 bag play --clock)"),
    ]
    use_sim_time = ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool)
    node = Node(
        package="tinybev_ros",
        executable="tinybev_node",
        name="tinybev_node",
        namespace="tinybev",
        output="screen",
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "checkpoint": LaunchConfiguration("checkpoint"),
                "device": LaunchConfiguration("device"),
                "publish_images": ParameterValue(LaunchConfiguration("publish_images"), value_type=bool),
                "use_sim_time": use_sim_time,
            },
        ],
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", PathJoinSubstitution([share, "config", "tinybev.rviz"])],
        parameters=[{"use_sim_time": use_sim_time}],
        condition=IfCondition(LaunchConfiguration("rviz")),
    )
    bag = ExecuteProcess(
        cmd=["ros2", "bag", "play", LaunchConfiguration("bag"), "--clock"],
        output="screen",
        condition=IfCondition(PythonExpression(["'", LaunchConfiguration("bag"), "' != ''"])),
    )
    # Large shared-memory segment for camera bursts, for every process started here (see config/fastdds.xml).
    dds_profile = SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE",
                                         PathJoinSubstitution([share, "config", "fastdds.xml"]))
    return LaunchDescription([*arguments, dds_profile, node, rviz, bag])
