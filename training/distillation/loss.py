"""Cross-modal knowledge distillation loss: a camera-only student imitates a LiDAR+camera teacher.

`DistillationLoss` combines, per `DistillConfig` (training/distillation/config.py):
- feature level (stage S1, S3), on every BEV scale the student exposes in outputs["bev_features"] (encoder
  levels, finest first, then the pre-head map) against the teacher's features at the same index:
  region-weighted MSE after a learned 1x1 adapter (training/distillation/features.py), the weight of a cell being
  region weight x adaptive scale x spatial attention; plus an attention-imitation loss;
- output level (stage S2, S3), for every head: heatmap (region-weighted, softened), box and motion at the
  teacher's detections, map and occupancy (softened), plan (training/distillation/outputs.py); with
  `trust_gating`, map/occupancy cells and plan samples count only where the teacher is right (or better than the
  student) against the ground truth;
- region decomposition TP/FN/FP/TN with 1/sqrt(area) scaling (training/distillation/regions.py) and the
  adaptive per-region multipliers (training/distillation/adaptive.py, whose docstring states the rule and why).

The adapters and the adaptive state live here, not in the student: they are trained alongside it, saved in the
training state for resume, and dropped afterwards, so the deployed student never depends on the teacher.
The EMA of the adaptive rule advances only when gradients are enabled (training steps, not validation).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from training.distillation.adaptive import AdaptiveRegionWeights
from training.distillation.config import FEATURE_TERMS, DistillConfig
from training.distillation.features import (
    FeatureAdapters,
    attention_imitation_loss,
    feature_imitation_loss,
    resize_coverage,
    resize_feature,
    resize_weight,
    spatial_attention,
)
from training.distillation.outputs import (
    box_distill_loss,
    dense_distill_loss,
    heatmap_distill_loss,
    motion_distill_losses,
    plan_distill_loss,
    teacher_correct_cells,
    teacher_detection_weight,
    teacher_plans_better,
)
from training.distillation.regions import RegionMaps, decompose_regions, uniform_regions

# Output-level term -> teacher/student output keys it needs.
OUTPUT_KEYS = {
    "heatmap": ("heatmap",),
    "box": ("heatmap", "box"),
    "motion_traj": ("heatmap", "motion", "motion_logits"),
    "motion_mode": ("heatmap", "motion", "motion_logits"),
    "map": ("map",),
    "occupancy": ("occupancy",),
    "plan": ("plan",),
}


def level_pairs(num_student: int, num_teacher: int, levels: Sequence[int]) -> list[tuple[int, int]]:
    """(student index, teacher index) of each distilled feature level; `levels` () means all, paired by index."""
    if not levels:
        if num_student != num_teacher:
            raise ValueError(f"student has {num_student} BEV feature maps, teacher {num_teacher}: list the levels "
                             "to pair in distill.feature_levels")
        return [(i, i) for i in range(num_student)]
    pairs = []
    for level in levels:
        if not (-num_student <= level < num_student and -num_teacher <= level < num_teacher):
            raise ValueError(f"distill.feature_levels has {level}, outside the {num_student} student / "
                             f"{num_teacher} teacher feature maps")
        pairs.append((level % num_student, level % num_teacher))
    return pairs


class DistillationLoss(nn.Module):
    """forward(student_outputs, teacher_features, teacher_outputs, targets) -> unweighted terms + "kd_total".

    Build it with `from_example` on one batch's features (the adapters need both sides' channel counts).
    `cell_size` is the side of a detection-grid cell in metres (used for the object footprints);
    `box_code_weights` the supervised box loss's per-entry weights (training/losses.py), which the box imitation
    shares.
    """

    def __init__(self, config: DistillConfig, student_channels: Sequence[int], teacher_channels: Sequence[int],
                 cell_size: float, box_code_weights: Sequence[float]) -> None:
        super().__init__()
        self.config = config
        self.cell_size = float(cell_size)
        # a buffer, so it moves with the module to the GPU (not in the checkpoint: it comes from the config)
        self.register_buffer("box_code_weights", torch.tensor(box_code_weights, dtype=torch.float32),
                             persistent=False)
        self.pairs = level_pairs(len(student_channels), len(teacher_channels), config.feature_levels)
        self.weights = config.active_weights()
        self.use_features = any(name in self.weights for name in FEATURE_TERMS)
        self.adapters = FeatureAdapters([student_channels[s] for s, _ in self.pairs],
                                        [teacher_channels[t] for _, t in self.pairs])
        self.adaptive = AdaptiveRegionWeights(config.adaptive)

    @classmethod
    def from_example(cls, config: DistillConfig, student_features: Sequence[torch.Tensor],
                     teacher_features: Sequence[torch.Tensor], cell_size: float,
                     box_code_weights: Sequence[float]) -> DistillationLoss:
        return cls(config, [f.shape[1] for f in student_features], [f.shape[1] for f in teacher_features], cell_size,
                   box_code_weights)

    def regions(self, student_heatmap: torch.Tensor, teacher_outputs: dict, targets: dict) -> RegionMaps:
        shape = tuple(student_heatmap.shape[-2:])
        if not self.config.regions.enabled:
            return uniform_regions(student_heatmap, shape)
        if "heatmap" not in teacher_outputs:
            raise ValueError("region decomposition needs the teacher's heatmap; set distill.regions.enabled: false")
        return decompose_regions(targets, teacher_outputs["heatmap"], shape, self.cell_size, self.config.regions.gamma)

    def forward(self, student_outputs: dict, teacher_features: Sequence[torch.Tensor], teacher_outputs: dict,
                targets: dict, weights: Mapping[str, float] | None = None,
                teacher_coverage: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """`weights`: this step's weight of each active term (default: the config's, `self.weights`);
        `teacher_coverage`: TeacherOutput.coverage (cells the teacher did not see are not imitated)."""
        weights = self.weights if weights is None else weights
        terms: dict[str, torch.Tensor] = {}
        student_heatmap = student_outputs["heatmap"]
        regions = self.regions(student_heatmap, teacher_outputs, targets)
        if teacher_coverage is not None:
            seen = resize_coverage(teacher_coverage.float(), tuple(student_heatmap.shape[-2:]))[:, 0]
            regions = dataclasses.replace(regions, coverage=seen)
        scale = self.config.regions.adaptive_scaling
        if self.use_features:
            weight = self.adaptive.cell_weights(regions, self.config.regions.feature_weights, scale)
            terms.update(self.feature_terms(student_outputs["bev_features"], teacher_features, weight,
                                            teacher_coverage))
        terms.update(self.output_terms(student_outputs, teacher_outputs, targets, regions, scale, teacher_coverage))
        if torch.is_grad_enabled():
            self.adaptive.update(regions, torch.sigmoid(student_heatmap.detach().float()).amax(1))
        total = sum(weights[name] * value for name, value in terms.items())
        terms = {f"kd_{name}": value for name, value in terms.items()}
        terms["kd_total"] = total if isinstance(total, torch.Tensor) else student_heatmap.new_zeros(())
        return terms

    def feature_terms(self, student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor],
                      weight: torch.Tensor, coverage: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        cfg = self.config
        if max(s for s, _ in self.pairs) >= len(student) or max(t for _, t in self.pairs) >= len(teacher):
            raise ValueError(f"feature pairs {self.pairs} do not fit {len(student)} student / {len(teacher)} "
                             "teacher feature maps")
        imitation, attention = [], []
        for i, (s_index, t_index) in enumerate(self.pairs):
            s_feat, t_feat = student[s_index], teacher[t_index]
            size = tuple(s_feat.shape[-2:])
            level_coverage = resize_coverage(coverage, size)
            if "feature" in self.weights:
                level_weight = resize_weight(weight, size)
                if cfg.attention_weighting:
                    with torch.no_grad():
                        a_s = spatial_attention(s_feat.detach(), cfg.attention_temperature, level_coverage)
                        a_t = spatial_attention(resize_feature(t_feat.detach().float(), size),
                                                cfg.attention_temperature, level_coverage)
                    level_weight = level_weight * 0.5 * (a_s + a_t)
                imitation.append(feature_imitation_loss(self.adapters(i, s_feat), t_feat, level_weight,
                                                        cfg.normalize_features))
            if "attention" in self.weights:
                attention.append(attention_imitation_loss(s_feat, t_feat, cfg.attention_temperature, level_coverage))
        out = {}
        if imitation:
            out["feature"] = torch.stack(imitation).mean()
        if attention:
            out["attention"] = torch.stack(attention).mean()
        return out

    def output_terms(self, student: dict, teacher: dict, targets: dict, regions: RegionMaps,
                     scale: bool, coverage: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        cfg = self.config
        wanted = [name for name in OUTPUT_KEYS if name in self.weights]
        for name in wanted:
            missing = [key for key in OUTPUT_KEYS[name] if key not in teacher or key not in student]
            if missing:
                raise ValueError(f"distillation term {name!r} needs outputs {missing} that the teacher or student "
                                 f"lacks; set distill.{name}: 0")
        out: dict[str, torch.Tensor] = {}
        if "heatmap" in wanted:
            weight = self.adaptive.cell_weights(regions, cfg.regions.output_weights, scale)
            out["heatmap"] = heatmap_distill_loss(student["heatmap"], teacher["heatmap"], weight, cfg.temperature)
        if {"box", "motion_traj", "motion_mode"} & set(wanted):
            detections = teacher_detection_weight(teacher["heatmap"], cfg.regions.gamma)
            if "box" in wanted:
                out["box"] = box_distill_loss(student["box"], teacher["box"], detections, self.box_code_weights)
            if "motion_traj" in wanted or "motion_mode" in wanted:
                traj, mode = motion_distill_losses(student["motion"], student["motion_logits"], teacher["motion"],
                                                   teacher["motion_logits"], detections, cfg.temperature)
                if "motion_traj" in wanted:
                    out["motion_traj"] = traj
                if "motion_mode" in wanted:
                    out["motion_mode"] = mode
        for name in ("map", "occupancy"):
            if name in wanted:
                weight = teacher_correct_cells(teacher[name], targets[name], student[name],
                                               targets.get(f"{name}_mask")) if cfg.trust_gating else None
                seen = resize_coverage(coverage, tuple(student[name].shape[-2:]))
                if seen is not None:
                    weight = seen.expand_as(student[name]) * (1.0 if weight is None else weight)
                out[name] = dense_distill_loss(student[name], teacher[name], cfg.temperature, weight)
        if "plan" in wanted:
            weight = teacher_plans_better(student["plan"], teacher["plan"], targets["ego_future"],
                                          targets["ego_future_mask"]) if cfg.trust_gating else None
            out["plan"] = plan_distill_loss(student["plan"], teacher["plan"], weight)
        return out
