"""`tinybev demo`: the main job on the embedded default, through ROS, end to end.

synthetic scene (seeded, nuScenes format) -> rosbag2 (.db3) -> `tinybev_node` (shipped checkpoint) fed by
`tinybev bag play` -> outputs recorded to a bag -> metrics against ground truth + a GIF of cameras and BEV.
Your own checkpoint (`--checkpoint`), your own bag (`--bag`), or real nuScenes (`--dataroot --version --scene`)
replace the defaults. Everything lands in `--out` (default `demo_out/`).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path

from tinybev_ros.atomic_file import write_text
from tinybev_ros.errors import ConfigError, DatasetError
from tinybev_ros.nuscenes_dataset import find_scene, open_nuscenes, sample_data
from training.splits import devkit_split_of

log = logging.getLogger("tinybev.demo")

# The embedded default: a world the shipped checkpoint never saw (it was trained on other seeds).
DEFAULT_SEED = 7
DEFAULT_DURATION_S = 8.0
DEFAULT_RATE = 0.25  # slow enough that a 2-core CPU runs the tiny student on every keyframe
SUMMARY_FILE = "summary.json"
# Every keyframe is scored: the node reads the images reliably (best effort lost one of 16 on a loaded CI
# machine), queues frames instead of keeping only the latest (a slow frame on a busy machine would otherwise drop
# the next one), and the pipeline waits this long for the last outputs.
REPLAY_PARAMS = ["command:=straight", "frame_queue_size:=32", "image_reliability:=reliable"]
DRAIN_S = 10.0
TASKS = ("detection", "tracking", "motion", "map", "occupancy", "planning")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output directory")
    parser.add_argument("--checkpoint", default="", help="student checkpoint (default: the shipped tiny student)")
    parser.add_argument("--dataroot", type=Path, help="use this nuScenes dataroot instead of a synthetic scene")
    parser.add_argument("--version", default="v1.0-mini", help="dataset version of --dataroot")
    parser.add_argument("--scene", help="scene of --dataroot (default: its first scene)")
    parser.add_argument("--bag", type=Path, help="replay this bag instead of converting a scene (no metrics "
                                                 "unless --dataroot names the dataset it came from)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the synthetic scene")
    parser.add_argument("--duration", type=float, default=DEFAULT_DURATION_S, help="seconds of synthetic scene")
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE, help="bag playback rate")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")


def prepare_scene(args: argparse.Namespace) -> tuple[Path, str, str]:
    """(dataroot, version, scene name): the user's dataset, or a freshly generated synthetic scene."""
    if args.dataroot is not None:
        nusc = open_nuscenes(args.dataroot, args.version)
        scene = find_scene(nusc, args.scene)["name"] if args.scene else nusc.scene[0]["name"]
        devkit_split_of(scene, args.version)  # scorable? (before the replay, not after it)
        if not nusc.sample_annotation:
            raise DatasetError(f"{args.dataroot} ({args.version}) has no annotations (the test split's are "
                               f"withheld), so the demo cannot score {scene}; to watch it without metrics: "
                               f"`tinybev bag convert --dataroot {args.dataroot} --version {args.version} --scene "
                               f"{scene} --out BAG`, then `tinybev demo --bag BAG`")
        return args.dataroot, args.version, scene
    from tinybev_ros.synth import SynthConfig, generate
    from tinybev_ros.synth.generator import MARKER

    config = SynthConfig(scenes=1, seed=args.seed, duration_s=args.duration, version="v1.0-mini")
    dataroot = args.out / "dataset"
    marker = dataroot / MARKER
    made_for = json.loads(marker.read_text()) if marker.is_file() else None
    if made_for != json.loads(json.dumps(asdict(config), default=str)):  # another seed or duration: regenerate
        log.info("demo: generating a %.0f s synthetic scene (seed %d) in %s", args.duration, args.seed, dataroot)
        try:
            generate(dataroot, replace(config), overwrite=True)
        except FileExistsError as exc:  # a folder of the user's own where the demo keeps its scene: left alone
            raise ConfigError(f"{exc} (the demo keeps its synthetic scene in --out's dataset/; choose another "
                              "--out)") from None
    scene = json.loads((dataroot / config.version / "scene.json").read_text())[0]["name"]
    return dataroot, config.version, scene


def bag_source(dataroot: Path, version: str, scene: str) -> dict:
    """What the demo's bag of `scene` is made of: the dataset by place and by its tables' sizes and times (a
    regenerated synthetic scene has the same name and stamps, and other images and boxes)."""
    tables = sorted((dataroot / version).glob("*.json"))
    return {"dataroot": str(dataroot.resolve()), "version": version, "scene": scene,
            "tables": {t.name: [t.stat().st_size, t.stat().st_mtime_ns] for t in tables}}


def scene_bag(out: Path, dataroot: Path, version: str, scene: str) -> Path:
    """The demo's bag of `scene` in `out`, converted unless the one there was made of this very dataset: a bag of
    another seed, duration or dataset has the scene's name and stamps, and would be scored against this dataset's
    ground truth without a word."""
    from tinybev_ros.ros.bag.nuscenes_to_bag import ConvertOptions, convert_scene

    bag, source = out / scene, out / f"{scene}.source.json"
    made_from = bag_source(dataroot, version, scene)
    if not (bag / "metadata.yaml").exists() or not source.is_file() or json.loads(source.read_text()) != made_from:
        source.unlink(missing_ok=True)
        convert_scene(open_nuscenes(dataroot, version), scene, bag, ConvertOptions(progress=False, force=True))
        write_text(source, json.dumps(made_from, indent=1) + "\n")
    return bag


