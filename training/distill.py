"""`tinybev distill`: train the student with the ground-truth losses plus cross-modal distillation.

Reuses DATA's supervised `Trainer` (mixed precision, exact resume, TensorBoard, torchrun, validation, atomic
checkpoints) by subclassing it: `DistillTrainer` overrides the three places that differ (the loss of a batch,
the distillation state added to every checkpoint, and restoring it).
Nothing is copied from the supervised loop.

The teacher is either live (a teacher checkpoint: LiDAR + cameras, run under no_grad every step on the batch as
augmented; the data loader then also reads the LiDAR sweep) or a `CachedTeacher` directory (run once over
un-augmented samples, read per sample; no LiDAR loading, no teacher compute; its maps are moved by each batch's
BEV augmentation: training/teachers/bev_warp.py). The adapters and the adaptive region state are saved in
the training state of every checkpoint, never in the student's model file: the deployed student is unchanged.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from tinybev_ros.checkpoint import read_checkpoint
from tinybev_ros.errors import CheckpointError, CheckpointNotFound, ConfigError
from tinybev_ros.geometry import BevGrid
from tinybev_ros.paths import check_output_folder
from tinybev_ros.release import sha256
from training.checkpointing import check_fresh_start
from training.config import TrainConfig
from training.data import collate, move_batch
from training.distillation.config import STAGES, DistillConfig, load_distill_config
from training.distillation.loss import DistillationLoss
from training.losses import supervised_losses
from training.teachers.bev_warp import warp_teacher_output
from training.teachers.caching import cache_marker, check_cache_dataset
from training.train import (
    Trainer,
    add_override_arguments,
    fit_to_end,
    hold_run_folder,
    overrides_of,
    parameter_groups,
    settings_text,
)

log = logging.getLogger(__name__)

# Distillation terms that imitate a ramped task (training/config.py `LossRamp`) follow its ramp: before the BEV
# features carry geometry the teacher's plan or forecast is as hard to follow as the ground truth's (measured,
# unramped: over S3's first 60 steps the plan imitation, 9-12 m at weight 0.5, was the largest weighted term while
# the supervised plan it mirrors was ramped to nearly 0).
RAMPED_WITH = {"motion_traj": "motion_reg", "motion_mode": "motion_cls", "occupancy": "occupancy", "plan": "plan"}


def check_teacher(path: Path) -> None:
    """A wrong --teacher is one line before the datasets are opened and cached (minutes on a first run)."""
    if path.is_dir():
        if not any(path.glob("*.safetensors")):
            raise CheckpointNotFound(f"teacher {path} is a folder without teacher-cache files (`tinybev teacher-cache "
                                     f"--out {path}` writes them; a teacher's run folder holds checkpoints/)")
        return
    if not path.is_file():
        raise CheckpointNotFound(f"teacher {path} is neither a teacher checkpoint file nor a teacher-cache directory")
    kind = read_checkpoint(path)[1]["kind"]
    if kind != "teacher":
        raise CheckpointError(f"teacher {path} holds a {kind}, not a teacher (a teacher checkpoint or cache)")


def open_teacher(path: str | Path, device: torch.device) -> Any:
    """A Teacher (training/teachers) from a teacher checkpoint file or a teacher-cache directory."""
    from training.teachers import CachedTeacher, LiveTeacher

    path = Path(path)
    check_teacher(path)
    return CachedTeacher(path, device=device) if path.is_dir() else LiveTeacher.from_checkpoint(path, device=device)


def check_teacher_fits(teacher: Any, grid: BevGrid, dataset: str) -> None:
    """The teacher covers the student's ground (feature maps of other sizes are resized, so a teacher over half
    the extent would pass every shape check, each term imitating the wrong place), and a cache was made of this
    dataset. A cache whose marker predates these fields cannot say: accepted."""
    from training.teachers import CachedTeacher

    if isinstance(teacher, CachedTeacher):
        marker = cache_marker(teacher.root)
        check_cache_dataset(teacher.root, marker, dataset)
        recorded = marker.get("grid")
        teacher_grid = BevGrid(*recorded) if isinstance(recorded, list) and len(recorded) == 5 else None
    else:
        teacher_grid = getattr(teacher, "grid", None)
    if teacher_grid is None:
        return
    extent = (teacher_grid.x_min, teacher_grid.x_max, teacher_grid.y_min, teacher_grid.y_max)
    if extent != (grid.x_min, grid.x_max, grid.y_min, grid.y_max):
        raise ConfigError(f"the teacher's BEV grid covers x {extent[0]:g}..{extent[1]:g} m, y {extent[2]:g}.."
                          f"{extent[3]:g} m, the student's x {grid.x_min:g}..{grid.x_max:g} m, y {grid.y_min:g}.."
                          f"{grid.y_max:g} m: distil from a teacher made on the student's grid")


def teacher_identity(path: Path) -> str:
    """Which teacher a run learns from, recorded in its checkpoints: the teacher checkpoint's sha256 (a cache's
    teacher.json holds it), else the cache's path (a cache written elsewhere, e.g. by an external model)."""
    from training.teachers.caching import marked_teacher

    digest = sha256(path) if path.is_file() else marked_teacher(path)
    return f"sha256 {digest}" if digest else str(path.resolve())


