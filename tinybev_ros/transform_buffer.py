"""A transform tree as tf2 keeps it, without ROS: static and timed edges, chains of any length, interpolation.

Every frame has at most one parent (REP 103/105 trees: `map -> odom -> base_link -> camera_link ->
camera_optical_frame`). A static edge holds one transform for all time (/tf_static; an edge also sent on /tf
stays static and takes the newest value, as tf2's static cache does: a driver that sends its camera mount on both
must not turn it into a history a frame's stamp can fall outside of); a dynamic edge holds a
time-ordered history (/tf) of `cache_s` seconds, looked up by linear interpolation of the translation and
spherical interpolation of the rotation between the two bracketing stamps, and never extrapolated (as tf2: a
stamp outside the history is an error, within `tolerance_ns` of an end it takes that end; a stamp more than a
second before the newest restarts the history, as a bag loop needs). `lookup(target,
source, t)` composes the chain from `source` up to the common ancestor and down to `target`, and returns the
transform that maps points in `source` into `target` (tf2's `lookup_transform(target, source, t)`).
A lock guards every access, so the executor's /tf callbacks and the inference thread can share one buffer.
"""

from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from tinybev_ros.geometry import Transform, quat_to_matrix

JUMP_BACK_NS = 1_000_000_000  # a stamp this far before an edge's newest one restarts its history (bag loop)


class TransformError(LookupError):
    """`cannot transform A to B at t: why`."""


def slerp(q0: np.ndarray, q1: np.ndarray, w: float) -> np.ndarray:
    """Spherical interpolation of unit quaternions (w, x, y, z) by weight `w` in [0, 1], along the short arc."""
    q0, q1 = np.asarray(q0, float), np.asarray(q1, float)
    dot = float(np.dot(q0, q1))
    if dot < 0.0:
        q1, dot = -q1, -dot
    if dot > 0.9995:  # nearly equal: linear is exact enough and stable
        q = q0 + w * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = np.arccos(dot)
    return (np.sin((1 - w) * theta) * q0 + np.sin(w * theta) * q1) / np.sin(theta)


def interpolate(a: Transform, b: Transform, w: float) -> Transform:
    rotation = quat_to_matrix(slerp(a.quat_wxyz, b.quat_wxyz, w))
    return Transform(rotation=rotation, translation=(1 - w) * a.translation + w * b.translation)


@dataclass
class _Edge:
    parent: str
    static: Transform | None = None
    stamps: list[int] = field(default_factory=list)
    transforms: list[Transform] = field(default_factory=list)


