"""Six-camera approximate-time synchronizer (no ROS types), with a latest-wins policy.

nuScenes cameras fire up to ~45 ms apart, so frames are grouped when all stamps lie within `tolerance_ns`
of each other. Perception wants the freshest complete view, not every view: when a newer complete set
exists, older partial ones are dropped (and counted). Frames older than the last emitted set are late and
dropped. A camera whose own stamps jump backwards by more than `reset_after_ns` (a bag loop, a restarted
driver) resets the state so the node recovers instead of waiting forever for time to catch up. Only a camera's
own stream is compared with itself: each topic arrives in order, but the cameras' callbacks may run seconds of
stream time apart when the node is busy, and taking that lag for a loop threw away every set being formed.

Missing cameras: a camera is silent when its last frame is more than `missing_timeout_ns`, or one and a half of
its own frame periods if that is longer, older than the newest frame seen (a 2 Hz keyframe replay would
otherwise find every other camera silent each time a new set begins to arrive). With `allow_missing=True` sets
are then emitted without it (its entry is `None`), so the model runs with that camera masked (a silent reference
camera hands its role to the first live one); otherwise the synchronizer waits for it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SyncConfig:
    tolerance_ns: int = 60_000_000
    queue_size: int = 4  # frames kept per camera; bounds memory under bursts
    reference_camera: str = "CAM_FRONT"  # its stamp is the stamp of the emitted set
    allow_missing: bool = False
    missing_timeout_ns: int = 300_000_000
    reset_after_ns: int = 500_000_000  # a camera's own stamps going back this far: a loop or a restart


@dataclass
class SyncStats:
    emitted: int = 0
    dropped: int = 0  # superseded by a newer complete set, or pushed out of a full queue
    late: int = 0  # arrived older than the last emitted set
    resets: int = 0  # time jumped backwards
    incomplete: int = 0  # emitted with missing cameras


@dataclass
class FrameSet:
    stamp_ns: int
    frames: dict[str, Any]  # camera -> payload, or None where the camera is missing
    stamps: dict[str, int | None] = field(default_factory=dict)

    @property
    def missing(self) -> list[str]:
        return [name for name, frame in self.frames.items() if frame is None]


class CameraSynchronizer:
    """Feed frames with `add`; each call returns a complete `FrameSet` when one becomes available."""

    def __init__(self, cameras: tuple[str, ...] | list[str], config: SyncConfig | None = None) -> None:
        self.cameras = tuple(cameras)
        self.config = config or SyncConfig()
        if self.config.reference_camera not in self.cameras:
            raise ValueError(f"reference camera {self.config.reference_camera!r} is not one of {self.cameras}")
        self.stats = SyncStats()
        self._queues: dict[str, deque[tuple[int, Any]]] = {c: deque() for c in self.cameras}
        self._last_emitted_ns: int | None = None
        self._newest_ns: int | None = None
        self._first_ns: int | None = None
        self._last_seen: dict[str, int] = {}
        # each camera's last few frame intervals (stream time): its period is their least, so one gap in a stream
        # (an outage, a restarted driver) does not make a camera that then stops look alive for as long again
        self._intervals: dict[str, deque[int]] = {}

    def reset(self) -> None:
        for queue in self._queues.values():
            queue.clear()
        self._last_emitted_ns = None
        self._newest_ns = None
        self._first_ns = None
        self._last_seen.clear()
        self._intervals.clear()

    def add(self, camera: str, stamp_ns: int, payload: Any) -> FrameSet | None:
        if camera not in self._queues:
            raise KeyError(f"unknown camera {camera!r}; expected one of {self.cameras}")
        cfg = self.config
        if stamp_ns < self._last_seen.get(camera, stamp_ns) - cfg.reset_after_ns:
            self.stats.resets += 1
            self.reset()
        # A late frame still shows its camera is alive: without this, a camera whose frames keep arriving just
        # after a set was emitted without it would stay "silent" and be left out of every later set.
        if stamp_ns > self._last_seen.get(camera, stamp_ns):
            self._intervals.setdefault(camera, deque(maxlen=4)).append(stamp_ns - self._last_seen[camera])
        self._last_seen[camera] = max(stamp_ns, self._last_seen.get(camera, stamp_ns))
        if self._last_emitted_ns is not None and stamp_ns <= self._last_emitted_ns:
            self.stats.late += 1
            return None
        queue = self._queues[camera]
        queue.append((stamp_ns, payload))
        if len(queue) > 1 and queue[-2][0] > stamp_ns:  # out-of-order arrival: keep the queue sorted
            ordered = sorted(queue, key=lambda item: item[0])
            queue.clear()
            queue.extend(ordered)
        while len(queue) > cfg.queue_size:
            queue.popleft()
            self.stats.dropped += 1
        self._newest_ns = stamp_ns if self._newest_ns is None else max(self._newest_ns, stamp_ns)
        self._first_ns = stamp_ns if self._first_ns is None else self._first_ns
        return self._match()

    def silent_cameras(self) -> list[str]:
        """Cameras with no frame within `missing_timeout_ns` (or 1.5 of their frame periods) of the newest frame."""
        if self._newest_ns is None:
            return []
        periods = {camera: min(intervals) for camera, intervals in self._intervals.items()}
        rig_period = min(periods.values(), default=0)  # for a camera yet to show its own
        timeout = self.config.missing_timeout_ns
        return [c for c in self.cameras if self._last_seen.get(c, self._first_ns)
                < self._newest_ns - max(timeout, 3 * periods.get(c, rig_period) // 2)]

    def reference_offsets_ns(self) -> dict[str, int | None]:
        """Per camera, how far its nearest waiting frame lies from the newest reference frame (None: no frame).

        When no set forms, the cameras whose offset exceeds the tolerance are the ones out of sync.
        """
        reference = self._queues[self.reference()]
        if not reference:
            return {}
        ref_stamp = reference[-1][0]
        return {camera: min((stamp - ref_stamp for stamp, _ in queue), key=abs) if queue else None
                for camera, queue in self._queues.items()}

    def out_of_sync(self) -> dict[str, int | None]:
        """The cameras that keep the newest reference frame from forming a set, with their offsets."""
        return {camera: offset for camera, offset in self.reference_offsets_ns().items()
                if offset is None or abs(offset) > self.config.tolerance_ns}

    def reference(self) -> str:
        """The camera whose frames anchor a set (and stamp it): the configured one, or, while it is silent and
        missing cameras are allowed, the first live camera, so that losing the front camera masks it like any
        other instead of stopping every output. Only while most cameras are live: after a pause in the stream the
        first camera back makes all others look silent for a moment, and alone it must not anchor a set."""
        return self._reference(self.silent_cameras() if self.config.allow_missing else [])

    def _reference(self, silent: list[str]) -> str:
        cfg = self.config
        if cfg.reference_camera not in silent or 2 * len(silent) >= len(self.cameras):
            return cfg.reference_camera
        return next(c for c in self.cameras if c not in silent)

    def _match(self) -> FrameSet | None:
        cfg = self.config
        silent = self.silent_cameras() if cfg.allow_missing else []
        reference = self._reference(silent)
        required = (set(self.cameras) - set(silent)) | {reference}
        # Try reference frames newest first: latest wins.
        for ref_stamp, _ in reversed(self._queues[reference]):
            chosen: dict[str, tuple[int, Any] | None] = {}
            for camera, queue in self._queues.items():
                best = min(queue, key=lambda item: abs(item[0] - ref_stamp), default=None)
                chosen[camera] = best if best is not None and abs(best[0] - ref_stamp) <= cfg.tolerance_ns else None
            present = [item[0] for item in chosen.values() if item is not None]
            if max(present) - min(present) <= cfg.tolerance_ns and all(chosen[c] is not None for c in required):
                return self._emit(ref_stamp, chosen)
        return None

    def _emit(self, ref_stamp: int, chosen: dict[str, tuple[int, Any] | None]) -> FrameSet:
        used_max = max(item[0] for item in chosen.values() if item is not None)
        for camera, queue in self._queues.items():
            used = chosen[camera]
            while queue and queue[0][0] <= used_max:
                stamp, _ = queue.popleft()
                if used is None or stamp != used[0]:
                    self.stats.dropped += 1
        self._last_emitted_ns = used_max
        self.stats.emitted += 1
        frameset = FrameSet(
            stamp_ns=ref_stamp,
            frames={c: (item[1] if item is not None else None) for c, item in chosen.items()},
            stamps={c: (item[0] if item is not None else None) for c, item in chosen.items()},
        )
        if frameset.missing:
            self.stats.incomplete += 1
        return frameset
