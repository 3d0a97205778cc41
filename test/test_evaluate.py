"""End-to-end evaluation on the synthetic dataset: ground truth as predictions scores perfectly on every task,
increasingly perturbed predictions score monotonically worse, the report is written, `tinybev eval` runs.

The nuScenes devkit evaluators run for real on the synthetic val scene (one scene, keyframes only).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from nuscenes.eval.common.config import config_factory
from nuscenes.nuscenes import NuScenes

from tinybev_ros.predictions import Predictions
from tinybev_ros.score_thresholds import SCORE_THRESHOLDS
from tinybev_ros.taxonomy import DETECTION_CLASSES, MAP_CLASSES
from training.evaluation.inference import evaluation_predictor, for_evaluation, predict_split
from training.evaluation.nds_terms import folder_row, result_files
from training.evaluation.report import to_markdown, write_report
from training.evaluation.suite import evaluate, load_ground_truths, planning_obstacles, samples_by_scene, track_scenes
from training.metrics.oracle import TrackIds, ground_truth_as_predictions, ground_truth_attributes
from training.metrics.tracking import TRACKING_CLASSES
from training.splits import devkit_split, split_sample_tokens

LEVELS = (0.0, 1.0, 2.0, 3.0)
TOL = 1e-6


@pytest.fixture(scope="module")
def world(synth_dataset):
    nusc = NuScenes(version=synth_dataset.version, dataroot=str(synth_dataset.dataroot), verbose=False)
    eval_set = devkit_split(synth_dataset.version, "val")
    tokens = split_sample_tokens(nusc, eval_set)
    assert len(tokens) >= 8, f"the synthetic {eval_set} split should hold a scene of keyframes, got {len(tokens)}"
    gts = load_ground_truths(nusc, tokens, progress=False)
    ids = TrackIds()
    oracle = {token: ground_truth_as_predictions(gts[token], ids) for token in tokens}
    attributes = {token: ground_truth_attributes(nusc, gts[token]) for token in tokens}
    assert all(len(attributes[token]) == len(oracle[token]) for token in tokens)
    return nusc, eval_set, tokens, gts, oracle, attributes


def _present(gts, classes) -> list[str]:
    """Classes the devkit evaluates here: some box with LiDAR points inside the class's evaluation range."""
    ranges = config_factory("detection_cvpr_2019").class_range
    seen = set()
    for gt in gts.values():
        distance = np.linalg.norm(gt.centers[:, :2], axis=1)
        for label, dist, points in zip(gt.labels, distance, gt.num_lidar_pts, strict=True):
            name = DETECTION_CLASSES[int(label)]
            if points > 0 and dist < ranges[name]:
                seen.add(name)
    return [name for name in classes if name in seen]


# ------------------------------------------------------------------ perfect scores

