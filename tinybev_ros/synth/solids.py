"""Everything solid at one instant, flattened into parts in global coordinates for both sensors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinybev_ros.synth.population import Scene
from tinybev_ros.synth.scenery import Prop
from tinybev_ros.synth.shapes import Part, part_vertices


@dataclass
class PartBatch:
    """P parts: mesh vertices for the camera, oriented boxes for the LiDAR, owner agent (-1: scenery)."""

    verts: list[np.ndarray]  # each (V, 3), global
    kinds: list[str]
    colors: np.ndarray  # (P, 3) BGR float
    owner: np.ndarray  # (P,) int
    centers: np.ndarray  # (P, 3) global box centre
    half: np.ndarray  # (P, 3) half size (x, y, z) in the box frame
    yaw: np.ndarray  # (P,)
    reflectivity: np.ndarray  # (P,)

    def __len__(self) -> int:
        return len(self.kinds)


def _rot(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@dataclass
class _Local:
    parts: list[Part]
    verts: list[np.ndarray]


class SolidWorld:
    """Caches part meshes (object frame for agents, global for scenery) and poses them per instant."""

    def __init__(self, scene: Scene, props: list[Prop]) -> None:
        self.scene = scene
        self._agents = [_Local(a.parts, [part_vertices(p) for p in a.parts]) for a in scene.agents]
        static = [self._place(_Local(p.parts, [part_vertices(q) for q in p.parts]), *p.pose, owner=-1)
                  for p in props]
        self._static = _concat(static)

    @staticmethod
    def _place(local: _Local, x: float, y: float, yaw: float, owner: int) -> PartBatch:
        rot = _rot(yaw)
        t = np.array([x, y, 0.0])
        parts = local.parts
        return PartBatch(
            verts=[v @ rot.T + t for v in local.verts],
            kinds=[p.kind for p in parts],
            colors=np.array([p.color for p in parts], dtype=np.float32).reshape(-1, 3),
            owner=np.full(len(parts), owner, dtype=np.int64),
            centers=np.array([p.center for p in parts], dtype=float).reshape(-1, 3) @ rot.T + t,
            half=np.array([p.size for p in parts], dtype=float).reshape(-1, 3) / 2,
            yaw=np.full(len(parts), yaw),
            reflectivity=np.array([p.reflectivity for p in parts], dtype=float),
        )

    def at(self, t: float, include_agents: bool = True) -> PartBatch:
        if not include_agents:
            return self._static
        xy, yaw, _ = self.scene.agent_states(t)
        batches = [self._static]
        for i, local in enumerate(self._agents):
            batches.append(self._place(local, float(xy[i, 0]), float(xy[i, 1]), float(yaw[i]), owner=i))
        return _concat(batches)


def _concat(batches: list[PartBatch]) -> PartBatch:
    batches = [b for b in batches if len(b)]
    if not batches:
        return PartBatch([], [], np.zeros((0, 3), np.float32), np.zeros(0, np.int64), np.zeros((0, 3)),
                         np.zeros((0, 3)), np.zeros(0), np.zeros(0))
    return PartBatch(
        verts=[v for b in batches for v in b.verts],
        kinds=[k for b in batches for k in b.kinds],
        colors=np.concatenate([b.colors for b in batches]),
        owner=np.concatenate([b.owner for b in batches]),
        centers=np.concatenate([b.centers for b in batches]),
        half=np.concatenate([b.half for b in batches]),
        yaw=np.concatenate([b.yaw for b in batches]),
        reflectivity=np.concatenate([b.reflectivity for b in batches]),
    )
