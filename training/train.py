"""`tinybev train`: supervised multi-task training of the student or the teacher (plain PyTorch).

AdamW with linear warm-up and cosine decay (no weight decay on biases and norm parameters), mixed precision
(tinybev_ros/precision.py: float16 + GradScaler on CUDA, bfloat16 on CPUs that have it), channels_last, gradient
clipping, tqdm progress, TensorBoard scalars, periodic validation, BatchNorm statistics re-estimated before every
validation and checkpoint (training/batchnorm.py), atomic checkpoints and exact resume. Launched by
`torchrun` (WORLD_SIZE > 1) it runs DistributedDataParallel with a DistributedSampler per rank.

Exact resume: the model weights, optimiser moments, AMP scaler, step and every RNG state are restored, the LR is
a pure function of the step, the sample order is a pure function of (seed, epoch) and the augmentation of
(seed, epoch, index), and a resumed epoch starts at the batch where the run stopped; so after resuming,
the next step computes the same loss as the uninterrupted run would have (bit-identical on CPU; on GPU within
the determinism of the kernels). With several ranks, only rank 0's RNG state is stored.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import random
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Subset
from tqdm import tqdm

from tinybev_ros.device import resolve_device
from tinybev_ros.errors import CheckpointError, ConfigError
from tinybev_ros.geometry import BevGrid
from tinybev_ros.model.backbone import load_imagenet_weights
from tinybev_ros.nuscenes_dataset import open_nuscenes
from tinybev_ros.paths import check_output_folder
from tinybev_ros.precision import autocast_dtype
from training.batchnorm import recalibrate_batchnorm
from training.checkpointing import (
    MODEL_FILE,
    NoIntactCheckpoint,
    check_fresh_start,
    resume_point,
    rng_state,
    set_rng_state,
    write_checkpoint_dir,
)
from training.config import TrainConfig, load_train_config
from training.data import NuScenesBevDataset, cache_root, collate, move_batch, resolve_workers
from training.losses import LossWeights, supervised_losses
from training.model_adapter import ModelSpec, build_model_spec
from training.run_lock import run_lock
from training.sample_cache import SampleCache
from training.splits import split_sample_tokens

log = logging.getLogger(__name__)


# float16 steps skipped in a row (GradScaler's overflow) before the run is taken as diverged: a healthy run skips
# a few while its loss scale settles from 65536; 30 halvings later the gradient itself is broken
MAX_SKIPPED_STEPS = 30
VALIDATION_LOG = "validation.jsonl"  # one JSON line per validation with task metrics (Trainer.validation_metrics)


def read_validation_log(run_dir: str | Path) -> list[dict[str, float]]:
    """The task metrics of a run's validations in step order, the last line of each step (a resume may repeat)."""
    path = Path(run_dir) / VALIDATION_LOG
    if not path.is_file():
        return []
    by_step: dict[int, dict[str, float]] = {}
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill mid-write
            continue
        by_step[int(record["step"])] = record
    return [by_step[step] for step in sorted(by_step)]


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate of optimiser step `step` (0-based): linear warm-up, then cosine to min_lr_ratio * lr."""
    optim = config.optim
    if step < optim.warmup_steps:
        return optim.lr * (step + 1) / optim.warmup_steps
    span = max(config.steps - optim.warmup_steps, 1)
    progress = min((step - optim.warmup_steps) / span, 1.0)
    floor = optim.lr * optim.min_lr_ratio
    return floor + (optim.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        # Filling every new tensor with NaN is a debugging aid of deterministic mode, not needed for
        # reproducibility, and costs ~20 % of a CPU step.
        torch.utils.deterministic.fill_uninitialized_memory = False
        torch.backends.cudnn.benchmark = False


class TrainingDiverged(RuntimeError):
    """A non-finite loss or gradient: training stops before the update, so no checkpoint holds NaN weights."""


def parameter_groups(parameters: Iterable[nn.Parameter], weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on convolution / linear weights only; biases and norm scales (1-d) are free
    (decaying a BatchNorm scale or a bias towards 0 only fights the normalisation)."""
    params = [p for p in parameters if p.requires_grad]
    return [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]


