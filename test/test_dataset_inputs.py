"""Datasets as people have them: plain nuScenes without the map expansion, and the mistakes users make.

The dataset without expansion is the synthetic one with `maps/expansion/` left out (its semantic-prior PNGs
stay, as in the plain nuScenes download); the mistakes are real files and real command lines.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from nuscenes.nuscenes import NuScenes
from rosbags.rosbag2 import Reader

from tinybev_ros.geometry import BevGrid
from tinybev_ros.ros.bag import nuscenes_to_bag
from tinybev_ros.taxonomy import MAP_CLASSES
from training.ground_truth import get_map, load_ground_truth, map_masks_for_pose, read_sample_labels

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def without_expansion(synth_dataset, tmp_path_factory) -> Path:
    """The synthetic dataroot as plain nuScenes ships it: tables, samples, semantic-prior PNGs, no expansion."""
    root = tmp_path_factory.mktemp("plain") / "nuscenes"
    source = synth_dataset.dataroot
    root.mkdir()
    for entry in source.iterdir():
        if entry.name == "maps":
            shutil.copytree(entry, root / "maps", ignore=shutil.ignore_patterns("expansion"))
        elif entry.name in ("samples", "sweeps"):
            (root / entry.name).symlink_to(entry)
        elif entry.is_dir():
            shutil.copytree(entry, root / entry.name)
    assert not (root / "maps" / "expansion").exists() and list((root / "maps").glob("*.png"))
    return root


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    import torch

    from tinybev_ros.checkpoint import save_checkpoint
    from tinybev_ros.model import build_student
    from tinybev_ros.model.config import load_model_config

    config = load_model_config(REPO / "config" / "model_tiny.yaml")
    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", build_student(config), config)


def test_map_ground_truth_without_expansion_comes_from_the_semantic_prior(synth_dataset, without_expansion):
    """The prior (drivable surface and sidewalk, as the nuScenes schema defines it) lands where the expansion's
    drivable_area and walkway polygons are; only drivable_area is marked known."""
    full = NuScenes(version=synth_dataset.version, dataroot=str(synth_dataset.dataroot), verbose=False)
    plain = NuScenes(version=synth_dataset.version, dataroot=str(without_expansion), verbose=False)
    grid = BevGrid(resolution=1.0)
    drivable, walkway = MAP_CLASSES.index("drivable_area"), MAP_CLASSES.index("walkway")
    for sample in full.sample[::8]:
        labels = read_sample_labels(full, sample["token"])
        polygons = map_masks_for_pose(get_map(full, {}, labels.map_name), labels.ego_to_global, grid)
        truth = load_ground_truth(plain, {}, sample["token"], grid)
        assert truth.map_valid.tolist() == [name == "drivable_area" for name in MAP_CLASSES]
        prior = truth.map_masks[drivable]
        assert (polygons[drivable] & ~prior).sum() <= 0.02 * polygons[drivable].sum()
        surface = polygons[drivable] | polygons[walkway]
        assert (surface & prior).sum() / (surface | prior).sum() > 0.9
        assert not truth.map_masks[[i for i in range(len(MAP_CLASSES)) if i != drivable]].any()


def test_eval_without_expansion_scores_the_map_it_has_and_says_so(without_expansion, tiny_checkpoint, tmp_path):
    from tinybev_ros.cli import main

    out = tmp_path / "eval"
    assert main(["eval", "--checkpoint", str(tiny_checkpoint), "--dataroot", str(without_expansion), "--split", "val",
                 "--tasks", "map,planning", "--figure-scenes", "0", "--no-speed", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert isinstance(metrics["map"]["drivable_area"], float) and metrics["map"]["lane_divider"] is None
    assert metrics["map"]["mIoU"] == pytest.approx(metrics["map"]["drivable_area"])
    report = (out / "metrics.md").read_text()
    assert "n/a: no map expansion in" in report and "| n/a |" in report


def test_convert_without_expansion_puts_the_prior_on_map(synth_dataset, without_expansion, tmp_path, caplog):
    out = tmp_path / "scene"
    with caplog.at_level("INFO", logger="tinybev.nuscenes_to_bag"):
        assert nuscenes_to_bag.main(["--dataroot", str(without_expansion), "--version", synth_dataset.version,
                                     "--scene", "scene-0061", "--out", str(out), "--no-progress"]) == 0
    assert "no map expansion at" in caplog.text and "semantic prior" in caplog.text
    from tinybev_ros.ros.bag.typestore import typestore

    store = typestore()
    with Reader(out) as reader:
        (connection,) = [c for c in reader.connections if c.topic == "/map"]
        (_, _, raw), = list(reader.messages(connections=[connection]))
        grid = store.deserialize_cdr(raw, connection.msgtype)
    values = np.asarray(grid.data)
    assert grid.header.frame_id == "map" and set(np.unique(values)) == {0, 100}
    assert 0.1 < (values == 100).mean() < 0.9


def _tinybev(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tinybev_ros.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=300, cwd=REPO)


def test_dataset_mistakes_get_one_line_each(synth_dataset, tiny_checkpoint, tmp_path):
    """Wrong --version, unknown --scene or --split, a table that is not JSON, a truncated image: exit 2 and one
    line naming the problem (no traceback), before any output folder is made."""
    broken = tmp_path / "broken"
    shutil.copytree(synth_dataset.dataroot / synth_dataset.version, broken / synth_dataset.version)
    (broken / "samples").symlink_to(synth_dataset.dataroot / "samples")
    (broken / synth_dataset.version / "instance.json").write_text('[{"token": "x",')
    truncated = tmp_path / "truncated"
    shutil.copytree(synth_dataset.dataroot, truncated, symlinks=True)
    nusc = NuScenes(version=synth_dataset.version, dataroot=str(truncated), verbose=False)
    scene = next(s for s in nusc.scene if s["name"] == "scene-0103")  # mini_val
    image = truncated / nusc.get("sample_data", nusc.get("sample", scene["first_sample_token"])["data"]["CAM_BACK"])[
        "filename"]
    image.write_bytes(image.read_bytes()[:5000])
    no_val = tmp_path / "no_val"
    shutil.copytree(synth_dataset.dataroot / synth_dataset.version, no_val / synth_dataset.version)
    for folder in ("samples", "maps"):
        (no_val / folder).symlink_to(synth_dataset.dataroot / folder)
    (no_val / synth_dataset.version / "splits.json").write_text(json.dumps({"mini_train": ["scene-0061"]}))
    eval_args = ("eval", "--checkpoint", tiny_checkpoint, "--figure-scenes", "0", "--no-speed", "--tasks", "map",
                 "--out", tmp_path / "never")
    cases = {
        "wrong version": (("eval", "--checkpoint", tiny_checkpoint, "--dataroot", synth_dataset.dataroot,
                           "--version", "v1.0-trainval", "--out", tmp_path / "never"),
                          "no nuScenes tables at", "versions found in"),
        "unknown split": ((*eval_args, "--dataroot", synth_dataset.dataroot, "--split", "holdout"),
                          "has no split 'holdout'", "mini_val"),
        "unknown scene": (("demo", "--dataroot", synth_dataset.dataroot, "--scene", "scene-9999",
                           "--out", tmp_path / "never"), "unknown scene 'scene-9999'", "scene-0061"),
        "table not JSON": ((*eval_args, "--dataroot", broken), "instance.json is not valid JSON", ""),
        "truncated image": ((*eval_args, "--dataroot", truncated), f"image {image} is a truncated JPEG", ""),
        "bad checkpoint": (("demo", "--checkpoint", image, "--out", tmp_path / "never"),
                           f"checkpoint {image} is not a readable safetensors file", ""),
        "no val split": (("train", "--config", REPO / "config" / "train_tiny.yaml", "--model", "student",
                          "--dataroot", no_val, "--version", synth_dataset.version, "--out", tmp_path / "never"),
                         "has no split 'val'", "mini_train"),
    }
    for name, (args, *expected) in cases.items():
        result = _tinybev(*args)
        assert result.returncode == 2, (name, result.stderr[-2000:])
        errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]  # (progress bars too)
        assert "Traceback" not in result.stderr and len(errors) == 1, (name, result.stderr[-2000:])
        assert result.stderr.strip().splitlines()[-1] == errors[0] and errors[0].startswith("tinybev ")
        assert all(text in errors[0] for text in expected), (name, errors)
    assert not (tmp_path / "never").exists()
