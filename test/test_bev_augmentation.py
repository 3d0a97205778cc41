"""BEV augmentation moves every base_link quantity with one transform: images and targets stay consistent."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from nuscenes.nuscenes import NuScenes
from test_training import TINY  # noqa: I001  (test helper module)

from tinybev_ros.geometry import Transform
from tinybev_ros.model.config import load_model_config
from tinybev_ros.taxonomy import Command
from training.bev_augmentation import BevAugmentationConfig, BevTransform
from training.data import DataConfig, NuScenesBevDataset
from training.ground_truth import get_map, map_masks_for_pose
from training.targets import TargetConfig, decode_box_targets


def test_transform_algebra():
    mirror = BevTransform.compose(flip_x=False, flip_y=True, rotation_rad=0.0, scale=1.0)
    np.testing.assert_allclose(mirror.points(np.array([[3.0, 2.0, 1.0]])), [[3.0, -2.0, 1.0]])
    assert mirror.headings(np.array([0.5]))[0] == pytest.approx(-0.5)
    assert mirror.command(Command.LEFT) == Command.RIGHT and mirror.command(Command.STRAIGHT) == Command.STRAIGHT
    turn = BevTransform.compose(flip_x=False, flip_y=False, rotation_rad=np.pi / 2, scale=2.0)
    np.testing.assert_allclose(turn.points(np.array([[1.0, 0.0, 1.0]])), [[0.0, 2.0, 2.0]], atol=1e-12)
    np.testing.assert_allclose(turn.vectors_xy(np.array([[0.0, 3.0]])), [[-6.0, 0.0]], atol=1e-12)
    assert turn.headings(np.array([0.0]))[0] == pytest.approx(np.pi / 2)
    assert turn.scale == pytest.approx(2.0) and turn.command(Command.LEFT) == Command.LEFT
    back = BevTransform.compose(flip_x=True, flip_y=False, rotation_rad=0.0, scale=1.0)
    assert back.headings(np.array([0.0]))[0] == pytest.approx(np.pi) and back.command(Command.RIGHT) == Command.RIGHT
    # LiDAR rows: only x, y, z move; intensity, ring and time lag stay.
    row = np.array([[1.0, 2.0, 3.0, 40.0, 5.0, 0.5]])
    np.testing.assert_allclose(turn.points(row)[0, 3:], row[0, 3:])


def test_sampling_is_reproducible_and_within_the_ranges():
    config = BevAugmentationConfig()
    draws = [BevTransform.sample(np.random.default_rng([0, 0, i]), config) for i in range(200)]
    again = BevTransform.sample(np.random.default_rng([0, 0, 7]), config)
    np.testing.assert_array_equal(draws[7].matrix, again.matrix)
    scales = np.array([d.scale for d in draws])
    assert scales.min() >= 0.95 and scales.max() <= 1.05
    mirrored = np.array([np.linalg.det(d.planar) < 0 for d in draws])
    assert 0.3 < mirrored.mean() < 0.7  # one flip of two (flip_x xor flip_y) half the time
    off = BevTransform.sample(np.random.default_rng([0, 0, 7]), dataclasses.replace(config, enabled=False))
    assert off.is_identity
    with pytest.raises(ValueError, match="flip_x_probability"):
        BevAugmentationConfig(flip_x_probability=1.5)
    with pytest.raises(ValueError, match="beyond the cached map"):
        DataConfig(bev=BevAugmentationConfig(rotation_deg=45.0, scale_range=(0.8, 1.0)))


class Forced:
    """Wraps BevTransform.sample so that a dataset draws one chosen transform (the test fixes the augmentation)."""

    def __init__(self, transform: BevTransform) -> None:
        self.transform = transform

    def __call__(self, rng, config):
        return self.transform


@pytest.fixture(scope="module")
def nusc(synth_dataset) -> NuScenes:
    return NuScenes(version=synth_dataset.version, dataroot=str(synth_dataset.dataroot), verbose=False)


def dataset(nusc, train: bool) -> NuScenesBevDataset:
    model = load_model_config(TINY)
    no_image_aug = DataConfig(zoom_range=(1.0, 1.0), shift_fraction=0.0, max_samples=6, ego_motion_compensation=False)
    return NuScenesBevDataset(nusc, "train", model.grid, model.det_stride, model, no_image_aug, TargetConfig(),
                              train=train, with_lidar=True, depth_targets=True)


def item_with(nusc, monkeypatch, transform: BevTransform, index: int = 4) -> dict:
    monkeypatch.setattr(BevTransform, "sample", staticmethod(Forced(transform)))
    return dataset(nusc, train=True)[index]


def _pixels(item: dict, points: np.ndarray) -> list[np.ndarray]:
    """Pixels of base_link points in each camera of an item (its own K and its possibly scaled extrinsics)."""
    out = []
    for k, cam_to_ego in zip(item["intrinsics"], item["cam_to_ego"], strict=True):
        ego_to_cam = np.linalg.inv(cam_to_ego.astype(float))
        cam = points @ ego_to_cam[:3, :3].T + ego_to_cam[:3, 3]
        uvw = cam @ k.astype(float).T
        out.append(np.where(cam[:, 2:3] > 0.5, uvw[:, :2] / uvw[:, 2:3], np.nan))
    return out


def test_moved_boxes_project_onto_the_same_pixels(nusc, monkeypatch):
    """The images do not change, so every moved 3D point must still project where the original point did."""
    plain = dataset(nusc, train=False)[4]
    transform = BevTransform.compose(flip_x=True, flip_y=False, rotation_rad=0.3, scale=1.04)
    moved = item_with(nusc, monkeypatch, transform)
    np.testing.assert_array_equal(moved["images"], plain["images"])
    np.testing.assert_allclose(moved["bev_transform"], transform.matrix, atol=1e-6)
    record = dataset(nusc, train=False).cache.load(plain["meta"]["sample_token"])
    corners = np.concatenate([record.centers + offset for offset in ([0, 0, 0], [1.0, 0.5, 0.5], [-1.0, -0.5, 0])])
    seen = 0
    for before, after in zip(_pixels(plain, corners), _pixels(moved, transform.points(corners)), strict=True):
        ok = np.isfinite(before).all(1)
        np.testing.assert_allclose(after[ok], before[ok], atol=1e-2)
        seen += int(ok.sum())
    assert seen >= 10
    # LiDAR moves with the boxes; depth targets are image-space and do not change.
    np.testing.assert_allclose(moved["lidar"][:, :3], transform.points(plain["lidar"][:, :3]), rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(moved["targets"]["depth"], plain["targets"]["depth"])
    assert (plain["targets"]["depth"] >= 0).sum() > 100


def test_a_mirrored_sample_has_the_mirrored_targets(nusc, monkeypatch):
    plain_item = dataset(nusc, train=False)[4]
    plain = plain_item["targets"]
    mirror = BevTransform.compose(flip_x=False, flip_y=True, rotation_rad=0.0, scale=1.0)
    flipped_item = item_with(nusc, monkeypatch, mirror)
    flipped = flipped_item["targets"]
    assert plain_item["ego_status"][2] == 1.0 and plain_item["ego_status"][0] > 1.0
    np.testing.assert_allclose(flipped_item["ego_status"], plain_item["ego_status"] * [1.0, -1.0, 1.0], atol=1e-6)
    for key in ("heatmap", "map", "occupancy"):  # rows = x, columns = y (the grid is symmetric in y)
        np.testing.assert_array_equal(flipped[key], plain[key][..., ::-1], err_msg=key)
    assert plain["heatmap"].max() == 1.0 and plain["map"].any() and plain["occupancy"].any()
    np.testing.assert_allclose(flipped["ego_future"], plain["ego_future"] * [1.0, -1.0], atol=1e-6)
    grid = load_model_config(TINY).grid
    a, b = decode_box_targets(plain, grid, 1), decode_box_targets(flipped, grid, 1)
    order_a = np.lexsort((-a["centers"][:, 1], a["centers"][:, 0]))
    order_b = np.lexsort((b["centers"][:, 1], b["centers"][:, 0]))
    assert len(order_a) >= 3
    np.testing.assert_allclose(b["centers"][order_b], a["centers"][order_a] * [1.0, -1.0, 1.0], atol=1e-4)
    np.testing.assert_allclose(b["sizes_wlh"][order_b], a["sizes_wlh"][order_a], rtol=1e-5)
    np.testing.assert_allclose(np.sin(b["yaws"][order_b]), -np.sin(a["yaws"][order_a]), atol=1e-5)
    np.testing.assert_allclose(b["velocities"][order_b], a["velocities"][order_a] * [1.0, -1.0], atol=1e-5)
    np.testing.assert_array_equal(b["labels"][order_b], a["labels"][order_a])
    motion_a, motion_b = plain["motion"][plain["box_mask"]], flipped["motion"][flipped["box_mask"]]
    np.testing.assert_allclose(motion_b[order_b], motion_a[order_a] * [1.0, -1.0], atol=1e-5)


def test_rotated_map_equals_the_devkit_map_of_the_rotated_pose(nusc, monkeypatch):
    """The cached map raster, resampled, equals the devkit's own mask for the moved base_link frame."""
    rotation = np.radians(20.0)
    transform = BevTransform.compose(flip_x=False, flip_y=False, rotation_rad=rotation, scale=1.0)
    item = item_with(nusc, monkeypatch, transform)
    token = item["meta"]["sample_token"]
    record = dataset(nusc, train=False).cache.load(token)
    pose = Transform.from_matrix(record.ego_to_global)
    undo = Transform(transform.matrix.T, np.zeros(3))  # moved frame -> original frame (a pure rotation here)
    grid = load_model_config(TINY).grid
    sample = nusc.get("sample", token)
    scene = nusc.get("scene", sample["scene_token"])
    devkit = map_masks_for_pose(get_map(nusc, {}, nusc.get("log", scene["log_token"])["location"]), pose @ undo, grid)
    agree = (item["targets"]["map"].astype(bool) == devkit).mean(axis=(1, 2))
    assert (agree > 0.97).all(), agree
    unrotated = (dataset(nusc, train=False)[4]["targets"]["map"].astype(bool) == devkit).mean(axis=(1, 2))
    assert agree.mean() > unrotated.mean()
