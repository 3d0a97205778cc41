"""`tinybev bag play`: publish a rosbag2 bag's messages on their topics with their recorded timing.

A stand-in for `ros2 bag play` where rosbag2 is not installed: reads sqlite3 and MCAP bags with `rosbags` and
publishes the stored CDR bytes unchanged through rclpy (no decode/encode), spaced by the bag's receive times
divided by `--rate`. QoS per topic follows the bag's offered profiles (see rclpy_bridge.py). `--clock` publishes
/clock from the playback position (like `ros2 bag play --clock`), replacing a /clock stored in the bag.
`--wait-for-subscribers N` holds playback until every played topic has N subscriptions, so a recorder
started alongside gets the first message (discovery is waited for, never slept over). Discovery is
asymmetric: our writer may match a reader before that reader matched our writer, and a first message sent in
between arrives late (on the next heartbeat). A subscriber that needs exact timing from the first message
completes the handshake with `--start-paused`: it waits until it sees our publishers, then sends SIGUSR1
(the signal counterpart of rosbag2's resume service).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path

log = logging.getLogger("tinybev.bag.play")


class PlaybackInterrupted(Exception):
    pass


class BagDamaged(ValueError):
    """The storage file cannot be read to its end (what came before was published)."""


def open_reader(path: str | Path):
    """rosbags Reader of a bag directory, or of the bag containing a .db3/.mcap file given directly; a storage
    file without a bag around it (copied on its own) is read by itself, as `ros2 bag play file.mcap` does."""
    from rosbags.rosbag2 import Reader

    from tinybev_ros.ros.bag.atomic_writer import check_sqlite_path

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no bag at {path}")
    if path.is_file() and (path.parent / "metadata.yaml").is_file():
        path = path.parent
    elif path.is_file() and path.suffix in (".db3", ".mcap"):
        if path.suffix == ".db3":
            check_sqlite_path(path)
        return Reader(path)
    if not (path / "metadata.yaml").is_file():
        raise FileNotFoundError(f"{path} is not a rosbag2 bag: no metadata.yaml {'beside' if path.is_file() else 'in'} "
                                "it (give the bag's folder, or its .db3/.mcap file; `tinybev bag recover` rebuilds "
                                "the metadata of a killed recording)")
    if any(path.glob("*.db3")):
        check_sqlite_path(path)
    return Reader(path)


class BagPlayer:
    """Publishes one bag through one rclpy node."""

    def __init__(self, node, reader, topics: list[str] | None, rate: float, clock_hz: float | None,
                 control: dict[str, bool]) -> None:
        from rclpy.qos import QoSProfile

        from tinybev_ros.ros.bag.rclpy_bridge import message_class, playback_qos
        from tinybev_ros.ros.bag.typestore import MissingInterfaceError

        if not 0 < rate < float("inf"):
            raise ValueError(f"--rate must be a positive number, got {rate}")
        if clock_hz is not None and not 0 < clock_hz < float("inf"):
            raise ValueError(f"--clock must be a positive rate in Hz, got {clock_hz}")
        self.node, self.reader, self.rate, self.clock_hz = node, reader, rate, clock_hz
        available = {c.topic for c in reader.connections}
        if topics:
            unknown = sorted(set(topics) - available)
            if unknown:
                raise ValueError(f"topics not in the bag: {', '.join(unknown)} "
                                 f"(bag has: {', '.join(sorted(available))})")
        wanted = set(topics or available)
        if clock_hz:
            wanted.discard("/clock")
        self.connections = [c for c in reader.connections if c.topic in wanted]
        self.publishers = {}
        by_topic = {}
        for conn in self.connections:
            if conn.topic in by_topic and by_topic[conn.topic] != conn.msgtype:
                raise ValueError(f"topic {conn.topic} has two types in the bag: {by_topic[conn.topic]}, {conn.msgtype}")
            by_topic[conn.topic] = conn.msgtype
        for topic, msgtype in sorted(by_topic.items()):
            try:
                message_type = message_class(msgtype)
            except MissingInterfaceError as exc:
                if topics:  # asked for by name: playing without it would not be what was asked
                    raise
                # ros2 bag play does the same: one vendor type missing must not keep the cameras from playing
                log.warning("topic %s not played: %s", topic, exc)
                self.connections = [c for c in self.connections if c.topic != topic]
                continue
            conns = [c for c in self.connections if c.topic == topic]
            offered = [q for c in conns for q in c.ext.offered_qos_profiles]
            qos = playback_qos(topic, offered, sum(c.msgcount for c in conns))
            self.publishers[topic] = node.create_publisher(message_type, topic, qos)
        self.clock_publisher = None
        if clock_hz:
            from rosgraph_msgs.msg import Clock

            self.clock_publisher = node.create_publisher(Clock, "/clock", QoSProfile(depth=1))
        self.control = control  # "stop" and "paused" flags, set from signal handlers
        self._next_clock = 0.0

    def wait_for_subscribers(self, count: int, timeout_s: float) -> None:
        """Block until every played topic has `count` matched subscriptions (graph events, not a fixed sleep)."""
        import rclpy

        deadline = time.monotonic() + timeout_s
        while True:
            missing = [t for t, p in self.publishers.items() if p.get_subscription_count() < count]
            if not missing:
                return
            if self.control["stop"]:
                raise PlaybackInterrupted
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {count} subscribers after {timeout_s:.0f} s on: {', '.join(missing)}")
            rclpy.spin_once(self.node, timeout_sec=0.02)

    def wait_for_resume(self) -> None:
        import rclpy

        while self.control["paused"]:
            if self.control["stop"]:
                raise PlaybackInterrupted
            rclpy.spin_once(self.node, timeout_sec=0.02)

    def play_once(self) -> int:
        """One pass over the bag; returns the number of messages published."""
        published = 0
        listed = sum(c.msgcount for c in self.connections)
        bag_start = None
        wall_start = time.monotonic()
        self._next_clock = wall_start
        messages = iter(self.reader.messages(connections=self.connections))
        while True:
            try:
                conn, stamp, raw = next(messages)
            except StopIteration:
                break
            except Exception as exc:  # rosbags' parsers raise whatever a damaged file's bytes provoke
                raise BagDamaged(f"{self.reader.path} is damaged: reading failed after {published} of the {listed} "
                                 f"messages metadata.yaml lists ({type(exc).__name__}: {exc})") from exc
            if bag_start is None:
                bag_start = stamp
            self._wait_until(wall_start + (stamp - bag_start) / 1e9 / self.rate, wall_start, bag_start, stamp)
            self.publishers[conn.topic].publish(raw if isinstance(raw, bytes) else bytes(raw))
            published += 1
        if published != listed:
            log.warning("published %d of the %d messages metadata.yaml lists: %s is damaged or truncated",
                        published, listed, self.reader.path)
        return published

    def _wait_until(self, due: float, wall_start: float, bag_start: int, stamp: int) -> None:
        """Sleep until `due`, publishing /clock at its rate on the way when asked to.

        The clock never passes `stamp`, the next message's time, even when the process wakes up late.
        """
        while True:
            if self.control["stop"]:
                raise PlaybackInterrupted
            now = time.monotonic()
            if self.clock_publisher is not None and now >= self._next_clock:
                self._publish_clock(min(stamp, bag_start + int((now - wall_start) * self.rate * 1e9)))
                self._next_clock = now + 1.0 / self.clock_hz
            if now >= due:
                return
            wake = min(due, self._next_clock) if self.clock_publisher is not None else due
            time.sleep(min(wake - now, 0.1))

    def _publish_clock(self, stamp_ns: int) -> None:
        from rosgraph_msgs.msg import Clock

        msg = Clock()
        msg.clock.sec, msg.clock.nanosec = divmod(stamp_ns, 1_000_000_000)
        self.clock_publisher.publish(msg)

    def flush(self, timeout_s: float = 10.0, linger_s: float = 1.0) -> None:
        """Wait until reliable subscribers acknowledged everything, then keep the writers `linger_s` longer: a
        subscriber whose writer vanishes may drop samples its executor has not taken yet (a CI replay once lost
        the last images of five cameras as the player exited)."""
        from rclpy.duration import Duration

        deadline = time.monotonic() + timeout_s
        late = [topic for topic, publisher in self.publishers.items()
                if not publisher.wait_for_all_acked(Duration(seconds=max(deadline - time.monotonic(), 0.01)))]
        if late:
            log.warning("not acknowledged by every subscriber within %.0f s: %s", timeout_s, ", ".join(late))
        time.sleep(linger_s)


def play(path: str | Path, rate: float = 1.0, loop: bool = False, clock_hz: float | None = None,
         topics: list[str] | None = None, wait_for_subscribers: int = 0, wait_timeout_s: float = 60.0,
         start_paused: bool = False) -> int:
    """Play a bag; returns the number of messages published. SIGINT/SIGTERM stop it, SIGUSR1 resumes it."""
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from tinybev_ros.ros.dds import use_large_message_profile

    reader = open_reader(path)
    reader.open()
    control = {"stop": False, "paused": start_paused}

    def request_stop(signum: int, frame: object) -> None:
        control["stop"] = True

    def resume(signum: int, frame: object) -> None:
        control["paused"] = False

    # Installed before any publisher exists: whoever sees our publishers may already signal us.
    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, resume)
    use_large_message_profile()  # before the first DDS participant of this process
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("tinybev_bag_player")
    published = 0
    try:
        player = BagPlayer(node, reader, topics, rate, clock_hz, control)
        if wait_for_subscribers:
            player.wait_for_subscribers(wait_for_subscribers, wait_timeout_s)
        if start_paused:
            log.info("paused; send SIGUSR1 (kill -USR1 %d) to start", os.getpid())
            player.wait_for_resume()
        duration = (reader.end_time - reader.start_time) / 1e9
        log.info("playing %s: %d topics, %.2f s at rate %g%s", path, len(player.publishers), duration, rate,
                 ", looping" if loop else "")
        started = time.monotonic()
        while True:
            sent = player.play_once()
            published += sent
            if not loop or not sent:  # a loop over nothing would spin without ever looking at a stop request
                break
        player.flush()
        log.info("published %d messages in %.2f s", published, time.monotonic() - started)
    except PlaybackInterrupted:
        log.info("stopped after %d messages", published)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        node.destroy_node()
        rclpy.try_shutdown()
        reader.close()
    return published


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, help="bag directory (or its .db3/.mcap file)")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor")
    parser.add_argument("--loop", action="store_true", help="play again from the start until interrupted")
    parser.add_argument("--clock", nargs="?", type=float, const=40.0, default=None, metavar="HZ",
                        help="publish /clock at HZ (default 40) from the playback position")
    parser.add_argument("--topics", nargs="+", help="play only these topics")
    parser.add_argument("--wait-for-subscribers", type=int, default=0, metavar="N",
                        help="start only when every played topic has N subscriptions")
    parser.add_argument("--wait-timeout", type=float, default=60.0, help="seconds to wait for those subscribers")
    parser.add_argument("--start-paused", action="store_true",
                        help="wait for SIGUSR1 before playing (a handshake for subscribers that must see us first)")


def run(args: argparse.Namespace) -> int:
    from rosbags.rosbag2 import ReaderError

    from tinybev_ros.ros.bag.typestore import MissingInterfaceError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        play(args.path, rate=args.rate, loop=args.loop, clock_hz=args.clock, topics=args.topics,
             wait_for_subscribers=args.wait_for_subscribers, wait_timeout_s=args.wait_timeout,
             start_paused=args.start_paused)
    except (FileNotFoundError, ReaderError, ValueError, TimeoutError, MissingInterfaceError) as exc:
        print(f"bag play: error: {exc}", file=sys.stderr)
        return 2
    return 0
