"""GroundTruth -> training target arrays (one sample; `data.collate` stacks them), per the contract's names.

Detection follows CenterPoint: a class-wise gaussian heatmap on the detection grid (BevGrid / det_stride) with
a peak of exactly 1 at the cell holding each box centre, and regression targets gathered at those cells.
The gaussian radius is CornerNet's rule as CenterPoint uses it: the largest corner shift r such that a box
displaced by r still has IoU >= `min_overlap` with the true box, in three cases (both corners shifted the same
way; the box shrunk by r on every side; grown by r on every side); radius = max(min_radius, floor(min r)),
sigma = (2 r + 1) / 6. We solve each quadratic for its smallest positive root (the exact condition), where the
widely copied implementation takes a larger root; the min_radius floor dominates for small objects either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinybev_ros.geometry import BevGrid
from tinybev_ros.model.box_code import (
    AXIS_COS,
    AXIS_SIN,
    BOX_CODE_SIZE,
    DIRECTION,
    LOG_SIZE,
    VELOCITY,
    decode_heading,
    encode_heading,
)
from tinybev_ros.predictions import FORECAST_STEPS
from tinybev_ros.taxonomy import DETECTION_CLASSES
from training.ground_truth import GroundTruth


@dataclass(frozen=True)
class TargetConfig:
    """How detection targets are drawn (the detection stride comes from the model's config)."""

    max_objects: int = 500
    min_overlap: float = 0.1
    min_radius: int = 2
    # Boxes with fewer LiDAR + radar points are not positives (no peak, no box/motion regression): the devkit's
    # evaluation drops boxes without points from the ground truth, so a detection there counts as a false
    # positive. 0 = every annotated box is a positive.
    min_points: int = 1

    def __post_init__(self) -> None:
        # max_objects 0 would train a detector on no positives at all, silently
        if self.max_objects < 1 or self.min_radius < 0 or self.min_points < 0:
            raise ValueError(f"targets: max_objects must be >= 1, min_radius and min_points >= 0 (got "
                             f"{self.max_objects}, {self.min_radius}, {self.min_points})")
        if not 0 < self.min_overlap < 1:  # an IoU; 7 for 0.7 would fall back to min_radius everywhere
            raise ValueError(f"targets.min_overlap is an IoU in (0, 1), got {self.min_overlap}")


def gaussian_radius(length_cells: float, width_cells: float, min_overlap: float) -> float:
    """Largest corner displacement (cells) keeping IoU >= min_overlap with a length x width box."""
    h, w, o = float(length_cells), float(width_cells), float(min_overlap)
    s = h + w
    # Case 1: both corners shift by r the same way: (h-r)(w-r) / (2hw - (h-r)(w-r)) >= o.
    c1 = h * w * (1.0 - o) / (1.0 + o)
    r1 = (s - np.sqrt(max(s * s - 4.0 * c1, 0.0))) / 2.0
    # Case 2: box shrinks by r on each side: (h-2r)(w-2r) / (hw) >= o.
    r2 = (2.0 * s - np.sqrt(max(4.0 * s * s - 16.0 * (1.0 - o) * h * w, 0.0))) / 8.0
    # Case 3: box grows by r on each side: hw / ((h+2r)(w+2r)) >= o.
    r3 = (-2.0 * o * s + np.sqrt(4.0 * o * o * s * s + 16.0 * o * (1.0 - o) * h * w)) / (8.0 * o)
    return float(min(r1, r2, r3))


def draw_gaussian(heatmap: np.ndarray, row: int, col: int, radius: int) -> None:
    """Max-blend a (2r+1)^2 gaussian with sigma (2r+1)/6 and peak 1 at (row, col) into `heatmap` (H, W)."""
    sigma = (2 * radius + 1) / 6.0
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2.0 * sigma * sigma))
    height, width = heatmap.shape
    r0, r1 = max(row - radius, 0), min(row + radius + 1, height)
    c0, c1 = max(col - radius, 0), min(col + radius + 1, width)
    if r0 >= r1 or c0 >= c1:
        return
    patch = kernel[r0 - row + radius: r1 - row + radius, c0 - col + radius: c1 - col + radius]
    np.maximum(heatmap[r0:r1, c0:c1], patch, out=heatmap[r0:r1, c0:c1])


