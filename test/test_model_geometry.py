"""LSS geometry: a 3D point seen by a camera must be splatted into the BEV cell that contains it.

Projection is done by the nuscenes-devkit (`view_points`) with the shipped real rig, through our preprocessing
(resize + crop + K update), so model geometry, preprocessing and the devkit have to agree.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from nuscenes.utils.geometry_utils import view_points

from tinybev_ros.geometry import CAMERA_NAMES, Rig
from tinybev_ros.model import ModelConfig, load_model_config
from tinybev_ros.model.preprocess import ResizeCrop
from tinybev_ros.model.view_transform import LiftSplat

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"
# Known points in base_link (x forward, y left, z up), deliberately asymmetric so a swapped axis shows.
POINTS = np.array([
    [12.3, 0.7, 0.4], [23.6, -4.1, -0.6], [7.2, 8.9, 1.1], [-13.4, 3.3, 0.2],
    [-24.8, -6.2, 0.8], [4.1, -9.6, -0.3], [31.5, 12.7, 1.5], [-6.6, -17.9, 0.1],
])


def calibration(config: ModelConfig) -> tuple[np.ndarray, np.ndarray]:
    rig = Rig.load()
    ks, poses = [], []
    for name in CAMERA_NAMES:
        cam = rig.cameras[name]
        crop = ResizeCrop.fit_width((cam.height, cam.width), (config.image_height, config.image_width))
        ks.append(crop.intrinsics(cam.intrinsic))
        poses.append(cam.sensor_to_ego.matrix)
    return np.array(ks), np.array(poses)


def splat_lookup(config: ModelConfig, ks: np.ndarray, poses: np.ndarray) -> tuple[LiftSplat, np.ndarray]:
    """The LiftSplat module and, per flat frustum cell (N, D, h, w), its BEV cell (-1 = not splatted)."""
    lift = LiftSplat(config)
    splat = lift.splat_index(torch.tensor(ks, dtype=torch.float32)[None],
                             torch.tensor(poses, dtype=torch.float32)[None])
    d, h, w = lift.frustum_shape
    lookup = np.full(len(CAMERA_NAMES) * d * h * w, -1, dtype=np.int64)
    lookup[splat.depth_index.numpy()] = splat.cell_index.numpy()
    return lift, lookup


@pytest.mark.parametrize("name", ["model_tiny.yaml", "model_base.yaml"])
def test_known_points_land_in_their_bev_cell(name):
    config = load_model_config(CONFIG_DIR / name)
    ks, poses = calibration(config)
    lift, lookup = splat_lookup(config, ks, poses)
    d_bins, h, w = lift.frustum_shape
    stride, grid = config.feature_stride, config.grid
    size_y = grid.shape[1]
    checked_exact = checked_near = 0
    for cam_i in range(len(CAMERA_NAMES)):
        ego_to_cam = np.linalg.inv(poses[cam_i])
        for point in POINTS:
            p_cam = ego_to_cam[:3, :3] @ point + ego_to_cam[:3, 3]
            depth = p_cam[2]
            if not config.depth_min <= depth < config.depth_max:
                continue
            u, v = view_points(p_cam[:, None], ks[cam_i], normalize=True)[:2, 0]
            col, row = int(np.floor((u + 0.5) / stride)), int(np.floor((v + 0.5) / stride))
            if not (0 <= col < w and 0 <= row < h):
                continue
            k = int((depth - config.depth_min) // config.depth_step)
            flat = ((cam_i * d_bins + k) * h + row) * w + col
            # 1) The frustum cell holding the point's pixel and depth is splatted near the point: its centre is
            #    at most half a feature cell (pixels) and half a depth bin away from the point.
            r_exp, c_exp, inside = grid.cell_of(point[None, :2])
            assert inside[0] and lookup[flat] >= 0, (CAMERA_NAMES[cam_i], point)
            r_got, c_got = divmod(int(lookup[flat]), size_y)
            reach = (stride / 2 * depth / ks[cam_i][0, 0] * np.sqrt(2) + config.depth_step / 2) / grid.resolution
            off = max(abs(r_got - r_exp[0]), abs(c_got - c_exp[0]))
            assert off <= int(np.ceil(reach)), (CAMERA_NAMES[cam_i], point, off)
            checked_near += 1
            # 2) Exactly: move the point to that frustum cell's centre pixel and bin depth (back-projected with
            #    numpy, checked with the devkit); it must land in exactly the BEV cell that contains it.
            uc, vc = col * stride + (stride - 1) / 2, row * stride + (stride - 1) / 2
            dc = config.depth_min + (k + 0.5) * config.depth_step
            centre_cam = dc * np.linalg.inv(ks[cam_i]) @ np.array([uc, vc, 1.0])
            centre = poses[cam_i][:3, :3] @ centre_cam + poses[cam_i][:3, 3]
            np.testing.assert_allclose(view_points(centre_cam[:, None], ks[cam_i], normalize=True)[:2, 0], [uc, vc],
                                       atol=1e-6)
            frac = (centre[:2] - [grid.x_min, grid.y_min]) / grid.resolution % 1.0
            if np.any(np.minimum(frac, 1 - frac) < 1e-3):
                continue  # on a cell border: float rounding may legitimately go either way
            r_c, c_c, _ = grid.cell_of(centre[None, :2])
            assert (r_got, c_got) == (r_c[0], c_c[0]), (CAMERA_NAMES[cam_i], point)
            checked_exact += 1
    # Every point is seen by at least one camera (360 degree rig), some by two.
    assert checked_near >= len(POINTS) and checked_exact >= len(POINTS) - 1


def test_splat_indices_are_in_range_per_batch_element_and_respect_z_band():
    config = load_model_config(CONFIG_DIR / "model_tiny.yaml")
    ks, poses = calibration(config)
    lift = LiftSplat(config)
    k = torch.tensor(ks, dtype=torch.float32)[None].expand(2, -1, -1, -1)
    pose = torch.tensor(poses, dtype=torch.float32)[None].expand(2, -1, -1, -1)
    splat = lift.splat_index(k, pose)
    cells = config.grid.shape[0] * config.grid.shape[1]
    half = splat.cell_index.numel() // 2
    assert half > 1000
    assert torch.equal(splat.cell_index[half:], splat.cell_index[:half] + cells)
    assert int(splat.cell_index.max()) < 2 * cells and int(splat.cell_index.min()) >= 0
    points = lift.points(k[:1], pose[:1]).reshape(-1, 3)[splat.depth_index[:half]]
    assert float(points[:, 2].min()) >= config.z_min and float(points[:, 2].max()) < config.z_max
    # Raising the camera 10 m pushes every near-ground frustum point below z_min: far fewer points survive.
    lifted = pose.clone()
    lifted[..., 2, 3] += 10.0
    assert lift.splat_index(k[:1], lifted[:1]).cell_index.numel() < half // 2


def test_half_precision_model_computes_the_same_splat_index():
    """A model cast with `model.half()` (an fp16 deployment of its own) must not round the frustum geometry."""
    from tinybev_ros.model import build_student

    config = load_model_config(CONFIG_DIR / "model_tiny.yaml")
    ks, poses = calibration(config)
    k = torch.tensor(ks, dtype=torch.float32)[None]
    pose = torch.tensor(poses, dtype=torch.float32)[None]
    model = build_student(config)
    full = model.splat_index(k, pose)
    half = model.half().splat_index(k, pose)
    assert torch.equal(full.cell_index, half.cell_index) and torch.equal(full.depth_index, half.depth_index)
