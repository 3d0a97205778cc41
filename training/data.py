"""nuScenes keyframes (through nuscenes-devkit) -> model batches with targets for every task.

One item = one keyframe: six camera images (geometry.CAMERA_NAMES order) preprocessed exactly as the runtime
Predictor does (tinybev_ros.model.preprocess), their intrinsics and camera->base_link extrinsics, the LIDAR_TOP
sweep in base_link (for the teacher), the navigation command and the targets of `targets.build_targets`.

Geometry: base_link is the ego pose at the keyframe's LIDAR_TOP timestamp (the ground truth's frame). A camera
fires up to ~40 ms before or after that instant, so with `ego_motion_compensation` its extrinsic is composed
through the ego poses at the two timestamps (camera -> ego@camera time -> global -> ego@LiDAR time), which is
the exact pose of the camera in the target frame; without it, the static calibrated_sensor extrinsic is used.
Students train without it: the node feeds the static extrinsics of /tf_static, and with it a student learns a
side channel: the per-camera offsets grow with the ego's speed, and a student trained with them read its speed
there (on the same images it planned 22 m ahead with compensated extrinsics, 0.4 m with the static ones).
Teachers, which fuse the LiDAR sweep and never run in the node, train with it.

Augmentation (training only) is a random zoom and crop-window shift of each image, applied through the
runtime's own ResizeCrop, so it is folded into K by the same code that computes K at run time: image content and
camera geometry stay consistent and the BEV targets do not change. Randomness comes from (seed, epoch, index),
never from global RNG state, so the data of any step is reproducible for exact resume and identical across
DataLoader worker counts.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from nuscenes.nuscenes import NuScenes
from nuscenes.utils.splits import create_splits_scenes
from torch.utils.data import Dataset

from tinybev_ros.geometry import CAMERA_NAMES, LIDAR_NAME, BevGrid, Transform
from tinybev_ros.model.config import ModelConfig
from tinybev_ros.model.preprocess import ResizeCrop, normalize, preprocess_image
from training.depth_targets import depth_bin_targets
from training.ground_truth import ego_pose_of_sample, load_ground_truth
from training.targets import TargetConfig, build_targets

log = logging.getLogger(__name__)


@dataclass
class DataConfig:
    """Data loading and augmentation settings."""

    batch_size: int = 4
    num_workers: int = 4
    augment: bool = True
    zoom_range: tuple[float, float] = (0.94, 1.11)  # random factor on the runtime resize scale
    shift_fraction: float = 0.03  # random crop-window shift, as a fraction of the model's image size
    max_lidar_points: int = 40000  # points kept per sweep (random subset when more; teacher, depth targets)
    ego_motion_compensation: bool = True
    max_samples: int = 0  # use only the first N keyframes of each split (0 = all): smoke runs, overfitting checks
    # Keep prepared items in memory when they cannot change (no augmentation): small overfitting or validation
    # sets. Each DataLoader worker holds its own copy, so use it with few samples and num_workers 0.
    cache_in_memory: bool = False


def split_scene_names(dataroot: str | Path, version: str, split: str) -> list[str]:
    """Scene names of `split`: from the dataroot's `splits.json` when present, else the devkit's official lists.

    splits.json (in `<dataroot>/<version>/` or `<dataroot>/`) maps split name -> scene names, like the devkit's
    `create_splits_scenes()`. For a mini version, "train"/"val" mean "mini_train"/"mini_val" as in the devkit.
    """
    candidates = [Path(dataroot) / version / "splits.json", Path(dataroot) / "splits.json"]
    found = next((path for path in candidates if path.is_file()), None)
    table = json.loads(found.read_text()) if found is not None else create_splits_scenes()
    source = str(found) if found is not None else "the devkit's create_splits_scenes()"
    mini = f"mini_{split}"
    name = mini if version.endswith("mini") and mini in table else split
    if name not in table:
        raise ValueError(f"{source} has no split {split!r} for {version}; it has {sorted(table)}")
    return list(table[name])


def split_sample_tokens(nusc: NuScenes, split: str) -> list[str]:
    """Keyframe tokens of the split's scenes present in `nusc`, in scene order then time order."""
    wanted = set(split_scene_names(nusc.dataroot, nusc.version, split))
    tokens: list[str] = []
    for scene in sorted(nusc.scene, key=lambda s: s["name"]):
        if scene["name"] not in wanted:
            continue
        token = scene["first_sample_token"]
        while token:
            tokens.append(token)
            token = nusc.get("sample", token)["next"]
    if not tokens:
        raise ValueError(f"split {split!r} has no scenes in {nusc.dataroot} ({nusc.version})")
    return tokens


