"""Read a bag of recorded node outputs back into `Predictions`, one per published frame.

This closes the loop for evaluation through ROS: what the node published is decoded with the same conversions
it was encoded with and handed to the evaluator. Only typed messages are read: boxes and the nuScenes class from
`detections` (vision_msgs), velocities, track ids and forecast modes from `objects` (PredictedObjects, same
objects in the same order), map layers and occupancy from the grids, the plan from `ego_trajectory`. The rviz2
markers are never read back, so a change of colour in the visualiser cannot change a metric.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
from autoware_perception_msgs.msg import PredictedObjects
from nav_msgs.msg import OccupancyGrid
from nav_msgs.msg import Path as PathMsg
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Reader
from vision_msgs.msg import Detection3DArray

from tinybev_ros.predictions import Predictions
from tinybev_ros.ros import messages as M
from tinybev_ros.ros.interface import NAMESPACE
from tinybev_ros.ros.predicted_objects import predicted_objects_from_msg
from tinybev_ros.taxonomy import MAP_CLASSES, Command

MAX_FUTURE_STEPS = 16  # occupancy/future_k topics looked for


def predictions_from_bag(path: str | Path, namespace: str = NAMESPACE) -> dict[int, Predictions]:
    """stamp_ns -> Predictions for every frame that has detections in the bag."""
    by_stamp: dict[int, dict[str, object]] = defaultdict(dict)
    wanted = {f"{namespace}/detections": Detection3DArray, f"{namespace}/occupancy": OccupancyGrid,
              f"{namespace}/ego_trajectory": PathMsg, f"{namespace}/objects": PredictedObjects}
    wanted.update({f"{namespace}/map/{layer}": OccupancyGrid for layer in MAP_CLASSES})
    wanted.update({f"{namespace}/occupancy/future_{k}": OccupancyGrid for k in range(1, MAX_FUTURE_STEPS + 1)})
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
        steps = [topics.get(f"{namespace}/occupancy")]
        steps += [topics[f"{namespace}/occupancy/future_{k}"] for k in range(1, MAX_FUTURE_STEPS + 1)
                  if f"{namespace}/occupancy/future_{k}" in topics]
        occupancy = np.stack([M.grid_from_msg(g)[0] if g is not None else empty for g in steps])
        plan_msg = topics.get(f"{namespace}/ego_trajectory")
        plan = np.array([[p.pose.position.x, p.pose.position.y] for p in plan_msg.poses]).reshape(-1, 2) \
            if plan_msg is not None else np.zeros((0, 2))
        objects_msg = topics.get(f"{namespace}/objects")
        if objects_msg is None:
            raise ValueError(f"frame {stamp} in {path} has detections but no {namespace}/objects")
        objects = predicted_objects_from_msg(objects_msg)
        if len(objects["scores"]) != n:
            raise ValueError(f"frame {stamp} in {path}: {n} detections but {len(objects['scores'])} objects")
        out[stamp] = Predictions(
            stamp_ns=stamp, centers=boxes["centers"], sizes_wlh=boxes["sizes_wlh"], yaws=boxes["yaws"],
            velocities=objects["velocities"], scores=boxes["scores"], labels=boxes["labels"],
            track_ids=boxes["track_ids"], forecasts=objects["forecasts"], forecast_probs=objects["forecast_probs"],
            map_probs=map_probs, occupancy=occupancy, ego_plan=plan,
            command=int(Command.STRAIGHT), grid=grid,
        )
    return out
