"""What things look like: every object is a few convex parts (boxes, tapered boxes, octagonal prisms).

The same parts are drawn by the camera renderer and hit by the LiDAR ray caster, so the two sensors
agree. Parts stay inside the object's annotation box (size w, ln, h; x forward along ln), so every LiDAR
hit on an object counts as a point inside its box. Classes differ in shape, proportions and colour the
way real ones do (a bus is long, tall and windowed; a cone is a small orange taper).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Colours are BGR (OpenCV order).
GLASS = (70, 55, 45)
TYRE = (30, 30, 32)
CAR_COLOURS = [(235, 235, 235), (30, 30, 30), (160, 160, 165), (40, 40, 150), (140, 60, 20), (60, 110, 60),
               (90, 90, 95), (200, 200, 200), (20, 60, 160), (120, 140, 170)]
CONTAINER_COLOURS = [(140, 80, 30), (40, 50, 160), (170, 170, 170), (40, 120, 40), (30, 110, 200)]
CLOTHES = [(40, 40, 40), (150, 60, 30), (40, 40, 140), (200, 200, 200), (50, 120, 50), (60, 160, 210),
           (110, 80, 160), (30, 30, 90), (170, 140, 110)]
SKIN = [(120, 160, 220), (80, 120, 170), (60, 90, 130), (140, 180, 230)]


@dataclass(frozen=True)
class Part:
    """A convex solid in its object's frame: `center` of its bounding box, `size` (length x, width y, height z)."""

    center: tuple[float, float, float]
    size: tuple[float, float, float]
    color: tuple[int, int, int]
    kind: str = "box"  # "box" | "cyl" (octagonal prism, vertical axis) | "wheel" (octagonal prism, axis y)
    taper: float = 1.0  # top face scaled by this (cones, cabins, barriers)
    reflectivity: float = 0.3  # LiDAR intensity factor
    detail_m: float = float("inf")  # small detail: cameras skip it beyond this distance
    overlay: bool = False  # lies on another part's surface (windows, stripes, lights): drawn after the solids


def _octagon(n: int = 8) -> np.ndarray:
    ang = (np.arange(n) + 0.5) * 2 * np.pi / n
    return 0.5 * np.stack([np.cos(ang), np.sin(ang)], axis=1) / np.cos(np.pi / n)


def _templates() -> dict[str, tuple[np.ndarray, list[list[int]]]]:
    """Unit solids in [-0.5, 0.5]^3 and their faces, counter-clockwise seen from outside."""
    box = np.array([[-0.5, -0.5, -0.5], [0.5, -0.5, -0.5], [0.5, 0.5, -0.5], [-0.5, 0.5, -0.5],
                    [-0.5, -0.5, 0.5], [0.5, -0.5, 0.5], [0.5, 0.5, 0.5], [-0.5, 0.5, 0.5]])
    box_faces = [[0, 3, 2, 1], [4, 5, 6, 7], [0, 1, 5, 4], [1, 2, 6, 5], [2, 3, 7, 6], [3, 0, 4, 7]]
    octo = _octagon()
    n = len(octo)
    cyl = np.concatenate([np.c_[octo, -0.5 * np.ones(n)], np.c_[octo, 0.5 * np.ones(n)]])
    cyl_faces = [list(range(n - 1, -1, -1)), list(range(n, 2 * n))]
    cyl_faces += [[i, (i + 1) % n, n + (i + 1) % n, n + i] for i in range(n)]
    # wheel: the octagon in the x-z plane, extruded along y
    wheel = cyl[:, [0, 2, 1]].copy()
    wheel[:, 1] *= -1.0  # keep faces counter-clockwise after the axis swap
    return {"box": (box, box_faces), "cyl": (cyl, cyl_faces), "wheel": (wheel, cyl_faces)}


TEMPLATES = _templates()


def part_vertices(part: Part) -> np.ndarray:
    """(V, 3) vertices of a part in its object's frame."""
    verts, _ = TEMPLATES[part.kind]
    v = verts.copy()
    if part.taper != 1.0:
        top = v[:, 2] > 0
        v[top, :2] *= part.taper
    return v * np.asarray(part.size) + np.asarray(part.center)