def evaluate_outputs(dataroot: Path, version: str, scene_name: str, outputs_bag: Path, out: Path) -> dict:
    """Metrics of the recorded outputs against the dataset's ground truth, plus the figures and the GIF."""
    import numpy as np

    from tinybev_ros.ros.bag.node_outputs import predictions_from_bag
    from training.evaluation.figures import render_scene
    from training.evaluation.report import write_report
    from training.evaluation.suite import evaluate, load_ground_truths

    nusc = open_nuscenes(dataroot, version)
    scene = find_scene(nusc, scene_name)
    stamps = {}
    token = scene["first_sample_token"]
    while token:
        sample = nusc.get("sample", token)
        stamps[sample_data(nusc, sample, "CAM_FRONT")["timestamp"] * 1000] = token
        token = sample["next"]
    recorded = predictions_from_bag(outputs_bag)
    by_sample = {stamps[s]: p for s, p in recorded.items() if s in stamps}
    if not by_sample:
        raise RuntimeError(f"none of the {len(recorded)} recorded frames matches a keyframe of {scene_name}")
    template = next(iter(by_sample.values()))
    empty = template.select(np.zeros(len(template), bool))
    padded = {t: by_sample.get(t) or replace(empty, stamp_ns=s) for s, t in stamps.items()}
    ground_truths = load_ground_truths(nusc, list(padded), template.grid, progress=False)
    metrics = evaluate(padded, nusc, devkit_split_of(scene_name, version), tasks=TASKS,
                       ground_truths=ground_truths, progress=False, devkit_samples=list(padded))
    metrics["frames"] = {"keyframes": len(stamps), "published_by_node": len(by_sample)}
    write_report(metrics, out)
    tokens = [t for t in stamps.values() if t in by_sample]
    render_scene(nusc, tokens, by_sample, ground_truths, out / "figures", png_every=max(1, len(tokens) // 3),
                 progress=False)
    return metrics


def write_summary(path: Path, metrics: dict, checkpoint: Path, args: argparse.Namespace, scene: str) -> None:
    """The headline figures with what produced them: README's demo table is this file (a test compares them)."""
    from tinybev_ros.release import sha256
    from training.evaluation.report import summary_row, write_json

    source = ({"dataroot": str(args.dataroot), "version": args.version, "scene": scene} if args.dataroot is not None
              else {"synthetic_seed": args.seed, "duration_s": args.duration, "scene": scene})
    summary = {"checkpoint_sha256": sha256(checkpoint), "source": source, "rate": args.rate,
               "frames": metrics["frames"], "metrics": summary_row(metrics)}
    write_json(path, summary)


def run(args: argparse.Namespace) -> int:
    from tinybev_ros.checkpoint import read_checkpoint
    from tinybev_ros.paths import default_checkpoint
    from tinybev_ros.ros.run import check_inputs

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.monotonic()
    out: Path = args.out
    # The user's inputs are checked before any synthesis, conversion or node start-up.
    checkpoint = args.checkpoint or str(default_checkpoint())
    read_checkpoint(checkpoint)
    check_inputs(args.bag, None, force=False, rate=args.rate)
    if args.scene and args.dataroot is None:
        raise ConfigError(f"--scene {args.scene} names a scene of --dataroot, and none is given (without one the "
                          "demo makes its own scene: --seed)")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _demo(args, out, checkpoint, start)
    finally:
        if created and out.is_dir() and not any(out.iterdir()):  # a failure leaves no empty folder behind
            out.rmdir()


def _demo(args: argparse.Namespace, out: Path, checkpoint: str, start: float) -> int:
    from tinybev_ros.paths import share_file
    from tinybev_ros.ros.run import ChildExited, RunTimeout, run_pipeline

    dataroot = version = scene = None
    bag = args.bag
    if bag is None or args.dataroot is not None:
        dataroot, version, scene = prepare_scene(args)
    if bag is None:
        bag = scene_bag(out, Path(dataroot), version, scene)
    outputs_bag = out / "outputs"
    log.info("demo: replaying %s through tinybev_node (rate %.2f) and recording the outputs", bag, args.rate)
    try:
        frames = run_pipeline(bag, share_file("config/tinybev.yaml"), checkpoint, args.device, args.rate,
                              record=outputs_bag, overrides=REPLAY_PARAMS, drain_s=DRAIN_S, force=True)
    except (ChildExited, RunTimeout) as exc:  # the child's own line is above this one
        log.error("demo: %s", exc)
        return 1
    if frames == 0:
        log.error("demo: the node published nothing; see its log above")
        return 1
    print(f"\ndemo: {frames} frames published by tinybev_node, outputs recorded in {outputs_bag}")
    if dataroot is not None:
        metrics = evaluate_outputs(dataroot, version, scene, outputs_bag, out)
        write_summary(out / SUMMARY_FILE, metrics, Path(checkpoint), args, scene)
        print((out / "metrics.md").read_text())
        gif = next((out / "figures").glob("*.gif"))
        print(f"demo: metrics in {out / 'metrics.md'} and {out / 'metrics.json'}; pictures in {out / 'figures'}; "
              f"animation {gif}")
    print(f"demo: done in {time.monotonic() - start:.0f} s")
    return 0
