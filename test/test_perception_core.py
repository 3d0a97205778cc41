"""The node's decisions without ROS running (tinybev_ros/perception_core.py): calibration and transforms, goal to
command, frame assembly with its faults, camera blanking, inference, the publishing threshold and tracking.

Inputs are what the node hands the core: real JPEG bytes in real sensor_msgs/CompressedImage messages (decoded by
the node's own decoder), the shipped nuScenes rig as /tf_static, and the shipped tiny student."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch
from sensor_msgs.msg import CompressedImage

from tinybev_ros.geometry import CAMERA_NAMES, BevGrid, Rig, Transform, yaw_to_quat
from tinybev_ros.inference import Predictor
from tinybev_ros.model.preprocess import decode_reduction
from tinybev_ros.paths import default_checkpoint
from tinybev_ros.perception_core import CameraImage, FrameInputs, PerceptionCore, command_toward
from tinybev_ros.predictions import Predictions
from tinybev_ros.ros import messages as M
from tinybev_ros.ros.node_config import PerceptionNodeConfig
from tinybev_ros.score_thresholds import SCORE_THRESHOLDS
from tinybev_ros.taxonomy import DETECTION_CLASSES, Command

RIG = Rig.load()
STAMP = 1_700_000_000_000_000_000


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.from_checkpoint(default_checkpoint(), device="cpu")


def jpeg(width: int = 1600, height: int = 900, seed: int = 0) -> bytes:
    image = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", image)[1].tobytes()


def camera_image(data: bytes, frame_id: str, stamp_ns: int = STAMP) -> CameraImage:
    msg = CompressedImage(format="jpeg", data=data)
    return CameraImage(frame_id, stamp_ns, lambda size, r: M.decode_compressed(msg, size, r))


class Faults(Counter):
    def __call__(self, kind: str, message: str) -> None:
        self[kind] += 1


def calibrated_core(predictor: Predictor, **config) -> tuple[PerceptionCore, Faults]:
    """A core that has seen every camera's CameraInfo, /tf_static of the rig and map -> base_link at STAMP."""
    faults = Faults()
    core = PerceptionCore(predictor, replace(PerceptionNodeConfig(), **config), faults)
    for name, camera in RIG.cameras.items():
        core.set_camera_info(name, camera.intrinsic, (camera.width, camera.height), name)
        core.set_transform("base_link", name, 0, camera.sensor_to_ego, static=True)
    core.set_transform("map", "base_link", STAMP, Transform(np.eye(3), np.array([100.0, 50.0, 0.0])), static=False)
    return core, faults


def test_command_follows_the_parameter_or_the_goal_in_any_frame(predictor) -> None:
    assert command_toward(np.array([40.0, 12.0, 0.0]), 5.0) == Command.LEFT
    assert command_toward(np.array([40.0, -12.0, 0.0]), 5.0) == Command.RIGHT
    assert command_toward(np.array([40.0, 2.0, 0.0]), 5.0) == Command.STRAIGHT
    core, faults = calibrated_core(predictor)
    assert core.command() == Command.STRAIGHT  # "goal" without a goal
    core.set_goal("map", np.array([140.0, 70.0, 0.0]))  # 40 m ahead, 20 m to the left of the ego at (100, 50)
    assert core.command() == Command.LEFT
    core.set_goal("", np.array([140.0, 30.0, 0.0]))  # no frame_id: the map frame
    assert core.command() == Command.RIGHT
    assert not faults
    for broken in ([np.nan, 30.0, 0.0], [140.0, np.inf, 0.0]):  # refused by name; the last goal still steers
        assert not core.set_goal("map", np.array(broken))
        assert core.command() == Command.RIGHT
    assert faults.pop("bad_goal") == 2
    core.set_goal("odom", np.array([140.0, 30.0, 0.0]))  # a frame not in the tree: straight and a fault naming it
    assert core.command() == Command.STRAIGHT and faults["goal_frame_unknown"] == 1
    core.cfg = replace(core.cfg, command="left")  # a dynamic parameter change takes effect at once
    assert core.command() == Command.LEFT


