"""Distillation loss terms on hand-made tensors: every property the issue asks for, checked by construction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tinybev_ros.model.box_code import BOX_CODE_SIZE, DIRECTION, VELOCITY, encode_heading
from training.distillation.adaptive import AdaptiveConfig, AdaptiveRegionWeights
from training.distillation.config import DistillConfig, RegionConfig
from training.distillation.features import (
    attention_imitation_loss,
    feature_imitation_loss,
    resize_weight,
    spatial_attention,
)
from training.distillation.loss import DistillationLoss, level_pairs
from training.distillation.outputs import (
    bernoulli_kl,
    box_distill_loss,
    dense_distill_loss,
    heatmap_distill_loss,
    motion_distill_losses,
    plan_distill_loss,
    teacher_correct_cells,
    teacher_detection_weight,
    teacher_plans_better,
)
from training.distillation.regions import FN, FP, TN, TP, RegionMaps, decompose_regions
from training.losses import LossWeights
from training.teachers.bev_warp import OUTSIDE_LOGIT

H = W = 16
BOX_WEIGHTS = LossWeights().box_code  # the supervised box loss's per-entry weights
LOGIT_HIGH, LOGIT_LOW = 4.0, -6.0  # sigmoid 0.98 / 0.0025


def box_targets(boxes: list[tuple[float, float, float, float, float]], max_objects: int = 4) -> dict:
    """Targets of one sample with boxes (row, col, width m, length m, yaw) on a 1 m detection grid."""
    index = torch.zeros(1, max_objects, dtype=torch.long)
    mask = torch.zeros(1, max_objects, dtype=torch.bool)
    code = torch.zeros(1, max_objects, BOX_CODE_SIZE)
    for k, (row, col, width, length, yaw) in enumerate(boxes):
        r, c = math.floor(row), math.floor(col)
        index[0, k] = r * W + c
        mask[0, k] = True
        sin2, cos2, forward = encode_heading(np.float64(yaw))
        code[0, k] = torch.tensor([row - r, col - c, 0.0, math.log(width), math.log(length), 0.0, sin2, cos2, 0.0,
                                   0.0, float(forward)])
    return {"box_index": index, "box_mask": mask, "box": code}


def teacher_heatmap(hot_cells: list[tuple[int, int]]) -> torch.Tensor:
    heat = torch.full((1, 10, H, W), LOGIT_LOW)
    for r, c in hot_cells:
        heat[0, 3, r, c] = LOGIT_HIGH
    return heat


def test_region_decomposition_tp_fn_fp_tn() -> None:
    # Object A (4 x 2 m at 4.5, 4.5) is seen by the teacher, object B (1 cell at 12.5, 3.5) is missed, and the
    # teacher also fires at (12, 12), where there is no object.
    targets = box_targets([(4.5, 4.5, 2.0, 4.0, 0.0), (12.5, 3.5, 0.5, 0.5, 0.0)])
    maps = decompose_regions(targets, teacher_heatmap([(4, 4), (12, 12)]), (H, W), cell_size=1.0, gamma=0.3)
    region = maps.region[0]
    # Footprint of A: cell centres within 2 m along x (rows 2..6) and 1 m along y (columns 3..5) of (4.5, 4.5).
    assert region[2, 4] == TP and region[6, 5] == TP and region[4, 3] == TP
    assert region[1, 4] == TN and region[4, 6] == TN  # just outside
    assert region[12, 3] == FN  # smaller than a cell, still owns its centre cell
    assert region[12, 12] == FP
    tp_area = int((region == TP).sum())
    assert tp_area == 5 * 3
    assert torch.allclose(maps.scale[0][region == TP], torch.tensor(1.0 / math.sqrt(tp_area)))
    assert maps.scale[0, 12, 3] == 1.0 and maps.scale[0, 0, 0] == 1.0  # one-cell object and background


def test_footprint_follows_yaw() -> None:
    straight = decompose_regions(box_targets([(8.5, 8.5, 1.0, 7.0, 0.0)]), teacher_heatmap([(8, 8)]), (H, W), 1.0,
                                 0.3).region[0]
    turned = decompose_regions(box_targets([(8.5, 8.5, 1.0, 7.0, math.pi / 2)]), teacher_heatmap([(8, 8)]), (H, W),
                               1.0, 0.3).region[0]
    assert straight[5, 8] == TP and straight[8, 5] == TN  # long along x (rows)
    assert turned[8, 5] == TP and turned[5, 8] == TN  # long along y (columns)


def region_maps(region: torch.Tensor, scale: torch.Tensor | None = None) -> RegionMaps:
    scale = torch.ones(region.shape, dtype=torch.float32) if scale is None else scale
    return RegionMaps(region, scale, torch.full(region.shape, 0.9))


def test_true_negative_region_contributes_nothing() -> None:
    region = torch.full((1, H, W), TN)
    region[0, 2:4, 2:4] = TP
    weights = AdaptiveRegionWeights(AdaptiveConfig(enabled=False)).cell_weights(region_maps(region),
                                                                               (1.0, 1.0, 0.5, 0.0))
    teacher = torch.randn(1, 8, H, W)
    student = teacher.clone()
    student[0, :, 10:, 10:] += 5.0  # error only in true-negative cells
    assert feature_imitation_loss(student, teacher, weights).item() == 0.0
    student[0, :, 2, 2] += 1.0  # and now one object cell is wrong too
    assert feature_imitation_loss(student, teacher, weights).item() > 0.0


def test_adaptive_scaling_equalises_small_and_large_objects() -> None:
    targets = box_targets([(3.5, 3.5, 1.0, 1.0, 0.0), (11.5, 11.5, 4.0, 4.0, 0.0)])
    maps = decompose_regions(targets, teacher_heatmap([(3, 3), (11, 11)]), (H, W), 1.0, 0.3)
    small = maps.scale[0] == 1.0
    small &= maps.region[0] == TP
    large = (maps.region[0] == TP) & ~small
    assert int(small.sum()) == 1 and int(large.sum()) == 25  # 4 m box on 1 m cells: centres within +-2 m: 5 x 5
    adaptive = AdaptiveRegionWeights(AdaptiveConfig(enabled=False))
    teacher = torch.zeros(1, 4, H, W)

    def loss_with_error_on(cells: torch.Tensor, scale: bool) -> float:
        weight = adaptive.cell_weights(maps, (1.0, 1.0, 0.5, 0.0), scale=scale)
        student = teacher.clone()
        student[0, :, cells] = 1.0
        return feature_imitation_loss(student, teacher, weight, normalize=False).item()

    assert loss_with_error_on(small, True) == pytest.approx(loss_with_error_on(large, True), rel=1e-6)
    assert loss_with_error_on(large, False) == pytest.approx(25 * loss_with_error_on(small, False), rel=1e-6)


def test_identical_features_and_outputs_give_zero_loss() -> None:
    torch.manual_seed(0)
    feats = [torch.randn(2, 8, H, W), torch.randn(2, 16, H // 2, W // 2), torch.randn(2, 12, H, W)]
    weight = torch.rand(2, 1, H, W)
    for f in feats:
        assert feature_imitation_loss(f, f, resize_weight(weight, tuple(f.shape[-2:]))).item() == 0.0
        assert attention_imitation_loss(f, f).item() == pytest.approx(0.0, abs=1e-6)
    logits = torch.randn(2, 10, H, W)
    assert heatmap_distill_loss(logits, logits, weight, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert dense_distill_loss(logits, logits, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    det = teacher_detection_weight(logits, 0.3)
    code = torch.randn(2, BOX_CODE_SIZE, H, W)
    assert box_distill_loss(code, code, det, torch.ones(BOX_CODE_SIZE)).item() == 0.0
    motion, modes = torch.randn(2, 3 * 12 * 2, H, W), torch.randn(2, 3, H, W)
    traj, mode = motion_distill_losses(motion, modes, motion, modes, det, 2.0)
    assert traj.item() == 0.0 and mode.item() == pytest.approx(0.0, abs=1e-6)
    plan = torch.randn(2, 6, 2)
    assert plan_distill_loss(plan, plan).item() == 0.0


def test_spatial_attention_is_scale_free_and_has_mean_one() -> None:
    f = torch.randn(1, 6, H, W)
    a = spatial_attention(f)
    assert a.shape == (1, 1, H, W)
    assert a.mean().item() == pytest.approx(1.0, rel=1e-5)
    assert torch.allclose(spatial_attention(7.0 * f), a, atol=1e-5)
    assert spatial_attention(f, temperature=4.0).std() < a.std()  # higher temperature flattens
    g = f.clone()
    g[0, :, :4] *= 10.0
    assert attention_imitation_loss(g, f).item() > 0.1


def test_bernoulli_kl_sign_and_temperature() -> None:
    t = torch.tensor([3.0, -3.0, 0.0])
    s = torch.tensor([-3.0, 3.0, 0.0])
    kl = bernoulli_kl(s, t, 1.0)
    assert kl[0] > 1.0 and kl[1] > 1.0 and kl[2].abs() < 1e-7
    assert (bernoulli_kl(s, t, 4.0) >= 0).all()


def test_box_and_motion_distillation_only_at_teacher_detections() -> None:
    heat = teacher_heatmap([(5, 5)])
    det = teacher_detection_weight(heat, 0.3)
    assert int((det > 0).sum()) == 1 and det[0, 0, 5, 5] > 0.9
    teacher_box = torch.zeros(1, BOX_CODE_SIZE, H, W)
    teacher_box[0, DIRECTION] = 6.0  # sure the heading is the axis angle
    student_box = teacher_box.clone()
    student_box[0, :, 12, 12] = 3.0  # wrong where the teacher detects nothing: no knowledge to transfer there
    weights = torch.tensor(BOX_WEIGHTS)  # the supervised box loss's: velocity and direction 0.2
    assert box_distill_loss(student_box, teacher_box, det, weights).item() == 0.0
    student_box[0, :DIRECTION, 5, 5] = 0.5  # every regressed entry off by 0.5, the direction right
    assert box_distill_loss(student_box, teacher_box, det, weights).item() == pytest.approx(
        0.5 * (8 + 2 * 0.2) / (8 + 3 * 0.2), rel=1e-3)
    student_box[0, VELOCITY, 5, 5] = 0.0  # only the velocity right: those entries' share goes
    assert box_distill_loss(student_box, teacher_box, det, weights).item() == pytest.approx(
        0.5 * 8 / (8 + 3 * 0.2), rel=1e-3)
    student_box[0, :DIRECTION, 5, 5] = 0.0
    student_box[0, DIRECTION, 5, 5] = -6.0  # only the direction wrong: the Bernoulli KL of the two beliefs
    kl = bernoulli_kl(torch.tensor(-6.0), torch.tensor(6.0), 1.0).item()
    assert box_distill_loss(student_box, teacher_box, det, weights).item() == pytest.approx(kl * 0.2 / 8.6)
    assert box_distill_loss(student_box, teacher_box, det, torch.ones(BOX_CODE_SIZE)).item() == pytest.approx(kl / 11)
    # Motion: 2 modes; the teacher is sure of mode 0, so an error on mode 1's trajectory barely counts.
    t_logits = torch.zeros(1, 2, H, W)
    t_logits[0, 0] = 10.0
    t_motion = torch.zeros(1, 2 * 12 * 2, H, W)
    s_motion = t_motion.clone()
    s_motion[0, 24:, 5, 5] = 1.0  # mode 1 wrong
    traj_1, mode = motion_distill_losses(s_motion, t_logits, t_motion, t_logits, det, 1.0)
    s_motion = t_motion.clone()
    s_motion[0, :24, 5, 5] = 1.0  # mode 0 wrong
    traj_0, _ = motion_distill_losses(s_motion, t_logits, t_motion, t_logits, det, 1.0)
    assert traj_0.item() == pytest.approx(1.0, rel=1e-3) and traj_1.item() < 1e-3 and mode.item() < 1e-6
    _, mode_wrong = motion_distill_losses(t_motion, -t_logits, t_motion, t_logits, det, 1.0)
    assert mode_wrong.item() > 1.0


def test_adaptive_weights_follow_disagreement() -> None:
    config = AdaptiveConfig(enabled=True, momentum=0.5, power=1.0, warmup_steps=2, min_multiplier=0.1,
                            max_multiplier=10.0, confidence_fp=False)
    adaptive = AdaptiveRegionWeights(config)
    region = torch.full((1, H, W), TN)
    region[0, :4] = TP
    region[0, 4:8] = FN
    region[0, 8:10] = FP
    maps = RegionMaps(region, torch.ones(1, H, W), torch.full((1, H, W), 0.5))
    student = torch.full((1, H, W), 0.5)
    student[0, 4:8] = 0.9  # disagrees by 0.4 on FN cells, 0 elsewhere except TP
    student[0, :4] = 0.6  # 0.1 on TP cells
    base = (1.0, 1.0, 0.5, 0.0)
    with torch.no_grad():
        adaptive.update(maps, student)  # no grad: still counts (update is explicit); the loss gates it
    assert torch.equal(adaptive.multipliers(base), torch.ones(4))  # warming up
    adaptive.update(maps, student)
    mult = adaptive.multipliers(base)
    # D = (0.1, 0.4, 0, -) over active regions TP, FN, FP -> reference 0.5/3; FP clipped at the minimum.
    assert mult[FN] > mult[TP] > mult[FP]
    assert mult[FN].item() == pytest.approx(0.4 / (0.5 / 3), rel=1e-4)
    assert mult[FP].item() == pytest.approx(0.1)
    assert mult[TN].item() == 1.0  # base weight 0: never adapted
    weights = adaptive.cell_weights(maps, base, scale=False)
    assert weights[0, 0, 12, 0] == 0.0 and weights[0, 0, 5, 0] > weights[0, 0, 0, 0]
    state = adaptive.state_dict()
    restored = AdaptiveRegionWeights(config)
    restored.load_state_dict(state)
    assert torch.equal(restored.multipliers(base), mult)


def test_confidence_scales_false_positive_cells() -> None:
    region = torch.full((1, H, W), FP)
    conf = torch.linspace(0.3, 1.0, H * W).view(1, H, W)
    maps = RegionMaps(region, torch.ones(1, H, W), conf)
    w = AdaptiveRegionWeights(AdaptiveConfig(confidence_fp=True)).cell_weights(maps, (1.0, 1.0, 0.5, 0.0))
    assert torch.allclose(w[:, 0], 0.5 * conf)


def full_targets(boxes: list[tuple[float, float, float, float, float]]) -> dict:
    """Box targets of `boxes` for a batch of two, plus map, occupancy and ego-future targets."""
    targets = {k: v.expand(2, *v.shape[1:]) for k, v in box_targets(boxes).items()}
    g = torch.Generator().manual_seed(5)
    targets.update(map=(torch.rand(2, 4, H, W, generator=g) > 0.7).float(),
                   occupancy=(torch.rand(2, 5, H, W, generator=g) > 0.9).float(),
                   occupancy_mask=torch.ones(2, 5, dtype=torch.bool),
                   ego_future=torch.randn(2, 6, 2, generator=g), ego_future_mask=torch.ones(2, 6, dtype=torch.bool))
    return targets


def make_outputs(seed: int, channels: tuple[int, ...]) -> tuple[dict, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    sizes = [H, H // 2, H // 4, H]
    feats = [torch.randn(2, c, s, s, generator=g) for c, s in zip(channels, sizes, strict=True)]
    outputs = {
        "heatmap": torch.randn(2, 10, H, W, generator=g) - 2.0,
        "box": torch.randn(2, BOX_CODE_SIZE, H, W, generator=g),
        "motion": torch.randn(2, 6 * 12 * 2, H, W, generator=g),
        "motion_logits": torch.randn(2, 6, H, W, generator=g),
        "map": torch.randn(2, 4, H, W, generator=g),
        "occupancy": torch.randn(2, 5, H, W, generator=g),
        "plan": torch.randn(2, 6, 2, generator=g),
        "bev_features": feats,
    }
    return outputs, feats


@pytest.mark.parametrize("stage", ["none", "S1", "S2", "S3"])
def test_distillation_loss_stages_and_gradients(stage: str) -> None:
    student, s_feats = make_outputs(0, (4, 8, 12, 6))
    teacher, t_feats = make_outputs(1, (8, 8, 16, 10))
    for value in [*s_feats, *(v for k, v in student.items() if k != "bev_features")]:
        value.requires_grad_(True)
    targets = full_targets([(4.5, 4.5, 2.0, 4.0, 0.3)])
    loss = DistillationLoss.from_example(DistillConfig(stage=stage), s_feats, t_feats, 1.0, BOX_WEIGHTS)
    terms = loss(student, t_feats, teacher, targets)
    feature_terms = {"kd_feature", "kd_attention"}
    output_terms = {"kd_heatmap", "kd_box", "kd_motion_traj", "kd_motion_mode", "kd_map", "kd_occupancy", "kd_plan"}
    expected = {"none": set(), "S1": feature_terms, "S2": output_terms, "S3": feature_terms | output_terms}[stage]
    assert set(terms) - {"kd_total"} == expected
    assert all(torch.isfinite(v) for v in terms.values())
    if stage == "none":
        assert terms["kd_total"].item() == 0.0
        return
    assert terms["kd_total"].item() > 0.0
    terms["kd_total"].backward()
    if stage in ("S1", "S3"):
        assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in s_feats)
        adapted = [m for m in loss.adapters.adapters if isinstance(m, torch.nn.Conv2d)]
        assert len(adapted) == 3 and all(m.weight.grad is not None for m in adapted)  # level 1: same channels
    if stage in ("S2", "S3"):
        assert all(student[k].grad is not None for k in ("heatmap", "box", "motion", "map", "occupancy", "plan"))
    # the adaptive state advances only when gradients are enabled (training, not validation)
    assert int(loss.adaptive.updates) == 1
    with torch.no_grad():
        loss(student, t_feats, teacher, targets)
    assert int(loss.adaptive.updates) == 1


def test_missing_teacher_head_and_bad_levels_are_clear_errors() -> None:
    student, s_feats = make_outputs(0, (4, 8, 12, 6))
    teacher, t_feats = make_outputs(1, (4, 8, 12, 6))
    del teacher["motion"]
    targets = full_targets([])
    loss = DistillationLoss.from_example(DistillConfig(stage="S2"), s_feats, t_feats, 1.0, BOX_WEIGHTS)
    with pytest.raises(ValueError, match="motion"):
        loss(student, t_feats, teacher, targets)
    with pytest.raises(ValueError, match="feature_levels"):
        level_pairs(4, 3, ())
    assert level_pairs(4, 3, (0, -1)) == [(0, 0), (3, 2)]
    with pytest.raises(ValueError, match="stage"):
        DistillConfig(stage="S4")


def test_uniform_regions_when_decomposition_off() -> None:
    student, s_feats = make_outputs(0, (4, 8, 12, 6))
    teacher, t_feats = make_outputs(1, (4, 8, 12, 6))
    targets = full_targets([])
    config = DistillConfig(stage="S1", attention=0.0, regions=RegionConfig(enabled=False))
    loss = DistillationLoss.from_example(config, s_feats, t_feats, 1.0, BOX_WEIGHTS)
    terms = loss(student, t_feats, teacher, targets)
    assert terms["kd_feature"].item() > 0.1  # no objects, decomposition off: every cell counts


def test_trust_gating_imitates_the_teacher_only_where_it_is_right() -> None:
    target = torch.zeros(1, 1, 2, 2)
    target[0, 0, 0, 0] = 1.0
    teacher = torch.tensor([[[[5.0, 5.0], [-5.0, -5.0]]]])  # right at (0,0), (1,0), (1,1); wrong at (0,1)
    correct = teacher_correct_cells(teacher, target, teacher)
    assert correct.tolist() == [[[[1.0, 0.0], [1.0, 1.0]]]]
    student = teacher.clone()
    student[0, 0, 0, 1] = -5.0  # disagrees with the teacher only where the teacher is wrong: no loss
    assert dense_distill_loss(student, teacher, 2.0, correct).item() == pytest.approx(0.0, abs=1e-7)
    assert dense_distill_loss(student, teacher, 2.0).item() > 0.1
    frames = teacher_correct_cells(teacher, target, teacher, frame_mask=torch.tensor([[False]]))
    assert frames.sum() == 0
    # Plans: the teacher is better than the student in sample 0 only.
    driven = torch.zeros(2, 6, 2)
    teacher_plan = torch.full((2, 6, 2), 1.0)
    student_plan = torch.tensor([3.0, 0.5]).view(2, 1, 1).expand(2, 6, 2)
    better = teacher_plans_better(student_plan, teacher_plan, driven, torch.ones(2, 6, dtype=torch.bool))
    assert better.tolist() == [1.0, 0.0]
    assert plan_distill_loss(student_plan, teacher_plan, better).item() == pytest.approx(2.0 * math.sqrt(2.0))


def test_resized_weights_keep_every_objects_total() -> None:
    """Onto a coarser level each object keeps its total weight (1/area per cell sums to 1): a 4-cell car and a
    1-cell pedestrian count alike there, as on the detection grid."""
    weight = torch.zeros(1, 1, 8, 8)
    weight[0, 0, 2:4, 2:4] = 0.25  # the car, 2x2 cells
    weight[0, 0, 6, 6] = 1.0  # the pedestrian
    coarse = resize_weight(weight, (4, 4))
    assert float(coarse[0, 0, 1, 1]) == pytest.approx(1.0) and float(coarse[0, 0, 3, 3]) == pytest.approx(1.0)
    assert float(coarse.sum()) == pytest.approx(float(weight.sum()))


def test_cells_the_teacher_did_not_see_are_not_imitated() -> None:
    """Where a BEV-augmented batch has no teacher (coverage 0), the student may differ from the teacher's zeros
    at no cost in any dense term; the same difference on seen cells costs."""
    student, s_feats = make_outputs(0, (4, 8, 12, 6))
    teacher, t_feats = make_outputs(0, (4, 8, 12, 6))  # the same tensors: every term is zero...
    coverage = torch.ones(2, 1, H, W)
    coverage[..., : H // 2, :] = 0.0  # ...the teacher saw only the second half of the rows
    for feature in t_feats:  # what the warp reads beyond the teacher's grid
        feature[..., : feature.shape[-2] // 2, :] = 0.0
    for name in ("heatmap", "map", "occupancy"):
        teacher[name][..., : H // 2, :] = OUTSIDE_LOGIT
    targets = full_targets([(2.5, 3.5, 2.0, 2.0, 0.0), (12.5, 11.5, 2.0, 2.0, 0.0)])
    config = DistillConfig(stage="S3", plan=0.0, box=0.0, motion_traj=0.0, motion_mode=0.0, trust_gating=False)
    config.regions.output_weights = (1.0, 1.0, 1.0, 1.0)
    loss = DistillationLoss.from_example(config, s_feats, t_feats, 1.0, BOX_WEIGHTS)
    with torch.no_grad():
        seen_only = loss(student, t_feats, teacher, targets, teacher_coverage=coverage)
        everywhere = loss(student, t_feats, teacher, targets)
    for name in ("kd_feature", "kd_attention", "kd_heatmap", "kd_map", "kd_occupancy"):
        assert float(seen_only[name]) == pytest.approx(0.0, abs=1e-5), name
        assert float(everywhere[name]) > 1e-3, name
