"""Ground truth of one nuScenes keyframe for every task, in that keyframe's ego frame (base_link).

The reference frame is the ego pose at the keyframe's LIDAR_TOP timestamp (the frame nuScenes' own detection
evaluation uses). Everything the devkit can compute it computes (boxes, velocities, map masks); we only change
frames and raster conventions:

- detection: `nusc.get_box` + `nusc.box_velocity`, global -> ego; classes via taxonomy.CATEGORY_TO_DETECTION.
- agent futures: the annotation `next` chain, each annotation in the slot of the keyframe it belongs to, so
  future step k is the instance's centre k keyframes (k/2 s) later, in THIS ego frame; invalid where the
  instance was not annotated (a gap in the chain, or its end).
- map: the devkit's `get_map_mask` (as `tinybev_ros/map_masks.py` draws it, which real maps' multi-part lane dividers
  need) with a patch centred on the grid and rotated by the ego yaw. The devkit's canvas has rows along the patch's
  local y and columns along its local x; our `BevGrid` has rows along x (forward) and columns along y (left), so the
  devkit mask is transposed (see `map_masks_for_pose`).
- occupancy: footprints of dynamic-class boxes at the keyframe and the next four keyframes (+0.5..+2.0 s),
  transformed into the current ego frame and rasterised (a cell is occupied when its centre lies in a footprint;
  the cell holding a box centre is always occupied so small agents never vanish).
- ego future: ego poses (LIDAR_TOP) of the next six keyframes (+0.5..+3.0 s) in this ego frame.
- command: from the ego's lateral offset y at the end of the horizon (the last valid step):
  y > COMMAND_LATERAL_THRESHOLD_M -> LEFT, y < -threshold -> RIGHT, else STRAIGHT. The 2 m threshold is the
  ST-P3/UniAD convention for nuScenes planning commands.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from nuscenes.map_expansion.map_api import NuScenesMap
from nuscenes.nuscenes import NuScenes

from tinybev_ros.ego_motion import EGO_VELOCITY_LAG_S, ego_status, unknown_ego_status
from tinybev_ros.errors import DatasetFileMissing
from tinybev_ros.geometry import LIDAR_NAME, BevGrid, Transform, quat_to_yaw
from tinybev_ros.map_masks import map_layer_masks, on_semantic_prior
from tinybev_ros.nuscenes_dataset import POINT_BYTES, ego_pose, load_map_expansion, sample_data
from tinybev_ros.predictions import FORECAST_STEPS, PLAN_STEPS
from tinybev_ros.taxonomy import CATEGORY_TO_DETECTION, DETECTION_CLASSES, DYNAMIC_CLASSES, MAP_CLASSES, Command

log = logging.getLogger(__name__)
OCCUPANCY_STEPS = 5  # now and +0.5, +1.0, +1.5, +2.0 s (keyframes at 2 Hz)
COMMAND_LATERAL_THRESHOLD_M = 2.0

_DYNAMIC_LABELS = frozenset(DETECTION_CLASSES.index(name) for name in DYNAMIC_CLASSES)


@dataclass
class GroundTruth:
    """One keyframe sample; everything in that sample's ego frame (base_link). N annotated objects."""

    sample_token: str
    scene_token: str
    timestamp_us: int
    ego_to_global: Transform  # ego pose at the LIDAR_TOP timestamp
    centers: np.ndarray  # (N, 3)
    sizes_wlh: np.ndarray  # (N, 3)
    yaws: np.ndarray  # (N,)
    velocities: np.ndarray  # (N, 2) ego frame, m/s; NaN where the devkit gives NaN (unknown: no neighbour annotation)
    labels: np.ndarray  # (N,) int64 index into DETECTION_CLASSES
    instance_tokens: list[str]  # (N,) track identity
    num_lidar_pts: np.ndarray  # (N,)
    num_radar_pts: np.ndarray  # (N,)
    futures: np.ndarray  # (N, FORECAST_STEPS, 2) future centre xy in THIS ego frame
    future_mask: np.ndarray  # (N, FORECAST_STEPS) bool
    map_masks: np.ndarray  # (len(MAP_CLASSES), H, W) bool on the BevGrid
    occupancy: np.ndarray  # (OCCUPANCY_STEPS, H, W) bool: now and +0.5..+2.0 s, this ego frame
    ego_future: np.ndarray  # (PLAN_STEPS, 2) ego xy at +0.5..+3.0 s in this ego frame
    ego_future_mask: np.ndarray  # (PLAN_STEPS,) bool
    command: int  # taxonomy.Command derived from ego_future
    # Which occupancy frames exist (the scene may end before +2 s); an addition to the contract's fields.
    occupancy_mask: np.ndarray = field(default_factory=lambda: np.ones(OCCUPANCY_STEPS, dtype=bool))
    # Which map layers are known: without the map expansion only drivable_area (from the semantic prior) is.
    map_valid: np.ndarray = field(default_factory=lambda: np.ones(len(MAP_CLASSES), dtype=bool))

    def __len__(self) -> int:
        return int(self.centers.shape[0])

    @property
    def evaluable(self) -> np.ndarray:
        """(N,) bool: boxes the devkit's detection evaluation keeps (at least one LiDAR or radar point)."""
        return (self.num_lidar_pts + self.num_radar_pts) > 0


