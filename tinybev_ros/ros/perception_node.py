"""`tinybev_node`: six synchronized cameras in; boxes, map, occupancy, forecasts and the ego plan out.

A thin adapter: parameters, subscriptions, publishers, threads and diagnostics live here; every decision about a
frame (calibration, transforms, command, frame assembly, inference, threshold, tracking) is made by the ROS-free
`PerceptionCore` (tinybev_ros/perception_core.py).

Threading: subscription callbacks only file messages (the synchronizer is cheap), so input is never
blocked. A complete camera set joins a queue of `frame_queue_size` sets; a worker thread decodes, runs the
`Predictor`, tracks and publishes. When the queue is full the oldest waiting set is dropped and counted, which
bounds memory and latency under bursts: size 1 (default) is latest wins, for a live robot; a bag replayed for
evaluation (`tinybev demo`) uses a longer queue so that every frame is processed, in order, despite hiccups.

Faults never stop the node: each kind is logged once with a clear message and counted in /diagnostics, whose
level is WARN for faults counted since its previous report (the running totals stay in its values).
"""

from __future__ import annotations

import inspect
import os
import signal
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import fields, replace

import numpy as np
import rclpy
from autoware_perception_msgs.msg import PredictedObjects
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import OccupancyGrid, Path
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_policy_name_from_kind
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from tf2_msgs.msg import TFMessage
from vision_msgs.msg import Detection3DArray
from visualization_msgs.msg import MarkerArray

from tinybev_ros.errors import CheckpointError, InputError
from tinybev_ros.geometry import Transform
from tinybev_ros.perception_core import CameraImage, FrameInputs, PerceptionCore
from tinybev_ros.predictions import Predictions
from tinybev_ros.ros import messages as M
from tinybev_ros.ros.launch_plan import INPUTS_MARKER, READY_MARKER
from tinybev_ros.ros.node_config import NodeConfigError, ParameterSpec, PerceptionNodeConfig, parameter_specs, validate
from tinybev_ros.ros.predicted_objects import predicted_objects_msg
from tinybev_ros.sync import CameraSynchronizer, FrameSet, SyncConfig
from tinybev_ros.taxonomy import MAP_CLASSES

try:
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble's rclpy (event_handler is Iron's name for it)
    from rclpy.qos_event import SubscriptionEventCallbacks
MATCHED_EVENT = "matched" in inspect.signature(SubscriptionEventCallbacks).parameters  # Iron and later

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
# tf2_ros's listener depth: a full-rate replay (`bag convert --sweeps`) sends about 100 /tf messages a second, and a
# reader 10 deep lost some while inference held the interpreter lock
TF_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
# Grids are offered transient-local (the newest kept for late joiners), which volatile readers match too: rviz2's
# Map display and nav2's costmap layers subscribe transient-local by default, and a volatile offer is incompatible.
GRID_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
CAMERA_INFO_GRACE_S = 0.5  # a frame set whose CameraInfo has never arrived waits this long for it
IMAGE_RELIABILITY = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}


