"""The synthetic dataset is real nuScenes format: the devkit loads tables, maps and prediction helpers."""

from __future__ import annotations

import json
import re

import cv2
import numpy as np
import pytest
from nuscenes.map_expansion.map_api import NuScenesMap
from nuscenes.nuscenes import NuScenes
from nuscenes.prediction import PredictHelper
from nuscenes.utils.splits import create_splits_scenes

from tinybev_ros.geometry import CAMERA_NAMES
from tinybev_ros.synth.tables import TABLES

TOKEN = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture(scope="module")
def nusc(synth_dataset) -> NuScenes:
    return NuScenes(synth_dataset.version, str(synth_dataset.dataroot), verbose=False)


def test_tables_tokens_and_splits(synth_dataset, nusc):
    table_dir = synth_dataset.dataroot / synth_dataset.version
    assert sorted(p.stem for p in table_dir.glob("*.json") if p.stem != "splits") == sorted(TABLES)
    for table in ("sample", "sample_data", "sample_annotation", "instance", "scene", "ego_pose", "log", "map"):
        for rec in getattr(nusc, table):
            assert TOKEN.match(rec["token"]), (table, rec["token"])
    splits = json.loads((table_dir / "splits.json").read_text())
    devkit = create_splits_scenes()
    assert splits["mini_train"] and splits["mini_val"]
    for split, names in splits.items():
        assert set(names) <= set(devkit[split])
    assert sorted(s["name"] for s in nusc.scene) == sorted(splits["mini_train"] + splits["mini_val"])


def test_sample_chains_and_sensor_files(synth_dataset, nusc):
    for scene in nusc.scene:
        tokens, tok = [], scene["first_sample_token"]
        while tok:
            tokens.append(tok)
            tok = nusc.get("sample", tok)["next"]
        assert len(tokens) == scene["nbr_samples"] == 16
        assert tokens[-1] == scene["last_sample_token"]
        stamps = [nusc.get("sample", t)["timestamp"] for t in tokens]
        assert np.allclose(np.diff(stamps), 500_000)
    sample = nusc.sample[3]
    assert set(sample["data"]) == {*CAMERA_NAMES, "LIDAR_TOP"}
    lidar_sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
    assert lidar_sd["timestamp"] == sample["timestamp"]
    for channel in CAMERA_NAMES:
        sd = nusc.get("sample_data", sample["data"][channel])
        # each camera fires at its own offset before the LiDAR, with its own ego pose
        assert -50_000 < sd["timestamp"] - lidar_sd["timestamp"] < 0
        assert nusc.get("ego_pose", sd["ego_pose_token"])["timestamp"] == sd["timestamp"]
        img = cv2.imread(str(synth_dataset.dataroot / sd["filename"]))
        assert img.shape == (900, 1600, 3) and img.std() > 20
    pts = np.fromfile(synth_dataset.dataroot / lidar_sd["filename"], dtype=np.float32).reshape(-1, 5)
    assert 28_000 < len(pts) < 40_000
    assert set(np.unique(pts[:, 4]).astype(int)) <= set(range(32))
    assert pts[:, 3].min() >= 0 and pts[:, 3].max() <= 255


def test_map_masks_not_empty(synth_dataset, nusc):
    for log in nusc.log:
        nmap = NuScenesMap(str(synth_dataset.dataroot), log["location"])
        scene = next(s for s in nusc.scene if s["log_token"] == log["token"])
        sample = nusc.get("sample", scene["first_sample_token"])
        pose = nusc.get("ego_pose", nusc.get("sample_data", sample["data"]["LIDAR_TOP"])["ego_pose_token"])
        x, y = pose["translation"][:2]
        assert x > 0 and y > 0
        layers = ["drivable_area", "lane_divider", "ped_crossing", "walkway"]
        masks = nmap.get_map_mask((x, y, 100.0, 100.0), 0.0, layers, (200, 200))
        assert masks.shape == (4, 200, 200)
        for name, mask in zip(layers, masks, strict=True):
            assert mask.any(), name
        # the ego drives on the drivable area, and the lane graph knows where it is and where it leads
        assert masks[0][100, 100]
        lane = nmap.get_closest_lane(x, y, radius=3.0)
        assert lane != ""
        poses = nmap.discretize_lanes([lane], 0.5)[lane]
        assert len(poses) > 10 and min(np.hypot(p[0] - x, p[1] - y) for p in poses) < 2.0
        nxt = nmap.get_outgoing_lane_ids(lane)
        assert nxt and all(nmap.get_arcline_path(t) for t in nxt)
        # the semantic prior of the map table covers the ego's path
        map_rec = next(m for m in nusc.map if log["token"] in m["log_tokens"])
        assert map_rec["mask"].is_on_mask(x, y)[0]


def test_predict_helper_gives_futures(nusc):
    helper = PredictHelper(nusc)
    moving = 0
    for ann in nusc.sample_annotation:
        if not ann["next"]:
            continue
        future = helper.get_future_for_agent(ann["instance_token"], ann["sample_token"], 2.0, in_agent_frame=True)
        assert future.ndim == 2 and future.shape[1] == 2 and len(future) >= 1
        if np.linalg.norm(future[-1]) > 2.0:
            moving += 1
    assert moving > 10


@pytest.mark.parametrize(("flags", "message"), [
    (["--scenes", "0"], "scenes must be >= 1, got 0"),
    (["--duration", "0.5"], "duration_s must be 1 to 3600 s (scenes start an hour apart), got 0.5"),
    (["--duration", "1e12"], "duration_s must be 1 to 3600 s (scenes start an hour apart), got 1000000000000.0"),
    (["--duration", "inf"], "duration_s must be 1 to 3600 s (scenes start an hour apart), got inf"),
    (["--duration", "nan"], "duration_s must be 1 to 3600 s (scenes start an hour apart), got nan"),
])
def test_impossible_synth_settings_are_one_line_and_write_nothing(tmp_path, caplog, flags, message):
    from tinybev_ros.cli import main

    assert main(["synth", "--out", str(tmp_path / "out"), *flags]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and message in errors[0] and "\n" not in errors[0]
    assert not (tmp_path / "out").exists()


def test_synth_into_a_folder_holding_files_refuses_and_keeps_them(tmp_path, caplog):
    from tinybev_ros.cli import main

    (tmp_path / "notes.md").write_text("mine\n")
    assert main(["synth", "--out", str(tmp_path), "--scenes", "1", "--duration", "1"]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [f"synth: output directory {tmp_path} exists and is not empty (use --force to replace)"]
    assert [p.name for p in tmp_path.iterdir()] == ["notes.md"] and (tmp_path / "notes.md").read_text() == "mine\n"
