"""`tinybev synth --sweeps`: non-keyframe data at the real rates, each with its own ego pose; CLI errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from nuscenes.nuscenes import NuScenes
from nuscenes.utils.data_classes import LidarPointCloud

from tinybev_ros.cli import main
from tinybev_ros.geometry import CAMERA_NAMES
from tinybev_ros.synth import SynthConfig
from tinybev_ros.synth.generator import scene_split_names


@pytest.fixture(scope="module")
def sweeps_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_sweeps") / "data"
    rc = main(["synth", "--out", str(root), "--scenes", "1", "--duration", "1", "--sweeps", "--seed", "3",
               "--maps", "boston-seaport"])
    assert rc == 0
    return root


def _chain(nusc: NuScenes, channel: str) -> list[dict]:
    first = next(sd for sd in nusc.sample_data if sd["channel"] == channel and not sd["prev"])
    out = [first]
    while out[-1]["next"]:
        out.append(nusc.get("sample_data", out[-1]["next"]))
    return out


def test_sweeps_at_real_rates_with_own_poses(sweeps_root):
    nusc = NuScenes("v1.0-mini", str(sweeps_root), verbose=False)
    assert len(nusc.sample) == 2
    lidar = _chain(nusc, "LIDAR_TOP")
    assert len(lidar) == 20  # 9 sweeps before the first keyframe, 2 keyframes, 9 between
    assert np.all(np.diff([sd["timestamp"] for sd in lidar]) == 50_000)
    assert [sd["is_key_frame"] for sd in lidar].count(True) == 2
    assert all(sd["filename"].startswith("sweeps/") != sd["is_key_frame"] for sd in lidar)
    for channel in CAMERA_NAMES:
        cams = _chain(nusc, channel)
        assert len(cams) == 7 and cams[0]["is_key_frame"] and cams[-1]["is_key_frame"]
        assert np.allclose(np.diff([sd["timestamp"] for sd in cams]), 1e6 / 12, atol=1)
        poses = [nusc.get("ego_pose", sd["ego_pose_token"]) for sd in cams]
        assert [p["timestamp"] for p in poses] == [sd["timestamp"] for sd in cams]
        assert np.linalg.norm(np.subtract(poses[-1]["translation"], poses[0]["translation"])) > 1.0  # ego drives
        assert all((sweeps_root / sd["filename"]).stat().st_size > 10_000 for sd in cams)
        assert cv2.imread(str(sweeps_root / cams[3]["filename"])).shape == (900, 1600, 3)
    sample = nusc.sample[1]
    pc, times = LidarPointCloud.from_file_multisweep(nusc, sample, "LIDAR_TOP", "LIDAR_TOP", nsweeps=10)
    assert len(np.unique(times)) == 10 and pc.points.shape[1] > 9 * 28_000


def test_existing_output_is_refused_and_kept(sweeps_root):
    before = sorted(p.name for p in sweeps_root.iterdir())
    rc = main(["synth", "--out", str(sweeps_root), "--scenes", "1", "--duration", "1"])
    assert rc == 2
    assert sorted(p.name for p in sweeps_root.iterdir()) == before
    assert not list(sweeps_root.parent.glob(".data.tmp-*"))


def test_bad_configuration_is_named():
    with pytest.raises(ValueError, match="version"):
        SynthConfig(version="v2.0")
    with pytest.raises(ValueError, match="maps"):
        SynthConfig(maps=("atlantis",))
    with pytest.raises(ValueError, match="v1.0-trainval"):
        scene_split_names(SynthConfig(scenes=20, version="v1.0-mini"))
    assert len(scene_split_names(SynthConfig(scenes=20, version="v1.0-trainval"))) == 20


def test_a_cut_earlier_sweep_gives_way_to_an_older_one(sweeps_root, caplog):
    """Real downloads hold the odd cut .pcd.bin: the teacher's earlier sweep is then an older one, with a warning,
    where the cache build used to stop at the file."""
    from training.ground_truth import earlier_lidar_record

    nusc = NuScenes("v1.0-mini", str(sweeps_root), verbose=False)
    keyframe = [sd for sd in _chain(nusc, "LIDAR_TOP") if sd["is_key_frame"]][-1]
    chosen = earlier_lidar_record(nusc, keyframe, 0.2, on_disk=True)
    path = sweeps_root / chosen["filename"]
    whole = path.read_bytes()
    try:
        path.write_bytes(whole[: len(whole) // 2 + 3])
        older = earlier_lidar_record(nusc, keyframe, 0.2, on_disk=True)
        assert older is not None and older["timestamp"] < chosen["timestamp"]
        assert f"LiDAR sweep {path} is cut" in caplog.text
        assert earlier_lidar_record(nusc, keyframe, 0.2)["token"] == chosen["token"]  # files unread: as indexed
    finally:
        path.write_bytes(whole)
