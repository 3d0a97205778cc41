"""The training-resolution sample cache: keyed by what it depends on, resumable, self-repairing, and equal to the
ground truth the evaluation reads."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from nuscenes.nuscenes import NuScenes
from test_training import TINY  # noqa: I001  (test helper module)

from tinybev_ros.model.config import load_model_config
from tinybev_ros.nuscenes_dataset import read_image_rgb
from tinybev_ros.ros.bag.nuscenes_to_bag import read_jpeg
from training.bev_augmentation import BevTransform
from training.evaluation.suite import load_ground_truths
from training.sample_cache import CacheKey, SampleCache, dataset_fingerprint, map_grid_of


@pytest.fixture(scope="module")
def nusc(synth_dataset) -> NuScenes:
    return NuScenes(version=synth_dataset.version, dataroot=str(synth_dataset.dataroot), verbose=False)


def test_the_key_follows_the_tables_the_image_width_and_the_grid(synth_dataset, tmp_path):
    root = synth_dataset.dataroot
    copy = tmp_path / "copy"
    shutil.copytree(root / synth_dataset.version, copy / synth_dataset.version)
    shutil.copytree(root / "maps" / "expansion", copy / "maps" / "expansion")
    same = dataset_fingerprint(copy, synth_dataset.version)
    assert same == dataset_fingerprint(root, synth_dataset.version)
    table = copy / synth_dataset.version / "sample_annotation.json"
    table.write_text(table.read_text().replace('"num_lidar_pts": 1,', '"num_lidar_pts": 2,', 1))
    assert dataset_fingerprint(copy, synth_dataset.version) != same
    grid = load_model_config(TINY).grid
    key = CacheKey(same, synth_dataset.version, 352, (grid.x_min, grid.x_max, grid.y_min, grid.y_max, 1.0))
    names = {key.folder_name(), CacheKey(same, synth_dataset.version, 704, key.grid).folder_name(),
             CacheKey(same, synth_dataset.version, 352, (-25.0, 25.0, -25.0, 25.0, 0.5)).folder_name()}
    assert len(names) == 3 and key.folder_name() == CacheKey(**key.__dict__).folder_name()
    with pytest.raises(FileNotFoundError, match="no nuScenes tables"):
        dataset_fingerprint(tmp_path / "empty", synth_dataset.version)


RANK_SCRIPT = """
import sys
import torch.distributed as dist
from nuscenes.nuscenes import NuScenes
from tinybev_ros.model.config import load_model_config
from training.sample_cache import SampleCache