def test_ground_truth_scores_perfectly_on_every_task(world, tmp_path) -> None:
    nusc, eval_set, tokens, gts, oracle, attributes = world
    metrics = evaluate(oracle, nusc, eval_set, ground_truths=gts, attributes_by_sample=attributes, progress=False)

    det = metrics["detection"]
    present = _present(gts, DETECTION_CLASSES)
    assert len(present) >= 3, f"the synthetic scene should show several classes, got {present}"
    for name in present:
        assert det["per_class_AP"][name] == pytest.approx(1.0, abs=TOL), name
        errors = det["per_class_errors"][name]
        for key in ("trans_err", "scale_err", "orient_err", "vel_err", "attr_err"):
            assert errors[key] != errors[key] or errors[key] == pytest.approx(0.0, abs=1e-4), (name, key)
    if len(present) == len(DETECTION_CLASSES):  # real nuScenes: every class appears
        assert det["mAP"] == pytest.approx(1.0, abs=TOL) and det["NDS"] == pytest.approx(1.0, abs=TOL)
    else:  # absent classes score AP 0 and error 1 in the devkit; the present ones are perfect
        share = len(present) / len(DETECTION_CLASSES)
        assert det["mAP"] == pytest.approx(share, abs=TOL)

    heading = metrics["heading"]  # the oracle's boxes are the truth's: every axis and direction right
    assert set(heading) == set(present) - {"traffic_cone"}
    assert all(h["axis_within_tolerance"] == h["direction_within_tolerance"] == 1.0 for h in heading.values())
    velocity = metrics["velocity"]  # and every velocity the devkit knows
    assert set(velocity) == set(present) - {"traffic_cone", "barrier"} and any(v["moving"] for v in velocity.values())
    assert all(v["speed_seen"] == pytest.approx(1.0) for v in velocity.values() if v["moving"])
    report = to_markdown(metrics)
    assert "## Heading of detected boxes" in report and "## Velocity of detected boxes" in report
    mover = next(name for name, v in velocity.items() if v["moving"])
    row = next(line for line in report.split("## Velocity")[1].splitlines() if line.startswith(f"| {mover} |"))
    assert row.split("|")[4].strip() == "1.00"  # the speed-seen column

    track = metrics["tracking"]
    for name in _present(gts, TRACKING_CLASSES):
        assert track["per_class_AMOTA"][name] == pytest.approx(1.0, abs=TOL), name
    assert track["IDS"] == 0 and track["fp"] == 0 and track["fn"] == 0

    motion = metrics["motion"]["all"]
    assert 0 < motion["matched"] <= motion["ground_truth"]  # every agent with a future; N_GT also those leaving
    assert motion["minADE"] == pytest.approx(0.0, abs=TOL) and motion["minFDE"] == pytest.approx(0.0, abs=TOL)
    assert motion["miss_rate"] == 0.0 and motion["EPA"] == pytest.approx(motion["matched"] / motion["ground_truth"])

    for name in MAP_CLASSES:
        value = metrics["map"][name]
        assert value != value or value == pytest.approx(1.0), name  # NaN only when a layer never appears
    assert metrics["map"]["drivable_area"] == pytest.approx(1.0)
    assert all(v == pytest.approx(1.0) for v in metrics["occupancy"].values())

    for definition in ("uniad", "stp3"):
        plan = metrics["planning"][definition]
        assert all(plan[f"l2_{h}"] == pytest.approx(0.0, abs=TOL) for h in ("1s", "2s", "3s"))
        assert all(plan[f"collision_{h}"] == 0.0 for h in ("1s", "2s", "3s"))

    json_path, md_path = write_report(metrics, tmp_path)
    loaded = json.loads(json_path.read_text())
    assert loaded["detection"]["per_class_AP"]["car"] == pytest.approx(1.0)
    markdown = md_path.read_text()
    for section in ("## Detection", "## Heading", "## Tracking", "## Motion", "## Map", "## Occupancy",
                    "## Planning"):
        assert section in markdown
    assert "| UniAD |" in markdown and "| ST-P3 |" in markdown
    assert markdown == to_markdown(metrics)


def test_runtime_tracker_recovers_identities_from_perfect_detections(world) -> None:
    nusc, _, tokens, gts, oracle, _ = world
    untracked = {t: replace(p, track_ids=np.full(len(p), -1, np.int64)) for t, p in oracle.items()}
    tracked = track_scenes(untracked, nusc, gts)
    by_instance: dict[str, set[int]] = {}
    for token in tokens:
        visible = [t for t, points in zip(gts[token].instance_tokens, gts[token].num_lidar_pts, strict=True) if points]
        for instance, track_id in zip(visible, tracked[token].track_ids, strict=True):
            by_instance.setdefault(instance, set()).add(int(track_id))
    consistent = sum(len(ids) == 1 for ids in by_instance.values())
    assert len(by_instance) > 5 and consistent / len(by_instance) >= 0.9
    all_ids = [i for ids in by_instance.values() for i in ids]
    assert len(all_ids) == len(set(all_ids))  # no two instances share a track


