"""Class lists and enumerations shared by data, model, messages and metrics (one definition each)."""

from __future__ import annotations

from enum import IntEnum

# The ten nuScenes detection classes, in the devkit's order.
DETECTION_CLASSES: tuple[str, ...] = (
    "car",
    "truck",
    "bus",
    "trailer",
    "construction_vehicle",
    "pedestrian",
    "motorcycle",
    "bicycle",
    "traffic_cone",
    "barrier",
)

# nuScenes category -> detection class (the devkit's mapping; categories not listed are ignored).
CATEGORY_TO_DETECTION: dict[str, str] = {
    "vehicle.car": "car",
    "vehicle.truck": "truck",
    "vehicle.bus.bendy": "bus",
    "vehicle.bus.rigid": "bus",
    "vehicle.trailer": "trailer",
    "vehicle.construction": "construction_vehicle",
    "human.pedestrian.adult": "pedestrian",
    "human.pedestrian.child": "pedestrian",
    "human.pedestrian.construction_worker": "pedestrian",
    "human.pedestrian.police_officer": "pedestrian",
    "vehicle.motorcycle": "motorcycle",
    "vehicle.bicycle": "bicycle",
    "movable_object.trafficcone": "traffic_cone",
    "movable_object.barrier": "barrier",
}

# Classes whose agents move and get motion forecasts / future occupancy.
DYNAMIC_CLASSES: tuple[str, ...] = (
    "car", "truck", "bus", "trailer", "construction_vehicle", "pedestrian", "motorcycle", "bicycle",
)

# BEV map segmentation layers (names of nuScenes map-expansion layers).
MAP_CLASSES: tuple[str, ...] = ("drivable_area", "lane_divider", "ped_crossing", "walkway")


class Command(IntEnum):
    """High-level navigation command that conditions the planner (UniAD/ST-P3 convention)."""

    RIGHT = 0
    LEFT = 1
    STRAIGHT = 2
