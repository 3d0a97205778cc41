"""LiDAR depth targets for the camera depth bins: the cell and bin a point lands in, agreement with the model's
own frustum on a real synthetic keyframe, the loss, and a training run that uses them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from nuscenes.nuscenes import NuScenes

from tinybev_ros.model.config import load_model_config
from tinybev_ros.model.view_transform import LiftSplat
from training.config import LossRamp, load_train_config
from training.data import NuScenesBevDataset
from training.depth_targets import NO_DEPTH, depth_bin_targets, depth_loss
from training.train import Trainer

REPO = Path(__file__).resolve().parent.parent
TINY = load_model_config(REPO / "config" / "model_tiny.yaml")  # 128x352 input, stride 16, bins of 2 m from 1 m


def test_a_point_lands_in_its_cell_and_bin_and_the_nearest_wins():
    k = np.array([[[200.0, 0.0, 176.0], [0.0, 200.0, 64.0], [0.0, 0.0, 1.0]]])
    optical = np.eye(4)[None]  # base_link = the optical frame: z is depth
    # pixel (u, v) = (40, 20) -> cell (row 1, col 2); depth 10.3 m -> bin 4 ([9, 11) m)
    x, y = (40 - 176) / 200, (20 - 64) / 200
    points = np.array([[x * 10.3, y * 10.3, 10.3],
                       [x * 25.0, y * 25.0, 25.0],  # same cell, farther: hidden behind the first
                       [0.0, 0.0, -5.0],  # behind the camera
                       [0.0, 0.0, 80.0],  # beyond the last bin
                       [0.0, 0.0, 0.5]])  # nearer than the first bin
    targets = depth_bin_targets(points, k, optical, TINY)
    assert targets.shape == (1, 8, 22)
    assert targets[0, 1, 2] == 4
    assert (targets != NO_DEPTH).sum() == 1


def test_targets_agree_with_the_model_frustum_on_an_augmented_keyframe(synth_dataset):
    """Each target's frustum cell (as LiftSplat builds it, with the batch's augmented K) holds a LiDAR point:
    the cell centre's ray passes within one cell of the point and the bin centre is within half a bin of it."""
    nusc = NuScenes(version=synth_dataset.version, dataroot=str(synth_dataset.dataroot), verbose=False)
    config = load_train_config(REPO / "config" / "train_tiny.yaml")
    dataset = NuScenesBevDataset(nusc, "train", TINY.grid, TINY.det_stride, TINY,
                                 dataclasses.replace(config.data, max_samples=1), config.targets, train=True,
                                 with_lidar=True, depth_targets=True)
    item = dataset[0]
    targets = item["targets"]["depth"]
    assert targets.shape == (6, 8, 22) and (targets != NO_DEPTH).sum() > 200
    frustum = LiftSplat(TINY).points(torch.from_numpy(item["intrinsics"])[None],
                                     torch.from_numpy(item["cam_to_ego"])[None])[0].numpy()  # (N, D, h, w, 3)
    stride = TINY.feature_stride
    for cam in range(6):
        ego_to_cam = np.linalg.inv(item["cam_to_ego"][cam].astype(np.float64))
        lidar_cam = item["lidar"][:, :3] @ ego_to_cam[:3, :3].T + ego_to_cam[:3, 3]
        front = lidar_cam[:, 2] > 0.5
        pixels = lidar_cam[front] @ item["intrinsics"][cam].T.astype(np.float64)
        uv, depth = pixels[:, :2] / pixels[:, 2:], lidar_cam[front, 2]
        for row, col in zip(*np.nonzero(targets[cam] != NO_DEPTH), strict=True):
            point = frustum[cam, targets[cam, row, col], row, col]
            centre = (item["intrinsics"][cam] @ (ego_to_cam[:3, :3] @ point + ego_to_cam[:3, 3]))
            centre_uv, centre_depth = centre[:2] / centre[2], centre[2]
            near = np.all(np.abs(uv - centre_uv) <= stride / 2 + 1e-6, axis=1)
            assert near.any(), (cam, row, col)
            assert abs(depth[near].min() - centre_depth) <= TINY.depth_step / 2 + 1e-6, (cam, row, col)


def test_depth_loss_is_cross_entropy_over_cells_with_a_target():
    target = torch.full((1, 2, 3, 4), NO_DEPTH, dtype=torch.int64)
    target[0, 0, 1, 2] = 3
    target[0, 1, 0, 0] = 0
    bins = 5
    certain = torch.nn.functional.one_hot(target.clamp(min=0), bins).movedim(-1, 2).float()
    assert depth_loss(certain, target) < 1e-5
    uniform = torch.full((1, 2, bins, 3, 4), 1.0 / bins)
    assert depth_loss(uniform, target) == pytest.approx(np.log(bins), rel=1e-5)
    elsewhere = uniform.clone()
    elsewhere[0, 0, :, 2, 2] = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0])  # a cell without target: no effect
    assert depth_loss(elsewhere, target) == pytest.approx(np.log(bins), rel=1e-5)
    nothing = torch.full_like(target, NO_DEPTH)
    probs = uniform.clone().requires_grad_()
    loss = depth_loss(probs, nothing)
    loss.backward()
    assert loss == 0 and probs.grad is not None


def test_training_with_a_depth_weight_learns_lidar_depth(synth_dataset, tmp_path):
    nusc = NuScenes(version=synth_dataset.version, dataroot=str(synth_dataset.dataroot), verbose=False)
    base = load_train_config(REPO / "config" / "train_tiny.yaml")
    config = dataclasses.replace(
        base, steps=16, val_every=10**6, checkpoint_every=10**6, val_batches=1, loss_ramp=LossRamp(),
        loss=dataclasses.replace(base.loss, depth=3.0),
        data=dataclasses.replace(base.data, num_workers=0, max_samples=1, batch_size=1, augment=False),
        optim=dataclasses.replace(base.optim, lr=2e-3, warmup_steps=2))
    trainer = Trainer(config, "student", synth_dataset.dataroot, synth_dataset.version, tmp_path, nusc=nusc)
    trainer.fit()
    depth = [h["depth"] for h in trainer.history]
    assert depth[0] == pytest.approx(np.log(TINY.num_depth_bins), rel=0.2)  # untrained: about uniform
    assert np.mean(depth[-2:]) < 0.8 * np.mean(depth[:2]), depth
    without = Trainer(dataclasses.replace(config, loss=dataclasses.replace(base.loss, depth=0.0)), "student",
                      synth_dataset.dataroot,
                      synth_dataset.version, tmp_path / "without", nusc=nusc)
    assert "depth" not in without.train_set[0]["targets"]
