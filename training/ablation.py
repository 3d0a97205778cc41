"""`tinybev ablate`: does distillation work? Teacher once, then the student without and with S1 / S2 / S3.

Steps (each one skipped when its result is already in the output folder, so an interrupted ablation resumes):
1. train the teacher with the supervised trainer (`teacher_steps`);
2. cache its features and outputs for the train and val splits (`CachedTeacher`), so the student runs do not
   pay for the teacher or for LiDAR loading;
3. train the student for every stage x seed with `DistillTrainer` (stage `none` = ground truth only, same loop);
4. evaluate the teacher and every student with the evaluation suite (devkit detection/tracking, motion, map,
   occupancy, planning) as saved (the trainer re-estimates BatchNorm statistics before every checkpoint), and
   time the forward pass;
5. write one table (mean +- std over seeds) with the fraction of the teacher-student NDS gap that S3 recovers.

Everything that sets the cost (steps, seeds, stages, models, data) is in the ablation YAML and the YAML files it
names, so the same command runs at `tiny` scale on a CPU and at `base` scale on a GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tinybev_ros.atomic_file import write_text
from tinybev_ros.config import load_yaml
from tinybev_ros.nuscenes_dataset import open_nuscenes
from training.checkpointing import MODEL_FILE
from training.config import load_train_config
from training.data import cache_root, collate, move_batch
from training.distill import DistillTrainer
from training.distillation.config import STAGES, load_distill_config
from training.evaluate import (
    evaluate,
    evaluation_predictor,
    for_evaluation,
    load_ground_truths,
    metric_at,
    model_frame,
    predict_split,
    summary_row,
    write_json,
)
from training.metrics.speed import measure_latency
from training.splits import devkit_split, split_sample_tokens
from training.teachers import load_teacher_checkpoint
from training.teachers.caching import cache_splits
from training.teachers.predict import predict_split_teacher, teacher_dataset
from training.train import Trainer

log = logging.getLogger(__name__)


@dataclass
class AblationConfig:
    distill_config: str = "distill_tiny.yaml"  # names the training YAML (student, teacher, data, optimiser)
    teacher_steps: int = 400
    student_steps: int = 150
    seeds: tuple[int, ...] = (0, 1)
    stages: tuple[str, ...] = ("none", "S1", "S2", "S3")
    cache_teacher: bool = True  # False: the teacher runs live in every distillation step
    eval_split: str = "val"
    latency_repeats: int = 5
    source: str = ""

    def __post_init__(self) -> None:
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown or not self.seeds:
            raise ValueError(f"ablation: stages {unknown} unknown (known {STAGES}) or no seeds")

    def path(self, name: str) -> Path:
        path = Path(name)
        return path if path.is_absolute() or not self.source else Path(self.source).parent / path


def load_ablation_config(path: str | Path) -> AblationConfig:
    config = load_yaml(AblationConfig, path)
    config.source = str(Path(path).resolve())
    return config


def final_model(run_dir: Path, steps: int) -> Path:
    return run_dir / "checkpoints" / f"step_{steps:08d}" / MODEL_FILE


# --------------------------------------------------------------------------------------------- steps
class Ablation:
    def __init__(self, config: AblationConfig, dataroot: str | Path, version: str, out: str | Path,
                 device: str | None = None) -> None:
        self.config = config
        self.dataroot, self.version, self.out = str(dataroot), version, Path(out)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        distill_path = config.path(config.distill_config)
        self.distill_run = load_distill_config(distill_path)
        self.train_config = load_train_config(self.distill_run.train_config_path())
        self.nusc = open_nuscenes(self.dataroot, version)

    def train_teacher(self) -> Path:
        run_dir = self.out / "teacher"
        model = final_model(run_dir, self.config.teacher_steps)
        if model.is_file():
            return model
        config = dataclasses.replace(self.train_config, steps=self.config.teacher_steps)
        trainer = Trainer(config, "teacher", self.dataroot, self.version, run_dir, device=self.device, nusc=self.nusc)
        trainer.resume()
        trainer.fit()
        return model

    def teacher_cache(self, teacher_model: Path) -> Path:
        """Cache the teacher on both splits (un-augmented inputs; augmented student batches read it moved)."""
        root = self.out / "teacher_cache"
        cache_splits(teacher_model, self.nusc, (self.train_config.train_split, self.train_config.val_split), root,
                     self.device, self.train_config.data.batch_size, cache_root(self.train_config.data,
                                                                                 self.dataroot))
        return root

    def train_student(self, stage: str, seed: int, teacher: Path | None) -> Path:
        run_dir = self.out / "runs" / f"{stage}_seed{seed}"
        model = final_model(run_dir, self.config.student_steps)
        if model.is_file():
            return model
        config = dataclasses.replace(self.train_config, steps=self.config.student_steps, seed=seed)
        distill = dataclasses.replace(self.distill_run.distill, stage=stage)
        trainer = DistillTrainer(config, distill, teacher if stage != "none" else None, self.dataroot, self.version,
                                 run_dir, device=self.device, nusc=self.nusc)
        trainer.resume()
        trainer.fit()
        return model

    def evaluate_student(self, model: Path) -> dict[str, Any]:
        cached = model.parent / "ablation_metrics.json"
        if cached.is_file():
            return json.loads(cached.read_text())
        predictor = evaluation_predictor(model, self.device)
        eval_set = devkit_split(self.version, self.config.eval_split)
        tokens = split_sample_tokens(self.nusc, eval_set)
        truths = load_ground_truths(self.nusc, tokens, predictor.config.grid, progress=False)
        predictions = predict_split(predictor, self.nusc, tokens, truths, progress=False)
        metrics = evaluate(predictions, self.nusc, eval_set, grid=predictor.config.grid, ground_truths=truths,
                           progress=False, devkit_output_dir=model.parent / "devkit")
        row = summary_row(metrics)
        row["params_M"] = sum(p.numel() for p in predictor.model.parameters()) / 1e6
        if self.config.latency_repeats > 0:
            frame = (*model_frame(self.nusc, tokens[0], predictor.config), 2, 0)
            row["latency_ms"] = measure_latency(lambda: predictor.predict(*frame), predictor.device,
                                                repeats=self.config.latency_repeats)["median_ms"]
        write_json(cached, row)
        return row

    def evaluate_teacher(self, model: Path) -> dict[str, Any]:
        """Teacher predictions through the same decoding and metrics (it needs LiDAR, so not the Predictor)."""
        cached = model.parent / "ablation_metrics.json"
        if cached.is_file():
            return json.loads(cached.read_text())
        net, config = load_teacher_checkpoint(model, self.device)
        camera = config.camera
        eval_set = devkit_split(self.version, self.config.eval_split)
        tokens = split_sample_tokens(self.nusc, eval_set)
        dataset = teacher_dataset(self.nusc, self.config.eval_split, config, cache_root(self.train_config.data,
                                                                                         self.dataroot))
        truths = load_ground_truths(self.nusc, tokens, camera.grid, progress=False)
        predictions = predict_split_teacher(net, for_evaluation(camera), dataset, self.device, progress=False)
        missing = sorted(set(tokens) - set(predictions))
        if missing:
            raise ValueError(f"teacher evaluation: {len(missing)} samples of {eval_set} not predicted")
        metrics = evaluate(predictions, self.nusc, eval_set, grid=camera.grid, ground_truths=truths, progress=False,
                           devkit_output_dir=model.parent / "devkit")
        row = summary_row(metrics)
        row["params_M"] = sum(p.numel() for p in net.parameters()) / 1e6
        if self.config.latency_repeats > 0:
            one = move_batch(collate([dataset[0]]), torch.device(self.device))
            with torch.no_grad():
                row["latency_ms"] = measure_latency(lambda: net(one), self.device,
                                                    repeats=self.config.latency_repeats)["median_ms"]
        write_json(cached, row)
        return row

    def run(self) -> dict[str, Any]:
        teacher_model = self.train_teacher()
        teacher_source = self.teacher_cache(teacher_model) if self.config.cache_teacher else teacher_model
        results: dict[str, Any] = {"teacher": self.evaluate_teacher(teacher_model), "students": {}}
        for stage in self.config.stages:
            for seed in self.config.seeds:
                model = self.train_student(stage, seed, teacher_source)
                results["students"][f"{stage}_seed{seed}"] = {"stage": stage, "seed": seed,
                                                              **self.evaluate_student(model)}
        write_json(self.out / "ablation.json", results)
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


def render_table(results: dict[str, Any], stages: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    """Markdown table (students: mean ± sample std over seeds) and the verdict figures of the issue's target."""
    header = ["model", *(name for name, _, _ in COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    teacher = results["teacher"]
    lines.append("| teacher (LiDAR+camera) | " + " | ".join(_cell(metric_at(teacher, key), None, digits)
                                                           for _, key, digits in COLUMNS) + " |")
    stats: dict[str, dict[str, tuple[float, float]]] = {}
    for stage in stages:
        runs = [r for r in results["students"].values() if r["stage"] == stage]
        stats[stage] = {key: _mean_std([metric_at(r, key) for r in runs]) for _, key, _ in COLUMNS}
        label = "student, no distillation" if stage == "none" else f"student + {stage}"
        lines.append(f"| {label} ({len(runs)} seeds) | " + " | ".join(
            _cell(*stats[stage][key], digits) for _, key, digits in COLUMNS) + " |")
    verdict: dict[str, Any] = {}
    if "none" in stats and "S3" in stats:
        (nds0, sd0), (nds3, sd3) = stats["none"]["NDS"], stats["S3"]["NDS"]
        (l20, sl0), (l23, sl3) = stats["none"]["plan_l2"], stats["S3"]["plan_l2"]
        gap = metric_at(teacher, "NDS") - nds0
        nds_spread, nds_met = _beyond_spread(nds3 - nds0, sd0, sd3)
        plan_spread, plan_met = _beyond_spread(l20 - l23, sl0, sl3)
        verdict = {
            "nds_gain": nds3 - nds0, "nds_seed_spread": nds_spread,
            "plan_l2_gain": l20 - l23, "plan_l2_seed_spread": plan_spread,
            "nds_gap_recovered": (nds3 - nds0) / gap if gap > 0 else float("nan"),
            "nds_target_met": nds_met, "plan_target_met": plan_met,
        }
        verdict["half_gap_met"] = bool(verdict["nds_gap_recovered"] >= 0.5)
    return "\n".join(lines) + "\n", verdict


# --------------------------------------------------------------------------------------------- command line
def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="ablation YAML (config/ablation_tiny.yaml, _base)")
    parser.add_argument("--dataroot", required=True, help="nuScenes-format dataroot (e.g. from `tinybev synth`)")
    parser.add_argument("--version", default="v1.0-mini", help="dataset version folder")
    parser.add_argument("--out", required=True, help="work folder: teacher/, teacher_cache/, runs/, ablation.json")
    parser.add_argument("--table", default=None, help="also write the Markdown table here (e.g. docs/ablation.md)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if present, else cpu)")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = load_ablation_config(args.config)
    results = Ablation(config, args.dataroot, args.version, args.out, args.device).run()
    table, verdict = render_table(results, config.stages)
    text = table + "\n" + "\n".join(f"- {k}: {v:.4f}" if isinstance(v, float) else f"- {k}: {v}"
                                    for k, v in verdict.items()) + "\n"
    print(text)
    write_json(Path(args.out) / "verdict.json", verdict)
    if args.table:
        write_text(args.table, text)
    return 0
