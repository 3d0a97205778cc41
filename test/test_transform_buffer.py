"""The ROS-free transform tree: REP 105 chains, optical frames, interpolation, clear faults, thread safety."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from tinybev_ros.geometry import Transform, quat_to_matrix, quat_to_yaw
from tinybev_ros.transform_buffer import TransformBuffer, TransformError

S = 1_000_000_000


def yaw(angle: float, x: float = 0.0, y: float = 0.0, z: float = 0.0) -> Transform:
    q = np.array([np.cos(angle / 2), 0.0, 0.0, np.sin(angle / 2)])
    return Transform(quat_to_matrix(q), np.array([x, y, z]))


# camera_link (x forward, REP 103) -> camera_optical_frame (z forward, x right, y down)
OPTICAL = Transform(np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]), np.zeros(3))


@pytest.fixture
def tree() -> TransformBuffer:
    buffer = TransformBuffer()
    buffer.set_transform("map", "odom", 0, yaw(0.0, 100.0, 50.0), static=True)
    buffer.set_transform("odom", "base_link", 10 * S, yaw(0.0, 0.0, 0.0))
    buffer.set_transform("odom", "base_link", 11 * S, yaw(np.pi / 2, 10.0, 0.0))
    buffer.set_transform("base_link", "camera_link", 0, yaw(0.0, 1.5, 0.0, 1.6), static=True)
    buffer.set_transform("camera_link", "camera_optical_frame", 0, OPTICAL, static=True)
    return buffer


def test_static_chain_to_an_optical_frame(tree):
    camera = tree.lookup("base_link", "camera_optical_frame")
    np.testing.assert_allclose(camera.translation, [1.5, 0.0, 1.6])
    forward = camera.apply(np.array([0.0, 0.0, 1.0])) - camera.translation  # the optical axis is base_link +x
    np.testing.assert_allclose(forward, [1.0, 0.0, 0.0], atol=1e-12)
    back = tree.lookup("camera_optical_frame", "base_link")
    np.testing.assert_allclose((back @ camera).matrix, np.eye(4), atol=1e-12)


def test_interpolation_along_map_odom_base_link(tree):
    mid = tree.lookup("map", "base_link", 10 * S + S // 2)
    np.testing.assert_allclose(mid.translation, [105.0, 50.0, 0.0], atol=1e-9)
    assert quat_to_yaw(mid.quat_wxyz) == pytest.approx(np.pi / 4)
    exact = tree.lookup("map", "base_link", 11 * S)
    np.testing.assert_allclose(exact.translation, [110.0, 50.0, 0.0])
    newest = tree.lookup("map", "camera_optical_frame")  # None: the newest of every edge
    np.testing.assert_allclose(newest.translation, [110.0, 51.5, 1.6], atol=1e-9)


def test_faults_name_the_frames_and_the_time(tree):
    with pytest.raises(TransformError, match=r"cannot transform base_link to map at 12000000000 ns: "
                                             r"odom -> base_link is known from 10000000000 to 11000000000 ns"):
        tree.lookup("map", "base_link", 12 * S)
    with pytest.raises(TransformError, match="cannot transform lidar to map: the frames are not connected"):
        tree.lookup("map", "lidar")
    assert not tree.can_transform("map", "base_link", 9 * S) and tree.can_transform("map", "base_link", 10 * S)
    with pytest.raises(TransformError, match="frames must differ"):
        tree.set_transform("base_link", "base_link", 0, Transform())


def test_a_static_edge_also_sent_on_tf_stays_static(tree):
    """A camera mount latched on /tf_static and repeated on /tf by a driver became a one-sample history, and every
    frame's lookup at its own stamp failed (missing_tf)."""
    tree.set_transform("base_link", "camera_link", 20 * S, yaw(0.0, 1.7, 0.0, 1.6))  # /tf, at 20 s
    np.testing.assert_allclose(tree.lookup("base_link", "camera_link", 10 * S + S // 2).translation, [1.7, 0.0, 1.6])
    tree.set_transform("base_link", "camera_link", 0, yaw(0.0, 1.5, 0.0, 1.6), static=True)
    assert tree.lookup("base_link", "camera_link", 99 * S).translation[0] == pytest.approx(1.5)
    tree.set_transform("odom", "base_link", 12 * S, yaw(0.0), static=True)  # a timed edge made static is static
    assert tree.lookup("odom", "base_link", 99 * S).translation[0] == pytest.approx(0.0)


def test_history_is_bounded_by_the_cache():
    buffer = TransformBuffer(cache_s=1.0)
    for k in range(100):
        buffer.set_transform("odom", "base_link", k * S // 10, yaw(0.0, float(k)))
    assert not buffer.can_transform("odom", "base_link", 0)
    assert buffer.lookup("odom", "base_link", 95 * S // 10).translation[0] == pytest.approx(95.0)


def test_one_thread_writes_while_another_looks_up():
    buffer = TransformBuffer(cache_s=2.0)
    buffer.set_transform("base_link", "cam", 0, OPTICAL, static=True)
    errors: list[Exception] = []
    done = threading.Event()

    def write() -> None:
        for k in range(3000):
            buffer.set_transform("odom", "base_link", k * 10_000_000, yaw(k * 1e-3, k * 0.01))
        done.set()

    def read() -> None:
        while not done.is_set():
            try:
                pose = buffer.lookup("odom", "cam")
                assert np.allclose(pose.rotation @ pose.rotation.T, np.eye(3), atol=1e-9)
            except TransformError:
                pass  # before the first /tf: a clean, named fault
            except Exception as exc:  # noqa: BLE001 (any other is the race this test exists for)
                errors.append(exc)
                return

    threads = [threading.Thread(target=write), threading.Thread(target=read)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert buffer.lookup("odom", "base_link").translation[0] == pytest.approx(29.99)
