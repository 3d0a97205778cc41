"""Who is in a scene: the ego route, moving traffic, pedestrians and static objects, and their motion.

A scene is rebuilt bit for bit from (world, config, scene seed), which lets tests re-render any frame
(with or without the agents) and compare with what was written.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinybev_ros.synth.config import SynthConfig
from tinybev_ros.synth.motion import GREEN_S, LIGHT_CYCLE_S, Mover, Path, Trajectories, lane_route, simulate
from tinybev_ros.synth.shapes import Part, make_parts
from tinybev_ros.synth.world import World, carpark_stalls

SIM_DT = 0.05  # the LiDAR period: LiDAR timestamps fall on the simulation grid
SPAWN_RADIUS_M = 190.0
EGO_SIZE_WLH = (1.73, 4.08, 1.56)

# detection class -> (mean w, l, h), relative spread, nuScenes categories with weights
CLASS_SPECS: dict[str, tuple[tuple[float, float, float], float, dict[str, float]]] = {
    "car": ((1.95, 4.6, 1.72), 0.08, {"vehicle.car": 1.0}),
    "truck": ((2.5, 7.0, 3.0), 0.12, {"vehicle.truck": 1.0}),
    "bus": ((2.9, 11.2, 3.4), 0.06, {"vehicle.bus.rigid": 0.8, "vehicle.bus.bendy": 0.2}),
    "trailer": ((2.6, 9.5, 3.6), 0.1, {"vehicle.trailer": 1.0}),
    "construction_vehicle": ((2.8, 6.4, 3.2), 0.1, {"vehicle.construction": 1.0}),
    "pedestrian": ((0.66, 0.72, 1.75), 0.07, {"human.pedestrian.adult": 0.8, "human.pedestrian.child": 0.06,
                                              "human.pedestrian.construction_worker": 0.1,
                                              "human.pedestrian.police_officer": 0.04}),
    "motorcycle": ((0.8, 2.1, 1.5), 0.06, {"vehicle.motorcycle": 1.0}),
    "bicycle": ((0.62, 1.75, 1.35), 0.06, {"vehicle.bicycle": 1.0}),
    "traffic_cone": ((0.42, 0.42, 0.85), 0.1, {"movable_object.trafficcone": 1.0}),
    "barrier": ((2.4, 0.55, 1.0), 0.05, {"movable_object.barrier": 1.0}),
}


# car body styles: (length scale, height scale) and how common they are
CAR_STYLES = ((1.0, 0.88), (0.86, 0.92), (1.0, 1.05), (1.05, 1.18))
CAR_STYLE_WEIGHTS = (0.4, 0.2, 0.3, 0.1)


@dataclass
class Agent:
    """One annotated object. `mover` indexes the simulation (-1: static at `pose`)."""

    cls: str
    category: str
    size: tuple[float, float, float]  # w, l, h
    parts: list[Part]
    mover: int = -1
    pose: tuple[float, float, float] = (0.0, 0.0, 0.0)  # x, y, yaw of static objects
    parked: bool = False
    with_rider: bool = False


@dataclass
class Scene:
    world: World
    agents: list[Agent]
    trajectories: Trajectories  # mover 0 is the ego
    ego_turns: list[str]
    node_phase: dict[tuple[int, int], float]
    static_xy: np.ndarray  # (N, 2) poses of static agents (zeros for movers)
    static_yaw: np.ndarray

    def ego_pose(self, t: float) -> tuple[np.ndarray, float]:
        """Ego (base_link) position (x, y) and yaw at time t."""
        xy, yaw, _ = self.trajectories.at(t)
        return xy[0], float(yaw[0])

    def agent_states(self, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Box centres (N, 2), yaws (N,) and speeds (N,) of all agents at time t."""
        xy, yaw, speed = self.trajectories.at(t)
        idx = np.array([a.mover for a in self.agents], dtype=int)
        moving = idx >= 0
        out_xy = self.static_xy.copy()
        out_yaw = self.static_yaw.copy()
        out_speed = np.zeros(len(self.agents))
        out_xy[moving] = xy[idx[moving]]
        out_yaw[moving] = yaw[idx[moving]]
        out_speed[moving] = speed[idx[moving]]
        return out_xy, out_yaw, out_speed


