"""`tinybev ablate`: does distillation work? The student without distillation, the teacher, then the student with
S1 / S2 / S3.

Steps (each one skipped when its result is already in the output folder, so an interrupted ablation resumes: a
finished run is never trained again, an interrupted one continues from its newest checkpoint):
1. train the supervised student (stage `none`: ground truth only, the same loop, steps and data as the distilled
   ones) of every seed, measuring NDS on a fresh validation world at every validation (`validation_world`);
2. before the first distilled run, train the teacher with the supervised trainer (`teacher_steps`,
   `teacher_train_config`) and cache its features and outputs for the train and val splits (`CachedTeacher`), so
   the student runs do not pay for the teacher or for LiDAR loading;
3. train the distilled students, S3 of every seed first, then S1 and S2 seed by seed (`run_order`);
4. evaluate the teacher and every student with the evaluation suite (devkit detection/tracking, motion, map,
   occupancy, planning) as saved, on fresh synthetic worlds no run saw (`eval_worlds`; or the dataroot's
   `eval_split`), and time the forward pass;
5. after the teacher and after every run, write the table so far (mean +- std over seeds), the verdict against the
   targets, the validation-NDS plot and, once S3 is done, the picture of what the distillation looks at
   (training/distillation/figures.py).

Everything that sets the cost (steps, seeds, stages, models, data, worlds) is in the ablation YAML and the YAML
files it names, so the same command runs at `tiny` scale on a CPU and at `base` scale on a GPU.

Sittings that do not share a disk: `--table docs/X.md` keeps the results in `docs/X.json`, which lives in git. A
later call with the same `--table` takes a student recorded there as done (never trained again) when it was made
with today's settings and data (its `settings_sha256`: a changed distillation recipe retrains the distilled runs
only). The teacher is trained (again) only when a distilled run is pending, and must come out with the recorded
weights (`teacher_sha256`; training is deterministic), so every distilled student in the table learned from one
teacher; until the first distilled run the record has no teacher (its table row reads n/a). The teacher's weights
are kept beside the record too (`docs/X.teacher.safetensors`, written once it is trained), so a later sitting, on a
disk without the teacher, takes them instead of training the teacher again (an hour or more on a CPU, and on
another CPU not bit for bit the recorded weights).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from nuscenes.nuscenes import NuScenes

from tinybev_ros.atomic_file import atomic_path, write_text
from tinybev_ros.config import load_yaml, path_field, resolve_relative
from tinybev_ros.device import resolve_device
from tinybev_ros.errors import CheckpointError, ConfigError
from tinybev_ros.nuscenes_dataset import open_nuscenes
from tinybev_ros.paths import check_output_folder
from tinybev_ros.precision import autocast_dtype
from tinybev_ros.release import sha256
from training.checkpointing import MODEL_FILE
from training.config import load_train_config
from training.data import cache_root, collate, move_batch
from training.distill import DistillTrainer
from training.distillation import config as distillation_config
from training.distillation.config import STAGES, load_distill_config
from training.evaluation.inference import evaluation_predictor, for_evaluation, model_frame, predict_split
from training.evaluation.report import metric_at, summary_row, write_json
from training.evaluation.suite import METRICS_REVISION, evaluate, load_ground_truths
from training.evaluation.worlds import check_world_size, world
from training.metrics.speed import measure_latency
from training.run_lock import run_lock
from training.sample_cache import dataset_fingerprint
from training.splits import devkit_split, split_sample_tokens
from training.teachers import load_teacher_checkpoint
from training.teachers.caching import cache_splits
from training.teachers.predict import predict_split_teacher, teacher_dataset
from training.train import Trainer, read_validation_log
from training.validation_metrics import DetectionValidation

log = logging.getLogger(__name__)


@dataclass
class AblationConfig:
    distill_config: str = path_field("distill_tiny.yaml")  # names the training YAML (student, data, optimiser)
    teacher_train_config: str = path_field()  # the teacher's training YAML; "" = the distill config's
    # key=value overrides of the distill config and the students' training config (load_distill_config's rule)
    student_overrides: tuple[str, ...] = ()
    teacher_steps: int = 400
    student_steps: int = 150
    seeds: tuple[int, ...] = (0, 1)
    stages: tuple[str, ...] = ("none", "S1", "S2", "S3")
    cache_teacher: bool = True  # False: the teacher runs live in every distillation step
    eval_split: str = "val"  # of the dataroot, when no eval_worlds are given
    eval_worlds: tuple[int, ...] = ()  # seeds of fresh synthetic worlds (`tinybev eval-worlds`), mean over them
    world_scenes: int = 10  # scenes per world (its mini_train split, 8 of 10, is scored)
    world_duration_s: float = 10.0
    validation_world: int = -1  # seed of a fresh world whose NDS every student validation measures; -1 = none
    validation_scenes: int = 5
    latency_repeats: int = 5
    # The targets the verdict is computed against: S3's NDS gain over the supervised student (and more than the
    # seed spread), and the share of the teacher-student NDS gap it recovers.
    target_nds_gain: float = 0.03
    target_gap_recovered: float = 0.30
    source: str = ""

    def __post_init__(self) -> None:
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown or not self.seeds:
            raise ValueError(f"ablation: stages {unknown} unknown (known {STAGES}) or no seeds")
        check_world_size(self.world_scenes, self.world_duration_s, "world_scenes")  # else known after a student
        check_world_size(self.validation_scenes, self.world_duration_s, "validation_scenes")

    def run_order(self) -> list[tuple[int, str]]:
        """(seed, stage): the supervised runs of every seed, then S3's, then the other stages seed by seed. The
        verdict's pairs come first, so a partial ablation answers it with its seed spread; the supervised runs
        before any distilled one, because they need no teacher: a sitting too short for the teacher and a
        distilled run still finishes runs that count."""
        first = [(seed, stage) for stage in ("none", "S3") if stage in self.stages for seed in self.seeds]
        return first + [(seed, stage) for seed in self.seeds for stage in self.stages if stage not in ("none", "S3")]


def load_ablation_config(path: str | Path, overrides: tuple[str, ...] = ()) -> AblationConfig:
    config = load_yaml(AblationConfig, path, overrides)
    config.source = str(Path(path).resolve())
    return config


def final_model(run_dir: Path, steps: int) -> Path:
    return run_dir / "checkpoints" / f"step_{steps:08d}" / MODEL_FILE


TEACHER_KEYS = ("teacher", "teacher_sha256", "teacher_settings_sha256", "teacher_source")


def weights_sha256(path: Path) -> str:
    """Digest of a checkpoint's tensors (names and bytes, not the file's metadata)."""
    from safetensors import SafetensorError, safe_open

    digest = hashlib.sha256()
    try:
        with safe_open(str(path), framework="pt") as handle:
            for key in sorted(handle.keys()):
                digest.update(key.encode())
                digest.update(handle.get_tensor(key).reshape(-1).view(torch.uint8).numpy().tobytes())
    except (SafetensorError, OSError) as error:  # e.g. a kept teacher cut short, or a Git LFS pointer
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint ({error})") from error
    return digest.hexdigest()


def _settings_of(config: Any, *paths: str) -> dict[str, Any]:
    """A config as data without where it lives: `source` and the named path fields (whose files' contents are
    digested on their own) go, so the digest is the same in every checkout."""
    data = dataclasses.asdict(config)
    for key in ("source", *paths):
        data.pop(key, None)
    return data


def _training_settings(config: Any, device: str) -> dict[str, Any]:
    """A TrainConfig's settings without the machine's (cache folder, worker count), with the ImageNet weights by
    content (the model configs' contents are digested apart) and with the type the steps compute in on `device`
    (precision auto is bfloat16 on a CPU that has it, float32 on one that has not: other numerics, another run)."""
    data = _settings_of(config, "student_config", "teacher_config", "backbone_weights")
    for key in ("cache_dir", "num_workers"):
        data["data"].pop(key)
    data["compute_dtype"] = str(autocast_dtype(config.precision, torch.device(device)) or torch.float32)
    weights = config.backbone_weights_path()
    data["backbone_weights_sha256"] = sha256(weights) if weights is not None else ""
    return data


def mean_row(rows: dict[str, dict[str, float]]) -> dict[str, float]:
    """Per-metric mean over evaluation sets (NaN where no set has the metric)."""
    keys = list(next(iter(rows.values())))
    out = {}
    for key in keys:
        values = [r[key] for r in rows.values() if not math.isnan(r[key])]
        out[key] = float(np.mean(values)) if values else float("nan")
    return out


# --------------------------------------------------------------------------------------------- steps
class Ablation:
    def __init__(self, config: AblationConfig, dataroot: str | Path, version: str, out: str | Path,
                 device: str | None = None, kept_teacher: Path | None = None) -> None:
        self.config = config
        self.kept_teacher = kept_teacher  # the record's teacher weights (module docstring); None: no record
        self.dataroot, self.version, self.out = str(dataroot), version, Path(out)
        self.device = str(resolve_device(device))  # DeviceError (one line) before any record is touched
        self.distill_run = load_distill_config(resolve_relative(config.distill_config, config.source,
                                                                "distill_config"), config.student_overrides)
        self.train_config = self.distill_run.training()
        self.teacher_train_config = self.train_config if not config.teacher_train_config else load_train_config(
            resolve_relative(config.teacher_train_config, config.source, "teacher_train_config"))
        self.nusc = open_nuscenes(self.dataroot, version)
        self._ground_truths: dict[tuple[str, Any], dict] = {}

    def settings_sha256(self, stage: str | None) -> str:
        """What a recorded run depends on (stage None: the teacher; "none": the supervised student; else a
        distilled one): the ablation's settings but its lists of stages and seeds and its targets, the training
        and model configs of the networks involved, the distillation's for a distilled run, and the data."""
        from tinybev_ros.model import load_model_config
        from training.teachers import load_teacher_config

        settings: dict[str, Any] = {
            # student_overrides act through the training and distillation configs below
            "ablation": _settings_of(self.config, "stages", "seeds", "distill_config", "teacher_train_config",
                                     "student_overrides", "target_nds_gain", "target_gap_recovered"),
            "data": self.data_fingerprint, "device": torch.device(self.device).type,
        }
        if stage != "none":
            settings["teacher_training"] = _training_settings(self.teacher_train_config, self.device)
            settings["teacher_model"] = dataclasses.asdict(
                load_teacher_config(self.teacher_train_config.model_config_path("teacher")))
        if stage is not None:
            settings["student_training"] = _training_settings(self.train_config, self.device)
            settings["student_model"] = dataclasses.asdict(
                load_model_config(self.train_config.model_config_path("student")))
        if stage not in (None, "none"):
            settings["distill"] = dataclasses.asdict(dataclasses.replace(self.distill_run.distill, stage=stage))
            settings["distill_revision"] = distillation_config.REVISION
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()

    @functools.cached_property
    def data_fingerprint(self) -> str:
        """The dataset's tables by content (the images follow from them for `tinybev synth` data)."""
        return dataset_fingerprint(self.dataroot, self.version)

    def claim(self, folder: Path, digest: str) -> None:
        """Mark a work folder with the settings it is made with; refuse one made with others (a resume would
        otherwise pass an old checkpoint or metric off as today's)."""
        stamp = folder / "settings_sha256"
        if stamp.is_file() and stamp.read_text().strip() != digest:
            raise ConfigError(f"{folder} was made with other settings than today's; move it away (or use another "
                              "--out) to train it again")
        if not stamp.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            write_text(stamp, digest + "\n")

    def train_teacher(self, recorded_sha256: str | None = None) -> Path:
        """The teacher's final weights: this folder's, else the record's kept copy (`recorded_sha256`: the
        record's teacher has today's settings), else trained (resuming this folder's checkpoints)."""
        run_dir = self.out / "teacher"
        settings = self.settings_sha256(None)
        self.claim(run_dir, settings)
        self.claim(self.out / "teacher_cache", settings)
        model = final_model(run_dir, self.config.teacher_steps)
        if model.is_file():
            return model
        if recorded_sha256 is not None and self.kept_teacher is not None and self.kept_teacher.is_file():
            digest = weights_sha256(self.kept_teacher)
            if digest != recorded_sha256:
                raise ConfigError(f"{self.kept_teacher} holds other weights than the record's teacher "
                                  f"({digest[:12]} != {recorded_sha256[:12]}); move the one that is wrong away")
            log.info("the teacher: the record's weights (%s), not trained again", self.kept_teacher)
            with atomic_path(model) as tmp:
                shutil.copyfile(self.kept_teacher, tmp)
            return model
        config = dataclasses.replace(self.teacher_train_config, steps=self.config.teacher_steps)
        trainer = Trainer(config, "teacher", self.dataroot, self.version, run_dir, device=self.device, nusc=self.nusc)
        trainer.resume()
        trainer.fit()
        return model

    def teacher_cache(self, teacher_model: Path) -> None:
        """Cache the teacher on both splits (un-augmented inputs; augmented student batches read it moved)."""
        cache_splits(teacher_model, self.nusc, (self.train_config.train_split, self.train_config.val_split),
                     self.out / "teacher_cache", self.device, self.teacher_train_config.data.batch_size,
                     cache_root(self.train_config.data, self.dataroot), adopt_unmarked=True)  # claim() vouches

    def run_dir(self, stage: str, seed: int) -> Path:
        return self.out / "runs" / f"{stage}_seed{seed}"

    def train_student(self, stage: str, seed: int, teacher: Path | None) -> Path:
        run_dir = self.run_dir(stage, seed)
        self.claim(run_dir, self.settings_sha256(stage))
        model = final_model(run_dir, self.config.student_steps)
        if model.is_file():
            return model
        config = dataclasses.replace(self.train_config, steps=self.config.student_steps, seed=seed)
        distill = dataclasses.replace(self.distill_run.distill, stage=stage)
        trainer = DistillTrainer(config, distill, teacher, self.dataroot, self.version,
                                 run_dir, device=self.device, nusc=self.nusc)
        if self.config.validation_world >= 0:
            trainer.validation_metrics = self.detection_validation(trainer.spec.camera_config)
        trainer.resume()
        trainer.fit()
        return model

    def detection_validation(self, model_config) -> DetectionValidation:
        root = world(self.out / "worlds", self.config.validation_world, self.config.validation_scenes,
                     self.config.world_duration_s)
        nusc = NuScenes(version="v1.0-mini", dataroot=str(root), verbose=False)
        return DetectionValidation(nusc, "mini_train", model_config, self.device)

    # ------------------------------------------------------------------------------------- evaluation
    def eval_set_names(self) -> list[str]:
        if not self.config.eval_worlds:
            return [self.config.eval_split]
        return [f"world {seed}" for seed in self.config.eval_worlds]

    @functools.cached_property
    def eval_sets(self) -> dict[str, tuple[NuScenes, str]]:
        """name -> (dataset, devkit split) of every evaluation set (generated on first use)."""
        if not self.config.eval_worlds:
            return {self.config.eval_split: (self.nusc, devkit_split(self.version, self.config.eval_split))}
        sets = {}
        for seed, name in zip(self.config.eval_worlds, self.eval_set_names(), strict=True):
            root = world(self.out / "worlds", seed, self.config.world_scenes, self.config.world_duration_s)
            sets[name] = (NuScenes(version="v1.0-mini", dataroot=str(root), verbose=False), "mini_train")
        return sets

    def ground_truths(self, name: str, grid) -> dict:
        key = (name, grid)
        if key not in self._ground_truths:
            nusc, split = self.eval_sets[name]
            self._ground_truths[key] = load_ground_truths(nusc, split_sample_tokens(nusc, split), grid,
                                                          progress=False)
        return self._ground_truths[key]

    def evaluate_model(self, model: Path, kind: str) -> dict[str, Any]:
        """Summary row of a checkpoint: the mean over the evaluation sets (each set's row kept under "sets")."""
        cached = model.parent / "ablation_metrics.json"
        if cached.is_file():
            row = json.loads(cached.read_text())
            same_sets = sorted(row.get("sets", {})) == sorted(self.eval_sets)
            if same_sets and row.get("metrics_revision") == METRICS_REVISION:  # else measured again, as today's
                return row
        score = self.student_metrics if kind == "student" else self.teacher_metrics
        rows = {name: score(model, name) for name in self.eval_sets}
        row: dict[str, Any] = {**mean_row(rows), "sets": rows, **self.size_and_speed(model, kind),
                               "metrics_revision": METRICS_REVISION}
        write_json(cached, row)
        return row

    def student_metrics(self, model: Path, name: str) -> dict[str, float]:
        nusc, split = self.eval_sets[name]
        predictor = evaluation_predictor(model, self.device)
        truths = self.ground_truths(name, predictor.config.grid)
        predictions = predict_split(predictor, nusc, list(truths), truths, progress=False)
        metrics = evaluate(predictions, nusc, split, grid=predictor.config.grid, ground_truths=truths,
                           progress=False, devkit_output_dir=model.parent / "devkit" / name.replace(" ", "_"))
        return summary_row(metrics)

    def teacher_metrics(self, model: Path, name: str) -> dict[str, float]:
        """Teacher predictions through the same decoding and metrics (it needs LiDAR, so not the Predictor)."""
        nusc, split = self.eval_sets[name]
        net, config = load_teacher_checkpoint(model, self.device)
        dataset = teacher_dataset(nusc, split, config, cache_root(self.train_config.data, nusc.dataroot))
        truths = self.ground_truths(name, config.camera.grid)
        predictions = predict_split_teacher(net, for_evaluation(config.camera), dataset, self.device, progress=False)
        missing = sorted(set(truths) - set(predictions))
        if missing:
            raise ValueError(f"teacher evaluation: {len(missing)} samples of {split} not predicted")
        metrics = evaluate(predictions, nusc, split, grid=config.camera.grid, ground_truths=truths, progress=False,
                           devkit_output_dir=model.parent / "devkit" / name.replace(" ", "_"))
        return summary_row(metrics)

    def size_and_speed(self, model: Path, kind: str) -> dict[str, float]:
        """Parameters (M) and the median forward latency (ms) on one frame of the first evaluation set."""
        name = next(iter(self.eval_sets))
        nusc, split = self.eval_sets[name]
        if kind == "student":
            predictor = evaluation_predictor(model, self.device)
            net = predictor.model
            frame = (*model_frame(nusc, split_sample_tokens(nusc, split)[0], predictor.config), 2, 0)

            def forward() -> Any:
                return predictor.predict(*frame)
        else:
            net, config = load_teacher_checkpoint(model, self.device)
            one = move_batch(collate([teacher_dataset(nusc, split, config, cache_root(
                self.train_config.data, nusc.dataroot))[0]]), torch.device(self.device))

            def forward() -> Any:
                return net(one)
        out = {"params_M": sum(p.numel() for p in net.parameters()) / 1e6}
        if self.config.latency_repeats > 0:
            out["latency_ms"] = measure_latency(forward, self.device, repeats=self.config.latency_repeats)["median_ms"]
        return out

    def distillation_figure(self, teacher_source: Path, path: Path) -> Path | None:
        """training/distillation/figures.py's panels for the val sample with the most objects among the first 20,
        from the S3 and supervised runs of the first seed (None until both exist or without a cached teacher)."""
        from training.data import NuScenesBevDataset
        from training.distillation.figures import distillation_figure
        from training.model_adapter import build_model_spec

        seed = self.config.seeds[0]
        s3, supervised = (final_model(self.run_dir(stage, seed), self.config.student_steps) for stage in ("S3", "none"))
        if not (teacher_source.is_dir() and s3.is_file() and supervised.is_file()):
            return None
        spec = build_model_spec("student", self.train_config.model_config_path("student"))
        dataset = NuScenesBevDataset(self.nusc, self.train_config.val_split, grid=spec.grid, det_stride=spec.det_stride,
                                     camera_config=spec.camera_config, data_config=self.train_config.data,
                                     target_config=self.train_config.targets, train=False, with_lidar=False)
        index = max(range(min(20, len(dataset))), key=lambda i: int(dataset[i]["targets"]["box_mask"].sum()))
        return distillation_figure(teacher_source, s3.parent, supervised, dataset, self.distill_run.distill,
                                   spec.grid.resolution * spec.det_stride, path, index)

    # ------------------------------------------------------------------------------------------- run
    def prepare_teacher(self, record: dict[str, Any]) -> dict[str, Any]:
        """Train (or resume) and evaluate the teacher for the distilled runs; the record's teacher keys. It must
        come out with the recorded weights, or distilled students of two teachers would share one table. Its cache
        is made after the record holds it (`teacher_source`), so a sitting that ends while caching keeps it."""
        settings = self.settings_sha256(None)
        same_teacher = record.get("teacher_settings_sha256") == settings
        teacher_model = self.train_teacher(record["teacher_sha256"] if same_teacher else None)
        digest = weights_sha256(teacher_model)
        if same_teacher and record["teacher_sha256"] != digest:
            raise ConfigError(f"the teacher trained again to other weights than the record's ({digest[:12]} != "
                              f"{record['teacher_sha256'][:12]}) with the same settings: training does not "
                              "reproduce on this machine, so new distilled students cannot share a table with "
                              "the recorded ones; move the record away to start afresh")
        if self.kept_teacher is not None and not (self.kept_teacher.is_file()
                                                  and weights_sha256(self.kept_teacher) == digest):
            with atomic_path(self.kept_teacher) as tmp:
                shutil.copyfile(teacher_model, tmp)
        source = self.out / "teacher_cache" if self.config.cache_teacher else teacher_model
        row = record["teacher"] if same_teacher else self.evaluate_model(teacher_model, "teacher")
        return {"teacher": row, "teacher_sha256": digest, "teacher_settings_sha256": settings,
                "teacher_source": str(source)}

    def kept_runs(self, record: dict[str, Any]) -> dict[str, Any]:
        """The record's students made with today's settings and data; the others are trained again."""
        return {name: row for name, row in record.get("students", {}).items()
                if row.get("settings_sha256") == self.settings_sha256(row.get("stage"))}

    def run(self, report=None, record: dict[str, Any] | None = None) -> dict[str, Any]:
        """Everything not done yet; `report(results)` is called after every evaluated model (partial tables).
        `record`: the results of an earlier sitting (module docstring): its students made with today's settings
        are kept as they are; the others are trained again."""
        record = record or {}
        kept = self.kept_runs(record)
        for name in sorted(set(record.get("students", {})) - set(kept)):
            log.warning("the record's %s was made with other settings or data: it is trained again", name)
        pending = [(seed, stage) for seed, stage in self.config.run_order() if f"{stage}_seed{seed}" not in kept]
        # Every kept run is in the results from the start, so a sitting cut short still writes them all back.
        results: dict[str, Any] = {"eval_sets": self.eval_set_names(), "students": kept,
                                   "validation": {name: record.get("validation", {}).get(name, []) for name in kept}}
        if "teacher_settings_sha256" in record and record["teacher_settings_sha256"] == self.settings_sha256(None):
            results.update({key: record[key] for key in TEACHER_KEYS})
            results["teacher_source"] = str(self.out / "teacher_cache")  # the record's is another disk's
        order = {name: i for i, name in enumerate(f"{stage}_seed{seed}" for seed, stage in self.config.run_order())}

        def save() -> None:
            for key in ("students", "validation"):
                results[key] = dict(sorted(results[key].items(), key=lambda item: order.get(item[0], len(order))))
            write_json(self.out / "ablation.json", results)
            if report is not None:
                report(results)

        teacher_ready = False  # trained (or resumed) and cached here, just before the first distilled run needs it
        for seed, stage in pending:
            name = f"{stage}_seed{seed}"
            if stage != "none" and not teacher_ready:
                results.update(self.prepare_teacher(record))
                teacher_ready = True
                save()  # the teacher's digest and row reach the record before the cache and the distilled runs
                if self.config.cache_teacher:
                    self.teacher_cache(final_model(self.out / "teacher", self.config.teacher_steps))
            teacher = Path(results["teacher_source"]) if stage != "none" else None
            model = self.train_student(stage, seed, teacher)
            results["students"][name] = {"stage": stage, "seed": seed, **self.evaluate_model(model, "student"),
                                         "settings_sha256": self.settings_sha256(stage)}
            results["validation"][name] = read_validation_log(self.run_dir(stage, seed))
            save()
        if not pending:
            save()
        return results


# --------------------------------------------------------------------------------------------- table
COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("mAP", "mAP", 3), ("NDS", "NDS", 3), ("AMOTA", "AMOTA", 3), ("minADE (m)", "minADE", 2),
    ("map mIoU", "map_iou", 3), ("occ IoU", "occ_iou", 3), ("plan L2 (m)", "plan_l2", 2),
    ("collision (%)", "collision", 2), ("params (M)", "params_M", 1), ("latency (ms)", "latency_ms", 0),
)


