"""Student model configuration: every architectural number of TinyBEV, with its default in one place.

`base` (the defaults) is the full-size student (~28M parameters, six 256x704 images, 200x200 BEV at 0.5 m);
`config/model_tiny.yaml` shrinks the input, the BEV raster and the widths so a CPU forward of one six-camera
sample stays well under a second (the demo and the ROS node tests run it on two CPU cores).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from tinybev_ros.config import from_dict, load_yaml
from tinybev_ros.geometry import BevGrid
from tinybev_ros.model.box_code import AXIS_DIRECTION, CODE_SIZES, HEADING_CODES
from tinybev_ros.predictions import FORECAST_STEPS, PLAN_STEPS
from tinybev_ros.score_thresholds import SCORE_THRESHOLDS
from tinybev_ros.taxonomy import DETECTION_CLASSES, MAP_CLASSES


@dataclass
class DecodeConfig:
    """Turning raw head outputs into `Predictions` (used by `tinybev_ros.model.decode`)."""

    score_threshold: float = SCORE_THRESHOLDS.decode  # minimum heatmap score of a kept detection
    max_detections: int = 200  # top-k peaks over all classes before the threshold
    peak_kernel: int = 3  # max-pool window of CenterPoint peak picking (odd, in detection cells)

    def __post_init__(self) -> None:
        if not 0.0 <= self.score_threshold <= 1.0:  # also refuses NaN
            raise ValueError(f"decode.score_threshold must be in [0, 1], got {self.score_threshold}")
        if self.max_detections < 1:
            raise ValueError(f"decode.max_detections must be 1 or more, got {self.max_detections}")
        if self.peak_kernel < 1 or self.peak_kernel % 2 == 0:
            raise ValueError(f"decode.peak_kernel must be odd and 1 or more (a window centred on its cell), got "
                             f"{self.peak_kernel}")


@dataclass
class ModelConfig:
    """Architecture of the TinyBEV student (also reused for the teacher's camera branch, encoder and heads)."""

    name: str = "base"
    # Camera input after `preprocess`: resize to this width, keep the bottom `image_height` rows (the top is sky).
    image_height: int = 256
    image_width: int = 704
    neck_channels: int = 256
    # Depth bins of the LSS frustum: [depth_min, depth_max) in steps of depth_step metres. 1-60 m covers the
    # nuScenes evaluation range (50 m) along the diagonal of the camera frusta.
    depth_min: float = 1.0
    depth_max: float = 60.0
    depth_step: float = 1.0
    context_channels: int = 80
    # Frustum points outside [z_min, z_max] (base_link, metres) are not splatted: they cannot be on the road.
    z_min: float = -5.0
    z_max: float = 3.0
    grid: BevGrid = field(default_factory=BevGrid)
    # BEV encoder: one level per entry, level i at stride 2**i of the grid.
    bev_channels: tuple[int, ...] = (96, 192, 320, 480)
    bev_blocks: tuple[int, ...] = (1, 2, 2, 2)
    fpn_channels: int = 192  # channels of the fused pre-head features
    det_stride: int = 2  # detection / motion grid = grid downsampled by this (must be one of the levels)
    head_channels: int = 96
    motion_modes: int = 6
    occupancy_frames: int = 5  # now and +0.5 .. +2.0 s
    plan_window_m: float = 32.0  # side of the ego-centred square pooled for planning
    plan_hidden: int = 256
    plan_refine_iters: int = 2  # collision-aware refinement steps against predicted occupancy
    plan_refine_step: float = 2.0  # initial step (m^2 per unit occupancy gradient); learned during training
    # The planner also reads the ego status (velocity from the ego poses, tinybev_ros/ego_motion.py). False for
    # checkpoints made before it existed and for teachers, whose LiDAR sweeps show the ego motion themselves.
    ego_status: bool = False
    # How the box head codes headings (tinybev_ros/model/box_code.py). Checkpoints whose config lacks the key
    # predate the axis/direction code and are read as "sin_cos" (tinybev_ros/checkpoint.py).
    heading_code: str = AXIS_DIRECTION
    decode: DecodeConfig = field(default_factory=DecodeConfig)

    def __post_init__(self) -> None:
        sizes = {"image_height": self.image_height, "image_width": self.image_width, "neck_channels":
                 self.neck_channels, "context_channels": self.context_channels, "fpn_channels": self.fpn_channels,
                 "head_channels": self.head_channels, "motion_modes": self.motion_modes, "occupancy_frames":
                 self.occupancy_frames, "plan_hidden": self.plan_hidden, "det_stride": self.det_stride,
                 **{f"bev_channels[{i}]": c for i, c in enumerate(self.bev_channels)},
                 **{f"bev_blocks[{i}]": b for i, b in enumerate(self.bev_blocks)}}
        not_positive = [f"{key} {value}" for key, value in sizes.items() if value < 1]
        if not_positive:
            raise ValueError(f"model config {self.name}: sizes must be 1 or more: {', '.join(not_positive)}")
        if not 0.0 < self.depth_step < math.inf or not 0.0 < self.depth_min < self.depth_max < math.inf:
            raise ValueError(f"model config {self.name}: depth bins need 0 < depth_min < depth_max and depth_step > "
                             f"0, got {self.depth_min}, {self.depth_max}, {self.depth_step}")
        if not self.z_min < self.z_max:  # no frustum point would be splatted: an empty BEV, silently
            raise ValueError(f"model config {self.name}: z_min {self.z_min} must be below z_max {self.z_max}")
        if not 0.0 < self.plan_window_m < math.inf or self.plan_refine_iters < 0:
            raise ValueError(f"model config {self.name}: plan_window_m must be > 0 and plan_refine_iters >= 0, got "
                             f"{self.plan_window_m} and {self.plan_refine_iters}")
        if len(self.bev_channels) != len(self.bev_blocks) or len(self.bev_channels) < 3:
            raise ValueError(f"model config {self.name}: bev_channels and bev_blocks need the same length >= 3")
        if self.det_stride not in [2**i for i in range(len(self.bev_channels))]:
            raise ValueError(f"model config {self.name}: det_stride {self.det_stride} is not a BEV level stride")
        height, width = self.grid.shape
        if height % self.det_stride or width % self.det_stride:
            raise ValueError(f"model config {self.name}: grid {self.grid.shape} not divisible by det_stride")
        if self.image_height % 32 or self.image_width % 32:
            raise ValueError(f"model config {self.name}: image size must be a multiple of 32 (ResNet stride)")
        if self.num_depth_bins < 2:
            raise ValueError(f"model config {self.name}: depth range gives {self.num_depth_bins} bins")
        if self.heading_code not in HEADING_CODES:
            raise ValueError(f"model config {self.name}: heading_code must be one of {HEADING_CODES}, got "
                             f"{self.heading_code!r}")

    @property
    def box_code_size(self) -> int:
        return CODE_SIZES[self.heading_code]  # a known code: __post_init__ checked it

    @property
    def num_depth_bins(self) -> int:
        return int(round((self.depth_max - self.depth_min) / self.depth_step))

    @property
    def num_classes(self) -> int:
        return len(DETECTION_CLASSES)

    @property
    def num_map_classes(self) -> int:
        return len(MAP_CLASSES)

    @property
    def forecast_steps(self) -> int:
        return FORECAST_STEPS

    @property
    def plan_steps(self) -> int:
        return PLAN_STEPS

    @property
    def feature_stride(self) -> int:
        """Stride of the image features the frustum is built on (ResNet layer3, after the neck)."""
        return 16

    @property
    def det_grid(self) -> BevGrid:
        """The detection / motion raster: `grid` with `det_stride` times coarser cells."""
        g = self.grid
        return BevGrid(g.x_min, g.x_max, g.y_min, g.y_max, g.resolution * self.det_stride)


def load_model_config(path: str | Path) -> ModelConfig:
    """A `ModelConfig` from YAML (unknown keys are errors naming the file)."""
    return load_yaml(ModelConfig, path)


def model_config_from_dict(data: dict) -> ModelConfig:
    return from_dict(ModelConfig, data)