def _sample_size(cls: str, rng: np.random.Generator) -> tuple[float, float, float]:
    mean, spread, _ = CLASS_SPECS[cls]
    scale = np.clip(1.0 + spread * rng.standard_normal(3), 1 - 2 * spread, 1 + 2 * spread)
    return tuple(float(m * s) for m, s in zip(mean, scale, strict=True))


def _category(cls: str, rng: np.random.Generator) -> str:
    cats = CLASS_SPECS[cls][2]
    names = list(cats)
    p = np.array([cats[n] for n in names])
    return names[rng.choice(len(names), p=p / p.sum())]


def _new_agent(cls: str, rng: np.random.Generator, **kw) -> Agent:
    size = _sample_size(cls, rng)
    category = _category(cls, rng)
    if category == "human.pedestrian.child":
        size = (size[0] * 0.75, size[1] * 0.75, size[2] * 0.7)
    if cls == "car":  # sedan / hatchback / SUV / van
        scale_l, scale_h = CAR_STYLES[rng.choice(len(CAR_STYLES), p=CAR_STYLE_WEIGHTS)]
        size = (size[0], size[1] * scale_l, size[2] * scale_h)
    with_rider = kw.pop("with_rider", cls in ("bicycle", "motorcycle"))
    parts = make_parts(cls, size, rng, with_rider=with_rider)
    if category == "human.pedestrian.construction_worker":
        parts = [p if i != 2 else Part(p.center, p.size, (0, 200, 255), p.kind, p.taper, 0.8)
                 for i, p in enumerate(parts)]
    return Agent(cls, category, size, parts, with_rider=with_rider, **kw)


def build_scene(world: World, config: SynthConfig, seed: int, scene_index: int) -> Scene:
    """Spawn everything and simulate the scene's motion (deterministic in `seed`)."""
    rng = np.random.default_rng(seed)
    duration = config.duration_s
    movers: list[Mover] = []
    agents: list[Agent] = []
    node_phase = {(ix, iy): float(rng.uniform(0, LIGHT_CYCLE_S))
                  for ix in range(len(world.xs)) for iy in range(len(world.ys))}

    # --- the ego: approach an interior intersection and turn (the turn cycles over scenes)
    wanted_turn = ("left", "right", "straight")[(scene_index + config.seed) % 3]
    candidates = [
        lane for lane in world.lanes
        if world.is_interior_node(lane.to_node) and lane.length > 40
        and any(world.connectors[c].turn == wanted_turn for c in lane.outgoing)
    ]
    ego_lane = candidates[rng.integers(len(candidates))]
    v_ego = float(rng.uniform(8.0, 10.5))
    ego_path, ego_turns, route_lanes = lane_route(world, rng, ego_lane.index, duration * 12 + 120,
                                                  first_turn=wanted_turn)
    s_ego = ego_lane.length - float(rng.uniform(18.0, 32.0))
    movers.append(Mover(ego_path, s_ego, v_ego * 0.8, v_ego, EGO_SIZE_WLH[1], EGO_SIZE_WLH[0], True))
    axis = 0 if abs(np.cos(ego_lane.heading)) > 0.5 else 1
    node_phase[ego_lane.to_node] = 0.0 if axis == 1 else GREEN_S + 2.0
    ego_xy = ego_path.pose(s_ego)
    centre = np.array([ego_xy[0], ego_xy[1]])

    def near(p: np.ndarray, radius: float = SPAWN_RADIUS_M) -> bool:
        return float(np.linalg.norm(np.asarray(p) - centre)) < radius

    # --- moving vehicles on lanes
    for lane in world.lanes:
        mid = (lane.start + lane.end) / 2
        if not near(mid):
            continue
        road = world.roads[lane.road]
        rate = config.moving_vehicles_per_100m / (2 * road.lanes_per_dir) * lane.length / 100.0
        count = rng.poisson(rate)
        if count == 0:
            continue
        positions = np.sort(rng.uniform(14.0, lane.length - 4.0, size=count))
        last = -np.inf
        for s0 in positions:
            if s0 - last < 12.0:
                continue
            if lane.index == ego_lane.index and abs(s0 - s_ego) < 20.0:
                continue
            last = s0
            u = rng.random()
            outer = lane.lane_index == road.lanes_per_dir - 1
            if u < 0.68:
                cls = "car"
            elif u < 0.75:
                cls = "truck"
            elif u < 0.8:
                cls = "bus"
            elif u < 0.86:
                cls = "motorcycle"
            elif u < 0.91 and outer:
                cls = "bicycle"
            elif u < 0.93:
                cls = "construction_vehicle"
            elif u < 0.97:
                cls = "truck_trailer"
            else:
                cls = "car"
            v_max = float(rng.uniform(3.5, 6.0)) if cls == "bicycle" else float(rng.uniform(7.0, 12.5))
            path, _, _ = lane_route(world, rng, lane.index, s0 + v_max * duration + 60)
            if cls == "truck_trailer":
                truck = Agent("truck", "vehicle.truck", (2.5, 5.6, 3.0), make_parts("truck", (2.5, 5.6, 3.0), rng))
                trailer = _new_agent("trailer", rng)
                offset = truck.size[1] / 2 + 0.6 + trailer.size[1] / 2
                if s0 < offset + 2.0:
                    continue
                movers.append(Mover(path, s0, v_max * 0.7, min(v_max, 10.0), truck.size[1], truck.size[0], True))
                truck.mover = len(movers) - 1
                movers.append(Mover(path, s0 - offset, 0.0, v_max, trailer.size[1], trailer.size[0], True,
                                    follows=truck.mover, tow_offset=offset))
                trailer.mover = len(movers) - 1
                agents += [truck, trailer]
                continue
            agent = _new_agent(cls, rng)
            movers.append(Mover(path, s0, v_max * 0.7, v_max, agent.size[1], agent.size[0], True))
            agent.mover = len(movers) - 1
            agents.append(agent)

    # --- pedestrians on sidewalks, crossing roads at crossings
    _spawn_pedestrians(world, config, rng, movers, agents, near, duration)
    # --- parked vehicles, construction zones, cones, barriers, parked bicycles
    statics = _spawn_static(world, config, rng, near)
    agents += _showcase(world, config, rng, route_lanes, s_ego, statics)

    trajectories = simulate(movers, node_phase, -0.2, duration + 0.3, SIM_DT, rng)
    static_xy = np.array([a.pose[:2] for a in agents], dtype=float).reshape(-1, 2)
    static_yaw = np.array([a.pose[2] for a in agents], dtype=float)
    return Scene(world, agents, trajectories, ego_turns, node_phase, static_xy, static_yaw)


