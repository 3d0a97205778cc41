"""The environment is real: every component imports and works, across processes and through bags."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from ament_index_python.packages import get_package_share_directory

REPO = Path(__file__).resolve().parent.parent


def test_numpy_is_the_deliberate_version():
    # nuscenes-devkit 1.2.0 pins numpy<2; everything else is proven to work with 1.26 by the tests here.
    assert np.__version__.startswith("1.26.")


def test_doctor_reports_every_component_working():
    result = subprocess.run([sys.executable, "-m", "tinybev_ros.cli", "doctor"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout
    assert result.stdout.count("  ok  ") == 7


def test_nuscenes_devkit_imports_with_its_evaluators():
    from nuscenes.eval.detection.evaluate import DetectionEval
    from nuscenes.eval.tracking.evaluate import TrackingEval
    from nuscenes.map_expansion.map_api import NuScenesMap
    from nuscenes.nuscenes import NuScenes
    from nuscenes.prediction import PredictHelper

    assert all(callable(c) for c in (NuScenes, NuScenesMap, PredictHelper, DetectionEval, TrackingEval))
    assert importlib.metadata.version("nuscenes-devkit") == "1.2.0"


def test_torch_and_numpy_share_memory():
    import torch

    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    tensor = torch.from_numpy(array)
    tensor += 1
    assert array[1, 2] == 6.0  # same buffer, so the numpy ABI matches


def _rosbags_store_with_interfaces():
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    types = {}
    for package in ("vision_msgs", "autoware_perception_msgs"):
        for msg in sorted((Path(get_package_share_directory(package)) / "msg").glob("*.msg")):
            types.update(get_types_from_msg(msg.read_text(), f"{package}/msg/{msg.stem}"))
    store.register(types)
    return store


@pytest.mark.parametrize("package", ["vision_msgs", "tf2_msgs", "autoware_perception_msgs"])
def test_interface_type_hashes_match_rosbags(package):
    """The RIHS01 hash the build generated equals the one rosbags computes from the same definitions.

    For tf2_msgs rosbags' Kilted store is built from upstream, so equality proves upstream compatibility.
    """
    store = _rosbags_store_with_interfaces()
    share = Path(get_package_share_directory(package)) / "msg"
    checked = 0
    for description in sorted(share.glob("*.json")):
        generated = json.loads(description.read_text())["type_hashes"][0]
        name = f"{package}/msg/{description.stem}"
        assert generated["type_name"] == name
        assert generated["hash_string"] == store.hash_rihs01(name), name
        checked += 1
    assert checked >= {"vision_msgs": 16, "tf2_msgs": 2, "autoware_perception_msgs": 6}[package]


def test_detection3darray_through_a_db3_bag_decodes_in_rclpy(tmp_path):
    from rclpy.serialization import deserialize_message
    from rosbags.rosbag2 import Reader, Writer
    from vision_msgs.msg import Detection3DArray

    store = _rosbags_store_with_interfaces()
    T = store.types
    stamp = T["builtin_interfaces/msg/Time"](sec=1532402927, nanosec=612460000)
    pose = T["geometry_msgs/msg/Pose"](
        position=T["geometry_msgs/msg/Point"](x=10.0, y=-2.5, z=0.75),
        orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.3826834, w=0.9238795),
    )
    hyp = T["vision_msgs/msg/ObjectHypothesisWithPose"](
        hypothesis=T["vision_msgs/msg/ObjectHypothesis"](class_id="car", score=0.9),
        pose=T["geometry_msgs/msg/PoseWithCovariance"](pose=pose, covariance=np.zeros(36)),
    )
    det = T["vision_msgs/msg/Detection3D"](
        header=T["std_msgs/msg/Header"](stamp=stamp, frame_id="base_link"),
        results=[hyp],
        bbox=T["vision_msgs/msg/BoundingBox3D"](center=pose, size=T["geometry_msgs/msg/Vector3"](x=1.9, y=4.6, z=1.7)),
        id="42",
    )
    msg = T["vision_msgs/msg/Detection3DArray"](header=det.header, detections=[det, det])
    bag = tmp_path / "dets"
    with Writer(bag, version=9) as writer:
        conn = writer.add_connection("/tinybev/detections", "vision_msgs/msg/Detection3DArray", typestore=store)
        writer.write(conn, 1532402927612460000, store.serialize_cdr(msg, "vision_msgs/msg/Detection3DArray"))
    assert (bag / "metadata.yaml").exists() and list(bag.glob("*.db3"))

    with Reader(bag) as reader:
        (conn, timestamp, raw), = list(reader.messages())
    decoded = deserialize_message(raw, Detection3DArray)
    assert timestamp == 1532402927612460000
    assert conn.msgtype == "vision_msgs/msg/Detection3DArray"
    assert len(decoded.detections) == 2
    first = decoded.detections[0]
    assert first.id == "42" and first.results[0].hypothesis.class_id == "car"
    assert first.results[0].hypothesis.score == pytest.approx(0.9)
    assert first.bbox.size.y == pytest.approx(4.6)
    assert first.bbox.center.orientation.z == pytest.approx(0.3826834)
    assert decoded.header.stamp.nanosec == 612460000 and decoded.header.frame_id == "base_link"


def test_messages_cross_processes_through_rclpy():
    """Detection3DArray, OccupancyGrid and TFMessage from a publisher process reach this process."""
    import rclpy
    from nav_msgs.msg import OccupancyGrid
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from tf2_msgs.msg import TFMessage
    from vision_msgs.msg import Detection3DArray

    prefix = f"/env_test_{time.monotonic_ns()}"
    publisher = subprocess.Popen(
        [sys.executable, str(REPO / "test/processes/publish_env_samples.py"), prefix, "30"],
        stdout=subprocess.PIPE, text=True,
    )
    rclpy.init()
    try:
        node = rclpy.create_node("env_sample_listener")
        qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
        received = {}
        for name, msg_type in (("detections", Detection3DArray), ("grid", OccupancyGrid), ("tf", TFMessage)):
            node.create_subscription(msg_type, f"{prefix}/{name}", lambda m, n=name: received.setdefault(n, m), qos)
        deadline = time.monotonic() + 30
        while len(received) < 3 and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
        node.destroy_node()
    finally:
        rclpy.shutdown()
        publisher.terminate()
        publisher.wait(timeout=10)
    assert sorted(received) == ["detections", "grid", "tf"], publisher.stdout.read()
    det = received["detections"].detections[0]
    assert det.id == "track-7" and det.results[0].hypothesis.class_id == "pedestrian"
    assert det.bbox.center.position.x == pytest.approx(12.5)
    assert received["detections"].header.stamp.nanosec == 612460000
    assert list(received["grid"].data) == [0, 50, 100, -1, 0, 7]
    assert received["grid"].info.width == 3
    tf = received["tf"].transforms[0]
    assert (tf.header.frame_id, tf.child_frame_id) == ("map", "base_link")
    assert tf.transform.translation.x == pytest.approx(411.3)


@pytest.mark.parametrize("tag", ["cp310-cp310", "cp311-cp311", "cp312-cp312"])
def test_the_wheels_cmake_paths_are_pointed_at_this_interpreter_whatever_python_built_them(tmp_path, tag):
    """The ROS wheels' CMake exports name their build image's Python and numpy headers; only cp311's were
    rewritten, so on Python 3.10 or 3.12 the interface packages failed to configure."""
    import importlib.util
    import sysconfig

    spec = importlib.util.spec_from_file_location("build_interfaces", Path(__file__).resolve().parent.parent /
                                                  "tools" / "build_interfaces.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ver = "3." + tag.split("-")[0][3:]
    exported = tmp_path / "share" / "std_msgs" / "cmake" / "export.cmake"
    exported.parent.mkdir(parents=True)
    exported.write_text(f'set(_IMPORT "/opt/python/{tag}/include/python{ver};'
                        f'/opt/python/{tag}/lib/python{ver}/site-packages/numpy/_core/include")\n')
    assert module.fix_wheel_cmake_paths(tmp_path) == 1
    assert exported.read_text() == f'set(_IMPORT "{sysconfig.get_paths()["include"]};{np.get_include()}")\n'
