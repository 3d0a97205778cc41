"""Which detected box is which ground-truth box, for the per-box metrics the devkit's means hide (heading,
velocity): same class, boxes scoring at least the publish threshold (what the node shows), ground truth the devkit
evaluates (LiDAR or radar points inside), matched greedily by centre distance (the motion metric's rule)."""

from __future__ import annotations

import numpy as np

from tinybev_ros.predictions import Predictions
from training.metrics.motion import match_by_center_distance

MATCH_DISTANCE_M = 2.0  # the middle of the devkit's distance thresholds (0.5, 1, 2, 4 m)


def matched_boxes(predictions: Predictions, gt_centers: np.ndarray, gt_labels: np.ndarray, gt_evaluable: np.ndarray,
                  label: int, score_threshold: float, max_distance: float = MATCH_DISTANCE_M
                  ) -> list[tuple[int, int]]:
    """(prediction index, ground-truth index) pairs of class `label`, in one frame (base_link)."""
    pred = np.flatnonzero((predictions.scores >= score_threshold) & (predictions.labels == label))
    truth = np.flatnonzero((np.asarray(gt_labels) == label) & np.asarray(gt_evaluable, dtype=bool))
    pairs = match_by_center_distance(predictions.centers[pred, :2], predictions.scores[pred],
                                     np.asarray(gt_centers)[truth, :2], max_distance)
    return [(int(pred[i]), int(truth[j])) for i, j in pairs]
