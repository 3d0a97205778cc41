"""Read a bag of recorded node outputs back into `Predictions`, one per published frame.

This closes the loop for evaluation through ROS: what the node published (boxes, track ids, map layers,
occupancy, plan) is decoded with the same conversions it was encoded with and handed to the evaluator.
vision_msgs has no velocity or forecast fields: velocities come back from the velocity arrows of `markers`,
forecast modes and their probabilities from the line strips of `predicted_paths` (opacity 0.2 + 0.8 p, see
`messages.forecast_markers`).
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
from visualization_msgs.msg import Marker, MarkerArray

from tinybev_ros.predictions import FORECAST_STEPS, Predictions
from tinybev_ros.ros import messages as M
from tinybev_ros.taxonomy import MAP_CLASSES, Command

NAMESPACE = "/tinybev"
MAX_FUTURE_STEPS = 16  # occupancy/future_k topics looked for


def predictions_from_bag(path: str | Path, namespace: str = NAMESPACE) -> dict[int, Predictions]:
    """stamp_ns -> Predictions for every frame that has detections in the bag."""
    by_stamp: dict[int, dict[str, object]] = defaultdict(dict)
    wanted = {f"{namespace}/detections": Detection3DArray, f"{namespace}/occupancy": OccupancyGrid,
              f"{namespace}/ego_trajectory": PathMsg, f"{namespace}/markers": MarkerArray,
              f"{namespace}/predicted_paths": MarkerArray}
    wanted.update({f"{namespace}/map/{layer}": OccupancyGrid for layer in MAP_CLASSES})
    wanted.update({f"{namespace}/occupancy/future_{k}": OccupancyGrid for k in range(1, MAX_FUTURE_STEPS + 1)})
    with Reader(Path(path)) as reader:
        connections = [c for c in reader.connections if c.topic in wanted]
        for connection, _, raw in reader.messages(connections=connections):
            msg = deserialize_message(raw, wanted[connection.topic])
            if isinstance(msg, MarkerArray):  # no header of its own: its markers carry the frame's stamp
                if not msg.markers:
                    continue
                stamp = M.to_ns(msg.markers[0].header.stamp)
            else:
                stamp = M.to_ns(msg.header.stamp)
            by_stamp[stamp][connection.topic] = msg
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
        velocities = _velocities(topics.get(f"{namespace}/markers"), n)
        forecasts, forecast_probs = _forecasts(topics.get(f"{namespace}/predicted_paths"), n)
        out[stamp] = Predictions(
            stamp_ns=stamp, centers=boxes["centers"], sizes_wlh=boxes["sizes_wlh"], yaws=boxes["yaws"],
            velocities=velocities, scores=boxes["scores"], labels=boxes["labels"],
            track_ids=boxes["track_ids"], forecasts=forecasts, forecast_probs=forecast_probs,
            map_probs=map_probs, occupancy=occupancy, ego_plan=plan,
            command=int(Command.STRAIGHT), grid=grid,
        )
    return out


def _velocities(markers: MarkerArray | None, n: int) -> np.ndarray:
    velocities = np.zeros((n, 2))
    for marker in markers.markers if markers is not None else []:
        if marker.ns == "velocities" and marker.type == Marker.ARROW and marker.id < n and len(marker.points) == 2:
            start, end = marker.points
            velocities[marker.id] = (end.x - start.x, end.y - start.y)
    return velocities


def _forecasts(paths: MarkerArray | None, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, K, FORECAST_STEPS, 2) modes and (n, K) probabilities; one zero mode of probability 1 when absent."""
    lines = [m for m in (paths.markers if paths is not None else []) if m.ns == "forecasts"]
    if n == 0 or not lines or len(lines) % n:
        return np.zeros((n, 1, FORECAST_STEPS, 2)), np.ones((n, 1))
    modes = len(lines) // n
    lines.sort(key=lambda m: m.id)
    xy = np.array([[(p.x, p.y) for p in m.points[1:]] for m in lines]).reshape(n, modes, -1, 2)
    probs = np.clip((np.array([m.color.a for m in lines]) - 0.2) / 0.8, 0.0, 1.0).reshape(n, modes)
    return xy, probs
