"""3D detection metrics by nuscenes-devkit's own `DetectionEval` (mAP, NDS, mATE/mASE/mAOE/mAVE/mAAE).

`Predictions` are in base_link at the keyframe's LIDAR_TOP stamp; nuScenes results are global-frame boxes.
Each box is mapped with that sample's ego pose (the pose the devkit itself uses to measure ego distance):
centre and heading rotated/translated, velocity rotated (it is an over-ground velocity in base_link axes).
Attributes are not predicted by the student; `default_attribute` derives one from class and speed, and a
caller that knows the attributes (the ground-truth oracle) can pass them. The results JSON lives in a
temporary directory beside the devkit's output, and the devkit's config is `detection_cvpr_2019`. The devkit's
evaluator runs on a list of keyframes (SampleDetectionEval: its own loaders, filters and metrics), so one scene of
a split can be scored (the demo on real nuScenes) as well as the whole split.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from nuscenes.eval.common.config import config_factory
from nuscenes.eval.common.data_classes import EvalBoxes
from nuscenes.eval.common.loaders import (
    add_center_dist,
    filter_eval_boxes,
    load_gt_of_sample_tokens,
    load_prediction_of_sample_tokens,
)
from nuscenes.eval.detection.config import DetectionConfig
from nuscenes.eval.detection.data_classes import DetectionBox
from nuscenes.eval.detection.evaluate import DetectionEval
from nuscenes.eval.detection.utils import category_to_detection_name
from nuscenes.nuscenes import NuScenes

from tinybev_ros.atomic_file import write_text
from tinybev_ros.geometry import Transform, matrix_to_quat
from tinybev_ros.predictions import Predictions
from tinybev_ros.taxonomy import DETECTION_CLASSES
from training.ground_truth import ego_pose_of_sample
from training.splits import split_sample_tokens

DETECTION_CONFIG = "detection_cvpr_2019"
MAX_BOXES_PER_SAMPLE = 500  # the devkit rejects more
RESULTS_META = {"use_camera": True, "use_lidar": False, "use_radar": False, "use_map": False, "use_external": False}
_VEHICLES = {"car", "truck", "bus", "trailer", "construction_vehicle"}
# The five true-positive errors: the devkit's name -> ours
TP_ERRORS: dict[str, str] = {"trans_err": "mATE", "scale_err": "mASE", "orient_err": "mAOE", "vel_err": "mAVE",
                             "attr_err": "mAAE"}


def default_attribute(class_name: str, speed: float) -> str:
    """A nuScenes attribute from class and speed (m/s): moving vs parked/standing, ridden vs not; '' for none."""
    if class_name in _VEHICLES:
        return "vehicle.moving" if speed > 0.5 else "vehicle.parked"
    if class_name == "pedestrian":
        return "pedestrian.moving" if speed > 0.3 else "pedestrian.standing"
    if class_name in ("bicycle", "motorcycle"):
        return "cycle.with_rider" if speed > 0.5 else "cycle.without_rider"
    return ""


def sample_ego_poses(nusc: NuScenes, sample_tokens: list[str]) -> dict[str, Transform]:
    """ego -> global at each sample's LIDAR_TOP stamp."""
    return {token: ego_pose_of_sample(nusc, nusc.get("sample", token))[0] for token in sample_tokens}


def to_global_boxes(predictions: Predictions, ego_to_global: Transform) -> dict[str, np.ndarray]:
    """Centres (N, 3), (w, x, y, z) rotations (N, 4) and velocities (N, 2) of the boxes in the global frame."""
    n = len(predictions)
    centers = ego_to_global.apply(predictions.centers.reshape(n, 3))
    half = np.asarray(predictions.yaws, dtype=float).reshape(n) / 2.0
    yaw_quats = np.stack([np.cos(half), np.zeros(n), np.zeros(n), np.sin(half)], axis=1)
    rotations = _quat_multiply(matrix_to_quat(ego_to_global.rotation), yaw_quats)
    planar = np.concatenate([predictions.velocities.reshape(n, 2), np.zeros((n, 1))], axis=1)
    return {"centers": centers, "rotations": rotations, "velocities": (planar @ ego_to_global.rotation.T)[:, :2]}