def ego_pose_of_sample(nusc: NuScenes, sample: dict) -> tuple[Transform, int]:
    """ego -> global at the sample's LIDAR_TOP sweep, and that sweep's timestamp (us)."""
    lidar = sample_data(nusc, sample, LIDAR_NAME)
    return ego_pose(nusc, lidar), int(lidar["timestamp"])


def earlier_lidar_record(nusc: NuScenes, record: dict, lag_s: float, on_disk: bool = False) -> dict | None:
    """The LIDAR_TOP sample_data about `lag_s` before `record`: the newest one at least 0.9 lag_s earlier (a 20 Hz
    sweep on real nuScenes, the previous keyframe on a keyframes-only dataset); None at a scene's start.
    `on_disk`: only a record whose point file exists and is whole (a keyframes-only download lacks the sweeps'
    files; a cut download has some of them short), so one bad sweep costs one input, not the whole cache build."""
    token = record["prev"]
    while token:
        earlier = nusc.get("sample_data", token)
        if (record["timestamp"] - earlier["timestamp"] >= 0.9 * lag_s * 1e6
                and (not on_disk or whole_point_file(Path(nusc.dataroot) / earlier["filename"]))):
            return earlier
        token = earlier["prev"]
    return None


def whole_point_file(path: Path) -> bool:
    """`path` is a non-empty .pcd.bin of whole points (from its size: nothing is read)."""
    try:
        size = path.stat().st_size
    except OSError:
        return False
    if size and size % POINT_BYTES == 0:
        return True
    log.warning("LiDAR sweep %s is cut (%d bytes, not a whole number of %d-byte points): an older one is used",
                path, size, POINT_BYTES)
    return False


def sample_ego_status(nusc: NuScenes, sample: dict) -> np.ndarray:
    """The planner's ego status input of a keyframe, from the ego poses as the node gets them from /tf."""
    record = sample_data(nusc, sample, LIDAR_NAME)
    earlier = earlier_lidar_record(nusc, record, EGO_VELOCITY_LAG_S)
    if earlier is None:
        return unknown_ego_status()
    return ego_status(ego_pose(nusc, record), ego_pose(nusc, earlier),
                      (record["timestamp"] - earlier["timestamp"]) / 1e6)


def map_name_of_sample(nusc: NuScenes, sample: dict) -> str:
    scene = nusc.get("scene", sample["scene_token"])
    return nusc.get("log", scene["log_token"])["location"]


