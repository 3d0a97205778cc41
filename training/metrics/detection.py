"""3D detection metrics by nuscenes-devkit's own `DetectionEval` (mAP, NDS, mATE/mASE/mAOE/mAVE/mAAE).

`Predictions` are in base_link at the keyframe's LIDAR_TOP stamp; nuScenes results are global-frame boxes.
Each box is mapped with that sample's ego pose (the pose the devkit itself uses to measure ego distance):
centre and heading rotated/translated, velocity rotated (it is an over-ground velocity in base_link axes).
Attributes are not predicted by the student; `default_attribute` derives one from class and speed, and a
caller that knows the attributes (the ground-truth oracle) can pass them. The results JSON lives in a
temporary directory beside the devkit's output, and the devkit's config is `detection_cvpr_2019`.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from nuscenes.eval.common.config import config_factory
from nuscenes.eval.detection.evaluate import DetectionEval
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


def check_coverage(predictions_by_sample: Mapping[str, Predictions], expected: list[str], eval_set: str) -> None:
    """The devkit evaluates whole splits: every keyframe of the split needs predictions (possibly empty)."""
    missing = [token for token in expected if token not in predictions_by_sample]
    if missing:
        raise ValueError(f"predictions lack {len(missing)} of the {len(expected)} samples of split {eval_set!r} "
                         f"(first: {missing[0]}); the nuScenes evaluators need every keyframe of the split")


def evaluate_detection(nusc: NuScenes, predictions_by_sample: Mapping[str, Predictions], eval_set: str,
                       output_dir: str | Path | None = None,
                       attributes_by_sample: Mapping[str, list[str]] | None = None) -> dict[str, Any]:
    """Run `DetectionEval` on the split; returns mAP, NDS, the five TP errors and per-class AP/errors."""
    tokens = split_sample_tokens(nusc, eval_set)
    check_coverage(predictions_by_sample, tokens, eval_set)
    poses = sample_ego_poses(nusc, tokens)
    attributes_by_sample = attributes_by_sample or {}
    results = {token: detection_results(predictions_by_sample[token], token, poses[token],
                                        attributes_by_sample.get(token)) for token in tokens}
    if not any(results.values()):
        return _nothing_detected()
    with tempfile.TemporaryDirectory(prefix="tinybev-det-") as tmp:
        result_path = write_results_json(results, Path(tmp) / "results_nusc.json")
        evaluator = DetectionEval(nusc, config_factory(DETECTION_CONFIG), str(result_path), eval_set,
                                  output_dir=str(output_dir or Path(tmp) / "devkit"), verbose=False)
        with contextlib.redirect_stdout(io.StringIO()):  # the devkit prints its tables regardless of verbose
            summary = evaluator.main(plot_examples=0, render_curves=False)
        evaluated = sorted({box.detection_name for box in evaluator.gt_boxes.all})
    errors = summary["tp_errors"]
    return {
        "mAP": summary["mean_ap"],
        "NDS": summary["nd_score"],
        "mATE": errors["trans_err"],
        "mASE": errors["scale_err"],
        "mAOE": errors["orient_err"],
        "mAVE": errors["vel_err"],
        "mAAE": errors["attr_err"],
        "per_class_AP": summary["mean_dist_aps"],
        "per_class_errors": summary["label_tp_errors"],
        # Classes with ground truth in this split after the devkit's filters; the others score AP 0 / error 1.
        "classes_with_ground_truth": [name for name in DETECTION_CLASSES if name in evaluated],
    }


def _nothing_detected() -> dict[str, Any]:
    """What the devkit's rules give when no box at all is predicted (its loader crashes on that case):
    AP 0 for every class, each TP error at its worst value 1, hence NDS 0."""
    worst = {"trans_err": 1.0, "scale_err": 1.0, "orient_err": 1.0, "vel_err": 1.0, "attr_err": 1.0}
    return {"mAP": 0.0, "NDS": 0.0, "mATE": 1.0, "mASE": 1.0, "mAOE": 1.0, "mAVE": 1.0, "mAAE": 1.0,
            "per_class_AP": dict.fromkeys(DETECTION_CLASSES, 0.0),
            "per_class_errors": {name: dict(worst) for name in DETECTION_CLASSES},
            "classes_with_ground_truth": [], "note": "no boxes predicted in the whole split"}
