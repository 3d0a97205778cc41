"""IoU for map layers and occupancy (near/far, current/future) on hand-made masks."""

from __future__ import annotations

import numpy as np
import pytest

from tinybev_ros.geometry import BevGrid
from training.metrics.segmentation import IoUAccumulator, MapAccumulator, OccupancyAccumulator, iou, region_mask


def test_iou_hand_case() -> None:
    pred = np.zeros((4, 4), bool)
    gt = np.zeros((4, 4), bool)
    pred[0:2, 0:2] = True  # 4 cells
    gt[1:3, 1:3] = True  # 4 cells, 1 shared
    assert iou(pred, gt) == pytest.approx(1 / 7)
    assert np.isnan(iou(np.zeros(3, bool), np.zeros(3, bool)))
    with pytest.raises(ValueError, match="shape"):
        iou(pred, gt[:3])


def test_dataset_iou_sums_before_dividing() -> None:
    acc = IoUAccumulator(("a",))
    acc.add(np.ones((1, 2, 2), bool), np.ones((1, 2, 2), bool))  # 4/4
    acc.add(np.array([[[True, False]]]), np.array([[[False, True]]]))  # 0/2
    assert acc.result()["a"] == pytest.approx(4 / 6)  # not the mean of per-sample IoUs (0.5)


def test_map_threshold_and_per_class() -> None:
    probs = np.zeros((2, 2, 2))
    probs[0] = [[0.9, 0.6], [0.4, 0.1]]
    gt = np.zeros((2, 2, 2), bool)
    gt[0, 0, :] = True
    acc = MapAccumulator(classes=("drivable_area", "lane_divider"))
    acc.add(probs, gt)
    out = acc.result()
    assert out["drivable_area"] == pytest.approx(1.0)
    assert np.isnan(out["lane_divider"]) and out["mIoU"] == pytest.approx(1.0)


def test_occupancy_near_far_current_future() -> None:
    grid = BevGrid()  # 0.5 m cells, +-50 m
    near, far = region_mask(grid, 30.0), region_mask(grid, 100.0)
    assert near.sum() == 60 * 60 and far.sum() == 200 * 200  # UniAD's 30 m and 100 m squares
    gt = np.zeros((3, 200, 200), bool)
    rows, cols, _ = grid.cell_of(np.array([[5.0, 5.0], [40.0, 0.0]]))  # one cell near, one only far
    gt[:, rows, cols] = True
    pred = gt.astype(float)
    pred[1:, rows[1], cols[1]] = 0.0  # the far object is missed in the future frames
    acc = OccupancyAccumulator(grid)
    acc.add(pred, gt)
    out = acc.result()
    assert out["near_current"] == pytest.approx(1.0) and out["near_future"] == pytest.approx(1.0)
    assert out["far_current"] == pytest.approx(1.0)
    assert out["far_future"] == pytest.approx(2 / 4)
    assert out["near"] == pytest.approx(1.0) and out["far"] == pytest.approx(4 / 6)  # all three frames pooled


def test_occupancy_frames_missing_from_ground_truth_are_left_out() -> None:
    grid = BevGrid()
    gt = np.zeros((3, 200, 200), bool)
    gt[:, 100, 100] = True
    gt[2] = False  # the scene ended: frame 2 has no ground truth (all False)
    pred = np.zeros((3, 200, 200))
    pred[:, 100, 100] = 1.0
    acc = OccupancyAccumulator(grid)
    acc.add(pred, gt, frame_mask=np.array([True, True, False]))
    assert acc.result()["near_future"] == pytest.approx(1.0)  # frame 2's prediction is not counted as false
    unmasked = OccupancyAccumulator(grid)
    unmasked.add(pred, gt)
    assert unmasked.result()["near_future"] == pytest.approx(0.5)