# ------------------------------------------------------------------ monotonic degradation

def _perturb(oracle: dict[str, Predictions], gts, level: float) -> dict[str, Predictions]:
    """The same random directions at every level, scaled by it; nested random sets for masks and ids."""
    rng = np.random.default_rng(0)
    out, fresh_id = {}, 100_000
    for token, p in oracle.items():
        n = len(p)
        direction = rng.normal(size=(n, 2))
        direction /= np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-9)
        drift = rng.normal(size=(n, 1, 2))
        flip_map, flip_occ = rng.random(p.map_probs.shape), rng.random(p.occupancy.shape)
        switch = rng.random(n)
        centers = p.centers.copy()
        centers[:, :2] += 0.35 * level * direction
        track_ids = p.track_ids.copy()
        for i in np.flatnonzero(switch < 0.12 * level):  # identity switches
            track_ids[i] = fresh_id
            fresh_id += 1
        steps = np.arange(1, p.forecasts.shape[2] + 1)[None, :, None]
        forecasts = p.forecasts + (0.35 * level * direction)[:, None, None] + 0.1 * level * drift[:, None] * steps
        out[token] = replace(
            p, centers=centers, sizes_wlh=p.sizes_wlh * (1.0 + 0.1 * level), yaws=p.yaws + 0.15 * level,
            velocities=p.velocities + 0.4 * level * direction, track_ids=track_ids, forecasts=forecasts,
            map_probs=np.where(flip_map < 0.03 * level, 1.0 - p.map_probs, p.map_probs),
            occupancy=np.where(flip_occ < 0.01 * level, 1.0 - p.occupancy, p.occupancy),
            ego_plan=_plan_towards_vehicles(gts[token], p.ego_plan, level / max(LEVELS)))
    return out


def _plan_towards_vehicles(gt, plan: np.ndarray, fraction: float) -> np.ndarray:
    """Each waypoint moved `fraction` of the way to the nearest GT vehicle there (else 1.5 m sideways)."""
    vehicles, _ = planning_obstacles(gt)
    out = plan.copy()
    for t, corners in enumerate(vehicles):
        if len(corners):
            centres = corners.mean(axis=1)
            target = centres[np.argmin(np.linalg.norm(centres - plan[t], axis=1))]
            out[t] = plan[t] + fraction * (target - plan[t])
        else:
            out[t] = plan[t] + [0.0, 1.5 * fraction]
    return out


def _strictly_worse(values: list[float], higher_is_better: bool) -> bool:
    pairs = list(zip(values[:-1], values[1:], strict=True))
    return all((a > b) if higher_is_better else (a < b) for a, b in pairs)


def _not_better(values: list[float], higher_is_better: bool) -> bool:
    pairs = list(zip(values[:-1], values[1:], strict=True))
    return all((a >= b) if higher_is_better else (a <= b) for a, b in pairs)


def test_perturbed_predictions_score_monotonically_worse(world) -> None:
    nusc, eval_set, tokens, gts, oracle, attributes = world
    runs = [evaluate(_perturb(oracle, gts, level), nusc, eval_set, ground_truths=gts, attributes_by_sample=attributes,
                     progress=False) for level in LEVELS]

    def series(*path: str) -> list[float]:
        values = []
        for run in runs:
            value = run
            for key in path:
                value = value[key]
            values.append(float(value))
        return values

    assert _strictly_worse(series("detection", "NDS"), True), series("detection", "NDS")
    assert _not_better(series("detection", "mAP"), True) and series("detection", "mAP")[-1] < series("detection",
                                                                                                       "mAP")[0]
    assert _strictly_worse(series("detection", "mATE"), False)
    assert _strictly_worse(series("tracking", "AMOTA"), True), series("tracking", "AMOTA")
    assert _not_better(series("tracking", "IDS"), False) and series("tracking", "IDS")[-1] > 0
    assert _strictly_worse(series("motion", "all", "minADE"), False)
    assert _strictly_worse(series("motion", "all", "minFDE"), False)
    assert _not_better(series("motion", "all", "miss_rate"), False) and series("motion", "all", "miss_rate")[-1] > 0
    assert _not_better(series("motion", "all", "EPA"), True) and series("motion", "all", "EPA")[-1] < 1.0
    assert _strictly_worse(series("map", "drivable_area"), True)
    assert _strictly_worse(series("map", "mIoU"), True)
    for key in ("near", "far", "near_current", "near_future", "far_current", "far_future"):
        assert _strictly_worse(series("occupancy", key), True), key
    for definition in ("uniad", "stp3"):
        assert _strictly_worse(series("planning", definition, "l2_3s"), False)
        assert _strictly_worse(series("planning", definition, "l2_avg"), False)
        collisions = series("planning", definition, "collision_avg")
        assert _not_better(collisions, False) and collisions[-1] > 0, (definition, collisions)


