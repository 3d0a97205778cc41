"""minADE / minFDE / miss rate / EPA on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from tinybev_ros.geometry import BevGrid
from tinybev_ros.predictions import FORECAST_STEPS, Predictions
from tinybev_ros.taxonomy import DETECTION_CLASSES
from training.metrics.motion import MotionAccumulator, displacement_errors, match_by_center_distance

CAR, PED = DETECTION_CLASSES.index("car"), DETECTION_CLASSES.index("pedestrian")
STEPS = np.arange(1, FORECAST_STEPS + 1, dtype=float)


def _predictions(centers, labels, scores, forecasts) -> Predictions:
    n = len(centers)
    grid = BevGrid(-4, 4, -4, 4, 1.0)
    return Predictions(
        stamp_ns=0, centers=np.asarray(centers, float), sizes_wlh=np.ones((n, 3)), yaws=np.zeros(n),
        velocities=np.zeros((n, 2)), scores=np.asarray(scores, float), labels=np.asarray(labels),
        track_ids=-np.ones(n, np.int64), forecasts=np.asarray(forecasts, float),
        forecast_probs=np.full(np.asarray(forecasts).shape[:2], 1.0 / np.asarray(forecasts).shape[1]),
        map_probs=np.zeros((4, 8, 8)), occupancy=np.zeros((5, 8, 8)), ego_plan=np.zeros((6, 2)), command=2, grid=grid)


def test_greedy_matching_prefers_high_scores_and_respects_the_gate() -> None:
    pred = np.array([[0.0, 0.0], [0.5, 0.0], [9.0, 9.0]])
    gt = np.array([[0.4, 0.0], [5.0, 0.0]])
    # The 0.9 prediction at x=0.5 takes the GT first although the other is also within 2 m; x=9 is too far.
    assert match_by_center_distance(pred, np.array([0.2, 0.9, 0.8]), gt, 2.0) == [(1, 0)]


def test_min_over_modes_and_last_valid_step() -> None:
    future = np.stack([10 + STEPS, np.zeros(12)], axis=1)
    mask = np.ones(12, bool)
    mask[10:] = False  # agent leaves after 5 s: its final step is the 10th
    linear = future + np.stack([np.zeros(12), 0.1 * STEPS], axis=1)  # errors 0.1 .. 1.2
    constant = future + [0.0, 0.7]
    ade, fde, worst = displacement_errors(np.stack([linear, constant]), future, mask)
    assert ade == pytest.approx(0.55)  # mean(0.1..1.0) beats 0.7
    assert fde == pytest.approx(0.7)  # 1.0 at the 10th step loses to 0.7
    assert worst == pytest.approx(0.7)  # the constant mode's largest error (the linear one's is 1.0)


def test_a_forecast_that_ends_on_the_truth_can_still_miss() -> None:
    """The miss rate took minFDE > 2 m; the nuScenes challenge and UniAD take the best mode's largest error."""
    future = np.stack([STEPS, np.zeros(12)], axis=1)
    detour = future.copy()
    detour[5, 1] = 3.0  # 3 m off at 3 s, back on the truth at the end
    _, fde, worst = displacement_errors(detour[None], future, np.ones(12, bool))
    assert fde == 0.0 and worst == pytest.approx(3.0)
    acc = MotionAccumulator()
    acc.add(_predictions([[0.0, 0.0, 0.0]], [CAR], [0.9], detour[None, None]), np.zeros((1, 3)), np.array([CAR]),
            future[None], np.ones((1, 12), bool))
    assert acc.result()["miss_rate"] == 1.0 and acc.result()["EPA"] == 1.0  # a hit by minFDE, a miss by the rule