class DistillTrainer(Trainer):
    """The supervised Trainer with `DistillationLoss` added to every batch's loss (stage `none`: GT only)."""

    def __init__(self, config: TrainConfig, distill: DistillConfig, teacher: Any, dataroot: str | Path, version: str,
                 out_dir: str | Path, device: str | None = None, nusc=None) -> None:
        """`teacher`: a Teacher object, or the path of a teacher checkpoint / cache (opened on this rank's device)."""
        if distill.stage != "none" and isinstance(teacher, str | Path):
            check_teacher(Path(teacher))
        super().__init__(config, "student", dataroot, version, out_dir, device=device, nusc=nusc)
        self.distill = distill
        self.distill_stage = distill.stage
        self.kd: DistillationLoss | None = None
        self.teacher = None
        self.teacher_source = teacher_identity(Path(teacher)) if isinstance(teacher, str | Path) else ""
        if distill.stage == "none":
            return
        if teacher is None:
            raise ValueError(f"distillation stage {distill.stage} needs a teacher")
        self.teacher = open_teacher(teacher, self.device) if isinstance(teacher, str | Path) else teacher
        check_teacher_fits(self.teacher, self.grid, self.data_identity["dataset"])
        if hasattr(self.teacher, "check"):  # a cache: cut short, damaged or mixed, said now rather than mid-run
            self.teacher.check({config.train_split: self.train_set.tokens, config.val_split: self.val_set.tokens})
        if getattr(self.teacher, "needs_lidar", False):
            for dataset in (self.train_set, self.val_set):
                dataset.with_lidar, dataset.lidar_sweeps = True, self.teacher.lidar_sweeps

        self.kd = self._build_distillation().to(self.device)
        extra = [p for p in self.kd.parameters() if p.requires_grad]
        if extra:
            for group in parameter_groups(extra, config.optim.weight_decay):
                self.optimizer.add_param_group(group)
            if self.ddp.world_size > 1:  # the adapters live outside DDP: average their gradients by hand
                for p in extra:
                    p.register_hook(lambda grad: _average_across_ranks(grad))
        log.info("distillation stage %s with terms %s; %d adapter parameters", distill.stage,
                 sorted(self.kd.weights), sum(p.numel() for p in extra))

    @torch.no_grad()
    def _build_distillation(self) -> DistillationLoss:
        """Adapters need both sides' channel counts: run student and teacher once on the first validation item."""
        batch = move_batch(collate([self.val_set[0]]), self.device)
        self.model.eval()
        student = self.spec.forward(self.model, batch)
        teacher = self.teacher(batch)
        if "heatmap" in teacher.outputs and teacher.outputs["heatmap"].shape[-2:] != student["heatmap"].shape[-2:]:
            raise ConfigError(f"the teacher's detection raster is {tuple(teacher.outputs['heatmap'].shape[-2:])} "
                              f"cells, the student's {tuple(student['heatmap'].shape[-2:])}: distil from a teacher "
                              "whose grid and det_stride give the student's raster")
        cell = self.grid.resolution * self.spec.det_stride
        return DistillationLoss.from_example(self.distill, student["bev_features"], teacher.features, cell,
                                             self.config.loss.box_code)

    def losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        with self.autocast():
            outputs = self.spec.forward(self.wrapped, batch)
            terms = supervised_losses(outputs, batch["targets"], self.loss_weights(), self.grid)
            if self.kd is None:
                return terms
            with torch.no_grad():
                teacher = self.teacher(batch)
                if not getattr(self.teacher, "needs_lidar", False):  # a cache: un-moved maps, move them
                    teacher = warp_teacher_output(teacher, batch["bev_transform"], self.grid)
            kd = self.kd(outputs, teacher.features, teacher.outputs, batch["targets"], self.kd_weights(),
                         teacher.coverage)
        terms["supervised"] = terms["total"]
        terms.update(kd)
        terms["total"] = self.distill.supervised * terms["supervised"] + kd["kd_total"]
        return terms

    def kd_weights(self) -> dict[str, float]:
        """This step's weight of each distillation term: imitating a task follows that task's loss ramp."""
        ramp = self.config.loss_ramp
        return {name: weight * ramp.share(RAMPED_WITH.get(name), self.step) for name, weight in self.kd.weights.items()}

    def extra_state(self) -> dict[str, Any]:
        return {"distill": dict(self.kd.state_dict()) if self.kd is not None else {}}

    def run_settings(self) -> dict[str, str]:
        settings = super().run_settings()
        settings["distill_settings"] = settings_text(self.distill)
        if self.teacher_source:
            settings["teacher"] = json.dumps({"teacher": self.teacher_source})
        return settings

    def restore_extra_state(self, state: dict[str, Any]) -> None:
        if self.kd is not None:
            self.kd.load_state_dict({k: v.to(self.device) for k, v in state["distill"].items()})


