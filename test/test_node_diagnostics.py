"""/diagnostics of a tinybev_node built in this process (the shipped student, no executor spinning): its level says
what is wrong now, its values count what happened since the start."""

from __future__ import annotations

import time
from collections.abc import Iterator

import cv2
import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.context import Context
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage

from tinybev_ros.ros import messages as M
from tinybev_ros.ros.perception_node import PerceptionNode

STAMP = 1_700_000_000_000_000_000


@pytest.fixture
def node(request) -> Iterator[PerceptionNode]:
    """The node with the defaults, or with the parameters an indirect parametrization gives."""
    overrides = [Parameter(name, value=value) for name, value in getattr(request, "param", {}).items()]
    context = Context()
    rclpy.init(context=context, args=[])
    node = PerceptionNode(context=context, parameter_overrides=overrides)
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


def send_frames(node: PerceptionNode, count: int) -> None:
    """`count` in-sync camera sets at 2 Hz of stamps, straight into the image callback (no executor)."""
    jpeg = cv2.imencode(".jpg", np.zeros((900, 1600, 3), np.uint8))[1].tobytes()
    for k in range(count):
        for camera in node.cfg.cameras:
            msg = CompressedImage(format="jpeg", data=jpeg)
            msg.header.stamp, msg.header.frame_id = M.to_time(STAMP + k * 500_000_000), camera
            node._on_image(camera, msg)


def test_latest_wins_drops_are_counted_not_warned(node) -> None:
    """With frame_queue_size 1 a set that completes while inference is busy replaces the waiting one, by design."""
    assert node.cfg.frame_queue_size == 1
    node._stop.set()  # inference stalls for good: each new camera set replaces the waiting one
    node._worker.join()
    send_frames(node, 3)
    status, values = report(node)
    assert values["dropped_busy"] == "2" and values["sync_emitted"] == "3"
    assert status.level == DiagnosticStatus.OK and not [key for key in values if key.startswith("fault_")]


@pytest.mark.parametrize("node", [{"sync_warn_after_s": 0.2}], indirect=True)
def test_no_image_for_sync_warn_after_s_warns_naming_the_topic_and_the_rates_fall_to_zero(node) -> None:
    """A node that never received an image, or whose cameras all stopped, once reported OK with its last rates."""
    node._stop.set()  # no inference: the sets only need to form
    node._worker.join()
    time.sleep(0.3)
    status, values = report(node)
    assert status.level == DiagnosticStatus.WARN, status.message
    assert status.message.startswith("no camera image since start-up") and "CAM_FRONT" in status.message
    assert values["no_camera_set"] == status.message
    send_frames(node, 3)
    status, values = report(node)
    assert status.level == DiagnosticStatus.OK and float(values["input_rate_hz"]) > 0, status.message
    time.sleep(0.3)
    status, values = report(node)
    assert status.level == DiagnosticStatus.WARN and status.message.startswith("no camera image for 0."), \
        status.message
    assert values["input_rate_hz"] == "0.00" and values["output_rate_hz"] == "0.00"
