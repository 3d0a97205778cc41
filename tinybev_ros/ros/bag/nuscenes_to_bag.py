"""nuScenes (or our nuScenes-format synthetic world) -> rosbag2 bags that `ros2 bag play` accepts.

One bag per scene, written with `rosbags` in ROS 2 CDR with the Kilted type hashes, so no ROS middleware is
needed to convert. Everything is read through the nuscenes-devkit tables, so real nuScenes and the synthetic
world go through the same code. Topics (frames as in ARCHITECTURE.md; every header stamp and bag receive time is
the sensor's own timestamp, nuScenes microseconds -> nanoseconds):

  /CAM_*/image_rect/compressed  sensor_msgs/CompressedImage  original JPEG bytes   (or /CAM_*/image_rect
                                                             sensor_msgs/Image rgb8 with --raw-images)
  /CAM_*/camera_info            sensor_msgs/CameraInfo       K, R = I, P = [K|0], plumb_bob, zero distortion
  /LIDAR_TOP                    sensor_msgs/PointCloud2      x, y, z, intensity (float32), ring (uint16)
  /tf_static                    tf2_msgs/TFMessage           base_link -> every sensor (calibrated_sensor)
  /tf                           tf2_msgs/TFMessage           map -> base_link (ego_pose) at each sensor stamp
  /odom                         nav_msgs/Odometry            ego pose in map, twist in base_link (LiDAR stamps)
  /markers/annotations          visualization_msgs/MarkerArray  ground-truth boxes in map at keyframes
  /map                          nav_msgs/OccupancyGrid       drivable area as a map a planner reads (0 = free: drivable,
                                                             100 = occupied: not) covering the scene's ego path plus a
                                                             margin, once, latched; without the map expansion the
                                                             semantic prior (walkways too)
  /clock                        rosgraph_msgs/Clock          at every distinct message stamp and at 40 Hz between

Keyframes (2 Hz) only by default; `--sweeps` writes the full 12 Hz camera / 20 Hz LiDAR streams.
/tf_static and /map are offered transient-local (latched), the rest reliable/volatile.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

from tinybev_ros.errors import DatasetError, DatasetFileMissing
from tinybev_ros.geometry import Transform, matrix_to_quat
from tinybev_ros.interrupts import sigterm_as_interrupt
from tinybev_ros.jpeg import JPEG_SOI, is_truncated_jpeg
from tinybev_ros.map_masks import map_layer_masks, on_semantic_prior
from tinybev_ros.nuscenes_dataset import (
    camera_intrinsic,
    ego_pose,
    find_scene,
    lidar_points,
    load_map_expansion,
    open_nuscenes,
    sample_data,
    sensor_to_ego,
)
from tinybev_ros.ros.bag.atomic_writer import STORAGES, AtomicBagWriter, BagTargetError, bag_size_bytes, check_target
from tinybev_ros.ros.bag.nuscenes_messages import MessageFactory
from tinybev_ros.ros.bag.typestore import standard_typestore
from tinybev_ros.ros.interface import camera_info_topic, image_topic
from tinybev_ros.taxonomy import CATEGORY_TO_DETECTION, DETECTION_CLASSES

log = logging.getLogger("tinybev.nuscenes_to_bag")
CLOCK_PERIOD_NS = 25_000_000  # /clock at 40 Hz between the messages' stamps
FREE, OCCUPIED = 0, 100  # nav_msgs/OccupancyGrid's values: /map says where a car may drive


# Order of messages that share one timestamp: time and transforms before the data that needs them.
_ORDER = {"clock": 0, "tf_static": 1, "map": 2, "tf": 3, "camera_info": 4, "image": 5, "lidar": 5, "odom": 6,
          "markers": 7}


class ConversionError(DatasetError):
    """Bad input: the message names the file, table or argument at fault."""


class MissingInput(ConversionError, DatasetFileMissing):
    """An input file the tables list is not on disk (a partial download)."""


@dataclass(frozen=True)
class ConvertOptions:
    """Every tunable of the converter, defaults in one place."""

    storage: str = "sqlite3"
    sweeps: bool = False
    raw_images: bool = False
    force: bool = False
    with_map: bool = True
    map_resolution_m: float = 0.5
    map_margin_m: float = 50.0
    progress: bool = True


@dataclass
class ConversionSummary:
    scene: str
    path: Path
    counts: dict[str, int]
    types: dict[str, str]
    duration_s: float
    size_bytes: int
    wall_s: float

    @property
    def x_real_time(self) -> float:
        return self.duration_s / max(self.wall_s, 1e-9)

    def format(self) -> str:
        width = max(len(t) for t in self.counts)
        lines = [f"{self.path}: scene {self.scene}"]
        lines += [f"  {topic:<{width}}  {self.counts[topic]:6d}  {self.types[topic]}" for topic in sorted(self.counts)]
        lines.append(f"  {sum(self.counts.values())} messages, {self.duration_s:.2f} s of data, "
                     f"{self.size_bytes / 1e6:.1f} MB, converted in {self.wall_s:.2f} s "
                     f"({self.x_real_time:.1f}x real time)")
        return "\n".join(lines)


def _qos(durability: QosDurability, depth: int) -> Qos:
    zero = QosTime(sec=0, nsec=0)  # 0 = unspecified: the middleware default (infinite)
    return Qos(history=QosHistory.KEEP_LAST, depth=depth, reliability=QosReliability.RELIABLE,
               durability=durability, deadline=zero, lifespan=zero, liveliness=QosLiveliness.AUTOMATIC,
               liveliness_lease_duration=zero, avoid_ros_namespace_conventions=False)


LATCHED_QOS = _qos(QosDurability.TRANSIENT_LOCAL, 1)
STREAM_QOS = _qos(QosDurability.VOLATILE, 10)


# ---------------------------------------------------------------------------------------------------------------
# Input


def read_file(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise MissingInput(f"missing input file {path}") from None
    except OSError as exc:
        raise ConversionError(f"cannot read {path}: {exc}") from exc


def read_jpeg(path: Path) -> bytes:
    """The file's bytes, refused when they cannot be a whole JPEG (a truncated file lacks the EOI marker)."""
    data = read_file(path)
    if not data.startswith(JPEG_SOI):
        raise ConversionError(f"corrupt JPEG {path}: no start-of-image marker")
    if is_truncated_jpeg(data):
        raise ConversionError(f"corrupt JPEG {path}: truncated (no end-of-image marker), {len(data)} bytes")
    return data


