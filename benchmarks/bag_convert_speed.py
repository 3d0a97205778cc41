"""nuScenes -> bag conversion speed on one core, as a multiple of real time (target: >= 5x, keyframes only).

Usage:
  python benchmarks/bag_convert_speed.py                      # a generated 20 s synthetic scene
  python benchmarks/bag_convert_speed.py --dataroot D --version v1.0-mini --scene scene-0061 [--sweeps]

Loading the devkit tables is timed separately: it is paid once per process, not per scene. Both wall time and
the process's CPU time are printed; on a shared machine the CPU figure is the one that measures the converter.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataroot", type=Path, help="nuScenes dataroot (default: generate a synthetic scene)")
    parser.add_argument("--version", default="v1.0-mini")
    parser.add_argument("--scene", help="scene name (default: the first scene)")
    parser.add_argument("--duration", type=float, default=20.0, help="length of the generated synthetic scene, s")
    parser.add_argument("--sweeps", action="store_true", help="also time the full-rate (sweeps) conversion")
    args = parser.parse_args()

    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})  # one core, as the target says
    import cv2

    cv2.setNumThreads(1)

    from tinybev_ros.ros.bag.nuscenes_to_bag import ConvertOptions, convert_scene, open_nuscenes

    with tempfile.TemporaryDirectory(prefix="bag-bench-") as tmp:
        dataroot, version = args.dataroot, args.version
        if dataroot is None:
            from tinybev_ros.synth import SynthConfig, generate

            started = time.perf_counter()
            config = SynthConfig(scenes=1, duration_s=args.duration, sweeps=args.sweeps, version=version)
            dataroot = generate(Path(tmp) / "synth", config)
            print(f"generated a {args.duration:.0f} s synthetic scene in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        nusc = open_nuscenes(dataroot, version)
        print(f"devkit tables loaded in {time.perf_counter() - started:.2f} s")
        scene = args.scene or nusc.scene[0]["name"]
        modes = [("keyframes", ConvertOptions(progress=False))]
        if args.sweeps:
            modes.append(("sweeps", ConvertOptions(sweeps=True, progress=False)))
        for name, options in modes:
            cpu_start = time.process_time()
            summary = convert_scene(nusc, scene, Path(tmp) / f"bag-{name}", options)
            cpu_s = time.process_time() - cpu_start  # robust to other processes sharing the core
            print(f"{name:9s}: {sum(summary.counts.values())} messages, {summary.duration_s:.2f} s of data, "
                  f"{summary.size_bytes / 1e6:.1f} MB; wall {summary.wall_s:.2f} s = {summary.x_real_time:.1f}x "
                  f"real time, CPU {cpu_s:.2f} s = {summary.duration_s / cpu_s:.1f}x (one core, CPU {cpu})"
                  + ("  target >= 5x" if name == "keyframes" else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
