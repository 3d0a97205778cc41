"""TinyBEV-ROS: camera-only multi-task BEV perception for ROS 2 (runtime package, no training code)."""

__version__ = "0.1.0"