def test_a_goal_given_in_base_link_is_a_fixed_place_the_car_drives_to(predictor) -> None:
    """rviz2's 2D Goal Pose comes in its fixed frame, base_link in the shipped config: 40 m ahead and 20 m to the
    left is a place in the map, reached when the car gets there (it used to stay 20 m to the left for ever)."""
    core, faults = calibrated_core(predictor)
    core.set_goal("base_link", np.array([40.0, 20.0, 0.0]), STAMP)
    assert core.command() == Command.LEFT
    at_goal = Transform(np.eye(3), np.array([140.0, 70.0, 0.0]))
    core.set_transform("map", "base_link", STAMP + 10**10, at_goal, static=False)
    assert core.command() == Command.STRAIGHT
    np.testing.assert_allclose(core.goal_in_map(), [140.0, 70.0, 0.0])
    core.set_goal("base_link", np.array([40.0, -20.0, 0.0]), STAMP + 10**10)  # a new goal from the new place
    assert core.command() == Command.RIGHT and not faults


def test_the_goal_is_seen_from_the_pose_at_the_frame_s_stamp(predictor) -> None:
    """A localisation ahead of the cameras: the frame at STAMP steers from where the car was at STAMP."""
    core, faults = calibrated_core(predictor)
    core.set_goal("map", np.array([140.0, 70.0, 0.0]))  # 20 m to the left of the ego at STAMP
    core.set_transform("map", "base_link", STAMP + 10**9, Transform(np.eye(3), np.array([140.0, 70.0, 0.0])),
                       static=False)  # one second later the car is there
    assert core.command(STAMP) == Command.LEFT
    assert core.command() == Command.STRAIGHT  # no frame stamp: the newest pose
    assert core.command(STAMP + 5 * 10**9) == Command.STRAIGHT and not faults  # none at the stamp: the newest


def test_the_objects_frame_is_placed_at_the_frame_s_stamp_or_named_as_a_fault(predictor) -> None:
    core, faults = calibrated_core(predictor)
    placed = core.base_in("map", STAMP)
    assert placed is not None and np.allclose(placed.translation, [100.0, 50.0, 0.0]) and not faults
    assert core.base_in("utm", STAMP) is None and faults["objects_frame_unknown"] == 1  # no such frame in /tf


def test_a_camera_chain_with_a_late_tf_edge_is_waited_for(predictor) -> None:
    """A camera on a moving joint (its edge on /tf) whose transform arrives a few ms after the image."""
    import threading

    core, faults = calibrated_core(predictor, tf_timeout_ms=2000.0)
    mount = Transform(np.eye(3), np.array([1.0, 0.0, 1.5]))
    core.set_transform("base_link", "mount", STAMP - 10**8, mount, static=False)
    late = threading.Timer(0.05, lambda: core.set_transform("base_link", "mount", STAMP + 10**8, mount,
                                                            static=False))
    late.start()
    try:
        core.set_transform("mount", "CAM_FRONT_moving", 0, RIG.cameras["CAM_FRONT"].sensor_to_ego, static=True)
        assert core.camera_to_base("CAM_FRONT", "CAM_FRONT_moving", STAMP) is not None and not faults
    finally:
        late.cancel()
    core.cfg = replace(core.cfg, tf_timeout_ms=0.0)  # no wait: the lookup past the newest edge is a fault
    assert core.camera_to_base("CAM_FRONT", "CAM_FRONT_moving", STAMP + 2 * 10**8) is None
    assert faults["missing_tf"] == 1


