"""Converter faults: broken or missing inputs are named, and no partial bag ever appears at the target path."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from nuscenes.nuscenes import NuScenes

from tinybev_ros.ros.bag import nuscenes_to_bag


@pytest.fixture(scope="module")
def nusc(synth_dataset) -> NuScenes:
    return NuScenes(version=synth_dataset.version, dataroot=str(synth_dataset.dataroot), verbose=False)


@pytest.fixture
def dataroot(synth_dataset, tmp_path) -> Path:
    """A private view of the synthetic dataroot made of symlinks, so a test can break one file of it."""
    root = tmp_path / "data"
    shutil.copytree(synth_dataset.dataroot, root, copy_function=os.symlink)
    return root


def _record(nusc, channel: str, sample_index: int) -> dict:
    token = nusc.scene[0]["first_sample_token"]
    for _ in range(sample_index):
        token = nusc.get("sample", token)["next"]
    return nusc.get("sample_data", nusc.get("sample", token)["data"][channel])


def _convert(root: Path, version: str, out: Path, *extra: str) -> int:
    return nuscenes_to_bag.main(["--dataroot", str(root), "--version", version, "--out", str(out), "--no-progress",
                                 *extra])


def _nothing_left(out: Path) -> bool:
    return not out.exists() and not list(out.parent.glob(f".{out.name}.partial-*"))


@pytest.mark.parametrize(("channel", "problem"), [("CAM_FRONT", "truncated"), ("LIDAR_TOP", "not a whole number")])
def test_truncated_input_is_refused_naming_the_file(nusc, synth_dataset, dataroot, tmp_path, capsys, channel, problem):
    broken = dataroot / _record(nusc, channel, 2)["filename"]
    data = broken.read_bytes()
    broken.unlink()
    broken.write_bytes(data[: len(data) // 2 + 3])  # cut mid-stream, and mid-point for the LiDAR
    out = tmp_path / "bags" / "scene"
    assert _convert(dataroot, synth_dataset.version, out, "--scene", nusc.scene[0]["name"]) == 2
    err = capsys.readouterr().err
    assert str(broken) in err and problem in err
    assert _nothing_left(out)


def test_missing_file_unknown_scene_and_bad_dataroot_give_clear_errors(nusc, synth_dataset, dataroot, tmp_path,
                                                                        capsys):
    scene = nusc.scene[0]["name"]
    out = tmp_path / "bags" / "scene"
    missing = dataroot / _record(nusc, "CAM_BACK", 1)["filename"]
    missing.unlink()
    assert _convert(dataroot, synth_dataset.version, out, "--scene", scene) == 2
    assert f"missing input file {missing}" in capsys.readouterr().err
    assert _nothing_left(out)

    assert _convert(dataroot, synth_dataset.version, out, "--scene", "scene-9999") == 2
    err = capsys.readouterr().err
    assert "unknown scene 'scene-9999'" in err and scene in err

    assert _convert(tmp_path / "nowhere", synth_dataset.version, out, "--scene", scene) == 2
    assert f"dataroot {tmp_path / 'nowhere'} is not a directory" in capsys.readouterr().err
    assert _convert(dataroot, "v9.9-nope", out, "--scene", scene) == 2
    err = capsys.readouterr().err
    assert str(dataroot / "v9.9-nope" / "scene.json") in err and synth_dataset.version in err
    assert _nothing_left(out)


def test_existing_bag_is_kept_unless_forced(nusc, synth_dataset, tmp_path, capsys):
    out = tmp_path / "bags" / "scene"
    args = ("--scene", nusc.scene[0]["name"], "--no-map")
    assert _convert(synth_dataset.dataroot, synth_dataset.version, out, *args) == 0
    first = (out / "metadata.yaml").stat().st_mtime_ns
    assert _convert(synth_dataset.dataroot, synth_dataset.version, out, *args) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert (out / "metadata.yaml").stat().st_mtime_ns == first
    assert _convert(synth_dataset.dataroot, synth_dataset.version, out, *args, "--force") == 0
    assert (out / "metadata.yaml").stat().st_mtime_ns != first
    assert not list(out.parent.glob(".scene.partial-*"))


def _start_blocked_conversion(nusc, synth_dataset, dataroot: Path, out: Path
                              ) -> tuple[subprocess.Popen, int, Path, bytes]:
    """Start a converter process and return once it is mid-write, blocked reading one late input file.

    The late file is a named pipe: the converter's open() returns only when we open its other end, so when
    our open succeeds the converter has written every earlier message and waits on this one.
    """
    record = _record(nusc, "CAM_FRONT", nusc.scene[0]["nbr_samples"] - 1)
    fifo = dataroot / record["filename"]
    jpeg = fifo.resolve().read_bytes()
    fifo.unlink()
    os.mkfifo(fifo)
    process = subprocess.Popen(
        [sys.executable, "-m", "tinybev_ros.ros.bag.nuscenes_to_bag", "--dataroot", str(dataroot), "--version",
         synth_dataset.version, "--scene", nusc.scene[0]["name"], "--out", str(out), "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO until the converter opened it
            break
        except OSError as exc:
            assert exc.errno == errno.ENXIO
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, "converter never reached the late input file"
        time.sleep(0.01)
    return process, writer, fifo, jpeg


def test_killed_mid_write_leaves_no_bag_at_the_target(nusc, synth_dataset, dataroot, tmp_path):
    out = tmp_path / "bags" / "scene"
    process, writer, fifo, jpeg = _start_blocked_conversion(nusc, synth_dataset, dataroot, out)
    partial = list(out.parent.glob(".scene.partial-*"))
    assert len(partial) == 1 and (partial[0] / "scene").is_dir()  # it really was writing
    process.kill()
    process.wait(timeout=30)
    os.close(writer)
    assert not out.exists()

    # The file comes back; a new run succeeds despite the dead run's leftovers beside the target.
    fifo.unlink()
    fifo.write_bytes(jpeg)
    assert _convert(dataroot, synth_dataset.version, out, "--scene", nusc.scene[0]["name"]) == 0
    assert (out / "metadata.yaml").is_file()


def test_terminated_mid_write_cleans_up_after_itself(nusc, synth_dataset, dataroot, tmp_path):
    out = tmp_path / "bags" / "scene"
    process, writer, _, _ = _start_blocked_conversion(nusc, synth_dataset, dataroot, out)
    process.send_signal(signal.SIGTERM)
    os.close(writer)  # the converter's read returns, the signal handler runs
    assert process.wait(timeout=30) == 130
    assert "interrupted; no bag written" in process.stdout.read()
    assert _nothing_left(out)


def test_a_dangling_table_reference_is_reported(nusc, synth_dataset, dataroot, tmp_path, capsys):
    import json

    record = _record(nusc, "LIDAR_TOP", 1)
    table = dataroot / synth_dataset.version / "ego_pose.json"
    rows = [row for row in json.loads(table.read_text()) if row["token"] != record["ego_pose_token"]]
    table.unlink()
    table.write_text(json.dumps(rows))
    out = tmp_path / "bags" / "scene"
    assert _convert(dataroot, synth_dataset.version, out, "--scene", nusc.scene[0]["name"]) == 2
    err = capsys.readouterr().err
    assert "refer to a record that does not exist" in err and record["ego_pose_token"] in err
    assert _nothing_left(out)
