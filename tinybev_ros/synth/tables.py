"""The 13 nuScenes tables, built record by record and written as `<dataroot>/<version>/<table>.json`.

Field names and meanings follow the nuScenes schema (https://www.nuscenes.org/nuscenes#data-format):
quaternions are (w, x, y, z), sizes (w, l, h), timestamps in microseconds, `prev`/`next` are "" at the ends
of a chain, and an ego_pose shares its token with the sample_data it was recorded for.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tinybev_ros.geometry import CAMERA_NAMES, LIDAR_NAME, Rig, yaw_to_quat
from tinybev_ros.synth.population import CLASS_SPECS
from tinybev_ros.synth.tokens import TokenFactory

TABLES = ("attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log", "map", "sample",
          "sample_annotation", "sample_data", "scene", "sensor", "visibility")
ATTRIBUTES = ("vehicle.moving", "vehicle.stopped", "vehicle.parked", "cycle.with_rider", "cycle.without_rider",
              "pedestrian.sitting_lying_down", "pedestrian.standing", "pedestrian.moving")
VISIBILITY_LEVELS = (("1", "v0-40"), ("2", "v40-60"), ("3", "v60-80"), ("4", "v80-100"))


def visibility_token(fraction: float) -> str:
    """nuScenes visibility bin of the visible fraction of an object over all six cameras."""
    if fraction < 0.4:
        return "1"
    if fraction < 0.6:
        return "2"
    if fraction < 0.8:
        return "3"
    return "4"


class Tables:
    """All records of one dataset; small (metadata only), written once at the end."""

    def __init__(self, token: TokenFactory, rig: Rig) -> None:
        self.token = token
        self.rig = rig
        self.records: dict[str, list[dict]] = {name: [] for name in TABLES}
        self.attribute_token = {name: token("attribute", name) for name in ATTRIBUTES}
        for name in ATTRIBUTES:
            self.records["attribute"].append({"token": self.attribute_token[name], "name": name,
                                              "description": f"synthetic: {name}"})
        categories = sorted({c for _, _, cats in CLASS_SPECS.values() for c in cats})
        self.category_token = {name: token("category", name) for name in categories}
        for name in categories:
            self.records["category"].append({"token": self.category_token[name], "name": name,
                                             "description": f"synthetic: {name}"})
        for tok, level in VISIBILITY_LEVELS:
            self.records["visibility"].append({"token": tok, "level": level,
                                               "description": f"visibility of whole object is between {level[1:]}%"})
        self.sensor_token = {}
        for channel in (*CAMERA_NAMES, LIDAR_NAME):
            self.sensor_token[channel] = token("sensor", channel)
            self.records["sensor"].append({"token": self.sensor_token[channel], "channel": channel,
                                           "modality": "lidar" if channel == LIDAR_NAME else "camera"})

    def add(self, table: str, record: dict) -> dict:
        self.records[table].append(record)
        return record

    def add_calibration(self, log_token: str) -> dict[str, str]:
        """calibrated_sensor records of one log (the rig does not change within a log)."""
        out = {}
        for channel in (*CAMERA_NAMES, LIDAR_NAME):
            if channel == LIDAR_NAME:
                tf, intrinsic = self.rig.lidar_to_ego, []
            else:
                cam = self.rig.cameras[channel]
                tf, intrinsic = cam.sensor_to_ego, cam.intrinsic.tolist()
            tok = self.token("calibrated_sensor", log_token, channel)
            self.add("calibrated_sensor", {
                "token": tok, "sensor_token": self.sensor_token[channel],
                "translation": tf.translation.tolist(), "rotation": tf.quat_wxyz.tolist(),
                "camera_intrinsic": intrinsic,
            })
            out[channel] = tok
        return out

    def add_ego_pose(self, token: str, timestamp: int, xy: np.ndarray, yaw: float) -> None:
        self.add("ego_pose", {"token": token, "timestamp": int(timestamp),
                              "rotation": yaw_to_quat(yaw).tolist(),
                              "translation": [float(xy[0]), float(xy[1]), 0.0]})

    def write(self, table_dir: Path) -> None:
        table_dir.mkdir(parents=True, exist_ok=True)
        for name in TABLES:
            (table_dir / f"{name}.json").write_text(json.dumps(self.records[name], indent=0))


def link_chain(records: list[dict]) -> None:
    """Set prev/next tokens along an ordered list of records."""
    for i, rec in enumerate(records):
        rec["prev"] = records[i - 1]["token"] if i > 0 else ""
        rec["next"] = records[i + 1]["token"] if i + 1 < len(records) else ""