def test_range_is_the_devkits_circle_per_class_and_agents_without_future_count_in_epa() -> None:
    """A square of 50 m took 27 % more area for vehicles and twice the pedestrians' 40 m circle; UniAD's N_GT counts
    agents that leave the scene, which no forecast can hit."""
    still = np.zeros((12, 2))
    centers = np.array([[36.0, 36.0, 0.0], [30.0, 30.0, 0.0], [5.0, 0.0, 0.0]])  # 50.9 m, 42.4 m, 5 m away
    labels = np.array([CAR, CAR, PED])
    futures = np.stack([still + c[:2] for c in centers])
    mask = np.ones((3, 12), bool)
    acc = MotionAccumulator()
    acc.add(_predictions(centers, labels, [0.9] * 3, futures[:, None]), centers, labels, futures, mask)
    assert acc.result()["ground_truth"] == 2 and acc.result()["matched"] == 2  # the car at 50.9 m is out
    ped_far = np.array([[30.0, 30.0, 0.0]])  # 42.4 m: in range for a car, not for a pedestrian
    acc = MotionAccumulator()
    acc.add(_predictions(ped_far, [PED], [0.9], futures[1:2, None]), ped_far, np.array([PED]), futures[1:2],
            np.ones((1, 12), bool))
    assert acc.result()["ground_truth"] == 0 and acc.result()["false_positives"] == 0
    leaving = np.zeros((2, 12), bool)
    leaving[0] = True  # the second car has no future in the data
    two = np.array([[5.0, 0.0, 0.0], [10.0, 0.0, 0.0]])
    acc = MotionAccumulator()
    acc.add(_predictions(two, [CAR, CAR], [0.9, 0.9], np.stack([still + c[:2] for c in two])[:, None]), two,
            np.array([CAR, CAR]), np.stack([still + c[:2] for c in two]), leaving)
    out = acc.result()
    assert out["ground_truth"] == 2 and out["matched"] == 1 and out["false_positives"] == 0
    assert out["EPA"] == pytest.approx(0.5)


def test_accumulator_hand_case() -> None:
    car_future = np.stack([10 + STEPS, np.zeros(12)], axis=1)
    ped_future = np.stack([np.zeros(12), 10 + 0.5 * STEPS], axis=1)
    gt_futures = np.stack([car_future, ped_future, car_future + [0.0, 20.0]])
    gt_mask = np.ones((3, 12), bool)
    gt_centers = np.array([[10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [10.0, 20.0, 0.0]])
    gt_labels = np.array([CAR, CAR, CAR])
    gt_labels[1] = PED
    forecasts = np.stack([
        np.stack([car_future + [0.0, 1.0], car_future + [0.0, 3.0]]),  # car: ADE = FDE = 1
        np.stack([ped_future + [3.0, 0.0], ped_future + [4.0, 0.0]]),  # ped 3 m off now: unmatched -> FP
        np.stack([car_future + [0.0, 22.5], car_future + [0.0, 25.0]]),  # third car: FDE 2.5 -> miss
        np.stack([car_future, car_future]),  # a low-score duplicate: ignored
    ])
    preds = _predictions([[10.5, 0.0, 0.0], [0.0, 13.0, 0.0], [10.0, 21.0, 0.0], [10.0, 0.0, 0.0]],
                         [CAR, PED, CAR, CAR], [0.9, 0.8, 0.7, 0.1], forecasts)
    acc = MotionAccumulator()
    acc.add(preds, gt_centers, gt_labels, gt_futures, gt_mask)
    out = acc.result()
    assert out["matched"] == 2 and out["ground_truth"] == 3 and out["false_positives"] == 1
    assert out["minADE"] == pytest.approx((1.0 + 2.5) / 2)
    assert out["minFDE"] == pytest.approx((1.0 + 2.5) / 2)
    assert out["miss_rate"] == pytest.approx(0.5)
    assert out["EPA"] == pytest.approx((1 - 0.5 * 1) / 3)
    summary = acc.summary()
    assert summary["vehicle"]["EPA"] == pytest.approx(0.5) and summary["pedestrian"]["EPA"] == pytest.approx(-0.5)


def test_the_vehicle_group_is_uniads_with_two_wheelers() -> None:
    bike = DETECTION_CLASSES.index("bicycle")
    future = np.stack([STEPS, np.zeros(12)], axis=1)
    acc = MotionAccumulator()
    acc.add(_predictions([[0.0, 0.0, 0.0]], [bike], [0.9], (future + [0.0, 1.0])[None, None]), np.zeros((1, 3)),
            np.array([bike]), future[None], np.ones((1, 12), bool))
    assert acc.summary()["vehicle"]["matched"] == 1 and acc.summary()["vehicle"]["minADE"] == pytest.approx(1.0)


def test_forecasts_of_the_wrong_rank_are_rejected() -> None:
    preds = _predictions([[0.0, 0.0, 0.0]], [CAR], [1.0], np.zeros((1, 1, 12, 2)))
    preds.forecasts = np.zeros((1, 12, 2))
    with pytest.raises(ValueError, match="forecasts"):
        MotionAccumulator().add(preds, np.zeros((0, 3)), np.zeros(0, int), np.zeros((0, 12, 2)),
                                np.zeros((0, 12), bool))