def _ped_ring(world: World, bx: int, by: int, offset: float) -> np.ndarray:
    r = world.blocks[world.block_grid[(bx, by)]]
    return np.array([[r.x0 + offset, r.y0 + offset], [r.x1 - offset, r.y0 + offset],
                     [r.x1 - offset, r.y1 - offset], [r.x0 + offset, r.y1 - offset]])


# crossing from a corner of a block: corner index -> [(dbx, dby, corner in the neighbour)]
_CROSS = {
    0: [(-1, 0, 1), (0, -1, 3)],
    1: [(1, 0, 0), (0, -1, 2)],
    2: [(1, 0, 3), (0, 1, 1)],
    3: [(-1, 0, 2), (0, 1, 0)],
}


def _spawn_pedestrians(world: World, config: SynthConfig, rng: np.random.Generator, movers: list[Mover],
                       agents: list[Agent], near, duration: float) -> None:
    interior = set(world.interior_blocks)
    for bx, by in world.interior_blocks:
        r = world.blocks[world.block_grid[(bx, by)]]
        if not near(r.center):
            continue
        perimeter = 2 * ((r.x1 - r.x0) + (r.y1 - r.y0))
        count = rng.poisson(config.pedestrians_per_100m * perimeter / 100.0 / 2)
        for _ in range(count):
            offset = config.sidewalk_m / 2 + float(rng.uniform(-1.1, 1.1))
            speed = float(rng.uniform(1.0, 1.6))
            if rng.random() < 0.25:  # standing (waiting, chatting)
                ring = _ped_ring(world, bx, by, offset)
                side = rng.integers(4)
                p = ring[side] + rng.random() * (ring[(side + 1) % 4] - ring[side])
                agents.append(_new_agent("pedestrian", rng, pose=(float(p[0]), float(p[1]),
                                                                   float(rng.uniform(-np.pi, np.pi)))))
                continue
            # a walk: corner to corner, sometimes across a road
            direction = 1 if rng.random() < 0.5 else -1
            cur_block, corner = (bx, by), int(rng.integers(4))
            points = [_ped_ring(world, *cur_block, offset)[corner]]
            total = 0.0
            start_frac = float(rng.uniform(0.0, 0.9))
            start_s = None
            while start_s is None or total - start_s < speed * duration + 40.0:
                options = [(dbx, dby, c) for dbx, dby, c in _CROSS[corner]
                           if (cur_block[0] + dbx, cur_block[1] + dby) in interior]
                if options and rng.random() < 0.35:
                    dbx, dby, corner = options[rng.integers(len(options))]
                    cur_block = (cur_block[0] + dbx, cur_block[1] + dby)
                else:
                    corner = (corner + direction) % 4
                nxt = _ped_ring(world, *cur_block, offset)[corner]
                total += float(np.linalg.norm(nxt - points[-1]))
                points.append(nxt)
                if start_s is None:
                    start_s = start_frac * total
            path = Path(np.array(points, dtype=float))
            movers.append(Mover(path, start_s, speed, speed, 0.7, 0.66, False))
            agent = _new_agent("pedestrian", rng)
            agent.mover = len(movers) - 1
            agents.append(agent)


