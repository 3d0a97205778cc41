"""Writes a synthetic nuScenes-format dataroot: tables, camera JPEGs, LiDAR sweeps and maps.

Timeline of a scene (as in nuScenes): LiDAR sweeps at 20 Hz on the simulation grid, keyframes (samples) at
2 Hz on LiDAR sweeps, cameras at 12 Hz each with its own fixed offset to the LiDAR (the rig's
`camera_stagger_us_vs_lidar`), and every sample_data with its own ego pose at its own timestamp.
Annotations are the agents' boxes at the keyframe LiDAR time; `num_lidar_pts` counts that sweep's points
inside the box, visibility is the unoccluded share of the object's pixels over the six keyframe images.
An object is annotated from the first to the last keyframe in which the LiDAR sees it (while it stays
within range), like nuScenes' annotators who keep a track through short occlusions.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from nuscenes.utils import splits as devkit_splits
from tqdm import tqdm

from tinybev_ros.geometry import CAMERA_NAMES, LIDAR_NAME, Rig, yaw_to_quat
from tinybev_ros.paths import check_output_folder
from tinybev_ros.synth.camera import CameraModel, Lighting, RenderResult, render
from tinybev_ros.synth.config import SCENE_SPACING_US, SynthConfig
from tinybev_ros.synth.lidar import Lidar, count_points_in_boxes
from tinybev_ros.synth.map_expansion import write_map
from tinybev_ros.synth.population import Scene, build_scene
from tinybev_ros.synth.scenery import Prop, build_scenery
from tinybev_ros.synth.solids import SolidWorld
from tinybev_ros.synth.tables import Tables, link_chain, visibility_token
from tinybev_ros.synth.texture import GroundTexture, paint_ground
from tinybev_ros.synth.tokens import TokenFactory
from tinybev_ros.synth.world import World, build_world

KEYFRAME_S = 0.5
LIDAR_PERIOD_S = 0.05
CAMERA_PERIOD_S = 1.0 / 12.0
SWEEPS_BEFORE_FIRST = 9  # LiDAR sweeps before the first keyframe, for multi-sweep models
VEHICLE_CLASSES = ("car", "truck", "bus", "trailer", "construction_vehicle")
LOG_VEHICLE = {"boston-seaport": "n008"}
BASE_TIMESTAMP_US = 1_532_402_927_000_000
MARKER = "tinybev_synth.json"  # the config a dataset was generated with; `--force` replaces only such a folder


def scene_split_names(config: SynthConfig) -> list[tuple[str, str]]:
    """(scene name, split) per scene, taken from the devkit's split lists so its evaluators accept them."""
    n = config.scenes
    n_val = max(1, int(round(n * config.val_fraction))) if n >= 2 else 0
    n_train = n - n_val
    if config.version.endswith("mini"):
        train, val, train_name, val_name = devkit_splits.mini_train, devkit_splits.mini_val, "mini_train", "mini_val"
    else:
        train, val, train_name, val_name = devkit_splits.train, devkit_splits.val, "train", "val"
    if n_train > len(train) or n_val > len(val):
        raise ValueError(f"{config.version} has {len(train)} train and {len(val)} val scene names; "
                         f"{n_train} train + {n_val} val scenes requested (use --version v1.0-trainval for more)")
    return [(name, train_name) for name in train[:n_train]] + [(name, val_name) for name in val[:n_val]]


def _derive_seed(*parts: object) -> int:
    return int(TokenFactory(0)(*parts)[:8], 16)


@dataclass
class MapAssets:
    """The static, per-map part of the world, shared by all scenes on that map."""

    world: World
    texture: GroundTexture
    props: list[Prop]

    @staticmethod
    def build(config: SynthConfig, map_name: str) -> MapAssets:
        seed = _derive_seed("map", config.seed, map_name)
        world = build_world(config, map_name, seed)
        return MapAssets(world, paint_ground(world, seed + 1), build_scenery(world, seed + 2))


