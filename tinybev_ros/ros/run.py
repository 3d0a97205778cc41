"""`tinybev run`: the launch file's job where `ros2 launch` is absent.

Starts `tinybev_node` with the same params file the launch file uses; with `--bag` it also replays the
bag (`tinybev bag play --clock`, node on sim time) once the node subscribes to every camera, optionally
records the outputs (`--record`), and ends when the bag is done and the node has drained its last frame.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from tinybev_ros.errors import DatasetError
from tinybev_ros.paths import share_file
from tinybev_ros.ros.bag.atomic_writer import BagTargetError, check_sqlite_path, check_target, is_bag
from tinybev_ros.ros.child_process import spawn
from tinybev_ros.ros.dds import use_large_message_profile
from tinybev_ros.ros.interface import NAMESPACE, image_topic, input_topic, output_topic, remap_arguments
from tinybev_ros.ros.interface import OUTPUT_TOPICS as NODE_OUTPUTS
from tinybev_ros.ros.node_config import PerceptionNodeConfig
from tinybev_ros.ros.params_file import NODE_NAME, node_inputs, sections_for_other_nodes

OUTPUT_TOPICS = (*(output_topic(name) for name in NODE_OUTPUTS), "/diagnostics")
RECEIVE_GRACE_S = 10.0  # after the player exits, for the node to take the bag's last images
PLAYER_SETTLE_S = 1.0  # after the player's writers are visible, before it is resumed (see run_pipeline)


def output_topics(checkpoint: str) -> list[str]:
    """Every topic the node publishes for this checkpoint (future occupancy steps come from its config)."""
    import yaml
    from safetensors import safe_open

    from tinybev_ros.paths import default_checkpoint

    with safe_open(str(checkpoint or default_checkpoint()), "pt") as handle:
        frames = int(yaml.safe_load(handle.metadata()["config"]).get("occupancy_frames", 1))
    return [*OUTPUT_TOPICS, *(output_topic(f"occupancy/future_{k}") for k in range(1, frames))]


def node_command(params: Path, checkpoint: str, device: str | None, sim_time: bool, overrides: list[str]) -> list[str]:
    """The node on the params file: only what the run was told (a device, a checkpoint, `-p`) overrides it, and
    sim time when a bag is replayed (the player publishes /clock)."""
    cmd = [sys.executable, "-m", "tinybev_ros.ros.node_main", "--ros-args", "--params-file", str(params),
           "-r", f"__ns:={NAMESPACE}", *remap_arguments(node_inputs(params))]
    if sim_time:
        cmd += ["-p", "use_sim_time:=true"]
    if device:
        cmd += ["-p", f"device:={device}"]
    if checkpoint:
        cmd += ["-p", f"checkpoint:={checkpoint}"]
    for override in overrides:
        cmd += ["-p", override]
    return cmd


def tinybev_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "tinybev_ros.cli", *args]


class GraphWatcher:
    """A small rclpy node of our own to wait on the ROS graph and to see outputs arrive."""

    def __init__(self) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from rclpy.signals import SignalHandlerOptions
        from vision_msgs.msg import Detection3DArray

        self.rclpy = rclpy
        # No rclpy signal handlers: a Ctrl-C is Python's KeyboardInterrupt wherever it lands (rclpy's own handler
        # shuts the context down under a spin_once, which then raised its shutdown error instead of exiting 130).
        rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node("tinybev_run_watcher")
        self.last_output = time.monotonic()
        self.outputs = 0
        self.node.create_subscription(Detection3DArray, "/tinybev/detections", self._on_output,
                                      QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        self.node_diagnostics: dict[str, str] = {}  # the latest values tinybev_node published on /diagnostics
        self.diagnostics_at = 0.0  # when they came (monotonic)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics,
                                      QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))

    def _on_output(self, msg) -> None:
        self.outputs += 1
        self.last_output = time.monotonic()

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith("tinybev_node"):
                self.node_diagnostics = {kv.key: kv.value for kv in status.values}
                self.diagnostics_at = time.monotonic()

    def spin_until(self, condition, timeout_s: float, what: str, processes: list[subprocess.Popen]) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            for process in processes:
                if process.poll() is not None:
                    raise ChildExited(f"{child_name(process)} exited with {process.returncode} while {what}",
                                      process.returncode)
            if time.monotonic() > deadline:
                raise RunTimeout(f"timed out after {timeout_s:.0f} s {what}")
            self.rclpy.spin_once(self.node, timeout_sec=0.05)

    def images_received(self) -> dict[str, int]:
        """Images of each camera the node has taken, from its /diagnostics ("CAM_FRONT:16 CAM_BACK:16 ...")."""
        items = self.node_diagnostics.get("images_received", "").split()
        return {camera: int(count) for camera, count in (item.rsplit(":", 1) for item in items)}

    def subscribed(self, topics: list[str]) -> bool:
        return all(self.node.count_subscribers(t) > 0 for t in topics)

    def close(self) -> None:
        self.node.destroy_node()
        self.rclpy.try_shutdown()


def stop(process: subprocess.Popen | None, timeout_s: float = 20.0) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class RunInputError(DatasetError):
    """A bag, rate or record target that cannot be used; found before any process starts."""


class ChildExited(RuntimeError):
    """The node, player or recorder ended before its part was done (it has said why on its own stderr)."""

    def __init__(self, message: str, returncode: int) -> None:
        super().__init__(message)
        self.returncode = returncode


class RunTimeout(TimeoutError):
    """The ROS graph did not reach a state the run waits for."""


def child_name(process: subprocess.Popen) -> str:
    """`tinybev_node`, `bag play`, `bag record`: what a child is, from its command line."""
    args = [str(a) for a in process.args]
    return "tinybev_node" if "tinybev_ros.ros.node_main" in args else " ".join(args[3:5])


def check_inputs(bag: Path | None, record: Path | None, force: bool, rate: float = 1.0) -> None:
    """The bag must be a bag; the recording must not replace anything but a bag (with force), least of all the input."""
    if bag is not None and not is_bag(bag):
        raise RunInputError(f"{bag} is not a rosbag2 bag (no such directory or no metadata.yaml in it)")
    if not 0 < rate < float("inf"):
        raise RunInputError(f"--rate must be a positive number, got {rate}")
    if record is None:
        return
    if bag is None:  # it would record nothing: the recorder is started with the replay
        raise RunInputError(f"--record {record} records a replay and needs --bag; to record a live run, run "
                            f"`tinybev bag record {record} --topics ...` (or `ros2 bag record`) beside it")
    played, recorded = bag.resolve(), record.resolve()
    if recorded == played or played in recorded.parents or recorded in played.parents:
        raise RunInputError(f"--record {record} would overwrite the bag being played ({bag}); record elsewhere")
    check_sqlite_path(record)
    check_target(record.absolute(), force)


def bag_message_counts(bag: Path) -> Counter[str]:
    """Messages per topic of a bag (its metadata: nothing is read but the index)."""
    from rosbags.rosbag2 import ReaderError

    from tinybev_ros.ros.bag.play import open_reader

    try:
        with open_reader(bag) as reader:
            held: Counter[str] = Counter()
            for connection in reader.connections:
                held[connection.topic] += connection.msgcount
    except ReaderError as exc:
        raise RunInputError(f"{bag} cannot be read as a rosbag2 bag: {str(exc).splitlines()[0]}") from None
    return held


def bag_camera_topics(bag: Path, config: PerceptionNodeConfig, held: Counter[str],
                      root: str = "/") -> tuple[list[str], bool, list[int]]:
    """The image topic of every camera in `bag`, whose messages per topic are `held`, whether they are raw
    (`bag convert --raw-images`) and how many images each holds: the node is told to read what the bag holds, and
    the run waits for those subscriptions and, at the end, for those images. The topics are those the node's
    cameras and topic patterns (`config`, as the params file sets them) make under `root`; a pattern only the
    running node resolves (`~`, `{ns}`) is taken as the default naming."""
    def topics(raw: bool) -> list[str]:
        parameter = "raw_topic" if raw else "compressed_topic"
        return [input_topic(config, parameter, camera, root) or image_topic(camera, raw) for camera in config.cameras]

    compressed, raw = topics(False), topics(True)
    for found, is_raw in ((compressed, False), (raw, True)):
        if all(topic in held for topic in found):
            return found, is_raw, [held[topic] for topic in found]
    missing = [camera for camera, *either in zip(config.cameras, compressed, raw, strict=True)
               if not set(either) & held.keys()]
    raise RunInputError(f"{bag} has no images of camera(s) {', '.join(missing)} (the node needs all of "
                        f"{', '.join(config.cameras)} on {compressed[0]} or {raw[0]} and alike)")


def check_params_names_node(params: Path) -> None:
    """A params file whose sections all name other nodes would leave the node on its defaults without a word."""
    others = sections_for_other_nodes(params)
    if others:
        raise RunInputError(f"{params} sets parameters for {', '.join(others)}, none of which is the node, "
                            f"{NODE_NAME} (rcl reads a key without a leading slash from the root: write "
                            "/**/tinybev_node to reach it wherever it runs)")


def run_pipeline(bag: Path | None, params: Path, checkpoint: str = "", device: str | None = None, rate: float = 1.0,
                 record: Path | None = None, overrides: list[str] | None = None, drain_s: float = 3.0,
                 startup_timeout_s: float = 180.0, force: bool = False) -> int:
    """Node (+ bag replay + recorder); returns the number of detection frames the node published, or without a
    bag the node's exit status.

    Every child dies with this process (child_process.spawn); `force` lets the recording replace an older bag.
    """
    check_inputs(bag, record, force, rate)
    check_params_names_node(params)
    inputs = node_inputs(params)
    cameras = inputs.cameras
    camera_topics, raw, images = ([], False, []) if bag is None else bag_camera_topics(bag, inputs,
                                                                                        bag_message_counts(bag))
    # what the bag holds, whatever the params file says (before the user's -p, which win)
    transport = [] if bag is None else [f"image_transport:={'raw' if raw else 'compressed'}"]
    node = recorder = player = None
    use_large_message_profile()  # for our watcher and, inherited, every child: node, player, recorder
    watcher = GraphWatcher()
    try:
        node = spawn(node_command(params, checkpoint, device, bag is not None, [*transport, *(overrides or [])]))
        if bag is None:
            return node.wait()
        watcher.spin_until(lambda: watcher.subscribed(camera_topics), startup_timeout_s,
                           "waiting for tinybev_node to subscribe to the cameras", [node])
        if record is not None:
            recorder = spawn(tinybev_command("bag", "record", str(record), *(["--force"] if force else []),
                                             "--topics", *output_topics(checkpoint)))
            watcher.spin_until(lambda: watcher.node.count_subscribers("/tinybev/detections") > 1, 60,
                               "waiting for the recorder to subscribe", [node, recorder])
        alive = [node, *([recorder] if recorder else [])]  # each must live to the end: a dead recorder fails the run
        player = spawn(tinybev_command("bag", "play", str(bag), "--clock", "--rate", str(rate), "--start-paused"))
        # Images are best-effort: one sent before the node's reader has matched the player's new writer is lost.
        # The node reports its readers' matches in /diagnostics (cameras_with_writers); the settle then covers
        # the player's side of the match. Without this the first frames of a replay were lost.
        watcher.spin_until(lambda: all(watcher.node.count_publishers(t) > 0 for t in camera_topics), 60,
                           "waiting for the player's publishers", [*alive, player])
        all_matched = f"{len(cameras)}/{len(cameras)}"
        watcher.spin_until(lambda: watcher.node_diagnostics.get("cameras_with_writers") == all_matched, 60,
                           "waiting for tinybev_node to match the player's camera writers", [*alive, player])
        settle = time.monotonic() + PLAYER_SETTLE_S
        watcher.spin_until(lambda: time.monotonic() > settle, PLAYER_SETTLE_S + 5, "letting discovery settle",
                           [*alive, player])
        player.send_signal(signal.SIGUSR1)
        watcher.spin_until(lambda: player.poll() is not None, 24 * 3600, "playing the bag", alive)
        if player.returncode != 0:
            raise ChildExited(f"bag play failed with exit code {player.returncode}", player.returncode)
        expected = dict(zip(cameras, images, strict=True))
        played = time.monotonic()
        grace = played + RECEIVE_GRACE_S  # best-effort images lost on the way never come

        def short() -> dict[str, int]:  # cameras the node's latest report has fewer images of than the bag
            received = watcher.images_received()
            return {c: received.get(c, 0) for c, count in expected.items() if received.get(c, 0) < count}

        watcher.spin_until(lambda: (watcher.diagnostics_at > played and not short()) or time.monotonic() > grace,
                           RECEIVE_GRACE_S + 5, "waiting for tinybev_node to receive the bag's last images", alive)
        watcher.last_output = max(watcher.last_output, time.monotonic())
        watcher.spin_until(lambda: time.monotonic() - watcher.last_output > drain_s, 600,
                           "draining the node's last frames", alive)
        if recorder is not None:
            stop(recorder)  # SIGINT: it closes the bag and moves it into place
            if recorder.returncode != 0:
                raise ChildExited(f"bag record exited with {recorder.returncode}: {record} is not a complete recording",
                                  recorder.returncode)
        faults = {k: v for k, v in watcher.node_diagnostics.items()
                  if k.startswith("fault_") or (k == "dropped_busy" and v != "0")}
        if faults:  # what cost frames (lost images, a busy queue...), in the user's terminal, not only in a bag
            counted = ", ".join(f"{k.removeprefix('fault_')} {v}" for k, v in sorted(faults.items()))
            print(f"run: tinybev_node counted faults and busy drops: {counted}", file=sys.stderr)
        if watcher.diagnostics_at > played and short():
            print("run: tinybev_node did not receive every image of the bag: " + ", ".join(
                f"{camera} {count}/{expected[camera]}" for camera, count in short().items()), file=sys.stderr)
        return watcher.outputs
    finally:
        stop(player)
        stop(recorder)
        stop(node)
        watcher.close()


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bag", type=Path, help="replay this bag into the node (sim time)")
    parser.add_argument("--rate", type=float, default=1.0, help="bag playback rate")
    parser.add_argument("--record", type=Path, help="record the node's outputs into this bag (a new path)")
    parser.add_argument("--force", action="store_true", help="let --record replace an existing bag")
    parser.add_argument("--params-file", type=Path, help="node parameters (default: the package's tinybev.yaml)")
    parser.add_argument("--checkpoint", default="", help="student checkpoint (default: the shipped one)")
    parser.add_argument("--device", help="auto, cpu or cuda[:N] (default: the params file's)")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                        help="override a node parameter (repeatable)")


def run(args: argparse.Namespace) -> int:
    params = args.params_file or share_file("config/tinybev.yaml")
    try:
        frames = run_pipeline(args.bag, params, args.checkpoint, args.device, args.rate, args.record, args.param,
                              force=args.force)
    except (RunInputError, BagTargetError) as exc:
        print(f"run: error: {exc}", file=sys.stderr)
        return 2
    except ChildExited as exc:  # the child's own line (a bad parameter, a missing checkpoint) is just above
        print(f"run: error: {exc}", file=sys.stderr)
        return exc.returncode if exc.returncode > 0 else 1
    except RunTimeout as exc:
        print(f"run: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # every child was stopped on the way out (run_pipeline's finally)
        print("run: interrupted; the node, player and recorder were stopped", file=sys.stderr)
        return 130
    if args.bag is None:
        return frames  # the node's exit status: 2 for a bad parameter or checkpoint, as the node itself says
    print(f"run: the node published {frames} frames" + (f"; outputs recorded in {args.record}" if args.record
                                                         else ""))
    return 0 if frames > 0 else 1
