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
