"""nuScenes -> rosbag2: a synthetic scene converts, and everything read back equals the devkit's tables and files."""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from ament_index_python.packages import get_package_share_directory
from bag_helpers import read_bag
from nuscenes.map_expansion.map_api import NuScenesMap
from nuscenes.nuscenes import NuScenes

from tinybev_ros.geometry import CAMERA_NAMES, wxyz_to_xyzw
from tinybev_ros.ros.bag.atomic_writer import bag_size_bytes
from tinybev_ros.ros.bag.nuscenes_to_bag import ConvertOptions, convert_scene
from tinybev_ros.ros.bag.typestore import standard_typestore

EXPECTED_TYPES = {
    **{f"/{c}/image_rect/compressed": "sensor_msgs/msg/CompressedImage" for c in CAMERA_NAMES},
    **{f"/{c}/camera_info": "sensor_msgs/msg/CameraInfo" for c in CAMERA_NAMES},
    "/LIDAR_TOP": "sensor_msgs/msg/PointCloud2",
    "/tf": "tf2_msgs/msg/TFMessage",
    "/tf_static": "tf2_msgs/msg/TFMessage",
    "/odom": "nav_msgs/msg/Odometry",
    "/markers/annotations": "visualization_msgs/msg/MarkerArray",
    "/map": "nav_msgs/msg/OccupancyGrid",
    "/clock": "rosgraph_msgs/msg/Clock",
}


@pytest.fixture(scope="module")
def nusc(synth_dataset) -> NuScenes:
    return NuScenes(version=synth_dataset.version, dataroot=str(synth_dataset.dataroot), verbose=False)


@pytest.fixture(scope="module")
def synth_sweeps_dataset(tmp_path_factory) -> SimpleNamespace:
    """A 1 s synthetic scene with its 12 Hz / 20 Hz sweeps (the session fixture holds keyframes only).

    A small, sparse world and a coarse LiDAR keep generation to seconds; the converter does not care.
    """
    from tinybev_ros.synth import SynthConfig, generate

    config = SynthConfig(scenes=1, duration_s=1.0, sweeps=True, seed=7, grid_roads=3, lidar_azimuth_steps=300,
                         moving_vehicles_per_100m=0.5, parked_per_100m=0.5, pedestrians_per_100m=0.5)
    dataroot = generate(tmp_path_factory.mktemp("synth_sweeps"), config)
    return SimpleNamespace(dataroot=Path(dataroot), version=config.version)


@pytest.fixture(scope="module")
def converted(nusc, tmp_path_factory):
    """The first scene as a default (sqlite3, keyframes, compressed) bag: (scene, bag path, decoded messages)."""
    scene = nusc.scene[0]
    path = tmp_path_factory.mktemp("convert") / "scene"
    summary = convert_scene(nusc, scene["name"], path, ConvertOptions(progress=False))
    store = standard_typestore()
    messages = [(topic, msgtype, stamp, store.deserialize_cdr(raw, msgtype))
                for topic, msgtype, stamp, raw in read_bag(path)]
    return scene, path, messages, summary


def _keyframes(nusc, scene, channel) -> list[dict]:
    records, token = [], scene["first_sample_token"]
    while token:
        sample = nusc.get("sample", token)
        records.append(nusc.get("sample_data", sample["data"][channel]))
        token = sample["next"]
    return records


