"""Synthetic data generation speed on one CPU core (target: one keyframe, 6 images + LiDAR, < 1.5 s).

Usage:
  python benchmarks/synth_speed.py                 # 8 keyframes of one scene
  python benchmarks/synth_speed.py --keyframes 20 --map boston-seaport

Times the per-keyframe work exactly as `tinybev synth` does it (LiDAR ray casting, devkit point counts,
six camera renders, JPEG encoding) and the per-map and per-scene set-up separately, then projects the time
for a 10-scene x 20 s dataset with and without sweeps.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import time  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from tinybev_ros.geometry import CAMERA_NAMES, Rig  # noqa: E402
from tinybev_ros.synth.config import MAP_NAMES, SynthConfig  # noqa: E402
from tinybev_ros.synth.generator import MapAssets, build_scene_sensors  # noqa: E402
from tinybev_ros.synth.lidar import count_points_in_boxes  # noqa: E402
from tinybev_ros.synth.tables import Tables  # noqa: E402
from tinybev_ros.synth.tokens import TokenFactory  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keyframes", type=int, default=8)
    parser.add_argument("--map", default="singapore-onenorth", choices=list(MAP_NAMES))
    args = parser.parse_args()
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    cv2.setNumThreads(1)

    config = SynthConfig(scenes=1, duration_s=max(args.keyframes * 0.5, 1.0))
    rig = Rig.load()
    t = time.perf_counter()
    assets = MapAssets.build(config, args.map)
    t_map = time.perf_counter() - t
    t = time.perf_counter()
    sensors = build_scene_sensors(config, assets, 0, rig)
    t_scene = time.perf_counter() - t
    tables = Tables(TokenFactory(0), rig)
    calib = tables.add_calibration("bench")
    lidar_cs = next(c for c in tables.records["calibrated_sensor"] if c["token"] == calib["LIDAR_TOP"])
    sizes = np.array([a.size for a in sensors.scene.agents]).reshape(-1, 3)
    stages = {"lidar": 0.0, "point counts": 0.0, "cameras": 0.0, "jpeg": 0.0}
    rng = np.random.default_rng(0)
    for k in range(args.keyframes):
        tk = k * 0.5
        t = time.perf_counter()
        points = sensors.scan(tk, rng)
        stages["lidar"] += time.perf_counter() - t
        t = time.perf_counter()
        xy, yaw, _ = sensors.scene.agent_states(tk)
        ego_xy, ego_yaw = sensors.scene.ego_pose(tk)
        tables.add_ego_pose("bench", 0, ego_xy, ego_yaw)
        near = np.linalg.norm(xy - ego_xy, axis=1) < config.annotation_range_m
        count_points_in_boxes(points, np.column_stack([xy, sizes[:, 2] / 2])[near], sizes[near], yaw[near],
                              tables.records["ego_pose"][-1], lidar_cs)
        stages["point counts"] += time.perf_counter() - t
        for channel in CAMERA_NAMES:
            t = time.perf_counter()
            img = sensors.camera(channel, tk - 0.03).image
            stages["cameras"] += time.perf_counter() - t
            t = time.perf_counter()
            cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality])
            stages["jpeg"] += time.perf_counter() - t
    n = args.keyframes
    per_key = sum(stages.values()) / n
    lidar_one = stages["lidar"] / n
    camera_one = (stages["cameras"] + stages["jpeg"]) / n / len(CAMERA_NAMES)
    per_key_sweeps = per_key + 9 * lidar_one + 5 * len(CAMERA_NAMES) * camera_one
    print(f"synth speed on one core ({args.map}, {len(sensors.scene.agents)} agents, {n} keyframes, "
          f"{len(points)} LiDAR points)")
    print(f"  set-up: map {t_map:.2f} s (once per map), scene {t_scene:.2f} s (simulation, once per scene)")
    for name, value in stages.items():
        print(f"  {name:<13} {1000 * value / n:7.1f} ms / keyframe")
    print(f"  keyframe total {per_key:.3f} s  (target < 1.5 s: {'met' if per_key < 1.5 else 'MISSED'})")
    scenes, keys = 10, 40
    total = len(config.maps) * t_map + scenes * (t_scene + keys * per_key)
    total_sweeps = len(config.maps) * t_map + scenes * (t_scene + keys * per_key_sweeps)
    print(f"  10 scenes x 20 s: {total / 60:.1f} min keyframes only, {total_sweeps / 60:.1f} min with sweeps "
          f"(one core)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
