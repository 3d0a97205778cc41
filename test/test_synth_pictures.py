"""`tinybev synth-render` draws a sample: six camera tiles and a BEV panel with the annotation boxes."""

from __future__ import annotations

import cv2
import numpy as np

from tinybev_ros.cli import main


def test_render_sample_picture(synth_dataset, tmp_path):
    out = tmp_path / "sample.png"
    rc = main(["synth-render", "--dataroot", str(synth_dataset.dataroot), "--version", synth_dataset.version,
               "--scene", "scene-0103", "--index", "3", "--camera-width", "320", "--out", str(out)])
    assert rc == 0
    img = cv2.imread(str(out))
    cam_h = int(round(900 * 320 / 1600))
    assert img.shape == (2 * cam_h, 3 * 320 + 2 * cam_h, 3)
    bev = img[:, 3 * 320:]
    # the BEV shows the map (drivable grey) and car boxes (the car colour)
    assert (np.abs(bev.astype(int) - (90, 90, 90)).sum(axis=2) == 0).mean() > 0.05
    assert (np.abs(bev.astype(int) - (255, 158, 0)).sum(axis=2) < 60).sum() > 20
    assert main(["synth-render", "--dataroot", str(synth_dataset.dataroot), "--scene", "scene-9999",
                 "--out", str(tmp_path / "x.png")]) == 2
    assert main(["synth-render", "--dataroot", str(synth_dataset.dataroot), "--version", synth_dataset.version,
                 "--scene", "scene-0103", "--index", "999", "--out", str(tmp_path / "y.png")]) == 2
    for wrong in (["--index", "-1"], ["--sample", "not-a-token"], ["--camera-width", "0"]):
        assert main(["synth-render", "--dataroot", str(synth_dataset.dataroot), "--version", synth_dataset.version,
                     *wrong, "--out", str(tmp_path / "y.png")]) == 2, wrong
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sample.png"]  # nothing half-written either


def test_render_without_the_map_expansion_draws_boxes_on_a_bare_ground(synth_dataset, tmp_path):
    """Plain nuScenes has its semantic-prior PNGs but no maps/expansion (a separate download): the picture is
    drawn without map layers (it used to fail)."""
    import shutil

    root = tmp_path / "plain"
    shutil.copytree(synth_dataset.dataroot / synth_dataset.version, root / synth_dataset.version)
    (root / "samples").symlink_to(synth_dataset.dataroot / "samples")
    shutil.copytree(synth_dataset.dataroot / "maps", root / "maps", ignore=shutil.ignore_patterns("expansion"))
    out = tmp_path / "sample.png"
    assert main(["synth-render", "--dataroot", str(root), "--version", synth_dataset.version, "--scene", "scene-0103",
                 "--index", "3", "--camera-width", "320", "--out", str(out)]) == 0
    bev = cv2.imread(str(out))[:, 3 * 320:]
    assert (np.abs(bev.astype(int) - (90, 90, 90)).sum(axis=2) == 0).mean() < 0.001  # no drivable area drawn
    assert (np.abs(bev.astype(int) - (255, 158, 0)).sum(axis=2) < 60).sum() > 20  # the cars still are