def _wheels(length: float, width: float, radius: float, axles: list[float], tyre_w: float = 0.28) -> list[Part]:
    out = []
    for x in axles:
        for side in (-1, 1):
            y = side * (width / 2 - tyre_w / 2 - 0.01)
            out.append(Part((x, y, radius), (2 * radius, tyre_w, 2 * radius), TYRE, "wheel", reflectivity=0.1,
                            detail_m=45.0))
    return out


def _rider(x: float, seat_z: float, rng: np.random.Generator) -> list[Part]:
    cloth = CLOTHES[rng.integers(len(CLOTHES))]
    return [
        Part((x, 0.0, seat_z + 0.33), (0.32, 0.42, 0.66), cloth, reflectivity=0.25),
        Part((x + 0.05, 0.0, seat_z + 0.78), (0.22, 0.22, 0.24), (40, 40, 40), "cyl", reflectivity=0.2),
    ]


def make_parts(cls: str, size_wlh: tuple[float, float, float], rng: np.random.Generator,
               with_rider: bool = True) -> list[Part]:
    """The parts of one object of detection class `cls` with annotation size (w, l, h)."""
    w, ln, h = size_wlh
    e = 0.02  # keep parts strictly inside the annotation box
    w, ln, h = w - 2 * e, ln - 2 * e, h - e
    if cls == "car":
        # body style from the proportions: low sedans, hatchbacks, tall SUVs and vans (cabin over the bonnet)
        paint = CAR_COLOURS[rng.integers(len(CAR_COLOURS))]
        tall = h > 1.7
        body_top = (0.5 if tall else 0.58) * h
        cabin_len = (0.75 if tall else float(rng.uniform(0.45, 0.58))) * ln
        cabin_x = (0.08 if tall else float(rng.uniform(-0.12, 0.0))) * ln
        taper = 0.92 if tall else 0.82
        r = 0.33 if not tall else 0.36
        parts = _wheels(ln, w, r, [ln / 2 - 0.85, -ln / 2 + 0.85])
        parts += [
            Part((0.0, 0.0, (r + body_top) / 2 + 0.05), (ln, w, body_top - r + 0.1), paint, reflectivity=0.5),
            Part((cabin_x, 0.0, (body_top + h) / 2), (cabin_len, 0.92 * w, h - body_top), GLASS, taper=taper,
                 reflectivity=0.15),
            Part((cabin_x, 0.0, h - 0.03), (cabin_len * (taper - 0.12), 0.72 * w, 0.06), paint, reflectivity=0.5,
                 overlay=True),
            Part((ln / 2 - 0.03, 0.6 * w / 2, 0.75 * body_top), (0.06, 0.3, 0.12), (210, 240, 250), overlay=True),
            Part((ln / 2 - 0.03, -0.6 * w / 2, 0.75 * body_top), (0.06, 0.3, 0.12), (210, 240, 250), overlay=True),
            Part((-ln / 2 + 0.03, 0.65 * w / 2, 0.8 * body_top), (0.06, 0.3, 0.12), (30, 30, 200), overlay=True),
            Part((-ln / 2 + 0.03, -0.65 * w / 2, 0.8 * body_top), (0.06, 0.3, 0.12), (30, 30, 200), overlay=True),
        ]
        return parts
    if cls == "truck":
        cab_l = min(2.2, 0.3 * ln)
        cargo = CONTAINER_COLOURS[rng.integers(len(CONTAINER_COLOURS))] if rng.random() < 0.5 else (215, 215, 215)
        cab = CAR_COLOURS[rng.integers(len(CAR_COLOURS))]
        r = 0.5
        parts = _wheels(ln, w, r, [ln / 2 - 1.1, -ln / 2 + 1.4, -ln / 2 + 2.5])
        parts += [
            Part((ln / 2 - cab_l / 2, 0.0, (0.6 + 0.8 * h) / 2), (cab_l, w, 0.8 * h - 0.6), cab, reflectivity=0.5),
            Part((ln / 2 - 0.05, 0.0, 0.62 * h), (0.1, 0.85 * w, 0.3 * h), GLASS, reflectivity=0.15, overlay=True),
            Part((-cab_l / 2 - 0.1, 0.0, (0.9 + h) / 2), (ln - cab_l - 0.2, w, h - 0.9), cargo, reflectivity=0.6),
            Part((0.0, 0.0, 0.75), (ln - 0.2, 0.6 * w, 0.3), TYRE, reflectivity=0.1),
        ]
        return parts
    if cls == "bus":
        # a bus reads as a bus by its row of separate side windows, big windscreen and livery stripe
        paint = [(40, 40, 180), (60, 140, 60), (30, 120, 220), (150, 90, 40), (40, 160, 200)][rng.integers(5)]
        stripe = (235, 235, 235)
        r = 0.5
        parts = _wheels(ln, w, r, [ln / 2 - 2.4, -ln / 2 + 2.8])
        parts += [
            Part((0.0, 0.0, (0.35 + h) / 2), (ln, w - 0.04, h - 0.35), paint, reflectivity=0.5),
            Part((ln / 2 - 0.02, 0.0, 0.6 * h), (0.04, 0.9 * w, 0.5 * h), GLASS, reflectivity=0.15, overlay=True),
        ]
        pane = 1.25
        n = int((ln - 3.0) // (pane + 0.3))
        for side in (-1.0, 1.0):  # thin slabs on both flanks: livery stripe and separate side windows
            y = side * (w / 2 - 0.02)
            parts.append(Part((0.0, y, 0.36 * h), (ln - 0.2, 0.04, 0.08 * h), stripe, reflectivity=0.6, overlay=True))
            for k in range(n):
                x = -ln / 2 + 0.8 + (k + 0.5) * (pane + 0.3)
                parts.append(Part((x, y, 0.66 * h), (pane, 0.04, 0.3 * h), GLASS, reflectivity=0.15, overlay=True))
        return parts
    if cls == "trailer":
        cargo = CONTAINER_COLOURS[rng.integers(len(CONTAINER_COLOURS))]
        r = 0.5
        parts = _wheels(ln, w, r, [-ln / 2 + 1.2, -ln / 2 + 2.4])
        parts += [
            Part((0.0, 0.0, 0.85), (ln, 0.5 * w, 0.3), TYRE, reflectivity=0.1),
            Part((0.0, 0.0, (1.05 + h) / 2), (ln, w, h - 1.05), cargo, reflectivity=0.6),
            Part((ln / 2 - 0.4, 0.0, 0.55), (0.2, 0.2, 1.0), TYRE, reflectivity=0.1),
        ]
        return parts
    if cls == "construction_vehicle":
        yellow = (20, 190, 240)
        parts = [
            Part((0.0, -w / 2 + 0.3, 0.4), (0.85 * ln, 0.58, 0.8), TYRE, reflectivity=0.1),
            Part((0.0, w / 2 - 0.3, 0.4), (0.85 * ln, 0.58, 0.8), TYRE, reflectivity=0.1),
            Part((-0.1 * ln, 0.0, 1.15), (0.7 * ln, w - 0.2, 0.7), yellow, reflectivity=0.6),
            Part((-0.2 * ln, 0.15 * w, (1.5 + h) / 2), (0.3 * ln, 0.45 * w, h - 1.5), GLASS, reflectivity=0.15),
            Part((-0.2 * ln, 0.15 * w, h - 0.05), (0.32 * ln, 0.5 * w, 0.1), yellow, reflectivity=0.6),
            Part((0.22 * ln, -0.15 * w, 1.9), (0.45 * ln, 0.3, 0.35), yellow, reflectivity=0.6),
            Part((ln / 2 - 0.4, -0.15 * w, 1.2), (0.8, 0.9 * w * 0.8, 0.9), (60, 60, 70), reflectivity=0.4),
            Part((-0.45 * ln, 0.0, 1.6), (0.1 * ln, w - 0.4, 0.6), (40, 40, 40), reflectivity=0.3),
        ]
        return parts
    if cls in ("motorcycle", "bicycle"):
        bike = cls == "bicycle"
        r = 0.34 if bike else 0.32
        frame = CAR_COLOURS[rng.integers(len(CAR_COLOURS))]
        tyre_w = 0.05 if bike else 0.12
        parts = [
            Part((ln / 2 - r, 0.0, r), (2 * r, tyre_w, 2 * r), TYRE, "wheel", reflectivity=0.1),
            Part((-ln / 2 + r, 0.0, r), (2 * r, tyre_w, 2 * r), TYRE, "wheel", reflectivity=0.1),
        ]
        if bike:
            parts += [Part((0.0, 0.0, 0.6), (ln - 2 * r, 0.05, 0.3), frame, reflectivity=0.4),
                      Part((ln / 2 - r - 0.05, 0.0, 0.85), (0.06, 0.5, 0.05), (40, 40, 40))]
        else:
            parts += [Part((0.0, 0.0, 0.6), (ln - 0.5, 0.35, 0.45), frame, reflectivity=0.5),
                      Part((ln / 2 - 0.5, 0.0, 0.95), (0.15, 0.7, 0.08), (40, 40, 40))]
        if with_rider:
            parts += _rider(-0.1, 0.85 if bike else 0.8, rng)
        return _clip_parts(parts, w, ln, h)
    if cls == "pedestrian":
        cloth_top = CLOTHES[rng.integers(len(CLOTHES))]
        cloth_leg = CLOTHES[rng.integers(len(CLOTHES))]
        skin = SKIN[rng.integers(len(SKIN))]
        leg_h = 0.47 * h
        torso_h = 0.34 * h
        head = min(0.22, h - leg_h - torso_h)
        tw = min(w - 0.2, 0.42)
        arm_y = tw / 2 + 0.045
        return [
            Part((0.0, -tw / 4, leg_h / 2), (0.2, tw / 2 - 0.02, leg_h), cloth_leg, reflectivity=0.25),
            Part((0.0, tw / 4, leg_h / 2), (0.2, tw / 2 - 0.02, leg_h), cloth_leg, reflectivity=0.25),
            Part((0.0, 0.0, leg_h + torso_h / 2), (0.26, tw, torso_h), cloth_top, reflectivity=0.25),
            Part((0.0, -arm_y, leg_h + torso_h * 0.45), (0.1, 0.08, torso_h * 0.95), cloth_top, reflectivity=0.25),
            Part((0.0, arm_y, leg_h + torso_h * 0.45), (0.1, 0.08, torso_h * 0.95), cloth_top, reflectivity=0.25),
            Part((0.0, 0.0, leg_h + torso_h + head / 2), (0.2, 0.18, head), skin, "cyl", reflectivity=0.2),
        ]
    if cls == "traffic_cone":
        return [
            Part((0.0, 0.0, 0.03), (ln, w, 0.06), (30, 30, 30), reflectivity=0.2),
            Part((0.0, 0.0, 0.06 + (h - 0.06) / 2), (0.8 * ln, 0.8 * w, h - 0.06), (0, 110, 255), "cyl",
                 taper=0.18, reflectivity=0.9),
            Part((0.0, 0.0, 0.62 * h), (0.46 * ln, 0.46 * w, 0.12 * h), (240, 240, 240), "cyl", taper=0.75,
                 reflectivity=0.9),
        ]
    if cls == "barrier":
        n = 3
        parts = []
        for i in range(n):
            y0 = -w / 2 + (i + 0.5) * w / n
            colour = (40, 40, 220) if i % 2 == 0 else (235, 235, 235)
            parts.append(Part((0.0, y0, h / 2), (ln, w / n, h), colour, taper=0.55, reflectivity=0.7))
        return parts
    raise ValueError(f"make_parts: unknown class {cls!r}")


def _clip_parts(parts: list[Part], w: float, ln: float, h: float) -> list[Part]:
    """Shrink parts that would poke out of the (w, l, h) box (riders on small bikes)."""
    out = []
    for p in parts:
        lo = np.array(p.center) - np.array(p.size) / 2
        hi = np.array(p.center) + np.array(p.size) / 2
        lo = np.maximum(lo, [-ln / 2, -w / 2, 0.0])
        hi = np.minimum(hi, [ln / 2, w / 2, h])
        if np.all(hi > lo):
            out.append(Part(tuple((lo + hi) / 2), tuple(hi - lo), p.color, p.kind, p.taper, p.reflectivity))
    return out
