"""Map rasterisation (tinybev_ros/map_masks.py): the devkit's masks where the devkit can draw them, and the shapes
of real maps where it cannot (a lane divider clipped into several pieces)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from nuscenes.map_expansion.map_api import NuScenesMap
from nuscenes.nuscenes import NuScenes

from tinybev_ros.map_masks import map_layer_masks
from tinybev_ros.taxonomy import MAP_CLASSES

LAYERS = list(MAP_CLASSES)


@pytest.fixture(scope="module")
def located(synth_dataset) -> tuple[str, np.ndarray]:
    """A map of the synthetic dataset and the ego position of its first keyframe."""
    nusc = NuScenes(version=synth_dataset.version, dataroot=str(synth_dataset.dataroot), verbose=False)
    scene = nusc.scene[0]
    location = nusc.get("log", scene["log_token"])["location"]
    sample = nusc.get("sample", scene["first_sample_token"])
    pose = nusc.get("ego_pose", nusc.get("sample_data", sample["data"]["LIDAR_TOP"])["ego_pose_token"])
    return location, np.array(pose["translation"][:2])


def test_single_part_shapes_are_drawn_as_the_devkit_draws_them(synth_dataset, located):
    location, centre = located
    nusc_map = NuScenesMap(dataroot=str(synth_dataset.dataroot), map_name=location)
    rng = np.random.default_rng(0)
    for _ in range(6):
        x, y = centre + rng.uniform(-20.0, 20.0, 2)
        patch = (float(x), float(y), float(rng.uniform(60, 150)), float(rng.uniform(60, 150)))
        angle, canvas = float(rng.uniform(-180, 180)), (int(rng.integers(100, 300)), int(rng.integers(100, 300)))
        ours = map_layer_masks(nusc_map, patch, angle, LAYERS, canvas)
        assert ours.shape == (len(LAYERS), *canvas) and ours.any(axis=(1, 2))[LAYERS.index("drivable_area")]
        np.testing.assert_array_equal(ours, nusc_map.get_map_mask(patch, angle, LAYERS, canvas))


def test_a_lane_divider_clipped_into_pieces_is_drawn(synth_dataset, located, tmp_path):
    """A U-shaped divider whose bend lies outside the patch is two lines inside it: the devkit 1.2 raised
    TypeError ('MultiLineString' object is not iterable) on such shapes, which real maps are full of."""
    location, (cx, cy) = located
    expansion = tmp_path / "maps" / "expansion"
    expansion.mkdir(parents=True)
    source = synth_dataset.dataroot / "maps" / "expansion" / f"{location}.json"
    document = json.loads(source.read_text())
    document["lane_divider"] = []  # only the U: what is drawn is its two legs
    corners = [(cx - 10.0, cy - 20.0), (cx - 10.0, cy + 80.0), (cx + 10.0, cy + 80.0), (cx + 10.0, cy - 20.0)]
    nodes = [{"token": f"u-node-{k}", "x": x, "y": y} for k, (x, y) in enumerate(corners)]
    document["node"] += nodes
    document["line"].append({"token": "u-line", "node_tokens": [node["token"] for node in nodes]})
    document["lane_divider"].append({"token": "u-divider", "line_token": "u-line", "lane_divider_segments": []})
    (expansion / f"{location}.json").write_text(json.dumps(document))
    for name in ("basemap", "prediction"):  # NuScenesMap reads the JSON only; keep the layout whole
        if (synth_dataset.dataroot / "maps" / name).exists():
            shutil.copytree(synth_dataset.dataroot / "maps" / name, tmp_path / "maps" / name)
    nusc_map = NuScenesMap(dataroot=str(tmp_path), map_name=location)
    divider = map_layer_masks(nusc_map, (cx, cy, 100.0, 100.0), 0.0, LAYERS, (200, 200))[LAYERS.index("lane_divider")]
    # canvas row = (y - cy + 50) * 2, column = (x - cx + 50) * 2: the legs at columns 80 and 120, rows 60 up
    rows, cols = np.nonzero(divider)
    assert set(np.unique(cols)) <= set(range(78, 83)) | set(range(118, 123)), np.unique(cols)
    for leg in (80, 120):
        on_leg = rows[np.abs(cols - leg) <= 2]
        assert on_leg.min() <= 61 and on_leg.max() >= 198, leg  # from y = cy - 20 to the patch's edge
    assert not divider[:58].any()


def test_semantic_prior_lookups_answer_as_the_devkit_and_decode_each_map_once(tmp_path):
    """Two maps looked up in turn (scenes of two locations walked by name): the devkit's answers, two decodes."""
    import cv2
    from nuscenes.utils.map_mask import MapMask

    from tinybev_ros.map_masks import _prior_pixels, on_semantic_prior

    rng = np.random.default_rng(3)
    masks = []
    for name in ("north", "south"):
        pixels = np.where(rng.random((120, 90)) < 0.4, 255, 0).astype(np.uint8)
        cv2.imwrite(str(tmp_path / f"{name}.png"), pixels)
        masks.append(MapMask(str(tmp_path / f"{name}.png"), resolution=0.1))
    _prior_pixels.cache_clear()
    for turn in range(6):
        x, y = rng.uniform(-1.0, 10.0, 500), rng.uniform(-1.0, 13.0, 500)  # beyond the image on every side too
        x[:250], y[:250] = np.round(x[:250], 2), np.round(y[:250], 2)  # whole centimetres: half-pixel ties
        ours = on_semantic_prior(masks[turn % 2], x, y)
        assert np.array_equal(ours, masks[turn % 2].is_on_mask(x, y)) and 0 < ours.sum() < len(ours)
    assert _prior_pixels.cache_info().misses == 2