def test_no_boxes_at_all_scores_zero(world) -> None:
    nusc, eval_set, _, gts, oracle, _ = world
    empty = {t: p.select(np.zeros(len(p), bool)) for t, p in oracle.items()}
    metrics = evaluate(empty, nusc, eval_set, tasks=("detection", "tracking", "motion"), ground_truths=gts,
                       progress=False)
    assert metrics["detection"]["NDS"] == 0.0 and metrics["detection"]["mATE"] == 1.0
    assert metrics["tracking"]["AMOTA"] == 0.0 and metrics["tracking"]["recall"] == 0.0
    assert metrics["motion"]["all"]["matched"] == 0 and metrics["motion"]["all"]["EPA"] == 0.0
    markdown = to_markdown(metrics)
    assert "No boxes predicted in any scored sample" in markdown and "No ground truth" not in markdown


def test_nds_terms_read_the_devkit_s_files_and_tinybev_eval_s_report_alike(world, tmp_path) -> None:
    """The devkit writes no summary when nothing was detected; ours then does, so no world drops out of a row."""
    nusc, eval_set, _, gts, oracle, attributes = world
    empty = {t: p.select(np.zeros(len(p), bool)) for t, p in oracle.items()}
    for name, predictions in (("oracle", oracle), ("nothing", empty)):
        metrics = evaluate(predictions, nusc, eval_set, tasks=("detection",), ground_truths=gts,
                           attributes_by_sample=attributes, progress=False,
                           devkit_output_dir=tmp_path / name / "devkit")
        write_report(metrics, tmp_path / name / "report")
        devkit, report = (folder_row(result_files(tmp_path / name / sub)) for sub in ("devkit", "report"))
        for row in (devkit, report):
            assert row["results"] == 1 and row["NDS"] == pytest.approx(metrics["detection"]["NDS"], abs=1e-9)
            assert sum(v for k, v in row.items() if k.startswith("term ")) == pytest.approx(row["NDS"], abs=1e-9)
    assert folder_row(result_files(tmp_path / "nothing"))["NDS"] == 0.0
    assert folder_row(result_files(tmp_path / "oracle"))["results"] == 2  # devkit summary + report: both count


