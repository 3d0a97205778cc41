"""Global BEV augmentation (CenterPoint / BEVDet's "BDA"): flip, rotate and scale the whole scene around the ego.

One similarity transform A = s * Rz(theta) * diag(fx, fy, 1) (fx, fy = +-1) moves everything that lives in
base_link: LiDAR points, boxes (centres, sizes, headings, velocities), agent and ego futures, map and occupancy
rasters, and the camera extrinsics (cam_to_ego' = A cam_to_ego). The images and intrinsics stay as they are:
the cameras now sit in a moved BEV frame, so Lift-Splat puts the same pixels at the moved BEV cells and every
target agrees with them. The scale applies to z as well (as BEVDet does), so the frustum, the LiDAR and the
boxes keep one consistent geometry.

The navigation command stays the driver's intent: it follows the lateral sign of the ego future, so a left/right
mirror (fy = -1) swaps LEFT and RIGHT; rotation and scale leave it unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinybev_ros.geometry import BevGrid
from tinybev_ros.taxonomy import Command


@dataclass(frozen=True)
class BevAugmentationConfig:
    """Probabilities and ranges of the global BEV transform (training only; `enabled: false` switches it off)."""

    enabled: bool = True
    flip_x_probability: float = 0.5  # mirror front/back (x -> -x)
    flip_y_probability: float = 0.5  # mirror left/right (y -> -y)
    rotation_deg: float = 22.5  # uniform in [-rotation_deg, +rotation_deg] about z
    scale_range: tuple[float, float] = (0.95, 1.05)  # uniform scale of x, y and z

    def __post_init__(self) -> None:
        for name in ("flip_x_probability", "flip_y_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"bev_augmentation.{name} must be within [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.rotation_deg <= 180.0:
            raise ValueError(f"bev_augmentation.rotation_deg must be within [0, 180], got {self.rotation_deg}")
        low, high = self.scale_range
        if not 0.0 < low <= high:
            raise ValueError(f"bev_augmentation.scale_range must be 0 < low <= high, got {self.scale_range}")

    def reach(self) -> float:
        """How far (as a multiple of the grid's half size) the source of a target cell can lie from the centre.

        A target cell at q' comes from A^-1 q'; over the grid square, |A^-1 q'|_inf <= (cos t + sin t) / s_min
        times the half size (t = the largest rotation, up to 45 degrees; beyond that the diagonal bound sqrt 2).
        """
        if not self.enabled:
            return 1.0
        theta = np.radians(min(self.rotation_deg, 45.0))
        return float((np.cos(theta) + np.sin(theta)) / self.scale_range[0])


@dataclass(frozen=True)
class BevTransform:
    """One sampled similarity transform of base_link (3x3 `matrix` = s R F); identity when not augmenting."""

    matrix: np.ndarray
    flip_y: bool = False

    @staticmethod
    def identity() -> BevTransform:
        return BevTransform(np.eye(3))

    @staticmethod
    def compose(flip_x: bool, flip_y: bool, rotation_rad: float, scale: float) -> BevTransform:
        flips = np.diag([-1.0 if flip_x else 1.0, -1.0 if flip_y else 1.0, 1.0])
        c, s = np.cos(rotation_rad), np.sin(rotation_rad)
        rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        return BevTransform(scale * rotation @ flips, flip_y)

    @staticmethod
    def sample(rng: np.random.Generator, config: BevAugmentationConfig) -> BevTransform:
        """A random transform; always draws the same four numbers so the stream of `rng` does not depend on it."""
        draws = rng.random(2), rng.uniform(-1.0, 1.0), rng.uniform(*config.scale_range)
        if not config.enabled:
            return BevTransform.identity()
        (fx, fy), rotation, scale = draws
        return BevTransform.compose(bool(fx < config.flip_x_probability), bool(fy < config.flip_y_probability),
                                    float(np.radians(config.rotation_deg) * rotation), float(scale))

    @property
    def is_identity(self) -> bool:
        return bool(np.array_equal(self.matrix, np.eye(3)))

    @property
    def scale(self) -> float:
        return float(abs(np.linalg.det(self.matrix)) ** (1.0 / 3.0))

    @property
    def planar(self) -> np.ndarray:
        """The 2x2 xy block (the transform does not mix z with x, y)."""
        return self.matrix[:2, :2]

    def points(self, xyz: np.ndarray) -> np.ndarray:
        """(..., 3) points (or (P, >=3) LiDAR rows: only the first three columns move)."""
        out = np.array(xyz, copy=True)
        out[..., :3] = xyz[..., :3] @ self.matrix.T
        return out

    def vectors_xy(self, xy: np.ndarray) -> np.ndarray:
        """(..., 2) planar positions or velocities in base_link."""
        return np.asarray(xy) @ self.planar.T

    def headings(self, yaws: np.ndarray) -> np.ndarray:
        """Yaw angles of heading vectors after the transform (a mirror reverses the sense of rotation)."""
        direction = np.stack([np.cos(yaws), np.sin(yaws)], axis=-1) @ self.planar.T
        return np.arctan2(direction[..., 1], direction[..., 0])

    def extrinsics(self, cam_to_ego: np.ndarray) -> np.ndarray:
        """(N, 4, 4) camera -> base_link matrices composed with the transform (no longer rigid when scaled)."""
        lift = np.eye(4)
        lift[:3, :3] = self.matrix
        return lift @ cam_to_ego

    def command(self, command: int) -> int:
        if not self.flip_y or command == Command.STRAIGHT:
            return int(command)
        return int(Command.RIGHT if command == Command.LEFT else Command.LEFT)

    def resample(self, raster: np.ndarray, source: BevGrid, target: BevGrid) -> np.ndarray:
        """(C, H, W) raster on `source` -> (C, h, w) on `target` in the moved frame, nearest cell; cells whose
        source lies outside `source` are 0 (choose `source` large enough: BevAugmentationConfig.reach)."""
        xs, ys = target.cell_centers()
        grid_x, grid_y = np.meshgrid(xs, ys, indexing="ij")
        moved = np.stack([grid_x, grid_y], axis=-1)
        original = moved @ np.linalg.inv(self.planar).T
        rows = np.floor((original[..., 0] - source.x_min) / source.resolution).astype(np.int64)
        cols = np.floor((original[..., 1] - source.y_min) / source.resolution).astype(np.int64)
        height, width = source.shape
        inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
        out = np.zeros((raster.shape[0], *target.shape), dtype=raster.dtype)
        out[:, inside] = raster[:, rows[inside], cols[inside]]
        return out
