"""Background clutter of a map: buildings along the blocks, street lights, trees and traffic lights.

Not annotated, but drawn and hit by the LiDAR like everything else, so the models see realistic clutter
and occlusion. Buildings are cut into pieces of at most ~12 m so that far-to-near drawing by piece
centre gets occlusion right against people and cars in front of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinybev_ros.synth.shapes import Part
from tinybev_ros.synth.world import World, block_road_sides

FACADES = [(170, 180, 190), (120, 130, 150), (90, 110, 160), (200, 200, 195), (150, 140, 120), (100, 100, 105),
           (190, 170, 140), (130, 150, 140), (80, 90, 120), (210, 215, 220)]
WINDOW = (80, 60, 50)
MAX_PIECE_M = 12.0


@dataclass
class Prop:
    """A static, unannotated solid at (x, y, yaw)."""

    parts: list[Part]
    pose: tuple[float, float, float]


def build_scenery(world: World, seed: int) -> list[Prop]:
    rng = np.random.default_rng(seed)
    props: list[Prop] = []
    sw = world.config.sidewalk_m
    for (bx, by), bi in world.block_grid.items():
        r = world.blocks[bi]
        sides = block_road_sides(world, bx, by)
        setback = float(rng.uniform(1.0, 4.0))
        inner = (r.x0 + sw + setback, r.y0 + sw + setback, r.x1 - sw - setback, r.y1 - sw - setback)
        lots = {side for rect, side, _ in world.carparks
                if r.x0 <= rect.center[0] <= r.x1 and r.y0 <= rect.center[1] <= r.y1}
        for side, faces_road in sides.items():
            if not faces_road or side in lots or rng.random() < 0.08:
                continue
            depth = float(rng.uniform(9.0, 18.0))
            if side in ("south", "north"):
                y_face = inner[1] if side == "south" else inner[3]
                yc = y_face + (depth / 2 if side == "south" else -depth / 2)
                props += _row(rng, inner[0], inner[2], lambda u, yc=yc: (u, yc), 0.0, depth)
            else:
                x_face = inner[0] if side == "west" else inner[2]
                xc = x_face + (depth / 2 if side == "west" else -depth / 2)
                props += _row(rng, inner[1], inner[3], lambda u, xc=xc: (xc, u), np.pi / 2, depth)
    props += _street_furniture(world, rng)
    return props


def _row(rng: np.random.Generator, u0: float, u1: float, place, yaw: float, depth: float) -> list[Prop]:
    """Buildings side by side along [u0, u1]."""
    out = []
    u = u0
    while u < u1 - 4.0:
        length = min(float(rng.uniform(10.0, 30.0)), u1 - u)
        if rng.random() < 0.15:  # a gap between buildings
            u += float(rng.uniform(4.0, 10.0))
            continue
        height = float(rng.choice([rng.uniform(4.0, 10.0), rng.uniform(10.0, 25.0), rng.uniform(25.0, 45.0)],
                                  p=[0.4, 0.4, 0.2]))
        colour = FACADES[rng.integers(len(FACADES))]
        shade = rng.uniform(0.85, 1.1)
        colour = tuple(int(np.clip(c * shade, 0, 255)) for c in colour)
        floors = min(int(height / 3.2), 5)
        pieces = max(1, int(np.ceil(length / MAX_PIECE_M)))
        piece = length / pieces
        for k in range(pieces):
            centre_u = u + (k + 0.5) * piece
            x, y = place(centre_u)
            parts = [Part((0.0, 0.0, height / 2), (piece, depth, height), colour, reflectivity=0.35)]
            for f in range(floors):
                z = 1.6 + f * (height - 1.0) / max(floors, 1)
                parts.append(Part((0.0, 0.0, z), (piece - 0.4, depth + 0.1, 1.1), WINDOW, reflectivity=0.1,
                                  detail_m=90.0, overlay=True))
            out.append(Prop(parts, (x, y, yaw)))
        u += length
    return out


def _street_furniture(world: World, rng: np.random.Generator) -> list[Prop]:
    out: list[Prop] = []
    pole = (110, 110, 115)
    for road in world.roads:
        cross = world.xs if road.axis == 0 else world.ys
        for k in range(len(cross) - 1):
            a, b = world.roads[cross[k]], world.roads[cross[k + 1]]
            s0 = a.coord + a.half_width + world.config.sidewalk_m + 6.0
            s1 = b.coord - b.half_width - world.config.sidewalk_m - 6.0
            for sigma in (1.0, -1.0):
                lat = sigma * (road.half_width + 0.5)
                arm_yaw = (np.pi / 2 if road.axis == 0 else np.pi) * (-sigma)
                s = s0 + float(rng.uniform(0, 10))
                while s < s1:
                    x, y = (s, road.coord + lat) if road.axis == 0 else (road.coord + lat, s)
                    if rng.random() < 0.55:  # street light: pole and arm over the road
                        parts = [Part((0.0, 0.0, 3.6), (0.22, 0.22, 7.2), pole, "cyl", reflectivity=0.5),
                                 Part((0.9, 0.0, 7.1), (1.8, 0.15, 0.15), pole, reflectivity=0.5),
                                 Part((1.7, 0.0, 6.95), (0.5, 0.3, 0.18), (200, 230, 240), reflectivity=0.5)]
                        out.append(Prop(parts, (x, y, arm_yaw)))
                    else:  # tree: trunk and crown
                        height = float(rng.uniform(4.0, 8.0))
                        crown = float(rng.uniform(2.0, 3.5))
                        green = (int(rng.uniform(30, 60)), int(rng.uniform(90, 140)), int(rng.uniform(30, 70)))
                        parts = [Part((0.0, 0.0, height * 0.3), (0.3, 0.3, height * 0.6), (40, 60, 80), "cyl",
                                      reflectivity=0.3),
                                 Part((0.0, 0.0, height * 0.45 + height * 0.55 / 2), (crown, crown, height * 0.55),
                                      green, "cyl", taper=0.55, reflectivity=0.3)]
                        out.append(Prop(parts, (x, y, float(rng.uniform(0, np.pi)))))
                    s += float(rng.uniform(18.0, 32.0))
    # traffic lights at the corners of every intersection
    for ix in range(len(world.xs)):
        for iy in range(len(world.ys)):
            c = world.node_xy((ix, iy))
            hx, hy = world.node_half((ix, iy))
            for sx, sy in ((1, 1), (-1, 1), (-1, -1), (1, -1)):
                x, y = c[0] + sx * (hx + 0.6), c[1] + sy * (hy + 0.6)
                parts = [Part((0.0, 0.0, 1.9), (0.18, 0.18, 3.8), (60, 60, 60), "cyl", reflectivity=0.5),
                         Part((0.0, 0.0, 3.6), (0.35, 0.35, 1.0), (30, 30, 30), reflectivity=0.5)]
                out.append(Prop(parts, (float(x), float(y), 0.0)))
    return out
