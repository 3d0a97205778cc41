"""Latency and throughput of `tinybev_node` on a replayed bag, end to end (decode -> infer -> publish).

    python benchmarks/node_latency.py [--input-hz 12] [--duration 10] [--checkpoint C] [--device cuda]

Two runs side by side on the same bag: "before" (fp32, full JPEG decodes, torch on every core, a 2-thread
MultiThreadedExecutor: the node as it was) and "now" (the defaults: bf16 where the CPU has it, JPEGs decoded at
the model's scale, one core left to the rest, a single-threaded executor), and their ratio. (Both share today's
synchronizer, which no longer takes one camera's callback backlog for a bag loop.)

A seeded synthetic scene (keyframes at 2 Hz) is converted to a bag and replayed at the rate that gives
`--input-hz` camera frames per second (six 1600x900 JPEG streams). The node's own /diagnostics (recorded to
a bag) give the achieved output rate, the latency from the arrival of a frame set's last image to the publish
of its outputs (p50/p99), the latency from the header stamp to publish on the node's (sim) clock, and the
frames dropped by the latest-wins policy.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from nuscenes.nuscenes import NuScenes
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Reader

from tinybev_ros.paths import default_checkpoint, share_file
from tinybev_ros.ros.bag.nuscenes_to_bag import ConvertOptions, convert_scene
from tinybev_ros.ros.run import run_pipeline
from tinybev_ros.synth import SynthConfig, generate


def last_diagnostics(bag: Path) -> dict[str, str]:
    from diagnostic_msgs.msg import DiagnosticArray

    last = {}
    with Reader(bag) as reader:
        connections = [c for c in reader.connections if c.topic == "/diagnostics"]
        for _, _, raw in reader.messages(connections=connections):
            status = deserialize_message(raw, DiagnosticArray).status[0]
            last = {kv.key: kv.value for kv in status.values}
    return last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input-hz", type=float, default=12.0, help="camera frame sets per second fed to the node")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of synthetic scene")
    parser.add_argument("--checkpoint", default="", help="student checkpoint (default: the shipped tiny student)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", help="the node's precision in the 'now' run")
    parser.add_argument("--work", type=Path, help="keep the dataset and bags here (default: a temp dir)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="tinybev-latency-"))
    dataroot = work / "dataset"
    config = SynthConfig(scenes=1, seed=11, duration_s=args.duration)
    if not (dataroot / config.version / "scene.json").exists():
        generate(dataroot, config)
    nusc = NuScenes(config.version, str(dataroot), verbose=False)
    bag = work / "scene"
    if not (bag / "metadata.yaml").exists():
        convert_scene(nusc, nusc.scene[0]["name"], bag, ConvertOptions(progress=False))
    rate = args.input_hz / 2.0  # keyframes are 2 Hz
    checkpoint = args.checkpoint or str(default_checkpoint())
    sent = len(nusc.sample)
    settings = {"before": ["precision:=fp32", "jpeg_reduced_decode:=false",  # the node of 2026-12-01
                           f"inference_threads:={os.cpu_count() or 1}", "executor:=multi"],
                "now": [f"precision:={args.precision}", "jpeg_reduced_decode:=true"]}
    results = {}
    for name, overrides in settings.items():
        outputs = work / f"outputs_{name}"
        frames = run_pipeline(bag, share_file("config/tinybev.yaml"), checkpoint, args.device, rate, record=outputs,
                              overrides=[*overrides, "diagnostics_period_s:=0.25"], force=True)
        results[name] = (frames, last_diagnostics(outputs))
    print(f"\nnode latency benchmark: {sent} frame sets of six 1600x900 JPEGs at {args.input_hz:.1f} Hz "
          f"(bag rate {rate:.1f}), device {args.device}, checkpoint {Path(checkpoint).name}")
    print(f"  {'':34s} {'before':>14s} {'now':>14s}")
    rows = {"published frames": lambda f, d: f"{f} of {sent}",
            "output rate (Hz)": lambda f, d: d.get("output_rate_hz", "n/a"),
            "last image -> publish p50 (ms)": lambda f, d: d.get("latency_p50_ms", "n/a"),
            "last image -> publish p99 (ms)": lambda f, d: d.get("latency_p99_ms", "n/a"),
            "dropped (latest wins)": lambda f, d: str(int(d.get("sync_dropped", 0))
                                                      + int(d.get("dropped_busy", 0)))}
    for label, cell in rows.items():
        print(f"  {label:34s} {cell(*results['before']):>14s} {cell(*results['now']):>14s}")
    replay_s = sent / args.input_hz
    sustained = {k: results[k][0] / replay_s for k in results}
    p99 = {k: float(results[k][1].get("latency_p99_ms", "nan") or "nan") for k in results}
    print(f"  {'sustained rate (published / replay s)':34s} {sustained['before']:>14.2f} {sustained['now']:>14.2f}")
    if sustained["before"] > 0:
        print(f"  ratio now / before: sustained rate x{sustained['now'] / sustained['before']:.2f}, "
              f"p99 latency x{p99['before'] / p99['now']:.2f} lower")
    met = sustained["now"] >= 5.0 and p99["now"] <= 400.0
    print(f"  target (>= 5 Hz sustained, p99 <= 400 ms) with the defaults: {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