def get_map(nusc: NuScenes, cache: MutableMapping[str, NuScenesMap], map_name: str) -> NuScenesMap:
    """The NuScenesMap of `map_name`, loaded once per cache (loading a real map takes seconds)."""
    if map_name not in cache:
        cache[map_name] = load_map_expansion(nusc.dataroot, map_name)
    return cache[map_name]


def has_map_expansion(nusc: NuScenes, map_name: str) -> bool:
    """Plain nuScenes comes without the map expansion (a separate download): only the semantic-prior PNGs."""
    return (Path(nusc.dataroot) / "maps" / "expansion" / f"{map_name}.json").is_file()


def prior_masks_for_pose(nusc: NuScenes, sample: dict, ego_to_global: Transform,
                         grid: BevGrid) -> tuple[np.ndarray, np.ndarray]:
    """Map masks from the semantic prior (the devkit's MapMask of the log's map PNG, 0.1 m per pixel): the
    drivable area only; the other layers are marked unknown. Returns (masks, valid)."""
    scene = nusc.get("scene", sample["scene_token"])
    record = nusc.get("map", nusc.get("log", scene["log_token"])["map_token"])
    if not (Path(nusc.dataroot) / record["filename"]).is_file():
        raise DatasetFileMissing(f"no map for {record['filename']}: neither the map expansion nor the semantic prior "
                                 f"is under {Path(nusc.dataroot) / 'maps'} (evaluate with --tasks without map)")
    xs, ys = grid.cell_centers()
    cells = np.stack(np.meshgrid(xs, ys, indexing="ij"), -1).reshape(-1, 2)
    world = ego_to_global.apply(np.concatenate([cells, np.zeros((len(cells), 1))], axis=1))
    masks = np.zeros((len(MAP_CLASSES), *grid.shape), dtype=bool)
    valid = np.zeros(len(MAP_CLASSES), dtype=bool)
    drivable = MAP_CLASSES.index("drivable_area")
    masks[drivable] = on_semantic_prior(record["mask"], world[:, 0], world[:, 1]).reshape(grid.shape)
    valid[drivable] = True
    return masks, valid


def following_samples(nusc: NuScenes, sample: dict, count: int) -> list[dict | None]:
    """The next `count` keyframes of the scene (None past its end)."""
    out: list[dict | None] = []
    token = sample["next"]
    for _ in range(count):
        if not token:
            out.append(None)
            continue
        record = nusc.get("sample", token)
        out.append(record)
        token = record["next"]
    return out


def map_masks_for_pose(nusc_map: NuScenesMap, ego_to_global: Transform, grid: BevGrid,
                       layers: tuple[str, ...] = MAP_CLASSES) -> np.ndarray:
    """(len(layers), H, W) bool masks on `grid` around the ego pose, rasterised by the devkit.

    The devkit's patch is (x_center, y_center, height, width) in global metres with `height` along the patch's
    local y and `width` along its local x; rotating it by the ego yaw aligns local x with forward. Its canvas
    (h, w) has row = local y and column = local x, both increasing from the patch's lower corner, so
    our (row = x, col = y) raster is its transpose.
    """
    height, width = grid.shape  # rows (x), cols (y)
    yaw = quat_to_yaw(ego_to_global.quat_wxyz)
    centre_ego = np.array([(grid.x_min + grid.x_max) / 2.0, (grid.y_min + grid.y_max) / 2.0, 0.0])
    centre = ego_to_global.apply(centre_ego)
    patch_box = (float(centre[0]), float(centre[1]), grid.y_max - grid.y_min, grid.x_max - grid.x_min)
    devkit = map_layer_masks(nusc_map, patch_box, float(np.degrees(yaw)), list(layers), canvas_size=(width, height))
    return np.ascontiguousarray(devkit.transpose(0, 2, 1)).astype(bool)


