"""Heading of detected boxes: axis, direction and reversal shares on hand-made cases."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tinybev_ros.geometry import BevGrid
from tinybev_ros.predictions import FORECAST_STEPS, Predictions
from tinybev_ros.taxonomy import DETECTION_CLASSES
from training.metrics.heading import HeadingAccumulator

CAR, CONE = DETECTION_CLASSES.index("car"), DETECTION_CLASSES.index("traffic_cone")


def boxes(xy: np.ndarray, yaws: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> Predictions:
    n = len(xy)
    return Predictions(
        stamp_ns=0, centers=np.c_[xy, np.zeros(n)], sizes_wlh=np.ones((n, 3)), yaws=np.asarray(yaws, float),
        velocities=np.zeros((n, 2)), scores=np.asarray(scores, float), labels=np.asarray(labels),
        track_ids=-np.ones(n, np.int64), forecasts=np.zeros((n, 1, FORECAST_STEPS, 2)), forecast_probs=np.ones((n, 1)),
        map_probs=np.zeros((4, 8, 8)), occupancy=np.zeros((5, 8, 8)), ego_plan=np.zeros((6, 2)), command=2,
        grid=BevGrid(-4, 4, -4, 4, 1.0))


def scored(predicted_yaws: np.ndarray, truth_yaws: np.ndarray, **changes) -> dict:
    """Cars 10 m apart, each prediction 0.5 m off its ground truth with the given heading."""
    n = len(truth_yaws)
    xy = np.c_[10.0 * np.arange(n), np.zeros(n)]
    prediction = boxes(xy + [0.5, 0.0], predicted_yaws, np.full(n, CAR), np.full(n, 0.9))
    prediction = dataclasses.replace(prediction, **changes)
    accumulator = HeadingAccumulator()
    accumulator.add(prediction, np.c_[xy, np.zeros(n)], np.full(n, CAR), np.asarray(truth_yaws, float),
                    np.ones(n, bool))
    return accumulator.result()


def test_a_reversed_box_has_its_axis_and_not_its_direction() -> None:
    truth = np.linspace(-np.pi, np.pi, 12, endpoint=False)
    right = scored(truth + 0.1, truth)["car"]
    assert right["matched"] == 12 and right["axis_within_tolerance"] == right["direction_within_tolerance"] == 1.0
    assert right["reversed"] == 0.0 and right["mean_error_deg"] == pytest.approx(np.degrees(0.1))
    reversed_ = scored(truth + np.pi - 0.1, truth)["car"]  # across the -pi/pi seam too
    assert reversed_["axis_within_tolerance"] == 1.0 and reversed_["direction_within_tolerance"] == 0.0
    assert reversed_["reversed"] == 1.0 and reversed_["histogram"] == [0, 0, 0, 0, 0, 12]


def test_headings_at_random_get_an_axis_a_third_of_the_time() -> None:
    """Errors spread evenly over the circle (what a collapsed sin/cos regression gives): axis within 30 degrees
    1/3 of the time, direction 1/6, and a mean error of 90 degrees, the same mean as half the boxes reversed."""
    offsets = np.radians(np.arange(360) + 0.5)
    noise = scored(offsets, np.zeros(360))["car"]
    assert noise["axis_within_tolerance"] == pytest.approx(1 / 3) and noise["reversed"] == pytest.approx(1 / 6)
    assert noise["direction_within_tolerance"] == pytest.approx(1 / 6)
    assert noise["mean_error_deg"] == pytest.approx(90.0) and noise["histogram"] == [60] * 6
    half = scored(np.r_[np.zeros(180), np.full(180, np.pi)], np.zeros(360))["car"]
    assert half["mean_error_deg"] == pytest.approx(90.0) and half["axis_within_tolerance"] == 1.0


def test_only_published_boxes_of_the_same_class_and_evaluable_truth_count() -> None:
    truth = np.zeros(4)
    assert scored(truth, truth, scores=np.full(4, 0.1)) == {}  # below the publish threshold
    assert scored(truth, truth, labels=np.full(4, CONE)) == {}  # other class; cones have no heading at all
    accumulator = HeadingAccumulator()
    xy = np.array([[0.0, 0.0], [10.0, 0.0]])
    accumulator.add(boxes(xy, [0.0, 0.0], [CAR, CAR], [0.9, 0.9]), np.c_[xy, np.zeros(2)], np.array([CAR, CAR]),
                    np.zeros(2), np.array([True, False]))  # the second truth box has no LiDAR point
    assert accumulator.result()["car"]["matched"] == 1
    far = HeadingAccumulator()
    far.add(boxes(xy + [2.5, 0.0], [0.0, 0.0], [CAR, CAR], [0.9, 0.9]), np.c_[xy, np.zeros(2)],
            np.array([CAR, CAR]), np.zeros(2), np.ones(2, bool))
    assert far.result() == {}  # 2.5 m off: not matched