@dataclass
class SceneSensors:
    """Renders any camera or LiDAR frame of a scene at any time, with or without the annotated agents."""

    assets: MapAssets
    scene: Scene
    rig: Rig
    lighting: Lighting
    config: SynthConfig
    solids: SolidWorld = field(init=False)
    cameras: dict[str, CameraModel] = field(init=False)
    lidar: Lidar = field(init=False)

    def __post_init__(self) -> None:
        self.solids = SolidWorld(self.scene, self.assets.props)
        self.cameras = {name: CameraModel(self.rig.cameras[name], self.lighting) for name in CAMERA_NAMES}
        self.lidar = Lidar(self.rig.lidar_to_ego, self.config.lidar_azimuth_steps, self.config.lidar_max_range_m)

    def camera(self, channel: str, t: float, include_agents: bool = True) -> RenderResult:
        ego_xy, ego_yaw = self.scene.ego_pose(t)
        return render(self.cameras[channel], self.assets.texture, self.solids.at(t, include_agents), ego_xy, ego_yaw,
                      frame=int(round(t * 1000)))

    def scan(self, t: float, rng: np.random.Generator, include_agents: bool = True) -> np.ndarray:
        ego_xy, ego_yaw = self.scene.ego_pose(t)
        return self.lidar.scan(self.solids.at(t, include_agents), self.assets.texture, ego_xy, ego_yaw, rng)


def scene_seed(config: SynthConfig, scene_index: int) -> int:
    return _derive_seed("scene", config.seed, scene_index)


def build_scene_sensors(config: SynthConfig, assets: MapAssets, scene_index: int, rig: Rig) -> SceneSensors:
    """Rebuild scene `scene_index` exactly as `generate` made it."""
    seed = scene_seed(config, scene_index)
    scene = build_scene(assets.world, config, seed, scene_index)
    lighting = Lighting.random(np.random.default_rng(seed + 7))
    return SceneSensors(assets, scene, rig, lighting, config)


def scene_map_name(config: SynthConfig, scene_index: int) -> str:
    return config.maps[scene_index % len(config.maps)]


def rebuild_scene(config: SynthConfig, scene_name: str, rig: Rig | None = None) -> SceneSensors:
    """The sensors of a written scene, found by its name, for re-rendering frames (tests, pictures)."""
    names = [name for name, _ in scene_split_names(config)]
    if scene_name not in names:
        raise ValueError(f"synth: scene {scene_name!r} is not in this configuration's scenes {names}")
    index = names.index(scene_name)
    assets = MapAssets.build(config, scene_map_name(config, index))
    return build_scene_sensors(config, assets, index, rig or Rig.load())


def scene_time(sample_timestamp_us: int, scene_first_timestamp_us: int) -> float:
    """Seconds since the scene start of a timestamp (the inverse of the generator's clock)."""
    return (sample_timestamp_us - scene_first_timestamp_us) / 1e6


