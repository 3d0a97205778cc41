"""Middleware settings for our message sizes: the shipped Fast DDS profile (config/fastdds.xml).

Fast DDS's default 512 KB shared-memory segment is smaller than a LiDAR cloud or a raw image; samples that do
not fit are dropped and resent only on the next heartbeat, which stalls whole topics for about a second. The
profile enlarges the segment. It must be in the environment before the process's first DDS participant exists,
i.e. before `rclpy.init()`. A profile the user chose, or another middleware, is left alone.
"""

from __future__ import annotations

import os
from pathlib import Path

from tinybev_ros.paths import share_file

PROFILE_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"


def use_large_message_profile() -> Path | None:
    """Point Fast DDS at the shipped profile unless configured otherwise; returns the profile set, if any."""
    middleware = os.environ.get("RMW_IMPLEMENTATION") or "rmw_fastrtps_cpp"  # the ROS 2 default
    if os.environ.get(PROFILE_ENV) or not middleware.startswith("rmw_fastrtps"):
        return None
    path = share_file("config/fastdds.xml")
    os.environ[PROFILE_ENV] = str(path)
    return path