def read_points(path: Path) -> np.ndarray:
    """(N, 5) float32 points of a nuScenes .pcd.bin, refused when not a whole number of points."""
    return lidar_points(read_file(path), path)


def decode_jpeg_rgb(jpeg: bytes, path: Path) -> np.ndarray:
    import cv2

    bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ConversionError(f"corrupt JPEG {path}: cannot be decoded")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# ---------------------------------------------------------------------------------------------------------------
# Scene -> time-ordered messages


@dataclass(order=True)
class _Event:
    stamp_ns: int
    order: int
    seq: int
    topic: str = field(compare=False)
    build: Callable[[], object] = field(compare=False)


class SceneMessages:
    """The messages of one scene in bag order, built lazily (one sensor file in memory at a time)."""

    def __init__(self, nusc, scene: dict, options: ConvertOptions, factory: MessageFactory) -> None:
        self.nusc = nusc
        self.scene = scene
        self.options = options
        self.msg = factory
        self.root = Path(nusc.dataroot)
        self.samples = self._samples()
        self.sample_tokens = {sample["token"] for sample in self.samples}
        first = self.samples[0]
        self.channels = {ch: nusc.get("sample_data", token) for ch, token in first["data"].items()}
        self.cameras = sorted(ch for ch, sd in self.channels.items() if sd["sensor_modality"] == "camera")
        self.lidars = sorted(ch for ch, sd in self.channels.items() if sd["sensor_modality"] == "lidar")
        self.records = {ch: self._channel_records(ch) for ch in self.cameras + self.lidars}
        self.types: dict[str, str] = {}
        self._events: list[_Event] = []
        self._plan()

    # what to write -------------------------------------------------------------------------------------------
    def _samples(self) -> list[dict]:
        samples, token = [], self.scene["first_sample_token"]
        while token:
            sample = self.nusc.get("sample", token)
            samples.append(sample)
            token = sample["next"]
        if not samples:
            raise ConversionError(f"scene {self.scene['name']} has no samples")
        return samples

    def _channel_records(self, channel: str) -> list[dict]:
        keyframes = []
        for sample in self.samples:
            if channel not in sample["data"]:
                raise ConversionError(f"sample {sample['token']} of scene {self.scene['name']} has no {channel} data")
            keyframes.append(sample_data(self.nusc, sample, channel))
        if not self.options.sweeps:
            return keyframes
        records, record = [], keyframes[0]
        while (earlier := self._neighbour(record, "prev")) is not record:
            record = earlier
        while record is not None and record["sample_token"] in self.sample_tokens:
            records.append(record)
            record = self.nusc.get("sample_data", record["next"]) if record["next"] else None
        return records

    def _add(self, stamp_ns: int, kind: str, topic: str, msgtype: str, build: Callable[[], object]) -> None:
        self.types[topic] = msgtype
        self._events.append(_Event(stamp_ns, _ORDER[kind], len(self._events), topic, build))

    def _plan(self) -> None:
        raw = self.options.raw_images
        tf_stamps: set[int] = set()
        for channel in self.cameras + self.lidars:
            for record in self.records[channel]:
                stamp = record["timestamp"] * 1000
                if channel in self.cameras:
                    self._add(stamp, "image", image_topic(channel, raw),
                              "sensor_msgs/msg/Image" if raw else "sensor_msgs/msg/CompressedImage",
                              lambda r=record, c=channel: self._image(r, c))
                    self._add(stamp, "camera_info", camera_info_topic(channel), "sensor_msgs/msg/CameraInfo",
                              lambda r=record, c=channel: self._camera_info(r, c))
                else:
                    self._add(stamp, "lidar", f"/{channel}", "sensor_msgs/msg/PointCloud2",
                              lambda r=record, c=channel: self._lidar(r, c))
                    self._add(stamp, "odom", "/odom", "nav_msgs/msg/Odometry", lambda r=record: self._odometry(r))
                if stamp not in tf_stamps:
                    tf_stamps.add(stamp)
                    self._add(stamp, "tf", "/tf", "tf2_msgs/msg/TFMessage", lambda r=record: self._tf(r))
        for sample in self.samples:
            self._add(sample["timestamp"] * 1000, "markers", "/markers/annotations",
                      "visualization_msgs/msg/MarkerArray", lambda s=sample: self._annotations(s))
        start = min(e.stamp_ns for e in self._events)
        self._add(start, "tf_static", "/tf_static", "tf2_msgs/msg/TFMessage", self._tf_static)
        if self.options.with_map:
            self._check_map_available()
            self._add(start, "map", "/map", "nav_msgs/msg/OccupancyGrid", lambda: self._map(start))
        # at every message's stamp and on a 40 Hz grid between (`ros2 bag play --clock`'s rate): keyframes alone are
        # 0.5 s apart, and sim time standing still that long stalls consumers' timers and TF waits
        stamps = {e.stamp_ns for e in self._events}
        stamps.update(range(min(stamps), max(stamps), CLOCK_PERIOD_NS))
        for stamp in sorted(stamps):
            self._add(stamp, "clock", "/clock", "rosgraph_msgs/msg/Clock", lambda s=stamp: self.msg.clock(s))
        self._events.sort()

    @property
    def start_ns(self) -> int:
        return self._events[0].stamp_ns

    @property
    def end_ns(self) -> int:
        return max(e.stamp_ns for e in self._events)

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterator[tuple[int, str, object]]:
        """(stamp_ns, topic, message) in time order."""
        for event in self._events:
            yield event.stamp_ns, event.topic, event.build()

    # how each message is built -------------------------------------------------------------------------------

    def _image(self, record: dict, channel: str) -> object:
        path = self.root / record["filename"]
        jpeg = read_jpeg(path)
        stamp = record["timestamp"] * 1000
        if self.options.raw_images:
            return self.msg.image_rgb8(stamp, channel, decode_jpeg_rgb(jpeg, path))
        return self.msg.compressed_image(stamp, channel, jpeg)

    def _camera_info(self, record: dict, channel: str) -> object:
        intrinsic = camera_intrinsic(self.nusc, record)
        return self.msg.camera_info(record["timestamp"] * 1000, channel, intrinsic, record["width"], record["height"])

    def _lidar(self, record: dict, channel: str) -> object:
        points = read_points(self.root / record["filename"])
        return self.msg.point_cloud(record["timestamp"] * 1000, channel, points)

    def _tf(self, record: dict) -> object:
        stamp = record["timestamp"] * 1000
        return self.msg.tf_message([self.msg.transform_stamped(stamp, "map", "base_link", ego_pose(self.nusc, record))])

    def _tf_static(self) -> object:
        transforms = []
        for channel in sorted(self.channels):
            transforms.append(self.msg.transform_stamped(self.start_ns, "base_link", channel,
                                                         sensor_to_ego(self.nusc, self.channels[channel])))
        return self.msg.tf_message(transforms)

    def _odometry(self, record: dict) -> object:
        """Twist by central differences of the ego poses of the neighbouring sweeps (one-sided at the ends)."""
        before, after = self._neighbour(record, "prev"), self._neighbour(record, "next")
        pose = ego_pose(self.nusc, record)
        linear, angular = np.zeros(3), np.zeros(3)
        dt = (after["timestamp"] - before["timestamp"]) * 1e-6
        if dt > 0:
            a, b = ego_pose(self.nusc, before), ego_pose(self.nusc, after)
            linear = pose.rotation.T @ (b.translation - a.translation) / dt
            q = matrix_to_quat(a.rotation.T @ b.rotation)  # (w, x, y, z), w >= 0
            sin_half = np.linalg.norm(q[1:])
            if sin_half > 1e-12:
                angle = 2.0 * np.arctan2(sin_half, q[0])
                angular = (a.rotation.T @ pose.rotation).T @ (q[1:] / sin_half * angle / dt)
        return self.msg.odometry(record["timestamp"] * 1000, pose, linear, angular)

    def _neighbour(self, record: dict, direction: str) -> dict:
        """The adjacent record of the same sensor, or `record` itself at the end of the chain or of the scene."""
        if not record[direction]:
            return record
        other = self.nusc.get("sample_data", record[direction])
        return other if other["sample_token"] in self.sample_tokens else record

    def _annotations(self, sample: dict) -> object:
        stamp = sample["timestamp"] * 1000
        marker_type = self.msg.T["visualization_msgs/msg/Marker"]
        identity = Transform()
        markers = [self.msg.marker(stamp, "map", "", 0, marker_type.CUBE, marker_type.DELETEALL, identity,
                                   (0, 0, 0), (0, 0, 0, 0))]
        for token in sample["anns"]:
            ann = self.nusc.get("sample_annotation", token)
            label = CATEGORY_TO_DETECTION.get(ann["category_name"], ann["category_name"])
            width, length, height = ann["size"]
            markers.append(self.msg.marker(
                stamp, "map", label, self._instance_id(ann["instance_token"]), marker_type.CUBE, marker_type.ADD,
                Transform.from_nuscenes(ann["translation"], ann["rotation"]), (length, width, height),
                class_color(label)))
        return self.msg.marker_array(markers)

    def _instance_id(self, instance_token: str) -> int:
        """Stable small marker id per object, so rviz2 shows one box per track across keyframes."""
        return self.nusc.getind("instance", instance_token)

    def _map_path(self) -> tuple[Path, str]:
        location = self.nusc.get("log", self.scene["log_token"])["location"]
        return self.root / "maps" / "expansion" / f"{location}.json", location

    def _check_map_available(self) -> None:
        path, _ = self._map_path()
        if not path.is_file():  # plain nuScenes: the expansion is a separate download
            log.info("no map expansion at %s: /map carries the drivable area of the semantic prior (maps/*.png)",
                     path)

    def _map(self, stamp_ns: int) -> object:
        path, location = self._map_path()
        res, margin = self.options.map_resolution_m, self.options.map_margin_m
        xy = np.array([ego_pose(self.nusc, r).translation[:2] for records in self.records.values() for r in records])
        x0, y0 = np.floor((xy.min(axis=0) - margin) / res) * res
        x1, y1 = np.ceil((xy.max(axis=0) + margin) / res) * res
        width, height = int(round((x1 - x0) / res)), int(round((y1 - y0) / res))
        if path.is_file():
            nusc_map = load_map(str(self.root), location)
            # devkit patch (x_centre, y_centre, height along y, width along x); mask rows follow +y from y0.
            patch = ((x0 + x1) / 2.0, (y0 + y1) / 2.0, y1 - y0, x1 - x0)
            mask = map_layer_masks(nusc_map, patch, 0.0, ["drivable_area"], canvas_size=(height, width))[0]
        else:  # the semantic prior (devkit MapMask): rows follow +y from y0, as the grid wants
            prior = self.nusc.get("map", self.nusc.get("log", self.scene["log_token"])["map_token"])["mask"]
            ys, xs = np.meshgrid(y0 + (np.arange(height) + 0.5) * res, x0 + (np.arange(width) + 0.5) * res,
                                 indexing="ij")
            mask = on_semantic_prior(prior, xs.ravel(), ys.ravel()).reshape(height, width)
        values = np.where(mask > 0, FREE, OCCUPIED).astype(np.int8)
        return self.msg.occupancy_grid(stamp_ns, "map", (x0, y0), res, values)


