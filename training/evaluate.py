"""Evaluation of every task on a nuScenes-format split, the way the field measures it; `tinybev eval`.

Python API (used by training's validation and the ROS end-to-end test):
    metrics = evaluate(predictions_by_sample, nusc, eval_set="mini_val")
    write_report(metrics, out_dir)            # metrics.json + metrics.md, atomically
Detection and tracking run nuscenes-devkit's own evaluators over the whole split (every keyframe of the split
needs predictions); motion, map, occupancy and planning use our metrics over the samples given, against the
ground truth of `training.ground_truth`. When the predictions carry no track ids, the runtime tracker is run
over each scene in time order with the ground-truth ego poses (as the ROS node does with /tf).

`tinybev eval --checkpoint C --dataroot D --version V --split S` runs the `Predictor` over the split, then all
of the above plus speed, and writes metrics, per-sample figures and a scene GIF.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from nuscenes.map_expansion.map_api import NuScenesMap
from nuscenes.nuscenes import NuScenes
from tqdm import tqdm

from tinybev_ros.atomic_file import write_text
from tinybev_ros.checkpoint import load_checkpoint, read_checkpoint
from tinybev_ros.geometry import CAMERA_NAMES, BevGrid
from tinybev_ros.inference import Predictor
from tinybev_ros.model.config import ModelConfig
from tinybev_ros.model.preprocess import decode_reduction, scale_intrinsics
from tinybev_ros.nuscenes_dataset import open_nuscenes, sample_images, sample_rig
from tinybev_ros.predictions import PLAN_STEPS, Predictions
from tinybev_ros.score_thresholds import SCORE_THRESHOLDS
from tinybev_ros.taxonomy import DETECTION_CLASSES, MAP_CLASSES
from tinybev_ros.tracking import Tracker, TrackerConfig
from tinybev_ros.visualization import render_sample, write_gif, write_png
from training.ground_truth import GroundTruth, load_ground_truth, sample_ego_status
from training.metrics.motion import VEHICLE_CLASSES, MotionAccumulator
from training.metrics.oracle import ground_truth_as_predictions
from training.metrics.planning import PlanningAccumulator, obstacle_corners
from training.metrics.segmentation import MapAccumulator, OccupancyAccumulator
from training.splits import devkit_split, split_sample_tokens

ALL_TASKS: tuple[str, ...] = ("detection", "tracking", "motion", "map", "occupancy", "planning")
DEVKIT_TASKS = ("detection", "tracking")
_VEHICLE_LABELS = np.array([DETECTION_CLASSES.index(name) for name in VEHICLE_CLASSES])
_PEDESTRIAN_LABEL = DETECTION_CLASSES.index("pedestrian")


def load_ground_truths(nusc: NuScenes, sample_tokens: Iterable[str], grid: BevGrid | None = None,
                       map_cache: dict[str, NuScenesMap] | None = None,
                       progress: bool = True) -> dict[str, GroundTruth]:
    """Ground truth of each sample (maps loaded once)."""
    grid = grid or BevGrid()
    map_cache = {} if map_cache is None else map_cache
    tokens = list(sample_tokens)
    return {token: load_ground_truth(nusc, map_cache, token, grid)
            for token in tqdm(tokens, desc="ground truth", disable=not progress, leave=False)}


def samples_by_scene(nusc: NuScenes, sample_tokens: Iterable[str]) -> dict[str, list[str]]:
    """scene token -> its given samples in time order."""
    scenes: dict[str, list[str]] = defaultdict(list)
    for token in sample_tokens:
        scenes[nusc.get("sample", token)["scene_token"]].append(token)
    return {scene: sorted(tokens, key=lambda t: nusc.get("sample", t)["timestamp"]) for scene, tokens in scenes.items()}


def track_scenes(predictions_by_sample: Mapping[str, Predictions], nusc: NuScenes,
                 ground_truths: Mapping[str, GroundTruth],
                 config: TrackerConfig | None = None) -> dict[str, Predictions]:
    """Predictions with track ids from the runtime tracker, one fresh tracker per scene, ego poses from GT."""
    out = {}
    for tokens in samples_by_scene(nusc, predictions_by_sample).values():
        tracker = Tracker(config or TrackerConfig())
        for token in tokens:
            stamped = replace(predictions_by_sample[token], stamp_ns=int(ground_truths[token].timestamp_us) * 1000)
            out[token] = tracker.update(stamped, ground_truths[token].ego_to_global)
    return out


def planning_obstacles(gt: GroundTruth, steps: int = PLAN_STEPS) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per plan waypoint, the footprints of GT vehicles and of GT pedestrians at that time.

    Built from this sample's annotated agents and their futures, so an agent that first appears after the
    keyframe is not an obstacle (a known under-count against the papers' future occupancy rasters).
    """
    futures, mask = gt.futures[:, :steps], gt.future_mask[:, :steps]
    vehicles = obstacle_corners(futures, mask, gt.sizes_wlh, gt.yaws, np.isin(gt.labels, _VEHICLE_LABELS))
    pedestrians = obstacle_corners(futures, mask, gt.sizes_wlh, gt.yaws, gt.labels == _PEDESTRIAN_LABEL)
    return vehicles, pedestrians