def _quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a * b of one (w, x, y, z) quaternion with (N, 4) quaternions (rotation b, then a)."""
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b.T
    return np.stack([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2], axis=1)


def detection_results(predictions: Predictions, sample_token: str, ego_to_global: Transform,
                      attributes: list[str] | None = None) -> list[dict[str, Any]]:
    """nuScenes detection result boxes of one sample (at most MAX_BOXES_PER_SAMPLE, highest scores first)."""
    order = np.argsort(-predictions.scores, kind="stable")[:MAX_BOXES_PER_SAMPLE]
    boxes = to_global_boxes(predictions, ego_to_global)
    out = []
    for i in order:
        name = DETECTION_CLASSES[int(predictions.labels[i])]
        speed = float(np.hypot(*predictions.velocities[i]))
        out.append({
            "sample_token": sample_token,
            "translation": [float(v) for v in boxes["centers"][i]],
            "size": [float(max(v, 1e-3)) for v in predictions.sizes_wlh[i]],
            "rotation": [float(v) for v in boxes["rotations"][i]],
            "velocity": [float(v) for v in boxes["velocities"][i]],
            "detection_name": name,
            "detection_score": float(np.clip(predictions.scores[i], 0.0, 1.0)),
            "attribute_name": attributes[i] if attributes is not None else default_attribute(name, speed),
        })
    return out


def write_results_json(results: dict[str, list[dict[str, Any]]], path: str | Path) -> Path:
    """A nuScenes results file {"meta", "results"}, written atomically."""
    return write_text(path, json.dumps({"meta": RESULTS_META, "results": results}))


def devkit_samples(nusc: NuScenes, eval_set: str, sample_tokens: Sequence[str] | None,
                   predictions_by_sample: Mapping[str, Predictions]) -> list[str]:
    """The keyframes the devkit scores: the whole split by default, or some of its keyframes (one scene's, for
    the demo); every one needs predictions (possibly empty), so a partial run is never scored as complete."""
    split = split_sample_tokens(nusc, eval_set)
    if sample_tokens is None:
        tokens = split
    else:
        tokens = list(sample_tokens)
        outside = sorted(set(tokens) - set(split))
        if outside or not tokens:
            raise ValueError(f"{len(outside)} of the {len(tokens)} samples to score are not in split {eval_set!r} "
                             f"(first: {outside[0] if outside else 'none given'})")
    missing = [token for token in tokens if token not in predictions_by_sample]
    if missing:
        what = f"split {eval_set!r}" if sample_tokens is None else "samples to score"
        raise ValueError(f"predictions lack {len(missing)} of the {len(tokens)} {what} (first: {missing[0]}); the "
                         "nuScenes evaluators need a prediction (possibly empty) for every keyframe they score")
    return tokens


def load_devkit_boxes(nusc: NuScenes, result_path: str | Path, sample_tokens: list[str], box_cls: type,
                      config: Any) -> tuple[EvalBoxes, EvalBoxes, dict]:
    """Predicted and ground-truth boxes of these keyframes, centre distances added and the devkit's range and
    point filters applied: what DetectionEval and TrackingEval do in their constructors for a whole split."""
    pred, meta = load_prediction_of_sample_tokens(str(result_path), config.max_boxes_per_sample, box_cls,
                                                  sample_tokens=sample_tokens)
    gt = load_gt_of_sample_tokens(nusc, sample_tokens, box_cls)
    pred = filter_eval_boxes(nusc, add_center_dist(nusc, pred), config.class_range)
    gt = filter_eval_boxes(nusc, add_center_dist(nusc, gt), config.class_range)
    return pred, gt, meta


def set_up_devkit_evaluator(evaluator: Any, config: Any, eval_set: str, result_path: str | Path,
                            output_dir: str | Path) -> None:
    """The attributes the devkit's evaluators set in their constructors and use in `main` (quiet, plots folder)."""
    evaluator.cfg, evaluator.eval_set, evaluator.verbose = config, eval_set, False
    evaluator.result_path, evaluator.output_dir = str(result_path), str(output_dir)
    evaluator.plot_dir = str(Path(output_dir) / "plots")
    Path(evaluator.plot_dir).mkdir(parents=True, exist_ok=True)


class SampleDetectionEval(DetectionEval):
    """The devkit's DetectionEval (its metrics, summary and files) over a list of keyframes instead of a whole
    split: its constructor can only load a predefined split or one listed in the dataset's own splits.json."""

    def __init__(self, nusc: NuScenes, config: DetectionConfig, result_path: str | Path, eval_set: str,
                 sample_tokens: list[str], output_dir: str | Path) -> None:
        set_up_devkit_evaluator(self, config, eval_set, result_path, output_dir)
        self.nusc = nusc
        self.pred_boxes, self.gt_boxes, self.meta = load_devkit_boxes(nusc, result_path, sample_tokens,
                                                                      DetectionBox, config)
        self.sample_tokens = self.gt_boxes.sample_tokens


