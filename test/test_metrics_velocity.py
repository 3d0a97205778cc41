"""Velocity of detected boxes: how much of the motion a model sees, on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest

from tinybev_ros.geometry import BevGrid
from tinybev_ros.predictions import FORECAST_STEPS, Predictions
from tinybev_ros.taxonomy import DETECTION_CLASSES
from training.metrics.velocity import MOVING_SPEED_MPS, VelocityAccumulator

CAR, BARRIER = DETECTION_CLASSES.index("car"), DETECTION_CLASSES.index("barrier")


def boxes(xy: np.ndarray, velocities: np.ndarray, label: int = CAR, score: float = 0.9) -> Predictions:
    n = len(xy)
    return Predictions(
        stamp_ns=0, centers=np.c_[xy, np.zeros(n)], sizes_wlh=np.ones((n, 3)), yaws=np.zeros(n),
        velocities=np.asarray(velocities, float), scores=np.full(n, score), labels=np.full(n, label),
        track_ids=-np.ones(n, np.int64), forecasts=np.zeros((n, 1, FORECAST_STEPS, 2)), forecast_probs=np.ones((n, 1)),
        map_probs=np.zeros((4, 8, 8)), occupancy=np.zeros((5, 8, 8)), ego_plan=np.zeros((6, 2)), command=2,
        grid=BevGrid(-4, 4, -4, 4, 1.0))


def scored(predicted: np.ndarray, truth: np.ndarray, label: int = CAR, offset: float = 0.5) -> dict:
    """Boxes 10 m apart, each prediction `offset` metres off its ground truth."""
    n = len(truth)
    xy = np.c_[10.0 * np.arange(n), np.zeros(n)]
    accumulator = VelocityAccumulator()
    accumulator.add(boxes(xy + [offset, 0.0], predicted, label), np.c_[xy, np.zeros(n)], np.full(n, label),
                    np.asarray(truth, float), np.ones(n, bool))
    return accumulator.result()


TRUTH = np.array([[5.0, 0.0], [0.0, -3.0], [-8.0, 6.0], [0.0, 0.0], [0.1, 0.2]])  # three moving, two still


def test_a_model_that_sees_motion_and_one_that_is_blind_to_it() -> None:
    seeing = scored(TRUTH, TRUTH)["car"]
    assert seeing["moving"] == 3 and seeing["still"] == 2
    assert seeing["speed_seen"] == pytest.approx(1.0) and seeing["moving_error_mps"] == pytest.approx(0.0)
    assert seeing["true_speed_mps"] == pytest.approx((5.0 + 3.0 + 10.0) / 3)
    assert seeing["still_speed_mps"] == pytest.approx(np.hypot(0.1, 0.2) / 2)
    blind = scored(np.zeros_like(TRUTH), TRUTH)["car"]  # what the long record's teacher does
    assert blind["speed_seen"] == 0.0 and blind["moving_error_mps"] == pytest.approx(blind["true_speed_mps"])
    assert blind["still_speed_mps"] == 0.0
    half_backwards = scored(-0.5 * TRUTH, TRUTH)["car"]
    assert half_backwards["speed_seen"] == pytest.approx(-0.5)
    sideways = scored(TRUTH[:, ::-1] * [1.0, -1.0], TRUTH)["car"]  # right speed, turned 90 degrees
    assert sideways["speed_seen"] == pytest.approx(0.0, abs=1e-12) and sideways["moving_error_mps"] > 5.0


def test_what_is_left_out() -> None:
    assert scored(TRUTH, TRUTH, label=BARRIER) == {}  # the devkit scores no barrier velocity
    assert scored(TRUTH, TRUTH, offset=2.5) == {}  # not matched
    unknown = TRUTH.copy()
    unknown[0] = np.nan  # the devkit's velocity of an annotation without neighbours
    assert scored(TRUTH, unknown)["car"]["moving"] == 2
    assert MOVING_SPEED_MPS == 1.0 and scored(TRUTH * 0.0 + [0.99, 0.0], TRUTH * 0.0 + [0.99, 0.0])["car"] == {
        "moving": 0, "still": 5, "still_speed_mps": pytest.approx(0.99)}
