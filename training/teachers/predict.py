"""Teacher predictions over a split, decoded like the student's, for `tinybev eval` and the ablation.

The teacher needs LiDAR, so it cannot run in the `Predictor`; it reads un-augmented items of the sample cache
(the same inputs its training validation saw) and decodes with the model's own `decode` at the evaluation
protocol's score floor.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from nuscenes.nuscenes import NuScenes
from torch.utils.data import DataLoader
from tqdm import tqdm

from tinybev_ros.model.config import ModelConfig
from tinybev_ros.model.decode import decode
from tinybev_ros.predictions import Predictions
from training.data import DataConfig, NuScenesBevDataset, collate, move_batch
from training.targets import TargetConfig
from training.teachers.fusion_teacher import FusionTeacher, FusionTeacherConfig


def teacher_dataset(nusc: NuScenes, split: str, config: FusionTeacherConfig,
                    cache_dir: str | Path = "", partial_ok: bool = False) -> NuScenesBevDataset:
    """Un-augmented items with LiDAR and ego-motion-compensated extrinsics (how teachers train)."""
    data = DataConfig(augment=False, ego_motion_compensation=True, cache_dir=str(cache_dir))
    camera = config.camera
    return NuScenesBevDataset(nusc, split, grid=camera.grid, det_stride=camera.det_stride, camera_config=camera,
                              data_config=data, target_config=TargetConfig(), train=False, with_lidar=True,
                              lidar_sweeps=config.lidar.sweeps, partial_ok=partial_ok)


def teacher_prediction_stream(net: FusionTeacher, decode_config: ModelConfig, dataset: NuScenesBevDataset,
                              device: str | torch.device, batch_size: int = 2,
                              progress: bool = True) -> Iterator[tuple[str, Predictions]]:
    """(sample token, Predictions) of the teacher for every item of `dataset`, in its order (planning with the GT
    command): a stream, so a whole split's rasters never sit in memory at once (~11 GB on nuScenes val)."""
    net.eval()
    device = torch.device(device)
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate)
    for batch in tqdm(loader, desc="teacher inference", disable=not progress):
        batch = move_batch(batch, device)
        metas = batch["meta"]
        with torch.no_grad():
            decoded = decode(net(batch), decode_config, [int(m["timestamp_us"]) * 1000 for m in metas],
                             batch["command"].tolist())
        yield from ((m["sample_token"], p) for m, p in zip(metas, decoded, strict=True))


def predict_split_teacher(net: FusionTeacher, decode_config: ModelConfig, dataset: NuScenesBevDataset,
                          device: str | torch.device, batch_size: int = 2,
                          progress: bool = True) -> dict[str, Predictions]:
    """sample token -> Predictions of the teacher for every item of `dataset` (small splits: the ablation's)."""
    return dict(teacher_prediction_stream(net, decode_config, dataset, device, batch_size, progress))
