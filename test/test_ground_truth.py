"""Ground truth on the synthetic nuScenes dataroot, checked against independent devkit paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nuscenes.nuscenes import NuScenes
from nuscenes.prediction import PredictHelper
from pyquaternion import Quaternion

from tinybev_ros.geometry import LIDAR_NAME, BevGrid
from tinybev_ros.model.box_code import BOX_CODE_SIZE
from tinybev_ros.predictions import FORECAST_STEPS, PLAN_STEPS
from tinybev_ros.taxonomy import CATEGORY_TO_DETECTION, DETECTION_CLASSES, MAP_CLASSES, Command
from training.ground_truth import (
    OCCUPANCY_STEPS,
    command_from_ego_future,
    load_ground_truth,
    map_name_of_sample,
    rasterize_footprints,
)
from training.losses import LossWeights, box_loss
from training.targets import TargetConfig, build_targets, detection_grid_shape

GRID = BevGrid()  # the full 200 x 200, 0.5 m raster


@pytest.fixture(scope="module")
def nusc(synth_dataset) -> NuScenes:
    return NuScenes(version=synth_dataset.version, dataroot=str(synth_dataset.dataroot), verbose=False)


@pytest.fixture(scope="module")
def map_cache() -> dict:
    return {}


@pytest.fixture(scope="module")
def busy_sample(nusc) -> str:
    """A keyframe with many annotations and a full 6 s future (the third keyframe of the first scene)."""
    scene = sorted(nusc.scene, key=lambda s: s["name"])[0]
    token = scene["first_sample_token"]
    for _ in range(2):
        token = nusc.get("sample", token)["next"]
    assert len(nusc.get("sample", token)["anns"]) >= 3, "synthetic scene should be populated"
    return token


def _ego_pose(nusc, sample):
    lidar = nusc.get("sample_data", sample["data"][LIDAR_NAME])
    pose = nusc.get("ego_pose", lidar["ego_pose_token"])
    return np.asarray(pose["translation"]), Quaternion(pose["rotation"])


def _to_ego(points_global, translation, rotation: Quaternion) -> np.ndarray:
    return (np.asarray(points_global, dtype=float) - translation) @ rotation.rotation_matrix  # R^T (p - t)


def test_boxes_match_devkit_sensor_frame_boxes(nusc, map_cache, busy_sample):
    """Centres/sizes/yaws equal the devkit's LiDAR-frame boxes (get_sample_data) moved to base_link."""
    gt = load_ground_truth(nusc, map_cache, busy_sample, GRID)
    sample = nusc.get("sample", busy_sample)
    lidar = nusc.get("sample_data", sample["data"][LIDAR_NAME])
    calib = nusc.get("calibrated_sensor", lidar["calibrated_sensor_token"])
    _, boxes, _ = nusc.get_sample_data(lidar["token"])
    expected = {}
    for box in boxes:
        if CATEGORY_TO_DETECTION.get(box.name) is None:
            continue
        box.rotate(Quaternion(calib["rotation"]))
        box.translate(np.asarray(calib["translation"]))
        ann = nusc.get("sample_annotation", box.token)
        expected[ann["instance_token"]] = box
    assert len(gt) == len(expected) > 0
    for i, instance in enumerate(gt.instance_tokens):
        box = expected[instance]
        np.testing.assert_allclose(gt.centers[i], box.center, atol=1e-6)
        np.testing.assert_allclose(gt.sizes_wlh[i], box.wlh, atol=1e-9)
        yaw = box.orientation.yaw_pitch_roll[0]
        assert abs(np.angle(np.exp(1j * (gt.yaws[i] - yaw)))) < 1e-6
        assert DETECTION_CLASSES[gt.labels[i]] == CATEGORY_TO_DETECTION[box.name]
    assert gt.labels.dtype == np.int64


def test_velocity_is_devkit_velocity_in_ego_frame(nusc, map_cache, busy_sample):
    gt = load_ground_truth(nusc, map_cache, busy_sample, GRID)
    sample = nusc.get("sample", busy_sample)
    translation, rotation = _ego_pose(nusc, sample)
    ann_by_instance = {nusc.get("sample_annotation", t)["instance_token"]: t for t in sample["anns"]}
    moving = 0
    for i, instance in enumerate(gt.instance_tokens):
        v_global = nusc.box_velocity(ann_by_instance[instance])
        v_ego = rotation.inverse.rotate(v_global)[:2]
        np.testing.assert_allclose(gt.velocities[i], v_ego, atol=1e-6)  # NaN where the devkit says NaN
        moving += int(np.linalg.norm(v_ego) > 1.0)
    assert moving >= 1, "the synthetic scene should contain a moving agent"


