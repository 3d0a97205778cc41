"""Synthetic scene -> bag -> `tinybev bag play` -> `tinybev_node` -> recorded outputs -> evaluation suite.

Each stage is its own process (player, node, recorder), as on a robot. The metrics of what the node published
must equal the offline evaluation of the same checkpoint on the same samples: that proves stamps, frames,
calibration (CameraInfo + /tf_static) and synchronization are right end to end. The checkpoint is a randomly
initialised tiny student whose decoder keeps its top 30 peaks at any score, so every frame has boxes in many
places and classes: a wrong stamp, frame, extrinsic or intrinsic moves or changes them, and the box-by-box
comparison below fails (accuracy is not what is tested here; `tinybev eval` measures that).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from nuscenes.nuscenes import NuScenes
from rosbags.rosbag2 import Reader
from scipy.optimize import linear_sum_assignment

from tinybev_ros.checkpoint import save_checkpoint
from tinybev_ros.inference import Predictor
from tinybev_ros.model import build_student
from tinybev_ros.model.config import load_model_config
from tinybev_ros.paths import share_file
from tinybev_ros.predictions import Predictions
from tinybev_ros.ros.bag.node_outputs import predictions_from_bag
from tinybev_ros.ros.bag.nuscenes_to_bag import ConvertOptions, convert_scene
from tinybev_ros.ros.run import run_pipeline
from tinybev_ros.taxonomy import Command
from training.evaluation.inference import model_frame, predict_split
from training.evaluation.suite import evaluate, load_ground_truths
from training.ground_truth import sample_ego_status

SCORE_THRESHOLD = 0.0
OUTPUT_TYPES = {
    "/tinybev/detections": "vision_msgs/msg/Detection3DArray",
    "/tinybev/objects": "autoware_perception_msgs/msg/PredictedObjects",
    "/tinybev/ego_trajectory": "nav_msgs/msg/Path",
    "/tinybev/occupancy": "nav_msgs/msg/OccupancyGrid",
    "/tinybev/map/drivable_area": "nav_msgs/msg/OccupancyGrid",
    "/tinybev/markers": "visualization_msgs/msg/MarkerArray",
    "/tinybev/predicted_paths": "visualization_msgs/msg/MarkerArray",
    "/diagnostics": "diagnostic_msgs/msg/DiagnosticArray",
}


def empty_like(pred: Predictions, stamp_ns: int) -> Predictions:
    return replace(pred.select(np.zeros(len(pred), bool)), stamp_ns=stamp_ns)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    import torch

    torch.manual_seed(0)
    config = load_model_config(share_file("config/model_tiny.yaml"))
    config = replace(config, decode=replace(config.decode, score_threshold=0.0, max_detections=30))
    model = build_student(config)
    with torch.no_grad():  # a planner that reacts strongly to the ego status, so its path through ROS is checked
        model.heads.planner.ego_embedding[0].weight.mul_(30.0)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_random.safetensors", model, config)


@pytest.fixture(scope="module")
def ros_run(synth_dataset, checkpoint, tmp_path_factory):
    """Convert the val scene, replay it through the node at a quarter speed, record the outputs."""
    work = tmp_path_factory.mktemp("e2e")
    nusc = NuScenes(synth_dataset.version, str(synth_dataset.dataroot), verbose=False)
    scene = next(s for s in nusc.scene if s["name"] == "scene-0103")
    bag = work / "scene-0103"
    convert_scene(nusc, scene["name"], bag, ConvertOptions(progress=False))
    out = work / "outputs"
    frames = run_pipeline(bag, share_file("config/tinybev.yaml"), str(checkpoint), device="cpu", rate=0.25,
                          record=out, overrides=[f"score_threshold:={SCORE_THRESHOLD}", "command:=straight"])
    return nusc, scene, bag, out, frames


def test_every_output_topic_has_its_type_frame_and_stamp(ros_run):
    nusc, scene, bag, out, frames = ros_run
    assert frames >= 4
    with Reader(bag) as reader:
        camera_stamps = {ts for c, ts, _ in reader.messages() if c.topic == "/CAM_FRONT/image_rect/compressed"}
    with Reader(out) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        assert {t: types.get(t) for t in OUTPUT_TYPES} == OUTPUT_TYPES
    predictions = predictions_from_bag(out)
    # every published frame is stamped with a CAM_FRONT image stamp of the bag, in base_link
    assert set(predictions) <= camera_stamps and len(predictions) == frames


def test_metrics_through_ros_equal_offline_evaluation(ros_run, checkpoint):
    nusc, scene, bag, out, _ = ros_run
    by_cam_front_stamp = {}
    for sample in nusc.sample:
        if sample["scene_token"] == scene["token"]:
            sd = nusc.get("sample_data", sample["data"]["CAM_FRONT"])
            by_cam_front_stamp[sd["timestamp"] * 1000] = sample["token"]
    through_ros = {by_cam_front_stamp[stamp]: pred for stamp, pred in predictions_from_bag(out).items()}
    tokens = sorted(through_ros)

    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    grid = predictor.config.grid
    ground_truths = load_ground_truths(nusc, tokens, grid, progress=False)
    offline = predict_split(predictor, nusc, tokens, ground_truths, progress=False)
    offline = {t: p.select(p.scores >= SCORE_THRESHOLD) for t, p in offline.items()}

    # detection runs over the whole split: samples the node did not process count as empty in both runs
    def padded(predictions):
        template = next(iter(predictions.values()))
        full = {}
        for stamp, token in by_cam_front_stamp.items():
            full[token] = predictions.get(token) or empty_like(template, stamp)
        return full

    ros_metrics = evaluate(padded(through_ros), nusc, "mini_val", tasks=("detection", "map"), progress=False)
    offline_metrics = evaluate(padded(offline), nusc, "mini_val", tasks=("detection", "map"), progress=False)
    assert ros_metrics["detection"]["mAP"] == pytest.approx(offline_metrics["detection"]["mAP"], abs=0.01)
    for layer, iou in offline_metrics["map"].items():
        assert ros_metrics["map"][layer] == pytest.approx(iou, abs=0.01, nan_ok=True), layer
    # boxes agree one by one, not just in aggregate, except at the top-30 cut: a fresh head's scores are equal to
    # 1e-7, so the last bits of two runs' float sums may decide which of the lowest peaks make the 30
    for token in tokens:
        a, b = through_ros[token], offline[token]
        assert len(a) == len(b) == 30, token
        distance = np.linalg.norm(a.centers[:, None] - b.centers[None], axis=-1)
        other_label = a.labels[:, None] != b.labels[None]  # two classes may peak in one cell: one centre, two boxes
        rows, cols = linear_sum_assignment(distance + 1e3 * other_label)
        same = (distance[rows, cols] < 0.05) & ~other_label[rows, cols]
        assert same.sum() >= 25, token
        np.testing.assert_allclose(a.scores[rows[same]], b.scores[cols[same]], atol=1e-6)
        for boxes, unmatched in ((a, rows[~same]), (b, cols[~same])):
            assert (boxes.scores[unmatched] <= boxes.scores.min() + 1e-5).all(), token  # only at the cut
    # the plan reads the ego status: the node's (from its /tf history) equals the dataset's (from the ego poses)
    assert predictor.config.ego_status
    moving = [t for t in tokens if nusc.get("sample", t)["prev"]]
    assert moving
    blind_gap = 0.0
    for token in moving:
        frame = (*model_frame(nusc, token, predictor.config), int(Command.STRAIGHT), 0)  # node: command:=straight
        known = predictor.predict(*frame, sample_ego_status(nusc, nusc.get("sample", token)))
        np.testing.assert_allclose(through_ros[token].ego_plan, known.ego_plan, atol=0.05)
        blind_gap = max(blind_gap, float(np.abs(predictor.predict(*frame).ego_plan - known.ego_plan).max()))
    assert blind_gap > 0.2  # without the status the plan differs: the check above can fail
