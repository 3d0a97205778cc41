"""Targets: the CenterPoint radius rule, heatmap peaks at the boxes, and exact box/motion encodings."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from nuscenes.nuscenes import NuScenes

from tinybev_ros.geometry import BevGrid
from tinybev_ros.taxonomy import DETECTION_CLASSES
from training.ground_truth import load_ground_truth
from training.targets import TargetConfig, build_targets, decode_box_targets, draw_gaussian, gaussian_radius


def _iou_shift(h: float, w: float, r: float) -> float:
    """Both corners shifted by r the same way (case 1)."""
    inter = max(h - r, 0) * max(w - r, 0)
    return inter / (2 * h * w - inter)


@pytest.mark.parametrize(("length", "width"), [(4.5, 2.0), (45.0, 20.0), (0.7, 0.6), (12.0, 2.5)])
def test_gaussian_radius_is_the_largest_shift_keeping_the_iou(length, width):
    o = 0.1
    r = gaussian_radius(length, width, o)
    ious = (_iou_shift(length, width, r),
            (length - 2 * r) * (width - 2 * r) / (length * width),  # shrunk on every side (case 2)
            length * width / ((length + 2 * r) * (width + 2 * r)))  # grown on every side (case 3)
    assert min(ious) == pytest.approx(o, abs=1e-9)  # the binding case sits exactly on the threshold
    assert all(iou >= o - 1e-9 for iou in ious)


def test_draw_gaussian_peak_and_sigma():
    heat = np.zeros((20, 20), dtype=np.float32)
    draw_gaussian(heat, 5, 7, 3)
    assert heat[5, 7] == 1.0 and np.unravel_index(heat.argmax(), heat.shape) == (5, 7)
    sigma = 7 / 6
    assert heat[5, 8] == pytest.approx(np.exp(-1 / (2 * sigma**2)), rel=1e-6)
    assert heat[5, 11] == 0.0  # outside the (2r+1) window
    draw_gaussian(heat, 0, 0, 3)  # clipped at the border without error
    assert heat[0, 0] == 1.0


@pytest.fixture(scope="module")
def synth_gt(synth_dataset):
    nusc = NuScenes(version=synth_dataset.version, dataroot=str(synth_dataset.dataroot), verbose=False)
    token = sorted(nusc.scene, key=lambda s: s["name"])[0]["first_sample_token"]
    token = nusc.get("sample", token)["next"]
    cache: dict = {}
    return {stride_grid: load_ground_truth(nusc, cache, token, stride_grid[1]) for stride_grid in
            ((2, BevGrid()), (1, BevGrid(resolution=1.0)))}


@pytest.mark.parametrize("key", [0, 1])
def test_boxes_land_on_heatmap_peaks(synth_gt, key):
    (stride, grid), gt = list(synth_gt.items())[key]
    targets = build_targets(gt, grid, stride, TargetConfig())
    cell = grid.resolution * stride
    hd, wd = grid.shape[0] // stride, grid.shape[1] // stride
    u = (gt.centers[:, 0] - grid.x_min) / cell
    v = (gt.centers[:, 1] - grid.y_min) / cell
    inside = (u >= 0) & (u < hd) & (v >= 0) & (v < wd) & gt.evaluable
    assert inside.sum() >= 3 and targets["box_mask"].sum() == inside.sum()
    heat = targets["heatmap"]
    assert heat.shape == (len(DETECTION_CLASSES), hd, wd) and heat.max() == 1.0
    expected = {(int(gt.labels[i]), int(u[i]), int(v[i])) for i in np.flatnonzero(inside)}
    # Local maxima equal to 1 (CenterPoint peak picking) are exactly the box centre cells.
    pooled = F.max_pool2d(torch.from_numpy(heat)[None], 3, stride=1, padding=1)[0].numpy()
    peaks = {tuple(int(x) for x in p) for p in np.argwhere((heat == 1.0) & (pooled == heat))}
    assert peaks == expected
    # The regression targets decode back to the ground-truth boxes.
    decoded = decode_box_targets(targets, grid, stride)
    order = np.flatnonzero(inside)
    np.testing.assert_allclose(decoded["centers"], gt.centers[order], atol=1e-4)
    np.testing.assert_allclose(decoded["sizes_wlh"], gt.sizes_wlh[order], rtol=1e-5)
    np.testing.assert_allclose(np.angle(np.exp(1j * (decoded["yaws"] - gt.yaws[order]))), 0.0, atol=1e-5)
    np.testing.assert_allclose(decoded["velocities"], gt.velocities[order], atol=1e-5)
    np.testing.assert_array_equal(decoded["labels"], gt.labels[order])
    slots = np.flatnonzero(targets["box_mask"])
    np.testing.assert_array_equal(targets["box_index"][slots], u[order].astype(int) * wd + v[order].astype(int))


def test_boxes_without_points_are_no_positives_as_the_devkit_drops_them(synth_gt):
    """nuScenes' evaluation filters boxes without LiDAR or radar points out of the ground truth, so a peak there
    would be trained to become a false positive."""
    (stride, grid), gt = list(synth_gt.items())[1]
    config = TargetConfig()
    base = build_targets(gt, grid, stride, config)
    lit = np.flatnonzero(gt.evaluable & (np.abs(gt.centers[:, :2]) < 45).all(1))
    dark = lit[0]
    lidar = gt.num_lidar_pts.copy()
    lidar[dark] = 0
    unseen = dataclasses.replace(gt, num_lidar_pts=lidar)
    targets = build_targets(unseen, grid, stride, config)
    row, col = (int((gt.centers[dark, 0] - grid.x_min) / grid.resolution),
                int((gt.centers[dark, 1] - grid.y_min) / grid.resolution))
    label = int(gt.labels[dark])
    assert base["heatmap"][label, row, col] == 1.0 and targets["heatmap"][label, row, col] < 1.0
    assert targets["box_mask"].sum() == base["box_mask"].sum() - 1
    # A radar return keeps it, as in the devkit (num_lidar_pts + num_radar_pts > 0) ...
    radar = gt.num_radar_pts.copy()
    radar[dark] = 1
    assert build_targets(dataclasses.replace(unseen, num_radar_pts=radar), grid, stride, config)["heatmap"][
        label, row, col] == 1.0
    # ... and min_points 0 trains every annotated box.
    every = build_targets(unseen, grid, stride, dataclasses.replace(config, min_points=0))
    assert every["heatmap"][label, row, col] == 1.0


def test_motion_map_occupancy_and_plan_targets(synth_gt):
    (stride, grid), gt = list(synth_gt.items())[0]
    targets = build_targets(gt, grid, stride, TargetConfig())
    kept = np.flatnonzero(targets["box_mask"])
    decoded = decode_box_targets(targets, grid, stride)
    for slot, centre in zip(kept, decoded["centers"], strict=True):
        i = int(np.argmin(np.linalg.norm(gt.centers - centre, axis=1)))
        mask = gt.future_mask[i]
        np.testing.assert_array_equal(targets["motion_mask"][slot], mask)
        np.testing.assert_allclose(targets["motion"][slot][mask], gt.futures[i][mask] - gt.centers[i, :2], atol=1e-4)
        assert not targets["motion"][slot][~mask].any()
    assert targets["motion_mask"].any()
    np.testing.assert_array_equal(targets["map"], gt.map_masks.astype(np.float32))
    np.testing.assert_array_equal(targets["occupancy"], gt.occupancy.astype(np.float32))
    np.testing.assert_allclose(targets["ego_future"], gt.ego_future, atol=1e-5)
    np.testing.assert_array_equal(targets["ego_future_mask"], gt.ego_future_mask)


def test_object_budget_keeps_nearest_and_drops_outside(synth_gt):
    (stride, grid), gt = list(synth_gt.items())[0]
    small = BevGrid(-20.0, 20.0, -20.0, 20.0, 0.5)
    targets = build_targets(gt, small, stride, TargetConfig(max_objects=2))
    assert targets["box_mask"].sum() == min(2, int((np.abs(gt.centers[:, :2]) < 20).all(1).sum()))
    decoded = decode_box_targets(targets, small, stride)
    distances = np.hypot(gt.centers[:, 0], gt.centers[:, 1])
    inside = (np.abs(gt.centers[:, :2]) < 20).all(1)
    nearest = np.sort(distances[inside])[:2]
    np.testing.assert_allclose(np.sort(np.hypot(decoded["centers"][:, 0], decoded["centers"][:, 1])), nearest,
                               atol=1e-4)
