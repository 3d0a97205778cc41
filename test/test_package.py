"""The ROS 2 package itself: package.xml is valid format 3, and `colcon build` installs it the ament way."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from catkin_pkg.package import parse_package

REPO = Path(__file__).resolve().parent.parent


def test_package_xml_declares_the_run_dependencies():
    package = parse_package(REPO / "package.xml")
    assert package.package_format == 3 and package.name == "tinybev_ros"
    assert package.get_build_type() == "ament_python"
    run_deps = {d.name for d in package.exec_depends}
    for needed in ("rclpy", "std_msgs", "geometry_msgs", "sensor_msgs", "nav_msgs", "vision_msgs",
                   "autoware_perception_msgs", "visualization_msgs", "diagnostic_msgs", "tf2_msgs", "launch",
                   "launch_ros", "rviz2", "ros2bag", "python3-torch", "python3-numpy"):
        assert needed in run_deps, needed
    # what the launch calls to resume the player: `ros2 service call ... rosbag2_interfaces/srv/Resume`
    from tinybev_ros.ros.launch_plan import RESUME_COMMAND

    assert {f"ros2{RESUME_COMMAND[1]}", RESUME_COMMAND[-1].split("/")[0]} <= run_deps


def test_interface_packages_are_ignored_by_colcon_and_valid():
    assert (REPO / "interfaces" / "COLCON_IGNORE").exists()
    for name in ("vision_msgs", "tf2_msgs", "autoware_perception_msgs"):
        package = parse_package(REPO / "interfaces" / name / "package.xml")
        assert package.name == name and "rosidl_interface_packages" in [g.name for g in package.member_of_groups]


def test_colcon_build_installs_executables_launch_and_config(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "tinybev_ros").symlink_to(REPO)
    colcon = Path(sys.executable).parent / "colcon"
    env = dict(os.environ, COLCON_LOG_PATH=str(tmp_path / "log"))
    result = subprocess.run(
        [str(colcon), "build", "--base-paths", str(src), "--build-base", str(tmp_path / "build"),
         "--install-base", str(tmp_path / "install")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "vision_msgs" not in result.stdout  # our interface packages are never built by colcon
    prefix = tmp_path / "install" / "tinybev_ros"
    executables = {p.name for p in (prefix / "lib" / "tinybev_ros").iterdir()}
    assert "tinybev" in executables  # where `ros2 run tinybev_ros ...` looks
    share = prefix / "share" / "tinybev_ros"
    assert (share / "package.xml").exists()
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "tinybev_ros").exists()
    assert sorted(p.name for p in (share / "launch").glob("*.launch.py")) == sorted(
        p.name for p in (REPO / "launch").glob("*.launch.py"))
    assert sorted(p.name for p in (share / "config").iterdir()) == sorted(p.name for p in (REPO / "config").iterdir())
