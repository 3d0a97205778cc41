"""`Predictions`: the one typed output of a frame, shared by model, tracker, ROS messages and evaluation.

Everything is numpy, in base_link (x forward, y left, z up; metres, radians, m/s) at `stamp_ns`, so the
ROS path and the offline evaluation path compare like with like.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tinybev_ros.geometry import BevGrid

FORECAST_STEPS = 12  # 6 s at 2 Hz
PLAN_STEPS = 6  # 3 s at 2 Hz
STEP_SECONDS = 0.5


@dataclass
class Predictions:
    """Outputs for one synchronized six-camera frame. N boxes, K forecast modes."""

    stamp_ns: int
    centers: np.ndarray  # (N, 3) box centres
    sizes_wlh: np.ndarray  # (N, 3) width, length, height (nuScenes order)
    yaws: np.ndarray  # (N,) heading about +z
    velocities: np.ndarray  # (N, 2) vx, vy
    scores: np.ndarray  # (N,) in [0, 1]
    labels: np.ndarray  # (N,) index into taxonomy.DETECTION_CLASSES
    track_ids: np.ndarray  # (N,) int64, -1 where untracked
    forecasts: np.ndarray  # (N, K, FORECAST_STEPS, 2) future xy of each mode
    forecast_probs: np.ndarray  # (N, K) mode probabilities, rows sum to 1
    map_probs: np.ndarray  # (len(MAP_CLASSES), H, W) probabilities on `grid`
    occupancy: np.ndarray  # (T, H, W) occupancy probabilities; index 0 = now, then STEP_SECONDS apart
    ego_plan: np.ndarray  # (PLAN_STEPS, 2) planned xy waypoints, STEP_SECONDS apart
    command: int  # taxonomy.Command the plan was conditioned on
    grid: BevGrid = field(default_factory=BevGrid)

    def __len__(self) -> int:
        return int(self.centers.shape[0])

    def non_finite(self) -> list[str]:
        """Names of the fields holding NaN or inf: such a frame is never published (the node counts a fault)."""
        return [name for name in self.__dataclass_fields__
                if isinstance(value := getattr(self, name), np.ndarray) and value.dtype.kind == "f"
                and not np.isfinite(value).all()]

    def select(self, keep: np.ndarray) -> Predictions:
        """A copy with only the boxes (and their forecasts) where `keep` is true, or at those indices."""
        per_box = ("centers", "sizes_wlh", "yaws", "velocities", "scores", "labels", "track_ids",
                   "forecasts", "forecast_probs")
        values = {name: getattr(self, name) for name in self.__dataclass_fields__}
        values.update({name: getattr(self, name)[keep] for name in per_box})
        return Predictions(**values)