class PerceptionNode(Node):
    def __init__(self, **node_kwargs) -> None:
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        super().__init__("tinybev_node", **node_kwargs)
        for spec in parameter_specs():
            self.declare_parameter(spec.name, spec.default, descriptor(spec))
        unknown = sorted(set(self._parameter_overrides) - {s.name for s in parameter_specs()} - {"use_sim_time"})
        if unknown:
            self.get_logger().warning(f"unknown parameter(s) ignored: {', '.join(unknown)} (a typo in the params "
                                      "file? `ros2 param list` shows the valid names)")
        cfg = PerceptionNodeConfig(**{f.name: self.get_parameter(f.name).value for f in fields(PerceptionNodeConfig)})
        validate(cfg)
        self.faults: Counter[str] = Counter()  # running totals since start-up
        self._faults_reported: Counter[str] = Counter()  # the totals the previous diagnostics report saw
        # Sets replaced while inference was busy. Not a fault: with frame_queue_size 1 (latest wins, live) it is the
        # designed answer to frames that come faster than inference; a value beside sync_dropped, as output_rate_hz
        # says whether the node keeps up, so /diagnostics does not warn for as long as the machine is loaded.
        self.dropped_busy = 0
        self._logged: set[str] = set()
        self._lock = threading.Lock()
        self._pending: deque[FrameSet] = deque()  # at most frame_queue_size; the oldest is dropped
        self._wakeup = threading.Event()
        self._latency_ms: deque[float] = deque(maxlen=200)
        self._stamp_latency_ms: deque[float] = deque(maxlen=200)
        self._arrivals: deque[float] = deque(maxlen=120)
        self._outputs: deque[float] = deque(maxlen=120)
        self.published = 0
        self.images_received: Counter[str] = Counter()
        self._late_at_last_set = 0  # the synchronizer's count of late images then

        self.predictor = self._load_predictor(cfg)
        self.get_logger().info(f"warm-up frame (default rig) took {self.predictor.warm_up():.0f} ms")
        self.core = PerceptionCore(self.predictor, cfg, self.fault)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.sync = CameraSynchronizer(cfg.cameras, SyncConfig(
            tolerance_ns=int(cfg.sync_tolerance_ms * 1e6), queue_size=cfg.sync_queue_size,
            reference_camera="CAM_FRONT" if "CAM_FRONT" in cfg.cameras else cfg.cameras[0],
            allow_missing=cfg.allow_missing_cameras, missing_timeout_ns=int(cfg.missing_camera_timeout_ms * 1e6)))

        raw = cfg.image_transport == "raw"
        # Sensor-data QoS with a deeper queue than its 5: while the inference thread holds the GIL the callbacks fall
        # behind, and a 12 Hz camera would lose frames in the reader's queue before the synchronizer sees them.
        image_qos = QoSProfile(depth=20, reliability=IMAGE_RELIABILITY[cfg.image_reliability],
                               durability=DurabilityPolicy.VOLATILE)
        camera_info_qos = QoSProfile(depth=10, reliability=image_qos.reliability)
        # Image writers matched per camera (DDS match events): best-effort images sent before the match are lost,
        # so a replay tool can wait for "cameras_with_writers" in /diagnostics before it starts publishing.
        self.camera_writers: Counter[str] = Counter()
        self._image_subscriptions = {}  # camera -> its image reader (Humble counts writers on its topic)
        for camera in cfg.cameras:
            topic = cfg.camera_topic("raw_topic" if raw else "compressed_topic", camera)
            matched = {"matched": lambda info, c=camera: self.camera_writers.__setitem__(c, info.current_count)}
            events = SubscriptionEventCallbacks(
                **(matched if MATCHED_EVENT else {}),
                message_lost=lambda info, c=camera: self._on_images_lost(c, info.total_count_change),
                incompatible_qos=lambda info, t=topic: self._on_incompatible_qos(t, info.last_policy_kind))
            self._image_subscriptions[camera] = self.create_subscription(
                Image if raw else CompressedImage, topic, lambda msg, c=camera: self._on_image(c, msg), image_qos,
                event_callbacks=events)
            self.create_subscription(CameraInfo, cfg.camera_topic("camera_info_topic", camera),
                                     lambda msg, c=camera: self._on_camera_info(c, msg), camera_info_qos)
        self.create_subscription(TFMessage, "/tf_static", lambda msg: self._on_tf(msg, static=True), LATCHED)
        self.create_subscription(TFMessage, "/tf", lambda msg: self._on_tf(msg, static=False), TF_QOS)
        self.create_subscription(PoseStamped, cfg.goal_topic, self._on_goal, RELIABLE)

        self.pub_detections = self.create_publisher(Detection3DArray, "detections", RELIABLE)
        self.pub_objects = self.create_publisher(PredictedObjects, "objects", RELIABLE)
        self.pub_map = {layer: self.create_publisher(OccupancyGrid, f"map/{layer}", GRID_QOS) for layer in MAP_CLASSES}
        self.pub_occupancy = self.create_publisher(OccupancyGrid, "occupancy", GRID_QOS)
        self.pub_future_occupancy = [self.create_publisher(OccupancyGrid, f"occupancy/future_{k}", GRID_QOS)
                                     for k in range(1, self.predictor.config.occupancy_frames)]
        self.pub_plan = self.create_publisher(Path, "ego_trajectory", RELIABLE)
        self.pub_paths = self.create_publisher(MarkerArray, "predicted_paths", RELIABLE)
        self.pub_markers = self.create_publisher(MarkerArray, "markers", RELIABLE)
        self.pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", RELIABLE)
        self.pub_images = None
        if cfg.publish_images:
            self._create_image_publishers()
        self._inputs_matched_ticks = 0  # diagnostics periods every camera's image reader has had a writer
        self._last_set = time.monotonic()  # when the synchronizer last formed a camera set (or start-up, after warm-up)
        # Wall-clock period: with use_sim_time a paused or not yet started replay must still get diagnostics.
        self.create_timer(cfg.diagnostics_period_s, self._publish_diagnostics,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._worker = threading.Thread(target=self._work, name="tinybev-inference", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"{READY_MARKER} {len(cfg.cameras)} cameras ({cfg.image_transport}), device {self.predictor.device}, "
            f"outputs under {self.get_namespace().rstrip('/')}/")

    @property
    def cfg(self) -> PerceptionNodeConfig:
        """The parameters in force (the core's: a dynamic change swaps them there)."""
        return self.core.cfg

    # ------------------------------------------------------------ set-up
    def _create_image_publishers(self) -> None:
        self.pub_images = (self.create_publisher(Image, "bev_image", RELIABLE),
                           self.create_publisher(Image, "camera_overlay", RELIABLE))

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        """`ros2 param set` on a dynamic parameter: validated like at start-up, then used from the next frame.
        (The read-only ones are refused by rclpy itself, from their descriptors.)"""
        changed = {p.name: p.value for p in parameters if p.name in {f.name for f in fields(PerceptionNodeConfig)}}
        if not changed:
            return SetParametersResult(successful=True)
        candidate = replace(self.cfg, **changed)
        try:
            validate(candidate)
        except NodeConfigError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        if candidate.publish_images and self.pub_images is None:
            self._create_image_publishers()
        self.core.cfg = candidate  # one reference swap: the worker sees the old or the new config, never a mix
        self.get_logger().info("parameters changed: " + ", ".join(f"{k}={v!r}" for k, v in changed.items()))
        return SetParametersResult(successful=True)

    @staticmethod
    def _load_predictor(cfg: PerceptionNodeConfig):
        import torch

        from tinybev_ros.device import DeviceError, resolve_device
        from tinybev_ros.inference import Predictor
        from tinybev_ros.paths import default_checkpoint

        threads = cfg.inference_threads or max(1, (os.cpu_count() or 2) - 1)
        torch.set_num_threads(threads)
        try:
            device = resolve_device(cfg.device)
        except DeviceError as exc:
            raise NodeConfigError(f"parameter {exc}") from None
        path = cfg.checkpoint or default_checkpoint()
        try:
            return Predictor.from_checkpoint(path, device=device, precision=cfg.precision)
        except CheckpointError:
            raise
        except ValueError as exc:  # a precision this device cannot run
            raise NodeConfigError(f"parameter precision is {cfg.precision!r}: {exc}") from None

    def fault(self, kind: str, message: str, count: int = 1) -> None:
        """Count a fault and log it the first time this kind occurs."""
        self.faults[kind] += count
        if kind not in self._logged:
            self._logged.add(kind)
            self.get_logger().warning(f"{message} (further '{kind}' faults are counted in /diagnostics)")

    # ------------------------------------------------------------ callbacks (cheap, never block)
    def _on_image(self, camera: str, msg) -> None:
        self._arrivals.append(time.monotonic())
        self.images_received[camera] += 1
        stamp_ns = M.to_ns(msg.header.stamp)
        if isinstance(msg, Image):
            image = CameraImage(msg.header.frame_id, stamp_ns, lambda size, _, m=msg: M.decode_raw(m, size), False)
        else:
            image = CameraImage(msg.header.frame_id, stamp_ns, lambda size, r, m=msg: M.decode_compressed(m, size, r))
        with self._lock:
            before = self.sync.stats.resets
            frameset = self.sync.add(camera, stamp_ns, (image, time.monotonic()))
            if self.sync.stats.resets != before:  # the tracker resets itself when its frames go back in time
                self.fault("time_jump", f"{camera} stamp jumped backwards (bag loop?): synchronizer and tracker reset")
            if frameset is not None:
                self._last_set = time.monotonic()
                self._late_at_last_set = self.sync.stats.late
                if len(self._pending) == self.cfg.frame_queue_size:
                    self._pending.popleft()
                    self.dropped_busy += 1  # inference is behind: the oldest waiting set goes
                self._pending.append(frameset)
                self._wakeup.set()

    def _on_images_lost(self, camera: str, count: int) -> None:
        self.fault("image_lost", f"{camera}: {count} image(s) lost in transport (best effort on a busy machine or "
                                 "network; a replay for evaluation can set image_reliability:=reliable)", count)

    def _on_incompatible_qos(self, topic: str, policy_kind: int) -> None:
        self.fault("incompatible_qos", f"{topic}: a publisher's QoS does not match the subscription (policy "
                                       f"{qos_policy_name_from_kind(policy_kind)}), no image of it arrives; with "
                                       f"image_reliability:={self.cfg.image_reliability} a best-effort camera "
                                       "driver needs image_reliability:=best_effort")

    def _on_camera_info(self, camera: str, msg: CameraInfo) -> None:
        try:
            intrinsic, size = M.camera_from_camera_info(msg)
        except InputError as exc:
            self.fault("bad_camera_info", f"{camera}: {exc}; keeping the last valid calibration")
            return
        self.core.set_camera_info(camera, intrinsic, size, msg.header.frame_id)

    def _on_tf(self, msg: TFMessage, static: bool) -> None:
        for t in msg.transforms:
            try:
                transform = M.transform_from_msg(t)
            except InputError as exc:
                self.fault("bad_tf", str(exc))
                continue
            self.core.set_transform(t.header.frame_id, t.child_frame_id, M.to_ns(t.header.stamp), transform, static)

    def _on_goal(self, msg: PoseStamped) -> None:
        position = np.array([msg.pose.position.x, msg.pose.position.y, msg.pose.position.z])
        if self.core.set_goal(msg.header.frame_id, position, M.to_ns(msg.header.stamp)):
            self.get_logger().info(f"goal received at ({position[0]:.1f}, {position[1]:.1f}) in {self.core.goal[0]}")

    # ------------------------------------------------------------ worker
    def _work(self) -> None:
        while not self._stop.is_set():
            if not self._wakeup.wait(timeout=0.1):
                continue
            with self._lock:
                frameset = self._pending.popleft() if self._pending else None
                if not self._pending:
                    self._wakeup.clear()
            if frameset is None:
                continue
            try:
                self._process(frameset)
            except Exception as exc:  # a bug or a model failure must not kill the node
                if not self.context.ok():
                    return  # shutting down (SIGINT/SIGTERM): publishers are gone, nothing to report
                self.fault("inference_error", f"frame at {frameset.stamp_ns} failed: {type(exc).__name__}: {exc}")
                self._clear_markers(frameset.stamp_ns)

    def _process(self, frameset: FrameSet) -> None:
        frames = {camera: entry[0] if entry is not None else None for camera, entry in frameset.frames.items()}
        self._await_camera_infos([camera for camera, image in frames.items() if image is not None])
        inputs = self.core.assemble(frames, frameset.stamp_ns)
        pred = None if inputs is None else self.core.infer(inputs, frameset.stamp_ns)
        if pred is None:  # a fault, counted
            self._clear_markers(frameset.stamp_ns)
            return
        self._publish(pred)
        if self.cfg.publish_images and self.pub_images is not None:
            self._publish_images(pred, inputs)
        received = max(entry[1] for entry in frameset.frames.values() if entry is not None)
        self._latency_ms.append((time.monotonic() - received) * 1e3)
        self._stamp_latency_ms.append((self.get_clock().now().nanoseconds - frameset.stamp_ns) / 1e6)
        self._outputs.append(time.monotonic())
        self.published += 1

    def _clear_markers(self, stamp_ns: int) -> None:
        """A frame that produced nothing: rviz2 must not keep showing the last frame's boxes as if live."""
        cleared = M.cleared_markers(stamp_ns, self.cfg.base_frame)
        self.pub_markers.publish(cleared)
        self.pub_paths.publish(cleared)

    def _await_camera_infos(self, cameras: list[str]) -> None:
        """A driver (or `bag play`) sends each CameraInfo with its image, but the executor may hand over the image
        that completes the first set before that camera's CameraInfo: it gets a moment instead of a skipped frame
        (a 2-core machine under load skipped the first keyframe of a replay this way)."""
        deadline = time.monotonic() + CAMERA_INFO_GRACE_S
        while any(c not in self.core.intrinsics for c in cameras) and time.monotonic() < deadline:
            if self._stop.wait(0.01):
                return

    def _publish(self, pred: Predictions) -> None:
        frame, stamp = self.cfg.base_frame, pred.stamp_ns
        self.pub_detections.publish(M.detections_msg(pred, frame))
        objects_frame = self.cfg.objects_frame or frame
        if objects_frame == frame:
            self.pub_objects.publish(predicted_objects_msg(pred, frame))
        elif (base_in_objects := self.core.base_in(objects_frame, stamp)) is not None:
            self.pub_objects.publish(predicted_objects_msg(pred, objects_frame, base_in_objects))
        for layer, probs in zip(MAP_CLASSES, pred.map_probs, strict=False):
            self.pub_map[layer].publish(M.grid_msg(probs, pred.grid, stamp, frame))
        self.pub_occupancy.publish(M.grid_msg(pred.occupancy[0], pred.grid, stamp, frame))
        for pub, probs in zip(self.pub_future_occupancy, pred.occupancy[1:], strict=True):
            pub.publish(M.grid_msg(probs, pred.grid, stamp, frame))
        self.pub_plan.publish(M.path_msg(pred.ego_plan, stamp, frame))
        self.pub_paths.publish(M.forecast_markers(pred, frame))
        self.pub_markers.publish(M.box_markers(pred, frame))

    def _publish_images(self, pred: Predictions, inputs: FrameInputs) -> None:
        """The visualiser: BEV rendering and the six cameras with projected boxes, for rviz2's Image display."""
        import cv2

        from tinybev_ros.geometry import CameraCalibration, Rig
        from tinybev_ros.visualization import draw_camera, render_bev

        frame = self.cfg.base_frame
        images, intrinsics, cam_to_ego = inputs.images, inputs.intrinsics, inputs.cam_to_ego
        cameras = {name: CameraCalibration(name, intrinsics[i], Transform.from_matrix(cam_to_ego[i]),
                                           images[i].shape[1], images[i].shape[0])
                   for i, name in enumerate(self.cfg.cameras)}
        rig = Rig(cameras, Transform())
        panels = [draw_camera(images[i], rig.cameras[name], pred, None, self.cfg.score_threshold)
                  for i, name in enumerate(self.cfg.cameras)]
        half = (len(panels) + 1) // 2
        rows = [np.concatenate(panels[:half], axis=1), np.concatenate(panels[half:], axis=1)]
        rows[1] = cv2.resize(rows[1], (rows[0].shape[1], rows[1].shape[0])) if rows[1].shape[1] != rows[0].shape[1] \
            else rows[1]
        for publisher, image in zip(self.pub_images, (render_bev(pred, score_threshold=self.cfg.score_threshold),
                                                      np.concatenate(rows, axis=0)), strict=True):
            image = np.ascontiguousarray(image)
            publisher.publish(Image(header=M.header(pred.stamp_ns, frame), height=image.shape[0], width=image.shape[1],
                                    encoding="rgb8", step=image.shape[1] * 3, data=image.tobytes()))

    # ------------------------------------------------------------ diagnostics
    def _rate(self, times: deque[float], now: float) -> float:
        """Events per second over the kept window; 0 once the newest is sync_warn_after_s old (inputs stopped)."""
        if len(times) < 2 or times[-1] <= times[0] or now - times[-1] >= self.cfg.sync_warn_after_s:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    def diagnostics(self, writers: dict[str, int]) -> DiagnosticStatus:
        """One /diagnostics report: WARN while something is wrong now (silent or unsynchronized cameras, faults
        counted since the previous report), OK once it has passed; the fault totals stay in the values."""
        faults = Counter(self.faults)  # one copy: callbacks and the worker go on counting
        recent = sorted(faults - self._faults_reported)
        self._faults_reported = faults
        stats = self.sync.stats
        silent = self.sync.silent_cameras()
        latency = np.array(self._latency_ms) if self._latency_ms else np.zeros(1)
        now = time.monotonic()
        values = {
            "input_rate_hz": f"{self._rate(self._arrivals, now) / max(len(self.cfg.cameras), 1):.2f}",
            "output_rate_hz": f"{self._rate(self._outputs, now):.2f}",
            "latency_p50_ms": f"{np.percentile(latency, 50):.1f}",
            "latency_p99_ms": f"{np.percentile(latency, 99):.1f}",
            "stamp_to_publish_p50_ms": f"{np.percentile(self._stamp_latency_ms, 50):.1f}"
            if self._stamp_latency_ms else "n/a",
            "frames_published": str(self.published),
            "images_received": " ".join(f"{c}:{self.images_received[c]}" for c in self.cfg.cameras),
            "calibrated_cameras": f"{sum(self.core.calibrated(c) for c in self.cfg.cameras)}"
                                  f"/{len(self.cfg.cameras)}",
            "cameras_with_writers": f"{sum(writers[c] > 0 for c in self.cfg.cameras)}"
                                    f"/{len(self.cfg.cameras)}",
            "sync_emitted": str(stats.emitted), "sync_dropped": str(stats.dropped), "sync_late": str(stats.late),
            "sync_resets": str(stats.resets), "dropped_busy": str(self.dropped_busy),
            "missing_cameras": ",".join(silent),
        }
        values.update({f"fault_{k}": str(v) for k, v in sorted(faults.items())})
        stalled = self._sync_stall(now)
        values["no_camera_set"] = stalled
        level = DiagnosticStatus.OK
        message = "ok"
        if silent or recent or stalled:
            level = DiagnosticStatus.WARN
            message = (stalled if stalled else f"silent cameras: {', '.join(silent)}" if silent
                       else "faults since the last report: " + ", ".join(recent))
        return DiagnosticStatus(level=level, name="tinybev_node: perception", hardware_id="tinybev",
                                message=message, values=[KeyValue(key=k, value=v) for k, v in values.items()])

    def image_writers(self, camera: str) -> int:
        """DDS writers matched to the camera's image reader; on Humble (no `matched` event) the graph's count of
        publishers on its resolved topic, which can precede the match by a discovery round."""
        if MATCHED_EVENT:
            return self.camera_writers[camera]
        return self.count_publishers(self._image_subscriptions[camera].topic_name)

    def _sync_stall(self, now: float) -> str:
        """'' while sets form; else, after sync_warn_after_s without a set, why: no image at all (a driver or
        replay that stopped or never started, topics not remapped), or which cameras are how far off the reference."""
        if now - self._last_set < self.cfg.sync_warn_after_s:
            return ""
        last_image = self._arrivals[-1] if self._arrivals else None
        if last_image is None or now - last_image >= self.cfg.sync_warn_after_s:
            since = "since start-up" if last_image is None else f"for {now - last_image:.1f} s"
            return (f"no camera image {since}: is a camera driver or `ros2 bag play` publishing on "
                    f"{self._image_subscriptions[self.sync.reference()].topic_name}?")
        if now - last_image >= 1.0:  # images came, and may come again within sync_warn_after_s
            return ""
        with self._lock:
            offsets = self.sync.out_of_sync()
            late = self.sync.stats.late - self._late_at_last_set
        waited = f"no synchronized camera set for {now - self._last_set:.1f} s"
        if not offsets and late:  # nothing waits: every image was older than the last set (a frozen clock)
            return (f"{waited}: {late} images arrived stamped at or before the last set's stamp; are the camera "
                    "stamps advancing (a driver that does not stamp, a paused /clock)?")
        if not offsets:
            return f"{waited}: no image of {self.sync.reference()}, the reference camera, is waiting"
        named = ", ".join(f"{camera} {'no frame' if offset is None else f'{offset / 1e6:+.0f} ms'}"
                          for camera, offset in offsets.items())
        return (f"{waited}: {named} off {self.sync.reference()} (sync_tolerance_ms "
                f"{self.cfg.sync_tolerance_ms:g})")

    def _report_inputs_matched(self, writers: dict[str, int]) -> None:
        """A log line each time every camera's image reader has had a writer for a whole diagnostics period: the
        launch file resumes the paused bag player on it (best-effort images sent before the match are lost; the
        period lets the writers' side of the match, and Humble's graph count, catch up)."""
        matched = all(writers[c] > 0 for c in self.cfg.cameras)
        self._inputs_matched_ticks = self._inputs_matched_ticks + 1 if matched else 0
        if self._inputs_matched_ticks == 2:
            self.get_logger().info(f"{INPUTS_MARKER} every camera's image reader has a writer")

    def _publish_diagnostics(self) -> None:
        writers = {c: self.image_writers(c) for c in self.cfg.cameras}  # once: on Humble a graph query each
        self._report_inputs_matched(writers)
        array = DiagnosticArray(status=[self.diagnostics(writers)])
        array.header.stamp = self.get_clock().now().to_msg()
        self.pub_diagnostics.publish(array)

    def destroy_node(self) -> None:
        """Also called by rclpy.shutdown for a node whose __init__ failed half way: stop only what was started."""
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout=5)
        super().destroy_node()