def evaluate(predictions_by_sample: Mapping[str, Predictions], nusc: NuScenes, eval_set: str | None = None,
             tasks: Iterable[str] = ALL_TASKS, ground_truths: Mapping[str, GroundTruth] | None = None,
             grid: BevGrid | None = None, motion_score_threshold: float = SCORE_THRESHOLDS.publish,
             attributes_by_sample: Mapping[str, list[str]] | None = None, devkit_output_dir: str | Path | None = None,
             progress: bool = True) -> dict[str, Any]:
    """Metrics of every requested task (see the module docstring); a dict ready for `write_report`.

    `eval_set` (a devkit split name such as "val" or "mini_val") is required for detection and tracking.
    `ground_truths` may be passed to avoid reloading them (e.g. in every validation round); they must be
    rasterised on the predictions' grid.
    """
    tasks = tuple(tasks)
    unknown = sorted(set(tasks) - set(ALL_TASKS))
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; known: {list(ALL_TASKS)}")
    if eval_set is None and any(task in DEVKIT_TASKS for task in tasks):
        raise ValueError("detection and tracking run the nuScenes devkit over a whole split: pass eval_set")
    tokens = list(predictions_by_sample)
    if not tokens:
        raise ValueError("no predictions to evaluate")
    grid = grid or predictions_by_sample[tokens[0]].grid  # rasters are compared on the predictions' own grid
    if ground_truths is None:
        ground_truths = load_ground_truths(nusc, tokens, grid, progress=progress)
    missing = [token for token in tokens if token not in ground_truths]
    if missing:
        raise ValueError(f"no ground truth for {len(missing)} sample(s), first {missing[0]}")

    for token in tokens if {"map", "occupancy"} & set(tasks) else ():
        pred, gt = predictions_by_sample[token], ground_truths[token]
        if pred.map_probs.shape[1:] != gt.map_masks.shape[1:] or pred.occupancy.shape[1:] != gt.occupancy.shape[1:]:
            raise ValueError(f"sample {token}: prediction rasters {pred.map_probs.shape[1:]} do not match the ground "
                             f"truth's {gt.map_masks.shape[1:]}; load the ground truth on the predictions' grid")

    metrics: dict[str, Any] = {"samples": len(tokens), "eval_set": eval_set, "version": nusc.version}
    if "detection" in tasks:
        from training.metrics.detection import evaluate_detection

        metrics["detection"] = evaluate_detection(nusc, predictions_by_sample, eval_set, _sub(devkit_output_dir, "det"),
                                                  attributes_by_sample)
    if "tracking" in tasks:
        from training.metrics.tracking import evaluate_tracking

        tracked = predictions_by_sample
        if all((p.track_ids < 0).all() for p in predictions_by_sample.values()):
            tracked = track_scenes(predictions_by_sample, nusc, ground_truths)
        metrics["tracking"] = evaluate_tracking(nusc, tracked, eval_set, _sub(devkit_output_dir, "track"))

    motion = MotionAccumulator(score_threshold=motion_score_threshold)
    map_acc = MapAccumulator()
    occupancy = OccupancyAccumulator(grid)
    planning = PlanningAccumulator()
    for token in tqdm(tokens, desc="metrics", disable=not progress, leave=False):
        pred, gt = predictions_by_sample[token], ground_truths[token]
        if "motion" in tasks:
            motion.add(pred, gt.centers, gt.labels, gt.futures, gt.future_mask, gt_ignore=~gt.evaluable)
        if "map" in tasks:
            map_acc.add(pred.map_probs, gt.map_masks, gt.map_valid)
        if "occupancy" in tasks:
            occupancy.add(pred.occupancy, gt.occupancy, gt.occupancy_mask)
        if "planning" in tasks:
            planning.add(pred.ego_plan, gt.ego_future, gt.ego_future_mask, *planning_obstacles(gt))
    if "motion" in tasks:
        metrics["motion"] = motion.summary()
    if "map" in tasks:
        metrics["map"] = map_acc.result()
        if not all(ground_truths[token].map_valid.all() for token in tokens):
            metrics["map_note"] = (f"n/a: no map expansion in {Path(nusc.dataroot) / 'maps' / 'expansion'} (a separate "
                                   "nuScenes download); drivable_area is scored against the semantic prior")
    if "occupancy" in tasks:
        metrics["occupancy"] = occupancy.result()
    if "planning" in tasks:
        metrics["planning"] = planning.result()
    return metrics