def test_a_velocity_the_devkit_does_not_know_stays_unknown(synth_dataset, nusc, map_cache, busy_sample):
    """An annotation without neighbours in its chain has no velocity (the devkit's NaN). It used to become 0 m/s,
    a stopped object the model was taught to see; now it is NaN, and the box loss leaves that entry out."""
    cut = NuScenes(version=synth_dataset.version, dataroot=str(synth_dataset.dataroot), verbose=False)
    full = load_ground_truth(nusc, map_cache, busy_sample, GRID)
    i = int(np.argmax(np.hypot(*full.velocities.T)))  # the fastest agent: certainly not 0 m/s
    alone = next(cut.get("sample_annotation", token) for token in cut.get("sample", busy_sample)["anns"]
                 if cut.get("sample_annotation", token)["instance_token"] == full.instance_tokens[i])
    for side, other in (("prev", "next"), ("next", "prev")):
        if alone[side]:
            cut.get("sample_annotation", alone[side])[other] = ""
            alone[side] = ""
    gt = load_ground_truth(cut, {}, busy_sample, GRID)
    j = gt.instance_tokens.index(full.instance_tokens[i])
    assert np.isnan(gt.velocities[j]).all() and np.hypot(*full.velocities[i]) > 1.0
    others = np.arange(len(gt)) != j
    np.testing.assert_allclose(gt.velocities[others], full.velocities[others])
    targets = build_targets(gt, GRID, 2, TargetConfig(min_points=0))
    slot = int(np.flatnonzero(np.isnan(targets["box"][:, 8]))[0])
    batch = {key: torch.from_numpy(targets[key])[None] for key in ("box", "box_index", "box_mask")}
    prediction = torch.zeros(1, BOX_CODE_SIZE, *detection_grid_shape(GRID, 2), requires_grad=True)
    loss = box_loss(prediction, batch, torch.tensor(LossWeights().box_code))
    loss.backward()
    row, col = divmod(int(targets["box_index"][slot]), detection_grid_shape(GRID, 2)[1])
    assert torch.isfinite(loss) and prediction.grad[0, 8:10, row, col].abs().sum() == 0
    assert prediction.grad[0, :8, row, col].abs().sum() > 0  # the rest of that box still teaches


def test_futures_equal_annotation_future_positions(nusc, map_cache, busy_sample):
    """futures = PredictHelper's future positions (global) mapped into this keyframe's ego frame."""
    gt = load_ground_truth(nusc, map_cache, busy_sample, GRID)
    helper = PredictHelper(nusc)
    translation, rotation = _ego_pose(nusc, nusc.get("sample", busy_sample))
    checked = 0
    for i, instance in enumerate(gt.instance_tokens):
        future = helper.get_future_for_agent(instance, busy_sample, seconds=FORECAST_STEPS * 0.5,
                                             in_agent_frame=False)
        count = len(future)
        assert gt.future_mask[i].sum() == count
        assert gt.future_mask[i, :count].all() and not gt.future_mask[i, count:].any()
        if count:
            expected = _to_ego(np.c_[future, np.zeros(count)], translation, rotation)[:, :2]
            np.testing.assert_allclose(gt.futures[i, :count], expected, atol=1e-6)
            checked += count
    assert checked >= FORECAST_STEPS  # at least one full trajectory was compared


def test_a_gap_in_an_annotation_chain_keeps_later_positions_at_their_times(synth_dataset, nusc, map_cache,
                                                                              busy_sample):
    """An instance not annotated in some keyframe (occluded on real nuScenes): its chain skips that keyframe, and
    the positions after the gap stay at their own times (they used to move one step earlier)."""
    full = load_ground_truth(nusc, map_cache, busy_sample, GRID)
    i = int(np.flatnonzero(full.future_mask.all(axis=1))[0])  # an agent annotated over the whole horizon
    gapped = NuScenes(version=synth_dataset.version, dataroot=str(synth_dataset.dataroot), verbose=False)
    current = next(token for token in gapped.get("sample", busy_sample)["anns"]
                   if gapped.get("sample_annotation", token)["instance_token"] == full.instance_tokens[i])
    first = gapped.get("sample_annotation", gapped.get("sample_annotation", current)["next"])
    missing = gapped.get("sample_annotation", first["next"])  # the instance at step 1 (+1.0 s) is dropped
    after = gapped.get("sample_annotation", missing["next"])
    first["next"], after["prev"] = after["token"], first["token"]
    gapped.get("sample", missing["sample_token"])["anns"].remove(missing["token"])
    gt = load_ground_truth(gapped, {}, busy_sample, GRID)
    j = gt.instance_tokens.index(full.instance_tokens[i])
    assert gt.future_mask[j].tolist() == [True, False] + [True] * (FORECAST_STEPS - 2)
    np.testing.assert_allclose(gt.futures[j][gt.future_mask[j]], full.futures[i][gt.future_mask[j]])


