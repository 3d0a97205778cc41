"""The teacher interface: all the distillation code ever sees of a teacher.

`Teacher.__call__(batch) -> TeacherOutput`. `batch` is the model-batch contract (images, intrinsics, cam_to_ego,
lidar, lidar_mask, command, meta with sample_token, ...). Two implementations: `LiveTeacher` (our LiDAR+camera
`FusionTeacher` run under no_grad) and `CachedTeacher` (per-sample tensors on disk, written by any model,
e.g. UniAD run in its own environment).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

# The head outputs a teacher may provide (student names and shapes, see tinybev_ros/model/heads.py).
OUTPUT_KEYS: tuple[str, ...] = ("heatmap", "box", "motion", "motion_logits", "map", "occupancy", "plan")


@dataclass
class TeacherOutput:
    """features: BEV maps (B, C_i, H_i, W_i), finest encoder level first and the pre-head map last (the
    student's `bev_features` layout; channels may differ, adapters bridge them). outputs: any subset of
    OUTPUT_KEYS with the student's shapes (logits where the student has logits)."""

    features: list[torch.Tensor]
    outputs: dict[str, torch.Tensor]
    # (B, 1, H, W) on the finest feature raster: the share of each cell the teacher saw (a BEV-augmented batch
    # moves cells in from beyond its grid: zeros there are no knowledge and are not imitated). None: all of it.
    coverage: torch.Tensor | None = None


@runtime_checkable
class Teacher(Protocol):
    needs_lidar: bool  # whether batches must carry the LiDAR sweep

    def __call__(self, batch: dict[str, Any]) -> TeacherOutput: ...
