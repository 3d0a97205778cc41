"""How agents move: path following with car-following (IDM), curve speed limits and traffic lights.

Vehicles follow lane centrelines and turn on intersection connectors; the speed they want ahead of a
curve is limited by lateral acceleration and reached with bounded braking, so speed changes are smooth.
Leaders (any agent ahead in the own corridor: a slower car, a crossing pedestrian) and red lights are
handled by the Intelligent Driver Model. Pedestrians follow sidewalk paths at walking pace and pause.
All agents advance together in fixed steps, vectorised over agents.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tinybev_ros.synth.world import World

LIGHT_CYCLE_S = 26.0
GREEN_S = 11.0  # then 2 s all-red, the other axis green, 2 s all-red
LATERAL_ACCEL = 2.0  # m/s^2 in curves
COMFORT_DECEL = 2.5  # m/s^2
IDM_TIME_GAP = 1.3
IDM_MIN_GAP = 2.5
PED_ACCEL = 1.5  # m/s^2, starting and stopping to walk


@dataclass
class Path:
    """A polyline with arc length, heading, a speed limit profile and the traffic-light stop points on it."""

    points: np.ndarray  # (K, 2)
    s: np.ndarray = field(init=False)
    heading: np.ndarray = field(init=False)  # unwrapped
    stops: list[tuple[float, tuple[int, int], int]] = field(default_factory=list)  # (s, node, travel axis)

    def __post_init__(self) -> None:
        pts = self.points
        seg = np.diff(pts, axis=0)
        keep = np.r_[True, np.linalg.norm(seg, axis=1) > 1e-6]
        self.points = pts = pts[keep]
        seg = np.diff(pts, axis=0)
        self.s = np.r_[0.0, np.cumsum(np.linalg.norm(seg, axis=1))]
        h = np.arctan2(seg[:, 1], seg[:, 0])
        h = np.r_[h, h[-1:]]
        self.heading = np.unwrap(h)

    @property
    def length(self) -> float:
        return float(self.s[-1])

    def pose(self, s: float | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """x, y, heading at arc length s (clamped to the path)."""
        s = np.clip(s, 0.0, self.s[-1])
        return (np.interp(s, self.s, self.points[:, 0]), np.interp(s, self.s, self.points[:, 1]),
                np.interp(s, self.s, self.heading))

    def speed_limit(self, v_max: float) -> np.ndarray:
        """Per-point allowed speed: curvature limit, then a backward pass so braking stays comfortable."""
        ds = np.maximum(np.diff(self.s), 1e-3)
        curv = np.abs(np.diff(self.heading)) / ds
        curv = np.r_[curv, 0.0]
        # smooth curvature over ~3 m so short polyline kinks do not look like hairpins
        kernel = np.ones(7) / 7.0
        curv = np.convolve(curv, kernel, mode="same")
        v = np.minimum(v_max, np.sqrt(LATERAL_ACCEL / np.maximum(curv, 1e-6)))
        for k in range(len(v) - 2, -1, -1):
            v[k] = min(v[k], np.sqrt(v[k + 1] ** 2 + 2 * COMFORT_DECEL * ds[k]))
        return v


def light_is_green(node_phase: float, axis: int, t: float) -> bool:
    """Axis 1 (north-south travel) is green first in each cycle, then axis 0."""
    u = (t + node_phase) % LIGHT_CYCLE_S
    if axis == 1:
        return u < GREEN_S
    return GREEN_S + 2.0 <= u < 2 * GREEN_S + 2.0


def lane_route(world: World, rng: np.random.Generator, first_lane: int, min_length: float,
               first_turn: str | None = None) -> tuple[Path, list[str], list[int]]:
    """A random drive through the lane graph from the start of `first_lane`: path, turns, lanes visited."""
    pieces = [np.stack([world.lanes[first_lane].start, world.lanes[first_lane].end])]
    stops: list[tuple[float, tuple[int, int], int]] = []
    turns: list[str] = []
    visited = [first_lane]
    length = world.lanes[first_lane].length
    lane = world.lanes[first_lane]
    while True:
        axis = 0 if abs(np.cos(lane.heading)) > 0.5 else 1
        stops.append((length, lane.to_node, axis))
        if length >= min_length or not lane.outgoing:
            break
        options = [world.connectors[c] for c in lane.outgoing]
        if first_turn is not None and not turns:
            wanted = [c for c in options if c.turn == first_turn]
            options = wanted or options
        weights = np.array([2.0 if c.turn == "straight" else 1.0 for c in options])
        conn = options[rng.choice(len(options), p=weights / weights.sum())]
        turns.append(conn.turn)
        pieces.append(conn.points[1:-1])
        length += float(np.sum(np.linalg.norm(np.diff(conn.points, axis=0), axis=1)))
        lane = world.lanes[conn.to_lane]
        visited.append(lane.index)
        pieces.append(np.stack([lane.start, lane.end]))
        length += lane.length
    dense = [_densify(p) for p in pieces]
    path = Path(np.concatenate(dense))
    # stop points were computed on nominal lengths; snap to the densified arc length
    path.stops = [(float(s), node, axis) for s, node, axis in stops]
    return path, turns, visited


def _densify(points: np.ndarray, step: float = 1.0) -> np.ndarray:
    if len(points) < 2:
        return points
    out = []
    for a, b in zip(points[:-1], points[1:], strict=True):
        n = max(1, int(np.ceil(np.linalg.norm(b - a) / step)))
        out.append(np.linspace(a, b, n, endpoint=False))
    out.append(points[-1:])
    return np.concatenate(out)


@dataclass
class Mover:
    """One moving agent's dynamic state for the simulation."""

    path: Path
    s: float
    v: float
    v_max: float
    length: float
    width: float
    is_vehicle: bool
    pause_until: float = -1.0  # pedestrians stand still until then
    follows: int = -1  # index of the mover this one is towed by (trailers)
    tow_offset: float = 0.0
    limits: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.limits = self.path.speed_limit(self.v_max) if self.is_vehicle else np.full(len(self.path.s), self.v_max)


