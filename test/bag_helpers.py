"""Shared by the bag tests: run our bag commands as real processes, subscribe with a plain rclpy node."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def tinybev(*args: str, **kwargs) -> subprocess.Popen:
    """Start `tinybev ...` (same interpreter, so the same venv) as a separate process."""
    return subprocess.Popen([sys.executable, "-m", "tinybev_ros.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=REPO, **kwargs)


def read_bag(path: Path) -> list[tuple[str, str, int, bytes]]:
    """(topic, msgtype, bag timestamp, raw CDR) of every message, in bag order."""
    from rosbags.rosbag2 import Reader

    with Reader(path) as reader:
        return [(c.topic, c.msgtype, t, bytes(raw)) for c, t, raw in reader.messages()]


def canonical(store, raw: bytes, msgtype: str) -> bytes:
    """CDR re-encoded by rosbags: equal for equal messages whatever padding the middleware added."""
    return bytes(store.serialize_cdr(store.deserialize_cdr(raw, msgtype), msgtype))


@dataclass
class Listener:
    """A plain rclpy subscriber on every topic of a bag, logging (topic, raw bytes, monotonic receive time)."""

    topics: dict[str, str]  # topic -> msgtype
    received: list[tuple[str, bytes, float]] = field(default_factory=list)

    def __enter__(self) -> Listener:
        import rclpy
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

        from tinybev_ros.ros.bag.rclpy_bridge import message_class

        rclpy.init()
        self.node = rclpy.create_node(f"bag_test_listener_{time.monotonic_ns()}")
        for topic, msgtype in self.topics.items():
            durability = (DurabilityPolicy.TRANSIENT_LOCAL if topic in ("/tf_static", "/map")
                          else DurabilityPolicy.VOLATILE)
            qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE, durability=durability)
            self.node.create_subscription(message_class(msgtype), topic,
                                          lambda raw, t=topic: self.received.append((t, raw, time.monotonic())),
                                          qos, raw=True)
        return self

    def wait_for_publishers(self, process: subprocess.Popen, timeout_s: float = 60.0) -> None:
        """Spin until this node has discovered a publisher on every topic (our side of the handshake)."""
        import rclpy

        deadline = time.monotonic() + timeout_s
        while any(self.node.count_publishers(t) < 1 for t in self.topics):
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, "publishers not discovered"
            rclpy.spin_once(self.node, timeout_sec=0.02)

    def spin_until(self, count: int, process: subprocess.Popen, timeout_s: float) -> None:
        """Spin until `count` messages arrived; stop early if the player died."""
        import rclpy

        deadline = time.monotonic() + timeout_s
        while len(self.received) < count and time.monotonic() < deadline:
            rclpy.spin_once(self.node, timeout_sec=0.02)
            if process.poll() not in (None, 0):
                break
        # A finished player has flushed (wait_for_all_acked): whatever is still queued is taken now.
        end = time.monotonic() + 0.5
        while len(self.received) < count and time.monotonic() < end:
            rclpy.spin_once(self.node, timeout_sec=0.02)

    def __exit__(self, *exc) -> None:
        import rclpy

        self.node.destroy_node()
        rclpy.shutdown()
