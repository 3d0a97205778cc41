"""The one place where training meets the networks: build, run, preprocess for, save and load student/teacher.

Keeping these calls here lets the loop, the dataset and the tests stay the same for both model kinds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tinybev_ros.geometry import BevGrid
from tinybev_ros.model.box_code import AXIS_DIRECTION, require_trainable
from tinybev_ros.model.config import ModelConfig


@dataclass
class ModelSpec:
    """A network plus what the training loop needs to know about it."""

    kind: str  # "student" | "teacher"
    model: nn.Module
    config: Any  # the model's config dataclass (saved inside every checkpoint)
    grid: BevGrid  # BEV raster of the map/occupancy outputs (targets are drawn on it)
    det_stride: int
    camera_config: ModelConfig  # image size and preprocessing of the camera input
    forward: Callable[[nn.Module, dict[str, Any]], dict[str, Any]]
    lidar_sweeps: int = 1  # LiDAR sweeps per item the model reads (teachers; data.NuScenesBevDataset)

    def save(self, path: Path) -> None:
        from tinybev_ros.checkpoint import save_checkpoint

        save_checkpoint(path, self.model, self.config, kind=self.kind)

    def load_weights(self, model: nn.Module, path: Path, device: torch.device) -> None:
        """Load a checkpoint's tensors into `model` (strict: every key and shape must match)."""
        from tinybev_ros.checkpoint import load_state, read_checkpoint

        tensors, metadata = read_checkpoint(path, device)
        if metadata["kind"] != self.kind:
            raise ValueError(f"checkpoint {path} holds a {metadata['kind']}, not a {self.kind}")
        model_config = metadata["config"] if self.kind == "student" else metadata["config"].get("camera", {})
        require_trainable(model_config.get("heading_code", AXIS_DIRECTION), f"checkpoint {path}")
        load_state(model, tensors, path)


def _student_forward(model: nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
    return model(batch["images"], batch["intrinsics"], batch["cam_to_ego"], batch["command"],
                 ego_status=batch["ego_status"])


def _teacher_forward(model: nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
    return model(batch)


def build_model_spec(kind: str, config_path: str | Path) -> ModelSpec:
    """Build the student or teacher network from its model YAML."""
    if kind == "student":
        from tinybev_ros.model import build_student, load_model_config

        config = load_model_config(config_path)
        require_trainable(config.heading_code, f"model config {config_path}")
        return ModelSpec(kind, build_student(config), config, config.grid, config.det_stride, config,
                         _student_forward)
    if kind == "teacher":
        from training.teachers import build_teacher, load_teacher_config

        config = load_teacher_config(config_path)
        camera = config.camera
        require_trainable(camera.heading_code, f"model config {config_path}")
        return ModelSpec(kind, build_teacher(config), config, camera.grid, camera.det_stride, camera,
                         _teacher_forward, config.lidar.sweeps)
    raise ValueError(f"model kind must be 'student' or 'teacher', not {kind!r}")
