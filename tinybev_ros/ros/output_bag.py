"""Read a bag of recorded node outputs back into `Predictions`, one per published frame.

This closes the loop for evaluation through ROS: what the node published (boxes, track ids, map layers,
occupancy, plan) is decoded with the same conversions it was encoded with and handed to the evaluator.
Forecasts and velocities are not carried by these topics (vision_msgs has no velocity field), so they come
back empty/zero; detection mAP, map/occupancy IoU and planning L2 are measurable, motion metrics are not.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
from nav_msgs.msg import OccupancyGrid
from nav_msgs.msg import Path as PathMsg
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Reader
from vision_msgs.msg import Detection3DArray

from tinybev_ros.predictions import FORECAST_STEPS, Predictions
from tinybev_ros.ros import messages as M
from tinybev_ros.taxonomy import MAP_CLASSES, Command

NAMESPACE = "/tinybev"


def predictions_from_bag(path: str | Path, namespace: str = NAMESPACE) -> dict[int, Predictions]:
    """stamp_ns -> Predictions for every frame that has detections in the bag."""
    by_stamp: dict[int, dict[str, object]] = defaultdict(dict)
    wanted = {f"{namespace}/detections": Detection3DArray, f"{namespace}/occupancy": OccupancyGrid,
              f"{namespace}/ego_trajectory": PathMsg}
    wanted.update({f"{namespace}/map/{layer}": OccupancyGrid for layer in MAP_CLASSES})
    with Reader(Path(path)) as reader:
        connections = [c for c in reader.connections if c.topic in wanted]
        for connection, _, raw in reader.messages(connections=connections):
            msg = deserialize_message(raw, wanted[connection.topic])
            by_stamp[M.to_ns(msg.header.stamp)][connection.topic] = msg
    out = {}
    for stamp, topics in sorted(by_stamp.items()):
        detections = topics.get(f"{namespace}/detections")
        if detections is None:
            continue
        boxes = M.detections_from_msg(detections)
        n = len(boxes["scores"])
        layers = [topics.get(f"{namespace}/map/{layer}") for layer in MAP_CLASSES]
        grid_source = next((g for g in [*layers, topics.get(f"{namespace}/occupancy")] if g is not None), None)
        if grid_source is None:
            raise ValueError(f"frame {stamp} in {path} has detections but no map or occupancy grid")
        _, grid = M.grid_from_msg(grid_source)
        empty = np.full(grid.shape, np.nan)
        map_probs = np.stack([M.grid_from_msg(g)[0] if g is not None else empty for g in layers])
        occupancy_msg = topics.get(f"{namespace}/occupancy")
        occupancy = (M.grid_from_msg(occupancy_msg)[0] if occupancy_msg is not None else empty)[None]
        plan_msg = topics.get(f"{namespace}/ego_trajectory")
        plan = np.array([[p.pose.position.x, p.pose.position.y] for p in plan_msg.poses]).reshape(-1, 2) \
            if plan_msg is not None else np.zeros((0, 2))
        out[stamp] = Predictions(
            stamp_ns=stamp, centers=boxes["centers"], sizes_wlh=boxes["sizes_wlh"], yaws=boxes["yaws"],
            velocities=np.zeros((n, 2)), scores=boxes["scores"], labels=boxes["labels"],
            track_ids=boxes["track_ids"], forecasts=np.zeros((n, 1, FORECAST_STEPS, 2)),
            forecast_probs=np.ones((n, 1)), map_probs=map_probs, occupancy=occupancy, ego_plan=plan,
            command=int(Command.STRAIGHT), grid=grid,
        )
    return out
