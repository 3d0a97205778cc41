"""Multi-object tracking by detection: CenterPoint-style greedy closest-distance association.

Each frame, every live track is moved forward by its velocity (position + velocity * dt), and detections are
paired with tracks of the same class greedily, closest pair first, when the distance is within that class's
gate. Matched tracks take the detection's position and velocity; unmatched detections start new tracks (a new
id); unmatched tracks coast on their velocity and die after `max_age` missed frames. Time running backwards
(a bag replayed in a loop) or a gap longer than `max_gap_s` resets the tracker.

Association runs in a fixed world frame when the caller gives the ego pose (`ego_to_world`, e.g. from /tf or
the nuScenes ego pose), so ego motion does not look like object motion; without it, base_link is treated as
fixed. Positions of the two frames are never compared: a frame without a pose while world tracks live (a late
/tf) leaves its detections untracked (id -1) and the tracks coasting, and the first pose after base_link tracking
starts the tracks afresh. Velocities in `Predictions` are over-ground velocities expressed in base_link axes
(nuScenes convention), so they are rotated, not differentiated, into the world frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from tinybev_ros.geometry import Transform
from tinybev_ros.predictions import Predictions
from tinybev_ros.score_thresholds import SCORE_THRESHOLDS
from tinybev_ros.taxonomy import DETECTION_CLASSES

# Largest distance (m) between a track's predicted position and a detection of the class, per class in
# DETECTION_CLASSES order: about one frame's position error plus velocity error for that kind of agent at 2 Hz.
DEFAULT_GATES_M: tuple[float, ...] = (4.0, 4.0, 5.5, 3.0, 3.0, 1.5, 4.0, 3.0, 1.5, 1.5)


@dataclass
class TrackerConfig:
    gates_m: tuple[float, ...] = DEFAULT_GATES_M  # per class, DETECTION_CLASSES order
    max_age: int = 3  # missed frames a track survives (coasting) before it dies
    score_threshold: float = SCORE_THRESHOLDS.track  # detections below this are not tracked (track id -1)
    max_gap_s: float = 3.0  # a longer gap between frames resets the tracker

    def __post_init__(self) -> None:
        if len(self.gates_m) != len(DETECTION_CLASSES):
            raise ValueError(f"TrackerConfig.gates_m needs {len(DETECTION_CLASSES)} values (one per class in "
                             f"{DETECTION_CLASSES}), got {len(self.gates_m)}")


@dataclass
class _Track:
    track_id: int
    label: int
    position: np.ndarray  # (2,) world xy
    velocity: np.ndarray  # (2,) world m/s
    misses: int = 0


@dataclass
class Tracker:
    """Stateful tracker; call `update` once per frame in time order."""

    config: TrackerConfig = field(default_factory=TrackerConfig)
    _tracks: list[_Track] = field(default_factory=list)
    _last_stamp_ns: int | None = None
    _next_id: int = 0
    _in_world: bool = False  # the live tracks' positions are world (pose given), not base_link, coordinates

    def reset(self) -> None:
        """Forget all tracks; ids keep increasing so an id is never reused."""
        self._tracks = []
        self._last_stamp_ns = None

    @property
    def num_tracks(self) -> int:
        return len(self._tracks)

    def update(self, predictions: Predictions, ego_to_world: Transform | None = None) -> Predictions:
        """A copy of `predictions` with `track_ids` filled (-1 for detections below the score threshold)."""
        cfg = self.config
        if ego_to_world is not None and not self._in_world:
            self.reset()  # base_link tracks cannot be continued in the world frame
        dt = 0.0
        if self._last_stamp_ns is not None:
            dt = (predictions.stamp_ns - self._last_stamp_ns) * 1e-9
            if dt < 0 or dt > cfg.max_gap_s:
                self.reset()
                dt = 0.0
        self._last_stamp_ns = predictions.stamp_ns
        if ego_to_world is None and self._in_world and self._tracks:
            self._coast(dt)
            return replace(predictions, track_ids=np.full(len(predictions), -1, dtype=np.int64))
        self._in_world = ego_to_world is not None

        pose = ego_to_world or Transform()
        n = len(predictions)
        positions = pose.apply(predictions.centers.reshape(n, 3))[:, :2] if n else np.zeros((0, 2))
        velocities = np.zeros((n, 2))
        if n:
            planar = np.concatenate([predictions.velocities.reshape(n, 2), np.zeros((n, 1))], axis=1)
            velocities = (planar @ pose.rotation.T)[:, :2]
        candidates = np.flatnonzero(predictions.scores >= cfg.score_threshold)

        for track in self._tracks:
            track.position = track.position + track.velocity * dt
        pairs = self._associate(positions, predictions.labels, candidates)

        track_ids = np.full(n, -1, dtype=np.int64)
        matched_tracks = set()
        for det, t in pairs:
            track = self._tracks[t]
            track.position, track.velocity, track.misses = positions[det], velocities[det], 0
            track_ids[det] = track.track_id
            matched_tracks.add(t)
        survivors = []
        for t, track in enumerate(self._tracks):
            if t not in matched_tracks:
                track.misses += 1
            if track.misses <= cfg.max_age:
                survivors.append(track)
        self._tracks = survivors
        for det in candidates:
            if track_ids[det] < 0:
                track = _Track(self._next_id, int(predictions.labels[det]), positions[det], velocities[det])
                self._next_id += 1
                self._tracks.append(track)
                track_ids[det] = track.track_id
        return replace(predictions, track_ids=track_ids)

    def _coast(self, dt: float) -> None:
        """A frame whose detections cannot be compared with the tracks: every track moves on and misses it."""
        for track in self._tracks:
            track.position = track.position + track.velocity * dt
            track.misses += 1
        self._tracks = [track for track in self._tracks if track.misses <= self.config.max_age]

    def _associate(self, positions: np.ndarray, labels: np.ndarray, candidates: np.ndarray) -> list[tuple[int, int]]:
        """Greedy closest-first (detection, track) pairs of the same class within the class gate."""
        if len(candidates) == 0 or not self._tracks:
            return []
        track_xy = np.stack([t.position for t in self._tracks])
        track_labels = np.array([t.label for t in self._tracks])
        distances = np.linalg.norm(positions[candidates, None, :] - track_xy[None], axis=-1)
        gates = np.asarray(self.config.gates_m)[labels[candidates]]
        allowed = (labels[candidates, None] == track_labels[None]) & (distances <= gates[:, None])
        rows, cols = np.nonzero(allowed)
        order = np.argsort(distances[rows, cols], kind="stable")
        used_dets, used_tracks, pairs = set(), set(), []
        for k in order:
            det, t = int(candidates[rows[k]]), int(cols[k])
            if det in used_dets or t in used_tracks:
                continue
            used_dets.add(det)
            used_tracks.add(t)
            pairs.append((det, t))
        return pairs
