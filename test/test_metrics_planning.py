"""Planning L2 and collision rate: hand-computed cases for both the UniAD and the ST-P3 definitions."""

from __future__ import annotations

import numpy as np
import pytest

from tinybev_ros.path_headings import path_headings
from training.metrics.boxes import box_corners, boxes_overlap
from training.metrics.planning import PlanningAccumulator, ego_collisions

GT = np.stack([2.0 * np.arange(1, 7), np.zeros(6)], axis=1)  # straight on at 4 m/s
NONE = [np.zeros((0, 4, 2))] * 6


def _box(x: float, y: float, length: float, width: float, yaw: float = 0.0) -> np.ndarray:
    return box_corners([[x, y]], [length], [width], [yaw])


def test_box_overlap_separating_axes() -> None:
    a = _box(0, 0, 4, 2)[0]
    others = np.concatenate([_box(3.9, 0, 4, 2), _box(4.1, 0, 4, 2), _box(0, 2.5, 4, 2, np.pi / 4),
                             _box(0, 3.5, 4, 2, np.pi / 4)])
    # 45-degree box at y=2.5 reaches down to 2.5 - (2+1)/sqrt(2) = 0.38 < 1: overlaps; at y=3.5 it reaches 1.38.
    assert boxes_overlap(a, others).tolist() == [True, False, True, False]


def test_the_ego_box_faces_along_the_plan_and_holds_when_standing() -> None:
    """The collision check's ego box turns with the plan (the ROS poses' rule, tinybev_ros/path_headings.py): a
    1 m step left turns it, standing keeps it. A plan sliding left towards a car 5.5 m to the left: facing forward
    the ego box would stay clear of it, turned along the path it reaches it at the second waypoint."""
    path = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 1.0], [0.0, 1.0]])
    assert np.allclose(path_headings(np.vstack([[0.0, 0.0], path]), 0.0), [0.0, np.pi / 2, np.pi / 2, np.pi])
    left_turn = np.array([[0.0, 0.5], [0.0, 1.5]])  # sideways: the ego box turns to +y
    ahead = _box(0.0, 5.5, 4, 2)  # a car across the path 5.5 m to the left, facing +x
    assert ego_collisions(left_turn, [ahead, ahead]).tolist() == [False, True]


def test_the_ego_box_reaches_ahead_of_base_link_as_the_car_does() -> None:
    """base_link is the rear axle: the box was centred there, its front 2.04 m ahead, and a car stopped 2.5 m ahead
    of the rear axle (inside the real car's front) was never hit. UniAD and ST-P3 centre it 1.44 m ahead."""
    from training.metrics.planning import EGO_CENTER_AHEAD_M, EGO_LENGTH

    standing = np.zeros((6, 2))
    rear_at = 2.5  # a car whose rear is 2.5 m ahead of our rear axle
    stopped = _box(rear_at + 2.0, 0.0, 4.0, 2.0)
    assert ego_collisions(standing, [stopped] * 6).all()
    clear = _box(EGO_CENTER_AHEAD_M + EGO_LENGTH / 2 + 0.1 + 2.0, 0.0, 4.0, 2.0)  # 0.1 m beyond the front
    assert not ego_collisions(standing, [clear] * 6).any()
    behind = _box(-0.66 - 0.2 - 2.0, 0.0, 4.0, 2.0)  # 0.2 m behind the rear bumper, 0.66 m behind the axle
    assert not ego_collisions(standing, [behind] * 6).any()


def test_l2_per_timestep_vs_average_over_horizon() -> None:
    acc = PlanningAccumulator()
    offsets = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    plan = GT + np.stack([np.zeros(6), offsets], axis=1)
    acc.add(plan, GT, np.ones(6, bool), NONE, NONE)
    out = acc.result()
    assert out["uniad"]["l2_1s"] == pytest.approx(0.2)
    assert out["uniad"]["l2_2s"] == pytest.approx(0.4)
    assert out["uniad"]["l2_3s"] == pytest.approx(0.6)
    assert out["stp3"]["l2_1s"] == pytest.approx(0.15)
    assert out["stp3"]["l2_2s"] == pytest.approx(0.25)
    assert out["stp3"]["l2_3s"] == pytest.approx(0.35)
    assert out["uniad"]["l2_avg"] == pytest.approx(0.4)
    assert out["uniad"]["collision_3s"] == 0.0


def test_missing_ground_truth_ends_the_horizon() -> None:
    acc = PlanningAccumulator()
    acc.add(GT + [0.0, 1.0], GT, np.array([1, 1, 1, 0, 1, 1], bool), NONE, NONE)
    acc.add(GT + [0.0, 3.0], GT, np.ones(6, bool), NONE, NONE)
    out = acc.result()
    assert out["uniad"]["l2_1s"] == pytest.approx(2.0)  # both samples reach 1 s
    assert out["uniad"]["l2_2s"] == pytest.approx(3.0)  # the first stops after 1.5 s
    assert out["stp3"]["l2_3s"] == pytest.approx(3.0)


def test_collision_with_a_parked_car_both_definitions() -> None:
    plan = GT.copy()
    plan[3] = [8.0, 3.0]  # swerves left at 2 s into a car parked at (8, 4.5)
    car = [_box(8.0, 4.5, 4.0, 2.0)] * 6
    acc = PlanningAccumulator()
    acc.add(plan, GT, np.ones(6, bool), car, NONE)
    out = acc.result()
    assert [out["uniad"][f"collision_{t}s"] for t in (1, 2, 3)] == pytest.approx([0.0, 100.0, 0.0])
    assert [out["stp3"][f"collision_{t}s"] for t in (1, 2, 3)] == pytest.approx([0.0, 25.0, 100.0 / 6])


def test_pedestrians_count_for_stp3_only() -> None:
    plan = GT.copy()
    plan[5] = [12.0, 2.0]
    pedestrian = [_box(12.0, 2.8, 0.6, 0.6)] * 6
    acc = PlanningAccumulator()
    acc.add(plan, GT, np.ones(6, bool), NONE, pedestrian)
    out = acc.result()
    assert out["uniad"]["collision_3s"] == 0.0
    assert out["stp3"]["collision_3s"] == pytest.approx(100.0 / 6)
    assert out["stp3"]["collision_2s"] == 0.0


def test_waypoints_where_ground_truth_collides_are_excluded() -> None:
    empty = np.zeros((0, 4, 2))
    on_path = [empty, _box(4.0, 0.0, 4.0, 2.0)] + [empty] * 4  # annotation noise on the GT path at 1 s
    acc = PlanningAccumulator()
    acc.add(GT, GT, np.ones(6, bool), on_path, NONE)
    acc.add(GT + [0.0, 10.0], GT, np.ones(6, bool), [_box(2.0, 10.0, 4.0, 2.0)] * 6, NONE)  # collides at every step
    out = acc.result()
    assert out["uniad"]["collision_1s"] == pytest.approx(100.0)  # at 1 s only the second sample counts, and hits
    # ST-P3 1 s: the first sample averages waypoint 1 only (waypoint 2 excluded) -> 0; the second -> 1; mean 50 %.
    assert out["stp3"]["collision_1s"] == pytest.approx(50.0)


def test_plan_shape_mismatch_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="plan shape"):
        PlanningAccumulator().add(GT[:3], GT, np.ones(6, bool), NONE, NONE)