def _mean_std(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return float("nan"), float("nan")
    return float(np.mean(finite)), float(np.std(finite, ddof=1)) if len(finite) > 1 else float("nan")


def _cell(mean: float, std: float | None, digits: int) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f}" if std is None or math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _beyond_spread(gain: float, spread_a: float, spread_b: float) -> tuple[float, bool | None]:
    """The larger seed spread and whether `gain` exceeds it; None when a stage ran one seed (no spread known)."""
    if math.isnan(spread_a) or math.isnan(spread_b):
        return float("nan"), None
    spread = max(spread_a, spread_b)
    return spread, bool(gain > spread)


def render_table(results: dict[str, Any], stages: tuple[str, ...], target_nds_gain: float = 0.03,
                 target_gap_recovered: float = 0.30) -> tuple[str, dict[str, Any]]:
    """Markdown table (students: mean ± sample std over seeds) and the verdict against the targets: S3's NDS gain
    over the supervised student at least `target_nds_gain` and above the seed spread, recovering at least
    `target_gap_recovered` of the teacher-student NDS gap."""
    header = ["model", *(name for name, _, _ in COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    teacher = results.get("teacher", {})  # none before the first distilled run
    lines.append("| teacher | " + " | ".join(_cell(metric_at(teacher, key), None, digits)
                                             for _, key, digits in COLUMNS) + " |")
    stats: dict[str, dict[str, tuple[float, float]]] = {}
    for stage in stages:
        runs = [r for r in results["students"].values() if r["stage"] == stage]
        if not runs:
            continue
        stats[stage] = {key: _mean_std([metric_at(r, key) for r in runs]) for _, key, _ in COLUMNS}
        label = "student, no distillation" if stage == "none" else f"student + {stage}"
        lines.append(f"| {label} ({len(runs)} seed{'s' if len(runs) > 1 else ''}) | " + " | ".join(
            _cell(*stats[stage][key], digits) for _, key, digits in COLUMNS) + " |")
    verdict: dict[str, Any] = {}
    if "none" in stats and "S3" in stats:
        (nds0, sd0), (nds3, sd3) = stats["none"]["NDS"], stats["S3"]["NDS"]
        (l20, sl0), (l23, sl3) = stats["none"]["plan_l2"], stats["S3"]["plan_l2"]
        gap = metric_at(teacher, "NDS") - nds0
        gain = nds3 - nds0
        nds_spread, beyond_spread = _beyond_spread(gain, sd0, sd3)
        plan_spread, plan_met = _beyond_spread(l20 - l23, sl0, sl3)
        recovered = gain / gap if gap > 0 else float("nan")
        verdict = {
            "nds_gain": gain, "nds_seed_spread": nds_spread, "nds_gap": gap, "nds_gap_recovered": recovered,
            "plan_l2_gain": l20 - l23, "plan_l2_seed_spread": plan_spread, "plan_target_met": plan_met,
            "nds_gain_beyond_spread": beyond_spread,
            "nds_gain_target_met": bool(gain >= target_nds_gain),
            "gap_target_met": bool(recovered >= target_gap_recovered),
        }
        verdict["target_met"] = None if beyond_spread is None else bool(
            beyond_spread and verdict["nds_gain_target_met"] and verdict["gap_target_met"])
    return "\n".join(lines) + "\n", verdict


def verdict_text(verdict: dict[str, Any], config: AblationConfig) -> str:
    """The verdict as Markdown lines (computed figures only)."""
    if not verdict:
        return "- verdict: needs both the supervised (none) and the S3 students\n"
    lines = [f"- {k}: {v:.4f}" if isinstance(v, float) else f"- {k}: {v}" for k, v in verdict.items()]
    lines.append(f"- targets: NDS gain >= {config.target_nds_gain} and above the seed spread, >= "
                 f"{config.target_gap_recovered:.0%} of the teacher-student NDS gap recovered")
    return "\n".join(lines) + "\n"


def report_text(results: dict[str, Any], config: AblationConfig) -> tuple[str, dict[str, Any]]:
    """table.md as written after every run: the table, what it was evaluated on, the verdict. A pure function of
    ablation.json and the config, so a copy in docs/ can be checked against the figures it came from."""
    table, verdict = render_table(results, config.stages, config.target_nds_gain, config.target_gap_recovered)
    sets = ", ".join(results["eval_sets"])
    rows = {"teacher": results.get("teacher"), **results["students"]}
    older = [name for name, row in rows.items() if row is not None and row.get("metrics_revision") != METRICS_REVISION]
    note = (f"\n(minADE, occ IoU and collision of {', '.join(older)}: the metric definitions before revision "
            f"{METRICS_REVISION}, README \"Evaluation\"; mAP, NDS, AMOTA, map mIoU and plan L2 do not depend on "
            "them)\n" if older else "")
    return (f"{table}\n(evaluated on: {sets}; students: mean ± sample std over seeds)\n{note}\n"
            + verdict_text(verdict, config)), verdict


# --------------------------------------------------------------------------------------------- command line
def plot_validation(validation: dict[str, list[dict[str, float]]], path: Path) -> Path | None:
    """Every student's validation NDS over steps on one plot (colour = stage, line style = seed)."""
    if not any(validation.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"none": "tab:gray", "S1": "tab:blue", "S2": "tab:orange", "S3": "tab:red"}
    styles = ["-", "--", ":", "-."]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for name, records in sorted(validation.items()):
        if not records:
            continue
        stage, seed = name.rsplit("_seed", 1)
        ax.plot([r["step"] for r in records], [r["NDS"] for r in records], styles[int(seed) % len(styles)],
                color=colours.get(stage, "black"), marker="o", markersize=3,
                label=f"{'supervised' if stage == 'none' else stage}, seed {seed}")
    ax.set_xlabel("training step")
    ax.set_ylabel("validation NDS (fresh world)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="ablation YAML (config/ablation_worlds.yaml, _tiny, _base)")
    parser.add_argument("--dataroot", required=True, help="nuScenes-format dataroot (e.g. from `tinybev synth`)")
    parser.add_argument("--version", default="v1.0-mini", help="dataset version folder")
    parser.add_argument("--out", required=True, help="work folder: teacher/, teacher_cache/, runs/, worlds/, "
                                                     "ablation.json, table.md, verdict.json, figures/")
    parser.add_argument("--table", default=None,
                        help="also write the Markdown table here and the figures behind it beside it "
                             "(docs/ablation_worlds_table.md -> .json, and the teacher's weights in "
                             ".teacher.safetensors)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if present, else cpu)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="ablation config overrides, e.g. student_steps=500 seeds=[0,1,2]")


def read_record(path: Path) -> dict[str, Any] | None:
    """The results an earlier sitting kept beside --table (None when there are none yet)."""
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"ablation record {path} is not valid JSON ({exc}); move it away to start afresh") from exc
    if not isinstance(record, dict) or not isinstance(record.get("students"), dict):
        raise ConfigError(f"ablation record {path} has no 'students' table; move it away to start afresh")
    odd = [name for name, row in record["students"].items() if not isinstance(row, dict) or row.get("stage")
           not in STAGES]
    if odd or not isinstance(record.get("validation", {}), dict):
        what = f"student rows {odd} are not mappings with a stage of {STAGES}" if odd else \
            "'validation' is not a mapping"
        raise ConfigError(f"ablation record {path}: {what} (edited by hand?); move it away to start afresh")
    has_teacher = [key in record for key in TEACHER_KEYS]
    distilled = any(row.get("stage") != "none" for row in record["students"].values())
    if (distilled or any(has_teacher)) and not all(has_teacher):
        raise ConfigError(f"ablation record {path} has distilled students or part of the teacher's {TEACHER_KEYS} "
                          "but not all of the teacher's keys; move it away to start afresh")
    return record


def read_table_record(table: Path) -> dict[str, Any] | None:
    """The record kept beside `--table` (None for a new table). A table path that is not an ablation table (the
    record's own name, a folder, a file with no record beside it, such as a README) is refused before any work,
    rather than overwritten after hours of it."""
    record_path = table.with_suffix(".json")
    if record_path == table or table.is_dir():
        raise ConfigError(f"--table {table}: give a Markdown file's path (its record is written beside it as "
                          f"{record_path.name})")
    record = read_record(record_path)
    if record is None and table.exists():
        raise ConfigError(f"--table {table} exists and has no ablation record beside it ({record_path.name}): it is "
                          "not an ablation table, and the ablation would overwrite it; choose another path")
    return record


def supersede(table: Path) -> Path:
    """Copy the table and its record aside (`<name>.superseded-<UTC time>.md/.json`); returns the record's copy."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for source in (table, table.with_suffix(".json")):
        if source.exists():
            shutil.copy2(source, source.with_name(f"{table.stem}.superseded-{stamp}{source.suffix}"))
    return table.with_name(f"{table.stem}.superseded-{stamp}.json")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    record = read_table_record(Path(args.table)) if args.table else None
    config = load_ablation_config(args.config, tuple(args.overrides))
    check_output_folder(args.out)
    out = Path(args.out)
    kept_teacher = Path(args.table).with_suffix(".teacher.safetensors") if args.table else None
    ablation = Ablation(config, args.dataroot, args.version, out, args.device, kept_teacher)
    with run_lock(out):
        return _run_held(args, config, ablation, record, out)


def _run_held(args: argparse.Namespace, config: AblationConfig, ablation: Ablation, record: dict[str, Any] | None,
              out: Path) -> int:
    """`run`, with the work folder held."""
    if record is not None:
        stale = sorted(set(record["students"]) - set(ablation.kept_runs(record)))
        if stale:  # their rows leave the record as the new runs are written: keep the record as it was
            kept = supersede(Path(args.table))
            log.warning("the record's %s will be trained again (other settings or data); the record as it was is "
                        "kept in %s", ", ".join(stale), kept)

    def report(results: dict[str, Any]) -> None:
        text, verdict = report_text(results, config)
        write_text(out / "table.md", text)
        write_json(out / "verdict.json", verdict)
        plot_validation(results["validation"], out / "figures" / "validation_nds.png")
        if config.cache_teacher and "teacher_source" in results:
            ablation.distillation_figure(Path(results["teacher_source"]), out / "figures" / "distillation_sample.png")
        if args.table:
            write_text(args.table, text)
            write_json(Path(args.table).with_suffix(".json"), results)
        log.info("ablation so far:\n%s", text)

    results = ablation.run(report, record)
    print((out / "table.md").read_text())
    return 0 if results["students"] else 1
