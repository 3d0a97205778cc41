"""Sensors agree with the annotations: boxes projected by the devkit land on drawn objects, and the
LiDAR points inside each box are as many as the annotation records."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from nuscenes.nuscenes import NuScenes
from nuscenes.utils.data_classes import LidarPointCloud
from nuscenes.utils.geometry_utils import BoxVisibility, points_in_box, view_points

from tinybev_ros.geometry import CAMERA_NAMES
from tinybev_ros.synth.generator import rebuild_scene, scene_time


@pytest.fixture(scope="module")
def nusc(synth_dataset) -> NuScenes:
    return NuScenes(synth_dataset.version, str(synth_dataset.dataroot), verbose=False)


def test_lidar_points_inside_boxes_match_num_lidar_pts(synth_dataset, nusc):
    checked = with_points = 0
    for sample in nusc.sample[::3]:
        lidar_token = sample["data"]["LIDAR_TOP"]
        path, boxes, _ = nusc.get_sample_data(lidar_token)
        pc = LidarPointCloud.from_file(path)
        for box in boxes:
            ann = nusc.get("sample_annotation", box.token)
            inside = int(points_in_box(box, pc.points[:3]).sum())
            assert inside == ann["num_lidar_pts"], (ann["category_name"], inside, ann["num_lidar_pts"])
            checked += 1
            with_points += inside > 0
    assert checked > 50 and with_points > 0.7 * checked


def test_projected_boxes_cover_rendered_objects(synth_dataset, nusc):
    """Inside every well visible box's projection the image differs from a render of the empty world."""
    scene = next(s for s in nusc.scene if s["name"] == "scene-0103")
    sensors = rebuild_scene(synth_dataset.config, scene["name"])
    t0 = nusc.get("sample", scene["first_sample_token"])["timestamp"]
    samples, token = [], scene["first_sample_token"]
    while token:
        samples.append(nusc.get("sample", token))
        token = samples[-1]["next"]
    shares = []
    for sample in (samples[1], samples[8]):
        for channel in CAMERA_NAMES:
            sd_token = sample["data"][channel]
            sd = nusc.get("sample_data", sd_token)
            path, boxes, k_mat = nusc.get_sample_data(sd_token, box_vis_level=BoxVisibility.ALL)
            boxes = [b for b in boxes if nusc.get("sample_annotation", b.token)["visibility_token"] in ("3", "4")
                     and nusc.get("sample_annotation", b.token)["num_lidar_pts"] >= 5]
            if not boxes:
                continue
            written = cv2.imread(path).astype(np.int16)
            t = scene_time(sd["timestamp"], t0)
            with_agents = sensors.camera(channel, t).image.astype(np.int16)
            empty = sensors.camera(channel, t, include_agents=False).image.astype(np.int16)
            # the files are this very render (deterministic rebuild; only JPEG loss differs)
            assert np.abs(written - with_agents).mean() < 4.0
            changed = np.abs(written - empty).max(axis=2) > 25
            for box in boxes:
                corners = view_points(box.corners(), k_mat, normalize=True)[:2].T
                hull = cv2.convexHull(np.round(corners).astype(np.int32))
                mask = np.zeros(changed.shape, np.uint8)
                cv2.fillConvexPoly(mask, hull, 1)
                if mask.sum() < 150:
                    continue
                share = changed[mask > 0].mean()
                # thin objects (people, bikes) fill only part of their box's outline
                assert share > 0.15, (channel, nusc.get("sample_annotation", box.token)["category_name"], share)
                shares.append(share)
    assert len(shares) >= 5 and np.median(shares) > 0.5


def test_same_seed_same_world_different_seed_different(synth_dataset):
    from tinybev_ros.synth.generator import scene_seed
    from tinybev_ros.synth.population import build_scene
    from tinybev_ros.synth.world import build_world

    config = synth_dataset.config
    a = build_scene(build_world(config, "boston-seaport", 5), config, scene_seed(config, 1), 1)
    b = build_scene(build_world(config, "boston-seaport", 5), config, scene_seed(config, 1), 1)
    c = build_scene(build_world(config, "boston-seaport", 6), config, scene_seed(config, 2), 2)
    assert np.array_equal(a.trajectories.xy, b.trajectories.xy)
    assert [x.category for x in a.agents] == [x.category for x in b.agents]
    assert a.trajectories.xy.shape != c.trajectories.xy.shape or not np.allclose(a.trajectories.xy, c.trajectories.xy)
