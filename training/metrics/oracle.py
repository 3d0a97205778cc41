"""Ground truth given back as `Predictions`: the oracle that must score perfectly on every metric.

Used to validate the evaluation itself (a metric that does not give the oracle a perfect score is wrong) and
to draw ground truth in the same pictures as predictions. Track ids come from instance tokens through a
shared `TrackIds` so an instance keeps its id across the samples of a scene.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from nuscenes.nuscenes import NuScenes

from tinybev_ros.geometry import BevGrid
from tinybev_ros.predictions import Predictions
from tinybev_ros.taxonomy import CATEGORY_TO_DETECTION
from training.ground_truth import GroundTruth


@dataclass
class TrackIds:
    """instance token -> small integer id, assigned on first sight."""

    ids: dict[str, int] = field(default_factory=dict)

    def __call__(self, instance_tokens: list[str]) -> np.ndarray:
        for token in instance_tokens:
            self.ids.setdefault(token, len(self.ids))
        return np.array([self.ids[token] for token in instance_tokens], dtype=np.int64)


def _fill_forward(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(..., T, 2) values where steps beyond the last valid one repeat it (the agent or ego stays put)."""
    values = np.array(values, dtype=float)
    for index in np.ndindex(mask.shape[:-1]):
        valid = np.flatnonzero(mask[index])
        if valid.size and valid[-1] + 1 < mask.shape[-1]:
            values[index][valid[-1] + 1:] = values[index][valid[-1]]
    return values


def ground_truth_as_predictions(gt: GroundTruth, track_ids: TrackIds | None = None, grid: BevGrid | None = None,
                                visible_only: bool = True) -> Predictions:
    """Perfect predictions: GT boxes with score 1, one forecast mode = the true future, true map/occupancy/plan.

    `visible_only` keeps the boxes the nuScenes detection evaluation keeps (those with LiDAR or radar points): a box it
    drops from the ground truth would otherwise be scored as a false positive. Pictures use all boxes.
    """
    keep = gt.evaluable if visible_only else np.ones(len(gt), dtype=bool)
    n = int(keep.sum())
    futures = _fill_forward(gt.futures, gt.future_mask)[keep]
    return Predictions(
        stamp_ns=int(gt.timestamp_us) * 1000,
        centers=gt.centers[keep].copy(),
        sizes_wlh=gt.sizes_wlh[keep].copy(),
        yaws=gt.yaws[keep].copy(),
        velocities=np.nan_to_num(gt.velocities[keep]),  # a prediction needs a number; the devkit skips these
        scores=np.ones(n),
        labels=gt.labels[keep].copy(),
        track_ids=(track_ids or TrackIds())([t for t, k in zip(gt.instance_tokens, keep, strict=True) if k]),
        forecasts=futures[:, None],
        forecast_probs=np.ones((n, 1)),
        map_probs=gt.map_masks.astype(np.float32),
        occupancy=gt.occupancy.astype(np.float32),
        ego_plan=_fill_forward(gt.ego_future, gt.ego_future_mask),
        command=int(gt.command),
        grid=grid or BevGrid(),
    )


def ground_truth_attributes(nusc: NuScenes, gt: GroundTruth, visible_only: bool = True) -> list[str]:
    """Attribute names of the boxes of `ground_truth_as_predictions(gt, visible_only=...)`, in its order.

    Relies on `load_ground_truth` listing a sample's detection-class annotations in the sample's `anns` order.
    """
    names = []
    for ann_token in nusc.get("sample", gt.sample_token)["anns"]:
        ann = nusc.get("sample_annotation", ann_token)
        if ann["category_name"] in CATEGORY_TO_DETECTION:
            tokens = ann["attribute_tokens"]
            names.append((ann["instance_token"], nusc.get("attribute", tokens[0])["name"] if tokens else ""))
    if [instance for instance, _ in names] != list(gt.instance_tokens):
        raise ValueError(f"sample {gt.sample_token}: annotation order differs from the ground truth's boxes")
    keep = gt.evaluable if visible_only else np.ones(len(gt), dtype=bool)
    return [name for (_, name), k in zip(names, keep, strict=True) if k]