def _stamp(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def _by_topic(messages) -> dict[str, list]:
    out = defaultdict(list)
    for topic, _, stamp, msg in messages:
        out[topic].append((stamp, msg))
    return out


def test_every_topic_has_its_type_count_and_sensor_stamps(nusc, converted):
    scene, path, messages, summary = converted
    assert (path / "metadata.yaml").is_file() and list(path.glob("*.db3"))
    types = {topic: msgtype for topic, msgtype, _, _ in messages}
    assert types == EXPECTED_TYPES
    counts = Counter(topic for topic, *_ in messages)
    assert counts == summary.counts
    n = scene["nbr_samples"]
    sensor_stamps = set()
    for channel in (*CAMERA_NAMES, "LIDAR_TOP"):
        records = _keyframes(nusc, scene, channel)
        assert len(records) == n
        stamps = [r["timestamp"] * 1000 for r in records]
        sensor_stamps.update(stamps)
        topics = ([f"/{channel}/image_rect/compressed", f"/{channel}/camera_info"] if channel != "LIDAR_TOP"
                  else ["/LIDAR_TOP", "/odom"])
        for topic in topics:
            got = [(stamp, _stamp(msg.header)) for t, _, stamp, msg in messages if t == topic]
            assert got == [(s, s) for s in stamps], topic  # bag receive time == header stamp == sensor time
    by_topic = _by_topic(messages)
    assert [s for s, _ in by_topic["/tf"]] == sorted(sensor_stamps)
    assert all(_stamp(m.transforms[0].header) == s for s, m in by_topic["/tf"])
    sample_stamps = [nusc.get("sample", r["sample_token"])["timestamp"] * 1000
                     for r in _keyframes(nusc, scene, "LIDAR_TOP")]
    assert [s for s, _ in by_topic["/markers/annotations"]] == sample_stamps
    # /clock at every sensor stamp and never more than 25 ms apart (keyframes alone are 0.5 s apart)
    clocks = [s for s, _ in by_topic["/clock"]]
    assert set(sensor_stamps) <= set(clocks) and clocks == sorted(set(clocks))
    assert clocks[0] == min(sensor_stamps) and clocks[-1] == max(sensor_stamps)
    assert max(np.diff(clocks)) <= 25_000_000
    assert all(m.clock.sec * 1_000_000_000 + m.clock.nanosec == s for s, m in by_topic["/clock"])
    assert counts["/tf_static"] == counts["/map"] == 1
    bag_stamps = [stamp for _, _, stamp, _ in messages]
    assert bag_stamps == sorted(bag_stamps) and bag_stamps[0] == min(sensor_stamps)
    assert summary.size_bytes == bag_size_bytes(path) > 0
    assert summary.duration_s == pytest.approx((max(sensor_stamps) - min(sensor_stamps)) / 1e9)


def test_type_hashes_equal_those_of_the_installed_message_packages(converted):
    from rosbags.rosbag2 import Reader

    _, path, _, _ = converted
    with Reader(path) as reader:
        digests = {c.msgtype: c.digest for c in reader.connections}
    for msgtype, digest in digests.items():
        package, _, name = msgtype.split("/")
        description = Path(get_package_share_directory(package)) / "msg" / f"{name}.json"
        assert digest == json.loads(description.read_text())["type_hashes"][0]["hash_string"], msgtype


def test_the_metadata_is_one_every_rosbag2_since_humble_reads(converted):
    """Humble reads `offered_qos_profiles` as a string of QoS with integer policies (its metadata_io.cpp and
    qos.cpp); Jazzy and later read that below version 9 as well, and need the type hashes (version 7 on)."""
    import yaml

    _, path, _, _ = converted
    info = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert 7 <= info["version"] <= 8
    for topic in info["topics_with_message_count"]:
        meta = topic["topic_metadata"]
        assert meta["type_description_hash"].startswith("RIHS01_")
        profiles = yaml.safe_load(meta["offered_qos_profiles"])  # a string holding a YAML list
        assert isinstance(meta["offered_qos_profiles"], str) and profiles, meta["name"]
        assert all(isinstance(p[key], int) for p in profiles for key in ("history", "reliability", "durability"))
    static = next(t for t in info["topics_with_message_count"] if t["topic_metadata"]["name"] == "/tf_static")
    assert yaml.safe_load(static["topic_metadata"]["offered_qos_profiles"])[0]["durability"] == 1  # transient local


def test_jpeg_bytes_and_camera_info_equal_the_devkit_files_and_calibration(nusc, synth_dataset, converted):
    scene, _, messages, _ = converted
    by_topic = _by_topic(messages)
    for channel in CAMERA_NAMES:
        records = _keyframes(nusc, scene, channel)
        images = by_topic[f"/{channel}/image_rect/compressed"]
        infos = by_topic[f"/{channel}/camera_info"]
        for record, (_, image), (_, info) in zip(records, images, infos, strict=True):
            on_disk = (synth_dataset.dataroot / record["filename"]).read_bytes()
            assert image.data.tobytes() == on_disk
            assert image.format == "jpeg" and image.header.frame_id == channel
            calib = nusc.get("calibrated_sensor", record["calibrated_sensor_token"])
            K = np.asarray(calib["camera_intrinsic"])
            assert np.array_equal(info.k.reshape(3, 3), K)
            assert np.array_equal(info.p.reshape(3, 4)[:, :3], K) and not info.p.reshape(3, 4)[:, 3].any()
            assert np.array_equal(info.r.reshape(3, 3), np.eye(3))
            assert info.distortion_model == "plumb_bob" and not info.d.any() and len(info.d) == 5
            assert (info.width, info.height) == (record["width"], record["height"])
            assert info.header.frame_id == channel


def test_tf_equals_calibrated_sensor_and_ego_pose(nusc, converted):
    scene, _, messages, _ = converted
    by_topic = _by_topic(messages)
    (_, static), = by_topic["/tf_static"]
    edges = {t.child_frame_id: t for t in static.transforms}
    first = nusc.get("sample", scene["first_sample_token"])
    assert set(edges) == set(first["data"])  # every sensor of the car
    for channel, token in first["data"].items():
        calib = nusc.get("calibrated_sensor", nusc.get("sample_data", token)["calibrated_sensor_token"])
        edge = edges[channel]
        assert edge.header.frame_id == "base_link"
        t, q = edge.transform.translation, edge.transform.rotation
        assert np.allclose([t.x, t.y, t.z], calib["translation"], atol=1e-12)
        q_ros = np.array([q.x, q.y, q.z, q.w])
        expected = wxyz_to_xyzw(calib["rotation"]) / np.linalg.norm(calib["rotation"])
        assert np.allclose(q_ros, expected, atol=1e-9) or np.allclose(q_ros, -expected, atol=1e-9)
    tf_by_stamp = {s: m.transforms[0] for s, m in by_topic["/tf"]}
    for record in _keyframes(nusc, scene, "CAM_FRONT"):
        pose = nusc.get("ego_pose", record["ego_pose_token"])
        edge = tf_by_stamp[record["timestamp"] * 1000]
        assert (edge.header.frame_id, edge.child_frame_id) == ("map", "base_link")
        t, q = edge.transform.translation, edge.transform.rotation
        assert np.allclose([t.x, t.y, t.z], pose["translation"], atol=1e-9)
        q_ros = np.array([q.x, q.y, q.z, q.w])
        expected = wxyz_to_xyzw(pose["rotation"]) / np.linalg.norm(pose["rotation"])
        assert np.allclose(q_ros, expected, atol=1e-9) or np.allclose(q_ros, -expected, atol=1e-9)


def _cloud_field(cloud, name: str) -> np.ndarray:
    field = next(f for f in cloud.fields if f.name == name)
    dtype = {7: "<f4", 4: "<u2"}[field.datatype]
    raw = cloud.data.reshape(cloud.width, cloud.point_step)[:, field.offset:field.offset + np.dtype(dtype).itemsize]
    return np.ascontiguousarray(raw).view(dtype).reshape(-1)


def test_point_cloud_points_equal_the_pcd_bin(nusc, synth_dataset, converted):
    scene, _, messages, _ = converted
    clouds = _by_topic(messages)["/LIDAR_TOP"]
    for record, (_, cloud) in zip(_keyframes(nusc, scene, "LIDAR_TOP"), clouds, strict=True):
        points = np.fromfile(synth_dataset.dataroot / record["filename"], dtype="<f4").reshape(-1, 5)
        assert cloud.header.frame_id == "LIDAR_TOP" and cloud.height == 1 and cloud.width == len(points)
        assert [f.name for f in cloud.fields] == ["x", "y", "z", "intensity", "ring"]
        for column, name in enumerate(["x", "y", "z", "intensity"]):
            assert np.array_equal(_cloud_field(cloud, name), points[:, column]), name
        assert np.array_equal(_cloud_field(cloud, "ring"), points[:, 4].astype(np.uint16))


def test_annotations_odometry_and_map_follow_the_tables(nusc, synth_dataset, converted):
    scene, _, messages, _ = converted
    by_topic = _by_topic(messages)
    sample = nusc.get("sample", scene["first_sample_token"])
    (_, markers) = by_topic["/markers/annotations"][0]
    assert markers.markers[0].action == 3  # DELETEALL clears the previous keyframe's boxes
    boxes = markers.markers[1:]
    assert len(boxes) == len(sample["anns"]) > 0
    for marker, token in zip(boxes, sample["anns"], strict=True):
        ann = nusc.get("sample_annotation", token)
        p = marker.pose.position
        assert np.allclose([p.x, p.y, p.z], ann["translation"])
        assert np.allclose([marker.scale.x, marker.scale.y, marker.scale.z],
                           [ann["size"][1], ann["size"][0], ann["size"][2]])  # l, w, h along x, y, z
        assert marker.header.frame_id == "map" and marker.type == 1

    # Odometry: pose = ego pose; speed = distance between the neighbouring sweeps' poses over their time gap.
    for record, (_, odom) in zip(_keyframes(nusc, scene, "LIDAR_TOP"), by_topic["/odom"], strict=True):
        pose = nusc.get("ego_pose", record["ego_pose_token"])
        assert np.allclose([odom.pose.pose.position.x, odom.pose.pose.position.y], pose["translation"][:2])
        before = nusc.get("sample_data", record["prev"]) if record["prev"] else record
        after = nusc.get("sample_data", record["next"]) if record["next"] else record
        a = nusc.get("ego_pose", before["ego_pose_token"])["translation"]
        b = nusc.get("ego_pose", after["ego_pose_token"])["translation"]
        speed = np.linalg.norm(np.subtract(b, a)) / ((after["timestamp"] - before["timestamp"]) * 1e-6)
        v = odom.twist.twist.linear
        assert np.linalg.norm([v.x, v.y, v.z]) == pytest.approx(speed, rel=1e-6, abs=1e-9)
        assert (odom.header.frame_id, odom.child_frame_id) == ("map", "base_link")

    # /map: cells agree with the map expansion's own point query.
    (_, grid), = by_topic["/map"]
    location = nusc.get("log", scene["log_token"])["location"]
    nusc_map = NuScenesMap(dataroot=str(synth_dataset.dataroot), map_name=location)
    values = np.asarray(grid.data).reshape(grid.info.height, grid.info.width)
    assert set(np.unique(values)) == {0, 100}
    res, ox, oy = grid.info.resolution, grid.info.origin.position.x, grid.info.origin.position.y
    rng = np.random.default_rng(0)
    rows = rng.integers(0, grid.info.height, 200)
    cols = rng.integers(0, grid.info.width, 200)
    agree = [
        (values[r, c] == 0) == bool(nusc_map.layers_on_point(ox + (c + 0.5) * res, oy + (r + 0.5) * res,
                                                               ["drivable_area"])["drivable_area"])
        for r, c in zip(rows, cols, strict=True)
    ]
    assert np.mean(agree) > 0.95  # only cells cut by a polygon edge may differ
    ego = nusc.get("ego_pose", nusc.get("sample_data", sample["data"]["LIDAR_TOP"])["ego_pose_token"])
    r, c = int((ego["translation"][1] - oy) / res), int((ego["translation"][0] - ox) / res)
    assert values[r, c] == 0  # the car drives on the drivable area: free


def _scene_records(nusc, scene, channel) -> list[dict]:
    in_scene = {s["token"] for s in nusc.sample if s["scene_token"] == scene["token"]}
    return sorted((r for r in nusc.sample_data if r["channel"] == channel and r["sample_token"] in in_scene),
                  key=lambda r: r["timestamp"])


def test_sweeps_into_mcap_give_the_full_rate_streams(synth_sweeps_dataset, tmp_path):
    nusc = NuScenes(version=synth_sweeps_dataset.version, dataroot=str(synth_sweeps_dataset.dataroot),
                    verbose=False)
    scene = nusc.scene[0]
    path = tmp_path / "sweeps"
    summary = convert_scene(nusc, scene["name"], path, ConvertOptions(storage="mcap", sweeps=True, progress=False))
    assert list(path.glob("*.mcap")) and not list(path.glob("*.db3"))
    messages = read_bag(path)
    counts = Counter(topic for topic, *_ in messages)
    for channel, topic, hz in (("CAM_FRONT", "/CAM_FRONT/image_rect/compressed", 12), ("LIDAR_TOP", "/LIDAR_TOP", 20)):
        records = _scene_records(nusc, scene, channel)
        assert counts[topic] == len(records) > scene["nbr_samples"]
        stamps = [t for tp, _, t, _ in messages if tp == topic]
        assert stamps == [r["timestamp"] * 1000 for r in records]
        assert (len(stamps) - 1) / ((stamps[-1] - stamps[0]) / 1e9) == pytest.approx(hz, rel=0.15)
    assert summary.duration_s > 0
    assert counts["/odom"] == counts["/LIDAR_TOP"] and counts["/markers/annotations"] == scene["nbr_samples"]


def test_raw_images_carry_the_decoded_jpeg_pixels(synth_sweeps_dataset, tmp_path):
    nusc = NuScenes(version=synth_sweeps_dataset.version, dataroot=str(synth_sweeps_dataset.dataroot),
                    verbose=False)
    scene = nusc.scene[0]
    path = tmp_path / "raw"
    convert_scene(nusc, scene["name"], path, ConvertOptions(raw_images=True, with_map=False, progress=False))
    messages = read_bag(path)
    topics = {topic for topic, *_ in messages}
    assert "/CAM_FRONT/image_rect" in topics and "/CAM_FRONT/image_rect/compressed" not in topics
    assert "/map" not in topics
    store = standard_typestore()
    for topic, msgtype, stamp, raw in messages:
        if topic != "/CAM_BACK/image_rect":
            continue
        image = store.deserialize_cdr(raw, msgtype)
        record = next(r for r in _scene_records(nusc, scene, "CAM_BACK") if r["timestamp"] * 1000 == stamp)
        bgr = cv2.imread(str(synth_sweeps_dataset.dataroot / record["filename"]))
        assert image.encoding == "rgb8" and image.step == image.width * 3 and image.header.frame_id == "CAM_BACK"
        assert np.array_equal(image.data.reshape(image.height, image.width, 3), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def test_all_scenes_become_one_bag_each_through_the_tinybev_command(nusc, synth_dataset, tmp_path, capsys):
    from tinybev_ros.cli import main

    out = tmp_path / "bags"
    assert main(["bag", "convert", "--dataroot", str(synth_dataset.dataroot), "--version", synth_dataset.version,
                 "--all", "--out", str(out), "--no-map", "--no-progress"]) == 0
    names = sorted(scene["name"] for scene in nusc.scene)
    assert sorted(p.name for p in out.iterdir()) == names
    printed = capsys.readouterr().out
    for name in names:
        assert (out / name / f"{name}.db3").is_file() and f"scene {name}" in printed
        assert {topic for topic, *_ in read_bag(out / name)} == set(EXPECTED_TYPES) - {"/map"}
    assert "x real time" in printed and "messages" in printed


def test_all_scenes_resume_and_skip_a_scene_whose_files_are_missing(nusc, synth_dataset, tmp_path, capsys, caplog):
    """A partial nuScenes download lists every scene in its tables; --all converts what is there, and a second
    call keeps the bags it finds instead of stopping at the first ("already exists")."""
    import os
    import shutil

    from tinybev_ros.cli import main

    root = tmp_path / "data"
    shutil.copytree(synth_dataset.dataroot, root, copy_function=os.symlink)
    absent = nusc.get("scene", nusc.field2token("scene", "name", "scene-0103")[0])
    sample = nusc.get("sample", absent["first_sample_token"])
    (root / nusc.get("sample_data", sample["data"]["CAM_BACK"])["filename"]).unlink()
    out = tmp_path / "bags"
    command = ["bag", "convert", "--dataroot", str(root), "--version", synth_dataset.version, "--all", "--out",
               str(out), "--no-map", "--no-progress"]
    with caplog.at_level(logging.INFO):
        assert main(command) == 0
        assert [p.name for p in out.iterdir()] == ["scene-0061"]
        assert "scene scene-0103 skipped: missing input file" in caplog.text
        assert "skipped 1 of 2 scenes with input files missing (a partial download?): scene-0103" in caplog.text
        caplog.clear()
        assert main(command) == 0
        assert "kept the 1 scenes already converted" in caplog.text and "scene scene-0103 skipped" in caplog.text
    capsys.readouterr()
    for scene in nusc.scene:
        (root / nusc.get("sample_data", nusc.get("sample", scene["first_sample_token"])["data"]["CAM_FRONT"])
         ["filename"]).unlink()
    shutil.rmtree(out)
    assert main(command) == 2
    assert "no scene of v1.0-mini has its files under" in capsys.readouterr().err


def test_all_scenes_go_on_past_a_scene_with_a_corrupt_file_and_name_it(nusc, synth_dataset, tmp_path, capsys):
    """A cut JPEG in one scene (real downloads hold a few) stops that scene only; the command then fails naming it."""
    import os
    import shutil

    from tinybev_ros.cli import main

    root = tmp_path / "data"
    shutil.copytree(synth_dataset.dataroot, root, copy_function=os.symlink)
    broken = nusc.get("scene", nusc.field2token("scene", "name", "scene-0103")[0])
    sample = nusc.get("sample", broken["first_sample_token"])
    jpeg = root / nusc.get("sample_data", sample["data"]["CAM_BACK"])["filename"]
    data = jpeg.read_bytes()
    jpeg.unlink()
    jpeg.write_bytes(data[: len(data) // 2])
    out = tmp_path / "bags"
    assert main(["bag", "convert", "--dataroot", str(root), "--version", synth_dataset.version, "--all", "--out",
                 str(out), "--no-map", "--no-progress"]) == 2
    assert [p.name for p in out.iterdir()] == ["scene-0061"]  # converted, and nothing half-written for the other
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1 of 2 scenes not converted (1 converted, 0 kept, 0 skipped): scene-0103:" in err[0], err
