"""Frames, rotations and camera calibration: the one place where conventions are converted.

Conventions (REP 103/105): `base_link` is x forward, y left, z up, metres, radians. Cameras are optical
frames (z forward, x right, y down). nuScenes stores quaternions as (w, x, y, z); ROS messages as
(x, y, z, w). Convert only with the functions here. No ROS imports: the core stays ROS-free.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from tinybev_ros.errors import ConfigError

CAMERA_NAMES: tuple[str, ...] = (
    "CAM_FRONT_LEFT",
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_BACK_LEFT",
    "CAM_BACK",
    "CAM_BACK_RIGHT",
)
LIDAR_NAME = "LIDAR_TOP"


def wxyz_to_xyzw(q) -> np.ndarray:
    """nuScenes quaternion (w, x, y, z) -> ROS order (x, y, z, w)."""
    w, x, y, z = np.asarray(q, dtype=float)
    return np.array([x, y, z, w])


def xyzw_to_wxyz(q) -> np.ndarray:
    """ROS quaternion (x, y, z, w) -> nuScenes order (w, x, y, z)."""
    x, y, z, w = np.asarray(q, dtype=float)
    return np.array([w, x, y, z])


def quat_to_matrix(q_wxyz) -> np.ndarray:
    """Rotation matrix of a (w, x, y, z) quaternion; the quaternion is normalised first."""
    w, x, y, z = np.asarray(q_wxyz, dtype=float) / np.linalg.norm(q_wxyz)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def matrix_to_quat(m) -> np.ndarray:
    """(w, x, y, z) quaternion with w >= 0 of a rotation matrix (Shepperd's method, stable everywhere)."""
    m = np.asarray(m, dtype=float)
    trace = np.trace(m)
    if trace > 0:
        s = 2.0 * np.sqrt(1.0 + trace)
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k])
        q = [0.0, 0.0, 0.0, 0.0]
        q[0] = (m[k, j] - m[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (m[j, i] + m[i, j]) / s
        q[1 + k] = (m[k, i] + m[i, k]) / s
    q = np.array(q)
    return q if q[0] >= 0 else -q


def yaw_to_quat(yaw: float) -> np.ndarray:
    """(w, x, y, z) quaternion of a rotation by `yaw` about +z."""
    return np.array([np.cos(yaw / 2.0), 0.0, 0.0, np.sin(yaw / 2.0)])


def quat_to_yaw(q_wxyz) -> float:
    """Heading about +z of a (w, x, y, z) quaternion (the x axis projected onto the ground plane)."""
    m = quat_to_matrix(q_wxyz)
    return float(np.arctan2(m[1, 0], m[0, 0]))


def wrap_angle(angle):
    """Angle(s) wrapped into [-pi, pi)."""
    return (np.asarray(angle) + np.pi) % (2.0 * np.pi) - np.pi


@dataclass(frozen=True)
class Transform:
    """Rigid transform child -> parent: p_parent = rotation @ p_child + translation."""

    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    translation: np.ndarray = field(default_factory=lambda: np.zeros(3))

    @staticmethod
    def from_nuscenes(translation, rotation_wxyz) -> Transform:
        """From a nuScenes record (calibrated_sensor, ego_pose): translation + (w, x, y, z) quaternion."""
        return Transform(quat_to_matrix(rotation_wxyz), np.asarray(translation, dtype=float))

    @staticmethod
    def from_matrix(matrix) -> Transform:
        matrix = np.asarray(matrix, dtype=float)
        return Transform(matrix[:3, :3].copy(), matrix[:3, 3].copy())

    @property
    def matrix(self) -> np.ndarray:
        out = np.eye(4)
        out[:3, :3] = self.rotation
        out[:3, 3] = self.translation
        return out

    @property
    def quat_wxyz(self) -> np.ndarray:
        return matrix_to_quat(self.rotation)

    def inverse(self) -> Transform:
        rot_t = self.rotation.T
        return Transform(rot_t, -rot_t @ self.translation)

    def __matmul__(self, other: Transform) -> Transform:
        """Composition: (a @ b) maps b's child frame into a's parent frame."""
        return Transform(self.rotation @ other.rotation, self.rotation @ other.translation + self.translation)

    def apply(self, points) -> np.ndarray:
        """Map (..., 3) points from the child frame into the parent frame."""
        points = np.asarray(points, dtype=float)
        return points @ self.rotation.T + self.translation


@dataclass(frozen=True)
class CameraCalibration:
    """One camera: pinhole intrinsics (no distortion; nuScenes images are rectified) and its pose on the car."""

    name: str
    intrinsic: np.ndarray  # 3x3 K
    sensor_to_ego: Transform
    width: int = 1600
    height: int = 900

    def project(self, points_ego) -> tuple[np.ndarray, np.ndarray]:
        """Pixels (N, 2) and depths (N,) of ego-frame points; depth <= 0 means behind the camera."""
        cam = self.sensor_to_ego.inverse().apply(np.atleast_2d(points_ego))
        depth = cam[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            pix = (cam @ self.intrinsic.T)[:, :2] / depth[:, None]
        return pix, depth


@dataclass(frozen=True)
class Rig:
    """The sensor set of one vehicle: six cameras and the top LiDAR, all relative to base_link."""

    cameras: dict[str, CameraCalibration]
    lidar_to_ego: Transform
    camera_stagger_us: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def load(path: str | Path | None = None) -> Rig:
        """Load a rig JSON (default: the real nuScenes calibration shipped with the package)."""
        if path is None:
            return Rig._parse(json.loads(resources.files("tinybev_ros.data").joinpath("nuscenes_rig.json").read_text()))
        try:
            return Rig._parse(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            reason = f"no key {exc}" if isinstance(exc, KeyError) else str(exc)
            raise ConfigError(f"rig {path} cannot be read as a rig JSON ({reason}); it needs 'sensors' with "
                              f"{', '.join(CAMERA_NAMES)} and {LIDAR_NAME} (see tinybev_ros/data/nuscenes_rig.json)"
                              ) from None

    @staticmethod
    def _parse(raw: dict) -> Rig:
        sensors = raw["sensors"]
        width, height = raw.get("image_size", (1600, 900))
        cameras = {
            name: CameraCalibration(
                name=name,
                intrinsic=np.asarray(sensors[name]["camera_intrinsic"], dtype=float),
                sensor_to_ego=Transform.from_nuscenes(sensors[name]["translation"], sensors[name]["rotation"]),
                width=width,
                height=height,
            )
            for name in CAMERA_NAMES
        }
        lidar = sensors[LIDAR_NAME]
        return Rig(
            cameras=cameras,
            lidar_to_ego=Transform.from_nuscenes(lidar["translation"], lidar["rotation"]),
            camera_stagger_us=dict(raw.get("camera_stagger_us_vs_lidar", {})),
        )


@dataclass(frozen=True)
class BevGrid:
    """The bird's-eye-view raster around base_link shared by model, targets, messages and metrics.

    Row index grows with x (forward), column index with y (left): cell (i, j) covers
    x in [x_min + i*res, x_min + (i+1)*res), y in [y_min + j*res, ...). Default: 200x200 cells of 0.5 m.
    """

    x_min: float = -50.0
    x_max: float = 50.0
    y_min: float = -50.0
    y_max: float = 50.0
    resolution: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.resolution < math.inf:
            raise ValueError(f"grid resolution must be a positive number of metres, got {self.resolution}")
        for axis in ("x", "y"):
            low, high = getattr(self, f"{axis}_min"), getattr(self, f"{axis}_max")
            cells = (high - low) / self.resolution
            if not (math.isfinite(low) and math.isfinite(high) and high > low):
                raise ValueError(f"grid {axis}_max must exceed {axis}_min, got [{low}, {high}]")
            if abs(cells - round(cells)) > 1e-6:  # else the raster would silently cover another extent
                raise ValueError(f"grid {axis} extent {high - low} m is not a whole number of {self.resolution} m "
                                 "cells")

    @property
    def shape(self) -> tuple[int, int]:
        return (
            int(round((self.x_max - self.x_min) / self.resolution)),
            int(round((self.y_max - self.y_min) / self.resolution)),
        )

    def cell_of(self, xy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row and column indices of (N, 2) ego-frame points, and a mask of those inside the grid."""
        xy = np.atleast_2d(np.asarray(xy, dtype=float))
        rows = np.floor((xy[:, 0] - self.x_min) / self.resolution).astype(np.int64)
        cols = np.floor((xy[:, 1] - self.y_min) / self.resolution).astype(np.int64)
        h, w = self.shape
        inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
        return rows, cols, inside

    def cell_centers(self) -> tuple[np.ndarray, np.ndarray]:
        """x (H,) and y (W,) coordinates of the cell centres."""
        h, w = self.shape
        xs = self.x_min + (np.arange(h) + 0.5) * self.resolution
        ys = self.y_min + (np.arange(w) + 0.5) * self.resolution
        return xs, ys
