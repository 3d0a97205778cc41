"""nuScenes keyframes (through nuscenes-devkit and the sample cache) -> model batches with targets for every task.

One item = one keyframe: six camera images (geometry.CAMERA_NAMES order) preprocessed exactly as the runtime
Predictor does (tinybev_ros.model.preprocess), their intrinsics and camera->base_link extrinsics, the LIDAR_TOP
points in base_link for the teacher ((P, 6): x, y, z, intensity, ring, time lag in s; with `lidar_sweeps` 2 also
the sweep ~0.5 s earlier), the navigation command, the ego status (velocity from the ego poses, the planner's
input: tinybev_ros/ego_motion.py) and the targets of `targets.build_targets`.
Everything is read from the training-resolution cache (training/sample_cache.py), which the dataset fills on
first use; a training step does no JPEG decoding and no table walking.

Geometry: base_link is the ego pose at the keyframe's LIDAR_TOP timestamp (the ground truth's frame). A camera
fires up to ~40 ms before or after that instant, so with `ego_motion_compensation` its extrinsic is composed
through the ego poses at the two timestamps (camera -> ego@camera time -> global -> ego@LiDAR time), which is
the exact pose of the camera in the target frame; without it, the static calibrated_sensor extrinsic is used.
Students train without it: the node feeds the static extrinsics of /tf_static, and with it a student learns a
side channel: the per-camera offsets grow with the ego's speed, and a student trained with them read its speed
there (on the same images it planned 22 m ahead with compensated extrinsics, 0.4 m with the static ones).
Teachers, which fuse the LiDAR sweep and never run in the node, train with it.

Augmentation (training only), two kinds:
- image: a random zoom and crop-window shift of each image through the runtime's own ResizeCrop, so it is folded
  into K by the same code that computes K at run time; the BEV targets do not change;
- BEV (training/bev_augmentation.py): a global flip / rotation / scale of base_link applied to the LiDAR, every
  label and the extrinsics; the batch carries it as `bev_transform` (B, 3, 3) for whatever must follow it.
Randomness comes from (seed, epoch, index), never from global RNG state, so the data of any step is
reproducible for exact resume and identical across DataLoader worker counts.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from nuscenes.nuscenes import NuScenes
from torch.utils.data import Dataset

from tinybev_ros.geometry import BevGrid
from tinybev_ros.model.config import ModelConfig
from tinybev_ros.model.preprocess import ResizeCrop, normalize
from training.bev_augmentation import BevAugmentationConfig, BevTransform
from training.depth_targets import depth_bin_targets
from training.sample_cache import MAP_REACH, SampleCache
from training.splits import split_sample_tokens
from training.targets import TargetConfig, build_targets

log = logging.getLogger(__name__)

AUTO_WORKERS = -1


@dataclass
class DataConfig:
    """Data loading and augmentation settings."""

    batch_size: int = 4
    # DataLoader worker processes; -1 = what helps on this machine (`resolve_workers`). Measured on 2 cores:
    # 1.02 s/step with 0 workers, 1.36 s with 2 (the workers compete with the training threads).
    num_workers: int = AUTO_WORKERS
    augment: bool = True  # training split only: the image zoom/shift below and the BEV transform of `bev`
    zoom_range: tuple[float, float] = (0.94, 1.11)  # random factor on the runtime resize scale
    shift_fraction: float = 0.03  # random crop-window shift, as a fraction of the model's image size
    bev: BevAugmentationConfig = field(default_factory=BevAugmentationConfig)
    max_lidar_points: int = 0  # points kept per sweep (random subset when more; teacher input); 0 = all
    ego_motion_compensation: bool = True
    max_samples: int = 0  # use only the first N keyframes of each split (0 = all): smoke runs, overfitting checks
    # Where the sample cache lives: "" = <dataroot>/tinybev_cache (set it when the dataroot is read-only).
    # Relative paths are taken from the current directory.
    cache_dir: str = ""

    def __post_init__(self) -> None:
        if self.bev.enabled and self.bev.reach() > MAP_REACH:
            raise ValueError(f"data.bev: rotation {self.bev.rotation_deg} deg at scale {self.bev.scale_range[0]} "
                             f"reaches {self.bev.reach():.2f} x the grid, beyond the cached map ({MAP_REACH} x)")
        if self.batch_size < 1 or self.max_samples < 0:
            raise ValueError(f"data.batch_size must be >= 1 and data.max_samples >= 0, got {self.batch_size} and "
                             f"{self.max_samples}")
        if self.num_workers < AUTO_WORKERS:
            raise ValueError(f"data.num_workers must be >= 0 or -1 (auto), got {self.num_workers}")


def resolve_workers(num_workers: int) -> int:
    """-1 -> 0 worker processes on machines with 2 CPUs or fewer, else one per CPU beyond the first (at most 4)."""
    if num_workers != AUTO_WORKERS:
        return num_workers
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if cpus <= 2 else min(4, cpus - 1)


def cache_root(data_config: DataConfig, dataroot: str | Path) -> Path:
    return Path(data_config.cache_dir) if data_config.cache_dir else Path(dataroot) / "tinybev_cache"


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


class NuScenesBevDataset(Dataset):
    """Keyframes of one split of a nuScenes-format dataroot, as model inputs + targets (numpy, per sample).

    `camera_config` (the image size; a student ModelConfig or the teacher's camera branch config) and
    `grid` / `det_stride` (the rasters the model's outputs live on) come from the model being trained. The
    split's samples are cached on construction (`cache`, or the folder `data_config.cache_dir` names).
    """

    def __init__(self, nusc: NuScenes, split: str, grid: BevGrid, det_stride: int, camera_config: ModelConfig,
                 data_config: DataConfig, target_config: TargetConfig, train: bool, with_lidar: bool,
                 seed: int = 0, depth_targets: bool = False, cache: SampleCache | None = None,
                 lidar_sweeps: int = 1, partial_ok: bool = False) -> None:
        """`partial_ok`: leave out the samples whose files are not on disk (a partial download; training and
        teacher caching), with a warning; else (evaluation, which the devkit scores over the whole split) a
        missing file is an error naming it."""
        if lidar_sweeps not in (1, 2):
            raise ValueError(f"lidar_sweeps must be 1 (the keyframe) or 2 (+ the sweep 0.5 s earlier), "
                             f"not {lidar_sweeps}")
        if cache is None:
            cache = SampleCache(cache_root(data_config, nusc.dataroot), nusc, camera_config.image_width, grid)
        elif (cache.image_width, cache.grid) != (camera_config.image_width, grid):
            raise ValueError(f"sample cache {cache.folder} is for width {cache.image_width} and {cache.grid}, not "
                             f"{camera_config.image_width} and {grid}")
        self.cache = cache
        self.tokens = split_sample_tokens(nusc, split)
        if partial_ok:
            self.tokens = cache.on_disk(self.tokens, split)
        if data_config.max_samples > 0:
            self.tokens = self.tokens[: data_config.max_samples]
        self.grid = grid
        self.det_stride = det_stride
        self.camera_config = camera_config
        self.config = data_config
        self.target_config = target_config
        self.augment = train and data_config.augment
        self.with_lidar = with_lidar
        self.lidar_sweeps = lidar_sweeps
        self.depth_targets = depth_targets  # LiDAR depth per camera feature cell, in targets["depth"]
        self.seed = seed
        self.epoch = 0
        self.cache.ensure(self.tokens, desc=f"caching {split} samples")

    def __len__(self) -> int:
        return len(self.tokens)

    def set_epoch(self, epoch: int) -> None:
        """Augmentation of epoch e differs from epoch e-1 but is reproducible (call before iterating)."""
        self.epoch = epoch

    def camera_images(self, images: np.ndarray, intrinsics: np.ndarray,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Cached (6, Hc, Wc, 3) images and their K -> normalised model inputs (6, 3, H, W) and their K."""
        tensors, ks = [], []
        for image, k in zip(images, intrinsics, strict=True):
            transform = image_transform(image.shape[:2], self.camera_config, rng if self.augment else None,
                                        self.config)
            tensors.append(normalize(transform.image(image)))
            ks.append(transform.intrinsics(k))
        return np.stack(tensors), np.asarray(ks, dtype=np.float32)

    def __getitem__(self, index: int) -> dict[str, Any]:
        token = self.tokens[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        record = self.cache.load(token)
        images, intrinsics = self.camera_images(record.images, record.intrinsics, rng)
        cam_to_ego = record.cam_to_ego_compensated if self.config.ego_motion_compensation else record.cam_to_ego
        bev = BevTransform.sample(rng, self.config.bev) if self.augment else BevTransform.identity()
        gt = record.ground_truth(self.cache.map_grid, self.grid, bev)
        item: dict[str, Any] = {
            "images": images,
            "intrinsics": intrinsics,
            "cam_to_ego": bev.extrinsics(cam_to_ego).astype(np.float32),
            "bev_transform": bev.matrix.astype(np.float32),
            "command": gt.command,
            "ego_status": np.concatenate([bev.vectors_xy(record.ego_status[:2]), record.ego_status[2:]]
                                         ).astype(np.float32),
            "targets": build_targets(gt, self.grid, self.det_stride, self.target_config),
            "meta": {"sample_token": token, "scene_token": record.scene_token, "timestamp_us": record.timestamp_us},
        }
        if self.depth_targets:  # image-space targets: the BEV transform moves LiDAR and cameras alike
            item["targets"]["depth"] = depth_bin_targets(record.lidar, intrinsics, cam_to_ego, self.camera_config)
        if self.with_lidar:
            sweeps = [(record.lidar, 0.0)]
            if self.lidar_sweeps == 2:
                sweeps.append((record.lidar_previous, record.previous_lag_s))
            lidar = np.concatenate([np.column_stack([points, np.full(len(points), lag, np.float32)])
                                    for points, lag in sweeps]).astype(np.float32)
            if 0 < self.config.max_lidar_points < len(lidar):
                lidar = lidar[np.sort(rng.choice(len(lidar), self.config.max_lidar_points, replace=False))]
            item["lidar"] = bev.points(lidar).astype(np.float32)
        return item


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack items into the contract's batch; LiDAR is zero-padded to the largest sweep with `lidar_mask`."""
    batch: dict[str, Any] = {
        "images": torch.from_numpy(np.stack([it["images"] for it in items])),
        "intrinsics": torch.from_numpy(np.stack([it["intrinsics"] for it in items])),
        "cam_to_ego": torch.from_numpy(np.stack([it["cam_to_ego"] for it in items])),
        "bev_transform": torch.from_numpy(np.stack([it["bev_transform"] for it in items])),
        "command": torch.tensor([it["command"] for it in items], dtype=torch.int64),
        "ego_status": torch.from_numpy(np.stack([it["ego_status"] for it in items])),
        "targets": {key: torch.from_numpy(np.stack([it["targets"][key] for it in items]))
                    for key in items[0]["targets"]},
        "meta": [it["meta"] for it in items],
    }
    if "lidar" in items[0]:
        most = max(1, max(len(it["lidar"]) for it in items))
        lidar = np.zeros((len(items), most, items[0]["lidar"].shape[1]), dtype=np.float32)
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