def test_map_masks_equal_devkit_and_point_queries(nusc, map_cache, busy_sample):
    """Our (row = x, col = y) masks are the devkit's get_map_mask transposed, and agree with layers_on_point."""
    gt = load_ground_truth(nusc, map_cache, busy_sample, GRID)
    sample = nusc.get("sample", busy_sample)
    nusc_map = map_cache[map_name_of_sample(nusc, sample)]
    translation, rotation = _ego_pose(nusc, sample)
    yaw_deg = np.degrees(rotation.yaw_pitch_roll[0])
    devkit = nusc_map.get_map_mask((translation[0], translation[1], 100.0, 100.0), yaw_deg, list(MAP_CLASSES),
                                   canvas_size=(200, 200))
    assert gt.map_masks.shape == (len(MAP_CLASSES), 200, 200) and gt.map_masks.dtype == bool
    np.testing.assert_array_equal(gt.map_masks, devkit.transpose(0, 2, 1).astype(bool))
    drivable = gt.map_masks[MAP_CLASSES.index("drivable_area")]
    assert 0.05 < drivable.mean() < 0.95
    # Independent check of orientation: cells deep inside/outside the drivable area vs point queries.
    shifted = [drivable[1:-1, 1:-1], drivable[:-2, 1:-1], drivable[2:, 1:-1], drivable[1:-1, :-2], drivable[1:-1, 2:]]
    interior = np.logical_and.reduce(shifted)
    exterior = ~np.logical_or.reduce(shifted)
    xs, ys = GRID.cell_centers()
    rng = np.random.default_rng(0)
    agree, total = 0, 0
    for mask, value in ((interior, True), (exterior, False)):
        rows, cols = np.nonzero(mask)
        pick = rng.choice(len(rows), size=min(40, len(rows)), replace=False)
        for r, c in zip(rows[pick] + 1, cols[pick] + 1, strict=True):
            point = translation + rotation.rotate(np.array([xs[r], ys[c], 0.0]))
            hit = bool(nusc_map.layers_on_point(point[0], point[1], ["drivable_area"])["drivable_area"])
            agree += hit == value
            total += 1
    assert total >= 60 and agree / total > 0.97


def test_occupancy_covers_current_and_future_boxes(nusc, map_cache, busy_sample):
    gt = load_ground_truth(nusc, map_cache, busy_sample, GRID)
    assert gt.occupancy.shape == (OCCUPANCY_STEPS, 200, 200) and gt.occupancy_mask.all()
    dynamic = np.array([DETECTION_CLASSES[label] not in ("traffic_cone", "barrier") for label in gt.labels])
    rows, cols, inside = GRID.cell_of(gt.centers[dynamic, :2])
    assert inside.any() and gt.occupancy[0, rows[inside], cols[inside]].all()
    # Each agent's future centre (the same positions as `futures`) is occupied at that future step.
    for step in range(1, OCCUPANCY_STEPS):
        valid = dynamic & gt.future_mask[:, step - 1]
        rows, cols, inside = GRID.cell_of(gt.futures[valid, step - 1])
        assert inside.any() and gt.occupancy[step, rows[inside], cols[inside]].all()
    # Footprint area ~ box area (within rasterisation error) for an isolated car-sized box.
    single = rasterize_footprints(np.array([[10.0, 5.0]]), np.array([[2.0, 4.5]]), np.array([0.4]), GRID)
    assert abs(single.sum() * GRID.resolution**2 - 9.0) < 3.0


def test_ego_future_and_command(nusc, map_cache, busy_sample):
    gt = load_ground_truth(nusc, map_cache, busy_sample, GRID)
    sample = nusc.get("sample", busy_sample)
    translation, rotation = _ego_pose(nusc, sample)
    record = sample
    for step in range(PLAN_STEPS):
        record = nusc.get("sample", record["next"])
        future_t, _ = _ego_pose(nusc, record)
        np.testing.assert_allclose(gt.ego_future[step], _to_ego(future_t, translation, rotation)[:2], atol=1e-6)
    assert gt.ego_future_mask.all()
    assert gt.ego_future[-1, 0] > 1.0, "the synthetic ego drives forward"
    assert gt.command == command_from_ego_future(gt.ego_future, gt.ego_future_mask)
    # The rule itself: lateral offset at the last valid step vs the 2 m threshold.
    path = np.zeros((PLAN_STEPS, 2))
    path[:, 0] = np.arange(1, PLAN_STEPS + 1) * 4.0
    mask = np.ones(PLAN_STEPS, dtype=bool)
    assert command_from_ego_future(path, mask) == Command.STRAIGHT
    assert command_from_ego_future(path + [0.0, 3.0], mask) == Command.LEFT
    assert command_from_ego_future(path - [0.0, 3.0], mask) == Command.RIGHT
    late_turn = path.copy()
    late_turn[-1, 1] = 5.0
    mask[-1] = False  # the only lateral step is invalid: its offset must not count
    assert command_from_ego_future(late_turn, mask) == Command.STRAIGHT
    assert command_from_ego_future(path, np.zeros(PLAN_STEPS, dtype=bool)) == Command.STRAIGHT


def test_scene_end_masks_futures(nusc, map_cache):
    """At the last keyframe nothing lies in the future: every future mask is False."""
    scene = sorted(nusc.scene, key=lambda s: s["name"])[0]
    gt = load_ground_truth(nusc, map_cache, scene["last_sample_token"], GRID)
    assert not gt.ego_future_mask.any() and not gt.future_mask.any()
    assert gt.occupancy_mask.tolist() == [True] + [False] * (OCCUPANCY_STEPS - 1)
    assert not gt.occupancy[1:].any()