def for_evaluation(config: ModelConfig) -> ModelConfig:
    """`config` decoding boxes down to the evaluation threshold (tinybev_ros/score_thresholds.py; the peak count
    `max_detections` still bounds them)."""
    threshold = min(config.decode.score_threshold, SCORE_THRESHOLDS.evaluate)
    return replace(config, decode=replace(config.decode, score_threshold=threshold))


def evaluation_predictor(checkpoint: str | Path, device: str | None = None) -> Predictor:
    """A `Predictor` for a student checkpoint that decodes as the evaluation protocol needs (`for_evaluation`)."""
    model, config = load_checkpoint(checkpoint)
    return Predictor(model, for_evaluation(config), device)


def _sub(directory: str | Path | None, name: str) -> Path | None:
    return None if directory is None else Path(directory) / name


# ------------------------------------------------------------------ report

def _plain(value: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN/inf to None (undefined metric)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, int | np.integer):
        return str(int(value))
    return f"{float(value):.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def to_markdown(metrics: Mapping[str, Any]) -> str:
    """The metrics as Markdown tables, one section per task, definitions named."""
    lines = [f"# Evaluation: {metrics.get('version')} / {metrics.get('eval_set')} ({metrics.get('samples')} samples)"]
    if "detection" in metrics:
        d = metrics["detection"]
        lines += ["", "## Detection (nuscenes-devkit DetectionEval, detection_cvpr_2019)", ""]
        names = ["mAP", "NDS", "mATE", "mASE", "mAOE", "mAVE", "mAAE"]
        lines += _table(names, [[_fmt(d[n]) for n in names]])
        lines += ["", *_table(["class", *DETECTION_CLASSES], [["AP", *(_fmt(d["per_class_AP"].get(c))
                                                                      for c in DETECTION_CLASSES)]])]
        absent = [c for c in DETECTION_CLASSES if c not in d.get("classes_with_ground_truth", DETECTION_CLASSES)]
        if "note" in d:
            lines += ["", f"{d['note'][0].upper()}{d['note'][1:]}: the devkit's rules score that mAP 0 and NDS 0."]
        elif absent:
            lines += ["", f"No ground truth in this split for: {', '.join(absent)} (the devkit scores them AP 0 and "
                          "error 1, which caps mAP and NDS)."]
    if "tracking" in metrics:
        t = metrics["tracking"]
        lines += ["", "## Tracking (nuscenes-devkit TrackingEval, tracking_nips_2019)", ""]
        columns = [("AMOTA", "AMOTA"), ("AMOTP (m)", "AMOTP"), ("recall", "recall"), ("MOTAR", "motar"),
                   ("IDS", "IDS"), ("frag", "frag")]
        counts = ("IDS", "frag")
        lines += _table([label for label, _ in columns],
                        [[_fmt(int(round(t[key])) if key in counts and t[key] is not None and math.isfinite(t[key])
                               else t[key]) for _, key in columns]])
    if "motion" in metrics:
        lines += ["", "## Motion forecasting (UniAD protocol: matched agents, min over modes, miss at 2 m; EPA)", ""]
        lines += _table(["agents", "minADE (m)", "minFDE (m)", "MR", "EPA", "matched / GT"],
                        [[group, _fmt(m["minADE"]), _fmt(m["minFDE"]), _fmt(m["miss_rate"]), _fmt(m["EPA"]),
                          f"{m['matched']} / {m['ground_truth']}"] for group, m in metrics["motion"].items()])
    if "map" in metrics:
        lines += ["", "## Map segmentation (IoU over the split)", ""]
        names = [*MAP_CLASSES, "mIoU"]
        lines += _table(names, [[_fmt(metrics["map"].get(n)) for n in names]])
        if "map_note" in metrics:
            lines += ["", metrics["map_note"]]
    if "occupancy" in metrics:
        o = metrics["occupancy"]
        lines += ["", "## Occupancy (IoU; near = 30 m x 30 m, far = 50 m x 50 m)", ""]
        lines += _table(["", "current", "future"], [[region, _fmt(o[f"{region}_current"]), _fmt(o[f"{region}_future"])]
                                                   for region in ("near", "far")])
    if "planning" in metrics:
        lines += ["", "## Planning (L2 in m, collision in %; UniAD = at the time, ST-P3 = averaged up to the time)",
                  ""]
        header = ["definition", "L2 1s", "L2 2s", "L2 3s", "L2 avg", "Col 1s", "Col 2s", "Col 3s", "Col avg"]
        rows = []
        for name, label in (("uniad", "UniAD"), ("stp3", "ST-P3")):
            p = metrics["planning"][name]
            rows.append([label, *(_fmt(p[f"l2_{h}"]) for h in ("1s", "2s", "3s", "avg")),
                         *(_fmt(p[f"collision_{h}"], 2) for h in ("1s", "2s", "3s", "avg"))])
        lines += _table(header, rows)
    if "speed" in metrics:
        s = metrics["speed"]
        lines += ["", "## Speed and size", ""]
        lines += _table(["parameters (M)", "GFLOPs", "latency median (ms)", "latency p90 (ms)", "device"],
                        [[_fmt(s["parameters_M"], 2), _fmt(s["gflops"], 1), _fmt(s["latency"]["median_ms"], 1),
                          _fmt(s["latency"]["p90_ms"], 1), str(s["latency"]["device"])]])
    return "\n".join(lines) + "\n"


