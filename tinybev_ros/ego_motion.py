"""The ego status the planner reads: the ego's velocity in base_link, from two poses of the ego.

A single camera frame shows where the road goes but not how fast the ego drives, and a planner that must guess
the speed misses by metres at 3 s (on the synthetic training set the 3 s displacement varies with a standard
deviation of 5.8 m). Planners on nuScenes read the ego state for this (UniAD through BEVFormer's CAN-bus input,
VAD and AD-MLP explicitly). Here it is (vx, vy, known): the velocity over the last `EGO_VELOCITY_LAG_S` in the
current base_link, and whether two poses that far apart were available. The node takes the poses from /tf
(map [-> odom] -> base_link, interpolated), training and evaluation from the dataset's ego poses, so both
compute the same quantity.
"""

from __future__ import annotations

import numpy as np

from tinybev_ros.geometry import Transform
from tinybev_ros.transform_buffer import TransformBuffer, TransformError

EGO_VELOCITY_LAG_S = 0.5  # the earlier pose: the newest at least 0.9 x this before the frame
EGO_STATUS_SIZE = 3  # vx, vy (m/s, base_link), known (1.0 or 0.0)


def unknown_ego_status() -> np.ndarray:
    return np.zeros(EGO_STATUS_SIZE, dtype=np.float32)


def ego_status(current: Transform, earlier: Transform | None, dt_s: float) -> np.ndarray:
    """(vx, vy, known) of the ego at `current` (ego -> world) from its pose `dt_s` seconds earlier."""
    if earlier is None or not dt_s > 0.0:
        return unknown_ego_status()
    velocity_world = (current.translation - earlier.translation) / dt_s
    vx, vy = (current.rotation.T @ velocity_world)[:2]
    status = np.array([vx, vy, 1.0], dtype=np.float32)
    return status if np.isfinite(status).all() else unknown_ego_status()


def ego_status_from_tf(buffer: TransformBuffer, fixed_frame: str, base_frame: str, stamp_ns: int) -> np.ndarray:
    """The ego status at `stamp_ns` from the node's transform tree (/tf: map [-> odom] -> base_link), the poses
    interpolated at the frame's stamp and EGO_VELOCITY_LAG_S before it; unknown without both (the first half
    second of a drive, or no /tf)."""
    lag_ns = int(EGO_VELOCITY_LAG_S * 1e9)
    try:
        current = buffer.lookup(fixed_frame, base_frame, stamp_ns)
        earlier = buffer.lookup(fixed_frame, base_frame, stamp_ns - lag_ns)
    except TransformError:
        return unknown_ego_status()
    return ego_status(current, earlier, EGO_VELOCITY_LAG_S)
