"""Tracker: identities persist through motion (own and ego), coast through misses, die, reset on loops."""

from __future__ import annotations

import numpy as np
import pytest

from tinybev_ros.geometry import BevGrid, Transform
from tinybev_ros.predictions import Predictions
from tinybev_ros.taxonomy import DETECTION_CLASSES
from tinybev_ros.tracking import Tracker, TrackerConfig

CAR, PED = DETECTION_CLASSES.index("car"), DETECTION_CLASSES.index("pedestrian")
HALF_SECOND_NS = 500_000_000


def _frame(step: int, xy, labels, velocities=None, scores=None) -> Predictions:
    xy = np.asarray(xy, float).reshape(-1, 2)
    n = len(xy)
    grid = BevGrid(-2, 2, -2, 2, 1.0)
    return Predictions(
        stamp_ns=step * HALF_SECOND_NS, centers=np.concatenate([xy, np.zeros((n, 1))], 1), sizes_wlh=np.ones((n, 3)),
        yaws=np.zeros(n), velocities=np.zeros((n, 2)) if velocities is None else np.asarray(velocities, float),
        scores=np.ones(n) if scores is None else np.asarray(scores, float), labels=np.asarray(labels, np.int64),
        track_ids=-np.ones(n, np.int64), forecasts=np.zeros((n, 1, 12, 2)), forecast_probs=np.ones((n, 1)),
        map_probs=np.zeros((4, 4, 4)), occupancy=np.zeros((5, 4, 4)), ego_plan=np.zeros((6, 2)), command=2,
        grid=grid)


def test_fast_cars_keep_ids_only_with_velocity_compensation() -> None:
    """Two cars 6 m apart at 10 m/s (5 m per frame, beyond the 4 m gate) driving in opposite lanes."""
    with_velocity, without_velocity = Tracker(), Tracker()
    ids_with, ids_without = [], []
    for step in range(5):
        xy = [[5.0 * step, 0.0], [20.0 - 5.0 * step, 6.0]]
        velocity = [[10.0, 0.0], [-10.0, 0.0]]
        ids_with.append(with_velocity.update(_frame(step, xy, [CAR, CAR], velocity)).track_ids.tolist())
        ids_without.append(without_velocity.update(_frame(step, xy, [CAR, CAR])).track_ids.tolist())
    assert all(ids == ids_with[0] for ids in ids_with) and len(set(ids_with[0])) == 2
    assert ids_without[1] != ids_without[0]  # the gate rejects them: new identities every frame


def test_ego_motion_is_compensated_with_the_pose() -> None:
    """A parked car seen from an ego driving at 12 m/s: 6 m closer every frame in base_link."""
    tracker = Tracker()
    ids = []
    for step in range(4):
        ego = Transform(np.eye(3), np.array([6.0 * step, 0.0, 0.0]))
        ids.append(int(tracker.update(_frame(step, [[30.0 - 6.0 * step, 2.0]], [CAR]), ego).track_ids[0]))
    assert ids == [ids[0]] * 4


def test_classes_do_not_mix_and_closest_pair_wins() -> None:
    tracker = Tracker()
    first = tracker.update(_frame(0, [[0.0, 0.0], [0.5, 0.0]], [CAR, PED])).track_ids
    second = tracker.update(_frame(1, [[0.4, 0.0], [0.1, 0.0]], [CAR, PED])).track_ids
    assert second.tolist() == first.tolist()  # class beats distance: the car keeps the car's id
    a = tracker.update(_frame(2, [[0.4, 0.0], [0.1, 0.0], [3.0, 0.0]], [CAR, PED, CAR])).track_ids
    assert a[0] == first[0] and a[2] not in first.tolist()  # nearest car keeps the id, the far one is new


def test_coasting_death_and_low_scores() -> None:
    tracker = Tracker(TrackerConfig(max_age=2))
    original = int(tracker.update(_frame(0, [[0.0, 0.0]], [CAR], [[2.0, 0.0]])).track_ids[0])
    tracker.update(_frame(1, np.zeros((0, 2)), []))
    tracker.update(_frame(2, np.zeros((0, 2)), []))
    # Missed twice (= max_age): still alive, predicted at 3 m after 1.5 s.
    assert int(tracker.update(_frame(3, [[3.0, 0.0]], [CAR], [[2.0, 0.0]])).track_ids[0]) == original
    for step in (4, 5, 6):
        tracker.update(_frame(step, np.zeros((0, 2)), []))
    assert tracker.num_tracks == 0  # three misses: dead
    reborn = tracker.update(_frame(7, [[8.0, 0.0]], [CAR], [[2.0, 0.0]], scores=[0.9]))
    assert int(reborn.track_ids[0]) != original
    weak = tracker.update(_frame(8, [[9.0, 0.0]], [CAR], scores=[0.05]))
    assert weak.track_ids.tolist() == [-1]


def test_a_frame_without_the_pose_is_left_untracked_not_mixed_with_world_tracks() -> None:
    """A late /tf for one frame: its base_link positions are not world positions, so it is not associated
    (ids -1) and the track coasts through it, keeping its id; without any pose, base_link tracking goes on."""
    tracker = Tracker()
    ids = []
    for step in range(6):
        ego = None if step == 3 else Transform(np.eye(3), np.array([6.0 * step, 0.0, 0.0]))
        ids.append(int(tracker.update(_frame(step, [[30.0 - 6.0 * step, 2.0]], [CAR]), ego).track_ids[0]))
    assert ids[3] == -1 and ids[:3] + ids[4:] == [ids[0]] * 5
    for step in range(6, 6 + tracker.config.max_age + 3):  # the pose is gone for good: the world tracks die,
        ids.append(int(tracker.update(_frame(step, [[2.0, 2.0]], [CAR])).track_ids[0]))  # then base_link ones
    assert ids[-2] >= 0 and ids[-1] == ids[-2] and ids[-2] != ids[0]
    ego = Transform(np.eye(3), np.array([500.0, 0.0, 0.0]))  # a pose again: base_link tracks are not continued
    assert int(tracker.update(_frame(20, [[2.0, 2.0]], [CAR]), ego).track_ids[0]) not in (ids[0], ids[-1])


def test_time_running_backwards_resets() -> None:
    tracker = Tracker()
    first = int(tracker.update(_frame(10, [[0.0, 0.0]], [CAR])).track_ids[0])
    assert int(tracker.update(_frame(11, [[0.0, 0.0]], [CAR])).track_ids[0]) == first
    looped = int(tracker.update(_frame(0, [[0.0, 0.0]], [CAR])).track_ids[0])  # the bag started again
    assert looped != first and tracker.num_tracks == 1


def test_bad_gate_count_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="gates_m"):
        TrackerConfig(gates_m=(1.0, 2.0))