@functools.lru_cache(maxsize=4)
def load_map(dataroot: str, location: str):
    """The devkit's map of a location, loaded once per process (real map files take seconds to parse)."""
    return load_map_expansion(dataroot, location)


def class_color(label: str) -> tuple[float, float, float, float]:
    """One fixed colour per detection class (grey for categories outside the ten classes)."""
    if label not in DETECTION_CLASSES:
        return (0.6, 0.6, 0.6, 0.5)
    hue = DETECTION_CLASSES.index(label) / len(DETECTION_CLASSES)
    rgb = np.clip(np.abs(np.mod(hue * 6.0 + np.array([0.0, 4.0, 2.0]), 6.0) - 3.0) - 1.0, 0.0, 1.0)
    return (*rgb, 0.5)


# ---------------------------------------------------------------------------------------------------------------
# Writing


def convert_scene(nusc, scene_name: str, out: str | Path, options: ConvertOptions = ConvertOptions()
                  ) -> ConversionSummary:
    """Write one scene as a bag directory at `out` (atomically: a partial bag is never left there)."""
    started = time.perf_counter()
    out = Path(out)
    check_target(out, options.force)
    factory = MessageFactory(standard_typestore())
    counts: Counter[str] = Counter()
    try:
        messages = SceneMessages(nusc, find_scene(nusc, scene_name), options, factory)
        with AtomicBagWriter(out, options.storage, options.force) as writer, \
                _progress(len(messages), scene_name, options.progress) as progress:
            connections = {}
            for topic, msgtype in sorted(messages.types.items()):
                qos = LATCHED_QOS if topic in ("/tf_static", "/map") else STREAM_QOS
                connections[topic] = writer.add_connection(topic, msgtype, typestore=factory.store,
                                                           offered_qos_profiles=[qos])
            for stamp_ns, topic, msg in messages:
                writer.write(connections[topic], stamp_ns, factory.serialize(msg))
                counts[topic] += 1
                progress.update()
    except KeyError as exc:  # the devkit's get() of a token that no table row has
        raise ConversionError(f"scene {scene_name}: the tables refer to a record that does not exist: {exc}") from exc
    return ConversionSummary(scene=scene_name, path=out, counts=dict(counts), types=messages.types,
                             duration_s=(messages.end_ns - messages.start_ns) / 1e9, size_bytes=bag_size_bytes(out),
                             wall_s=time.perf_counter() - started)