def write_json(path: Path, data: Any) -> None:
    """Atomic JSON with NaN/inf as null (strict JSON: undefined metrics read back as None)."""
    write_text(path, json.dumps(_plain(data), indent=2, allow_nan=False) + "\n")


def write_report(metrics: Mapping[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """metrics.json (NaN -> null) and metrics.md in `out_dir`, each written atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "metrics.json", out_dir / "metrics.md"
    write_json(json_path, metrics)
    write_text(md_path, to_markdown(metrics))
    return json_path, md_path


def metric_at(metrics: dict, *keys: str) -> float:
    """A nested figure of `evaluate` output, NaN where the task or value is absent."""
    value: Any = metrics
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return float("nan")
        value = value[key]
    return float(value) if value is not None else float("nan")


def summary_row(metrics: dict[str, Any]) -> dict[str, float]:
    """The table's figures from `training.evaluate.evaluate` output (UniAD definitions for planning; vehicles
    for minADE; occupancy IoU of the near region, current frame)."""
    return {
        "mAP": metric_at(metrics, "detection", "mAP"),
        "NDS": metric_at(metrics, "detection", "NDS"),
        "AMOTA": metric_at(metrics, "tracking", "AMOTA"),
        "minADE": metric_at(metrics, "motion", "vehicle", "minADE"),
        "map_iou": metric_at(metrics, "map", "mIoU"),
        "occ_iou": metric_at(metrics, "occupancy", "near_current"),
        "plan_l2": metric_at(metrics, "planning", "uniad", "l2_avg"),
        "collision": metric_at(metrics, "planning", "uniad", "collision_avg"),
    }


# ------------------------------------------------------------------ pictures

def model_frame(nusc: NuScenes, sample_token: str, config: ModelConfig) -> tuple[list, list, list]:
    """(images, K, camera -> ego) of a keyframe as the node hands them to the Predictor: JPEGs decoded at the
    scale `decode_reduction` picks (the node's default), K scaled to match."""
    rig = sample_rig(nusc, sample_token)
    cameras = [rig.cameras[name] for name in CAMERA_NAMES]
    reduction = decode_reduction(cameras[0].width, config)
    images = sample_images(nusc, sample_token, reduction)
    return ([images[name] for name in CAMERA_NAMES],
            [scale_intrinsics(c.intrinsic, 1 / reduction, 1 / reduction) for c in cameras],
            [c.sensor_to_ego for c in cameras])


def render_scene(nusc: NuScenes, sample_tokens: list[str], predictions_by_sample: Mapping[str, Predictions],
                 ground_truths: Mapping[str, GroundTruth] | None, out_dir: str | Path, fps: float = 2.0,
                 png_every: int = 1, progress: bool = True) -> tuple[list[Path], Path]:
    """A figure per sample (PNG for every `png_every`-th) and the scene as a GIF; returns their paths."""
    out_dir = Path(out_dir)
    frames, pngs = [], []
    for index, token in enumerate(tqdm(sample_tokens, desc="figures", disable=not progress, leave=False)):
        pred = predictions_by_sample[token]
        reference = (ground_truth_as_predictions(ground_truths[token], grid=pred.grid, visible_only=False)
                     if ground_truths else None)
        scene = nusc.get("scene", nusc.get("sample", token)["scene_token"])["name"]
        title = f"{scene}  sample {index + 1}/{len(sample_tokens)}  {token[:8]}   boxes: prediction filled, GT outlined"
        figure = render_sample(pred, sample_rig(nusc, token), sample_images(nusc, token), reference, title)
        frames.append(figure)
        if index % png_every == 0:
            pngs.append(write_png(figure, out_dir / f"{scene}_{index:03d}_{token[:8]}.png"))
    first_scene = nusc.get("scene", nusc.get("sample", sample_tokens[0])["scene_token"])["name"]
    gif = write_gif(frames, out_dir / f"{first_scene}.gif", fps=fps)
    return pngs, gif


# ------------------------------------------------------------------ command line

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


def predict_split(predictor: Any, nusc: NuScenes, sample_tokens: list[str],
                  ground_truths: Mapping[str, GroundTruth], progress: bool = True,
                  times_ms: list[float] | None = None) -> dict[str, Predictions]:
    """Run a `tinybev_ros.inference.Predictor` on every sample, planning with the ground-truth command and the
    ego status from the dataset's ego poses.

    When `times_ms` is given, the wall-clock milliseconds of each `predict` call (preprocess, network, decode;
    image loading excluded) are appended to it: the latency reported is that of real frames.
    """
    out = {}
    for token in tqdm(sample_tokens, desc="inference", disable=not progress):
        images, intrinsics, cam_to_ego = model_frame(nusc, token, predictor.config)
        status = sample_ego_status(nusc, nusc.get("sample", token))  # what the node derives from /tf
        start = time.perf_counter()
        out[token] = predictor.predict(images, intrinsics, cam_to_ego, ground_truths[token].command,
                                       int(ground_truths[token].timestamp_us) * 1000, status)
        if times_ms is not None:
            times_ms.append((time.perf_counter() - start) * 1000.0)
    return out


def predictor_speed(predictor: Any, nusc: NuScenes, sample_token: str, times_ms: list[float]) -> dict[str, Any]:
    """Parameters, FLOPs of one frame (one extra call) and the latency statistics of the evaluation's frames
    (the first call, which builds the splat index and warms up, is left out when there are others)."""
    from training.metrics.speed import count_flops, count_parameters

    frame = (*model_frame(nusc, sample_token, predictor.config), 2, 0)
    timed = np.array(times_ms[1:] if len(times_ms) > 1 else times_ms)
    return {
        "parameters_M": count_parameters(predictor.model) / 1e6,
        "gflops": count_flops(lambda: predictor.predict(*frame)) / 1e9,
        "latency": {"median_ms": float(np.median(timed)), "p90_ms": float(np.percentile(timed, 90)),
                    "mean_ms": float(timed.mean()), "frames": int(timed.size), "device": str(predictor.device)},
    }


def _teacher_predictions(checkpoint: str | Path, device: str | None, nusc: NuScenes, eval_set: str,
                         tokens: list[str]) -> tuple[dict[str, Predictions], dict[str, GroundTruth], BevGrid]:
    """A teacher checkpoint needs LiDAR: its predictions come from the sample cache (training/teachers/predict.py)."""
    from training.teachers import load_teacher_checkpoint
    from training.teachers.predict import predict_split_teacher, teacher_dataset

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    net, config = load_teacher_checkpoint(checkpoint, device)
    print(f"tinybev eval: teacher {config.name}, {len(tokens)} samples of {eval_set} on {device}")
    dataset = teacher_dataset(nusc, eval_set, config)
    missing = sorted(set(tokens) - set(dataset.tokens))
    if missing:
        raise SystemExit(f"tinybev eval: {len(missing)} samples of {eval_set} are not in the teacher's data")
    predictions = predict_split_teacher(net, for_evaluation(config.camera), dataset, device)
    grid = config.camera.grid
    return predictions, load_ground_truths(nusc, tokens, grid), grid


def evaluate_checkpoint(checkpoint: str | Path, nusc: NuScenes, eval_set: str, out: str | Path,
                        tasks: tuple[str, ...] = ALL_TASKS, device: str | None = None, figure_scenes: int = 1,
                        speed: bool = True) -> dict[str, Any]:
    """`tinybev eval` as a function: a student or teacher checkpoint over a split; report (+ figures) in `out`."""
    tokens = split_sample_tokens(nusc, eval_set)
    if not tokens:
        raise SystemExit(f"tinybev eval: split {eval_set!r} has no scenes in {nusc.dataroot} ({nusc.version})")
    student = read_checkpoint(checkpoint)[1]["kind"] == "student"
    if not student:
        predictions, ground_truths, grid = _teacher_predictions(checkpoint, device, nusc, eval_set, tokens)
    else:
        predictor = evaluation_predictor(checkpoint, device)
        print(f"tinybev eval: {len(tokens)} samples of {eval_set} on {predictor.device}")
        grid = predictor.config.grid
        ground_truths = load_ground_truths(nusc, tokens, grid)
        times_ms: list[float] = []
        predictions = predict_split(predictor, nusc, tokens, ground_truths, times_ms=times_ms)
    metrics = evaluate(predictions, nusc, eval_set, tasks, ground_truths, grid)
    if speed and student:
        metrics["speed"] = predictor_speed(predictor, nusc, tokens[0], times_ms)
    json_path, md_path = write_report(metrics, out)
    scenes = samples_by_scene(nusc, tokens)
    for scene_tokens in list(scenes.values())[: max(figure_scenes, 0)]:
        pngs, gif = render_scene(nusc, scene_tokens, predictions, ground_truths, Path(out) / "figures")
        print(f"tinybev eval: {len(pngs)} figures and {gif}")
    print(md_path.read_text())
    print(f"tinybev eval: wrote {json_path} and {md_path}")
    return metrics


def parse_tasks(text: str) -> tuple[str, ...]:
    tasks = tuple(task.strip() for task in text.split(",") if task.strip())
    unknown = sorted(set(tasks) - set(ALL_TASKS))
    if unknown or not tasks:
        raise SystemExit(f"tinybev eval: --tasks {text!r}: unknown {unknown}; choose from {','.join(ALL_TASKS)}")
    return tasks


def run(args: argparse.Namespace) -> int:
    tasks = parse_tasks(args.tasks)
    read_checkpoint(args.checkpoint)  # a wrong checkpoint is reported before any dataset work
    nusc = open_nuscenes(args.dataroot, args.version)
    evaluate_checkpoint(args.checkpoint, nusc, devkit_split(args.version, args.split), args.out, tasks, args.device,
                        args.figure_scenes, args.speed)
    return 0
