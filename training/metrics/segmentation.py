"""BEV segmentation IoU: map layers per class, occupancy near/far and now/future.

IoU is accumulated over the whole split (sum of intersections / sum of unions), the way map-segmentation
(BEVFusion, LSS) and occupancy (FIERY, UniAD) papers report it, not averaged per sample; a class that never
appears in prediction or ground truth has an undefined IoU (NaN, written as null).
Occupancy (UniAD's IoU-n and IoU-f, after FIERY): "near" is the 30 m x 30 m square centred on the ego, "far" the
100 m x 100 m one (UniAD's whole 200 x 200 grid at 0.5 m); `near` and `far` pool the current frame and every
future one (UniAD: the present and n_future = 4 frames, 0 to 2 s at 2 Hz), and the `_current` / `_future` keys
split them into the frame itself (index 0) and the later frames pooled. Unlike UniAD (vehicles and two-wheelers)
the occupancy here includes pedestrians (training/ground_truth.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tinybev_ros.geometry import BevGrid
from tinybev_ros.taxonomy import MAP_CLASSES

OCCUPANCY_REGIONS_M: dict[str, float] = {"near": 30.0, "far": 100.0}


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU of two boolean masks of the same shape; NaN when both are empty."""
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"mask shapes differ: prediction {pred.shape} vs ground truth {gt.shape}")
    union = np.logical_or(pred, gt).sum()
    return float(np.logical_and(pred, gt).sum() / union) if union else float("nan")


def region_mask(grid: BevGrid, side_m: float) -> np.ndarray:
    """(H, W) bool: cells whose centre lies in the side_m x side_m square centred on base_link."""
    xs, ys = grid.cell_centers()
    half = side_m / 2.0
    return (np.abs(xs)[:, None] <= half) & (np.abs(ys)[None, :] <= half)


@dataclass
class IoUAccumulator:
    """Per-class intersection and union counts summed over samples."""

    names: tuple[str, ...]
    _intersection: np.ndarray = field(init=False)
    _union: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self._intersection = np.zeros(len(self.names), dtype=np.int64)
        self._union = np.zeros(len(self.names), dtype=np.int64)

    def add(self, pred: np.ndarray, gt: np.ndarray, region: np.ndarray | None = None) -> None:
        """pred, gt: (C, ...) bool masks; `region` (broadcastable, bool) limits the cells counted."""
        pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
        if pred.shape != gt.shape or pred.shape[0] != len(self.names):
            raise ValueError(f"masks must both be ({len(self.names)}, ...): got {pred.shape} and {gt.shape}")
        if region is not None:
            pred, gt = pred & region, gt & region
        axes = tuple(range(1, pred.ndim))
        self._intersection += np.logical_and(pred, gt).sum(axis=axes)
        self._union += np.logical_or(pred, gt).sum(axis=axes)

    def add_one(self, name: str, pred: np.ndarray, gt: np.ndarray) -> None:
        """Counts of one class from boolean masks of any (equal) shape."""
        pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
        if pred.shape != gt.shape:
            raise ValueError(f"{name}: prediction {pred.shape} and ground truth {gt.shape} differ in shape")
        index = self.names.index(name)
        self._intersection[index] += np.logical_and(pred, gt).sum()
        self._union[index] += np.logical_or(pred, gt).sum()

    def result(self) -> dict[str, float]:
        with np.errstate(invalid="ignore", divide="ignore"):
            values = np.where(self._union > 0, self._intersection / np.maximum(self._union, 1), np.nan)
        out = {name: float(v) for name, v in zip(self.names, values, strict=True)}
        finite = values[~np.isnan(values)]
        out["mIoU"] = float(finite.mean()) if finite.size else float("nan")
        return out


@dataclass
class MapAccumulator:
    """Map-layer IoU; probabilities are binarised at `threshold`."""

    classes: tuple[str, ...] = MAP_CLASSES
    threshold: float = 0.5
    _iou: IoUAccumulator = field(init=False)

    def __post_init__(self) -> None:
        self._iou = IoUAccumulator(self.classes)

    def add(self, map_probs: np.ndarray, gt_masks: np.ndarray, valid: np.ndarray | None = None) -> None:
        """`valid` (per class) leaves out the layers the ground truth does not know (they stay n/a)."""
        pred = np.asarray(map_probs) >= self.threshold
        if valid is None or np.all(valid):
            self._iou.add(pred, gt_masks)
            return
        for index in np.flatnonzero(valid):
            self._iou.add_one(self.classes[index], pred[index], gt_masks[index])

    def result(self) -> dict[str, float]:
        return self._iou.result()


@dataclass
class OccupancyAccumulator:
    """Occupancy IoU in the near and far squares: every frame pooled (UniAD's IoU-n / IoU-f), the current frame,
    and the future frames pooled."""

    grid: BevGrid = field(default_factory=BevGrid)
    threshold: float = 0.5
    _iou: IoUAccumulator = field(init=False)
    _regions: dict[str, np.ndarray] = field(init=False)

    def __post_init__(self) -> None:
        self._iou = IoUAccumulator(tuple(name for region in OCCUPANCY_REGIONS_M
                                         for name in (region, f"{region}_current", f"{region}_future")))
        self._regions = {name: region_mask(self.grid, side) for name, side in OCCUPANCY_REGIONS_M.items()}

    def add(self, occupancy_probs: np.ndarray, gt_occupancy: np.ndarray, frame_mask: np.ndarray | None = None) -> None:
        """(T, H, W) probabilities and ground truth, index 0 = now; extra frames on either side are ignored.

        `frame_mask` (T,) marks the ground-truth frames that exist (a scene may end within the horizon).
        """
        steps = min(len(occupancy_probs), len(gt_occupancy))
        if steps < 2:
            raise ValueError(f"occupancy needs a current and at least one future frame, got {steps}")
        valid = np.ones(steps, dtype=bool) if frame_mask is None else np.asarray(frame_mask, dtype=bool)[:steps]
        pred = np.asarray(occupancy_probs[:steps]) >= self.threshold
        gt = np.asarray(gt_occupancy[:steps], dtype=bool)
        current, future = valid & (np.arange(steps) == 0), valid & (np.arange(steps) > 0)
        for region_name, region in self._regions.items():
            for name, frames in ((region_name, valid), (f"{region_name}_current", current),
                                 (f"{region_name}_future", future)):
                self._iou.add_one(name, pred[frames] & region, gt[frames] & region)

    def result(self) -> dict[str, float]:
        out = self._iou.result()
        out.pop("mIoU")
        return out
