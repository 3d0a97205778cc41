"""`tinybev doctor`: prove that each component of the environment imports and does a real piece of work."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable


def _numpy() -> str:
    import numpy as np

    return np.__version__


def _torch() -> str:
    import numpy as np
    import torch

    shared = torch.from_numpy(np.arange(4, dtype=np.float32))
    assert float(shared.sum()) == 6.0
    cuda = f", CUDA {torch.version.cuda} ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else ""
    return f"{torch.__version__}{cuda}"


def _opencv() -> str:
    import cv2
    import numpy as np

    ok, jpeg = cv2.imencode(".jpg", np.full((8, 8, 3), 127, np.uint8))
    assert ok and cv2.imdecode(jpeg, cv2.IMREAD_COLOR).shape == (8, 8, 3)
    return cv2.__version__


def _rclpy() -> str:
    from nav_msgs.msg import OccupancyGrid
    from rclpy.serialization import deserialize_message, serialize_message

    grid = OccupancyGrid()
    grid.info.width, grid.info.height = 2, 1
    grid.data = [0, 100]
    assert list(deserialize_message(serialize_message(grid), OccupancyGrid).data) == [0, 100]
    return importlib.metadata.version("ros-rclpy")


def _interfaces() -> str:
    from tf2_msgs.msg import TFMessage
    from vision_msgs.msg import Detection3DArray

    return f"{Detection3DArray.__module__.split('.')[0]}, {TFMessage.__module__.split('.')[0]}"


def _nuscenes() -> str:
    from nuscenes.eval.detection.evaluate import DetectionEval  # noqa: F401
    from nuscenes.eval.tracking.evaluate import TrackingEval  # noqa: F401
    from nuscenes.map_expansion.map_api import NuScenesMap  # noqa: F401

    return importlib.metadata.version("nuscenes-devkit")


def _rosbags() -> str:
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    msg = store.types["std_msgs/msg/String"](data="ok")
    assert store.deserialize_cdr(store.serialize_cdr(msg, "std_msgs/msg/String"), "std_msgs/msg/String").data == "ok"
    return importlib.metadata.version("rosbags")


CHECKS: dict[str, Callable[[], str]] = {
    "numpy": _numpy,
    "torch": _torch,
    "opencv": _opencv,
    "rclpy (ROS 2)": _rclpy,
    "vision_msgs/tf2_msgs": _interfaces,
    "nuscenes-devkit": _nuscenes,
    "rosbags": _rosbags,
}


def configure(parser: argparse.ArgumentParser) -> None:
    del parser  # no options


def run(args: argparse.Namespace) -> int:
    del args
    failed = 0
    for name, check in CHECKS.items():
        try:
            version = check()
        except Exception as exc:  # report every broken component, not just the first
            failed += 1
            print(f"  FAIL  {name:22s} {type(exc).__name__}: {exc}")
            continue
        print(f"  ok    {name:22s} {version}")
    print("environment OK" if not failed else f"{failed} component(s) broken")
    return 1 if failed else 0