def descriptor(spec: ParameterSpec) -> ParameterDescriptor:
    """The ROS descriptor of a parameter: its description, valid values and range (`ros2 param describe`)."""
    text = spec.description + (f" ({' | '.join(spec.choices)})" if spec.choices else "")
    read_only = not spec.dynamic  # set at start-up (params file, -p); `ros2 param set` is refused
    if spec.low is None:
        return ParameterDescriptor(description=text, read_only=read_only)
    if isinstance(spec.default, int):
        return ParameterDescriptor(description=text, read_only=read_only, integer_range=[
            IntegerRange(from_value=int(spec.low), to_value=int(spec.high), step=1)])
    return ParameterDescriptor(description=text, read_only=read_only, floating_point_range=[
        FloatingPointRange(from_value=float(spec.low), to_value=float(spec.high), step=0.0)])


def make_executor(kind: str):
    """The executor that spins the node's callbacks. They only file messages (inference has its own thread), so
    one thread suffices and leaves the CPU to inference. (rclpy's experimental EventsExecutor never delivered the
    subscription match events that /diagnostics reports.)"""
    return MultiThreadedExecutor(num_threads=2) if kind == "multi" else SingleThreadedExecutor()


STARTUP_ERRORS = (NodeConfigError, CheckpointError, ParameterException)
RCLError = _rclpy.RCLError  # rclpy.init on an unusable --ros-args rule; a wait set built on a dead context