class ResumableSampler(DistributedSampler):
    """DistributedSampler whose current epoch can start after the first `skip` batches (for exact resume)."""

    def __init__(self, dataset, num_replicas: int, rank: int, seed: int, batch_size: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.batch_size = batch_size
        self.skip_batches = 0

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.skip_batches * self.batch_size:])

    def __len__(self) -> int:
        return max(super().__len__() - self.skip_batches * self.batch_size, 0)


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def torchrun_ranks() -> Distributed:
    """This process's place among torchrun's (one process without torchrun)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    return Distributed(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(requested: str | None, ddp: Distributed) -> torch.device:
    """The run's device: under torchrun each rank takes its own GPU, so an explicit `cuda:N` (every rank on one
    GPU, which NCCL refuses) is refused there."""
    if ddp.world_size > 1 and requested and ":" in str(requested):
        raise ConfigError(f"--device {requested} under torchrun: each rank takes cuda:LOCAL_RANK; pass --device cuda "
                          "(or leave it out), and choose the GPUs with CUDA_VISIBLE_DEVICES")
    device = resolve_device(requested, ddp.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # pinned memory, NCCL and caching allocations go to this GPU, not GPU 0
    return device


def init_distributed(ddp: Distributed, device: torch.device) -> None:
    """Join the torchrun process group: NCCL for a run on GPUs, gloo for one on CPUs (chosen by the device, not by
    whether a GPU exists: `--device cpu` on a GPU machine must not get NCCL)."""
    if ddp.world_size > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


class Trainer:
    """One training run: model, data, optimiser and bookkeeping; `fit` trains until `stop_at` or the end."""

    def __init__(self, config: TrainConfig, kind: str, dataroot: str | Path, version: str, out_dir: str | Path,
                 device: str | None = None, nusc=None) -> None:

        self.config = config
        self.kind = kind
        self.out_dir = Path(out_dir)
        self.ddp = torchrun_ranks()
        self.device = pick_device(device, self.ddp)
        self.compute_dtype = autocast_dtype(config.precision, self.device)  # refused here, before any data work
        init_distributed(self.ddp, self.device)
        seed_everything(config.seed, config.deterministic)
        self.spec: ModelSpec = build_model_spec(kind, config.model_config_path(kind))
        weights = config.backbone_weights_path()
        if weights is not None:
            if getattr(self.spec.model, "camera", None) is None:
                raise ConfigError(f"backbone_weights {weights}: this {kind} has no camera branch to initialise")
            load_imagenet_weights(self.spec.model.camera.backbone, weights)
        self.model: nn.Module = self.spec.model.to(self.device)
        if config.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.grid: BevGrid = self.spec.grid
        if nusc is None:
            nusc = open_nuscenes(dataroot, version)
        with_lidar = kind == "teacher"
        cache = SampleCache(cache_root(config.data, nusc.dataroot), nusc, self.spec.camera_config.image_width,
                            self.grid)
        self.data_identity = {"dataset": cache.key.dataset, "version": nusc.version}  # compared on resume
        common = {"grid": self.grid, "det_stride": self.spec.det_stride, "camera_config": self.spec.camera_config,
                  "data_config": config.data, "target_config": config.targets, "with_lidar": with_lidar,
                  "seed": config.seed, "depth_targets": config.loss.depth > 0,
                  "lidar_sweeps": self.spec.lidar_sweeps, "partial_ok": True, "cache": cache}
        for split in (config.train_split, config.val_split):  # both exist and have files, before any caching work
            cache.on_disk(split_sample_tokens(nusc, split), split)
        self.train_set = NuScenesBevDataset(nusc, config.train_split, train=True, **common)
        self.val_set = NuScenesBevDataset(nusc, config.val_split, train=False, **common)
        # Fixed un-augmented training samples, spread over the split, for the BatchNorm statistics.
        plain = NuScenesBevDataset(nusc, config.train_split, train=False, **common)
        count = min(len(plain), config.bn_recalibration_batches * config.data.batch_size)
        self.bn_set = Subset(plain, np.linspace(0, len(plain) - 1, count).round().astype(int).tolist())
        self.bn_step = -1  # the step whose weights the BatchNorm statistics were last estimated for
        batch = config.data.batch_size
        if len(self.train_set) < batch * self.ddp.world_size:
            raise ConfigError(f"split {config.train_split!r} has {len(self.train_set)} samples, fewer than one "
                              f"batch of {batch} per rank x {self.ddp.world_size} ranks")
        self.sampler = ResumableSampler(self.train_set, self.ddp.world_size, self.ddp.rank, config.seed, batch)
        self.wrapped: nn.Module = self.model
        if self.ddp.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.wrapped = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.optimizer = torch.optim.AdamW(parameter_groups(self.model.parameters(), config.optim.weight_decay),
                                           lr=lr_at(0, config), betas=tuple(config.optim.betas))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.compute_dtype == torch.float16)
        self.skipped_steps = 0  # float16 steps skipped in a row for a gradient that was not finite
        log.info("training %s on %s in %s%s", kind, self.device, self.compute_dtype or torch.float32,
                 ", channels_last" if config.channels_last else "")
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.writer = None
        # Optional task metrics at every validation (e.g. training/validation_metrics.py's NDS on a held-out
        # world): called with the model on the main rank, logged as val/<name> and appended to validation.jsonl.
        self.validation_metrics: Callable[[nn.Module], dict[str, float]] | None = None

    # ------------------------------------------------------------------ data
    def loader(self, dataset, sampler=None, shuffle_seed: int = 0) -> DataLoader:
        return DataLoader(dataset, batch_size=self.config.data.batch_size, sampler=sampler, shuffle=False,
                          num_workers=resolve_workers(self.config.data.num_workers), collate_fn=collate,
                          drop_last=sampler is not None,
                          pin_memory=self.device.type == "cuda",
                          generator=torch.Generator().manual_seed(self.config.seed + shuffle_seed))

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_set) // (self.config.data.batch_size * self.ddp.world_size)

    # ------------------------------------------------------------ one step
    def autocast(self) -> AbstractContextManager:
        """The mixed-precision context of every forward pass (a no-op in float32)."""
        return torch.autocast(device_type=self.device.type, dtype=self.compute_dtype or torch.float32,
                              enabled=self.compute_dtype is not None)

    def losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        with self.autocast():
            outputs = self.spec.forward(self.wrapped, batch)
        return supervised_losses(outputs, batch["targets"], self.loss_weights(), self.grid)

    def loss_weights(self) -> LossWeights:
        """The task weights of the current step (config.loss, with config.loss_ramp applied)."""
        return self.config.loss_ramp.weights(self.config.loss, self.step)

    def refresh_batchnorm(self) -> None:
        """Re-estimate the BatchNorm statistics for the current weights (once per step)."""
        if self.config.bn_recalibration_batches <= 0 or self.bn_step == self.step:
            return
        batches = (move_batch(b, self.device) for b in self.loader(self.bn_set, shuffle_seed=2))

        def forward(model: nn.Module, batch: dict[str, Any]) -> None:
            with self.autocast():
                self.spec.forward(model, batch)

        recalibrate_batchnorm(self.model, batches, forward)
        self.bn_step = self.step

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        self.wrapped.train()
        lr = lr_at(self.step, self.config)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        terms = self.losses(move_batch(batch, self.device))
        if not self.finite_on_every_rank(terms["total"]):
            bad = sorted(name for name, value in terms.items() if not torch.isfinite(value))
            self.diverged(f"the loss is {float(terms['total'])} (non-finite: {', '.join(bad) or 'on another rank'})")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(terms["total"]).backward()
        self.scaler.unscale_(self.optimizer)
        # every parameter the optimiser updates (a distillation's adapters too), not only the model's
        trained = [p for group in self.optimizer.param_groups for p in group["params"]]
        grad_norm = torch.nn.utils.clip_grad_norm_(trained, self.config.optim.grad_clip_norm)
        if torch.isfinite(grad_norm):
            self.skipped_steps = 0
        elif not self.scaler.is_enabled():
            self.diverged(f"the gradient norm is {float(grad_norm)}")
        else:  # fp16's scaler skips an overflowing step and halves its scale; without end, nothing is ever learnt
            self.skipped_steps += 1
            if self.skipped_steps >= MAX_SKIPPED_STEPS:
                self.diverged(f"the gradient was not finite on {self.skipped_steps} steps in a row (float16's loss "
                              f"scale is down to {self.scaler.get_scale():.3g})")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        record = {name: float(value.detach()) for name, value in terms.items()}
        record.update(lr=lr, grad_norm=float(grad_norm), step=self.step)
        return record

    def finite_on_every_rank(self, loss: torch.Tensor) -> bool:
        """Whether every rank's loss is finite: under torchrun all ranks stop together, or the others would wait in
        the gradient all-reduce until the collective times out."""
        finite = torch.isfinite(loss.detach()).to(torch.float32)
        if self.ddp.world_size > 1:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        return bool(finite > 0)

    def diverged(self, what: str) -> None:
        raise TrainingDiverged(f"training stopped at step {self.step + 1}: {what}; the update was not applied and "
                               f"the checkpoints in {self.out_dir / 'checkpoints'} are intact. Lower optim.lr "
                               "(or raise optim.warmup_steps) and resume or restart")

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean of every loss term over the validation split (or its first `val_batches` batches)."""
        self.refresh_batchnorm()
        self.wrapped.eval()
        sampler = DistributedSampler(self.val_set, self.ddp.world_size, self.ddp.rank, shuffle=False) \
            if self.ddp.world_size > 1 else None
        sums: dict[str, float] = {}
        count = 0
        for i, batch in enumerate(self.loader(self.val_set, sampler, shuffle_seed=1)):
            if self.config.val_batches and i >= self.config.val_batches:
                break
            for name, value in self.losses(move_batch(batch, self.device)).items():
                sums[name] = sums.get(name, 0.0) + float(value)
            count += 1
        names = sorted(sums)
        totals = torch.tensor([sums[n] for n in names] + [count], dtype=torch.float64, device=self.device)
        if self.ddp.world_size > 1:
            dist.all_reduce(totals)
        return {name: float(totals[i] / max(float(totals[-1]), 1.0)) for i, name in enumerate(names)}

    # -------------------------------------------------------- checkpoints
    distill_stage = "none"  # a distillation run's stage (training/distill.py); checkpoints of another are refused

    def extra_state(self) -> dict[str, Any]:
        """Training state a subclass adds to every checkpoint (restored by its own `resume`)."""
        return {}

    def run_settings(self) -> dict[str, str]:
        """What the run is made with, as flat JSON per part, stored in every checkpoint and compared on resume: the
        configs, and the data and the arithmetic (another dataroot, or `precision: auto` on another machine)."""
        compute = str(self.compute_dtype or torch.float32).removeprefix("torch.")
        return {"settings": settings_text(self.config), "model_settings": settings_text(self.spec.config),
                "data_settings": json.dumps({**self.data_identity, "compute_dtype": compute}, sort_keys=True)}

    def save(self) -> Path | None:
        # on every rank (their weights are the same), so that all stop together
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            self.diverged("the weights are not finite")
        if not self.ddp.is_main:
            return None
        self.refresh_batchnorm()
        state = {"step": self.step, "kind": self.kind, "optimizer": self.optimizer.state_dict(),
                 "scaler": self.scaler.state_dict(), "rng": rng_state(), "distill_stage": self.distill_stage,
                 **self.run_settings(), **self.extra_state()}
        path = write_checkpoint_dir(self.out_dir / "checkpoints", self.step, self.spec.save, state,
                                    keep=self.config.keep_checkpoints)
        log.info("saved checkpoint %s", path)
        return path

    def resume(self) -> bool:
        """Continue from the newest checkpoint in out_dir, if there is one."""
        found = resume_point(self.out_dir / "checkpoints")
        if found is None:
            return False
        path, state = found
        self.check_resumable(path, state)
        try:
            self.spec.load_weights(self.model, path / MODEL_FILE, self.device)
            # load_state_dict brings back the saved groups' hyper-parameters: the config's are put back, as the
            # resume warning says they are (the learning rate is set every step)
            configured = [(group["weight_decay"], group["betas"]) for group in self.optimizer.param_groups]
            self.optimizer.load_state_dict(state["optimizer"])
            for group, (decay, betas) in zip(self.optimizer.param_groups, configured, strict=True):
                group.update(weight_decay=decay, betas=betas)
            self.restore_extra_state(state)
        except CheckpointError:  # the checkpoint itself is unusable (non-finite weights...): its own line
            raise
        except (ValueError, RuntimeError, KeyError) as error:  # other shapes or parameter groups
            detail = " ".join(str(error).split())[:400]  # torch's message spans lines: the keys are on the later ones
            raise ConfigError(f"{path} does not fit this run (another model, teacher or distillation setting?): "
                              f"{detail}; use another --out, or remove its checkpoints") from error
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        set_rng_state(state["rng"])
        log.info("resumed from %s at step %d", path, self.step)
        return True

    def check_resumable(self, path: Path, state: dict[str, Any]) -> None:
        """Refuse a checkpoint of another kind of run (a subclass adds its own conditions)."""
        if state.get("kind") != self.kind:
            raise ConfigError(f"{path} holds a {state.get('kind')} run, not a {self.kind} run; use another --out")
        stage = state.get("distill_stage", "none")
        if stage != self.distill_stage:
            raise ConfigError(f"{path} is a run of distillation stage {stage!r}, not {self.distill_stage!r}; use "
                              "another --out, or remove its checkpoints")
        # A changed optimiser, loss or schedule setting may be meant (more steps, a lower lr after a divergence):
        # said, not refused. What would make the resumed steps another run's (another sample order, data set or
        # network) is refused.
        refused = []
        for part, now_text in self.run_settings().items():
            if part not in state:  # a checkpoint from before the part was recorded
                continue
            before, now = json.loads(state[part]), json.loads(now_text)
            warned = []
            for key in sorted(set(before) | set(now)):
                if before.get(key) != now.get(key):
                    said = f"{key} {before.get(key)!r} -> {now.get(key)!r}"
                    (refused if changes_the_run(part, key) else warned).append(said)
            if warned:
                log.warning("resuming %s with other %s than its run's: %s", path, part.replace("_", " "),
                            "; ".join(warned))
        if refused:
            raise ConfigError(f"{path} was trained with other settings that decide its data or network "
                              f"({'; '.join(refused)}): resuming would mix two runs; give the run's own settings, "
                              "or use another --out (--no-resume starts this one afresh)")

    def restore_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what `extra_state` added to the checkpoint."""

    # ---------------------------------------------------------------- loop
    def fit(self, stop_at: int | None = None, on_step: Callable[[dict[str, float]], None] | None = None) -> None:
        """Train to `config.steps` (or stop after step `stop_at`), validating and checkpointing on the way."""
        config = self.config
        end = min(config.steps, stop_at) if stop_at is not None else config.steps
        if self.ddp.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out_dir / "tensorboard"))
        bar = tqdm(total=end, initial=self.step, desc=f"train {self.kind}", disable=not self.ddp.is_main,
                   dynamic_ncols=True)
        try:
            while self.step < end:
                epoch, skip = divmod(self.step, self.steps_per_epoch)
                self.sampler.set_epoch(epoch)
                self.sampler.skip_batches = skip
                self.train_set.set_epoch(epoch)
                for batch in self.loader(self.train_set, self.sampler):
                    record = self.train_step(batch)
                    self.history.append(record)
                    if on_step is not None:
                        on_step(record)
                    bar.update(1)
                    bar.set_postfix(loss=f"{record['total']:.4f}", lr=f"{record['lr']:.2e}")
                    self.log_scalars("train", record)
                    if self.step % config.val_every == 0 or self.step == end:
                        self.log_scalars("val", self.validate(), force=True)
                        self.measure_validation_metrics()
                    if self.step % config.checkpoint_every == 0 or self.step == end:
                        self.save()
                    if self.step >= end:
                        break
        finally:
            bar.close()
            if self.writer is not None:
                try:
                    self.writer.close()
                except OSError as error:  # a full disk: the error that stopped the run is the one to report
                    log.warning("TensorBoard log in %s not flushed: %s", self.out_dir / "tensorboard", error)

    def measure_validation_metrics(self) -> None:
        """Run `validation_metrics` (if set) for the current weights; a resumed run rewrites a step's line, and
        readers (`read_validation_log`) keep the last line of each step."""
        if self.validation_metrics is None or not self.ddp.is_main:
            return
        values = self.validation_metrics(self.model)
        self.log_scalars("val", values, force=True)
        log.info("step %d validation %s", self.step, ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
        with open(self.out_dir / VALIDATION_LOG, "a") as handle:
            handle.write(json.dumps({"step": self.step, **values}) + "\n")

    def log_scalars(self, prefix: str, values: dict[str, float], force: bool = False) -> None:
        if self.writer is None or not (force or self.step % self.config.log_every == 0):
            return
        for name, value in values.items():
            if name != "step":
                self.writer.add_scalar(f"{prefix}/{name}", value, self.step)
        if prefix == "val" and "total" in values:
            log.info("step %d validation loss %.4f", self.step, values["total"])


# ------------------------------------------------------------------ command line
def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="training YAML (config/train_tiny.yaml, train_base.yaml)")
    parser.add_argument("--model", choices=("student", "teacher"), default="student")
    parser.add_argument("--dataroot", required=True, help="nuScenes-format dataroot")
    parser.add_argument("--version", default="v1.0-trainval", help="nuScenes version folder (v1.0-mini, ...)")
    parser.add_argument("--out", required=True, help="run folder: checkpoints/ and tensorboard/")
    parser.add_argument("--steps", type=int, default=None, help="override the config's total steps")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if present, else cpu)")
    parser.add_argument("--no-resume", action="store_true", help="start fresh even if out has a checkpoint")
    add_override_arguments(parser)


def add_override_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backbone-weights", default=None,
                        help="torchvision ResNet-18 ImageNet weights (.pth/.safetensors) for the camera backbone of "
                             "a fresh run (= backbone_weights=PATH)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides, e.g. optim.lr=0.002 data.batch_size=2 (values are YAML)")


# Settings a resumed run may not change: the sample order (seed, split, batch size, sample count), the data set and
# the network (its config but its name and the decoding of its outputs); see Trainer.check_resumable.
RUN_DECIDING = {"settings": ("seed", "train_split", "data.batch_size", "data.max_samples"),
                "data_settings": ("dataset", "version")}


def changes_the_run(part: str, key: str) -> bool:
    """Whether a changed setting (`key` of the run_settings `part`) makes a resumed run another run."""
    if part == "model_settings":  # a teacher's camera config nests its own decode (camera.decode.*)
        return not (key == "name" or key.startswith("decode.") or ".decode." in key)
    return key in RUN_DECIDING.get(part, ())


def settings_text(config: Any) -> str:
    """Every setting of a run as flat JSON (`optim.lr`: value), stored in its checkpoints for resume to compare."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}{key}.", item)
        else:
            flat[prefix[:-1]] = value

    walk("", json.loads(json.dumps(dataclasses.asdict(config), default=str)))
    return json.dumps(flat, sort_keys=True)


