# Sourced by tools/setup, tools/test and tools/demo: where the project and its venv are, and a shell that is the
# venv's alone. A sourced system ROS 2 (`source /opt/ros/<distro>/setup.bash`, often in ~/.bashrc) puts its
# Python packages (PYTHONPATH), ament prefixes and shared libraries (LD_LIBRARY_PATH) before the venv's ROS 2
# wheels and interfaces: rclpy of one distribution then loads the libraries of another. It is set aside here;
# with a system ROS 2, README's colcon path is the way (it builds against that ROS).
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${TINYBEV_VENV:-$REPO/.venv}
if [ -n "${ROS_DISTRO:-}${AMENT_PREFIX_PATH:-}" ]; then
  printf '[setup] a sourced ROS 2 (%s) is set aside for this command: the venv brings its own ROS 2 wheels\n' \
    "${ROS_DISTRO:-$AMENT_PREFIX_PATH}" >&2
  unset PYTHONPATH AMENT_PREFIX_PATH CMAKE_PREFIX_PATH COLCON_PREFIX_PATH ROS_DISTRO ROS_VERSION ROS_PYTHON_VERSION
  if [ -n "${LD_LIBRARY_PATH:-}" ]; then
    LD_LIBRARY_PATH=$(printf '%s' "$LD_LIBRARY_PATH" | tr ':' '\n' | grep -v '^/opt/ros/' | paste -sd: - || true)
    export LD_LIBRARY_PATH
  fi
fi
