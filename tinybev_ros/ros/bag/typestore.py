"""The rosbags type store of the project: ROS 2 Kilted message definitions plus interface packages it lacks.

Bags are written and read with `rosbags` (pure Python, no middleware), whose built-in Kilted store has every
standard message but not vision_msgs. Types of other installed interface packages are registered from their
own `.msg` files (found through the ament index), so the RIHS01 hashes in a bag's metadata equal those the
installed packages were built with, and `ros2 bag` accepts our bags. Other modules reuse `typestore()` to
record our outputs (e.g. vision_msgs/msg/Detection3DArray) into bags.
"""

from __future__ import annotations

import functools
from pathlib import Path

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

DEFAULT_EXTRA_PACKAGES: tuple[str, ...] = ("vision_msgs", "autoware_perception_msgs")


class MissingInterfaceError(LookupError):
    """A message type is neither in the Kilted store nor in an installed interface package."""


def package_msg_dir(package: str) -> Path:
    """`share/<package>/msg` of an installed interface package (ament index)."""
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

    try:
        share = Path(get_package_share_directory(package))
    except PackageNotFoundError as exc:
        raise MissingInterfaceError(
            f"interface package '{package}' is not installed (not in the ament index, AMENT_PREFIX_PATH)"
        ) from exc
    msg_dir = share / "msg"
    if not msg_dir.is_dir():
        raise MissingInterfaceError(f"interface package '{package}' has no message definitions in {msg_dir}")
    return msg_dir


def register_package(store: Typestore, package: str) -> None:
    """Register every message of an installed interface package from its .msg files."""
    types = {}
    for msg in sorted(package_msg_dir(package).glob("*.msg")):
        types.update(get_types_from_msg(msg.read_text(), f"{package}/msg/{msg.stem}"))
    store.register(types)


def build_typestore(extra_packages: tuple[str, ...] = DEFAULT_EXTRA_PACKAGES) -> Typestore:
    """A fresh Kilted store with `extra_packages` registered (each must be installed)."""
    store = get_typestore(Stores.ROS2_KILTED)
    for package in extra_packages:
        register_package(store, package)
    return store


@functools.cache
def typestore() -> Typestore:
    """The shared store: Kilted plus vision_msgs and autoware_perception_msgs. Built once per process."""
    return build_typestore()


@functools.cache
def standard_typestore() -> Typestore:
    """Kilted only: enough for the nuScenes converter, which then needs no ROS package installed at all."""
    return build_typestore(extra_packages=())


def ensure_msgtype(store: Typestore, msgtype: str) -> None:
    """Make `msgtype` ("pkg/msg/Name") known to `store`, loading its package's .msg files if needed."""
    if msgtype in store.types:
        return
    package = msgtype.split("/", 1)[0]
    register_package(store, package)
    if msgtype not in store.types:
        raise MissingInterfaceError(f"message type '{msgtype}' is not defined by the installed package '{package}'")