def generate(out_dir: str | Path, config: SynthConfig, overwrite: bool = False) -> Path:
    """Write a complete nuScenes-format dataroot to `out_dir` (built beside it, then renamed into place)."""
    out_dir = check_output_folder(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(f"output directory {out_dir} exists and is not empty (use --force to replace)")
        if not (out_dir / MARKER).is_file():
            raise FileExistsError(f"synth: {out_dir} was not written by tinybev synth (no {MARKER}); --force replaces "
                                  "only a synthetic dataset: remove it yourself or choose another directory")
    names = scene_split_names(config)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        _write_dataset(tmp, config, names)
        if out_dir.exists():
            trash = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
            out_dir.rename(trash)
            tmp.rename(out_dir)
            shutil.rmtree(trash)
        else:
            tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _write_dataset(root: Path, config: SynthConfig, names: list[tuple[str, str]]) -> None:
    rig = Rig.load()
    token = TokenFactory(config.seed)
    tables = Tables(token, rig)
    assets: dict[str, MapAssets] = {}
    map_records: dict[str, dict] = {}
    n_samples = int(round(config.duration_s / KEYFRAME_S))
    for channel in (*CAMERA_NAMES, LIDAR_NAME):
        (root / "samples" / channel).mkdir(parents=True)
        if config.sweeps:
            (root / "sweeps" / channel).mkdir(parents=True)
    splits: dict[str, list[str]] = {}
    progress = tqdm(total=len(names) * n_samples, desc="synth keyframes", unit="sample")
    for index, (name, split) in enumerate(names):
        map_name = scene_map_name(config, index)
        if map_name not in assets:
            assets[map_name] = MapAssets.build(config, map_name)
            filename, _ = write_map(assets[map_name].world, token, root)
            map_records[map_name] = tables.add("map", {"token": token("map", map_name), "log_tokens": [],
                                                       "category": "semantic_prior", "filename": filename})
        sensors = build_scene_sensors(config, assets[map_name], index, rig)
        _write_scene(root, config, tables, token, sensors, index, name, map_records[map_name], n_samples, progress)
        splits.setdefault(split, []).append(name)
    progress.close()
    tables.write(root / config.version)
    (root / config.version / "splits.json").write_text(json.dumps(splits, indent=1))
    (root / MARKER).write_text(json.dumps(asdict(config), indent=1, default=str))


@dataclass
class _Seen:
    """One agent at one keyframe."""

    frame: int
    translation: list[float]
    yaw: float
    speed: float
    num_lidar_pts: int
    visibility: str


def _write_scene(root: Path, config: SynthConfig, tables: Tables, token: TokenFactory, sensors: SceneSensors,
                 index: int, name: str, map_record: dict, n_samples: int, progress: tqdm) -> None:
    scene = sensors.scene
    rig = sensors.rig
    map_name = sensors.assets.world.map_name
    t0_us = BASE_TIMESTAMP_US + index * SCENE_SPACING_US
    date = "2018-07-24"
    logfile = f"{LOG_VEHICLE.get(map_name, 'n015')}-{date}-{11 + index % 12:02d}-{(index * 7) % 60:02d}-45+0800"
    log_token = token("log", index)
    tables.add("log", {"token": log_token, "logfile": logfile, "vehicle": logfile.split("-")[0],
                       "date_captured": date, "location": map_name})
    map_record["log_tokens"].append(log_token)
    calib = tables.add_calibration(log_token)
    lidar_calib = next(c for c in tables.records["calibrated_sensor"] if c["token"] == calib[LIDAR_NAME])
    scene_token = token("scene", index)

    def stamp(t: float) -> int:
        return t0_us + int(round(t * 1e6))

    stagger = {c: rig.camera_stagger_us.get(c, 0) / 1e6 for c in CAMERA_NAMES}
    sample_tokens = [token("sample", index, k) for k in range(n_samples)]
    samples = [{"token": sample_tokens[k], "timestamp": stamp(k * KEYFRAME_S), "scene_token": scene_token}
               for k in range(n_samples)]
    link_chain(samples)
    for s in samples:
        tables.add("sample", s)
    chains: dict[str, list[dict]] = {c: [] for c in (*CAMERA_NAMES, LIDAR_NAME)}

    def add_data(channel: str, t: float, key: bool, k_sample: int, data: bytes, ext: str) -> dict:
        ts = stamp(t)
        folder = "samples" if key else "sweeps"
        filename = f"{folder}/{channel}/{logfile}__{channel}__{ts}.{ext}"
        (root / filename).write_bytes(data)
        tok = token("sample_data", index, channel, ts)
        xy, yaw = scene.ego_pose(t)
        tables.add_ego_pose(tok, ts, xy, yaw)
        is_cam = channel != LIDAR_NAME
        chains[channel].append({
            "token": tok, "sample_token": sample_tokens[k_sample], "ego_pose_token": tok,
            "calibrated_sensor_token": calib[channel], "timestamp": ts,
            "fileformat": "jpg" if is_cam else "pcd", "is_key_frame": key,
            "height": rig.cameras[channel].height if is_cam else 0,
            "width": rig.cameras[channel].width if is_cam else 0, "filename": filename,
        })
        return chains[channel][-1]

    def jpeg(img: np.ndarray) -> bytes:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality])
        if not ok:
            raise RuntimeError("synth: JPEG encoding failed")
        return buf.tobytes()

    def frame_rng(*key: object) -> np.random.Generator:
        return np.random.default_rng(_derive_seed("frame", config.seed, index, *key))

    n_agents = len(scene.agents)
    sizes = np.array([a.size for a in scene.agents], dtype=float).reshape(-1, 3)
    seen: list[list[_Seen]] = [[] for _ in range(n_agents)]
    for k in range(n_samples):
        t = k * KEYFRAME_S
        points = sensors.scan(t, frame_rng("lidar", k))
        add_data(LIDAR_NAME, t, True, k, points.tobytes(), "pcd.bin")
        xy, yaw, speed = scene.agent_states(t)
        ego_xy, _ = scene.ego_pose(t)
        in_range = np.linalg.norm(xy - ego_xy, axis=1) < config.annotation_range_m
        centres = np.column_stack([xy, sizes[:, 2] / 2])
        counts = np.zeros(n_agents, dtype=np.int64)
        idx = np.where(in_range)[0]
        if len(idx):
            counts[idx] = count_points_in_boxes(points, centres[idx], sizes[idx], yaw[idx],
                                                tables.records["ego_pose"][-1], lidar_calib)
        visible = np.zeros(n_agents)
        total = np.zeros(n_agents)
        for channel in CAMERA_NAMES:
            tc = t + stagger[channel]
            result = sensors.camera(channel, tc)
            add_data(channel, tc, True, k, jpeg(result.image), "jpg")
            visible += np.bincount(result.ids.ravel(), minlength=n_agents + 1)[1:n_agents + 1]
            for owner, pixels in result.silhouettes.items():
                total[owner] += pixels
        for i in idx:
            frac = visible[i] / total[i] if total[i] > 0 else 0.0
            seen[i].append(_Seen(k, [float(centres[i, 0]), float(centres[i, 1]), float(centres[i, 2])],
                                 float(yaw[i]), float(speed[i]), int(counts[i]), visibility_token(frac)))
        progress.update(1)
    if config.sweeps:
        _write_sweeps(sensors, n_samples, stagger, add_data, jpeg, frame_rng)
    for chain in chains.values():
        chain.sort(key=lambda r: r["timestamp"])
        link_chain(chain)
        for rec in chain:
            tables.add("sample_data", rec)
    n_ann = _write_annotations(tables, token, scene, seen, sample_tokens, index)
    turns = ", ".join(scene.ego_turns[:3]) or "straight"
    tables.add("scene", {
        "token": scene_token, "log_token": log_token, "nbr_samples": n_samples,
        "first_sample_token": sample_tokens[0], "last_sample_token": sample_tokens[-1], "name": name,
        "description": f"synthetic {map_name}, {sensors.lighting.kind}; ego route: {turns}; {n_ann} annotations",
    })


