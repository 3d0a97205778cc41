"""The planner's ego status: velocity in base_link from two ego poses, the same from /tf and from the dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nuscenes.nuscenes import NuScenes
from test_training import TINY  # noqa: I001  (test helper module)

from tinybev_ros.ego_motion import ego_status, ego_status_from_tf
from tinybev_ros.geometry import Transform
from tinybev_ros.inference import Predictor
from tinybev_ros.model import build_student, load_model_config
from tinybev_ros.transform_buffer import TransformBuffer
from training.ground_truth import sample_ego_status


def yawed(x: float, y: float, yaw: float) -> Transform:
    c, s = np.cos(yaw), np.sin(yaw)
    return Transform(np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]), np.array([x, y, 0.0]))


def test_velocity_is_in_the_current_base_link():
    heading = np.radians(90.0)  # driving north at 8 m/s: forward in base_link
    np.testing.assert_allclose(ego_status(yawed(0, 4, heading), yawed(0, 0, heading), 0.5), [8.0, 0.0, 1.0],
                               atol=1e-6)
    np.testing.assert_allclose(ego_status(yawed(4, 0, heading), yawed(0, 0, heading), 0.5), [0.0, -8.0, 1.0],
                               atol=1e-6)  # sliding east = to the right
    assert not ego_status(yawed(0, 0, 0), None, 0.5).any()
    assert not ego_status(yawed(0, 0, 0), yawed(0, 0, 0), 0.0).any()


def test_from_the_transform_tree_as_the_node_keeps_it():
    """map -> odom (static) -> base_link (/tf at 20 Hz): 10 m/s forward, whatever the chain."""
    buffer = TransformBuffer()
    buffer.set_transform("map", "odom", 0, yawed(100.0, -20.0, 0.3), static=True)
    for t in np.arange(0.0, 2.0, 0.05):
        buffer.set_transform("odom", "base_link", int(t * 1e9), yawed(10.0 * t, 0.0, 0.0))
    np.testing.assert_allclose(ego_status_from_tf(buffer, "map", "base_link", int(1.52e9)), [10.0, 0.0, 1.0],
                               atol=1e-6)  # between two /tf stamps: interpolated
    assert not ego_status_from_tf(buffer, "map", "base_link", int(0.2e9)).any()  # less than half a second of /tf
    assert not ego_status_from_tf(buffer, "map", "base_link", int(5e9)).any()  # no pose at the frame
    assert not ego_status_from_tf(TransformBuffer(), "map", "base_link", 0).any()


def test_the_dataset_status_follows_the_ego_poses(synth_dataset):
    nusc = NuScenes(version=synth_dataset.version, dataroot=str(synth_dataset.dataroot), verbose=False)
    scene = nusc.scene[0]
    first = nusc.get("sample", scene["first_sample_token"])
    assert not sample_ego_status(nusc, first).any()  # nothing before the first keyframe
    sample = nusc.get("sample", nusc.get("sample", first["next"])["next"])
    status = sample_ego_status(nusc, sample)
    previous = nusc.get("sample", sample["prev"])
    lidar = [nusc.get("sample_data", s["data"]["LIDAR_TOP"]) for s in (previous, sample)]
    poses = [nusc.get("ego_pose", r["ego_pose_token"]) for r in lidar]
    speed = np.linalg.norm(np.subtract(poses[1]["translation"], poses[0]["translation"])[:2]) / (
        (lidar[1]["timestamp"] - lidar[0]["timestamp"]) / 1e6)
    assert status[2] == 1.0 and np.hypot(*status[:2]) == pytest.approx(speed, rel=1e-5)
    assert speed > 1.0 and status[0] > 0.9 * speed  # the ego drives forwards


def test_the_planner_reads_the_status_and_the_predictor_checks_it():
    config = load_model_config(TINY)
    assert config.ego_status
    torch.manual_seed(0)
    model = build_student(config).eval()
    images = torch.zeros(1, 6, 3, config.image_height, config.image_width)
    k = torch.eye(3).repeat(1, 6, 1, 1)
    k[..., 0, 0] = k[..., 1, 1] = 200.0
    pose = torch.eye(4).repeat(1, 6, 1, 1)
    command = torch.tensor([2])
    with torch.no_grad():
        slow = model(images, k, pose, command, ego_status=torch.tensor([[1.0, 0.0, 1.0]]))["plan"]
        fast = model(images, k, pose, command, ego_status=torch.tensor([[12.0, 0.0, 1.0]]))["plan"]
    assert not torch.allclose(slow, fast)
    with pytest.raises(ValueError, match="pass ego_status"):
        model(images, k, pose, command)
    predictor = Predictor(model, config, "cpu")
    frame = ([np.zeros((900, 1600, 3), np.uint8)] * 6, [np.diag([1200.0, 1200.0, 1.0])] * 6, [np.eye(4)] * 6, 2, 0)
    with pytest.raises(ValueError, match="ego_status must be 3 finite numbers"):
        predictor.predict(*frame, ego_status=np.array([np.nan, 0.0, 1.0]))
    unknown = predictor.predict(*frame)
    assert np.allclose(unknown.ego_plan, predictor.predict(*frame, ego_status=np.zeros(3)).ego_plan)
