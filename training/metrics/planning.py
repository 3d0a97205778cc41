"""Open-loop planning metrics on nuScenes: L2 error and collision rate at 1, 2 and 3 s, two definitions.

Published nuScenes planning tables mix two definitions that differ by a factor of up to ~2 at 3 s
(UniAD issue #166 / PR #173, VAD issue #33), so both are reported and labelled:

* **UniAD** ("per timestep"): L2@t is the mean over samples of ||plan_t - gt_t|| at the waypoint at time t
  only; collision@t is the fraction of samples whose ego box at the waypoint at time t overlaps an obstacle at
  time t. Only *vehicles* count as obstacles (UniAD's GT occupancy keeps vehicles only).
* **ST-P3** ("average over the horizon"): L2@t is, per sample, the mean of the per-waypoint errors of all
  waypoints up to and including t, then averaged over samples; collision@t likewise averages the per-waypoint
  collision indicators of all waypoints up to t. Vehicles *and pedestrians* count as obstacles.

Choices applied to both definitions here: waypoints every 0.5 s, so 1/2/3 s are waypoints 2/4/6; the ego is a
box of nuScenes' ego size (length 4.084 m, width 1.85 m, the value UniAD uses) centred `EGO_CENTER_AHEAD_M`
(1.44 m) ahead of the waypoint, which is base_link, the rear axle: both papers plan in the LiDAR frame (0.94 m
ahead of the rear axle on nuScenes' car) and shift the box 0.5 m forward from there; heading
along the planned path (as the ROS poses of the plan face: tinybev_ros/path_headings.py, from base_link facing
forward; the heading changes once the path has moved 0.1 m from the point that last set it); a waypoint
where the *ground-truth* ego box itself collides is excluded from the collision statistics (UniAD's evaluation
masks these as annotation noise; we apply the same mask to ST-P3's definition so the two differ only in
averaging and obstacle classes); a waypoint without ground truth (end of scene) is excluded from everything at
and after it. Obstacles are the ground-truth agent boxes at their future positions, tested with exact box
geometry, where both papers rasterise them into a 0.5 m BEV occupancy grid first.
Rates are reported in percent, L2 in metres.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tinybev_ros.path_headings import path_headings
from tinybev_ros.predictions import STEP_SECONDS
from training.metrics.boxes import box_corners, boxes_overlap

EGO_LENGTH = 4.084
EGO_WIDTH = 1.85
EGO_CENTER_AHEAD_M = 0.94 + 0.5  # the ego box's centre ahead of base_link (rear axle): LIDAR_TOP + the papers' 0.5 m
HORIZONS_S: tuple[float, ...] = (1.0, 2.0, 3.0)


def ego_collisions(path_xy: np.ndarray, obstacles: list[np.ndarray]) -> np.ndarray:
    """(T,) bool: does the ego box at waypoint t overlap any obstacle corner set in `obstacles[t]` (M_t, 4, 2)?"""
    headings = path_headings(np.vstack([np.zeros((1, 2)), path_xy]), 0.0)  # from base_link, facing forward
    centers = path_xy + EGO_CENTER_AHEAD_M * np.stack([np.cos(headings), np.sin(headings)], axis=-1)
    ego = box_corners(centers, np.full(len(path_xy), EGO_LENGTH), np.full(len(path_xy), EGO_WIDTH), headings)
    return np.array([bool(boxes_overlap(ego[t], obstacles[t]).any()) for t in range(len(path_xy))], dtype=bool)


def obstacle_corners(futures: np.ndarray, future_mask: np.ndarray, sizes_wlh: np.ndarray, yaws: np.ndarray,
                     keep: np.ndarray) -> list[np.ndarray]:
    """Per future step t, the corners (M_t, 4, 2) of the agents in `keep` that exist at t.

    An agent keeps its size; its heading at t follows its own motion when it moved more than 0.2 m since the
    previous step, else its current heading.
    """
    steps = futures.shape[1] if futures.ndim == 3 else 0
    out = []
    for t in range(steps):
        valid = keep & future_mask[:, t]
        xy = futures[valid, t]
        previous = futures[valid, t - 1] if t > 0 else xy
        motion = xy - previous
        moving = np.hypot(motion[:, 0], motion[:, 1]) > 0.2
        heading = np.where(moving, np.arctan2(motion[:, 1], motion[:, 0]), yaws[valid])
        out.append(box_corners(xy, sizes_wlh[valid, 1], sizes_wlh[valid, 0], heading))
    return out


@dataclass
class PlanningAccumulator:
    """Collects per-sample L2 errors and collision indicators; `result()` gives both definitions."""

    step_seconds: float = STEP_SECONDS
    horizons_s: tuple[float, ...] = HORIZONS_S
    _l2: list[np.ndarray] = field(default_factory=list)  # (T,) with NaN where no ground truth
    _collide_vehicle: list[np.ndarray] = field(default_factory=list)  # (T,) float, NaN where excluded
    _collide_any: list[np.ndarray] = field(default_factory=list)

    def add(self, plan: np.ndarray, gt_plan: np.ndarray, gt_mask: np.ndarray,
            vehicle_obstacles: list[np.ndarray], pedestrian_obstacles: list[np.ndarray]) -> None:
        """One sample. Obstacles: per waypoint, corner arrays (M_t, 4, 2) of GT agents at that time."""
        plan, gt_plan = np.asarray(plan, dtype=float), np.asarray(gt_plan, dtype=float)
        steps = len(gt_plan)
        if plan.shape != gt_plan.shape:
            raise ValueError(f"plan shape {plan.shape} != ground-truth plan shape {gt_plan.shape}")
        valid = np.cumprod(np.asarray(gt_mask, dtype=bool)).astype(bool)  # a gap ends the usable horizon
        l2 = np.where(valid, np.linalg.norm(plan - gt_plan, axis=-1), np.nan)
        self._l2.append(l2)
        both = [np.concatenate([v, p]) for v, p in zip(vehicle_obstacles, pedestrian_obstacles, strict=True)]
        for obstacles, store in ((vehicle_obstacles, self._collide_vehicle), (both, self._collide_any)):
            obstacles = [obstacles[t] if t < len(obstacles) else np.zeros((0, 4, 2)) for t in range(steps)]
            hit = ego_collisions(plan, obstacles).astype(float)
            gt_hit = ego_collisions(gt_plan, obstacles)
            store.append(np.where(valid & ~gt_hit, hit, np.nan))

    def __len__(self) -> int:
        return len(self._l2)

    def _step_of(self, horizon: float) -> int:
        return int(round(horizon / self.step_seconds))

    def result(self) -> dict[str, dict[str, float]]:
        """{"uniad": {"l2_1s", ..., "collision_1s", ...}, "stp3": {...}}; L2 in metres, collisions in percent."""
        l2 = np.stack(self._l2) if self._l2 else np.zeros((0, 0))
        vehicle = np.stack(self._collide_vehicle) if self._l2 else np.zeros((0, 0))
        anything = np.stack(self._collide_any) if self._l2 else np.zeros((0, 0))
        out: dict[str, dict[str, float]] = {"uniad": {}, "stp3": {}}
        for horizon in self.horizons_s:
            step = self._step_of(horizon)
            name = f"{horizon:g}s"
            if l2.shape[1] < step:
                raise ValueError(f"plans have {l2.shape[1]} waypoints; {name} needs {step}")
            reached = ~np.isnan(l2[:, step - 1])  # ground truth exists up to this horizon
            out["uniad"][f"l2_{name}"] = _nanmean(l2[reached, step - 1])
            out["uniad"][f"collision_{name}"] = 100.0 * _nanmean(vehicle[reached, step - 1])
            # ST-P3: per-sample average over waypoints 1..step, then over samples.
            out["stp3"][f"l2_{name}"] = _nanmean(l2[reached, :step].mean(axis=1))
            out["stp3"][f"collision_{name}"] = 100.0 * _nanmean(_row_nanmean(anything[reached, :step]))
        for definition in out.values():
            definition["l2_avg"] = float(np.mean([definition[f"l2_{h:g}s"] for h in self.horizons_s]))
            definition["collision_avg"] = float(np.mean([definition[f"collision_{h:g}s"] for h in self.horizons_s]))
        return out


def _row_nanmean(values: np.ndarray) -> np.ndarray:
    """Mean of each row over its non-NaN entries; NaN for a row with none (no warning)."""
    counts = (~np.isnan(values)).sum(axis=1)
    return np.where(counts > 0, np.nansum(values, axis=1) / np.maximum(counts, 1), np.nan)


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=float)
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")