def _write_sweeps(sensors: SceneSensors, n_samples: int, stagger: dict[str, float], add_data, jpeg,
                  frame_rng) -> None:
    """Non-keyframe data: LiDAR at 20 Hz (also a few sweeps before the first keyframe), cameras at 12 Hz."""
    per_key = int(round(KEYFRAME_S / LIDAR_PERIOD_S))
    last = (n_samples - 1) * per_key
    for j in range(-SWEEPS_BEFORE_FIRST, last):
        if j % per_key == 0:
            continue
        t = j * LIDAR_PERIOD_S
        k = min(max(int(round(t / KEYFRAME_S)), 0), n_samples - 1)
        add_data(LIDAR_NAME, t, False, k, sensors.scan(t, frame_rng("sweep", j)).tobytes(), "pcd.bin")
    per_key_cam = int(round(KEYFRAME_S / CAMERA_PERIOD_S))
    for k in range(n_samples - 1):
        for m in range(1, per_key_cam):
            for channel in CAMERA_NAMES:
                t = k * KEYFRAME_S + stagger[channel] + m * CAMERA_PERIOD_S
                k_near = k if m < per_key_cam / 2 else k + 1
                add_data(channel, t, False, k_near, jpeg(sensors.camera(channel, t).image), "jpg")


def _attribute(cls: str, agent, speed: float) -> str | None:
    if cls in VEHICLE_CLASSES:
        if agent.parked:
            return "vehicle.parked"
        return "vehicle.moving" if speed > 0.3 else "vehicle.stopped"
    if cls in ("bicycle", "motorcycle"):
        return "cycle.with_rider" if agent.with_rider else "cycle.without_rider"
    if cls == "pedestrian":
        return "pedestrian.moving" if speed > 0.2 else "pedestrian.standing"
    return None


def _write_annotations(tables: Tables, token: TokenFactory, scene: Scene, seen: list[list[_Seen]],
                       sample_tokens: list[str], scene_index: int) -> int:
    count = 0
    for i, frames in enumerate(seen):
        agent = scene.agents[i]
        runs: list[list[_Seen]] = []
        for f in frames:
            if runs and runs[-1][-1].frame == f.frame - 1:
                runs[-1].append(f)
            else:
                runs.append([f])
        for r, run in enumerate(runs):
            lit = [j for j, f in enumerate(run) if f.num_lidar_pts > 0]
            if not lit:
                continue
            run = run[lit[0]:lit[-1] + 1]
            inst_token = token("instance", scene_index, i, r)
            records = []
            for f in run:
                attr = _attribute(agent.cls, agent, f.speed)
                records.append({
                    "token": token("sample_annotation", scene_index, i, f.frame),
                    "sample_token": sample_tokens[f.frame], "instance_token": inst_token,
                    "visibility_token": f.visibility,
                    "attribute_tokens": [tables.attribute_token[attr]] if attr else [],
                    "translation": f.translation, "size": [float(v) for v in agent.size],
                    "rotation": yaw_to_quat(f.yaw).tolist(),
                    "num_lidar_pts": f.num_lidar_pts, "num_radar_pts": 0,
                })
            link_chain(records)
            for rec in records:
                tables.add("sample_annotation", rec)
            tables.add("instance", {"token": inst_token, "category_token": tables.category_token[agent.category],
                                    "nbr_annotations": len(records), "first_annotation_token": records[0]["token"],
                                    "last_annotation_token": records[-1]["token"]})
            count += len(records)
    return count