def convert_all(nusc, out: Path, options: ConvertOptions) -> None:
    """One bag per scene under `out`, resumable: a scene whose bag exists is kept (unless `force`), and a scene
    with input files missing is skipped with a warning (a partial nuScenes download lists every scene in its
    tables), so an interrupted or partial conversion goes on where it stopped. A scene that cannot be converted
    (a corrupt file, a target that is not a bag) does not stop the others: they are named at the end, an error."""
    from tinybev_ros.ros.bag.atomic_writer import BagTargetError, is_bag

    kept, converted, skipped, failed = [], [], {}, {}
    for scene in sorted(nusc.scene, key=lambda s: s["name"]):
        name, target = scene["name"], out / scene["name"]
        if is_bag(target) and not options.force:
            kept.append(name)
            continue
        try:
            summary = convert_scene(nusc, name, target, options)
        except MissingInput as exc:
            skipped[name] = str(exc)
            log.warning("scene %s skipped: %s", name, exc)
            continue
        except (ConversionError, BagTargetError) as exc:
            failed[name] = str(exc)
            log.error("scene %s not converted: %s", name, exc)
            continue
        converted.append(name)
        print(summary.format(), flush=True)
    if kept:
        log.info("kept the %d scenes already converted under %s (--force converts them again)", len(kept), out)
    if skipped:
        log.warning("skipped %d of %d scenes with input files missing (a partial download?): %s", len(skipped),
                    len(nusc.scene), " ".join(sorted(skipped)))
        if len(skipped) == len(nusc.scene):
            raise ConversionError(f"no scene of {nusc.version} has its files under {nusc.dataroot}, e.g. "
                                  f"{next(iter(skipped.values()))}")
    if failed:
        raise ConversionError(f"{len(failed)} of {len(nusc.scene)} scenes not converted ({len(converted)} converted, "
                              f"{len(kept)} kept, {len(skipped)} skipped): "
                              + "; ".join(f"{name}: {reason}" for name, reason in sorted(failed.items())))


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="msg", disable=not enabled, leave=False, file=sys.stderr)


