"""Settings of the synthetic world generator; every tunable number has its default here."""

from __future__ import annotations

from dataclasses import dataclass

from tinybev_ros.errors import ConfigError

SCENE_SPACING_US = 3_600_000_000  # scene k starts k hours after scene 0 (generator.py)
MAX_DURATION_S = SCENE_SPACING_US / 1e6  # so no two scenes' times overlap

# The devkit's map API accepts only these names; Singapore drives on the left, Boston on the right.
MAP_NAMES: tuple[str, ...] = (
    "singapore-onenorth", "boston-seaport", "singapore-hollandvillage", "singapore-queenstown",
)
LEFT_HAND_TRAFFIC: dict[str, bool] = {
    "singapore-onenorth": True,
    "singapore-hollandvillage": True,
    "singapore-queenstown": True,
    "boston-seaport": False,
}


@dataclass
class SynthConfig:
    """What `tinybev synth` writes. Defaults give nuScenes-like scenes (20 s, 2 Hz keyframes)."""

    scenes: int = 2
    seed: int = 0
    version: str = "v1.0-mini"
    duration_s: float = 20.0
    sweeps: bool = False  # also write the non-keyframe camera (12 Hz) and LiDAR (20 Hz) data
    maps: tuple[str, ...] = ("singapore-onenorth", "boston-seaport")
    val_fraction: float = 0.2  # share of scenes put into the val split (at least one when scenes >= 2)
    # world layout
    grid_roads: int = 5  # roads per axis
    block_min_m: float = 75.0
    block_max_m: float = 110.0
    lane_width_m: float = 3.5
    shoulder_m: float = 2.5
    sidewalk_m: float = 4.0
    crossing_m: float = 4.0
    # population per 100 m of road (both sides together)
    moving_vehicles_per_100m: float = 4.5
    parked_per_100m: float = 2.0
    pedestrians_per_100m: float = 3.0
    # sensors
    jpeg_quality: int = 88
    lidar_azimuth_steps: int = 1100
    lidar_max_range_m: float = 90.0
    annotation_range_m: float = 60.0

    def __post_init__(self) -> None:
        if self.scenes < 1:
            raise ConfigError(f"SynthConfig.scenes must be >= 1, got {self.scenes}")
        if not 1.0 <= self.duration_s <= MAX_DURATION_S:  # a day's would fill the memory with its routes first
            raise ConfigError(f"SynthConfig.duration_s must be 1 to {MAX_DURATION_S:.0f} s (scenes start an hour "
                              f"apart), got {self.duration_s}")
        if self.version not in ("v1.0-mini", "v1.0-trainval"):
            raise ConfigError(f"SynthConfig.version must be 'v1.0-mini' or 'v1.0-trainval', got {self.version!r}")
        unknown = [m for m in self.maps if m not in MAP_NAMES]
        if unknown or not self.maps:
            raise ConfigError(f"SynthConfig.maps must name nuScenes maps {MAP_NAMES}, got {list(self.maps)}")