def _average_across_ranks(grad: torch.Tensor) -> torch.Tensor:
    grad = grad.clone()
    dist.all_reduce(grad)
    return grad / dist.get_world_size()


# ------------------------------------------------------------------------------------------ command line
def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="distillation YAML (config/distill_tiny.yaml, _base)")
    parser.add_argument("--teacher", default=None,
                        help="teacher checkpoint (.safetensors, run live) or teacher-cache directory")
    parser.add_argument("--stage", choices=STAGES, default=None, help="override the config's stage")
    parser.add_argument("--dataroot", required=True, help="nuScenes-format dataroot")
    parser.add_argument("--version", default="v1.0-trainval", help="nuScenes version folder (v1.0-mini, ...)")
    parser.add_argument("--out", required=True, help="run folder: checkpoints/ and tensorboard/")
    parser.add_argument("--steps", type=int, default=None, help="override the training config's total steps")
    parser.add_argument("--seed", type=int, default=None, help="override the training config's seed")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if present, else cpu)")
    parser.add_argument("--no-resume", action="store_true", help="start fresh even if out has a checkpoint")
    add_override_arguments(parser)


def build_trainer(args: argparse.Namespace) -> DistillTrainer:
    stage = [f"distill.stage={args.stage}"] if args.stage is not None else []
    run_config = load_distill_config(args.config, overrides_of(args) + stage)
    distill = run_config.distill
    config = run_config.training()
    if distill.stage != "none" and args.teacher is None:
        raise SystemExit(f"tinybev distill: stage {distill.stage} needs --teacher")
    return DistillTrainer(config, distill, args.teacher, args.dataroot, args.version, args.out, device=args.device)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    check_output_folder(args.out)
    if args.no_resume:
        check_fresh_start(args.out)
    with hold_run_folder(args.out):
        return fit_to_end(build_trainer(args), resume=not args.no_resume)
