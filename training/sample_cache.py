"""The training-resolution sample cache: every keyframe read from nuScenes once, then loaded without JPEG work.

Per keyframe, one safetensors file (`<cache>/<sample_token>.safetensors`, written atomically) holds
- the six camera images resized to the model's input width (the whole frame, uint8; the crop and the training
  zoom/shift happen at load time through the runtime's ResizeCrop, so un-augmented items equal what the node
  computes), their K, and the static and the ego-motion-compensated camera -> base_link extrinsics;
- the whole LIDAR_TOP sweep in base_link (subsampled at load time when a config asks), and the sweep about
  `PREVIOUS_SWEEP_S` earlier moved into the same base_link (moving objects are where they were then: the
  displacement is what tells a LiDAR model an object's velocity, as CenterPoint's multi-sweep input does);
- every task's labels in a form BEV augmentation can move: boxes, agent and ego futures, occupancy footprints
  as boxes, and the map layers on a grid `MAP_REACH` times larger than the model's (so a rotated or shrunk view
  still has ground truth in its corners).

The cache folder's name is a hash of what its content depends on: the dataset (the bytes of the version's tables
and of the map expansion files), the image width and the BEV grid, and this module's format version. A different
dataset or config gets another folder, so a stale cache is never read; `info.json` in each folder says what the
hash covers. Image and LiDAR files are not hashed (gigabytes): the tables name them with their timestamps.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from nuscenes.nuscenes import NuScenes
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file
from tqdm import tqdm

from tinybev_ros.atomic_file import atomic_path, write_text
from tinybev_ros.errors import DatasetError, DatasetFileMissing
from tinybev_ros.geometry import CAMERA_NAMES, LIDAR_NAME, BevGrid, Transform
from tinybev_ros.model.preprocess import ResizeCrop
from tinybev_ros.nuscenes_dataset import (
    camera_intrinsic,
    data_path,
    ego_pose,
    read_image_rgb,
    read_lidar_file,
    sample_data,
    sensor_to_ego,
)
from training.ground_truth import (
    GroundTruth,
    OccupancyFootprints,
    SampleLabels,
    command_from_ego_future,
    earlier_lidar_record,
    has_map_expansion,
    read_sample_labels,
    sample_ego_status,
    sample_map_masks,
)

log = logging.getLogger(__name__)

CACHE_FORMAT = "tinybev-sample-cache/5"  # 4: agent futures slotted by keyframe; 5: unknown velocities NaN, not 0
MAP_REACH = 1.5  # cached map extent / grid extent: covers +-22.5 deg rotations down to scale 0.95 (needs 1.38)
PREVIOUS_SWEEP_S = 0.5  # the earlier sweep: the newest LIDAR_TOP sample_data at least 0.45 s before the keyframe


def map_grid_of(grid: BevGrid) -> BevGrid:
    """The cached map raster: `grid` grown about its centre by MAP_REACH, same resolution and cell alignment."""
    rows, cols = grid.shape
    grow_rows = int(np.ceil(rows * (MAP_REACH - 1.0) / 2.0))
    grow_cols = int(np.ceil(cols * (MAP_REACH - 1.0) / 2.0))
    res = grid.resolution  # growing by whole cells on each side keeps the cell borders of `grid`
    return BevGrid(grid.x_min - grow_rows * res, grid.x_max + grow_rows * res,
                   grid.y_min - grow_cols * res, grid.y_max + grow_cols * res, res)


def dataset_fingerprint(dataroot: str | Path, version: str) -> str:
    """SHA-256 over the version's table files and the map expansion files (names and bytes)."""
    root = Path(dataroot)
    files = sorted((root / version).glob("*.json")) + sorted((root / "maps" / "expansion").glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no nuScenes tables in {root / version}")
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(root)).encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class CacheKey:
    """What a cached sample depends on; `folder_name` hashes all of it."""

    dataset: str  # dataset_fingerprint
    version: str
    image_width: int
    grid: tuple[float, float, float, float, float]  # x_min, x_max, y_min, y_max, resolution
    format: str = CACHE_FORMAT

    def folder_name(self) -> str:
        text = json.dumps(self.__dict__, sort_keys=True)
        return f"{self.version}-w{self.image_width}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


