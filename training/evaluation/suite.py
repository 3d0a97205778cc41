"""Evaluation of every task on a nuScenes-format split, the way the field measures it.

    metrics = evaluate(predictions_by_sample, nusc, eval_set="mini_val")
Detection and tracking run nuscenes-devkit's own evaluators over the whole split (every keyframe of the split
needs predictions), and detection adds our heading and velocity tables (axis and direction,
training/metrics/heading.py; how much of the motion a model sees, training/metrics/velocity.py);
motion, map, occupancy and planning use our metrics (training/metrics/) over the samples given, against the
ground truth of `training.ground_truth`. When the predictions carry no track ids, the runtime tracker is run over
each scene in time order with the ground-truth ego poses (as the ROS node does with /tf).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from nuscenes.map_expansion.map_api import NuScenesMap
from nuscenes.nuscenes import NuScenes
from tqdm import tqdm

from tinybev_ros.geometry import BevGrid
from tinybev_ros.predictions import PLAN_STEPS, Predictions
from tinybev_ros.score_thresholds import SCORE_THRESHOLDS
from tinybev_ros.taxonomy import DETECTION_CLASSES
from tinybev_ros.tracking import Tracker, TrackerConfig
from training.ground_truth import GroundTruth, load_ground_truth
from training.metrics.heading import HeadingAccumulator
from training.metrics.motion import VEHICLE_CLASSES, MotionAccumulator
from training.metrics.planning import PlanningAccumulator, obstacle_corners
from training.metrics.segmentation import MapAccumulator, OccupancyAccumulator
from training.metrics.velocity import VelocityAccumulator
from training.splits import check_devkit_split

ALL_TASKS: tuple[str, ...] = ("detection", "tracking", "motion", "map", "occupancy", "planning")
# What our own metrics' definitions are, by number (bump with any change of what a figure means; stored figures of
# another revision are not compared as equals: training/ablation.py). 2: UniAD's definitions (README "Evaluation":
# motion range, miss rate, EPA's N_GT, the vehicle group; occupancy pooled over the frames, far 100 m; the ego box
# ahead of the rear axle). The devkit's detection and tracking figures do not depend on it.
METRICS_REVISION = 2

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


class SampleMetrics:
    """The metrics scored sample by sample (heading of detections, motion, map, occupancy, planning), accumulated
    as samples arrive, so a caller that predicts a split one sample at a time holds none of its rasters (over
    nuScenes val a 200x200 grid's would be about 11 GB); `evaluate` runs the same accumulators over predictions it
    is given."""

    def __init__(self, tasks: Iterable[str], grid: BevGrid,
                 motion_score_threshold: float = SCORE_THRESHOLDS.publish) -> None:
        self.tasks = set(tasks)
        self.heading = HeadingAccumulator()
        self.velocity = VelocityAccumulator()
        self.motion = MotionAccumulator(score_threshold=motion_score_threshold)
        self.map = MapAccumulator()
        self.occupancy = OccupancyAccumulator(grid)
        self.planning = PlanningAccumulator()
        self.map_layers_missing = False

    def add(self, pred: Predictions, gt: GroundTruth) -> None:
        if {"map", "occupancy"} & self.tasks and (pred.map_probs.shape[1:] != gt.map_masks.shape[1:]
                                                   or pred.occupancy.shape[1:] != gt.occupancy.shape[1:]):
            raise ValueError(f"sample {gt.sample_token}: prediction rasters {pred.map_probs.shape[1:]} do not match "
                             f"the ground truth's {gt.map_masks.shape[1:]}; load the ground truth on the "
                             "predictions' grid")
        if "detection" in self.tasks:
            self.heading.add(pred, gt.centers, gt.labels, gt.yaws, gt.evaluable)
            self.velocity.add(pred, gt.centers, gt.labels, gt.velocities, gt.evaluable)
        if "motion" in self.tasks:
            self.motion.add(pred, gt.centers, gt.labels, gt.futures, gt.future_mask, gt_ignore=~gt.evaluable)
        if "map" in self.tasks:
            self.map.add(pred.map_probs, gt.map_masks, gt.map_valid)
            self.map_layers_missing |= not gt.map_valid.all()
        if "occupancy" in self.tasks:
            self.occupancy.add(pred.occupancy, gt.occupancy, gt.occupancy_mask)
        if "planning" in self.tasks:
            self.planning.add(pred.ego_plan, gt.ego_future, gt.ego_future_mask, *planning_obstacles(gt))

    def result(self, nusc: NuScenes) -> dict[str, Any]:
        metrics: dict[str, Any] = {}
        if "detection" in self.tasks:
            metrics["heading"] = self.heading.result()
            metrics["velocity"] = self.velocity.result()
        if "motion" in self.tasks:
            metrics["motion"] = self.motion.summary()
        if "map" in self.tasks:
            metrics["map"] = self.map.result()
            if self.map_layers_missing:
                metrics["map_note"] = (f"n/a: no map expansion in {Path(nusc.dataroot) / 'maps' / 'expansion'} (a "
                                       "separate nuScenes download); drivable_area is scored against the semantic "
                                       "prior (drivable surface and walkways)")
        if "occupancy" in self.tasks:
            metrics["occupancy"] = self.occupancy.result()
        if "planning" in self.tasks:
            metrics["planning"] = self.planning.result()
        if not nusc.sample_annotation and {"motion", "occupancy", "planning"} & self.tasks:
            _without_annotations(metrics)
            metrics["annotations_note"] = (f"n/a: {nusc.version} has no annotations (the test split's are withheld), "
                                           "so motion, occupancy and collisions have no ground truth; map and plan L2 "
                                           "are scored")
        return metrics


def _without_annotations(metrics: dict[str, Any]) -> None:
    """Occupancy and collision figures to n/a (NaN): without boxes they would read as real zeros (motion's are
    NaN already: no ground-truth agent)."""
    nan = float("nan")
    if "occupancy" in metrics:
        metrics["occupancy"] = dict.fromkeys(metrics["occupancy"], nan)
    for definition in metrics.get("planning", {}).values():
        definition.update({key: nan for key in definition if key.startswith("collision_")})


def without_rasters(item: Predictions | GroundTruth) -> Predictions | GroundTruth:
    """Boxes, plan and poses only: what detection, tracking and figure-less reports need of a scored sample."""
    if isinstance(item, Predictions):
        return replace(item, map_probs=item.map_probs[:, :0, :0], occupancy=item.occupancy[:, :0, :0])
    return replace(item, map_masks=item.map_masks[:, :0, :0], occupancy=item.occupancy[:, :0, :0])


def evaluate(predictions_by_sample: Mapping[str, Predictions], nusc: NuScenes, eval_set: str | None = None,
             tasks: Iterable[str] = ALL_TASKS, ground_truths: Mapping[str, GroundTruth] | None = None,
             grid: BevGrid | None = None, motion_score_threshold: float = SCORE_THRESHOLDS.publish,
             attributes_by_sample: Mapping[str, list[str]] | None = None, devkit_output_dir: str | Path | None = None,
             progress: bool = True, devkit_samples: Sequence[str] | None = None,
             sample_metrics: SampleMetrics | None = None) -> dict[str, Any]:
    """Metrics of every requested task (see the module docstring); a dict ready for `write_report`.

    `eval_set` (a devkit split name such as "val" or "mini_val") is required for detection and tracking.
    `ground_truths` may be passed to avoid reloading them (e.g. in every validation round); they must be
    rasterised on the predictions' grid. Detection and tracking score the whole of `eval_set`, or only
    `devkit_samples` (whole scenes of it, e.g. the demo's one scene). `sample_metrics`: the per-sample tasks
    already accumulated by the caller (the predictions may then be `without_rasters`).
    """
    tasks = tuple(tasks)
    unknown = sorted(set(tasks) - set(ALL_TASKS))
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; known: {list(ALL_TASKS)}")
    if any(task in DEVKIT_TASKS for task in tasks):
        if eval_set is None:
            raise ValueError("detection and tracking run the nuScenes devkit over a whole split: pass eval_set")
        check_devkit_split(nusc, eval_set)
    tokens = list(predictions_by_sample)
    if not tokens:
        raise ValueError("no predictions to evaluate")
    grid = grid or predictions_by_sample[tokens[0]].grid  # rasters are compared on the predictions' own grid
    if ground_truths is None:
        ground_truths = load_ground_truths(nusc, tokens, grid, progress=progress)
    missing = [token for token in tokens if token not in ground_truths]
    if missing:
        raise ValueError(f"no ground truth for {len(missing)} sample(s), first {missing[0]}")
    if sample_metrics is None:
        sample_metrics = SampleMetrics(tasks, grid, motion_score_threshold)
        for token in tqdm(tokens, desc="metrics", disable=not progress, leave=False):
            sample_metrics.add(predictions_by_sample[token], ground_truths[token])

    metrics: dict[str, Any] = {"samples": len(tokens), "eval_set": eval_set, "version": nusc.version}
    if "detection" in tasks:
        from training.metrics.detection import evaluate_detection

        metrics["detection"] = evaluate_detection(nusc, predictions_by_sample, eval_set, _sub(devkit_output_dir, "det"),
                                                  attributes_by_sample, devkit_samples)
    if "tracking" in tasks:
        from training.metrics.tracking import evaluate_tracking

        tracked = predictions_by_sample
        if all((p.track_ids < 0).all() for p in predictions_by_sample.values()):
            tracked = track_scenes(predictions_by_sample, nusc, ground_truths)
        metrics["tracking"] = evaluate_tracking(nusc, tracked, eval_set, _sub(devkit_output_dir, "track"),
                                                devkit_samples)
    metrics.update(sample_metrics.result(nusc))
    return metrics


def _sub(directory: str | Path | None, name: str) -> Path | None:
    return None if directory is None else Path(directory) / name


def parse_tasks(text: str) -> tuple[str, ...]:
    tasks = tuple(task.strip() for task in text.split(",") if task.strip())
    unknown = sorted(set(tasks) - set(ALL_TASKS))
    if unknown or not tasks:
        raise SystemExit(f"tinybev eval: --tasks {text!r}: unknown {unknown}; choose from {','.join(ALL_TASKS)}")
    return tasks
