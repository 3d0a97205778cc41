"""`Predictions` as autoware_perception_msgs/PredictedObjects, the object list planners consume, and back.

vision_msgs/Detection3DArray has no velocity and no forecasts; PredictedObjects carries the whole object state:
- `object_id`: bytes 0-6 "tinybev", byte 7 = 1 if tracked, bytes 8-15 the track id, so a tracked object keeps
  its UUID from frame to frame; an untracked box (track id -1) is an object of its frame only: bytes 8-15 hash
  the frame's stamp and the box's index, so its UUID never names another frame's object;
- `existence_probability` and one `classification` entry: the score, and the Autoware label of the class
  (construction_vehicle -> TRUCK; traffic_cone and barrier -> UNKNOWN, Autoware has no such labels; the exact
  nuScenes class stays in the Detection3DArray of the same frame, in the same order);
- `kinematics`: the box pose; the twist in the object's own frame (x along its heading), as Autoware defines
  it; one `predicted_paths` entry per forecast mode: the current pose then the future positions
  STEP_SECONDS apart (`time_step`), headings along the path (`tinybev_ros/path_headings.py`: a position within
  MIN_HEADING_STEP_M of the one that last set the heading keeps it, the object's yaw at first),
  `confidence` = the mode's probability;
- `shape`: BOUNDING_BOX with dimensions x = length, y = width, z = height.
Covariances are zero: the model does not estimate them.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
from autoware_perception_msgs.msg import (
    ObjectClassification,
    PredictedObject,
    PredictedObjects,
    PredictedPath,
    Shape,
)
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Point, Pose, Vector3

from tinybev_ros.geometry import Transform, quat_to_yaw, yaw_to_quat
from tinybev_ros.path_headings import path_headings
from tinybev_ros.predictions import STEP_SECONDS, Predictions
from tinybev_ros.ros.messages import header, quaternion_msg
from tinybev_ros.taxonomy import DETECTION_CLASSES

AUTOWARE_LABEL = {"car": ObjectClassification.CAR, "truck": ObjectClassification.TRUCK,
                  "bus": ObjectClassification.BUS, "trailer": ObjectClassification.TRAILER,
                  "construction_vehicle": ObjectClassification.TRUCK, "pedestrian": ObjectClassification.PEDESTRIAN,
                  "motorcycle": ObjectClassification.MOTORCYCLE, "bicycle": ObjectClassification.BICYCLE,
                  "traffic_cone": ObjectClassification.UNKNOWN, "barrier": ObjectClassification.UNKNOWN}
UUID_PREFIX = b"tinybev"


def object_uuid(track_id: int, stamp_ns: int, index: int) -> np.ndarray:
    """The object's UUID (module doc): its track id, or for an untracked box its frame's stamp and its index."""
    if track_id >= 0:
        raw = UUID_PREFIX + b"\x01" + track_id.to_bytes(8, "big")
    else:
        frame_box = stamp_ns.to_bytes(8, "big", signed=True) + index.to_bytes(8, "big")
        raw = UUID_PREFIX + b"\x00" + hashlib.blake2b(frame_box, digest_size=8).digest()
    return np.frombuffer(raw, dtype=np.uint8).copy()


def in_frame(pred: Predictions, base_in_frame: Transform) -> Predictions:
    """The boxes, velocities and forecasts of `pred` moved from base_link into another frame (the ground plane's
    yaw; the velocities' axes turn with it)."""
    flat = pred.forecasts.reshape(-1, 2)
    forecasts = base_in_frame.apply(np.column_stack([flat, np.zeros(len(flat))]))[:, :2].reshape(pred.forecasts.shape)
    return replace(pred, centers=base_in_frame.apply(pred.centers),
                   yaws=pred.yaws + quat_to_yaw(base_in_frame.quat_wxyz),
                   velocities=pred.velocities @ base_in_frame.rotation[:2, :2].T, forecasts=forecasts)


def _pose(x: float, y: float, z: float, yaw: float) -> Pose:
    pose = Pose()
    pose.position = Point(x=float(x), y=float(y), z=float(z))
    pose.orientation = quaternion_msg(yaw_to_quat(float(yaw)))
    return pose


def predicted_objects_msg(pred: Predictions, frame_id: str, base_in_frame: Transform | None = None) -> PredictedObjects:
    """`pred` (in base_link) as PredictedObjects in `frame_id`; `base_in_frame` places base_link in that frame (the
    node's `objects_frame`, e.g. map), None when `frame_id` is base_link itself. Twists are in each object's own
    frame, so they do not move."""
    if base_in_frame is not None:
        pred = in_frame(pred, base_in_frame)
    out = PredictedObjects(header=header(pred.stamp_ns, frame_id))
    step = Duration(sec=int(STEP_SECONDS), nanosec=int(round((STEP_SECONDS % 1) * 1e9)))
    for i in range(len(pred)):
        obj = PredictedObject()
        obj.object_id.uuid = object_uuid(int(pred.track_ids[i]), int(pred.stamp_ns), i)
        score = float(pred.scores[i])
        obj.existence_probability = score
        obj.classification = [ObjectClassification(
            label=AUTOWARE_LABEL[DETECTION_CLASSES[int(pred.labels[i])]], probability=score)]
        yaw = float(pred.yaws[i])
        cx, cy, cz = (float(v) for v in pred.centers[i])
        kinematics = obj.kinematics
        kinematics.initial_pose_with_covariance.pose = _pose(cx, cy, cz, yaw)
        cos, sin = np.cos(yaw), np.sin(yaw)
        vx, vy = (float(v) for v in pred.velocities[i])
        kinematics.initial_twist_with_covariance.twist.linear = Vector3(x=cos * vx + sin * vy, y=-sin * vx + cos * vy,
                                                                         z=0.0)
        for k in range(pred.forecasts.shape[1]):
            xy = np.vstack([[cx, cy], pred.forecasts[i, k]])
            headings = np.concatenate([[yaw], path_headings(xy, yaw)])
            path = PredictedPath(time_step=step, confidence=float(pred.forecast_probs[i, k]))
            path.path = [_pose(x, y, cz, h) for (x, y), h in zip(xy, headings, strict=True)]
            kinematics.predicted_paths.append(path)
        w, length, h = (float(v) for v in pred.sizes_wlh[i])
        obj.shape = Shape(type=Shape.BOUNDING_BOX, dimensions=Vector3(x=length, y=w, z=h))
        out.objects.append(obj)
    return out


def predicted_objects_from_msg(msg: PredictedObjects) -> dict[str, np.ndarray]:
    """Arrays of a PredictedObjects we published: centers, sizes_wlh, yaws, velocities (base_link), scores,
    track_ids, forecasts (N, K, T, 2) and forecast_probs (N, K)."""
    n = len(msg.objects)
    out = {"centers": np.zeros((n, 3)), "sizes_wlh": np.zeros((n, 3)), "yaws": np.zeros(n),
           "velocities": np.zeros((n, 2)), "scores": np.zeros(n), "track_ids": np.full(n, -1, dtype=np.int64)}
    modes = max((len(o.kinematics.predicted_paths) for o in msg.objects), default=1)
    steps = max((len(p.path) - 1 for o in msg.objects for p in o.kinematics.predicted_paths), default=0)
    out["forecasts"], out["forecast_probs"] = np.zeros((n, modes, steps, 2)), np.zeros((n, modes))
    for i, obj in enumerate(msg.objects):
        pose = obj.kinematics.initial_pose_with_covariance.pose
        q = pose.orientation
        yaw = quat_to_yaw([q.w, q.x, q.y, q.z])
        out["centers"][i] = (pose.position.x, pose.position.y, pose.position.z)
        out["yaws"][i] = yaw
        d = obj.shape.dimensions
        out["sizes_wlh"][i] = (d.y, d.x, d.z)
        twist = obj.kinematics.initial_twist_with_covariance.twist.linear
        cos, sin = np.cos(yaw), np.sin(yaw)
        out["velocities"][i] = (cos * twist.x - sin * twist.y, sin * twist.x + cos * twist.y)
        out["scores"][i] = obj.existence_probability
        raw = bytes(obj.object_id.uuid)
        if raw[:7] == UUID_PREFIX and raw[7] == 1:
            out["track_ids"][i] = int.from_bytes(raw[8:], "big")
        for k, path in enumerate(obj.kinematics.predicted_paths):
            out["forecasts"][i, k] = [(p.position.x, p.position.y) for p in path.path[1:]]
            out["forecast_probs"][i, k] = path.confidence
    return out