@dataclass
class CachedSample:
    """One keyframe as stored: inputs at the cache resolution and labels before any rasterising."""

    sample_token: str
    scene_token: str
    timestamp_us: int
    images: np.ndarray  # (6, Hc, Wc, 3) uint8 RGB, each camera resized to the model width
    intrinsics: np.ndarray  # (6, 3, 3) float64, K of those images
    cam_to_ego: np.ndarray  # (6, 4, 4) float64, static calibrated_sensor extrinsics (what /tf_static holds)
    cam_to_ego_compensated: np.ndarray  # (6, 4, 4) the same composed through the ego poses to LiDAR time
    lidar: np.ndarray  # (P, 5) float32 x, y, z, intensity, ring in base_link
    lidar_previous: np.ndarray  # (P', 5) the earlier sweep in the same base_link; (0, 5) at a scene's start
    previous_lag_s: float  # how much earlier that sweep was (0 when there is none)
    ego_to_global: np.ndarray  # (4, 4)
    ego_status: np.ndarray  # (3,) vx, vy, known: the planner's input (tinybev_ros/ego_motion.py)
    centers: np.ndarray  # (N, 3)
    sizes_wlh: np.ndarray  # (N, 3)
    yaws: np.ndarray  # (N,)
    velocities: np.ndarray  # (N, 2)
    labels: np.ndarray  # (N,) int64
    num_lidar_pts: np.ndarray  # (N,) int64
    num_radar_pts: np.ndarray  # (N,) int64
    futures: np.ndarray  # (N, T, 2)
    future_mask: np.ndarray  # (N, T) bool
    occupancy: OccupancyFootprints
    map_masks: np.ndarray  # (4, H', W') bool on map_grid_of(grid)
    map_valid: np.ndarray  # (4,) bool: the layers the dataset knows (without the map expansion: the prior's only)
    ego_future: np.ndarray  # (6, 2)
    ego_future_mask: np.ndarray  # (6,) bool
    instance_tokens: list[str]

    def ground_truth(self, map_grid: BevGrid, grid: BevGrid, bev) -> GroundTruth:
        """The sample's GroundTruth on `grid` in the frame moved by `bev` (a BevTransform; identity = as stored).

        `ego_to_global` stays the stored pose of the un-moved base_link (nothing in the targets reads it).
        """
        occupancy = OccupancyFootprints(bev.vectors_xy(self.occupancy.centers_xy),
                                        self.occupancy.sizes_wl * bev.scale, bev.headings(self.occupancy.yaws),
                                        self.occupancy.frame, self.occupancy.valid)
        ego_future = bev.vectors_xy(self.ego_future)
        command = bev.command(command_from_ego_future(self.ego_future, self.ego_future_mask))
        return GroundTruth(
            sample_token=self.sample_token, scene_token=self.scene_token, timestamp_us=self.timestamp_us,
            ego_to_global=Transform.from_matrix(self.ego_to_global),
            centers=bev.points(self.centers), sizes_wlh=self.sizes_wlh * bev.scale, yaws=bev.headings(self.yaws),
            velocities=bev.vectors_xy(self.velocities), labels=self.labels, instance_tokens=self.instance_tokens,
            num_lidar_pts=self.num_lidar_pts, num_radar_pts=self.num_radar_pts,
            futures=bev.vectors_xy(self.futures), future_mask=self.future_mask,
            map_masks=bev.resample(self.map_masks, map_grid, grid), occupancy=occupancy.rasterize(grid),
            ego_future=ego_future, ego_future_mask=self.ego_future_mask, command=command,
            occupancy_mask=self.occupancy.valid.copy(), map_valid=self.map_valid.copy())


SAMPLE_CACHE_HELP = ("where the training-resolution sample cache is kept (default: <dataroot>/tinybev_cache; give a "
                     "folder for a read-only dataroot)")