def _spawn_static(world: World, config: SynthConfig, rng: np.random.Generator, near) -> list[Agent]:
    out: list[Agent] = []
    for rect, side, _ in world.carparks:
        if not near(rect.center):
            continue
        occupancy = float(rng.uniform(0.3, 0.9))
        for centre, heading in carpark_stalls(rect, side):
            if rng.random() > occupancy:
                continue
            agent = _new_agent("car" if rng.random() < 0.93 else "motorcycle", rng, with_rider=False)
            jitter = rng.normal(0.0, 0.15, size=2)
            agent.pose = (float(centre[0] + jitter[0]), float(centre[1] + jitter[1]),
                          float(heading + rng.normal(0.0, 0.03) + (np.pi if rng.random() < 0.3 else 0.0)))
            agent.parked = True
            out.append(agent)
    side_sign = 1.0 if world.left_hand else -1.0
    for road in world.roads:
        cross = world.xs if road.axis == 0 else world.ys
        along = np.array([1.0, 0.0]) if road.axis == 0 else np.array([0.0, 1.0])
        normal = np.array([-along[1], along[0]])
        for k in range(len(cross) - 1):
            a, b = world.roads[cross[k]], world.roads[cross[k + 1]]
            s0 = a.coord + a.half_width + config.crossing_m + 3.0
            s1 = b.coord - b.half_width - config.crossing_m - 3.0
            for sigma in (1.0, -1.0):
                # traffic on the side `sigma` of the centre line drives with heading +axis when
                # sigma == side_sign (lanes lie on the left for LHT, on the right for RHT)
                yaw = (0.0 if road.axis == 0 else np.pi / 2) + (0.0 if sigma == side_sign else np.pi)
                lat = sigma * (road.half_width - config.shoulder_m / 2)
                mid = normal * lat + along * (s0 + s1) / 2 + (np.array([0.0, road.coord]) if road.axis == 0
                                                              else np.array([road.coord, 0.0]))
                if not near(mid):
                    continue

                def at(s: float, lateral: float, road=road, normal=normal) -> np.ndarray:
                    base = np.array([s, road.coord]) if road.axis == 0 else np.array([road.coord, s])
                    return base + normal * lateral

                if rng.random() < 0.12:  # construction zone
                    s = float(rng.uniform(s0, max(s0 + 1, s1 - 25)))
                    v = _new_agent("construction_vehicle", rng)
                    p = at(s + 12, lat)
                    v.pose, v.parked = (float(p[0]), float(p[1]), float(yaw)), True
                    out.append(v)
                    edge = sigma * (road.half_width - config.shoulder_m + 0.35)
                    for j in range(int(rng.integers(4, 8))):
                        p = at(s + j * 3.5, edge)
                        out.append(_new_agent("traffic_cone", rng, pose=(float(p[0]), float(p[1]), float(yaw))))
                    for j in range(int(rng.integers(2, 4))):
                        p = at(s + 5 + j * 2.5 + 0.3, lat + sigma * 0.2)
                        out.append(_new_agent("barrier", rng, pose=(float(p[0]), float(p[1]), float(yaw + np.pi / 2))))
                    continue
                s = s0 + float(rng.exponential(100.0 / max(config.parked_per_100m, 1e-3) / 2))
                while s < s1:
                    u = rng.random()
                    cls = ("car" if u < 0.74 else "truck" if u < 0.82 else "trailer" if u < 0.87
                           else "motorcycle" if u < 0.93 else "bicycle" if u < 0.97 else "bus")
                    agent = _new_agent(cls, rng, with_rider=False)
                    length = agent.size[1]
                    if s + length > s1:
                        break
                    p = at(s + length / 2, lat + sigma * float(rng.uniform(-0.15, 0.15)))
                    agent.pose = (float(p[0]), float(p[1]), float(yaw + rng.normal(0, 0.02)))
                    agent.parked = True
                    out.append(agent)
                    s += length + float(rng.exponential(100.0 / max(config.parked_per_100m, 1e-3) / 2)) + 1.0
                # sidewalk objects behind the curb: parked bicycles, a barrier now and then
                sw_lat = sigma * (road.half_width + 0.8)
                for _ in range(int(rng.poisson(0.6))):
                    p = at(float(rng.uniform(s0, s1)), sw_lat)
                    bike = _new_agent("bicycle", rng, with_rider=False)
                    bike.pose, bike.parked = (float(p[0]), float(p[1]), float(yaw + np.pi / 2)), True
                    out.append(bike)
                if rng.random() < 0.15:
                    p = at(float(rng.uniform(s0, s1)), sigma * (road.half_width + 0.4))
                    out.append(_new_agent("barrier", rng, pose=(float(p[0]), float(p[1]), float(yaw + np.pi / 2))))
    return out


