"""base_link Predictions -> global nuScenes result boxes: frames, headings, velocities, attributes, file format."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tinybev_ros.geometry import BevGrid, Transform, quat_to_matrix, quat_to_yaw, yaw_to_quat
from tinybev_ros.predictions import Predictions
from tinybev_ros.taxonomy import DETECTION_CLASSES
from training.metrics.detection import (
    MAX_BOXES_PER_SAMPLE,
    default_attribute,
    detection_results,
    to_global_boxes,
    write_results_json,
)


def _boxes(n: int, rng: np.random.Generator) -> Predictions:
    return Predictions(
        stamp_ns=0, centers=rng.normal(size=(n, 3)) * 10, sizes_wlh=rng.uniform(0.5, 5, (n, 3)),
        yaws=rng.uniform(-np.pi, np.pi, n), velocities=rng.normal(size=(n, 2)), scores=rng.uniform(0, 1, n),
        labels=rng.integers(0, len(DETECTION_CLASSES), n), track_ids=np.arange(n), forecasts=np.zeros((n, 1, 12, 2)),
        forecast_probs=np.ones((n, 1)), map_probs=np.zeros((4, 2, 2)), occupancy=np.zeros((5, 2, 2)),
        ego_plan=np.zeros((6, 2)), command=2, grid=BevGrid(-1, 1, -1, 1, 1.0))


def test_ego_to_global_by_hand() -> None:
    """Ego at (100, 200) heading 90 degrees: a box 10 m ahead heading 0 lies at (100, 210) heading 90 degrees."""
    ego = Transform.from_nuscenes([100.0, 200.0, 1.0], yaw_to_quat(np.pi / 2))
    box = _boxes(1, np.random.default_rng(0))
    box.centers[:] = [[10.0, 0.0, 0.5]]
    box.yaws[:] = [0.0]
    box.velocities[:] = [[3.0, 0.0]]
    out = to_global_boxes(box, ego)
    assert out["centers"][0] == pytest.approx([100.0, 210.0, 1.5])
    assert quat_to_yaw(out["rotations"][0]) == pytest.approx(np.pi / 2)
    assert out["velocities"][0] == pytest.approx([0.0, 3.0])


def test_rotations_equal_the_matrix_composition_for_any_pose() -> None:
    rng = np.random.default_rng(1)
    q = rng.normal(size=4)
    ego = Transform(quat_to_matrix(q), rng.normal(size=3))
    boxes = _boxes(20, rng)
    out = to_global_boxes(boxes, ego)
    for quat, yaw in zip(out["rotations"], boxes.yaws, strict=True):
        c, s = np.cos(yaw), np.sin(yaw)
        assert np.allclose(quat_to_matrix(quat), ego.rotation @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]))


def test_result_boxes_format_order_and_cap(tmp_path) -> None:
    boxes = _boxes(MAX_BOXES_PER_SAMPLE + 20, np.random.default_rng(2))
    results = detection_results(boxes, "tok", Transform())
    assert len(results) == MAX_BOXES_PER_SAMPLE
    scores = [r["detection_score"] for r in results]
    assert scores == sorted(scores, reverse=True) and scores[0] == pytest.approx(boxes.scores.max())
    first = results[0]
    assert set(first) == {"sample_token", "translation", "size", "rotation", "velocity", "detection_name",
                          "detection_score", "attribute_name"}
    path = write_results_json({"tok": results}, tmp_path / "results.json")
    loaded = json.loads(path.read_text())
    assert loaded["meta"]["use_camera"] is True and len(loaded["results"]["tok"]) == MAX_BOXES_PER_SAMPLE


def test_default_attributes_follow_class_and_speed() -> None:
    assert default_attribute("car", 5.0) == "vehicle.moving" and default_attribute("bus", 0.0) == "vehicle.parked"
    assert default_attribute("pedestrian", 1.2) == "pedestrian.moving"
    assert default_attribute("pedestrian", 0.0) == "pedestrian.standing"
    assert default_attribute("bicycle", 3.0) == "cycle.with_rider"
    assert default_attribute("motorcycle", 0.0) == "cycle.without_rider"
    assert default_attribute("traffic_cone", 0.0) == "" and default_attribute("barrier", 1.0) == ""