def rasterize_footprints(centers_xy: np.ndarray, sizes_wl: np.ndarray, yaws: np.ndarray, grid: BevGrid) -> np.ndarray:
    """(H, W) bool: cells whose centre lies inside any oriented box footprint (plus each box's centre cell)."""
    out = np.zeros(grid.shape, dtype=bool)
    xs, ys = grid.cell_centers()
    res = grid.resolution
    for (cx, cy), (w, length), yaw in zip(centers_xy, sizes_wl, yaws, strict=True):
        reach = 0.5 * float(np.hypot(w, length))
        r0, r1 = np.searchsorted(xs, [cx - reach - res, cx + reach + res])
        c0, c1 = np.searchsorted(ys, [cy - reach - res, cy + reach + res])
        if r0 >= r1 or c0 >= c1:
            continue
        dx = xs[r0:r1, None] - cx
        dy = ys[None, c0:c1] - cy
        cos, sin = np.cos(yaw), np.sin(yaw)
        along = dx * cos + dy * sin
        across = -dx * sin + dy * cos
        out[r0:r1, c0:c1] |= (np.abs(along) <= length / 2.0) & (np.abs(across) <= w / 2.0)
    rows, cols, inside = grid.cell_of(centers_xy[:, :2]) if len(centers_xy) else (None, None, None)
    if inside is not None and inside.any():
        out[rows[inside], cols[inside]] = True
    return out


def _boxes_in_ego(nusc: NuScenes, sample: dict, global_to_ego: Transform) -> dict:
    """Detection-class annotations of `sample` in the frame `global_to_ego` maps into."""
    centers, sizes, yaws, velocities, labels, instances, ann_tokens = [], [], [], [], [], [], []
    lidar_pts, radar_pts = [], []
    for ann_token in sample["anns"]:
        ann = nusc.get("sample_annotation", ann_token)
        cls = CATEGORY_TO_DETECTION.get(ann["category_name"])
        if cls is None:
            continue
        box = nusc.get_box(ann_token)
        rotation = global_to_ego.rotation @ box.orientation.rotation_matrix
        centers.append(global_to_ego.apply(box.center))
        sizes.append(np.asarray(box.wlh, dtype=float))
        yaws.append(float(np.arctan2(rotation[1, 0], rotation[0, 0])))
        velocity = nusc.box_velocity(ann_token)  # NaN stays: an unknown velocity is not 0 (the loss skips it)
        velocities.append((global_to_ego.rotation @ velocity)[:2])
        labels.append(DETECTION_CLASSES.index(cls))
        instances.append(ann["instance_token"])
        lidar_pts.append(int(ann["num_lidar_pts"]))
        radar_pts.append(int(ann["num_radar_pts"]))
        ann_tokens.append(ann_token)
    n = len(centers)
    return {
        "centers": np.asarray(centers, dtype=float).reshape(n, 3),
        "sizes_wlh": np.asarray(sizes, dtype=float).reshape(n, 3),
        "yaws": np.asarray(yaws, dtype=float).reshape(n),
        "velocities": np.asarray(velocities, dtype=float).reshape(n, 2),
        "labels": np.asarray(labels, dtype=np.int64).reshape(n),
        "instance_tokens": instances,
        "num_lidar_pts": np.asarray(lidar_pts, dtype=np.int64).reshape(n),
        "num_radar_pts": np.asarray(radar_pts, dtype=np.int64).reshape(n),
        "ann_tokens": ann_tokens,
    }


def _agent_futures(nusc: NuScenes, ann_tokens: list[str], global_to_ego: Transform,
                   future_samples: list[dict | None]) -> tuple[np.ndarray, np.ndarray]:
    """Each annotation's later positions, slotted by the keyframe they were annotated in: an instance missing
    from some keyframes (occluded, out of range) keeps its later positions at their own times."""
    step_of = {record["token"]: step for step, record in enumerate(future_samples[:FORECAST_STEPS]) if record}
    futures = np.zeros((len(ann_tokens), FORECAST_STEPS, 2))
    mask = np.zeros((len(ann_tokens), FORECAST_STEPS), dtype=bool)
    for i, token in enumerate(ann_tokens):
        token = nusc.get("sample_annotation", token)["next"]
        while token:
            ann = nusc.get("sample_annotation", token)
            step = step_of.get(ann["sample_token"])
            if step is None:  # beyond the horizon
                break
            futures[i, step] = global_to_ego.apply(ann["translation"])[:2]
            mask[i, step] = True
            token = ann["next"]
    return futures, mask