class TransformBuffer:
    def __init__(self, cache_s: float = 10.0, tolerance_ns: int = 5_000_000) -> None:
        self.cache_ns = int(cache_s * 1e9)
        self.tolerance_ns = tolerance_ns
        self._edges: dict[str, _Edge] = {}  # child -> its edge to the parent
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # notified by every set_transform (wait_for)

    def set_transform(self, parent: str, child: str, stamp_ns: int, transform: Transform,
                      static: bool = False) -> None:
        """Add `parent -> child` (the child's pose in the parent frame). A new parent replaces the old edge."""
        if not parent or not child or parent == child:
            raise TransformError(f"cannot store a transform {parent!r} -> {child!r}: frames must differ and be named")
        with self._changed:
            self._changed.notify_all()
            edge = self._edges.get(child)
            if edge is None or edge.parent != parent or (static and edge.static is None):
                edge = self._edges[child] = _Edge(parent)
            if edge.static is not None or static:  # once static, a /tf sample of the edge updates it (as tf2's)
                edge.static = transform
                return
            if edge.stamps and stamp_ns < edge.stamps[-1] - JUMP_BACK_NS:  # a bag loop: start this history anew
                edge.stamps.clear()
                edge.transforms.clear()
            at = bisect.bisect_left(edge.stamps, stamp_ns)
            if at < len(edge.stamps) and edge.stamps[at] == stamp_ns:
                edge.transforms[at] = transform
            else:
                edge.stamps.insert(at, stamp_ns)
                edge.transforms.insert(at, transform)
            if edge.stamps[-1] - edge.stamps[0] > self.cache_ns:  # drop what is older than the cache
                keep = bisect.bisect_left(edge.stamps, edge.stamps[-1] - self.cache_ns)
                del edge.stamps[:keep], edge.transforms[:keep]

    def lookup(self, target: str, source: str, stamp_ns: int | None = None) -> Transform:
        """The transform mapping points in `source` to `target` at `stamp_ns` (None: the newest of each edge)."""
        with self._lock:
            return self._lookup(target, source, stamp_ns)

    def wait_for(self, target: str, source: str, stamp_ns: int, timeout_s: float) -> bool:
        """Whether `lookup(target, source, stamp_ns)` can answer, waiting up to `timeout_s` for /tf to reach the
        stamp (tf2's lookup timeout: a localisation that lags the cameras); frames that are not connected at all
        are answered at once."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                try:
                    self._lookup(target, source, stamp_ns)
                    return True
                except TransformError:
                    pass
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._connected(target, source):
                    return False
                self._changed.wait(remaining)

    def can_transform(self, target: str, source: str, stamp_ns: int | None = None) -> bool:
        try:
            self.lookup(target, source, stamp_ns)
        except TransformError:
            return False
        return True

    # ------------------------------------------------------------ internals (lock held)
    def _lookup(self, target: str, source: str, stamp_ns: int | None) -> Transform:
        up_source = self._chain(source)
        up_target = self._chain(target)
        common = next((frame for frame, _ in up_source if frame in {f for f, _ in up_target}), None)
        if common is None:
            known = ", ".join(sorted(set(self._edges) | {e.parent for e in self._edges.values()}))
            raise TransformError(f"cannot transform {source} to {target}{_at(stamp_ns)}: the frames are not "
                                 f"connected (known: {known or 'none'})")
        try:
            source_to_common = self._compose(up_source, common, stamp_ns)
            target_to_common = self._compose(up_target, common, stamp_ns)
        except TransformError as exc:
            raise TransformError(f"cannot transform {source} to {target}{_at(stamp_ns)}: {exc}") from None
        return target_to_common.inverse() @ source_to_common

    def _connected(self, target: str, source: str) -> bool:
        try:
            self._lookup(target, source, None)
        except TransformError:
            return False
        return True

    def _chain(self, frame: str) -> list[tuple[str, _Edge | None]]:
        """[(frame, its edge to the parent), (parent, ...), ..., (root, None)]."""
        chain: list[tuple[str, _Edge | None]] = []
        seen = set()
        while frame not in seen:
            seen.add(frame)
            edge = self._edges.get(frame)
            chain.append((frame, edge))
            if edge is None:
                return chain
            frame = edge.parent
        raise TransformError(f"the transform tree has a loop through {frame}")

    def _compose(self, chain: list[tuple[str, _Edge | None]], common: str, stamp_ns: int | None) -> Transform:
        """frame -> common, for the chain's first frame."""
        result = Transform()
        for frame, edge in chain:
            if frame == common:
                return result
            result = self._edge_at(frame, edge, stamp_ns) @ result
        return result

    def _edge_at(self, child: str, edge: _Edge, stamp_ns: int | None) -> Transform:
        if edge.static is not None:
            return edge.static
        stamps = edge.stamps
        if stamp_ns is None:
            return edge.transforms[-1]
        if stamp_ns < stamps[0] - self.tolerance_ns or stamp_ns > stamps[-1] + self.tolerance_ns:
            raise TransformError(f"{edge.parent} -> {child} is known from {stamps[0]} to {stamps[-1]} ns only "
                                 "(no extrapolation)")
        at = bisect.bisect_left(stamps, stamp_ns)
        if at == 0:
            return edge.transforms[0]
        if at == len(stamps):
            return edge.transforms[-1]
        t0, t1 = stamps[at - 1], stamps[at]
        w = (stamp_ns - t0) / (t1 - t0)
        return interpolate(edge.transforms[at - 1], edge.transforms[at], w)


def _at(stamp_ns: int | None) -> str:
    return "" if stamp_ns is None else f" at {stamp_ns} ns"