def test_a_version_without_annotations_scores_map_and_l2_and_says_the_rest_is_n_a(world, synth_dataset,
                                                                                  tmp_path) -> None:
    """The test split ships no annotations: no agents, occupancy or obstacles, so motion, occupancy and
    collisions used to print as real zeros (occupancy IoU 0.000, collisions 0.00 %)."""
    import shutil

    nusc, eval_set, tokens, gts, oracle, _ = world
    root = tmp_path / "test_set"
    shutil.copytree(synth_dataset.dataroot / synth_dataset.version, root / synth_dataset.version)
    for folder in ("samples", "maps"):
        (root / folder).symlink_to(synth_dataset.dataroot / folder)
    for table in ("sample_annotation", "instance"):
        (root / synth_dataset.version / f"{table}.json").write_text("[]")
    bare = NuScenes(version=synth_dataset.version, dataroot=str(root), verbose=False)
    truths = load_ground_truths(bare, tokens, progress=False)
    metrics = evaluate(oracle, bare, eval_set, tasks=("motion", "map", "occupancy", "planning"),
                       ground_truths=truths, progress=False)
    assert all(np.isnan(value) for value in metrics["occupancy"].values())
    assert np.isnan(metrics["motion"]["all"]["minADE"]) and np.isnan(metrics["motion"]["all"]["EPA"])
    for definition in metrics["planning"].values():
        assert all(np.isnan(v) for k, v in definition.items() if k.startswith("collision_"))
        assert definition["l2_1s"] == pytest.approx(0.0, abs=TOL)  # the ego's own future is still known
    assert metrics["map"]["drivable_area"] == pytest.approx(1.0)
    assert "has no annotations (the test split's are withheld)" in to_markdown(metrics)
    # boxes predicted, none in the ground truth: the devkit's box filter used to crash (an AssertionError)
    boxes = evaluate(oracle, bare, eval_set, tasks=("detection", "tracking"), ground_truths=truths, progress=False)
    assert boxes["detection"]["NDS"] == 0.0 and boxes["tracking"]["AMOTA"] == 0.0
    assert boxes["detection"]["note"] == boxes["tracking"]["note"] == "no ground-truth box in any scored sample"
    assert "No ground-truth box in any scored sample: the devkit's rules score that" in to_markdown(boxes)
    annotated = evaluate(oracle, nusc, eval_set, tasks=("occupancy",), ground_truths=gts, progress=False)
    assert "annotations_note" not in annotated and annotated["occupancy"]["near_current"] == pytest.approx(1.0)


def test_scenes_are_ordered_in_time(world) -> None:
    nusc, _, tokens, _, _, _ = world
    (scene_tokens,) = samples_by_scene(nusc, reversed(tokens)).values()
    assert scene_tokens == tokens


def test_missing_samples_and_mismatched_grids_are_clear_errors(world) -> None:
    nusc, eval_set, tokens, gts, oracle, _ = world
    partial = {t: oracle[t] for t in tokens[1:]}
    with pytest.raises(ValueError, match="lack 1 of"):
        evaluate(partial, nusc, eval_set, tasks=("detection",), ground_truths=gts, progress=False)
    with pytest.raises(ValueError, match="eval_set"):
        evaluate(oracle, nusc, None, ground_truths=gts, progress=False)
    coarse = {t: replace(p, map_probs=p.map_probs[:, ::2, ::2]) for t, p in oracle.items()}
    with pytest.raises(ValueError, match="grid"):
        evaluate(coarse, nusc, eval_set, tasks=("map",), ground_truths=gts, progress=False)


# ------------------------------------------------------------------ decoding for the protocol

def test_evaluation_decodes_the_boxes_a_deploy_threshold_would_cut(tmp_path) -> None:
    """The devkit ranks every box; a checkpoint's deploy threshold (0.2) must not decide what it gets to rank."""
    from test_inference import handmade_outputs

    from tinybev_ros.checkpoint import save_checkpoint
    from tinybev_ros.model import build_student
    from tinybev_ros.model.config import load_model_config
    from tinybev_ros.model.decode import decode

    config = load_model_config(Path(__file__).resolve().parents[1] / "config" / "model_tiny.yaml")
    assert config.decode.score_threshold > 0.1 > SCORE_THRESHOLDS.evaluate
    (deployed,) = decode(handmade_outputs(config), config, [0], [2])
    (evaluated,) = decode(handmade_outputs(config), for_evaluation(config), [0], [2])
    assert len(deployed) == 1 and len(evaluated) == 2 and evaluated.scores.min() < 0.05
    lower = replace(config, decode=replace(config.decode, score_threshold=0.001))
    assert for_evaluation(lower).decode.score_threshold == 0.001  # a lower threshold is never raised
    checkpoint = save_checkpoint(tmp_path / "tiny.safetensors", build_student(config), config)
    assert evaluation_predictor(checkpoint, "cpu").config.decode.score_threshold == SCORE_THRESHOLDS.evaluate