@dataclass
class OccupancyFootprints:
    """Dynamic-class box footprints of the occupancy frames (now, +0.5 .. +2.0 s) in one ego frame, as boxes:
    the form BEV augmentation can move before `rasterize` (training/sample_cache.py stores this)."""

    centers_xy: np.ndarray  # (M, 2)
    sizes_wl: np.ndarray  # (M, 2)
    yaws: np.ndarray  # (M,)
    frame: np.ndarray  # (M,) int64 occupancy step of each footprint
    valid: np.ndarray  # (OCCUPANCY_STEPS,) bool: which frames exist (the scene may end before +2 s)

    def rasterize(self, grid: BevGrid) -> np.ndarray:
        frames = np.zeros((OCCUPANCY_STEPS, *grid.shape), dtype=bool)
        for step in np.flatnonzero(self.valid):
            pick = self.frame == step
            frames[step] = rasterize_footprints(self.centers_xy[pick], self.sizes_wl[pick], self.yaws[pick], grid)
        return frames


def occupancy_footprints(nusc: NuScenes, sample: dict, future: list[dict | None],
                         global_to_ego: Transform) -> OccupancyFootprints:
    centers, sizes, yaws, frames = [np.zeros((0, 2))], [np.zeros((0, 2))], [np.zeros(0)], [np.zeros(0, np.int64)]
    valid = np.zeros(OCCUPANCY_STEPS, dtype=bool)
    for step, record in enumerate([sample, *future[: OCCUPANCY_STEPS - 1]]):
        if record is None:
            continue
        boxes = _boxes_in_ego(nusc, record, global_to_ego)
        dynamic = np.array([label in _DYNAMIC_LABELS for label in boxes["labels"]], dtype=bool).reshape(-1)
        centers.append(boxes["centers"][dynamic, :2])
        sizes.append(boxes["sizes_wlh"][dynamic, :2])
        yaws.append(boxes["yaws"][dynamic])
        frames.append(np.full(int(dynamic.sum()), step, dtype=np.int64))
        valid[step] = True
    return OccupancyFootprints(np.concatenate(centers), np.concatenate(sizes), np.concatenate(yaws),
                               np.concatenate(frames), valid)


def ego_future_of(nusc: NuScenes, future: list[dict | None], global_to_ego: Transform) -> tuple[np.ndarray, np.ndarray]:
    """Ego xy at +0.5 .. +3.0 s (the next PLAN_STEPS keyframes) in this ego frame, and which steps exist."""
    ego_future = np.zeros((PLAN_STEPS, 2))
    mask = np.zeros(PLAN_STEPS, dtype=bool)
    for step, record in enumerate(future[:PLAN_STEPS]):
        if record is not None:
            ego_future[step] = global_to_ego.apply(ego_pose_of_sample(nusc, record)[0].translation)[:2]
            mask[step] = True
    return ego_future, mask


def command_from_ego_future(ego_future: np.ndarray, mask: np.ndarray,
                            threshold_m: float = COMMAND_LATERAL_THRESHOLD_M) -> int:
    """Command from the lateral offset at the last valid future step; STRAIGHT when there is none."""
    valid = np.flatnonzero(mask)
    if valid.size == 0:
        return int(Command.STRAIGHT)
    lateral = float(ego_future[valid[-1], 1])
    if lateral > threshold_m:
        return int(Command.LEFT)
    if lateral < -threshold_m:
        return int(Command.RIGHT)
    return int(Command.STRAIGHT)


