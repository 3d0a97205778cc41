"""Writes a world as a nuScenes map-expansion JSON (version 1.3) and the `map` table's semantic-prior PNG.

Record layouts follow the devkit's `NuScenesMap` (nuscenes/map_expansion/map_api.py): geometric layers
(node, line, polygon) referenced by token from the semantic layers, lanes with `connectivity` and
`arcline_path_3` (each path: start/end pose [x, y, yaw], shape, radius, three segment lengths).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from tinybev_ros.synth.texture import RESOLUTION_M
from tinybev_ros.synth.tokens import TokenFactory
from tinybev_ros.synth.world import Rect, World, road_segment_rects, sidewalk_rects

MAP_VERSION = "1.3"
STRAIGHT_RADIUS = 999.0


class _Geometry:
    def __init__(self, token: TokenFactory) -> None:
        self.token = token
        self.node: list[dict] = []
        self.line: list[dict] = []
        self.polygon: list[dict] = []

    def add_node(self, x: float, y: float) -> str:
        tok = self.token("node", len(self.node))
        self.node.append({"token": tok, "x": round(float(x), 3), "y": round(float(y), 3)})
        return tok

    def add_line(self, points: np.ndarray) -> str:
        tok = self.token("line", len(self.line))
        self.line.append({"token": tok, "node_tokens": [self.add_node(*p) for p in points]})
        return tok

    def add_polygon(self, exterior: np.ndarray, holes: list[np.ndarray] = ()) -> str:
        tok = self.token("polygon", len(self.polygon))
        self.polygon.append({
            "token": tok,
            "exterior_node_tokens": [self.add_node(*p) for p in exterior],
            "holes": [{"node_tokens": [self.add_node(*p) for p in h]} for h in holes],
        })
        return tok


def _band(points: np.ndarray, half_width: float) -> np.ndarray:
    """Polygon of a polyline widened to both sides."""
    d = np.gradient(points, axis=0)
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
    n = np.stack([-d[:, 1], d[:, 0]], axis=1) * half_width
    return np.concatenate([points + n, (points - n)[::-1]])


def _arclines(p0: np.ndarray, h0: float, p1: np.ndarray, h1: float, turn: str) -> list[dict]:
    """Arcline paths of a straight lane or of a straight-arc-straight connector."""
    h0, h1 = float(h0), float(h1)
    if turn == "straight":
        return [{"start_pose": [float(p0[0]), float(p0[1]), h0], "end_pose": [float(p1[0]), float(p1[1]), h1],
                 "shape": "LSL", "radius": STRAIGHT_RADIUS,
                 "segment_length": [0.0, float(np.linalg.norm(p1 - p0)), 0.0]}]
    d0 = np.array([np.cos(h0), np.sin(h0)])
    d1 = np.array([np.cos(h1), np.sin(h1)])
    a, b = np.linalg.solve(np.stack([d0, d1], axis=1), p1 - p0)
    r = float(min(a, b))
    q0 = p0 + (a - r) * d0
    q1 = p1 - (b - r) * d1
    shape = "LSL" if turn == "left" else "RSR"
    paths = []
    if a - r > 1e-3:
        paths.append({"start_pose": [float(p0[0]), float(p0[1]), h0], "end_pose": [float(q0[0]), float(q0[1]), h0],
                      "shape": "LSL", "radius": STRAIGHT_RADIUS, "segment_length": [0.0, float(a - r), 0.0]})
    paths.append({"start_pose": [float(q0[0]), float(q0[1]), h0], "end_pose": [float(q1[0]), float(q1[1]), h1],
                  "shape": shape, "radius": r, "segment_length": [float(r * np.pi / 2), 0.0, 0.0]})
    if b - r > 1e-3:
        paths.append({"start_pose": [float(q1[0]), float(q1[1]), h1], "end_pose": [float(p1[0]), float(p1[1]), h1],
                      "shape": "LSL", "radius": STRAIGHT_RADIUS, "segment_length": [0.0, float(b - r), 0.0]})
    return paths


def build_map_json(world: World, token: TokenFactory) -> dict:
    cfg = world.config
    geo = _Geometry(token)
    out: dict = {k: [] for k in ("drivable_area", "road_segment", "road_block", "lane", "ped_crossing", "walkway",
                                 "stop_line", "carpark_area", "road_divider", "lane_divider", "traffic_light",
                                 "lane_connector")}
    drivable_token = token("drivable_area", 0)
    drivable_polys = []
    segment_of_road_block: dict[tuple[int, int], str] = {}
    segment_of_node: dict[tuple[float, float], str] = {}
    for i, (rect, road, block) in enumerate(road_segment_rects(world)):
        poly = geo.add_polygon(rect.corners())
        drivable_polys.append(poly)
        seg_tok = token("road_segment", i)
        out["road_segment"].append({"token": seg_tok, "polygon_token": poly, "is_intersection": road < 0,
                                    "drivable_area_token": drivable_token})
        if road >= 0:
            segment_of_road_block[(road, block)] = seg_tok
        else:
            segment_of_node[tuple(np.round(rect.center, 3))] = seg_tok
    for rect, _, _ in world.carparks:
        drivable_polys.append(geo.add_polygon(rect.corners()))
    out["drivable_area"].append({"token": drivable_token, "polygon_tokens": drivable_polys})

    # road blocks (one direction of a road piece), road and lane dividers
    side = 1.0 if world.left_hand else -1.0
    block_token: dict[tuple[int, int, int], str] = {}
    for road in world.roads:
        cross = world.xs if road.axis == 0 else world.ys
        along = np.array([1.0, 0.0]) if road.axis == 0 else np.array([0.0, 1.0])
        normal = np.array([-along[1], along[0]])
        base = np.array([0.0, road.coord]) if road.axis == 0 else np.array([road.coord, 0.0])
        for k in range(len(cross) - 1):
            a, b = world.roads[cross[k]], world.roads[cross[k + 1]]
            s0, s1 = a.coord + a.half_width, b.coord - b.half_width
            seg_tok = segment_of_road_block[(road.index, k)]
            p0, p1 = base + along * s0, base + along * s1
            out["road_divider"].append({"token": token("road_divider", road.index, k),
                                        "line_token": geo.add_line(np.stack([p0, p1])), "road_segment_token": seg_tok})
            for direction in (1, -1):
                sigma = side * direction  # the side of the centre line this direction drives on
                outer = sigma * road.half_width
                corners = np.array([p0, p1, p1 + normal * outer, p0 + normal * outer])
                start, end = (p0, p1) if direction == 1 else (p1, p0)
                tok = token("road_block", road.index, k, direction)
                block_token[(road.index, k, direction)] = tok
                out["road_block"].append({
                    "token": tok, "polygon_token": geo.add_polygon(corners),
                    "from_edge_line_token": geo.add_line(np.stack([start, start + normal * outer])),
                    "to_edge_line_token": geo.add_line(np.stack([end, end + normal * outer])),
                    "road_segment_token": seg_tok,
                })
                for li in range(1, road.lanes_per_dir):
                    off = sigma * li * cfg.lane_width_m
                    line = np.stack([p0 + normal * off, p1 + normal * off])
                    line_tok = geo.add_line(line)
                    node_toks = geo.line[-1]["node_tokens"]
                    out["lane_divider"].append({
                        "token": token("lane_divider", road.index, k, direction, li), "line_token": line_tok,
                        "lane_divider_segments": [{"node_token": n, "segment_type": "DOUBLE_DASHED_WHITE"}
                                                  for n in node_toks],
                    })

    # lanes and connectors, their connectivity and arcline paths
    lane_tokens = [token("lane", lane.index) for lane in world.lanes]
    conn_tokens = [token("lane_connector", c.index) for c in world.connectors]
    connectivity: dict[str, dict[str, list[str]]] = {}
    arclines: dict[str, list[dict]] = {}
    hw = cfg.lane_width_m / 2
    for lane, tok in zip(world.lanes, lane_tokens, strict=True):
        pts = np.stack([lane.start, lane.end])
        n = np.array([-np.sin(lane.heading), np.cos(lane.heading)]) * hw
        out["lane"].append({
            "token": tok, "polygon_token": geo.add_polygon(_band(pts, hw)), "lane_type": "CAR",
            "from_edge_line_token": geo.add_line(np.stack([lane.start - n, lane.start + n])),
            "to_edge_line_token": geo.add_line(np.stack([lane.end - n, lane.end + n])),
            "left_lane_divider_segments": [], "right_lane_divider_segments": [],
        })
        arclines[tok] = _arclines(lane.start, lane.heading, lane.end, lane.heading, "straight")
        connectivity.setdefault(tok, {"incoming": [], "outgoing": []})
    for conn, tok in zip(world.connectors, conn_tokens, strict=True):
        out["lane_connector"].append({"token": tok, "polygon_token": geo.add_polygon(_band(conn.points, hw))})
        src_lane, dst_lane = world.lanes[conn.from_lane], world.lanes[conn.to_lane]
        arclines[tok] = _arclines(src_lane.end, src_lane.heading, dst_lane.start, dst_lane.heading, conn.turn)
        src, dst = lane_tokens[conn.from_lane], lane_tokens[conn.to_lane]
        connectivity[tok] = {"incoming": [src], "outgoing": [dst]}
        connectivity[src]["outgoing"].append(tok)
        connectivity[dst]["incoming"].append(tok)

    # crossings, stop lines before them, sidewalks, car parks
    for i, crossing in enumerate(world.crossings):
        node_rect = world.node_rect(crossing.node)
        ped_tok = token("ped_crossing", i)
        out["ped_crossing"].append({"token": ped_tok, "polygon_token": geo.add_polygon(crossing.rect.corners()),
                                    "road_segment_token": segment_of_node[tuple(np.round(node_rect.center, 3))]})
        stop = _stop_line_rect(world, crossing)
        road_dir = _incoming_direction(crossing)
        k = _block_of_arm(world, crossing)
        out["stop_line"].append({
            "token": token("stop_line", i), "polygon_token": geo.add_polygon(stop.corners()),
            "stop_line_type": "PED_CROSSING", "ped_crossing_tokens": [ped_tok], "traffic_light_tokens": [],
            "road_block_token": block_token.get((crossing.road, k, road_dir), ""),
        })
    for i, rect in enumerate(sidewalk_rects(world)):
        out["walkway"].append({"token": token("walkway", i), "polygon_token": geo.add_polygon(rect.corners())})
    for i, (rect, side_name, _) in enumerate(world.carparks):
        orientation = 0.0 if side_name in ("west", "east") else float(np.pi / 2)
        out["carpark_area"].append({"token": token("carpark_area", i),
                                    "polygon_token": geo.add_polygon(rect.corners()),
                                    "orientation": orientation, "road_block_token": ""})

    return {
        "version": MAP_VERSION,
        "canvas_edge": [float(world.extent.x1), float(world.extent.y1)],
        "polygon": geo.polygon, "line": geo.line, "node": geo.node,
        **out,
        "arcline_path_3": arclines,
        "connectivity": connectivity,
    }


def _incoming_direction(crossing) -> int:
    """Direction (+1 along the road axis, -1 against) of traffic arriving at the crossing's intersection."""
    return -1 if crossing.arm in (0, 1) else 1