def image_transform(src_hw: tuple[int, int], config: ModelConfig, rng: np.random.Generator | None,
                    data_config: DataConfig) -> ResizeCrop:
    """The runtime resize/crop, with a random zoom and window shift on top when `rng` is given (training)."""
    out_hw = (config.image_height, config.image_width)
    if rng is None:
        return ResizeCrop.fit_width(src_hw, out_hw)
    scale = float(rng.uniform(*data_config.zoom_range))
    limit = data_config.shift_fraction
    shift = rng.uniform(-limit, limit, size=2) * np.asarray(out_hw)
    return ResizeCrop.fit_width(src_hw, out_hw, scale, (int(round(shift[0])), int(round(shift[1]))))


def read_image_rgb(path: str | Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_lidar_ego(nusc: NuScenes, sample: dict, max_points: int, rng: np.random.Generator) -> np.ndarray:
    """The keyframe LIDAR_TOP sweep as (P, 5) float32 x, y, z, intensity, ring in base_link (LiDAR time)."""
    record = nusc.get("sample_data", sample["data"][LIDAR_NAME])
    path = Path(nusc.dataroot) / record["filename"]
    raw = np.fromfile(path, dtype=np.float32)
    if raw.size % 5:
        raise ValueError(f"{path}: {raw.size} floats is not a whole number of 5-float LiDAR points")
    points = raw.reshape(-1, 5).copy()
    calib = nusc.get("calibrated_sensor", record["calibrated_sensor_token"])
    lidar_to_ego = Transform.from_nuscenes(calib["translation"], calib["rotation"])
    points[:, :3] = lidar_to_ego.apply(points[:, :3]).astype(np.float32)
    if len(points) > max_points:
        points = points[np.sort(rng.choice(len(points), max_points, replace=False))]
    return points


class NuScenesBevDataset(Dataset):
    """Keyframes of one split of a nuScenes-format dataroot, as model inputs + targets (numpy, per sample).

    `camera_config` (the image size; a student ModelConfig or the teacher's camera branch config) and
    `grid` / `det_stride` (the rasters the model's outputs live on) come from the model being trained.
    """

    def __init__(self, nusc: NuScenes, split: str, grid: BevGrid, det_stride: int, camera_config: ModelConfig,
                 data_config: DataConfig, target_config: TargetConfig, train: bool, with_lidar: bool,
                 seed: int = 0, depth_targets: bool = False) -> None:
        self.nusc = nusc
        self.tokens = split_sample_tokens(nusc, split)
        if data_config.max_samples > 0:
            self.tokens = self.tokens[: data_config.max_samples]
        self.grid = grid
        self.det_stride = det_stride
        self.camera_config = camera_config
        self.config = data_config
        self.target_config = target_config
        self.augment = train and data_config.augment
        self.with_lidar = with_lidar
        self.depth_targets = depth_targets  # LiDAR depth per camera feature cell, in targets["depth"]
        self.seed = seed
        self.epoch = 0
        self.map_cache: dict = {}
        self.item_cache: dict[int, dict[str, Any]] | None = {} if data_config.cache_in_memory and not self.augment \
            else None

    def __len__(self) -> int:
        return len(self.tokens)

    def set_epoch(self, epoch: int) -> None:
        """Augmentation of epoch e differs from epoch e-1 but is reproducible (call before iterating)."""
        self.epoch = epoch

    def camera_inputs(self, sample: dict, ego_to_global: Transform,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        images, intrinsics, extrinsics = [], [], []
        global_to_ego = ego_to_global.inverse()
        for name in CAMERA_NAMES:
            if name not in sample["data"]:
                raise ValueError(f"sample {sample['token']} has no {name} image")
            record = self.nusc.get("sample_data", sample["data"][name])
            calib = self.nusc.get("calibrated_sensor", record["calibrated_sensor_token"])
            cam_to_ego = Transform.from_nuscenes(calib["translation"], calib["rotation"])
            if self.config.ego_motion_compensation:
                pose = self.nusc.get("ego_pose", record["ego_pose_token"])
                cam_to_ego = global_to_ego @ Transform.from_nuscenes(pose["translation"], pose["rotation"]) @ cam_to_ego
            intrinsic = np.asarray(calib["camera_intrinsic"], dtype=float)
            if intrinsic.shape != (3, 3):
                raise ValueError(f"calibrated_sensor {calib['token']}: camera_intrinsic is not 3x3")
            image = read_image_rgb(Path(self.nusc.dataroot) / record["filename"])
            if self.augment:
                transform = image_transform(image.shape[:2], self.camera_config, rng, self.config)
                tensor, intrinsic = normalize(transform.image(image)), transform.intrinsics(intrinsic)
            else:
                tensor, intrinsic = preprocess_image(image, intrinsic, self.camera_config)
            images.append(tensor)
            intrinsics.append(intrinsic)
            extrinsics.append(cam_to_ego.matrix)
        return (np.stack(images), np.asarray(intrinsics, dtype=np.float32),
                np.asarray(extrinsics, dtype=np.float32))

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.item_cache is not None and index in self.item_cache:
            return self.item_cache[index]
        item = self.prepare(index)
        if self.item_cache is not None:
            self.item_cache[index] = item
        return item

    def prepare(self, index: int) -> dict[str, Any]:
        token = self.tokens[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        sample = self.nusc.get("sample", token)
        ego_to_global, _ = ego_pose_of_sample(self.nusc, sample)
        gt = load_ground_truth(self.nusc, self.map_cache, token, self.grid)
        images, intrinsics, cam_to_ego = self.camera_inputs(sample, ego_to_global, rng)
        item: dict[str, Any] = {
            "images": images,
            "intrinsics": intrinsics,
            "cam_to_ego": cam_to_ego,
            "command": gt.command,
            "targets": build_targets(gt, self.grid, self.det_stride, self.target_config),
            "meta": {"sample_token": token, "scene_token": gt.scene_token, "timestamp_us": gt.timestamp_us},
        }
        if self.with_lidar or self.depth_targets:
            lidar = read_lidar_ego(self.nusc, sample, self.config.max_lidar_points, rng)
            if self.with_lidar:
                item["lidar"] = lidar
            if self.depth_targets:
                item["targets"]["depth"] = depth_bin_targets(lidar, intrinsics, cam_to_ego, self.camera_config)
        return item


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack items into the contract's batch; LiDAR is zero-padded to the largest sweep with `lidar_mask`."""
    batch: dict[str, Any] = {
        "images": torch.from_numpy(np.stack([it["images"] for it in items])),
        "intrinsics": torch.from_numpy(np.stack([it["intrinsics"] for it in items])),
        "cam_to_ego": torch.from_numpy(np.stack([it["cam_to_ego"] for it in items])),
        "command": torch.tensor([it["command"] for it in items], dtype=torch.int64),
        "targets": {key: torch.from_numpy(np.stack([it["targets"][key] for it in items]))
                    for key in items[0]["targets"]},
        "meta": [it["meta"] for it in items],
    }
    if "lidar" in items[0]:
        most = max(1, max(len(it["lidar"]) for it in items))
        lidar = np.zeros((len(items), most, 5), dtype=np.float32)
        mask = np.zeros((len(items), most), dtype=bool)
        for i, it in enumerate(items):
            lidar[i, : len(it["lidar"])] = it["lidar"]
            mask[i, : len(it["lidar"])] = True
        batch["lidar"] = torch.from_numpy(lidar)
        batch["lidar_mask"] = torch.from_numpy(mask)
    return batch


def move_batch(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The batch with every tensor (including targets) on `device`."""
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            out[key] = value.to(device, non_blocking=True)
        elif isinstance(value, dict):
            out[key] = {k: v.to(device, non_blocking=True) for k, v in value.items()}
        else:
            out[key] = value
    return out