def test_frames_assemble_at_the_reduced_decode_scale_with_intrinsics_scaled_alike(predictor) -> None:
    core, faults = calibrated_core(predictor)
    data = jpeg()
    inputs = core.assemble({name: camera_image(data, name) for name in CAMERA_NAMES}, STAMP)
    reduction = decode_reduction(1600, predictor.config)
    assert reduction > 1 and not faults
    assert [image.shape for image in inputs.images] == [(900 // reduction, 1600 // reduction, 3)] * 6
    k = RIG.cameras[CAMERA_NAMES[0]].intrinsic
    np.testing.assert_allclose(np.diag(inputs.intrinsics[0])[:2], np.diag(k)[:2] / reduction)  # focal lengths
    np.testing.assert_allclose(inputs.intrinsics[0][:2, 2], (k[:2, 2] + 0.5) / reduction - 0.5)  # pixel centres
    np.testing.assert_allclose(inputs.cam_to_ego[1], RIG.cameras[CAMERA_NAMES[1]].sensor_to_ego.matrix)
    core.cfg = replace(core.cfg, jpeg_reduced_decode=False)
    assert core.assemble({name: camera_image(data, name) for name in CAMERA_NAMES}, STAMP).images[0].shape == \
        (900, 1600, 3)


def test_optical_frames_through_a_chain_are_found_from_the_image_header(predictor) -> None:
    core, faults = calibrated_core(predictor)
    rotate = Transform.from_nuscenes([0.0, 0.0, 0.0], yaw_to_quat(0.3))
    front = RIG.cameras["CAM_FRONT"].sensor_to_ego
    core.set_transform("base_link", "camera_link", 0, front @ rotate, static=True)
    core.set_transform("camera_link", "camera_optical_frame", 0, rotate.inverse(), static=True)
    frames = {name: camera_image(jpeg(), name) for name in CAMERA_NAMES}
    frames["CAM_FRONT"] = camera_image(jpeg(), "camera_optical_frame")
    inputs = core.assemble(frames, STAMP)
    np.testing.assert_allclose(inputs.cam_to_ego[CAMERA_NAMES.index("CAM_FRONT")], front.matrix, atol=1e-9)
    assert not faults


def test_each_unusable_input_is_one_named_fault_and_no_frame(predictor) -> None:
    core, faults = calibrated_core(predictor)
    good = jpeg()
    cases = {
        "missing_tf": ("CAM_FRONT", camera_image(good, "camera_nobody_published")),
        "wrong_image_size": ("CAM_BACK", camera_image(jpeg(800, 450), "CAM_BACK")),
        "corrupt_image": ("CAM_FRONT_LEFT", camera_image(b"\xff\xd8 not a jpeg", "CAM_FRONT_LEFT")),
        "bad_encoding": ("CAM_BACK_LEFT", camera_image(b"RIFF\x00\x00\x00\x00WEBPVP8 ", "CAM_BACK_LEFT")),
    }
    for kind, (camera, bad) in cases.items():
        frames = {name: camera_image(good, name) for name in CAMERA_NAMES}
        frames[camera] = bad
        assert core.assemble(frames, STAMP) is None, kind
        assert faults[kind] == 1, (kind, faults)
    fresh, fresh_faults = calibrated_core(predictor)
    fresh.intrinsics.pop("CAM_BACK")  # CameraInfo never seen for one camera
    assert fresh.assemble({name: camera_image(good, name) for name in CAMERA_NAMES}, STAMP) is None
    assert fresh_faults == {"no_camera_info": 1}


def test_a_silent_camera_is_blanked_when_it_was_calibrated_and_skipped_when_it_never_was(predictor) -> None:
    core, faults = calibrated_core(predictor)
    frames = {name: camera_image(jpeg(), name) for name in CAMERA_NAMES}
    frames["CAM_BACK"] = None
    inputs = core.assemble(frames, STAMP)
    back = CAMERA_NAMES.index("CAM_BACK")
    assert inputs.images[back].shape == (900, 1600, 3) and not inputs.images[back].any()
    assert faults == {"missing_camera": 1}
    core.intrinsics.pop("CAM_BACK")
    assert core.assemble(frames, STAMP) is None and faults["no_camera_info"] == 1


def test_inference_publishes_only_finite_frames_above_the_threshold_with_track_ids(predictor) -> None:
    core, faults = calibrated_core(predictor, score_threshold=0.0)
    frames = {name: camera_image(jpeg(seed=i), name) for i, name in enumerate(CAMERA_NAMES)}
    everything = core.infer(core.assemble(frames, STAMP), STAMP)
    assert len(everything) > 0 and (everything.track_ids[everything.scores >= 0.2] >= 0).all()
    core.cfg = replace(core.cfg, score_threshold=float(np.median(everything.scores)))
    fewer = core.infer(core.assemble(frames, STAMP + 500_000_000), STAMP + 500_000_000)
    assert (fewer.scores >= core.cfg.score_threshold).all() and len(fewer) < len(everything)
    assert faults == {"no_ego_pose": 1}  # map -> base_link is known at STAMP only (never extrapolated)
    faults.clear()

    broken = Predictor(predictor.model, predictor.config, "cpu")
    original = broken.model.heads.planner.mlp[4].weight.detach().clone()
    with torch.no_grad():
        broken.model.heads.planner.mlp[4].weight.fill_(1e38)  # finite weights, overflowing output
    try:
        core.predictor = broken
        assert core.infer(core.assemble(frames, STAMP), STAMP) is None
        assert faults == {"non_finite_output": 1}
    finally:
        with torch.no_grad():
            broken.model.heads.planner.mlp[4].weight.copy_(original)


class ScriptedPredictor:
    """Stands in for the model: one parked car 10 m ahead, its score the next of `scores` each frame."""

    def __init__(self, scores: list[float]) -> None:
        self.scores = iter(scores)

    def predict(self, images, intrinsics, cam_to_ego, command: int, stamp_ns: int, ego_status=None) -> Predictions:
        return Predictions(
            stamp_ns=stamp_ns, centers=np.array([[10.0, 0.0, 0.0]]), sizes_wlh=np.array([[1.9, 4.5, 1.6]]),
            yaws=np.zeros(1), velocities=np.zeros((1, 2)), scores=np.array([next(self.scores)]),
            labels=np.array([DETECTION_CLASSES.index("car")]), track_ids=np.full(1, -1, np.int64),
            forecasts=np.zeros((1, 1, 12, 2)), forecast_probs=np.ones((1, 1)), map_probs=np.zeros((4, 4, 4)),
            occupancy=np.zeros((5, 4, 4)), ego_plan=np.zeros((6, 2)), command=command, grid=BevGrid(-2, 2, -2, 2, 1.0))


def test_a_track_coasts_through_frames_below_the_publishing_threshold() -> None:
    """Four frames at 0.25 (tracked from SCORE_THRESHOLDS.track 0.2, published from 0.3) are one more than the
    tracker's max_age 3: a tracker fed only published boxes lost the car and gave it a new id in frame 5."""
    scores = [0.5, 0.25, 0.25, 0.25, 0.25, 0.5]
    faults = Faults()
    core = PerceptionCore(ScriptedPredictor(scores), PerceptionNodeConfig(), faults)
    assert core.cfg.score_threshold == SCORE_THRESHOLDS.publish and core.cfg.tracker_max_age == 3
    inputs = FrameInputs([], np.zeros((0, 3, 3)), np.zeros((0, 4, 4)))
    published = []
    for k in range(len(scores)):
        stamp = STAMP + k * 500_000_000
        core.set_transform("map", "base_link", stamp, Transform(np.eye(3), np.array([100.0, 50.0, 0.0])), False)
        published.append(core.infer(inputs, stamp))
    assert [len(pred) for pred in published] == [1, 0, 0, 0, 0, 1] and not faults
    assert published[5].track_ids[0] == published[0].track_ids[0] >= 0


def test_a_frame_waits_for_a_localisation_that_lags_the_cameras() -> None:
    """map -> base_link was looked up at once: a pose published 30 ms after the images left the frame without its
    ego pose (no_ego_pose: untracked, ego speed unknown), as on a robot whose localisation lags its cameras."""
    pose = Transform(np.eye(3), np.array([100.0, 50.0, 0.0]))
    inputs = FrameInputs([], np.zeros((0, 3, 3)), np.zeros((0, 4, 4)))
    for timeout_ms, expected in ((100.0, {}), (0.0, {"no_ego_pose": 1})):
        faults = Faults()
        core = PerceptionCore(ScriptedPredictor([0.5]), replace(PerceptionNodeConfig(), tf_timeout_ms=timeout_ms),
                              faults)
        core.set_transform("map", "base_link", STAMP - 100_000_000, pose, False)
        late = threading.Timer(0.03, core.set_transform, ("map", "base_link", STAMP + 20_000_000, pose, False))
        late.start()
        assert len(core.infer(inputs, STAMP)) == 1
        late.join()
        assert dict(faults) == expected, timeout_ms
    faults = Faults()  # a tree without the map frame is not waited for
    core = PerceptionCore(ScriptedPredictor([0.5]), replace(PerceptionNodeConfig(), tf_timeout_ms=10_000.0), faults)
    started = time.monotonic()
    core.infer(inputs, STAMP)
    assert time.monotonic() - started < 5.0 and dict(faults) == {"no_ego_pose": 1}