def _showcase(world: World, config: SynthConfig, rng: np.random.Generator, route_lanes: list[int], s_ego: float,
              statics: list[Agent]) -> list[Agent]:
    """Make every detection class appear near the ego: a construction zone on the curb after the first
    intersection, a parked bus and trailer across the road, a bicycle on the sidewalk. Random statics in
    their way are dropped."""
    side = 1.0 if world.left_hand else -1.0
    lw, sh = config.lane_width_m, config.shoulder_m
    forced: list[Agent] = []

    def frame(lane_index: int, u: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        lane = world.lanes[lane_index]
        d = (lane.end - lane.start) / lane.length
        n = np.array([-d[1], d[0]]) * side  # towards the curb of this lane's direction
        centre = lane.start + d * u - n * (lane.lane_index + 0.5) * lw  # on the road's centre line
        return centre, d, n, lane.heading

    def place(cls: str, p: np.ndarray, yaw: float, **kw) -> None:
        agent = _new_agent(cls, rng, **kw)
        agent.pose = (float(p[0]), float(p[1]), float(yaw))
        agent.parked = cls not in ("traffic_cone", "barrier")
        forced.append(agent)

    first = world.lanes[route_lanes[0]]
    lanes_first = world.roads[first.road].lanes_per_dir
    centre, d, n, heading = frame(first.index, min(s_ego + 14.0, first.length - 8.0))
    across = centre - n * (lanes_first * lw + sh / 2)
    place("bus", across, heading + np.pi, with_rider=False)
    centre, d, n, heading = frame(first.index, max(s_ego - 16.0, 8.0))
    place("trailer", centre - n * (lanes_first * lw + sh / 2), heading + np.pi, with_rider=False)
    centre, d, n, heading = frame(first.index, min(s_ego + 6.0, first.length - 2.0))
    place("bicycle", centre + n * (lanes_first * lw + sh + 0.8), heading + np.pi / 2, with_rider=False)
    zone_lane = world.lanes[route_lanes[1] if len(route_lanes) > 1 else route_lanes[0]]
    lanes_zone = world.roads[zone_lane.road].lanes_per_dir
    u0 = 12.0 if len(route_lanes) > 1 else max(4.0, s_ego - 40.0)
    centre, d, n, heading = frame(zone_lane.index, u0)
    shoulder = centre + n * (lanes_zone * lw + sh / 2)
    edge = centre + n * (lanes_zone * lw + 0.35)
    place("construction_vehicle", shoulder + d * 13.0, heading)
    for j in range(5):
        place("traffic_cone", edge + d * (j * 3.0), heading)
    for j in range(3):
        place("barrier", shoulder + d * (4.0 + j * 2.5) + n * 0.2, heading + np.pi / 2)
    taken = np.array([a.pose[:2] for a in forced])
    keep = [a for a in statics
            if np.min(np.linalg.norm(taken - np.array(a.pose[:2]), axis=1)) > 0.5 * a.size[1] + 7.0]
    return keep + forced
