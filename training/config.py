"""Training configuration (`tinybev train --config config/train_*.yaml`): every tunable number of a run.

Network architectures are not repeated here: `student_config` / `teacher_config` name the model YAML files
(relative paths are resolved against the training YAML's folder), so one file defines each architecture.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tinybev_ros.config import load_yaml, path_field, resolve_relative
from training.data import DataConfig
from training.losses import LossWeights
from training.targets import TargetConfig


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then cosine decay to `min_lr_ratio * lr` at the last step."""

    lr: float = 2e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 500
    min_lr_ratio: float = 0.01
    grad_clip_norm: float = 35.0

    def __post_init__(self) -> None:
        # a clip norm of 0 zeroes every gradient: the run would "finish" having learnt nothing
        for name in ("lr", "grad_clip_norm"):
            if not 0 < getattr(self, name) < math.inf:
                raise ValueError(f"optim.{name} must be a positive number, got {getattr(self, name)}")
        # written so that NaN fails too: a NaN weight decay turns every weight NaN at the first step
        if not 0 <= self.min_lr_ratio <= 1 or not 0 <= self.weight_decay < math.inf or self.warmup_steps < 0:
            raise ValueError(f"optim: min_lr_ratio must lie in [0, 1] (got {self.min_lr_ratio}), weight_decay and "
                             f"warmup_steps must be >= 0 (got {self.weight_decay}, {self.warmup_steps})")
        if not all(0 <= beta < 1 for beta in self.betas):
            raise ValueError(f"optim.betas must lie in [0, 1) (Adam's moment decays), got {list(self.betas)}")


@dataclass
class LossRamp:
    """Tasks whose loss weight grows linearly from 0 to its full value over the first `steps` steps, so that the
    shared BEV features first learn geometry and detection (UniAD trains perception before planning in stages;
    a ramp does the same in one run). steps 0 = every task at full weight from the start."""

    steps: int = 0
    tasks: tuple[str, ...] = ("motion_reg", "motion_cls", "occupancy", "plan", "collision")

    def __post_init__(self) -> None:
        known = {f.name for f in dataclasses.fields(LossWeights)}
        unknown = sorted(set(self.tasks) - known)
        if unknown or self.steps < 0:
            raise ValueError(f"loss_ramp: tasks {unknown} are not loss terms ({sorted(known)}) or steps < 0")

    def share(self, task: str | None, step: int) -> float:
        """The fraction of its full weight that `task` has at optimiser step `step` (0-based); 1 if not ramped."""
        if task not in self.tasks or self.steps <= 0 or step >= self.steps:
            return 1.0
        return (step + 1) / self.steps

    def weights(self, loss: LossWeights, step: int) -> LossWeights:
        """`loss` with the ramped tasks scaled for optimiser step `step`."""
        return dataclasses.replace(loss, **{name: getattr(loss, name) * self.share(name, step) for name in self.tasks})


@dataclass
class TrainConfig:
    student_config: str = path_field("model_base.yaml")
    teacher_config: str = path_field("teacher_base.yaml")
    seed: int = 0
    steps: int = 20000  # total optimiser steps (the schedule's length)
    train_split: str = "train"
    val_split: str = "val"
    val_every: int = 1000  # steps between validation passes (and one at the end)
    val_batches: int = 0  # batches per validation pass; 0 = the whole split
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    log_every: int = 10  # steps between TensorBoard scalar writes
    # Compute type of the training step (tinybev_ros/precision.py): auto = float16 + GradScaler on CUDA, bfloat16
    # on CPUs with native bf16, else float32; or fp32 / bf16 / fp16.
    precision: str = "auto"
    channels_last: bool = True  # NHWC convolutions (faster with oneDNN on CPU and tensor cores on GPU)
    deterministic: bool = True  # deterministic kernels (slower on GPU), for reproducible runs
    # BatchNorm statistics re-estimated over this many un-augmented training batches before every validation
    # and checkpoint (training/batchnorm.py), so a checkpoint evaluates as saved; 0 = keep the running EMA.
    bn_recalibration_batches: int = 16
    # A local torchvision ResNet-18 ImageNet state dict (.pth or .safetensors) that initialises the camera
    # backbone of a fresh run; "" = random init. Published camera-BEV recipes all start from pretrained image
    # weights. A resumed run keeps its checkpoint's weights.
    backbone_weights: str = path_field()
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossWeights = field(default_factory=LossWeights)
    loss_ramp: LossRamp = field(default_factory=LossRamp)
    targets: TargetConfig = field(default_factory=TargetConfig)
    source: str = ""  # the YAML this was loaded from (set by load_train_config; resolves model paths)

    def __post_init__(self) -> None:
        from tinybev_ros.precision import PRECISIONS

        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        # intervals divide step counts: 0 would fail only after the sample cache is built and the first step ran
        for name in ("steps", "val_every", "checkpoint_every", "keep_checkpoints", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("val_batches", "bn_recalibration_batches"):  # 0 means "all" and "off"
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    def model_config_path(self, kind: str) -> Path:
        """Path of the student or teacher model YAML, relative paths taken from the training YAML's folder."""
        if kind not in ("student", "teacher"):
            raise ValueError(f"model kind must be 'student' or 'teacher', not {kind!r}")
        return resolve_relative(self.student_config if kind == "student" else self.teacher_config, self.source,
                                f"{kind} model config")

    def backbone_weights_path(self) -> Path | None:
        """The ImageNet weights file, a relative path taken from the training YAML's folder; None = random init."""
        if not self.backbone_weights:
            return None
        return resolve_relative(self.backbone_weights, self.source, "backbone_weights")


def load_train_config(path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """A training YAML (with its `base:` chain) and `key=value` overrides (tinybev_ros/config.py)."""
    config = load_yaml(TrainConfig, path, overrides)
    config.source = str(Path(path).resolve())
    return config
