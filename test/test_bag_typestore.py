"""The shared rosbags type store: Kilted plus installed interface packages, hashes equal to the built ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ament_index_python.packages import get_package_share_directory

from tinybev_ros.ros.bag.typestore import MissingInterfaceError, build_typestore, ensure_msgtype, typestore


def _built_hash(msgtype: str) -> str:
    package, _, name = msgtype.split("/")
    description = Path(get_package_share_directory(package)) / "msg" / f"{name}.json"
    return json.loads(description.read_text())["type_hashes"][0]["hash_string"]


def test_shared_store_knows_vision_msgs_with_the_built_hashes():
    store = typestore()
    assert store is typestore()  # built once per process
    for msgtype in ("vision_msgs/msg/Detection3DArray", "vision_msgs/msg/BoundingBox3D", "tf2_msgs/msg/TFMessage"):
        assert store.hash_rihs01(msgtype) == _built_hash(msgtype)


def test_missing_types_load_from_the_installed_package_or_fail_by_name():
    store = build_typestore(extra_packages=())
    assert "vision_msgs/msg/Detection3D" not in store.types
    ensure_msgtype(store, "vision_msgs/msg/Detection3D")
    assert store.hash_rihs01("vision_msgs/msg/Detection3D") == _built_hash("vision_msgs/msg/Detection3D")
    with pytest.raises(MissingInterfaceError, match="'no_such_msgs' is not installed"):
        ensure_msgtype(store, "no_such_msgs/msg/Thing")
    with pytest.raises(MissingInterfaceError, match="vision_msgs/msg/NoSuchType"):
        ensure_msgtype(store, "vision_msgs/msg/NoSuchType")


def test_latched_topics_are_replayed_keeping_what_their_writers_kept():
    """/tf_static keeps every message (several static broadcasters); a node's grids, recorded transient-local
    with the newest kept, keep one: not the whole bag replayed to each late joiner."""
    from rosbags.rosbag2.metadata import QosDurability

    from tinybev_ros.ros.bag.nuscenes_to_bag import LATCHED_QOS, STREAM_QOS, _qos
    from tinybev_ros.ros.bag.rclpy_bridge import playback_qos

    assert playback_qos("/tf_static", [LATCHED_QOS], 20).depth == 20
    assert playback_qos("/tinybev/map/drivable_area", [LATCHED_QOS], 500).depth == LATCHED_QOS.depth == 1
    deeper = _qos(QosDurability.TRANSIENT_LOCAL, 5)
    assert playback_qos("/tinybev/occupancy", [LATCHED_QOS, deeper], 500).depth == 5
    assert playback_qos("/map", [], 3).depth == 3  # no offers recorded: latched by name, every message kept
    assert playback_qos("/odom", [STREAM_QOS], 500).durability.name == "VOLATILE"