dataroot, version, model_yaml, out = sys.argv[1:]
dist.init_process_group("gloo")
nusc = NuScenes(version=version, dataroot=dataroot, verbose=False)
model = load_model_config(model_yaml)
cache = SampleCache(out, nusc, model.image_width, model.grid)
tokens = [s["token"] for s in nusc.sample][:5]
wrote = cache.ensure(tokens)
complete = all(cache.path(t).is_file() for t in tokens)  # ensure returns with every sample, not only its share
print(f"rank {dist.get_rank()} wrote {wrote} complete {complete}", flush=True)
dist.destroy_process_group()
"""


def test_under_torchrun_the_ranks_share_the_caching_and_each_ends_with_every_sample(synth_dataset, tmp_path):
    """Every rank used to read the whole split from the dataset (hours on trainval, N times over); now each
    starts with its share, then takes what is still missing, never waiting in a collective."""
    import os
    import signal
    import subprocess
    import sys

    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1"}
    launcher = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                                 "--standalone", str(script), str(synth_dataset.dataroot), synth_dataset.version,
                                 str(TINY), str(tmp_path / "cache")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=Path(__file__).resolve().parent.parent, env=env, start_new_session=True)
    try:
        stdout, stderr = launcher.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(launcher.pid, signal.SIGKILL)  # the ranks too, not only the launcher
        raise
    assert launcher.returncode == 0, stderr[-3000:]
    lines = sorted(line.split() for line in stdout.splitlines() if line.startswith("rank "))
    assert [(rank, complete) for _, rank, _, _, _, complete in lines] == [("0", "True"), ("1", "True")], stdout
    assert sum(int(wrote) for _, _, _, wrote, _, _ in lines) >= 5  # each sample written (a few maybe twice)


def test_a_rank_starts_with_its_own_share_then_takes_the_rest(nusc, tmp_path, monkeypatch):
    """The order the multi-process test above cannot see: rank 1 of 2 writes samples 1, 3 first, then 0, 2, 4."""
    import torch.distributed as dist

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    model = load_model_config(TINY)
    tokens = [s["token"] for s in nusc.sample][:5]
    cache = SampleCache(tmp_path, nusc, model.image_width, model.grid)
    written = []
    real_write = cache.write
    monkeypatch.setattr(cache, "write", lambda sample: written.append(sample.sample_token) or real_write(sample))
    assert cache.ensure(tokens) == 5
    assert written == [tokens[1], tokens[3], tokens[0], tokens[2], tokens[4]]


def test_ensure_resumes_and_a_damaged_file_is_rebuilt(nusc, tmp_path, caplog):
    model = load_model_config(TINY)
    tokens = [s["token"] for s in nusc.sample][:3]
    cache = SampleCache(tmp_path, nusc, model.image_width, model.grid)
    assert cache.ensure(tokens) == 3 and cache.ensure(tokens) == 0
    assert (cache.folder / "info.json").is_file()
    assert not list(cache.folder.glob("*.partial")) and len(list(cache.folder.glob("*.safetensors"))) == 3
    cache.path(tokens[1]).unlink()
    assert cache.ensure(tokens) == 1  # an interrupted run continues with what is missing
    good = cache.load(tokens[2])
    path = cache.path(tokens[2])
    path.write_bytes(path.read_bytes()[:1000])  # a disk fault or a killed copy
    with caplog.at_level(logging.WARNING):
        again = cache.load(tokens[2])
    assert "unreadable" in caplog.text and path.name in caplog.text
    np.testing.assert_array_equal(again.images, good.images)
    np.testing.assert_array_equal(cache.load(tokens[2]).lidar, good.lidar)  # and it was written back whole
    with pytest.raises(FileNotFoundError, match="ensure"):
        cache.load(nusc.sample[-1]["token"])


def test_a_cached_sample_gives_the_ground_truth_the_evaluation_reads(nusc, tmp_path):
    model = load_model_config(TINY)
    grid = model.grid
    tokens = [s["token"] for s in nusc.sample][2:6]
    cache = SampleCache(tmp_path, nusc, model.image_width, grid)
    cache.ensure(tokens)
    truths = load_ground_truths(nusc, tokens, grid, progress=False)
    for token in tokens:
        record = cache.load(token)
        gt = record.ground_truth(map_grid_of(grid), grid, BevTransform.identity())
        want = truths[token]
        for name in ("centers", "sizes_wlh", "yaws", "velocities", "labels", "futures", "ego_future"):
            np.testing.assert_allclose(getattr(gt, name), getattr(want, name), atol=1e-9, err_msg=name)
        np.testing.assert_array_equal(gt.occupancy, want.occupancy)
        np.testing.assert_array_equal(gt.evaluable, want.evaluable)
        assert gt.command == want.command and gt.instance_tokens == want.instance_tokens
        # The map comes from a larger devkit patch: the same polygons, rasterised with a shifted origin.
        assert (gt.map_masks == want.map_masks).mean() > 0.995
        assert record.lidar.shape[1] == 5 and len(record.lidar) > 1000


def test_a_truncated_jpeg_is_an_error_naming_the_file(synth_dataset, tmp_path):
    source = next((synth_dataset.dataroot / "samples" / "CAM_FRONT").glob("*.jpg"))
    assert read_image_rgb(source).shape == (900, 1600, 3)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    with pytest.raises(ValueError, match="broken.jpg is a truncated JPEG"):
        read_image_rgb(broken)
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        read_image_rgb(tmp_path / "missing.jpg")
    padded = tmp_path / "padded.jpg"  # zeros after the end-of-image marker, as some writers align files
    padded.write_bytes(source.read_bytes() + bytes(4096))
    np.testing.assert_array_equal(read_image_rgb(padded), read_image_rgb(source))
    assert read_jpeg(padded) == padded.read_bytes()  # the bag converter reads the same files alike
    with pytest.raises(ValueError, match="broken.jpg: truncated"):
        read_jpeg(broken)
