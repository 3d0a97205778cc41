"""A 32-beam spinning LiDAR (like nuScenes' Velodyne HDL-32E) by ray casting the same parts the cameras draw.

Rays form a (beam, azimuth) grid, so for every part only the rays inside its angular footprint are tested
(ray / oriented-box slab test), which keeps a ~40k-ray sweep cheap. The ground is the plane z = 0 with the
texture's reflectivity. Points are returned in the LIDAR_TOP frame: x, y, z, intensity (0-255), ring.
"""

from __future__ import annotations

import numpy as np
from nuscenes.utils.data_classes import Box
from nuscenes.utils.geometry_utils import points_in_box
from pyquaternion import Quaternion

from tinybev_ros.geometry import Transform, yaw_to_quat
from tinybev_ros.synth.solids import PartBatch
from tinybev_ros.synth.texture import GroundTexture

BEAMS = 32
ELEVATION_DEG = (-30.67, 10.67)
RANGE_NOISE_M = 0.015
DROPOUT = 0.02


class Lidar:
    def __init__(self, lidar_to_ego: Transform, azimuth_steps: int, max_range: float) -> None:
        self.lidar_to_ego = lidar_to_ego
        self.max_range = max_range
        self.n_az = azimuth_steps
        self.elev = np.deg2rad(np.linspace(*ELEVATION_DEG, BEAMS))
        self.az = (np.arange(azimuth_steps) + 0.5) * 2 * np.pi / azimuth_steps - np.pi
        el, az = self.elev[:, None], self.az[None, :]
        dirs = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el) * np.ones_like(az)], axis=-1)
        self.dirs = dirs.reshape(-1, 3)  # lidar frame, ray index = beam * n_az + azimuth index
        self.ring = np.repeat(np.arange(BEAMS), azimuth_steps).astype(np.float32)

    def pose(self, ego_xy: np.ndarray, ego_yaw: float) -> tuple[np.ndarray, np.ndarray]:
        """Rotation lidar->global and the sensor origin in global coordinates."""
        c, s = np.cos(ego_yaw), np.sin(ego_yaw)
        r_ge = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        r_gl = r_ge @ self.lidar_to_ego.rotation
        origin = r_ge @ self.lidar_to_ego.translation + np.array([ego_xy[0], ego_xy[1], 0.0])
        return r_gl, origin

    def scan(self, batch: PartBatch, texture: GroundTexture, ego_xy: np.ndarray, ego_yaw: float,
             rng: np.random.Generator) -> np.ndarray:
        """(N, 5) float32 points in the LiDAR frame."""
        r_gl, origin = self.pose(ego_xy, ego_yaw)
        dirs_g = self.dirs @ r_gl.T
        n_rays = len(dirs_g)
        t_hit = np.full(n_rays, np.inf)
        refl = np.zeros(n_rays)
        down = dirs_g[:, 2] < -1e-6
        t_ground = np.where(down, -origin[2] / np.where(down, dirs_g[:, 2], -1.0), np.inf)
        t_ground[t_ground > self.max_range] = np.inf
        t_hit[:] = t_ground
        ground = np.isfinite(t_ground)
        if len(batch):
            self._cast_parts(batch, r_gl, origin, dirs_g, t_hit, refl)
        hit = np.isfinite(t_hit) & (rng.random(n_rays) > DROPOUT)
        is_ground = hit & ground & (t_hit >= t_ground - 1e-9)
        t = t_hit[hit] + rng.normal(0.0, RANGE_NOISE_M, size=int(hit.sum()))
        pts_l = self.dirs[hit] * t[:, None]
        intensity = refl[hit]
        g = is_ground[hit]
        if g.any():
            xy = origin[:2] + dirs_g[hit][g, :2] * t_hit[hit][g, None]
            intensity[g] = texture.intensity(xy)
        intensity = np.clip(intensity * 255.0 * (0.85 + 0.15 * rng.random(len(intensity))), 0, 255)
        return np.column_stack([pts_l, intensity, self.ring[hit]]).astype(np.float32)

    def _cast_parts(self, batch: PartBatch, r_gl: np.ndarray, origin: np.ndarray, dirs_g: np.ndarray,
                    t_hit: np.ndarray, refl: np.ndarray) -> None:
        centers, half, yaw, reflectivity, _ = batch.boxes()
        rel = centers - origin
        radius = np.linalg.norm(half, axis=1)
        dist = np.linalg.norm(rel, axis=1)
        cand = np.where(dist - radius < self.max_range)[0]
        if len(cand) == 0:
            return
        # box corners in the lidar frame -> angular footprint on the (beam, azimuth) grid
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)
        c, s = np.cos(yaw[cand]), np.sin(yaw[cand])
        local = signs[None] * half[cand][:, None, :]  # (P, 8, 3)
        gx = local[..., 0] * c[:, None] - local[..., 1] * s[:, None]
        gy = local[..., 0] * s[:, None] + local[..., 1] * c[:, None]
        corners = np.stack([gx, gy, local[..., 2]], axis=-1) + rel[cand][:, None, :]
        corners_l = corners @ r_gl  # global offset -> lidar frame
        centre_l = rel[cand] @ r_gl
        az_c = np.arctan2(centre_l[:, 1], centre_l[:, 0])
        az_rel = np.angle(np.exp(1j * (np.arctan2(corners_l[..., 1], corners_l[..., 0]) - az_c[:, None])))
        az_lo = az_c + az_rel.min(axis=1)
        az_hi = az_c + az_rel.max(axis=1)
        d_xy = np.linalg.norm(centre_l[:, :2], axis=1)
        r_xy = np.linalg.norm(half[cand][:, :2], axis=1)
        d_min = np.maximum(d_xy - r_xy, 0.3)
        d_max = d_xy + r_xy
        z_lo, z_hi = corners_l[..., 2].min(axis=1), corners_l[..., 2].max(axis=1)
        el_hi = np.maximum(np.arctan2(z_hi, d_min), np.arctan2(z_hi, d_max))
        el_lo = np.minimum(np.arctan2(z_lo, d_min), np.arctan2(z_lo, d_max))
        inside = d_xy < r_xy  # the sensor is within the footprint: every azimuth
        step = 2 * np.pi / self.n_az
        n_az = self.n_az
        for k, p in enumerate(cand):
            b0 = int(np.searchsorted(self.elev, el_lo[k]))
            b1 = int(np.searchsorted(self.elev, el_hi[k], side="right"))
            if b1 <= b0:
                continue
            if inside[k]:
                az_idx = np.arange(n_az)
            else:
                a0 = int(np.floor((az_lo[k] + np.pi) / step - 0.5))
                a1 = int(np.ceil((az_hi[k] + np.pi) / step - 0.5))
                az_idx = np.arange(a0, a1 + 1) % n_az
            rays = (np.arange(b0, b1)[:, None] * n_az + az_idx[None, :]).ravel()
            d = dirs_g[rays]
            cy, sy = np.cos(yaw[p]), np.sin(yaw[p])
            o = -rel[p]
            o_b = np.array([o[0] * cy + o[1] * sy, -o[0] * sy + o[1] * cy, o[2]])
            d_b = np.stack([d[:, 0] * cy + d[:, 1] * sy, -d[:, 0] * sy + d[:, 1] * cy, d[:, 2]], axis=1)
            h = half[p]
            with np.errstate(divide="ignore", invalid="ignore"):
                t1 = (-h - o_b) / d_b
                t2 = (h - o_b) / d_b
            t_near = np.nanmax(np.minimum(t1, t2), axis=1)
            t_far = np.nanmin(np.maximum(t1, t2), axis=1)
            ok = (t_near <= t_far) & (t_near > 0) & (t_near < t_hit[rays])
            if ok.any():
                sel = rays[ok]
                t_hit[sel] = t_near[ok]
                refl[sel] = reflectivity[p]


