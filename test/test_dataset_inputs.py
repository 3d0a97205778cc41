"""Datasets as people have them: plain nuScenes without the map expansion, and the mistakes users make.

The dataset without expansion is the synthetic one with `maps/expansion/` left out (its semantic-prior PNGs
stay, as in the plain nuScenes download); the mistakes are real files and real command lines.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from nuscenes.nuscenes import NuScenes
from rosbags.rosbag2 import Reader

from tinybev_ros.errors import DatasetError
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


def tables_copy(synth_dataset, root: Path, version: str | None = None) -> Path:
    """`root` with a copy of the synthetic dataset's tables (in a folder named `version`) beside links to its
    samples and maps: tables to edit, files left as they are."""
    shutil.copytree(synth_dataset.dataroot / synth_dataset.version, root / (version or synth_dataset.version))
    for folder in ("samples", "maps"):
        (root / folder).symlink_to(synth_dataset.dataroot / folder)
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


def test_training_without_expansion_learns_the_drivable_layer_only(synth_dataset, without_expansion, tmp_path,
                                                                    caplog):
    """Plain nuScenes trains: the map target is the semantic prior, and the layers it lacks are out of the loss."""
    import torch

    from tinybev_ros.model.config import load_model_config
    from training.data import DataConfig, NuScenesBevDataset, collate
    from training.losses import LossWeights, supervised_losses
    from training.targets import TargetConfig

    model = load_model_config(REPO / "config" / "model_tiny.yaml")
    plain = NuScenes(version=synth_dataset.version, dataroot=str(without_expansion), verbose=False)
    with caplog.at_level(logging.WARNING):
        data = NuScenesBevDataset(plain, "train", model.grid, model.det_stride, model,
                                  DataConfig(max_samples=2, cache_dir=str(tmp_path / "cache")), TargetConfig(),
                                  train=False, with_lidar=False)
    assert "no map expansion for boston-seaport, singapore-onenorth" in caplog.text and "not trained" in caplog.text
    targets = collate([data[0], data[1]])["targets"]
    known = torch.tensor([name == "drivable_area" for name in MAP_CLASSES])
    assert (targets["map_valid"] == known).all() and targets["map"][:, known].mean() > 0.05

    def map_loss(logits: torch.Tensor) -> torch.Tensor:
        return supervised_losses({"map": logits}, targets, LossWeights(map_dice=1.0), model.grid)["map"]

    logits = torch.zeros(targets["map"].shape)
    unknown_moved, known_moved = logits.clone(), logits.clone()
    unknown_moved[:, ~known] = 5.0
    known_moved[:, known] = 5.0
    assert map_loss(unknown_moved) == map_loss(logits) != map_loss(known_moved)


def test_a_keyframes_only_download_takes_the_earlier_sweep_from_the_files_it_has(synth_dataset, tmp_path):
    """Real nuScenes tables list every 20 Hz sweep; the keyframes-only download lacks their files. A sweep 0.46 s
    back whose file is absent gives way to the previous keyframe, as on a dataset without sweeps."""
    from tinybev_ros.model.config import load_model_config
    from training.sample_cache import map_grid_of, read_sample

    root = tables_copy(synth_dataset, tmp_path / "keyframes_only")
    tables = root / synth_dataset.version
    records = json.loads((tables / "sample_data.json").read_text())
    poses = json.loads((tables / "ego_pose.json").read_text())
    full = NuScenes(version=synth_dataset.version, dataroot=str(synth_dataset.dataroot), verbose=False)
    sample = full.get("sample", full.get("sample", full.scene[0]["first_sample_token"])["next"])
    keyframe = next(r for r in records if r["token"] == sample["data"]["LIDAR_TOP"])
    previous = next(r for r in records if r["token"] == keyframe["prev"])
    sweep = {**keyframe, "token": "f" * 32, "ego_pose_token": "f" * 32, "is_key_frame": False,
             "timestamp": keyframe["timestamp"] - 460_000, "prev": previous["token"], "next": keyframe["token"]}
    sweep["filename"] = f"sweeps/LIDAR_TOP/absent__LIDAR_TOP__{sweep['timestamp']}.pcd.bin"
    previous["next"], keyframe["prev"] = sweep["token"], sweep["token"]
    pose = next(p for p in poses if p["token"] == keyframe["ego_pose_token"])
    poses.append({**pose, "token": sweep["token"], "timestamp": sweep["timestamp"]})
    (tables / "sample_data.json").write_text(json.dumps(records + [sweep]))
    (tables / "ego_pose.json").write_text(json.dumps(poses))

    model = load_model_config(REPO / "config" / "model_tiny.yaml")
    listed = NuScenes(version=synth_dataset.version, dataroot=str(root), verbose=False)
    assert listed.get("sample_data", sample["data"]["LIDAR_TOP"])["prev"] == sweep["token"]
    want = read_sample(full, sample["token"], model.image_width, map_grid_of(model.grid), {})
    got = read_sample(listed, sample["token"], model.image_width, map_grid_of(model.grid), {})
    assert len(want.lidar_previous) > 1000 and got.previous_lag_s == want.previous_lag_s > 0.45
    np.testing.assert_array_equal(got.lidar_previous, want.lidar_previous)


def test_a_partial_download_trains_on_what_is_there_and_a_broken_lidar_file_is_named(synth_dataset, tmp_path,
                                                                                     caplog):
    """Some trainval blobs only: the tables list every scene, the files of the others are absent. Training (and
    teacher caching) leave those samples out with a warning, as mmdetection3d's available-scenes filter does;
    evaluation, which the devkit scores over the whole split, names the first missing file instead."""
    import os

    from tinybev_ros.errors import DatasetFileMissing
    from tinybev_ros.model.config import load_model_config
    from training.data import DataConfig, NuScenesBevDataset
    from training.sample_cache import map_grid_of, read_sample
    from training.splits import split_sample_tokens
    from training.targets import TargetConfig

    root = tmp_path / "partial"
    shutil.copytree(synth_dataset.dataroot, root, copy_function=os.symlink)
    nusc = NuScenes(version=synth_dataset.version, dataroot=str(root), verbose=False)
    tokens = split_sample_tokens(nusc, "mini_train")
    lidar = root / nusc.get("sample_data", nusc.get("sample", tokens[3])["data"]["LIDAR_TOP"])["filename"]
    lidar.unlink()  # one sample of the split "not downloaded"
    model = load_model_config(REPO / "config" / "model_tiny.yaml")
    common = {"grid": model.grid, "det_stride": 4, "camera_config": model, "target_config": TargetConfig(),
              "train": False, "with_lidar": True}
    data = DataConfig(cache_dir=str(tmp_path / "cache"), max_samples=5)
    with caplog.at_level(logging.WARNING):
        dataset = NuScenesBevDataset(nusc, "mini_train", data_config=data, partial_ok=True, **common)
    assert dataset.tokens == [t for t in tokens if t != tokens[3]][:5]
    said = f"1 of the {len(tokens)} samples of split 'mini_train' (1 scenes: scene-0061) have files missing"
    assert said in caplog.text
    with pytest.raises(DatasetFileMissing, match=re.escape(f"LiDAR file {lidar} does not exist")):
        NuScenesBevDataset(nusc, "mini_train", data_config=DataConfig(cache_dir=str(tmp_path / "cache")),
                           partial_ok=False, **common)
    lidar.write_bytes(b"")  # an empty file (an interrupted download) is not an empty point cloud
    with pytest.raises(DatasetError, match=re.escape(f"corrupt point cloud {lidar}: 0 bytes")):
        read_sample(nusc, tokens[3], model.image_width, map_grid_of(model.grid), {})
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(DatasetError, match="cannot write the sample cache .* give data.cache_dir"):
        NuScenesBevDataset(nusc, "mini_train", data_config=DataConfig(cache_dir=str(tmp_path / "file" / "cache")),
                           partial_ok=True, **common)
    shutil.rmtree(root / "samples")
    with pytest.raises(DatasetFileMissing, match="no sample of split 'mini_val' has its files under"):
        NuScenesBevDataset(nusc, "mini_val", data_config=data, partial_ok=True, **common)


def test_a_split_of_ones_own_is_scored_by_the_devkit_only_from_the_version_folder(synth_dataset, tmp_path):
    """The devkit evaluators read a split name they do not define from <dataroot>/<version>/splits.json."""
    from training.splits import check_devkit_split

    root = tables_copy(synth_dataset, tmp_path / "own")
    splits = root / synth_dataset.version / "splits.json"
    table = {**json.loads(splits.read_text()), "holdout": ["scene-0103"]}
    splits.write_text(json.dumps(table))
    nusc = NuScenes(version=synth_dataset.version, dataroot=str(root), verbose=False)
    check_devkit_split(nusc, "holdout")
    check_devkit_split(nusc, "mini_val")
    splits.rename(root / "splits.json")  # ours reads it there too; the devkit does not
    with pytest.raises(DatasetError, match=f"from {splits} only, which does not hold it"):
        check_devkit_split(nusc, "holdout")


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
    no_val = tables_copy(synth_dataset, tmp_path / "no_val")
    (no_val / synth_dataset.version / "splits.json").write_text(json.dumps({"mini_train": ["scene-0061"]}))
    bad_splits = tmp_path / "bad_splits"
    shutil.copytree(no_val, bad_splits, symlinks=True)
    (bad_splits / synth_dataset.version / "splits.json").write_text('{"mini_train": [')
    eval_args = ("eval", "--checkpoint", tiny_checkpoint, "--figure-scenes", "0", "--no-speed", "--tasks", "map",
                 "--out", tmp_path / "never")
    def relabelled(name: str, version: str, splits: dict | None) -> Path:  # the same scenes as another version
        root = tables_copy(synth_dataset, tmp_path / name, version)
        (root / version / "splits.json").unlink()
        if splits is not None:
            (root / version / "splits.json").write_text(json.dumps(splits))
        return root

    trainval = relabelled("trainval", "v1.0-trainval", None)  # scene-0061 is in train, scene-0103 in val
    test_set = relabelled("test_set", "v1.0-test", {"test": ["scene-0061", "scene-0103"]})
    (test_set / "v1.0-test" / "sample_annotation.json").write_text("[]")
    own_split = relabelled("own_split", synth_dataset.version, {"mini_val": ["scene-0061", "scene-0103"]})
    detection_args = ("eval", "--checkpoint", tiny_checkpoint, "--figure-scenes", "0", "--no-speed", "--tasks",
                      "detection", "--out", tmp_path / "never")
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
        "scene without a dataset": (("demo", "--scene", "scene-0103", "--out", tmp_path / "never"),
                                    "--scene scene-0103 names a scene of --dataroot, and none is given", ""),
        "splits not JSON": (("train", "--config", REPO / "config" / "train_tiny.yaml", "--model", "student",
                             "--dataroot", bad_splits, "--version", synth_dataset.version, "--out", tmp_path / "never"),
                            "splits.json is not valid JSON", ""),
        "mini split of trainval": ((*detection_args, "--dataroot", trainval, "--version", "v1.0-trainval", "--split",
                                    "mini_val"), "scores split 'mini_val' on v1.0-mini only, not on v1.0-trainval",
                                   "other metrics (map, motion"),
        "test split, no annotations": ((*detection_args, "--dataroot", test_set, "--version", "v1.0-test",
                                        "--split", "test"), "has no annotations", "(--tasks map,planning;"),
        "demo of a test scene": (("demo", "--dataroot", test_set, "--version", "v1.0-test", "--scene", "scene-0103",
                                  "--out", tmp_path / "never"), "so the demo cannot score scene-0103",
                                 "tinybev bag convert --dataroot"),
        "a GPU this machine does not have (train)": (
            ("train", "--config", REPO / "config" / "train_tiny.yaml", "--model", "student", "--device", "cuda:7",
             "--dataroot", synth_dataset.dataroot, "--version", synth_dataset.version, "--out", tmp_path / "never"),
            "device 'cuda:7'", "use auto or cpu" if not torch.cuda.is_available() else "visible GPU"),
        "a GPU this machine does not have (eval)": ((*eval_args, "--dataroot", synth_dataset.dataroot, "--device",
                                                     "cuda:7"), "device 'cuda:7'", ""),
        "own split for detection": ((*detection_args, "--dataroot", own_split, "--split", "val"),
                                    "split 'mini_val' here holds 2 of the dataroot's scenes and the devkit's "
                                    "'mini_val' 1", "scene-0061"),
    }
    # Two at a time: each case is a fresh interpreter importing torch and the devkit, mostly one core's work.
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(cases, pool.map(lambda case: _tinybev(*case[0]), cases.values()), strict=True))
    for name, (_, *expected) in cases.items():
        result = results[name]
        assert result.returncode == 2, (name, result.stderr[-2000:])
        errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]  # (progress bars too)
        assert "Traceback" not in result.stderr and len(errors) == 1, (name, result.stderr[-2000:])
        assert result.stderr.strip().splitlines()[-1] == errors[0] and errors[0].startswith("tinybev ")
        assert all(text in errors[0] for text in expected), (name, errors)
    assert not (tmp_path / "never").exists()
