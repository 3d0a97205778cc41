"""Everything solid at one instant, in global coordinates, grouped by part shape for vectorised use.

Parts of one shape (box, octagonal prism, wheel) share a vertex count, so their meshes stack into one
(n, V, 3) array; posing all agents at a time is then a few array operations instead of a Python loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tinybev_ros.synth.population import Scene
from tinybev_ros.synth.scenery import Prop
from tinybev_ros.synth.shapes import TEMPLATES, Part, part_vertices

KINDS = tuple(TEMPLATES)


@dataclass
class PartGroup:
    """n parts of one shape: mesh vertices (camera), oriented boxes (LiDAR) and owner agent (-1: scenery)."""

    verts: np.ndarray  # (n, V, 3)
    colors: np.ndarray  # (n, 3) BGR float32
    owner: np.ndarray  # (n,) int64
    centers: np.ndarray  # (n, 3) box centre
    half: np.ndarray  # (n, 3) half size along the box axes
    yaw: np.ndarray  # (n,)
    reflectivity: np.ndarray  # (n,)
    detail_m: np.ndarray  # (n,) cameras skip the part beyond this distance
    overlay: np.ndarray  # (n,) bool: lies on another part's surface
    anchor: np.ndarray  # (n, 3) reference point of the part's object (draw order is by object first)

    def __len__(self) -> int:
        return len(self.owner)


def _empty(kind: str) -> PartGroup:
    v = len(TEMPLATES[kind][0])
    return PartGroup(np.zeros((0, v, 3)), np.zeros((0, 3), np.float32), np.zeros(0, np.int64), np.zeros((0, 3)),
                     np.zeros((0, 3)), np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0, bool), np.zeros((0, 3)))


def _group(parts: list[Part], owners: list[int], poses: list[tuple[float, float, float]] | None, kind: str
           ) -> PartGroup:
    """Group parts of one kind; with `poses` (one per part) they are placed in the world, else left local."""
    if not parts:
        return _empty(kind)
    verts = np.stack([part_vertices(p) for p in parts])
    centers = np.array([p.center for p in parts], dtype=float)
    yaw = np.zeros(len(parts))
    anchor = np.zeros((len(parts), 3))
    if poses is not None:
        pose = np.array(poses, dtype=float)
        verts, centers = _place(verts, centers, pose[:, 0], pose[:, 1], pose[:, 2])
        yaw = pose[:, 2].copy()
        anchor = np.column_stack([pose[:, :2], np.ones(len(parts))])
    return PartGroup(verts, np.array([p.color for p in parts], dtype=np.float32), np.array(owners, dtype=np.int64),
                     centers, np.array([p.size for p in parts], dtype=float) / 2, yaw,
                     np.array([p.reflectivity for p in parts], dtype=float),
                     np.array([p.detail_m for p in parts], dtype=float), np.array([p.overlay for p in parts], bool),
                     anchor)


def _place(verts: np.ndarray, centers: np.ndarray, x: np.ndarray, y: np.ndarray, yaw: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
    c, s = np.cos(yaw), np.sin(yaw)
    vx = verts[..., 0] * c[:, None] - verts[..., 1] * s[:, None] + x[:, None]
    vy = verts[..., 0] * s[:, None] + verts[..., 1] * c[:, None] + y[:, None]
    cx = centers[:, 0] * c - centers[:, 1] * s + x
    cy = centers[:, 0] * s + centers[:, 1] * c + y
    return (np.stack([vx, vy, verts[..., 2]], axis=-1), np.stack([cx, cy, centers[:, 2]], axis=-1))


@dataclass
class PartBatch:
    groups: dict[str, PartGroup]
    _boxes: tuple | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return sum(len(g) for g in self.groups.values())

    def boxes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Parts as oriented boxes for the LiDAR: centres, half sizes, yaws, reflectivities, owners.

        Small scenery details (window bands a few centimetres proud of a facade) are left out.
        """
        if self._boxes is None:
            gs = list(self.groups.values())
            cols = {f: np.concatenate([getattr(g, f) for g in gs])
                    for f in ("centers", "half", "yaw", "reflectivity", "owner", "detail_m")}
            keep = (cols["owner"] >= 0) | ~np.isfinite(cols["detail_m"])
            self._boxes = tuple(cols[f][keep] for f in ("centers", "half", "yaw", "reflectivity", "owner"))
        return self._boxes


class SolidWorld:
    """Caches meshes (object frame for agents, global for scenery) and poses them at any instant."""

    def __init__(self, scene: Scene, props: list[Prop]) -> None:
        self.scene = scene
        self._static: dict[str, PartGroup] = {}
        self._local: dict[str, PartGroup] = {}
        for kind in KINDS:
            sp = [(q, p.pose) for p in props for q in p.parts if q.kind == kind]
            self._static[kind] = _group([q for q, _ in sp], [-1] * len(sp), [pose for _, pose in sp], kind)
            ap = [(q, i) for i, a in enumerate(scene.agents) for q in a.parts if q.kind == kind]
            self._local[kind] = _group([q for q, _ in ap], [i for _, i in ap], None, kind)

    def at(self, t: float, include_agents: bool = True) -> PartBatch:
        if not include_agents or not self.scene.agents:
            return PartBatch(dict(self._static))
        xy, yaw, _ = self.scene.agent_states(t)
        groups = {}
        for kind in KINDS:
            loc, sta = self._local[kind], self._static[kind]
            if not len(loc):
                groups[kind] = sta
                continue
            o = loc.owner
            verts, centers = _place(loc.verts, loc.centers, xy[o, 0], xy[o, 1], yaw[o])
            groups[kind] = PartGroup(
                np.concatenate([sta.verts, verts]), np.concatenate([sta.colors, loc.colors]),
                np.concatenate([sta.owner, o]), np.concatenate([sta.centers, centers]),
                np.concatenate([sta.half, loc.half]), np.concatenate([sta.yaw, yaw[o]]),
                np.concatenate([sta.reflectivity, loc.reflectivity]),
                np.concatenate([sta.detail_m, loc.detail_m]), np.concatenate([sta.overlay, loc.overlay]),
                np.concatenate([sta.anchor, np.column_stack([xy[o], np.ones(len(o))])]),
            )
        return PartBatch(groups)