@dataclass
class SampleLabels:
    """Everything `load_ground_truth` reads from the tables for one keyframe, before any rasterising on a grid."""

    sample: dict
    ego_to_global: Transform
    timestamp_us: int
    boxes: dict
    futures: np.ndarray
    future_mask: np.ndarray
    occupancy: OccupancyFootprints
    ego_future: np.ndarray
    ego_future_mask: np.ndarray
    map_name: str


def read_sample_labels(nusc: NuScenes, sample_token: str) -> SampleLabels:
    sample = nusc.get("sample", sample_token)
    ego_to_global, timestamp = ego_pose_of_sample(nusc, sample)
    global_to_ego = ego_to_global.inverse()
    boxes = _boxes_in_ego(nusc, sample, global_to_ego)
    future_samples = following_samples(nusc, sample, max(PLAN_STEPS, OCCUPANCY_STEPS - 1, FORECAST_STEPS))
    futures, future_mask = _agent_futures(nusc, boxes["ann_tokens"], global_to_ego, future_samples)
    ego_future, ego_future_mask = ego_future_of(nusc, future_samples, global_to_ego)
    return SampleLabels(sample, ego_to_global, timestamp, boxes, futures, future_mask,
                        occupancy_footprints(nusc, sample, future_samples, global_to_ego), ego_future,
                        ego_future_mask, map_name_of_sample(nusc, sample))


def load_ground_truth(nusc: NuScenes, nusc_map_cache: MutableMapping[str, NuScenesMap], sample_token: str,
                      grid: BevGrid) -> GroundTruth:
    """All task ground truth of one keyframe. `nusc_map_cache` may start as `{}`; maps are added by name."""
    labels = read_sample_labels(nusc, sample_token)
    masks, valid = sample_map_masks(nusc, nusc_map_cache, labels, grid)
    return ground_truth_from_labels(labels, masks, labels.occupancy.rasterize(grid), valid)


def sample_map_masks(nusc: NuScenes, nusc_map_cache: MutableMapping[str, NuScenesMap], labels: SampleLabels,
                     grid: BevGrid) -> tuple[np.ndarray, np.ndarray]:
    """(masks, valid) of a keyframe on `grid`: the map expansion's layers, all known, or without it the semantic
    prior's drivable area only."""
    if not has_map_expansion(nusc, labels.map_name):
        return prior_masks_for_pose(nusc, labels.sample, labels.ego_to_global, grid)
    masks = map_masks_for_pose(get_map(nusc, nusc_map_cache, labels.map_name), labels.ego_to_global, grid)
    return masks, np.ones(len(masks), dtype=bool)


def ground_truth_from_labels(labels: SampleLabels, map_masks: np.ndarray, occupancy: np.ndarray,
                             map_valid: np.ndarray | None = None) -> GroundTruth:
    boxes = labels.boxes
    return GroundTruth(
        sample_token=labels.sample["token"],
        scene_token=labels.sample["scene_token"],
        timestamp_us=labels.timestamp_us,
        ego_to_global=labels.ego_to_global,
        centers=boxes["centers"],
        sizes_wlh=boxes["sizes_wlh"],
        yaws=boxes["yaws"],
        velocities=boxes["velocities"],
        labels=boxes["labels"],
        instance_tokens=boxes["instance_tokens"],
        num_lidar_pts=boxes["num_lidar_pts"],
        num_radar_pts=boxes["num_radar_pts"],
        futures=labels.futures,
        future_mask=labels.future_mask,
        map_masks=map_masks,
        occupancy=occupancy,
        ego_future=labels.ego_future,
        ego_future_mask=labels.ego_future_mask,
        command=command_from_ego_future(labels.ego_future, labels.ego_future_mask),
        occupancy_mask=labels.occupancy.valid.copy(),
        map_valid=np.ones(len(MAP_CLASSES), dtype=bool) if map_valid is None else map_valid,
    )
