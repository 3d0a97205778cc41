"""Conversions between ROS messages and the ROS-free core (numpy arrays, `Predictions`, `Transform`).

Both directions live here so the node, the recorder-side evaluation and the tests agree on one encoding:
- Detection3D: `results[0].hypothesis` = (class name, score), `id` = track id ("" if untracked), bbox size
  in the box frame: x = length (along heading), y = width, z = height (nuScenes stores w, l, h).
- OccupancyGrid: cell (i, j) of our BevGrid (i along +x, j along +y) is `data[i + j * width]`, width = number
  of x cells, origin = the grid's (x_min, y_min) corner; probabilities 0..100, -1 unknown (NaN).
- Quaternions: ROS (x, y, z, w) <-> nuScenes (w, x, y, z) via tinybev_ros.geometry only.
"""

from __future__ import annotations

import array

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, PoseStamped, Quaternion, TransformStamped, Vector3
from nav_msgs.msg import OccupancyGrid, Path
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import ColorRGBA, Header
from vision_msgs.msg import Detection3D, Detection3DArray, ObjectHypothesisWithPose
from visualization_msgs.msg import Marker, MarkerArray

from tinybev_ros.errors import ImageSizeError, InputError, UnsupportedEncoding
from tinybev_ros.geometry import BevGrid, Transform, quat_to_yaw, wxyz_to_xyzw, xyzw_to_wxyz, yaw_to_quat
from tinybev_ros.model.preprocess import decode_image, scale_intrinsics
from tinybev_ros.path_headings import path_headings
from tinybev_ros.predictions import Predictions
from tinybev_ros.taxonomy import DETECTION_CLASSES

# One colour per detection class (RGB 0..1), shared with the pictures' palette where possible.
CLASS_COLORS = np.array([
    [0.12, 0.47, 0.71], [1.00, 0.50, 0.05], [0.17, 0.63, 0.17], [0.84, 0.15, 0.16], [0.58, 0.40, 0.74],
    [0.89, 0.47, 0.76], [0.55, 0.34, 0.29], [0.74, 0.74, 0.13], [1.00, 0.60, 0.00], [0.50, 0.50, 0.50],
])


# ---------------------------------------------------------------- time and frames
def to_time(stamp_ns: int) -> Time:
    return Time(sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000))


def to_ns(stamp: Time) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def header(stamp_ns: int, frame_id: str) -> Header:
    return Header(stamp=to_time(stamp_ns), frame_id=frame_id)


def quaternion_msg(q_wxyz) -> Quaternion:
    x, y, z, w = wxyz_to_xyzw(q_wxyz)
    return Quaternion(x=float(x), y=float(y), z=float(z), w=float(w))


def transform_from_msg(msg: TransformStamped) -> Transform:
    """child -> parent transform of a TransformStamped; rejects non-finite or zero quaternions."""
    t, r = msg.transform.translation, msg.transform.rotation
    values = np.array([t.x, t.y, t.z, r.x, r.y, r.z, r.w], dtype=float)
    if not np.all(np.isfinite(values)) or np.linalg.norm(values[3:]) < 1e-6:
        raise InputError(f"transform {msg.header.frame_id} -> {msg.child_frame_id} is not finite/valid")
    return Transform.from_nuscenes(values[:3], xyzw_to_wxyz(values[3:]))


# ---------------------------------------------------------------- inputs
MAX_PIXELS = 8192 * 8192  # no camera of a car sends more; a header declaring more is rejected before decoding
JPEG_SOF = {*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC}  # start-of-frame markers (not DHT, JPG, DAC)


JPEG_MAGIC, PNG_MAGIC = b"\xff\xd8", b"\x89PNG\r\n\x1a\n"  # what image_transport's compressed formats send