def count_points_in_boxes(points: np.ndarray, centers: np.ndarray, sizes_wlh: np.ndarray, yaws: np.ndarray,
                          ego_pose: dict, calibrated_sensor: dict) -> np.ndarray:
    """`num_lidar_pts` of boxes (global frame) in a sweep (LiDAR frame), bit-identical to the devkit.

    Boxes go through the same records and steps as `NuScenes.get_sample_data` (global -> ego -> sensor) and
    points are tested by the devkit's own `points_in_box`, so a reader recounting finds the same numbers.
    """
    xyz = points[:, :3].T
    counts = np.zeros(len(centers), dtype=np.int64)
    for i, (c, size, yaw) in enumerate(zip(centers, sizes_wlh, yaws, strict=True)):
        box = Box([float(v) for v in c], [float(v) for v in size], Quaternion(yaw_to_quat(float(yaw)).tolist()))
        box.translate(-np.array(ego_pose["translation"]))
        box.rotate(Quaternion(ego_pose["rotation"]).inverse)
        box.translate(-np.array(calibrated_sensor["translation"]))
        box.rotate(Quaternion(calibrated_sensor["rotation"]).inverse)
        reach = float(np.linalg.norm(size)) / 2 + 0.1
        near = np.abs(xyz[0] - box.center[0]) < reach
        near &= np.abs(xyz[1] - box.center[1]) < reach
        if near.any():
            counts[i] = int(points_in_box(box, xyz[:, near]).sum())
    return counts
