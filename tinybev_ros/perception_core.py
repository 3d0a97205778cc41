"""What `tinybev_node` does between its subscriptions and its publishers, without ROS.

As Autoware separates a core library from its node: the node (ros/perception_node.py) turns messages into the
plain values below and publishes what `infer` returns; everything it decides lives here and is unit-tested without
a middleware (test/test_perception_core.py):
- calibration and the transform tree: CameraInfo intrinsics and image sizes, /tf and /tf_static in a
  `TransformBuffer`, cameras located through their images' header frame_id (URDF optical frames);
- the planning command: fixed (left / right / straight) or towards the last goal, in any frame;
- frame assembly: each camera's image decoded (JPEGs at the smallest scale the model allows, K scaled with it),
  a silent camera blanked when the node allows it, every unusable input one named fault and no frame;
- inference, the refusal of non-finite outputs, tracking in the fixed frame and the publishing threshold.

Faults go to the `fault(kind, message)` callback the node gives (it counts them for /diagnostics and logs the
first of each kind).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tinybev_ros.ego_motion import ego_status_from_tf
from tinybev_ros.errors import ImageSizeError, InputError, UnsupportedEncoding
from tinybev_ros.geometry import Transform
from tinybev_ros.model.preprocess import decode_reduction, scale_intrinsics
from tinybev_ros.predictions import Predictions
from tinybev_ros.taxonomy import Command
from tinybev_ros.tracking import Tracker, TrackerConfig
from tinybev_ros.transform_buffer import TransformBuffer, TransformError

if TYPE_CHECKING:
    from tinybev_ros.inference import Predictor
    from tinybev_ros.ros.node_config import PerceptionNodeConfig

Fault = Callable[[str, str], None]


def command_toward(goal_in_base: np.ndarray, lateral_threshold_m: float) -> int:
    """Navigation command for a goal in base_link: turn when it lies further than the threshold to a side."""
    if goal_in_base[1] > lateral_threshold_m:
        return int(Command.LEFT)
    if goal_in_base[1] < -lateral_threshold_m:
        return int(Command.RIGHT)
    return int(Command.STRAIGHT)


@dataclass(frozen=True)
class CameraImage:
    """One camera's image of a frame set, not decoded yet (decoding is the worker's job, not the callback's).

    decode(expected (width, height), reduction) -> RGB uint8; raises ImageSizeError / InputError. A raw image
    (`compressed` False) always decodes at full scale.
    """

    frame_id: str
    stamp_ns: int
    decode: Callable[[tuple[int, int], int], np.ndarray]
    compressed: bool = True


@dataclass
class FrameInputs:
    images: list[np.ndarray]
    intrinsics: np.ndarray  # (N, 3, 3), scaled to the decoded images
    cam_to_ego: np.ndarray  # (N, 4, 4) camera -> base_frame


class PerceptionCore:
    """State and decisions of the perception node; `cfg` may be swapped at any time (dynamic parameters)."""

    def __init__(self, predictor: Predictor, cfg: PerceptionNodeConfig, fault: Fault) -> None:
        self.predictor = predictor
        self.cfg = cfg
        self.fault = fault
        self.tf = TransformBuffer()  # /tf_static and /tf: camera chains, map -> odom -> base_link
        self.intrinsics: dict[str, np.ndarray] = {}
        self.image_sizes: dict[str, tuple[int, int]] = {}  # (width, height) from CameraInfo
        self.camera_frames: dict[str, str] = {}  # camera -> its frame_id (from CameraInfo)
        self.goal: tuple[str, np.ndarray, int] | None = None  # (frame_id, position, stamp) of the last goal
        self._goal_in_map: np.ndarray | None = None  # the goal fixed in map_frame, once its frame could be placed
        self.tracker = Tracker(TrackerConfig(max_age=cfg.tracker_max_age))

    # ------------------------------------------------------------------------------------------ inputs
    def set_camera_info(self, camera: str, intrinsic: np.ndarray, size: tuple[int, int], frame_id: str) -> None:
        self.intrinsics[camera] = intrinsic
        self.image_sizes[camera] = size
        self.camera_frames[camera] = frame_id or camera

    def set_transform(self, parent: str, child: str, stamp_ns: int, transform: Transform, static: bool) -> None:
        try:
            self.tf.set_transform(parent, child, stamp_ns, transform, static=static)
        except TransformError as exc:
            self.fault("bad_tf", str(exc))

    def set_goal(self, frame_id: str, position: np.ndarray, stamp_ns: int = 0) -> bool:
        """Take a goal; a non-finite one is refused (a fault), keeping the previous goal. True if taken."""
        position = np.asarray(position, dtype=float)
        if not np.isfinite(position).all():
            self.fault("bad_goal", f"goal {position.tolist()} in {frame_id!r} is not finite; keeping the previous goal")
            return False
        self.goal = (frame_id or self.cfg.map_frame, position, stamp_ns)
        self._goal_in_map = None
        return True

    # --------------------------------------------------------------------------------------- decisions
    def command(self, stamp_ns: int | None = None) -> int:
        """The planning command: the fixed one the `command` parameter names, or towards the goal (straight
        without a goal or while the goal's frame cannot be placed in map_frame, a fault). The goal is seen from
        the ego pose at the frame's `stamp_ns` (the newest pose if there is none at it): with the newest, a goal
        near the lateral threshold flipped with the localisation's lead over the cameras."""
        choice = self.cfg.command.lower()
        if choice in ("left", "right", "straight"):
            return int(Command[choice.upper()])
        goal = self.goal_in_map()
        if goal is None:
            return int(Command.STRAIGHT)
        try:
            try:
                map_to_base = self.tf.lookup(self.cfg.base_frame, self.cfg.map_frame, stamp_ns)
            except TransformError:
                map_to_base = self.tf.lookup(self.cfg.base_frame, self.cfg.map_frame)
            goal_in_base = map_to_base.apply(goal[None])[0]
        except TransformError as exc:
            self.fault("no_ego_pose", f"goal not used: {exc}")
            return int(Command.STRAIGHT)
        return command_toward(goal_in_base, self.cfg.goal_lateral_threshold_m)

    def goal_in_map(self) -> np.ndarray | None:
        """The goal as a fixed point of map_frame: a goal given in base_link (rviz2 with base_link as its fixed
        frame) is where the car was asked to go when it was set, not a point that drives along with the car."""
        if self.goal is None or self._goal_in_map is not None:
            return self._goal_in_map
        frame, position, stamp_ns = self.goal
        try:
            try:  # where the frame was when the goal was given; its newest pose if the buffer does not reach back
                to_map = self.tf.lookup(self.cfg.map_frame, frame, stamp_ns or None)
            except TransformError:
                to_map = self.tf.lookup(self.cfg.map_frame, frame)
        except TransformError as exc:
            self.fault("goal_frame_unknown", f"goal in {frame!r} cannot be placed in map_frame "
                                             f"{self.cfg.map_frame!r} ({exc}); planning straight")
            return None
        self._goal_in_map = to_map.apply(position[None])[0]
        return self._goal_in_map

    def pose_at(self, stamp_ns: int) -> Transform | None:
        """base_link in the fixed frame (map_frame, through odom if there is one) at `stamp_ns`, interpolated."""
        try:
            return self.tf.lookup(self.cfg.map_frame, self.cfg.base_frame, stamp_ns)
        except TransformError:
            return None

    def base_in(self, frame: str, stamp_ns: int) -> Transform | None:
        """base_frame in `frame` at `stamp_ns` (the objects' frame), or None with an `objects_frame_unknown` fault:
        objects published in a frame they are not in would be a silent wrong answer."""
        try:
            return self.tf.lookup(frame, self.cfg.base_frame, stamp_ns)
        except TransformError as exc:
            self.fault("objects_frame_unknown", f"objects not published: {self.cfg.base_frame} cannot be placed in "
                                                f"objects_frame {frame!r} at {stamp_ns} ns ({exc})")
            return None

    def camera_to_base(self, camera: str, frame_id: str, stamp_ns: int) -> Transform | None:
        """The camera's frame (its headers' frame_id; URDF optical frames work) in base_frame, or None (a fault).
        A chain with a /tf edge (a moving joint, a calibration node) is waited for as the ego pose is."""
        frame = frame_id or self.camera_frames.get(camera, camera)
        self.tf.wait_for(self.cfg.base_frame, frame, stamp_ns, self.cfg.tf_timeout_ms / 1e3)
        try:
            return self.tf.lookup(self.cfg.base_frame, frame, stamp_ns)
        except TransformError as exc:
            self.fault("missing_tf", f"{camera}: {exc}; frame skipped")
            return None

    def calibrated(self, camera: str) -> bool:
        """CameraInfo seen and its frame connected to base_frame."""
        return camera in self.intrinsics and self.tf.can_transform(self.cfg.base_frame,
                                                                    self.camera_frames.get(camera, camera))

    # ------------------------------------------------------------------------------------------ frames
    def assemble(self, frames: Mapping[str, CameraImage | None], stamp_ns: int) -> FrameInputs | None:
        """Decoded images and calibration of a frame set (None for a silent camera), or None (fault counted)."""
        images, intrinsics, cam_to_ego = [], [], []
        for camera in self.cfg.cameras:
            entry = frames.get(camera)
            if entry is None:
                extrinsic = self.camera_to_base(camera, "", stamp_ns) if camera in self.intrinsics else None
                if extrinsic is None:
                    self.fault("no_camera_info", f"{camera} is silent and was never calibrated; frame skipped")
                    return None
                self.fault("missing_camera", f"{camera} is silent; inferring with it blanked")
                width, height = self.image_sizes[camera]
                images.append(np.zeros((height, width, 3), np.uint8))
                intrinsics.append(self.intrinsics[camera])
                cam_to_ego.append(extrinsic.matrix)
                continue
            if camera not in self.intrinsics:
                self.fault("no_camera_info", f"no valid CameraInfo for {camera} yet; frame skipped")
                return None
            extrinsic = self.camera_to_base(camera, entry.frame_id, entry.stamp_ns)
            if extrinsic is None:
                return None
            expected = self.image_sizes[camera]
            # JPEGs decode at the smallest scale the model input allows (preprocess.decode_reduction)
            reduction = decode_reduction(expected[0], self.predictor.config) \
                if entry.compressed and self.cfg.jpeg_reduced_decode else 1
            try:
                image = entry.decode(expected, reduction)
            except ImageSizeError as exc:
                self.fault("wrong_image_size", f"{camera}: {exc}; frame skipped")
                return None
            except UnsupportedEncoding as exc:
                self.fault("bad_encoding", f"{camera}: {exc}; frame skipped")
                return None
            except InputError as exc:
                self.fault("corrupt_image", f"{camera}: {exc}; frame skipped")
                return None
            images.append(image)
            intrinsics.append(scale_intrinsics(self.intrinsics[camera], 1 / reduction, 1 / reduction))
            cam_to_ego.append(extrinsic.matrix)
        return FrameInputs(images, np.stack(intrinsics), np.stack(cam_to_ego))

    def infer(self, inputs: FrameInputs, stamp_ns: int) -> Predictions | None:
        """The published result of a frame: model, finite check, tracking, publishing threshold (None = fault).

        The tracker sees every decoded box (it keeps tracks from SCORE_THRESHOLDS.track), so a track coasts
        through frames where its object dips below the publishing threshold and keeps its id, as offline."""
        # the ego pose at the frame's stamp (planner's ego speed, tracking): a localisation that lags the cameras
        # by a few ms would otherwise leave frames untracked, and their tracks would die and be born anew
        self.tf.wait_for(self.cfg.map_frame, self.cfg.base_frame, stamp_ns, self.cfg.tf_timeout_ms / 1e3)
        pred = self.predictor.predict(inputs.images, inputs.intrinsics, inputs.cam_to_ego,
                                      command=self.command(stamp_ns),
                                      stamp_ns=stamp_ns,
                                      ego_status=ego_status_from_tf(self.tf, self.cfg.map_frame, self.cfg.base_frame,
                                                                    stamp_ns))
        if broken := pred.non_finite():  # never publish garbage with status OK
            self.fault("non_finite_output", f"frame at {stamp_ns}: the model output NaN/inf in "
                                            f"{', '.join(broken)}; frame not published")
            return None
        pose = self.pose_at(stamp_ns)
        if pose is None:  # the planner had no ego speed either (ego_status_from_tf)
            self.fault("no_ego_pose", f"no {self.cfg.map_frame} -> {self.cfg.base_frame} transform at {stamp_ns} ns: "
                                      "tracked in base_link, ego speed unknown (a robot localised in odom only: "
                                      "map_frame:=odom)")
        tracked = self.tracker.update(pred, ego_to_world=pose)
        return tracked.select(tracked.scores >= self.cfg.score_threshold)