# ------------------------------------------------------------------ the command

def test_tinybev_eval_on_a_tiny_checkpoint(synth_dataset, tmp_path) -> None:
    """An (untrained) tiny student through the whole command: inference, every metric, speed, figures, GIF."""
    import torch
    from PIL import Image

    from tinybev_ros.checkpoint import save_checkpoint
    from tinybev_ros.cli import main
    from tinybev_ros.model import build_student
    from tinybev_ros.model.config import load_model_config

    config = load_model_config(Path(__file__).resolve().parents[1] / "config" / "model_tiny.yaml")
    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "tiny.safetensors", build_student(config), config)
    out = tmp_path / "eval"
    code = main(["eval", "--checkpoint", str(checkpoint), "--dataroot", str(synth_dataset.dataroot), "--version",
                 synth_dataset.version, "--split", "val", "--out", str(out)])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for section in ("detection", "tracking", "motion", "map", "occupancy", "planning", "speed"):
        assert section in metrics, section
    assert 0.0 <= metrics["detection"]["NDS"] <= 1.0
    assert metrics["speed"]["parameters_M"] > 1.0 and metrics["speed"]["gflops"] > 0.1
    assert metrics["speed"]["latency"]["median_ms"] > 0
    figures = sorted((out / "figures").glob("*.png"))
    gifs = sorted((out / "figures").glob("*.gif"))
    assert len(figures) == metrics["samples"] and len(gifs) == 1
    with Image.open(gifs[0]) as gif:
        assert gif.n_frames == metrics["samples"]

    # Without figures every sample's rasters are scored as it is predicted and dropped: the same figures as
    # scoring the predictions held in memory.
    code = main(["eval", "--checkpoint", str(checkpoint), "--dataroot", str(synth_dataset.dataroot), "--version",
                 synth_dataset.version, "--split", "val", "--out", str(tmp_path / "streamed"), "--figure-scenes", "0",
                 "--no-speed"])
    assert code == 0 and not (tmp_path / "streamed" / "figures").exists()
    streamed = json.loads((tmp_path / "streamed" / "metrics.json").read_text())
    nusc = NuScenes(version=synth_dataset.version, dataroot=str(synth_dataset.dataroot), verbose=False)
    eval_set = devkit_split(synth_dataset.version, "val")
    predictor = evaluation_predictor(checkpoint, "cpu")
    tokens = split_sample_tokens(nusc, eval_set)
    truths = load_ground_truths(nusc, tokens, predictor.config.grid, progress=False)
    held = evaluate(predict_split(predictor, nusc, tokens, truths, progress=False), nusc, eval_set,
                    ground_truths=truths, progress=False)
    held_json, _ = write_report(held, tmp_path / "held")
    assert streamed == json.loads(held_json.read_text()) and streamed["map"]["mIoU"] > 0


