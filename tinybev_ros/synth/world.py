"""The static world of one map: a grid road network with lanes, intersections, crossings and sidewalks.

Roads run along x (east-west, constant y) or along y (north-south, constant x) and meet at intersections.
Every geometric fact the generator needs (lane centrelines, turn connectors, sidewalks, crossings, blocks)
is derived here once, and the map writer, the texture painter and the agents all read it from here, so
map, pictures and motion cannot disagree. Global coordinates are positive (the devkit's map canvas
starts at 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tinybev_ros.synth.config import LEFT_HAND_TRAFFIC, SynthConfig

MARGIN_M = 60.0  # from canvas origin to the outermost road, room for sidewalks and buildings


@dataclass
class Road:
    index: int
    axis: int  # 0: runs along x (constant y); 1: runs along y (constant x)
    coord: float
    lanes_per_dir: int
    half_width: float  # centre line to curb: lanes + shoulder


@dataclass
class Lane:
    """A lane between two intersections, in one direction; index 0 is next to the road centre line."""

    index: int
    road: int
    block: int  # between crossings block and block + 1 along the road
    direction: int  # +1 along the road's axis, -1 against
    lane_index: int
    start: np.ndarray  # (2,)
    end: np.ndarray
    heading: float
    from_node: tuple[int, int]  # intersection (ix, iy) it leaves
    to_node: tuple[int, int]  # intersection it enters
    outgoing: list[int] = field(default_factory=list)  # connector indices

    @property
    def length(self) -> float:
        return float(np.linalg.norm(self.end - self.start))


@dataclass
class Connector:
    """A path through an intersection from the end of one lane to the start of another."""

    index: int
    from_lane: int
    to_lane: int
    turn: str  # "straight" | "left" | "right"
    points: np.ndarray  # (K, 2) polyline
    node: tuple[int, int]


@dataclass
class Rect:
    """An axis-aligned rectangle [x0, x1] x [y0, y1]."""

    x0: float
    y0: float
    x1: float
    y1: float

    def corners(self) -> np.ndarray:
        return np.array([[self.x0, self.y0], [self.x1, self.y0], [self.x1, self.y1], [self.x0, self.y1]])

    @property
    def center(self) -> np.ndarray:
        return np.array([(self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2])


@dataclass
class Crossing:
    rect: Rect
    node: tuple[int, int]
    road: int  # the road it crosses
    arm: int  # 0 east, 1 north, 2 west, 3 south of the intersection


@dataclass
class World:
    map_name: str
    left_hand: bool
    config: SynthConfig
    roads: list[Road]
    xs: list[int]  # road indices of north-south roads (constant x), ordered by x
    ys: list[int]  # road indices of east-west roads (constant y), ordered by y
    lanes: list[Lane]
    connectors: list[Connector]
    crossings: list[Crossing]
    blocks: list[Rect]  # land between roads (inside the curbs)
    interior_blocks: list[tuple[int, int]]  # (bx, by) of blocks bounded by roads on all four sides
    block_grid: dict[tuple[int, int], int]
    extent: Rect  # the whole canvas
    carparks: list[tuple[Rect, str, int]] = field(default_factory=list)  # (rect, block side, road facing it)

    def node_xy(self, node: tuple[int, int]) -> np.ndarray:
        return np.array([self.roads[self.xs[node[0]]].coord, self.roads[self.ys[node[1]]].coord])

    def node_half(self, node: tuple[int, int]) -> tuple[float, float]:
        """Half extents (x, y) of an intersection box: the half widths of the crossing roads."""
        return self.roads[self.xs[node[0]]].half_width, self.roads[self.ys[node[1]]].half_width

    def node_rect(self, node: tuple[int, int]) -> Rect:
        c = self.node_xy(node)
        hx, hy = self.node_half(node)
        return Rect(c[0] - hx, c[1] - hy, c[0] + hx, c[1] + hy)

    def is_interior_node(self, node: tuple[int, int]) -> bool:
        return 0 < node[0] < len(self.xs) - 1 and 0 < node[1] < len(self.ys) - 1


def _unit(heading: float) -> np.ndarray:
    return np.array([np.cos(heading), np.sin(heading)])


def build_world(config: SynthConfig, map_name: str, seed: int) -> World:
    """Lay out the road grid of one map deterministically from `seed`."""
    rng = np.random.default_rng(seed)
    left_hand = LEFT_HAND_TRAFFIC[map_name]
    n = config.grid_roads
    roads: list[Road] = []
    coords_by_axis: dict[int, list[float]] = {}
    for axis in (1, 0):  # north-south roads first (their coord is x)
        gaps = rng.uniform(config.block_min_m, config.block_max_m, size=n - 1)
        coords = MARGIN_M + np.concatenate([[0.0], np.cumsum(gaps)])
        coords_by_axis[axis] = list(coords)
        for k, c in enumerate(coords):
            lanes = 2 if (k % 2 == 1 or rng.random() < 0.5) else 1
            half = lanes * config.lane_width_m + config.shoulder_m
            roads.append(Road(len(roads), axis, float(c), lanes, half))
    xs = [r.index for r in roads if r.axis == 1]
    ys = [r.index for r in roads if r.axis == 0]
    extent = Rect(0.0, 0.0, coords_by_axis[1][-1] + MARGIN_M, coords_by_axis[0][-1] + MARGIN_M)
    world = World(map_name, left_hand, config, roads, xs, ys, [], [], [], [], [], {}, extent)
    _build_lanes(world)
    _build_connectors(world)
    _build_crossings(world)
    _build_blocks(world)
    _build_carparks(world, rng)
    return world


def _build_lanes(world: World) -> None:
    cfg = world.config
    side = 1.0 if world.left_hand else -1.0  # lanes lie on the left (LHT) or right (RHT) of the heading
    for road in world.roads:
        cross = world.xs if road.axis == 0 else world.ys
        for k in range(len(cross) - 1):
            a = world.roads[cross[k]]
            b = world.roads[cross[k + 1]]
            s0 = a.coord + a.half_width + cfg.crossing_m
            s1 = b.coord - b.half_width - cfg.crossing_m
            for direction in (1, -1):
                heading = (0.0 if road.axis == 0 else np.pi / 2) + (0.0 if direction == 1 else np.pi)
                normal_left = _unit(heading + np.pi / 2)
                for li in range(road.lanes_per_dir):
                    offset = side * (li + 0.5) * cfg.lane_width_m
                    if road.axis == 0:
                        p0, p1 = np.array([s0, road.coord]), np.array([s1, road.coord])
                        node_a, node_b = (k, world.ys.index(road.index)), (k + 1, world.ys.index(road.index))
                    else:
                        p0, p1 = np.array([road.coord, s0]), np.array([road.coord, s1])
                        node_a, node_b = (world.xs.index(road.index), k), (world.xs.index(road.index), k + 1)
                    if direction == -1:
                        p0, p1, node_a, node_b = p1, p0, node_b, node_a
                    lateral = normal_left * offset
                    world.lanes.append(
                        Lane(len(world.lanes), road.index, k, direction, li, p0 + lateral, p1 + lateral,
                             float(heading), node_a, node_b)
                    )


def turn_polyline(p0: np.ndarray, h0: float, p1: np.ndarray, h1: float, step: float = 0.5) -> tuple[np.ndarray, float]:
    """Straight - quarter circle - straight from pose (p0, h0) to (p1, h1) with perpendicular headings.

    Returns the polyline and the arc radius (0 for a straight connector).
    """
    d0, d1 = _unit(h0), _unit(h1)
    cross = d0[0] * d1[1] - d0[1] * d1[0]
    if abs(cross) < 1e-6:
        n = max(2, int(np.ceil(np.linalg.norm(p1 - p0) / step)) + 1)
        return np.linspace(p0, p1, n), 0.0
    # corner C = p0 + a d0 = p1 - b d1
    mat = np.stack([d0, d1], axis=1)
    a, b = np.linalg.solve(mat, p1 - p0)
    radius = float(min(a, b))
    arc_start = p0 + (a - radius) * d0
    left = cross > 0
    centre = arc_start + radius * _unit(h0 + (np.pi / 2 if left else -np.pi / 2))
    pieces = []
    n0 = max(1, int(np.ceil((a - radius) / step)))
    pieces.append(np.linspace(p0, arc_start, n0, endpoint=False) if a - radius > 1e-6 else np.zeros((0, 2)))
    n_arc = max(4, int(np.ceil(radius * np.pi / 2 / step)))
    start_angle = h0 - np.pi / 2 if left else h0 + np.pi / 2
    sweep = np.pi / 2 if left else -np.pi / 2
    angles = start_angle + np.linspace(0.0, sweep, n_arc, endpoint=False)
    pieces.append(centre + radius * np.stack([np.cos(angles), np.sin(angles)], axis=1))
    arc_end = centre + radius * _unit(start_angle + sweep)
    n1 = max(2, int(np.ceil((b - radius) / step)) + 1)
    pieces.append(np.linspace(arc_end, p1, n1))
    return np.concatenate(pieces), radius


def _build_connectors(world: World) -> None:
    starts: dict[tuple[int, int], list[Lane]] = {}
    for lane in world.lanes:
        starts.setdefault(lane.from_node, []).append(lane)
    for lane in world.lanes:
        n_in = world.roads[lane.road].lanes_per_dir
        for out in starts.get(lane.to_node, []):
            dh = float(np.angle(np.exp(1j * (out.heading - lane.heading))))
            n_out = world.roads[out.road].lanes_per_dir
            if abs(dh) < 0.1:
                turn = "straight"
                ok = out.road == lane.road and out.lane_index == lane.lane_index
            elif abs(abs(dh) - np.pi / 2) < 0.1:
                turn = "left" if dh > 0 else "right"
                near = (turn == "left") == world.left_hand  # the turn towards the curb
                if near:
                    ok = lane.lane_index == n_in - 1 and out.lane_index == n_out - 1
                else:
                    ok = lane.lane_index == 0 and out.lane_index == 0
            else:
                ok = False  # no U-turns
            if not ok:
                continue
            points, _ = turn_polyline(lane.end, lane.heading, out.start, out.heading)
            conn = Connector(len(world.connectors), lane.index, out.index, turn, points, lane.to_node)
            world.connectors.append(conn)
            lane.outgoing.append(conn.index)


def _build_crossings(world: World) -> None:
    cw = world.config.crossing_m
    for ix in range(len(world.xs)):
        for iy in range(len(world.ys)):
            node = (ix, iy)
            c = world.node_xy(node)
            hx, hy = world.node_half(node)
            arms = {
                0: ix < len(world.xs) - 1,
                1: iy < len(world.ys) - 1,
                2: ix > 0,
                3: iy > 0,
            }
            for arm, exists in arms.items():
                if not exists:
                    continue
                if arm == 0:
                    rect, road = Rect(c[0] + hx, c[1] - hy, c[0] + hx + cw, c[1] + hy), world.ys[iy]
                elif arm == 2:
                    rect, road = Rect(c[0] - hx - cw, c[1] - hy, c[0] - hx, c[1] + hy), world.ys[iy]
                elif arm == 1:
                    rect, road = Rect(c[0] - hx, c[1] + hy, c[0] + hx, c[1] + hy + cw), world.xs[ix]
                else:
                    rect, road = Rect(c[0] - hx, c[1] - hy - cw, c[0] + hx, c[1] - hy), world.xs[ix]
                world.crossings.append(Crossing(rect, node, road, arm))


def _build_blocks(world: World) -> None:
    """Land between the curbs; the outer ring reaches the canvas edge."""
    ext = world.extent
    xs_edges = [ext.x0] + [world.roads[i].coord for i in world.xs] + [ext.x1]
    ys_edges = [ext.y0] + [world.roads[i].coord for i in world.ys] + [ext.y1]
    x_half = [0.0] + [world.roads[i].half_width for i in world.xs] + [0.0]
    y_half = [0.0] + [world.roads[i].half_width for i in world.ys] + [0.0]
    for bx in range(len(xs_edges) - 1):
        for by in range(len(ys_edges) - 1):
            rect = Rect(xs_edges[bx] + x_half[bx], ys_edges[by] + y_half[by],
                        xs_edges[bx + 1] - x_half[bx + 1], ys_edges[by + 1] - y_half[by + 1])
            world.block_grid[(bx, by)] = len(world.blocks)
            world.blocks.append(rect)
            if 0 < bx < len(xs_edges) - 2 and 0 < by < len(ys_edges) - 2:
                world.interior_blocks.append((bx, by))


def block_road_sides(world: World, bx: int, by: int) -> dict[str, bool]:
    """Which sides of block (bx, by) face a real road (so carry a sidewalk)."""
    nx, ny = len(world.xs), len(world.ys)
    return {"west": bx >= 1, "east": bx <= nx - 1, "south": by >= 1, "north": by <= ny - 1}


def sidewalk_rects(world: World) -> list[Rect]:
    """Sidewalk strips along every block side that faces a road (corners overlap, which is harmless)."""
    sw = world.config.sidewalk_m
    out: list[Rect] = []
    for (bx, by), bi in world.block_grid.items():
        r = world.blocks[bi]
        sides = block_road_sides(world, bx, by)
        if sides["west"]:
            out.append(Rect(r.x0, r.y0, r.x0 + sw, r.y1))
        if sides["east"]:
            out.append(Rect(r.x1 - sw, r.y0, r.x1, r.y1))
        if sides["south"]:
            out.append(Rect(r.x0, r.y0, r.x1, r.y0 + sw))
        if sides["north"]:
            out.append(Rect(r.x0, r.y1 - sw, r.x1, r.y1))
    return out


def road_segment_rects(world: World) -> list[tuple[Rect, int, int | None]]:
    """Road pieces between intersections: (rect, road index, block) and intersection boxes (rect, -1, None)."""
    out: list[tuple[Rect, int, int | None]] = []
    for road in world.roads:
        cross = world.xs if road.axis == 0 else world.ys
        for k in range(len(cross) - 1):
            a, b = world.roads[cross[k]], world.roads[cross[k + 1]]
            s0, s1 = a.coord + a.half_width, b.coord - b.half_width
            if road.axis == 0:
                rect = Rect(s0, road.coord - road.half_width, s1, road.coord + road.half_width)
            else:
                rect = Rect(road.coord - road.half_width, s0, road.coord + road.half_width, s1)
            out.append((rect, road.index, k))
    for ix in range(len(world.xs)):
        for iy in range(len(world.ys)):
            out.append((world.node_rect((ix, iy)), -1, None))
    return out


STALL_W, STALL_D = 2.6, 5.2


def carpark_stalls(rect: Rect, side: str) -> list[tuple[np.ndarray, float]]:
    """Stall centres and car headings: two rows along the lot's long side facing a central aisle."""
    along_x = side in ("south", "north")
    length = (rect.x1 - rect.x0) if along_x else (rect.y1 - rect.y0)
    depth = (rect.y1 - rect.y0) if along_x else (rect.x1 - rect.x0)
    out = []
    n = int((length - 1.0) // STALL_W)
    for row, off in ((0, STALL_D / 2 + 0.3), (1, depth - STALL_D / 2 - 0.3)):
        for k in range(n):
            u = 0.5 + (k + 0.5) * STALL_W
            if along_x:
                out.append((np.array([rect.x0 + u, rect.y0 + off]), np.pi / 2 if row == 0 else -np.pi / 2))
            else:
                out.append((np.array([rect.x0 + off, rect.y0 + u]), 0.0 if row == 0 else np.pi))
    return out


def _build_carparks(world: World, rng: np.random.Generator) -> None:
    """Parking lots behind the sidewalk on one side of some blocks (buildings leave that side free)."""
    sw = world.config.sidewalk_m
    for bx, by in world.interior_blocks:
        if rng.random() > 0.35:
            continue
        r = world.blocks[world.block_grid[(bx, by)]]
        side = ("south", "north", "west", "east")[rng.integers(4)]
        depth = 16.0
        if side == "south":
            rect, road = Rect(r.x0 + sw + 6, r.y0 + sw + 1, r.x1 - sw - 6, r.y0 + sw + 1 + depth), world.ys[by - 1]
        elif side == "north":
            rect, road = Rect(r.x0 + sw + 6, r.y1 - sw - 1 - depth, r.x1 - sw - 6, r.y1 - sw - 1), world.ys[by]
        elif side == "west":
            rect, road = Rect(r.x0 + sw + 1, r.y0 + sw + 6, r.x0 + sw + 1 + depth, r.y1 - sw - 6), world.xs[bx - 1]
        else:
            rect, road = Rect(r.x1 - sw - 1 - depth, r.y0 + sw + 6, r.x1 - sw - 1, r.y1 - sw - 6), world.xs[bx]
        world.carparks.append((rect, side, road))
