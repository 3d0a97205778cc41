"""3D tracking metrics by nuscenes-devkit's own `TrackingEval` (AMOTA, AMOTP, recall, IDS, ...).

Tracked boxes (track id >= 0) of the seven nuScenes tracking classes become global-frame tracking results the
same way detection results do (`detection.to_global_boxes`); `tracking_id` is the track id as a string, scoped
by scene so that ids never collide across scenes. Config: the devkit's `tracking_nips_2019`. The devkit's
TrackingEval loads the dataset itself from version and dataroot.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from nuscenes.eval.common.config import config_factory
from nuscenes.eval.tracking.evaluate import TrackingEval
from nuscenes.nuscenes import NuScenes

from tinybev_ros.geometry import Transform
from tinybev_ros.predictions import Predictions
from tinybev_ros.taxonomy import DETECTION_CLASSES
from training.metrics.detection import (
    MAX_BOXES_PER_SAMPLE,
    check_coverage,
    sample_ego_poses,
    to_global_boxes,
    write_results_json,
)
from training.splits import split_sample_tokens

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


def evaluate_tracking(nusc: NuScenes, predictions_by_sample: Mapping[str, Predictions], eval_set: str,
                      output_dir: str | Path | None = None) -> dict[str, Any]:
    """Run `TrackingEval` on the split; `predictions_by_sample` must already carry track ids."""
    tokens = split_sample_tokens(nusc, eval_set)
    check_coverage(predictions_by_sample, tokens, eval_set)
    poses = sample_ego_poses(nusc, tokens)
    results = {token: tracking_results(predictions_by_sample[token], token, nusc.get("sample", token)["scene_token"],
                                       poses[token]) for token in tokens}
    if not any(results.values()):
        return _nothing_tracked()
    with tempfile.TemporaryDirectory(prefix="tinybev-track-") as tmp:
        result_path = write_results_json(results, Path(tmp) / "results_tracking.json")
        evaluator = TrackingEval(config_factory(TRACKING_CONFIG), str(result_path), eval_set,
                                 output_dir=str(output_dir or Path(tmp) / "devkit"), nusc_version=nusc.version,
                                 nusc_dataroot=str(nusc.dataroot), verbose=False)
        with contextlib.redirect_stdout(io.StringIO()):  # the devkit prints its tables regardless of verbose
            summary = evaluator.main(render_curves=False)
    keys = ("amota", "amotp", "recall", "motar", "mota", "motp", "ids", "frag", "tp", "fp", "fn", "gt")
    out: dict[str, Any] = {key.upper() if key in ("amota", "amotp", "ids") else key: summary[key] for key in keys}
    out["per_class_AMOTA"] = summary["label_metrics"]["amota"]
    return out


def _nothing_tracked() -> dict[str, Any]:
    """The devkit's values for a split without any tracked box (its loader crashes on that case): recall 0,
    AMOTA 0, AMOTP at its worst (the 2 m matching threshold)."""
    nan = float("nan")
    return {"AMOTA": 0.0, "AMOTP": 2.0, "recall": 0.0, "motar": 0.0, "mota": 0.0, "motp": nan, "IDS": 0, "frag": 0,
            "tp": 0, "fp": 0, "fn": nan, "gt": nan, "per_class_AMOTA": dict.fromkeys(TRACKING_CLASSES, 0.0),
            "note": "no tracked boxes in the whole split"}