_CLEANING_UP = threading.Event()


def _interrupt_once(signum: int, frame) -> None:
    """The first SIGINT stops the node; a later one must not cut its clean-up short (it raised KeyboardInterrupt
    mid-join: a traceback, "process has died", exit -2). `ros2 launch` without a terminal (CI, systemd, a script)
    forwards its own SIGINT after the one the process group got, and a user may press Ctrl-C twice. SIGTERM, launch's
    next step for a clean-up that hangs, then ends the process at once (rclpy's handler would not pass it on).
    Python runs this handler late, after rclpy's own has shut the context down; once the clean-up has begun it no
    longer raises (see `_spin`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if not _CLEANING_UP.is_set():
        raise KeyboardInterrupt


def _spin(executor) -> None:
    """Spin until a signal or an external shutdown stops the node. rclpy's signal handler shuts the context down
    from its own thread, so the executor can find it gone between its `ok()` check and building its wait set
    (RCLError "the given context is not valid"): the same stop, not a failure. Our Python handler may run at any
    point of that; every KeyboardInterrupt it raises before `_CLEANING_UP` is set lands in the `except` here.
    (ExternalShutdownException is `main`'s to catch, as during start-up.)"""
    try:
        try:
            executor.spin()
        except RCLError:
            if executor.context.ok():  # the middleware failed while the node was meant to run
                raise
        finally:
            _CLEANING_UP.set()
    except KeyboardInterrupt:  # the signal's Python handler, during spin or while the block above was ending
        pass


def main(args: list[str] | None = None) -> None:
    from tinybev_ros.ros.dds import use_large_message_profile

    node = None
    # Before rclpy.init: its handler calls the one installed before it, then shuts the context down.
    signal.signal(signal.SIGINT, _interrupt_once)
    try:
        use_large_message_profile()  # before this process's first DDS participant: camera bursts need the big segment
        try:
            rclpy.init(args=args)
        except RCLError as exc:  # a params file that does not open or parse, a malformed -p / -r rule
            print(f"tinybev_node: error: {str(exc).split(', at /')[0]}", file=sys.stderr)
            raise SystemExit(2) from None
        try:
            node = PerceptionNode()
        except STARTUP_ERRORS as exc:  # the user's parameters or files: one line, no traceback, exit 2
            print(f"tinybev_node: error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        executor = make_executor(node.cfg.executor)
        executor.add_node(node)
        _spin(executor)
    except (KeyboardInterrupt, ExternalShutdownException):  # a signal while starting; an external shutdown
        pass
    finally:
        _CLEANING_UP.set()
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    main()