# ---------------------------------------------------------------------------------------------------------------
# Command line (`ros2 run tinybev_ros nuscenes_to_bag ...` and `tinybev bag convert ...`)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataroot", required=True, help="nuScenes dataroot (holds the version folder, samples/...)")
    parser.add_argument("--version", default="v1.0-mini", help="table version, e.g. v1.0-mini, v1.0-trainval")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--scene", help="scene name, e.g. scene-0061")
    which.add_argument("--all", action="store_true",
                       help="every scene of the version, one bag each; resumable (bags already there are kept), "
                            "scenes with input files missing (a partial download) are skipped with a warning")
    parser.add_argument("--out", required=True, type=Path,
                        help="bag directory to write (with --all: the directory that receives one bag per scene)")
    parser.add_argument("--storage", choices=sorted(STORAGES), default="sqlite3", help="rosbag2 storage plugin")
    parser.add_argument("--sweeps", action="store_true", help="full 12 Hz camera / 20 Hz LiDAR streams")
    parser.add_argument("--raw-images", action="store_true", help="sensor_msgs/Image rgb8 instead of the JPEGs")
    parser.add_argument("--no-map", action="store_true", help="leave out /map (no map expansion needed)")
    parser.add_argument("--force", action="store_true", help="overwrite existing bags")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    options = ConvertOptions(storage=args.storage, sweeps=args.sweeps, raw_images=args.raw_images, force=args.force,
                             with_map=not args.no_map, progress=not args.no_progress)
    try:
        with sigterm_as_interrupt():  # SIGTERM unwinds like Ctrl-C: the partial bag beside the target is removed
            nusc = open_nuscenes(args.dataroot, args.version)
            if args.all:
                convert_all(nusc, args.out, options)
            else:
                print(convert_scene(nusc, find_scene(nusc, args.scene)["name"], args.out, options).format(),
                      flush=True)
    except (DatasetError, BagTargetError) as exc:
        print(f"nuscenes_to_bag: error: {exc}", file=sys.stderr)
        return 2
    except (sqlite3.OperationalError, OSError) as exc:  # e.g. the disk filled up: the staging folder is gone
        print(f"nuscenes_to_bag: error: cannot write the bag ({exc}); nothing was left at the target path",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nuscenes_to_bag: interrupted; no bag written at the target path", file=sys.stderr)
        return 130
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nuscenes_to_bag", description=__doc__.splitlines()[0])
    configure(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
