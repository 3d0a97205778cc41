"""/diagnostics of a tinybev_node built in this process (the shipped student, no executor spinning): its level says
what is wrong now, its values count what happened since the start."""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.context import Context
from sensor_msgs.msg import CompressedImage

from tinybev_ros.ros import messages as M
from tinybev_ros.ros.perception_node import PerceptionNode

STAMP = 1_700_000_000_000_000_000


@pytest.fixture
def node() -> Iterator[PerceptionNode]:
    context = Context()
    rclpy.init(context=context, args=[])
    node = PerceptionNode(context=context)
    try:
        yield node
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)


def report(node: PerceptionNode) -> tuple[DiagnosticStatus, dict[str, str]]:
    status = node.diagnostics({camera: 1 for camera in node.cfg.cameras})
    return status, {kv.key: kv.value for kv in status.values}


def test_a_fault_warns_in_the_next_report_only_and_stays_counted(node) -> None:
    """One corrupt image used to leave /diagnostics WARN for the rest of the run."""
    assert report(node)[0].level == DiagnosticStatus.OK
    node.fault("corrupt_image", "CAM_BACK: does not decode; frame skipped")
    (first, _), (second, values) = report(node), report(node)
    assert first.level == DiagnosticStatus.WARN and "corrupt_image" in first.message
    assert second.level == DiagnosticStatus.OK and second.message == "ok" and values["fault_corrupt_image"] == "1"


def test_latest_wins_drops_are_counted_not_warned(node) -> None:
    """With frame_queue_size 1 a set that completes while inference is busy replaces the waiting one, by design."""
    assert node.cfg.frame_queue_size == 1
    node._stop.set()  # inference stalls for good: each new camera set replaces the waiting one
    node._worker.join()
    jpeg = cv2.imencode(".jpg", np.zeros((900, 1600, 3), np.uint8))[1].tobytes()
    for k in range(3):
        for camera in node.cfg.cameras:
            msg = CompressedImage(format="jpeg", data=jpeg)
            msg.header.stamp, msg.header.frame_id = M.to_time(STAMP + k * 500_000_000), camera
            node._on_image(camera, msg)
    status, values = report(node)
    assert values["dropped_busy"] == "2" and values["sync_emitted"] == "3"
    assert status.level == DiagnosticStatus.OK and not [key for key in values if key.startswith("fault_")]