def evaluate_detection(nusc: NuScenes, predictions_by_sample: Mapping[str, Predictions], eval_set: str,
                       output_dir: str | Path | None = None,
                       attributes_by_sample: Mapping[str, list[str]] | None = None,
                       sample_tokens: Sequence[str] | None = None) -> dict[str, Any]:
    """The devkit's detection metrics of the split (or of `sample_tokens`, keyframes of it): mAP, NDS, the five
    TP errors and per-class AP/errors."""
    tokens = devkit_samples(nusc, eval_set, sample_tokens, predictions_by_sample)
    poses = sample_ego_poses(nusc, tokens)
    attributes_by_sample = attributes_by_sample or {}
    results = {token: detection_results(predictions_by_sample[token], token, poses[token],
                                        attributes_by_sample.get(token)) for token in tokens}
    predicted = any(results.values())
    if not predicted or not any_ground_truth(nusc, tokens, category_to_detection_name):
        nothing = _nothing_detected(predicted)
        if output_dir is not None:  # the devkit writes no summary here; readers of its files (nds-terms) need one
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            write_text(Path(output_dir) / "metrics_summary.json", json.dumps(_devkit_summary(nothing), indent=2))
        return nothing
    with tempfile.TemporaryDirectory(prefix="tinybev-det-") as tmp:
        result_path = write_results_json(results, Path(tmp) / "results_nusc.json")
        evaluator = SampleDetectionEval(nusc, config_factory(DETECTION_CONFIG), result_path, eval_set, tokens,
                                        output_dir or Path(tmp) / "devkit")
        with contextlib.redirect_stdout(io.StringIO()):  # the devkit prints its tables regardless of verbose
            summary = evaluator.main(plot_examples=0, render_curves=False)
        evaluated = sorted({box.detection_name for box in evaluator.gt_boxes.all})
    errors = summary["tp_errors"]
    return {
        "mAP": summary["mean_ap"],
        "NDS": summary["nd_score"],
        **{ours: errors[devkit] for devkit, ours in TP_ERRORS.items()},
        "per_class_AP": summary["mean_dist_aps"],
        "per_class_errors": summary["label_tp_errors"],
        # Classes with ground truth in this split after the devkit's filters; the others score AP 0 / error 1.
        "classes_with_ground_truth": [name for name in DETECTION_CLASSES if name in evaluated],
    }


def _devkit_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """`metrics` (ours) in the keys of the devkit's metrics_summary.json."""
    return {"mean_ap": metrics["mAP"], "nd_score": metrics["NDS"],
            "tp_errors": {devkit: metrics[ours] for devkit, ours in TP_ERRORS.items()},
            "mean_dist_aps": metrics["per_class_AP"], "label_tp_errors": metrics["per_class_errors"],
            "note": metrics.get("note", "")}


def any_ground_truth(nusc: NuScenes, sample_tokens: Sequence[str], class_of: Callable[[str], str | None]) -> bool:
    """Whether any of these keyframes holds a box of a scored class (`class_of` maps a category to one, or None):
    the devkit's box filter crashes on a ground truth without any box."""
    return any(class_of(nusc.get("sample_annotation", annotation)["category_name"]) is not None
               for token in sample_tokens for annotation in nusc.get("sample", token)["anns"])


def _nothing_detected(predicted: bool = False) -> dict[str, Any]:
    """What the devkit's rules give when no box at all is predicted, or no box is in the ground truth (its loader
    crashes on either): AP 0 for every class, each TP error at its worst value 1, hence NDS 0."""
    note = "no ground-truth box in any scored sample" if predicted else "no boxes predicted in any scored sample"
    return {"mAP": 0.0, "NDS": 0.0, **dict.fromkeys(TP_ERRORS.values(), 1.0),
            "per_class_AP": dict.fromkeys(DETECTION_CLASSES, 0.0),
            "per_class_errors": {name: dict.fromkeys(TP_ERRORS, 1.0) for name in DETECTION_CLASSES},
            "classes_with_ground_truth": [], "note": note}
