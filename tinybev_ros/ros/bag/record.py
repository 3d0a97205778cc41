"""`tinybev bag record`: write live topics to a rosbag2 bag, a stand-in for `ros2 bag record`.

Subscribes with raw (serialized) callbacks, so messages go to disk byte for byte, each stamped with its receive
time like rosbag2 does. A topic is subscribed as soon as a publisher for it appears (its type is taken from the
graph), with a QoS matching what its publishers offer (rclpy_bridge.recording_qos); the offered QoS is stored in the
metadata so `ros2 bag play` and `tinybev bag play` latch what was latched. Types come from the shared type store
(typestore.py), and unknown interface packages are loaded from their installed .msg files.
The bag is written beside the target and renamed into place when recording stops (SIGINT/SIGTERM, --duration
or --max-messages), so an interrupted recorder never leaves a partial bag at the target path. What is written is
flushed to disk every second, so a killed recorder (SIGKILL, power loss) loses at most the last second: the next
recording of the same target recovers it (recover.py), or `tinybev bag recover` does it by hand. A recorder whose
storage fails (a full disk) stops with one line and leaves what it flushed the same way.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sqlite3
import sys
import time
from collections import Counter
from pathlib import Path

from tinybev_ros.arguments import positive_int

log = logging.getLogger("tinybev.bag.record")
FLUSH_PERIOD_S = 1.0  # a killed recorder loses at most this much (rosbag2 flushes its cache periodically too)
STORAGE_ERRORS = (OSError, sqlite3.Error)  # the disk filled up, or the storage file became unwritable


class RecordingFailed(RuntimeError):
    """The storage stopped taking messages; what was flushed is kept unpublished, for `tinybev bag recover`."""


class BagRecorder:
    """Subscribes to the requested topics as they appear and writes every message to an open rosbags Writer."""

    def __init__(self, node, writer, topics: list[str], max_messages: int | None = None) -> None:
        from tinybev_ros.ros.bag.typestore import build_typestore

        # Kilted plus whatever interface package a topic turns out to need (ensure_msgtype in discover()).
        self.node, self.writer, self.store = node, writer, build_typestore(extra_packages=())
        self.pending = list(dict.fromkeys(topics))
        self.connections: dict[str, object] = {}
        self.subscriptions = []
        self.counts: Counter[str] = Counter()
        self.max_messages = max_messages

    @property
    def done(self) -> bool:
        return self.max_messages is not None and sum(self.counts.values()) >= self.max_messages

    def discover(self) -> None:
        """Subscribe to every pending topic that now has a publisher."""
        if not self.pending:
            return
        from tinybev_ros.ros.bag.rclpy_bridge import message_class, offered_qos, recording_qos
        from tinybev_ros.ros.bag.typestore import ensure_msgtype

        for topic in list(self.pending):
            # Publishers only: a topic that merely has subscribers tells neither its type nor the QoS to match.
            publishers = self.node.get_publishers_info_by_topic(topic)
            if not publishers:
                continue
            msgtypes = sorted({info.topic_type for info in publishers})
            if len(msgtypes) > 1:
                raise ValueError(f"topic {topic} is published with several types: {', '.join(msgtypes)}")
            msgtype = msgtypes[0]
            ensure_msgtype(self.store, msgtype)
            profiles = [info.qos_profile for info in publishers]
            qos = recording_qos(profiles)
            self.connections[topic] = self.writer.add_connection(
                topic, msgtype, typestore=self.store, offered_qos_profiles=[offered_qos(p) for p in profiles])
            self.subscriptions.append(self.node.create_subscription(
                message_class(msgtype), topic, lambda data, t=topic: self._write(t, data), qos, raw=True))
            self.pending.remove(topic)
            log.info("recording %s (%s)", topic, msgtype)

    def _write(self, topic: str, data: bytes) -> None:
        if self.done:
            return
        self.writer.write(self.connections[topic], time.time_ns(), data)
        self.counts[topic] += 1


def absolute_topic(topic: str) -> str:
    """`chatter` -> `/chatter` (the graph lists absolute names); a name ROS cannot have is a ValueError."""
    from tinybev_ros.ros.topic_name import topic_name_problem

    name = topic if topic.startswith("/") else "/" + topic
    if (reason := topic_name_problem(name, absolute=True)) is not None:
        raise ValueError(f"topic {topic!r} is not a valid ROS name: {reason}")
    return name


def record(path: str | Path, topics: list[str], storage: str = "sqlite3", force: bool = False,
           duration_s: float | None = None, max_messages: int | None = None) -> dict[str, int]:
    """Record until SIGINT/SIGTERM, `duration_s` or `max_messages`; returns messages per topic."""
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from tinybev_ros.ros.bag.atomic_writer import AtomicBagWriter, check_sqlite_path, flush
    from tinybev_ros.ros.bag.recover import recover_stale_recording
    from tinybev_ros.ros.dds import use_large_message_profile

    if not topics:
        raise ValueError("no topics to record (give --topics)")
    if duration_s is not None and not 0 < duration_s < float("inf"):
        raise ValueError(f"--duration must be a positive number of seconds, got {duration_s}")
    if max_messages is not None and max_messages < 1:
        raise ValueError(f"--max-messages must be at least 1, got {max_messages}")
    check_sqlite_path(Path(path), storage)
    topics = [absolute_topic(topic) for topic in topics]  # before the bag exists: a bad name leaves nothing
    stop = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    atomic = AtomicBagWriter(path, storage, force, on_stale=recover_stale_recording, keep_failed=True)
    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    use_large_message_profile()  # before the first DDS participant of this process
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("tinybev_bag_recorder")
    failure: Exception | None = None
    try:
        with atomic as writer:
            recorder = BagRecorder(node, writer, topics, max_messages)
            log.info("recording to %s: %s", path, " ".join(topics))
            deadline = time.monotonic() + duration_s if duration_s is not None else None
            last_discovery = last_flush = 0.0
            try:
                while not stop and not recorder.done and (deadline is None or time.monotonic() < deadline):
                    if time.monotonic() - last_discovery > 0.1:
                        recorder.discover()
                        last_discovery = time.monotonic()
                    if time.monotonic() - last_flush > FLUSH_PERIOD_S:
                        flush(writer)
                        last_flush = time.monotonic()
                    rclpy.spin_once(node, timeout_sec=0.05)
            except Exception as exc:  # what was recorded is closed and kept, then the error is reported
                failure = exc
            for sub in recorder.subscriptions:  # nothing more arrives while the bag is closed
                node.destroy_subscription(sub)
            if isinstance(failure, STORAGE_ERRORS):  # raised in here: closing would publish metadata counting
                raise failure                        # messages the storage never committed; the writer keeps them
        if failure is not None:
            raise failure
        counts = dict(recorder.counts)
        log.info("wrote %s: %d messages (%s)", path, sum(counts.values()),
                 ", ".join(f"{t} {n}" for t, n in sorted(counts.items())) or "none")
        if recorder.pending:
            log.warning("never saw a publisher for: %s", " ".join(recorder.pending))
        return counts
    except STORAGE_ERRORS as exc:
        staging = atomic.staging
        if atomic.writer is None or staging is None or not staging.exists():  # the bag could not even be opened
            raise RecordingFailed(f"cannot write {path} ({exc})") from exc
        raise RecordingFailed(f"cannot write {path} ({exc}); recording stopped. Every message flushed before it (all "
                              f"but the last second at most) is kept in {staging}: free space, then `tinybev bag "
                              f"recover {staging} --out {path}` makes it a bag (delete {staging.name} after); the "
                              f"next recording to {path} recovers it by itself, as {path}.recovered-{os.getpid()}"
                              ) from exc
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        node.destroy_node()
        rclpy.try_shutdown()


def configure(parser: argparse.ArgumentParser) -> None:
    from tinybev_ros.ros.bag.atomic_writer import STORAGES

    parser.add_argument("path", type=Path, help="bag directory to create")
    parser.add_argument("--topics", nargs="+", required=True, help="topics to record")
    parser.add_argument("--storage", choices=sorted(STORAGES), default="sqlite3", help="rosbag2 storage plugin")
    parser.add_argument("--force", action="store_true", help="overwrite an existing bag")
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument("--max-messages", type=positive_int, help="stop after this many messages")


def run(args: argparse.Namespace) -> int:
    from tinybev_ros.ros.bag.atomic_writer import BagTargetError
    from tinybev_ros.ros.bag.typestore import MissingInterfaceError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        record(args.path, args.topics, storage=args.storage, force=args.force, duration_s=args.duration,
               max_messages=args.max_messages)
    except (BagTargetError, ValueError, MissingInterfaceError, RecordingFailed) as exc:
        print(f"bag record: error: {exc}", file=sys.stderr)
        return 2
    return 0