_ARRAYS = ("images", "intrinsics", "cam_to_ego", "cam_to_ego_compensated", "lidar", "lidar_previous",
           "ego_to_global", "ego_status", "centers",
           "sizes_wlh", "yaws", "velocities", "labels", "num_lidar_pts", "num_radar_pts", "futures", "future_mask",
           "map_masks", "map_valid", "ego_future", "ego_future_mask")


def _camera_inputs(nusc: NuScenes, sample: dict, ego_to_global: Transform,
                   image_width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    images, intrinsics, static, compensated = [], [], [], []
    global_to_ego = ego_to_global.inverse()
    for name in CAMERA_NAMES:
        record = sample_data(nusc, sample, name)
        cam_to_ego = sensor_to_ego(nusc, record)
        moved = global_to_ego @ ego_pose(nusc, record) @ cam_to_ego
        intrinsic = camera_intrinsic(nusc, record)
        image = read_image_rgb(data_path(nusc, record))
        src_h, src_w = image.shape[:2]
        resize = ResizeCrop.fit_width((src_h, src_w), (int(round(src_h * image_width / src_w)), image_width))
        images.append(resize.image(image))
        intrinsics.append(resize.intrinsics(intrinsic))
        static.append(cam_to_ego.matrix)
        compensated.append(moved.matrix)
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise DatasetError(f"sample {sample['token']}: cameras differ in aspect ratio ({sorted(shapes)}); the cache "
                           "stores one image size for all six")
    return np.stack(images), np.stack(intrinsics), np.stack(static), np.stack(compensated)


def read_lidar_points(nusc: NuScenes, record: dict, ego_to_global: Transform) -> np.ndarray:
    """A LIDAR_TOP sample_data's points as (P, 5) float32 x, y, z, intensity, ring in the base_link whose pose is
    `ego_to_global` (the sweep's own ego pose composed in, so points of an earlier sweep land where they were)."""
    points = read_lidar_file(data_path(nusc, record)).copy()
    lidar_to_ego = ego_to_global.inverse() @ ego_pose(nusc, record) @ sensor_to_ego(nusc, record)
    points[:, :3] = lidar_to_ego.apply(points[:, :3]).astype(np.float32)
    return points


def read_sample(nusc: NuScenes, sample_token: str, image_width: int, map_grid: BevGrid,
                map_cache: dict) -> CachedSample:
    """One keyframe from the tables and files (what every training step did before the cache)."""
    labels: SampleLabels = read_sample_labels(nusc, sample_token)
    sample = labels.sample
    images, intrinsics, static, compensated = _camera_inputs(nusc, sample, labels.ego_to_global, image_width)
    map_masks, map_valid = sample_map_masks(nusc, map_cache, labels, map_grid)
    boxes = labels.boxes
    lidar_record = sample_data(nusc, sample, LIDAR_NAME)
    # On disk: a keyframes-only download lists every 20 Hz sweep in its tables but holds only keyframe files.
    earlier = earlier_lidar_record(nusc, lidar_record, PREVIOUS_SWEEP_S, on_disk=True)
    previous = (read_lidar_points(nusc, earlier, labels.ego_to_global) if earlier is not None
                else np.zeros((0, 5), np.float32))
    lag = (lidar_record["timestamp"] - earlier["timestamp"]) / 1e6 if earlier is not None else 0.0
    return CachedSample(
        sample_token=sample_token, scene_token=sample["scene_token"], timestamp_us=labels.timestamp_us,
        images=images, intrinsics=intrinsics, cam_to_ego=static, cam_to_ego_compensated=compensated,
        lidar=read_lidar_points(nusc, lidar_record, labels.ego_to_global), lidar_previous=previous,
        previous_lag_s=float(lag), ego_to_global=labels.ego_to_global.matrix,
        ego_status=sample_ego_status(nusc, sample),
        centers=boxes["centers"], sizes_wlh=boxes["sizes_wlh"], yaws=boxes["yaws"],
        velocities=boxes["velocities"], labels=boxes["labels"], num_lidar_pts=boxes["num_lidar_pts"],
        num_radar_pts=boxes["num_radar_pts"], futures=labels.futures, future_mask=labels.future_mask,
        occupancy=labels.occupancy, map_masks=map_masks, map_valid=map_valid,
        ego_future=labels.ego_future, ego_future_mask=labels.ego_future_mask,
        instance_tokens=list(boxes["instance_tokens"]))


def encode(sample: CachedSample) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    tensors = {name: np.ascontiguousarray(getattr(sample, name)) for name in _ARRAYS}
    occ = sample.occupancy
    tensors.update({"occupancy.centers_xy": occ.centers_xy, "occupancy.sizes_wl": occ.sizes_wl,
                    "occupancy.yaws": occ.yaws, "occupancy.frame": occ.frame, "occupancy.valid": occ.valid})
    metadata = {"format": CACHE_FORMAT, "sample_token": sample.sample_token, "scene_token": sample.scene_token,
                "timestamp_us": str(sample.timestamp_us), "instance_tokens": json.dumps(sample.instance_tokens),
                "previous_lag_s": repr(sample.previous_lag_s)}
    return {k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata


def decode(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> CachedSample:
    occupancy = OccupancyFootprints(tensors["occupancy.centers_xy"], tensors["occupancy.sizes_wl"],
                                    tensors["occupancy.yaws"], tensors["occupancy.frame"],
                                    tensors["occupancy.valid"])
    if "map_valid" not in tensors:  # written before map_valid was stored: only datasets with the map expansion
        tensors = {**tensors, "map_valid": np.ones(len(tensors["map_masks"]), dtype=bool)}
    return CachedSample(sample_token=metadata["sample_token"], scene_token=metadata["scene_token"],
                        timestamp_us=int(metadata["timestamp_us"]), occupancy=occupancy,
                        previous_lag_s=float(metadata["previous_lag_s"]),
                        instance_tokens=json.loads(metadata["instance_tokens"]),
                        **{name: tensors[name] for name in _ARRAYS})


class SampleCache:
    """The cache folder of one (dataset, image width, grid); `ensure` fills it, `load` reads one sample."""

    def __init__(self, root: str | Path, nusc: NuScenes, image_width: int, grid: BevGrid) -> None:
        self.nusc = nusc
        self.image_width = image_width
        self.grid = grid
        self.map_grid = map_grid_of(grid)
        self.key = CacheKey(dataset_fingerprint(nusc.dataroot, nusc.version), nusc.version, image_width,
                            (grid.x_min, grid.x_max, grid.y_min, grid.y_max, grid.resolution))
        self.folder = Path(root) / self.key.folder_name()
        self._map_cache: dict = {}
        self._on_disk: dict[str, list[str]] = {}  # split -> its usable samples (asked again by each dataset)

    def path(self, sample_token: str) -> Path:
        if not sample_token or "/" in sample_token or sample_token.startswith("."):
            raise ValueError(f"sample token {sample_token!r} cannot name a cache file")
        return self.folder / f"{sample_token}.safetensors"

    def ensure(self, sample_tokens: list[str], desc: str = "caching samples") -> int:
        """Write every missing sample (a crash leaves only whole files: rerun to continue); returns how many this
        process wrote. Under torchrun each rank starts with its own share of the list, then writes whatever is
        still missing (the others' samples not written yet): no rank waits for another (no collective that could
        time out during hours of caching), none is idle while samples remain, and each returns with all of them."""
        import torch.distributed as dist

        without = sorted({r["location"] for r in self.nusc.log if not has_map_expansion(self.nusc, r["location"])})
        if without:
            log.warning("no map expansion for %s under %s/maps/expansion: map targets there are the semantic prior "
                        "(drivable surface, walkways included) and the other map layers are not trained",
                        ", ".join(without), self.nusc.dataroot)
        rank, world = ((dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized()
                       else (0, 1))
        order = sample_tokens[rank::world] + [t for i, t in enumerate(sample_tokens) if i % world != rank]
        missing = [t for t in order if not self.path(t).is_file()]
        if not missing:
            return 0
        self._prepare_folder()
        log.info("sample cache %s: reading %d of %d samples from the dataset", self.folder, len(missing),
                 len(sample_tokens))
        written = 0
        for token in tqdm(missing, desc=desc, unit="sample", dynamic_ncols=True):
            if self.path(token).is_file():  # another rank's, written meanwhile
                continue
            self.write(read_sample(self.nusc, token, self.image_width, self.map_grid, self._map_cache))
            written += 1
        return written

    def _prepare_folder(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            info = self.folder / "info.json"
            if not info.is_file():
                write_text(info, json.dumps({**self.key.__dict__, "dataroot": str(self.nusc.dataroot),
                                             "map_grid": list(self.map_grid.__dict__.values())}, indent=1))
        except OSError as exc:
            raise self._unwritable(exc) from exc

    def on_disk(self, sample_tokens: list[str], split: str) -> list[str]:
        """The samples that are cached or have every file they are cached from (six images, the LiDAR keyframe).
        A partial nuScenes download (some trainval blobs) lists every scene in its tables: training takes what
        is there, as mmdetection3d's available-scenes filter does, and says what it left out."""
        def present(token: str) -> bool:
            sample = self.nusc.get("sample", token)
            return self.path(token).is_file() or all(
                data_path(self.nusc, sample_data(self.nusc, sample, channel)).is_file()
                for channel in (*CAMERA_NAMES, LIDAR_NAME))

        if split in self._on_disk:
            return self._on_disk[split]
        kept = [token for token in sample_tokens if present(token)]
        if len(kept) < len(sample_tokens):
            present_set = set(kept)
            absent = [token for token in sample_tokens if token not in present_set]
            scenes = sorted({self.nusc.get("scene", self.nusc.get("sample", t)["scene_token"])["name"]
                             for t in absent})
            where = f"{self.nusc.dataroot} ({self.nusc.version})"
            if not kept:
                raise DatasetFileMissing(f"no sample of split {split!r} has its files under {where}: check "
                                         "--dataroot (the tables are there, the sensor files are not)")
            log.warning("%d of the %d samples of split %r (%d scenes: %s%s) have files missing under %s (a partial "
                        "download?); using the other %d", len(absent), len(sample_tokens), split, len(scenes),
                        " ".join(scenes[:5]), " ..." if len(scenes) > 5 else "", where, len(kept))
        self._on_disk[split] = kept
        return kept

    def write(self, sample: CachedSample) -> Path:
        tensors, metadata = encode(sample)
        path = self.path(sample.sample_token)
        try:
            with atomic_path(path) as tmp:
                save_file(tensors, str(tmp), metadata=metadata)
        except (OSError, SafetensorError) as exc:
            raise self._unwritable(exc) from exc
        return path

    def _unwritable(self, exc: Exception) -> DatasetError:
        return DatasetError(f"cannot write the sample cache {self.folder} ({getattr(exc, 'strerror', None) or exc}); "
                            "give data.cache_dir (or --sample-cache) a writable folder with room")

    def load(self, sample_token: str) -> CachedSample:
        """A cached sample; an unreadable file (a disk fault, a foreign file) is rebuilt from the dataset."""
        path = self.path(sample_token)
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="numpy") as handle:
                metadata = handle.metadata() or {}
            if metadata.get("format") != CACHE_FORMAT:
                raise ValueError(f"format {metadata.get('format')!r}")
            return decode(load_file(str(path)), metadata)
        except FileNotFoundError:
            raise FileNotFoundError(f"sample cache {self.folder} has no {path.name}: call ensure() first") from None
        except (SafetensorError, ValueError, KeyError, OSError) as error:
            log.warning("sample cache file %s is unreadable (%s): rebuilding it from the dataset", path, error)
            sample = read_sample(self.nusc, sample_token, self.image_width, self.map_grid, self._map_cache)
            self.write(sample)
            return sample
