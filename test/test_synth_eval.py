"""The devkit's own evaluators accept the synthetic val split: ground truth given back scores ~1."""

from __future__ import annotations

import json

import numpy as np
import pytest
from nuscenes.eval.common.config import config_factory
from nuscenes.eval.detection.evaluate import DetectionEval
from nuscenes.eval.detection.utils import category_to_detection_name
from nuscenes.eval.tracking.evaluate import TrackingEval
from nuscenes.eval.tracking.utils import category_to_tracking_name
from nuscenes.nuscenes import NuScenes
from nuscenes.utils.splits import create_splits_scenes

from tinybev_ros.taxonomy import DETECTION_CLASSES


@pytest.fixture(scope="module")
def nusc(synth_dataset) -> NuScenes:
    return NuScenes(synth_dataset.version, str(synth_dataset.dataroot), verbose=False)


def _val_samples(nusc: NuScenes) -> list[dict]:
    names = set(create_splits_scenes()["mini_val"])
    scenes = {s["token"] for s in nusc.scene if s["name"] in names}
    return [s for s in nusc.sample if s["scene_token"] in scenes]


def _gt_as_predictions(nusc: NuScenes, tracking: bool) -> dict[str, list[dict]]:
    """Every annotation the evaluator scores (it drops boxes without points) as a confident prediction."""
    attributes = {a["token"]: a["name"] for a in nusc.attribute}
    results: dict[str, list[dict]] = {}
    for sample in _val_samples(nusc):
        boxes = []
        for ann_token in sample["anns"]:
            ann = nusc.get("sample_annotation", ann_token)
            if ann["num_lidar_pts"] + ann["num_radar_pts"] == 0:
                continue
            velocity = np.nan_to_num(nusc.box_velocity(ann_token)[:2]).tolist()
            box = {"sample_token": sample["token"], "translation": ann["translation"], "size": ann["size"],
                   "rotation": ann["rotation"], "velocity": velocity}
            if tracking:
                name = category_to_tracking_name(ann["category_name"])
                if name is None:
                    continue
                box.update(tracking_id=ann["instance_token"], tracking_name=name, tracking_score=0.9)
            else:
                name = category_to_detection_name(ann["category_name"])
                if name is None:
                    continue
                attr = attributes[ann["attribute_tokens"][0]] if ann["attribute_tokens"] else ""
                box.update(detection_name=name, detection_score=0.9, attribute_name=attr)
            boxes.append(box)
        results[sample["token"]] = boxes
    return results


META = {"use_camera": True, "use_lidar": False, "use_radar": False, "use_map": False, "use_external": False}


def test_detection_eval_ground_truth_scores_one(nusc, tmp_path):
    results = _gt_as_predictions(nusc, tracking=False)
    path = tmp_path / "det.json"
    path.write_text(json.dumps({"meta": META, "results": results}))
    evaluator = DetectionEval(nusc, config_factory("detection_cvpr_2019"), str(path), "mini_val",
                              str(tmp_path / "det"), verbose=False)
    metrics, _ = evaluator.evaluate()
    present = {b.detection_name for t in evaluator.gt_boxes.sample_tokens for b in evaluator.gt_boxes[t]}
    assert present == set(DETECTION_CLASSES)  # the generator puts every class near the ego
    for name in present:
        assert metrics.mean_dist_aps[name] >= 0.99, (name, metrics.mean_dist_aps[name])
    # a perturbed copy must score worse: the evaluator really compares geometry
    for boxes in results.values():
        for box in boxes:
            box["translation"] = [box["translation"][0] + 3.0, *box["translation"][1:]]
    path.write_text(json.dumps({"meta": META, "results": results}))
    shifted, _ = DetectionEval(nusc, config_factory("detection_cvpr_2019"), str(path), "mini_val",
                               str(tmp_path / "det2"), verbose=False).evaluate()
    assert shifted.mean_ap < 0.5 * metrics.mean_ap


def test_tracking_eval_ground_truth_scores_one(synth_dataset, nusc, tmp_path):
    results = _gt_as_predictions(nusc, tracking=True)
    path = tmp_path / "track.json"
    path.write_text(json.dumps({"meta": META, "results": results}))
    evaluator = TrackingEval(config_factory("tracking_nips_2019"), str(path), "mini_val", str(tmp_path / "track"),
                             synth_dataset.version, str(synth_dataset.dataroot), verbose=False)
    metrics = evaluator.main(render_curves=False)
    assert metrics["amota"] >= 0.99, metrics["amota"]
    assert metrics["ids"] == 0
