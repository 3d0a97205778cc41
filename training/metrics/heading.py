"""Heading of detected boxes: does a model get the axis (which way the footprint lies) and the direction?

The devkit's mAOE is one mean angle per class, and two very different models score about 90 degrees on it: one
that gets every axis and half the directions (errors near 0 and 180), and one whose headings are noise (errors
spread evenly). A planner cares about the first difference, the footprint, more than the second. This splits
them, per class: the share of matched boxes whose axis is within TOLERANCE_DEG (the error modulo 180), whose
direction is within it, and whose direction is reversed (error above 180 - TOLERANCE_DEG), with a histogram.

Boxes are matched to ground truth by training/metrics/matching.py. Traffic cones have no heading (the devkit
ignores theirs); a barrier's direction is a convention (the devkit scores it modulo 180), so read its axis only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tinybev_ros.geometry import wrap_angle
from tinybev_ros.predictions import Predictions
from tinybev_ros.score_thresholds import SCORE_THRESHOLDS
from tinybev_ros.taxonomy import DETECTION_CLASSES
from training.metrics.matching import matched_boxes

TOLERANCE_DEG = 30.0
HISTOGRAM_BINS = 6  # of 30 degrees over [0, 180]
HEADING_CLASSES: tuple[str, ...] = tuple(name for name in DETECTION_CLASSES if name != "traffic_cone")


@dataclass
class HeadingAccumulator:
    """Heading errors (radians, in [0, pi]) of matched boxes over samples, per class; `result()` summarises."""

    score_threshold: float = SCORE_THRESHOLDS.publish
    _errors: dict[str, list[float]] = field(default_factory=dict)

    def add(self, predictions: Predictions, gt_centers: np.ndarray, gt_labels: np.ndarray, gt_yaws: np.ndarray,
            gt_evaluable: np.ndarray) -> None:
        """One sample: predictions and ground-truth boxes in one frame (base_link)."""
        for name in HEADING_CLASSES:
            pairs = matched_boxes(predictions, gt_centers, gt_labels, gt_evaluable, DETECTION_CLASSES.index(name),
                                  self.score_threshold)
            errors = [abs(float(wrap_angle(predictions.yaws[i] - gt_yaws[j]))) for i, j in pairs]
            self._errors.setdefault(name, []).extend(errors)

    def result(self) -> dict[str, dict[str, Any]]:
        """Per class with a matched box: matched count, the three shares, the mean error and the histogram."""
        out: dict[str, dict[str, Any]] = {}
        for name in HEADING_CLASSES:
            errors = np.degrees(np.array(self._errors.get(name, []), dtype=float))
            if errors.size == 0:
                continue
            axis = np.minimum(errors, 180.0 - errors)
            out[name] = {
                "matched": int(errors.size),
                "axis_within_tolerance": float(np.mean(axis <= TOLERANCE_DEG)),
                "direction_within_tolerance": float(np.mean(errors <= TOLERANCE_DEG)),
                "reversed": float(np.mean(errors >= 180.0 - TOLERANCE_DEG)),
                "mean_error_deg": float(errors.mean()),
                "histogram": np.histogram(errors, bins=HISTOGRAM_BINS, range=(0.0, 180.0))[0].tolist(),
            }
        return out