def overrides_of(args: argparse.Namespace) -> list[str]:
    """The command line's config overrides: the flags that are shorthands for keys, then the KEY=VALUE words."""
    flags = ("steps", "seed", "backbone_weights")  # --steps N is steps=N, and so on
    given = [f"{key}={getattr(args, key)}" for key in flags if getattr(args, key, None) is not None]
    return given + list(args.overrides)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = load_train_config(args.config, overrides_of(args))
    check_output_folder(args.out)
    if args.no_resume:
        check_fresh_start(args.out)
    with hold_run_folder(args.out):
        trainer = Trainer(config, args.model, args.dataroot, args.version, args.out, device=args.device)
        return fit_to_end(trainer, resume=not args.no_resume)


def hold_run_folder(out: str | Path) -> contextlib.AbstractContextManager:
    """The run folder held from before the dataset is read (run_lock.py), by the main rank: under torchrun the
    other ranks are the same run."""
    return run_lock(out) if torchrun_ranks().is_main else contextlib.nullcontext()


def fit_to_end(trainer: Trainer, resume: bool) -> int:
    """The tail of every training command: resume if asked, train, leave the process group."""
    try:
        if resume:
            trainer.resume()
        trainer.fit()
    except (TrainingDiverged, NoIntactCheckpoint) as error:
        raise SystemExit(f"tinybev: {error}") from None
    if trainer.ddp.world_size > 1:
        dist.destroy_process_group()
    return 0