@dataclass
class Trajectories:
    """States of all movers on the simulation time grid (seconds relative to the scene start)."""

    times: np.ndarray  # (T,)
    xy: np.ndarray  # (T, N, 2)
    yaw: np.ndarray  # (T, N)
    speed: np.ndarray  # (T, N)

    def at(self, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Linear interpolation of (xy, yaw, speed) at time t."""
        k = int(np.clip(np.searchsorted(self.times, t) - 1, 0, len(self.times) - 2))
        a = float(np.clip((t - self.times[k]) / (self.times[k + 1] - self.times[k]), 0.0, 1.0))
        xy = (1 - a) * self.xy[k] + a * self.xy[k + 1]
        dyaw = np.angle(np.exp(1j * (self.yaw[k + 1] - self.yaw[k])))
        yaw = self.yaw[k] + a * dyaw
        speed = (1 - a) * self.speed[k] + a * self.speed[k + 1]
        return xy, yaw, speed


def simulate(movers: list[Mover], node_phase: dict[tuple[int, int], float], t0: float, t1: float,
             dt: float, rng: np.random.Generator) -> Trajectories:
    """Advance all movers from t0 to t1; returns their states at every step."""
    n = len(movers)
    steps = int(np.ceil((t1 - t0) / dt)) + 1
    times = t0 + dt * np.arange(steps)
    xy = np.zeros((steps, n, 2))
    yaw = np.zeros((steps, n))
    speed = np.zeros((steps, n))
    half_w = np.array([m.width / 2 for m in movers])
    half_l = np.array([m.length / 2 for m in movers])
    is_vehicle = np.array([m.is_vehicle for m in movers])
    passed: list[set] = [set() for _ in movers]  # stop points a vehicle committed to
    for k, t in enumerate(times):
        # poses now
        for i, m in enumerate(movers):
            if m.follows >= 0:
                lead = movers[m.follows]
                m.s, m.v = lead.s - m.tow_offset, lead.v
            x, y, h = m.path.pose(m.s)
            xy[k, i] = (x, y)
            yaw[k, i] = h
            speed[k, i] = m.v
        if k == steps - 1:
            break
        gaps, lead_v = _leaders(xy[k], yaw[k], speed[k], half_w, half_l, is_vehicle)
        for i, m in enumerate(movers):
            if m.follows >= 0:
                continue
            if not m.is_vehicle:
                target = 0.0
                if t >= m.pause_until:
                    if rng.random() < dt / 25.0:  # now and then a pedestrian stops for a while
                        m.pause_until = t + rng.uniform(2.0, 8.0)
                    target = m.v_max
                m.v += float(np.clip(target - m.v, -PED_ACCEL * dt, PED_ACCEL * dt))
                m.s = min(m.s + m.v * dt, m.path.length)
                if m.s >= m.path.length:
                    m.v = 0.0
                continue
            v0 = float(np.interp(m.s + m.v * 1.0, m.path.s, m.limits))
            gap, dv_lead = gaps[i], lead_v[i]
            for s_stop, node, axis in m.path.stops:
                dist = s_stop - m.s - half_l[i]
                if dist < -1.0 or dist > 60.0 or (s_stop, node) in passed[i]:
                    continue
                if light_is_green(node_phase.get(node, 0.0), axis, t) or dist < m.v ** 2 / (2 * 4.0):
                    if dist < 2.0:
                        passed[i].add((s_stop, node))
                    continue
                if dist < gap:
                    gap, dv_lead = max(dist, 0.05), 0.0
                break
            if m.s >= m.path.length - 1.0:
                v0 = 0.0
            m.v = _idm_step(m.v, v0, gap, dv_lead, dt)
            m.s = min(m.s + m.v * dt, m.path.length)
    return Trajectories(times, xy, yaw, speed)


def _leaders(xy: np.ndarray, yaw: np.ndarray, speed: np.ndarray, half_w: np.ndarray, half_l: np.ndarray,
             is_vehicle: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bumper gap to, and speed of, the nearest agent ahead in each agent's corridor."""
    c, s = np.cos(yaw), np.sin(yaw)
    d = xy[None, :, :] - xy[:, None, :]  # (i, j, 2): j relative to i
    dx = d[..., 0] * c[:, None] + d[..., 1] * s[:, None]
    dy = -d[..., 0] * s[:, None] + d[..., 1] * c[:, None]
    heading_diff = np.abs(np.angle(np.exp(1j * (yaw[None, :] - yaw[:, None]))))
    relevant = (~is_vehicle[None, :]) | (heading_diff < np.deg2rad(60))
    ahead = (dx > 0) & (dx < 40.0) & (np.abs(dy) < half_w[:, None] + half_w[None, :] + 0.3) & relevant
    np.fill_diagonal(ahead, False)
    gap = np.where(ahead, dx - half_l[:, None] - half_l[None, :], np.inf)
    j = np.argmin(gap, axis=1)
    best = gap[np.arange(len(xy)), j]
    lead_speed = speed[j] * np.cos(yaw[j] - yaw)
    return np.maximum(best, 0.05), np.where(np.isfinite(best), lead_speed, 0.0)


def _idm_step(v: float, v0: float, gap: float, v_lead: float, dt: float, a_max: float = 1.5) -> float:
    if v0 <= 0.05:
        acc = -COMFORT_DECEL if v > 0 else 0.0
    else:
        s_star = IDM_MIN_GAP + v * IDM_TIME_GAP + v * (v - v_lead) / (2 * np.sqrt(a_max * COMFORT_DECEL))
        acc = a_max * (1 - (v / v0) ** 4 - (max(s_star, 0.0) / gap) ** 2 if np.isfinite(gap) else 1 - (v / v0) ** 4)
    acc = float(np.clip(acc, -8.0, a_max))
    return max(0.0, v + acc * dt)
