"""LiDAR depth as a training target for the camera branch's depth bins (explicit depth supervision).

Lift-Splat learns depth only through the BEV losses unless told otherwise; supervising each feature cell's depth
distribution with the LiDAR points that project into it (BEVDepth, Li et al. 2023) teaches the geometry the
splat relies on directly. Training only: the deployed student never sees LiDAR.
"""

from __future__ import annotations

import numpy as np
import torch

from tinybev_ros.geometry import CameraCalibration, Transform
from tinybev_ros.model.config import ModelConfig

NO_DEPTH = -1  # a feature cell no LiDAR point projects into: left out of the loss


def depth_bin_targets(points_ego: np.ndarray, intrinsics: np.ndarray, cam_to_ego: np.ndarray,
                      config: ModelConfig) -> np.ndarray:
    """(N, h, w) int64 depth-bin index of the nearest LiDAR point in each camera feature cell, or NO_DEPTH.

    points_ego: (P, >=3) base_link points; intrinsics (N, 3, 3) and cam_to_ego (N, 4, 4) exactly as fed to the
    model (augmentation folded in), so the targets follow the frustum the model builds. A cell spans `stride`
    input pixels (pixel centres at integers, as in `LiftSplat.frustum`); the nearest point wins because it is the
    surface the camera sees. Points outside the depth range give no target.
    """
    stride = config.feature_stride
    h, w = config.image_height // stride, config.image_width // stride
    bins = config.num_depth_bins
    targets = np.full((len(intrinsics), h, w), NO_DEPTH, dtype=np.int64)
    xyz = np.asarray(points_ego, dtype=np.float64)[:, :3]
    for cam, (k, extrinsic) in enumerate(zip(intrinsics, cam_to_ego, strict=True)):
        camera = CameraCalibration(f"camera {cam}", np.asarray(k, dtype=np.float64), Transform.from_matrix(extrinsic))
        pixels, depth = camera.project(xyz)
        keep = (depth >= config.depth_min) & (depth < config.depth_min + bins * config.depth_step)
        pixels, depth = pixels[keep], depth[keep]
        col = np.floor((pixels[:, 0] + 0.5) / stride).astype(np.int64)
        row = np.floor((pixels[:, 1] + 0.5) / stride).astype(np.int64)
        inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
        nearest = np.full(h * w, np.inf)
        np.minimum.at(nearest, row[inside] * w + col[inside], depth[inside])
        seen = np.isfinite(nearest)
        index = np.full(h * w, NO_DEPTH, dtype=np.int64)
        index[seen] = np.minimum(((nearest[seen] - config.depth_min) / config.depth_step).astype(np.int64), bins - 1)
        targets[cam] = index.reshape(h, w)
    return targets


def depth_loss(depth_probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the predicted depth distributions (B, N, D, h, w) at cells with a LiDAR target (B, N, h, w).

    Averaged over those cells; zero (with a gradient path) when a batch has none.
    """
    valid = target.ne(NO_DEPTH)
    probs = depth_probs.float().movedim(2, -1)[valid]  # (M, D)
    if probs.numel() == 0:
        return depth_probs.sum() * 0.0
    picked = probs.gather(1, target[valid].unsqueeze(1)).squeeze(1)
    return -torch.log(picked.clamp(min=1e-6)).mean()