def detection_grid_shape(grid: BevGrid, det_stride: int) -> tuple[int, int]:
    height, width = grid.shape
    if height % det_stride or width % det_stride:
        raise ValueError(f"BEV grid {grid.shape} is not divisible by det_stride {det_stride}")
    return height // det_stride, width // det_stride


def build_targets(gt: GroundTruth, grid: BevGrid, det_stride: int, config: TargetConfig) -> dict[str, np.ndarray]:
    """Target arrays of one sample (no batch axis). Boxes whose centre is outside the grid, and boxes with fewer
    than `config.min_points` points, are not detection positives."""
    hd, wd = detection_grid_shape(grid, det_stride)
    cell = grid.resolution * det_stride
    m = config.max_objects
    heatmap = np.zeros((len(DETECTION_CLASSES), hd, wd), dtype=np.float32)
    box_index = np.zeros(m, dtype=np.int64)
    box_mask = np.zeros(m, dtype=bool)
    box = np.zeros((m, BOX_CODE_SIZE), dtype=np.float32)
    motion = np.zeros((m, FORECAST_STEPS, 2), dtype=np.float32)
    motion_mask = np.zeros((m, FORECAST_STEPS), dtype=bool)
    labels = np.zeros(m, dtype=np.int64)

    u = (gt.centers[:, 0] - grid.x_min) / cell  # continuous detection-grid row
    v = (gt.centers[:, 1] - grid.y_min) / cell  # continuous detection-grid column
    inside = (u >= 0) & (u < hd) & (v >= 0) & (v < wd)
    inside &= (gt.num_lidar_pts + gt.num_radar_pts) >= config.min_points
    sin2, cos2, forward = encode_heading(np.asarray(gt.yaws, dtype=float))
    kept = np.flatnonzero(inside)
    if len(kept) > m:  # keep the nearest objects when a scene has more than the budget
        kept = kept[np.argsort(np.hypot(gt.centers[kept, 0], gt.centers[kept, 1]), kind="stable")[:m]]
    for slot, i in enumerate(kept):
        row, col = int(np.floor(u[i])), int(np.floor(v[i]))
        w, length, h = gt.sizes_wlh[i]
        radius = gaussian_radius(length / cell, w / cell, config.min_overlap)
        draw_gaussian(heatmap[gt.labels[i]], row, col, max(config.min_radius, int(radius)))
        box_index[slot] = row * wd + col
        box_mask[slot] = True
        labels[slot] = gt.labels[i]
        box[slot] = (u[i] - row, v[i] - col, gt.centers[i, 2], np.log(w), np.log(length), np.log(h),
                     sin2[i], cos2[i], gt.velocities[i, 0], gt.velocities[i, 1], float(forward[i]))
        motion[slot] = gt.futures[i] - gt.centers[i, None, :2]
        motion_mask[slot] = gt.future_mask[i]
    motion[~motion_mask] = 0.0

    return {
        "heatmap": heatmap,
        "box_index": box_index,
        "box_mask": box_mask,
        "box": box,
        "box_label": labels,
        "motion": motion,
        "motion_mask": motion_mask,
        "map": gt.map_masks.astype(np.float32),
        "map_valid": gt.map_valid.astype(bool),
        "occupancy": gt.occupancy.astype(np.float32),
        "occupancy_mask": gt.occupancy_mask.astype(bool),
        "ego_future": gt.ego_future.astype(np.float32),
        "ego_future_mask": gt.ego_future_mask.astype(bool),
    }


def decode_box_targets(targets: dict[str, np.ndarray], grid: BevGrid, det_stride: int) -> dict[str, np.ndarray]:
    """Boxes back from one sample's targets (the inverse of build_targets' encoding); used to check it."""
    _, wd = detection_grid_shape(grid, det_stride)
    cell = grid.resolution * det_stride
    mask = targets["box_mask"]
    index, code = targets["box_index"][mask], targets["box"][mask].astype(float)
    rows, cols = index // wd, index % wd
    centers = np.stack([grid.x_min + (rows + code[:, 0]) * cell, grid.y_min + (cols + code[:, 1]) * cell,
                        code[:, 2]], axis=1)
    return {
        "centers": centers,
        "sizes_wlh": np.exp(code[:, LOG_SIZE]),
        "yaws": decode_heading(code[:, AXIS_SIN], code[:, AXIS_COS], code[:, DIRECTION] >= 0.5),
        "velocities": code[:, VELOCITY],
        "labels": targets["box_label"][mask],
    }