def test_tinybev_eval_on_a_teacher_checkpoint(synth_dataset, tmp_path) -> None:
    """A teacher reads LiDAR: `tinybev eval` runs it on the sample cache's items, through the same metrics."""
    import torch

    from tinybev_ros.checkpoint import save_checkpoint
    from tinybev_ros.cli import main
    from training.teachers import build_teacher, load_teacher_config

    config = load_teacher_config(Path(__file__).resolve().parents[1] / "config" / "teacher_tiny.yaml")
    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "teacher.safetensors", build_teacher(config).eval(), config,
                                 kind="teacher")
    out = tmp_path / "eval"
    code = main(["eval", "--checkpoint", str(checkpoint), "--dataroot", str(synth_dataset.dataroot), "--version",
                 synth_dataset.version, "--split", "val", "--out", str(out), "--tasks", "detection,map,planning",
                 "--figure-scenes", "0", "--sample-cache", str(tmp_path / "samples")])
    assert code == 0
    assert len(list((tmp_path / "samples").rglob("*.safetensors"))) == 16  # where it was told (a read-only dataroot)
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"detection", "map", "planning"} <= set(metrics) and "speed" not in metrics
    assert metrics["samples"] == 16 and 0.0 <= metrics["map"]["mIoU"] <= 1.0

    # Scored as the batches come (a split's rasters never all in memory): the figures of the predictions held.
    from training.evaluation.inference import for_evaluation
    from training.teachers import load_teacher_checkpoint
    from training.teachers.predict import predict_split_teacher, teacher_dataset

    nusc = NuScenes(version=synth_dataset.version, dataroot=str(synth_dataset.dataroot), verbose=False)
    eval_set = devkit_split(synth_dataset.version, "val")
    net, loaded = load_teacher_checkpoint(checkpoint, "cpu")
    dataset = teacher_dataset(nusc, eval_set, loaded, tmp_path / "samples")
    held = evaluate(predict_split_teacher(net, for_evaluation(loaded.camera), dataset, "cpu", progress=False), nusc,
                    eval_set, tasks=("map", "planning"), grid=loaded.camera.grid, progress=False)
    held_json, _ = write_report(held, tmp_path / "held")
    held = json.loads(held_json.read_text())
    assert (metrics["map"], metrics["planning"]) == (held["map"], held["planning"])  # the per-sample tasks


def test_tinybev_eval_rejects_bad_arguments_clearly(tmp_path, capsys) -> None:
    from tinybev_ros.cli import main

    with pytest.raises(SystemExit, match="unknown \\['foo'\\]"):
        main(["eval", "--checkpoint", "x", "--dataroot", "y", "--tasks", "map,foo"])
    missing = tmp_path / "missing.safetensors"
    assert main(["eval", "--checkpoint", str(missing), "--dataroot", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"tinybev eval: error: checkpoint {missing} does not exist\n"


def test_eval_worlds_reports_each_fresh_seed_and_their_mean(tmp_path, capsys) -> None:
    """Fresh worlds are generated per seed (kept for the next run) and scored; one row each plus the mean."""
    import torch

    from tinybev_ros.checkpoint import save_checkpoint
    from tinybev_ros.cli import main
    from tinybev_ros.model import build_student
    from tinybev_ros.model.config import load_model_config

    config = load_model_config(Path(__file__).resolve().parents[1] / "config" / "model_tiny.yaml")
    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "tiny.safetensors", build_student(config), config)
    args = ["eval-worlds", "--checkpoint", str(checkpoint), "--seeds", "5", "6", "--scenes", "2", "--duration", "2",
            "--work", str(tmp_path / "worlds"), "--out", str(tmp_path / "out"), "--tasks", "map,planning"]
    assert main(args) == 0
    report = json.loads((tmp_path / "out" / "worlds.json").read_text())
    assert list(report["rows"]) == ["seed 5", "seed 6"]
    assert report["rows"]["seed 5"]["map_iou"] != report["rows"]["seed 6"]["map_iou"]  # two different worlds
    table = (tmp_path / "out" / "worlds.md").read_text()
    assert "| mean ± std (2 seeds) |" in table and "n/a" in table  # detection was not asked for
    ious = np.array([row["map_iou"] for row in report["rows"].values()])
    assert f"{ious.mean():.3f} ± {ious.std(ddof=1):.3f} |" in table  # the sample spread, as `ablate` gives
    for bad_args, message in (((*args[:2], str(Path(__file__)), *args[3:]), "is not a readable safetensors file"),
                              ((*args[:4], "5", "5", *args[6:]), "--seeds 5 5 names a world twice")):
        out = tmp_path / "refused"
        bad_args = list(bad_args)
        bad_args[bad_args.index("--out") + 1] = str(out)
        assert main(bad_args) == 2 and not out.exists(), message
        assert message in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "worlds").iterdir()) == ["synth_seed5_2x2s", "synth_seed6_2x2s"]
    too_many = [*args[:args.index("--scenes") + 1], "11", *args[args.index("--scenes") + 2:]]
    too_many[too_many.index("--out") + 1] = str(tmp_path / "out11")
    assert main(too_many) == 2 and not (tmp_path / "out11").exists()  # one line, before any world is made
    assert len(list((tmp_path / "worlds").iterdir())) == 2


