"""Velocity of detected boxes: does a model see motion at all?

The devkit's mAVE is one mean error per class over every matched box, and most boxes stand still: a model that
predicts 0 m/s for everything scores the mean speed of the matched boxes, not far from a model that sees motion
poorly. This splits matched boxes (training/metrics/matching.py) into moving ones (true speed at least
MOVING_SPEED_MPS) and still ones, per class: for moving boxes the share of their speed the model sees (its
velocity projected on the true direction, over the true speed: 1 sees it all, 0 is blind, negative is backwards)
and the error beside the true speed (the error of predicting 0 m/s); for still boxes the speed the model invents.
Classes whose velocity the devkit does not score (traffic cones, barriers) and boxes whose velocity the devkit
does not know (NaN) are left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tinybev_ros.predictions import Predictions
from tinybev_ros.score_thresholds import SCORE_THRESHOLDS
from tinybev_ros.taxonomy import DETECTION_CLASSES
from training.metrics.matching import matched_boxes

MOVING_SPEED_MPS = 1.0  # clearly moving: the devkit's velocities (annotation differences) jitter by tenths of m/s
VELOCITY_CLASSES: tuple[str, ...] = tuple(name for name in DETECTION_CLASSES if name not in ("traffic_cone", "barrier"))


@dataclass
class VelocityAccumulator:
    """(true, predicted) planar velocities of matched boxes over samples, per class; `result()` summarises."""

    score_threshold: float = SCORE_THRESHOLDS.publish
    _pairs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)

    def add(self, predictions: Predictions, gt_centers: np.ndarray, gt_labels: np.ndarray,
            gt_velocities: np.ndarray, gt_evaluable: np.ndarray) -> None:
        """One sample: predictions and ground-truth boxes in one frame (base_link)."""
        for name in VELOCITY_CLASSES:
            pairs = matched_boxes(predictions, gt_centers, gt_labels, gt_evaluable, DETECTION_CLASSES.index(name),
                                  self.score_threshold)
            known = [(np.asarray(gt_velocities[j], dtype=float), np.asarray(predictions.velocities[i], dtype=float))
                     for i, j in pairs if np.isfinite(gt_velocities[j]).all()]
            self._pairs.setdefault(name, []).extend(known)

    def result(self) -> dict[str, dict[str, Any]]:
        """Per class with a matched box: moving and still counts, and the figures the module docstring names."""
        out: dict[str, dict[str, Any]] = {}
        for name in VELOCITY_CLASSES:
            if not self._pairs.get(name):
                continue
            true, pred = (np.array(side) for side in zip(*self._pairs[name], strict=True))
            speed = np.hypot(*true.T)
            moving = speed >= MOVING_SPEED_MPS
            row: dict[str, Any] = {"moving": int(moving.sum()), "still": int((~moving).sum())}
            if moving.any():
                along = (pred[moving] * true[moving]).sum(axis=1) / speed[moving]
                row.update(true_speed_mps=float(speed[moving].mean()),
                           speed_seen=float(np.mean(along / speed[moving])),
                           moving_error_mps=float(np.hypot(*(pred[moving] - true[moving]).T).mean()))
            if (~moving).any():
                row["still_speed_mps"] = float(np.hypot(*pred[~moving].T).mean())
            out[name] = row
        return out
