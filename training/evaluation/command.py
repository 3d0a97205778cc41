"""`tinybev eval --checkpoint C --dataroot D --version V --split S`: a student or teacher checkpoint over a split:
every metric (evaluation/suite.py), speed, metrics.json/.md, per-sample figures and a scene GIF."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nuscenes.nuscenes import NuScenes
from tqdm import tqdm

from tinybev_ros.checkpoint import read_checkpoint
from tinybev_ros.nuscenes_dataset import open_nuscenes
from tinybev_ros.paths import check_output_folder
from tinybev_ros.predictions import Predictions
from training.evaluation.figures import render_scene
from training.evaluation.inference import evaluation_predictor, predict_sample, predictor_speed, teacher_stream
from training.evaluation.report import write_report
from training.evaluation.suite import (
    ALL_TASKS,
    DEVKIT_TASKS,
    SampleMetrics,
    evaluate,
    parse_tasks,
    samples_by_scene,
    without_rasters,
)
from training.ground_truth import GroundTruth, load_ground_truth
from training.sample_cache import SAMPLE_CACHE_HELP
from training.splits import check_devkit_split, devkit_split, split_sample_tokens


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="student or teacher checkpoint (.safetensors)")
    parser.add_argument("--dataroot", required=True, help="nuScenes-format dataroot (real or `tinybev synth`)")
    parser.add_argument("--version", default="v1.0-mini", help="dataset version, e.g. v1.0-trainval")
    parser.add_argument("--split", default="val", help="split: val, train, mini_val, ... (val on a mini version = "
                                                       "mini_val)")
    parser.add_argument("--out", default="eval_out", help="output directory: metrics.json, metrics.md, figures/")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--tasks", default=",".join(ALL_TASKS), help="comma-separated subset of " + ",".join(ALL_TASKS))
    parser.add_argument("--figure-scenes", type=int, default=1, help="scenes drawn as figures + GIF (0: none)")
    parser.add_argument("--no-speed", dest="speed", action="store_false", help="skip parameters/FLOPs/latency")
    parser.add_argument("--sample-cache", default="", metavar="DIR",
                        help="teacher checkpoints: " + SAMPLE_CACHE_HELP)


def evaluate_checkpoint(checkpoint: str | Path, nusc: NuScenes, eval_set: str, out: str | Path,
                        tasks: tuple[str, ...] = ALL_TASKS, device: str | None = None, figure_scenes: int = 1,
                        speed: bool = True, sample_cache: str | Path = "") -> dict[str, Any]:
    """`tinybev eval` as a function: a student or teacher checkpoint over a split; report (+ figures) in `out`."""
    tokens = split_sample_tokens(nusc, eval_set)
    if any(task in DEVKIT_TASKS for task in tasks):
        check_devkit_split(nusc, eval_set)
    student = read_checkpoint(checkpoint)[1]["kind"] == "student"
    figure_scene_tokens = list(samples_by_scene(nusc, tokens).values())[: max(figure_scenes, 0)]
    drawn = {token for scene in figure_scene_tokens for token in scene}
    map_cache: dict = {}
    if student:
        predictor = evaluation_predictor(checkpoint, device)
        print(f"tinybev eval: {len(tokens)} samples of {eval_set} on {predictor.device}")
        grid = predictor.config.grid
        times_ms: list[float] = []

        def stream() -> Iterator[tuple[str, Predictions, GroundTruth]]:
            for token in tqdm(tokens, desc="inference"):
                gt = load_ground_truth(nusc, map_cache, token, grid)
                yield token, predict_sample(predictor, nusc, token, gt, times_ms), gt
        scored = stream()
    else:
        grid, teacher = teacher_stream(checkpoint, device, nusc, eval_set, tokens, sample_cache)
        scored = ((token, prediction, load_ground_truth(nusc, map_cache, token, grid))
                  for token, prediction in teacher)
    # One sample at a time: its rasters are scored, then dropped unless a figure shows them.
    samples = SampleMetrics(tasks, grid)
    predictions, ground_truths = {}, {}
    for token, prediction, gt in scored:
        samples.add(prediction, gt)
        predictions[token] = prediction if token in drawn else without_rasters(prediction)
        ground_truths[token] = gt if token in drawn else without_rasters(gt)
    metrics = evaluate(predictions, nusc, eval_set, tasks, ground_truths, grid, sample_metrics=samples)
    if student and speed:
        metrics["speed"] = predictor_speed(predictor, nusc, tokens[0], times_ms)
    json_path, md_path = write_report(metrics, out)
    for scene_tokens in figure_scene_tokens:
        pngs, gif = render_scene(nusc, scene_tokens, predictions, ground_truths, Path(out) / "figures")
        print(f"tinybev eval: {len(pngs)} figures and {gif}")
    print(md_path.read_text())
    print(f"tinybev eval: wrote {json_path} and {md_path}")
    return metrics


def run(args: argparse.Namespace) -> int:
    tasks = parse_tasks(args.tasks)
    check_output_folder(args.out)  # before the split is scored, not after
    read_checkpoint(args.checkpoint)  # a wrong checkpoint is reported before any dataset work
    nusc = open_nuscenes(args.dataroot, args.version)
    evaluate_checkpoint(args.checkpoint, nusc, devkit_split(args.version, args.split), args.out, tasks, args.device,
                        args.figure_scenes, args.speed, args.sample_cache)
    return 0