# ------------------------------------------------------------------ keyframes the devkit scores

def test_the_devkit_scores_the_same_through_its_own_evaluator(world, tmp_path) -> None:
    """SampleDetectionEval only chooses the keyframes: over a whole split it is the devkit's DetectionEval."""
    import contextlib
    import io

    from nuscenes.eval.detection.evaluate import DetectionEval

    from training.metrics.detection import DETECTION_CONFIG, detection_results, sample_ego_poses, write_results_json

    nusc, eval_set, tokens, gts, oracle, _ = world
    noisy = {t: replace(p, centers=p.centers + 0.7, scores=np.linspace(0.9, 0.2, len(p))) for t, p in oracle.items()}
    ours = evaluate(noisy, nusc, eval_set, tasks=("detection",), ground_truths=gts, progress=False)["detection"]
    poses = sample_ego_poses(nusc, tokens)
    path = write_results_json({t: detection_results(noisy[t], t, poses[t], None) for t in tokens},
                              tmp_path / "results.json")
    devkit = DetectionEval(nusc, config_factory(DETECTION_CONFIG), str(path), eval_set,
                           output_dir=str(tmp_path / "devkit"), verbose=False)
    with contextlib.redirect_stdout(io.StringIO()):
        summary = devkit.main(plot_examples=0, render_curves=False)
    assert 0.0 < ours["NDS"] < 1.0
    assert ours["NDS"] == summary["nd_score"] and ours["mAP"] == summary["mean_ap"]


@pytest.fixture(scope="module")
def two_scene_split(tmp_path_factory):
    """A v1.0-mini world of three scenes: its mini_train split holds two (the demo scores one of them)."""
    from tinybev_ros.synth import SynthConfig, generate

    config = SynthConfig(scenes=3, seed=11, duration_s=4.0, version="v1.0-mini")
    root = generate(tmp_path_factory.mktemp("synth3") / "nuscenes", config)
    nusc = NuScenes(version=config.version, dataroot=str(root), verbose=False)
    by_scene = samples_by_scene(nusc, split_sample_tokens(nusc, "mini_train"))
    assert len(by_scene) == 2
    return nusc, list(by_scene.values())


def test_one_scene_of_a_split_is_scored_on_its_own_keyframes(two_scene_split) -> None:
    nusc, (scene, other) = two_scene_split
    gts = load_ground_truths(nusc, scene, progress=False)
    ids = TrackIds()
    oracle = {token: ground_truth_as_predictions(gts[token], ids) for token in scene}
    tasks = ("detection", "tracking")
    with pytest.raises(ValueError, match=f"predictions lack {len(other)} of the {len(scene) + len(other)} "):
        evaluate(oracle, nusc, "mini_train", tasks=tasks, ground_truths=gts, progress=False)
    metrics = evaluate(oracle, nusc, "mini_train", tasks=tasks, ground_truths=gts, progress=False,
                       devkit_samples=scene)
    present = _present(gts, DETECTION_CLASSES)
    assert present and all(metrics["detection"]["per_class_AP"][name] == pytest.approx(1.0) for name in present)
    assert metrics["tracking"]["recall"] == pytest.approx(1.0) and metrics["tracking"]["IDS"] == 0
    with pytest.raises(ValueError, match="are not in split 'mini_val'"):
        evaluate(oracle, nusc, "mini_val", tasks=tasks, ground_truths=gts, progress=False, devkit_samples=scene)