def _block_of_arm(world: World, crossing) -> int:
    ix, iy = crossing.node
    if crossing.arm == 0:
        return ix
    if crossing.arm == 2:
        return ix - 1
    if crossing.arm == 1:
        return iy
    return iy - 1


def _stop_line_rect(world: World, crossing) -> Rect:
    """A 0.5 m bar across the incoming half of the road, just outside the crossing."""
    r = crossing.rect
    road = world.roads[crossing.road]
    incoming = _incoming_direction(crossing)
    side = 1.0 if world.left_hand else -1.0
    sigma = side * incoming  # lateral side (of +axis normal) where incoming traffic drives
    lat0, lat1 = sorted((0.0, sigma * road.half_width))
    if road.axis == 0:
        y0, y1 = road.coord + lat0, road.coord + lat1
        x = r.x1 if crossing.arm == 0 else r.x0 - 0.5
        return Rect(x, y0, x + 0.5, y1)
    # north-south road: normal of +y is -x
    x0, x1 = sorted((road.coord - lat0, road.coord - lat1))
    y = r.y1 if crossing.arm == 1 else r.y0 - 0.5
    return Rect(x0, y, x1, y + 0.5)


def write_map(world: World, token: TokenFactory, dataroot: Path) -> tuple[str, str]:
    """Write maps/expansion/<map>.json and the semantic prior PNG; returns the PNG's relative filename."""
    expansion = dataroot / "maps" / "expansion"
    expansion.mkdir(parents=True, exist_ok=True)
    (expansion / f"{world.map_name}.json").write_text(json.dumps(build_map_json(world, token)))
    h = int(np.ceil(world.extent.y1 / RESOLUTION_M))
    w = int(np.ceil(world.extent.x1 / RESOLUTION_M))
    prior = np.zeros((h, w), np.uint8)
    rects = [r for r, _, _ in road_segment_rects(world)] + sidewalk_rects(world) + [r for r, _, _ in world.carparks]
    for rect in rects:
        cv2.fillPoly(prior, [np.round(rect.corners() / RESOLUTION_M).astype(np.int32)], 255)
    name = f"maps/{token('prior', world.map_name)}.png"
    cv2.imwrite(str(dataroot / name), prior[::-1], [cv2.IMWRITE_PNG_COMPRESSION, 1])
    return name, world.map_name
