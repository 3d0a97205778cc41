"""3D tracking metrics by nuscenes-devkit's own `TrackingEval` (AMOTA, AMOTP, recall, IDS, ...).

Tracked boxes (track id >= 0) of the seven nuScenes tracking classes become global-frame tracking results the
same way detection results do (`detection.to_global_boxes`); `tracking_id` is the track id as a string, scoped
by scene so that ids never collide across scenes. Config: the devkit's `tracking_nips_2019`. As for detection,
the devkit's evaluator runs on a list of keyframes (SampleTrackingEval), with the dataset already loaded.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from nuscenes.eval.common.config import config_factory
from nuscenes.eval.tracking.data_classes import TrackingBox, TrackingConfig
from nuscenes.eval.tracking.evaluate import TrackingEval
from nuscenes.eval.tracking.loaders import create_tracks
from nuscenes.eval.tracking.utils import category_to_tracking_name
from nuscenes.nuscenes import NuScenes

from tinybev_ros.geometry import Transform
from tinybev_ros.predictions import Predictions
from tinybev_ros.taxonomy import DETECTION_CLASSES
from training.metrics.detection import (
    MAX_BOXES_PER_SAMPLE,
    any_ground_truth,
    devkit_samples,
    load_devkit_boxes,
    sample_ego_poses,
    set_up_devkit_evaluator,
    to_global_boxes,
    write_results_json,
)

TRACKING_CONFIG = "tracking_nips_2019"
TRACKING_CLASSES: tuple[str, ...] = ("bicycle", "bus", "car", "motorcycle", "pedestrian", "trailer", "truck")


def tracking_results(predictions: Predictions, sample_token: str, scene_token: str,
                     ego_to_global: Transform) -> list[dict[str, Any]]:
    """nuScenes tracking result boxes of one sample: tracked boxes of tracking classes only."""
    names = [DETECTION_CLASSES[int(label)] for label in predictions.labels]
    keep = [i for i in np.argsort(-predictions.scores, kind="stable")
            if predictions.track_ids[i] >= 0 and names[i] in TRACKING_CLASSES][:MAX_BOXES_PER_SAMPLE]
    boxes = to_global_boxes(predictions, ego_to_global)
    return [{
        "sample_token": sample_token,
        "translation": [float(v) for v in boxes["centers"][i]],
        "size": [float(max(v, 1e-3)) for v in predictions.sizes_wlh[i]],
        "rotation": [float(v) for v in boxes["rotations"][i]],
        "velocity": [float(v) for v in boxes["velocities"][i]],
        "tracking_id": f"{scene_token}-{int(predictions.track_ids[i])}",
        "tracking_name": names[i],
        "tracking_score": float(np.clip(predictions.scores[i], 0.0, 1.0)),
    } for i in keep]


class SampleTrackingEval(TrackingEval):
    """The devkit's TrackingEval over a list of keyframes of `eval_set` (whole scenes: tracks are built per scene)
    and an already loaded dataset (its constructor loads the dataset again, and only whole splits)."""

    def __init__(self, nusc: NuScenes, config: TrackingConfig, result_path: str | Path, eval_set: str,
                 sample_tokens: list[str], output_dir: str | Path) -> None:
        set_up_devkit_evaluator(self, config, eval_set, result_path, output_dir)
        self.render_classes = None
        pred, gt, self.meta = load_devkit_boxes(nusc, result_path, sample_tokens, TrackingBox, config)
        self.sample_tokens = gt.sample_tokens
        self.tracks_gt = create_tracks(gt, nusc, eval_set, gt=True)
        self.tracks_pred = create_tracks(pred, nusc, eval_set, gt=False)


def evaluate_tracking(nusc: NuScenes, predictions_by_sample: Mapping[str, Predictions], eval_set: str,
                      output_dir: str | Path | None = None,
                      sample_tokens: Sequence[str] | None = None) -> dict[str, Any]:
    """The devkit's tracking metrics of the split (or of `sample_tokens`, whole scenes of it); the predictions
    must already carry track ids."""
    tokens = devkit_samples(nusc, eval_set, sample_tokens, predictions_by_sample)
    poses = sample_ego_poses(nusc, tokens)
    results = {token: tracking_results(predictions_by_sample[token], token, nusc.get("sample", token)["scene_token"],
                                       poses[token]) for token in tokens}
    predicted = any(results.values())
    if not predicted or not any_ground_truth(nusc, tokens, category_to_tracking_name):
        return _nothing_tracked(predicted)
    with tempfile.TemporaryDirectory(prefix="tinybev-track-") as tmp:
        result_path = write_results_json(results, Path(tmp) / "results_tracking.json")
        evaluator = SampleTrackingEval(nusc, config_factory(TRACKING_CONFIG), result_path, eval_set, tokens,
                                       output_dir or Path(tmp) / "devkit")
        with contextlib.redirect_stdout(io.StringIO()):  # the devkit prints its tables regardless of verbose
            summary = evaluator.main(render_curves=False)
    keys = ("amota", "amotp", "recall", "motar", "mota", "motp", "ids", "frag", "tp", "fp", "fn", "gt")
    out: dict[str, Any] = {key.upper() if key in ("amota", "amotp", "ids") else key: summary[key] for key in keys}
    out["per_class_AMOTA"] = summary["label_metrics"]["amota"]
    return out


def _nothing_tracked(predicted: bool = False) -> dict[str, Any]:
    """The devkit's values for a split without any tracked box, or without any box in the ground truth (its loader
    crashes on either): recall 0, AMOTA 0, AMOTP at its worst (the 2 m matching threshold)."""
    note = "no ground-truth box in any scored sample" if predicted else "no tracked boxes in any scored sample"
    nan = float("nan")
    return {"AMOTA": 0.0, "AMOTP": 2.0, "recall": 0.0, "motar": 0.0, "mota": 0.0, "motp": nan, "IDS": 0, "frag": 0,
            "tp": 0, "fp": 0, "fn": nan, "gt": nan, "per_class_AMOTA": dict.fromkeys(TRACKING_CLASSES, 0.0),
            "note": note}
