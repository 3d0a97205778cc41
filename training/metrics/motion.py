"""Motion forecasting metrics for detected agents: minADE, minFDE, miss rate and EPA (UniAD's definitions).

Definitions (UniAD, Sec. 4 and supplementary, and its motion evaluation code; EPA from ViP3D):
* Agents in range: within the devkit's detection class range of the ego (a circle; `filter_eval_boxes`) of the
  class UniAD evaluates them as: 50 m for its vehicle group (two-wheelers included), 40 m for pedestrians;
  predictions and ground truth alike.
* Predicted agents are matched to ground-truth agents of the same class greedily in order of decreasing score,
  a pair qualifying when their current centres are closer than `match_distance` (2 m) in the ground plane,
  each ground-truth agent matched at most once (the nuScenes detection matching at its 2 m threshold).
* For a matched agent with K forecast modes and its valid future steps V (ground truth exists):
  ADE_k = mean_{t in V} ||f_k,t - g_t||,  FDE_k = ||f_k,T - g_T|| at the last valid step T;
  minADE = min_k ADE_k, minFDE = min_k FDE_k (K = 6 in UniAD).
* Miss: the best mode's largest error over V exceeds `miss_threshold` (2 m): min_k max_{t in V} ||f_k,t - g_t||
  (the nuScenes prediction challenge's and UniAD's miss rate; a mode may end on the truth and still miss).
* EPA = (N_hit - alpha * N_FP) / N_GT with alpha = 0.5: N_hit counts matched agents whose minFDE is within
  `miss_threshold`, N_FP predicted agents left unmatched, N_GT every ground-truth agent in range (one with no
  known future, leaving the scene, counts too, and can never be a hit: UniAD's count). A prediction matched to
  such an agent, or to one without LiDAR points (dropped by the devkit's detection evaluation too), is no false
  positive; one without points is not in N_GT either.
minADE, minFDE and the miss rate are means over the matched agents with score >= `score_threshold` (the
detections a planner is given); UniAD averages along the recall curve instead (its `calc_tp`), which weighs
high-scoring agents more. Forecasts and futures are absolute xy in base_link.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tinybev_ros.predictions import Predictions
from tinybev_ros.score_thresholds import SCORE_THRESHOLDS
from tinybev_ros.taxonomy import DETECTION_CLASSES, DYNAMIC_CLASSES

# UniAD's vehicle group (motion: `category_to_motion_name`; planning obstacles: the occupancy classes), two-wheelers
# included
VEHICLE_CLASSES: tuple[str, ...] = ("car", "truck", "bus", "trailer", "construction_vehicle", "motorcycle", "bicycle")
# the devkit's detection class ranges (detection_cvpr_2019), metres from the ego, as UniAD applies them after
# mapping its motion classes: the vehicle group (two-wheelers too) within the car's 50 m, pedestrians 40 m
CLASS_RANGE_M: dict[str, float] = {name: 50.0 for name in VEHICLE_CLASSES}
CLASS_RANGE_M["pedestrian"] = 40.0


def match_by_center_distance(pred_xy: np.ndarray, pred_scores: np.ndarray, gt_xy: np.ndarray,
                             max_distance: float) -> list[tuple[int, int]]:
    """Greedy (prediction, ground truth) pairs: highest score first, each takes its nearest free GT in range."""
    pairs: list[tuple[int, int]] = []
    if len(pred_xy) == 0 or len(gt_xy) == 0:
        return pairs
    distances = np.linalg.norm(pred_xy[:, None, :] - gt_xy[None, :, :], axis=-1)
    taken = np.zeros(len(gt_xy), dtype=bool)
    for i in np.argsort(-pred_scores, kind="stable"):
        row = np.where(taken, np.inf, distances[i])
        j = int(np.argmin(row))
        if row[j] < max_distance:
            taken[j] = True
            pairs.append((int(i), j))
    return pairs


def displacement_errors(forecasts: np.ndarray, future: np.ndarray, mask: np.ndarray) -> tuple[float, float, float]:
    """minADE, minFDE and the best mode's largest error (the miss distance) of one agent: forecasts (K, T, 2),
    future (T, 2), mask (T,) with at least one True."""
    errors = np.linalg.norm(forecasts - future[None], axis=-1)[:, mask]  # (K, valid T)
    return float(errors.mean(axis=1).min()), float(errors[:, -1].min()), float(errors.max(axis=1).min())


@dataclass
class MotionAccumulator:
    """Accumulates matched-agent errors over samples, per class; `result()` pools the chosen classes."""

    classes: tuple[str, ...] = DYNAMIC_CLASSES
    match_distance: float = 2.0
    miss_threshold: float = 2.0
    score_threshold: float = SCORE_THRESHOLDS.publish  # forecasts of the detections a planner would get
    epa_alpha: float = 0.5
    _ade: dict[str, list[float]] = field(default_factory=dict)
    _fde: dict[str, list[float]] = field(default_factory=dict)
    _worst: dict[str, list[float]] = field(default_factory=dict)
    _false_positives: dict[str, int] = field(default_factory=dict)
    _ground_truth: dict[str, int] = field(default_factory=dict)

    def add(self, predictions: Predictions, gt_centers: np.ndarray, gt_labels: np.ndarray, gt_futures: np.ndarray,
            gt_future_mask: np.ndarray, gt_ignore: np.ndarray | None = None) -> None:
        """One sample: predictions and the ground-truth agents (centres, labels, futures, mask) in base_link.

        `gt_ignore` marks agents that count neither as ground truth nor, when matched, as false positives (the
        devkit's evaluation drops boxes without LiDAR points the same way).
        """
        if predictions.forecasts.ndim != 4:
            raise ValueError(f"Predictions.forecasts must be (N, K, T, 2), got {predictions.forecasts.shape}")
        gt_centers = np.asarray(gt_centers)
        gt_distance = np.hypot(gt_centers[:, 0], gt_centers[:, 1]) if len(gt_centers) else np.zeros(0)
        counted = np.ones(len(gt_centers), dtype=bool) if gt_ignore is None else ~np.asarray(gt_ignore, dtype=bool)
        pred_distance = np.hypot(predictions.centers[:, 0], predictions.centers[:, 1])
        for name in self.classes:
            label = DETECTION_CLASSES.index(name)
            reach = CLASS_RANGE_M[name]
            gt_idx = np.flatnonzero((gt_labels == label) & (gt_distance <= reach))
            pred_idx = np.flatnonzero((predictions.labels == label) & (predictions.scores >= self.score_threshold)
                                      & (pred_distance <= reach))
            pairs = match_by_center_distance(predictions.centers[pred_idx, :2], predictions.scores[pred_idx],
                                             gt_centers[gt_idx, :2], self.match_distance)
            horizon = min(predictions.forecasts.shape[2], gt_futures.shape[1])
            for p, g in pairs:
                agent = gt_idx[g]
                if not (counted[agent] and gt_future_mask[agent, :horizon].any()):
                    continue  # no future to score it against (or ignored): neither an error nor a false positive
                ade, fde, worst = displacement_errors(predictions.forecasts[pred_idx[p], :, :horizon],
                                                      gt_futures[agent, :horizon], gt_future_mask[agent, :horizon])
                self._ade.setdefault(name, []).append(ade)
                self._fde.setdefault(name, []).append(fde)
                self._worst.setdefault(name, []).append(worst)
            self._false_positives[name] = self._false_positives.get(name, 0) + len(pred_idx) - len(pairs)
            self._ground_truth[name] = self._ground_truth.get(name, 0) + int(counted[gt_idx].sum())

    def result(self, classes: tuple[str, ...] | None = None) -> dict[str, float]:
        """minADE, minFDE (m), miss_rate, EPA and counts pooled over `classes` (default: all accumulated)."""
        classes = classes or self.classes
        ade = np.array([v for c in classes for v in self._ade.get(c, [])])
        fde = np.array([v for c in classes for v in self._fde.get(c, [])])
        worst = np.array([v for c in classes for v in self._worst.get(c, [])])
        n_gt = sum(self._ground_truth.get(c, 0) for c in classes)
        n_fp = sum(self._false_positives.get(c, 0) for c in classes)
        hits = int((fde <= self.miss_threshold).sum())
        nan = float("nan")
        return {
            "minADE": float(ade.mean()) if ade.size else nan,
            "minFDE": float(fde.mean()) if fde.size else nan,
            "miss_rate": float((worst > self.miss_threshold).mean()) if worst.size else nan,
            "EPA": (hits - self.epa_alpha * n_fp) / n_gt if n_gt else nan,
            "matched": int(ade.size),
            "ground_truth": int(n_gt),
            "false_positives": int(n_fp),
        }

    def summary(self) -> dict[str, dict[str, float]]:
        """All dynamic classes pooled, plus UniAD's two reported groups: vehicles (two-wheelers included) and
        pedestrians."""
        vehicles = tuple(c for c in self.classes if c in VEHICLE_CLASSES)
        return {"all": self.result(), "vehicle": self.result(vehicles), "pedestrian": self.result(("pedestrian",))}