def compressed_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) a JPEG or PNG declares in its header, read without decoding; None if not found."""
    if data[:8] == PNG_MAGIC and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] != JPEG_MAGIC:
        return None
    at = 2
    while at + 9 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in JPEG_SOF:
            return int.from_bytes(data[at + 7:at + 9], "big"), int.from_bytes(data[at + 5:at + 7], "big")
        at += 2 + int.from_bytes(data[at + 2:at + 4], "big")
    return None


def decode_compressed(msg: CompressedImage, expected_size: tuple[int, int] | None = None,
                      reduction: int = 1) -> np.ndarray:
    """RGB uint8 image of a JPEG/PNG CompressedImage, decoded at 1/`reduction` scale (preprocess.decode_image).

    The size in the header is checked first (against `expected_size`, the camera's CameraInfo, and MAX_PIXELS),
    so a wrong or hostile image is rejected in microseconds instead of after a decode of any size; other formats
    (WebP, BMP, TIFF, ... which OpenCV would decode whole, whatever their size) are refused unread.
    """
    data = bytes(msg.data)
    what = f"CompressedImage ({msg.format or 'no format'}, {len(data)} bytes)"
    if not data.startswith((JPEG_MAGIC, PNG_MAGIC)):
        raise UnsupportedEncoding(f"{what} is neither JPEG nor PNG (it starts with {data[:4].hex() or 'nothing'}): "
                                  "unsupported encoding, not decoded")
    declared = compressed_size(data)
    if declared is None:  # no size in the header: a truncated or damaged header, never decoded blind
        raise InputError(f"{what} does not decode: no image size in its header")
    width, height = declared
    if width * height > MAX_PIXELS:
        raise ImageSizeError(f"CompressedImage declares {width}x{height} pixels (more than {MAX_PIXELS}); "
                             "not decoded")
    if expected_size is not None and declared != tuple(expected_size):
        raise ImageSizeError(f"image is {width}x{height} but its CameraInfo says "
                             f"{expected_size[0]}x{expected_size[1]}")
    image = decode_image(data, reduction)
    if image is None:
        raise InputError(f"{what} does not decode")
    height, width = image.shape[:2]
    if width * height * reduction**2 > MAX_PIXELS:
        raise ImageSizeError(f"CompressedImage is {width * reduction}x{height * reduction} (more than "
                             f"{MAX_PIXELS} pixels)")
    if expected_size is not None and (width, height) != tuple(-(-s // reduction) for s in expected_size):
        raise ImageSizeError(f"image is {width * reduction}x{height * reduction} but its CameraInfo says "
                             f"{expected_size[0]}x{expected_size[1]}")
    return image


RAW_ENCODINGS = {"rgb8": None, "bgr8": cv2.COLOR_BGR2RGB, "rgba8": cv2.COLOR_RGBA2RGB,
                 "bgra8": cv2.COLOR_BGRA2RGB, "mono8": cv2.COLOR_GRAY2RGB}


def decode_raw(msg: Image, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """RGB uint8 image of a raw sensor_msgs/Image in one of RAW_ENCODINGS, of `expected_size` (its CameraInfo's)."""
    if expected_size is not None and (msg.width, msg.height) != tuple(expected_size):
        raise ImageSizeError(f"image is {msg.width}x{msg.height} but its CameraInfo says "
                             f"{expected_size[0]}x{expected_size[1]}")
    if msg.encoding not in RAW_ENCODINGS:
        raise UnsupportedEncoding(f"unsupported image encoding {msg.encoding!r}; supported: {sorted(RAW_ENCODINGS)}")
    channels = 1 if msg.encoding == "mono8" else (4 if msg.encoding.endswith("a8") else 3)
    row = msg.width * channels
    if msg.step < row or len(msg.data) < msg.step * msg.height:
        raise InputError(f"image {msg.width}x{msg.height} {msg.encoding}: {len(msg.data)} bytes, step {msg.step}")
    buffer = np.frombuffer(bytes(msg.data), np.uint8)[: msg.step * msg.height].reshape(msg.height, msg.step)
    image = buffer[:, :row].reshape(msg.height, msg.width, channels)
    code = RAW_ENCODINGS[msg.encoding]
    return np.ascontiguousarray(image) if code is None else cv2.cvtColor(image, code)


def camera_from_camera_info(msg: CameraInfo) -> tuple[np.ndarray, tuple[int, int]]:
    """The 3x3 intrinsics and (width, height) of the image a CameraInfo describes: P's left 3x3 (what image_rect
    is described by; equal to K for nuScenes), K where P is unset, moved to the region of interest and divided by
    the binning (a binned pixel's centre is its block's, as for a reduced JPEG decode; image_proc's crop/decimate
    keep the full calibration and set these).
    Rejects a 0x0 image size, NaN/inf, a degenerate focal length and a region outside the image."""
    if msg.width == 0 or msg.height == 0:
        raise InputError(f"CameraInfo of {msg.header.frame_id!r} gives an image size of {msg.width}x{msg.height}")
    p = np.asarray(msg.p, dtype=float).reshape(3, 4)
    k = p[:, :3].copy() if np.any(p) else np.asarray(msg.k, dtype=float).reshape(3, 3)
    if not np.all(np.isfinite(k)) or k[0, 0] <= 0 or k[1, 1] <= 0:
        raise InputError(f"CameraInfo of {msg.header.frame_id!r} has an invalid K: {k.ravel().tolist()}")
    roi = msg.roi
    x, y, width, height = roi.x_offset, roi.y_offset, roi.width, roi.height
    if width == 0 and height == 0:  # no region: the full image
        x, y, width, height = 0, 0, msg.width, msg.height
    if width == 0 or height == 0 or x + width > msg.width or y + height > msg.height:
        raise InputError(f"CameraInfo of {msg.header.frame_id!r} has a region of interest {width}x{height} at "
                         f"({x}, {y}) outside its {msg.width}x{msg.height} image")
    bx, by = max(msg.binning_x, 1), max(msg.binning_y, 1)
    k[0, 2] -= x
    k[1, 2] -= y
    return scale_intrinsics(k, 1 / bx, 1 / by), (width // bx, height // by)


# ---------------------------------------------------------------- outputs
def detections_msg(pred: Predictions, frame_id: str) -> Detection3DArray:
    out = Detection3DArray(header=header(pred.stamp_ns, frame_id))
    for i in range(len(pred)):
        det = Detection3D(header=out.header)
        hyp = ObjectHypothesisWithPose()
        hyp.hypothesis.class_id = DETECTION_CLASSES[int(pred.labels[i])]
        hyp.hypothesis.score = float(pred.scores[i])
        cx, cy, cz = (float(v) for v in pred.centers[i])
        hyp.pose.pose.position = Point(x=cx, y=cy, z=cz)
        hyp.pose.pose.orientation = quaternion_msg(yaw_to_quat(float(pred.yaws[i])))
        det.results.append(hyp)
        det.bbox.center = hyp.pose.pose
        w, length, h = (float(v) for v in pred.sizes_wlh[i])
        det.bbox.size = Vector3(x=length, y=w, z=h)
        det.id = str(int(pred.track_ids[i])) if pred.track_ids[i] >= 0 else ""
        out.detections.append(det)
    return out


def detections_from_msg(msg: Detection3DArray) -> dict[str, np.ndarray]:
    """Arrays (centers, sizes_wlh, yaws, scores, labels, track_ids) of a Detection3DArray we published."""
    rows = []
    for det in msg.detections:
        hyp = det.results[0].hypothesis
        p, q, s = det.bbox.center.position, det.bbox.center.orientation, det.bbox.size
        rows.append((p.x, p.y, p.z, s.y, s.x, s.z, quat_to_yaw([q.w, q.x, q.y, q.z]), hyp.score,
                     DETECTION_CLASSES.index(hyp.class_id), int(det.id) if det.id else -1))
    table = np.array(rows, dtype=float).reshape(-1, 10)
    return {
        "centers": table[:, 0:3], "sizes_wlh": table[:, 3:6], "yaws": table[:, 6], "scores": table[:, 7],
        "labels": table[:, 8].astype(np.int64), "track_ids": table[:, 9].astype(np.int64),
    }


def grid_msg(probs: np.ndarray, grid: BevGrid, stamp_ns: int, frame_id: str) -> OccupancyGrid:
    """OccupancyGrid of an (H, W) probability raster on `grid` (NaN -> -1 unknown)."""
    h, w = grid.shape
    if probs.shape != (h, w):
        raise ValueError(f"raster {probs.shape} does not match grid {grid.shape}")
    msg = OccupancyGrid(header=header(stamp_ns, frame_id))
    msg.info.map_load_time = msg.header.stamp
    msg.info.resolution = float(grid.resolution)
    msg.info.width, msg.info.height = h, w
    msg.info.origin.position = Point(x=float(grid.x_min), y=float(grid.y_min), z=0.0)
    msg.info.origin.orientation.w = 1.0
    values = np.where(np.isfinite(probs), np.clip(np.round(np.nan_to_num(probs) * 100.0), 0, 100), -1)
    msg.data = array.array("b", values.astype(np.int8).T.tobytes())  # the int8 fast path (7x faster than a list)
    return msg


def grid_from_msg(msg: OccupancyGrid) -> tuple[np.ndarray, BevGrid]:
    """(H, W) probabilities (NaN where unknown) and the BevGrid of an OccupancyGrid we published."""
    info = msg.info
    grid = BevGrid(
        x_min=info.origin.position.x, x_max=info.origin.position.x + info.width * info.resolution,
        y_min=info.origin.position.y, y_max=info.origin.position.y + info.height * info.resolution,
        resolution=info.resolution,
    )
    data = np.asarray(msg.data, dtype=np.float64).reshape(info.height, info.width).T
    return np.where(data < 0, np.nan, data / 100.0), grid


def path_msg(waypoints: np.ndarray, stamp_ns: int, frame_id: str) -> Path:
    """Path of (T, 2) waypoints predictions.STEP_SECONDS apart, from base_link's origin; each pose faces along the
    path (`path_headings`, starting from base_link forward).

    Every pose carries the path's header: the waypoints are coordinates in `frame_id` at `stamp_ns`, and tf2
    transforms a PoseStamped at its own stamp, so a pose stamped at its future time would be moved by the ego
    motion twice (and extrapolated live). Path has no time field: the step is documented in the README."""
    msg = Path(header=header(stamp_ns, frame_id))
    points = np.vstack([np.zeros((1, 2)), np.asarray(waypoints, dtype=float)])
    for (x, y), heading in zip(points[1:], path_headings(points, 0.0), strict=True):
        pose = PoseStamped(header=header(stamp_ns, frame_id))
        pose.pose.position = Point(x=float(x), y=float(y), z=0.0)
        pose.pose.orientation = quaternion_msg(yaw_to_quat(heading))
        msg.poses.append(pose)
    return msg


def _color(rgb, alpha: float) -> ColorRGBA:
    return ColorRGBA(r=float(rgb[0]), g=float(rgb[1]), b=float(rgb[2]), a=float(alpha))


def _marker(stamp_ns: int, frame_id: str, ns: str, marker_id: int, marker_type: int) -> Marker:
    """An ADD marker with lifetime 0 (until replaced): every array starts with DELETEALL, and a finite lifetime
    as short as the keyframe period made markers flicker or vanish in rviz2 when frames came at 2 Hz or slower."""
    marker = Marker(header=header(stamp_ns, frame_id), ns=ns, id=marker_id, type=marker_type, action=Marker.ADD)
    marker.pose.orientation.w = 1.0
    return marker


def cleared_markers(stamp_ns: int, frame_id: str) -> MarkerArray:
    """Only DELETEALL: what a frame that produced nothing shows (its predecessor's boxes would pass for live)."""
    return MarkerArray(markers=[Marker(header=header(stamp_ns, frame_id), action=Marker.DELETEALL)])


def box_markers(pred: Predictions, frame_id: str) -> MarkerArray:
    """Boxes (cubes), labels (class, track id, score) and velocity arrows, replacing the previous frame's."""
    out = cleared_markers(pred.stamp_ns, frame_id)
    for i in range(len(pred)):
        label = int(pred.labels[i])
        color = CLASS_COLORS[label]
        cube = _marker(pred.stamp_ns, frame_id, "boxes", i, Marker.CUBE)
        cube.pose.position = Point(x=float(pred.centers[i, 0]), y=float(pred.centers[i, 1]),
                                   z=float(pred.centers[i, 2]))
        cube.pose.orientation = quaternion_msg(yaw_to_quat(float(pred.yaws[i])))
        w, length, h = (float(v) for v in pred.sizes_wlh[i])
        cube.scale = Vector3(x=length, y=w, z=h)
        cube.color = _color(color, 0.45)
        text = _marker(pred.stamp_ns, frame_id, "labels", i, Marker.TEXT_VIEW_FACING)
        text.pose.position = Point(x=cube.pose.position.x, y=cube.pose.position.y, z=cube.pose.position.z + h / 2 + 0.6)
        track = f" #{int(pred.track_ids[i])}" if pred.track_ids[i] >= 0 else ""
        text.text = f"{DETECTION_CLASSES[label]}{track} {pred.scores[i]:.2f}"
        text.scale.z = 0.8
        text.color = _color((1, 1, 1), 1.0)
        arrow = _marker(pred.stamp_ns, frame_id, "velocities", i, Marker.ARROW)
        start = cube.pose.position
        vx, vy = (float(v) for v in pred.velocities[i])
        arrow.points = [start, Point(x=start.x + vx, y=start.y + vy, z=start.z)]
        arrow.scale = Vector3(x=0.2, y=0.4, z=0.4)
        arrow.color = _color(color, 1.0)
        out.markers += [cube, text, arrow]
    return out


def forecast_markers(pred: Predictions, frame_id: str) -> MarkerArray:
    """One line strip per agent mode (opacity = mode probability) and the top mode's probability as text."""
    out = cleared_markers(pred.stamp_ns, frame_id)
    marker_id = 0
    for i in range(len(pred)):
        color = CLASS_COLORS[int(pred.labels[i])]
        start = pred.centers[i, :2]
        probs = pred.forecast_probs[i]
        for k in range(pred.forecasts.shape[1]):
            line = _marker(pred.stamp_ns, frame_id, "forecasts", marker_id, Marker.LINE_STRIP)
            marker_id += 1
            xy = np.vstack([start, pred.forecasts[i, k]])
            line.points = [Point(x=float(x), y=float(y), z=0.2) for x, y in xy]
            line.scale.x = 0.15
            line.color = _color(color, 0.2 + 0.8 * float(probs[k]))
            out.markers.append(line)
        best = int(np.argmax(probs))
        text = _marker(pred.stamp_ns, frame_id, "forecast_probs", i, Marker.TEXT_VIEW_FACING)
        end = pred.forecasts[i, best, -1]
        text.pose.position = Point(x=float(end[0]), y=float(end[1]), z=0.5)
        text.text = f"{probs[best]:.0%}"
        text.scale.z = 0.6
        text.color = _color(color, 1.0)
        out.markers.append(text)
    return out
