"""The ego status the planner reads: the ego's velocity in base_link, from two poses of the ego.

A single camera frame shows where the road goes but not how fast the ego drives, and a planner that must guess
the speed misses by metres at 3 s (on the synthetic training set the 3 s displacement varies with a standard
deviation of 5.8 m). Planners on nuScenes read the ego state for this (UniAD through BEVFormer's CAN-bus input,
VAD and AD-MLP explicitly). Here it is (vx, vy, known): the velocity over the last `EGO_VELOCITY_LAG_S` in the
current base_link, and whether two poses that far apart were available. The node takes the poses from /tf
(map -> base_link), training and evaluation from the dataset's ego poses, so both compute the same quantity.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tinybev_ros.geometry import Transform

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


def pose_near(history: Sequence[tuple[int, Transform]], stamp_ns: int, tolerance_ns: int) -> Transform | None:
    """The pose of `history` ((stamp ns, ego -> world) pairs) nearest `stamp_ns`, if within tolerance."""
    if not history:
        return None
    stamp, pose = min(history, key=lambda item: abs(item[0] - stamp_ns))
    return pose if abs(stamp - stamp_ns) <= tolerance_ns else None


def ego_status_from_history(history: Sequence[tuple[int, Transform]], stamp_ns: int,
                            tolerance_ns: int = 100_000_000) -> np.ndarray:
    """The ego status at `stamp_ns` from a pose history (the node's /tf map -> base_link): the pose nearest the
    stamp and the newest one at least 0.9 EGO_VELOCITY_LAG_S before it (at most twice the lag); unknown
    otherwise (the first half second of a drive, or no /tf)."""
    current = pose_near(history, stamp_ns, tolerance_ns)
    if current is None:
        return unknown_ego_status()
    now = min(history, key=lambda item: abs(item[0] - stamp_ns))[0]
    lag_ns = EGO_VELOCITY_LAG_S * 1e9
    earlier = [(t, p) for t, p in history if 0.9 * lag_ns <= now - t <= 2.0 * lag_ns]
    if not earlier:
        return unknown_ego_status()
    then, pose = max(earlier, key=lambda item: item[0])
    return ego_status(current, pose, (now - then) / 1e9)
