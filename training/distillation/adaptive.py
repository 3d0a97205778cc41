"""Adaptive region-aware supervision: per-region weights that follow the student's progress.

The rule (applied to the base region weights (TP, FN, FP, TN) of every region-weighted term):

    d_r   = mean over region r's cells of |p_student - p_teacher|  (class-agnostic detection probability)
    D_r  <- m * D_r + (1 - m) * d_r                                 (EMA; regions absent from a batch keep D_r)
    mult_r = clip((D_r / D_ref) ** power, min_mult, max_mult)       D_ref = mean D over the active regions
    w_cell = base_r * mult_r * (teacher confidence, FP cells only) * scale^2

Why this rule:
- Disagreement is the signal that there is still something to learn in a region. Weighting by D_r / D_ref moves
  the effort to the regions where the student lags the teacher most (typically FN/FP object-like cells late in
  training, once the easy TP cells are matched), and lets a region's weight decay back as the student catches
  up, instead of freezing the hand-set (1, 1, eta, 0) for the whole run.
- It is relative (divided by D_ref), so it re-balances regions without changing the overall loss scale, which
  the stage's term weights control. The power < 1 and the clip keep one noisy region from taking over; the
  EMA and a warm-up (multipliers are 1 until `warmup_steps` updates) keep early, random-student batches from
  setting the weights.
- Teacher confidence scales FP cells: a teacher firing at 0.9 where no object is labelled is usually seeing
  something real (an unlabelled or occluded object, a confusing structure) and worth imitating; one barely
  above gamma is mostly noise.
- Detection probability is the measure in every stage (S1 feature-only included), because it is defined for
  every student/teacher pair and tracks what the evaluation scores.
The state (EMA, update count) is a buffer: it is saved with the training state and restored on resume. With
several ranks the per-batch statistics are all-reduced first, so every rank holds the same weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from training.distillation.regions import FP, REGIONS, RegionMaps


@dataclass
class AdaptiveConfig:
    """Settings of the adaptive region weights (see the module docstring for the rule)."""

    enabled: bool = True
    momentum: float = 0.98  # EMA momentum of the per-region disagreement
    power: float = 0.5  # exponent on D_r / D_ref (0 = no adaptation, 1 = proportional)
    min_multiplier: float = 0.5
    max_multiplier: float = 3.0
    warmup_steps: int = 20  # updates before the multipliers leave 1
    confidence_fp: bool = True  # scale FP cells by the teacher's confidence

    def __post_init__(self) -> None:
        if not 0 <= self.momentum < 1:  # 1 would never move from the first statistics, > 1 diverges
            raise ValueError(f"distill.adaptive.momentum must lie in [0, 1), got {self.momentum}")
        if not 0 <= self.power < math.inf or self.warmup_steps < 0:
            raise ValueError(f"distill.adaptive.power and warmup_steps must be >= 0, got {self.power}, "
                             f"{self.warmup_steps}")
        if not 0 < self.min_multiplier <= 1 <= self.max_multiplier < math.inf:
            raise ValueError("distill.adaptive needs 0 < min_multiplier <= 1 <= max_multiplier, got "
                             f"{self.min_multiplier}, {self.max_multiplier}")


class AdaptiveRegionWeights(nn.Module):
    """Holds the EMA state of the rule and turns region maps into per-cell weights."""

    def __init__(self, config: AdaptiveConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("ema", torch.zeros(len(REGIONS)))
        self.register_buffer("seen", torch.zeros(len(REGIONS)))  # batches in which each region had cells
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, regions: RegionMaps, student_prob: torch.Tensor) -> None:
        """Fold one batch's per-region disagreement into the EMA (student_prob: (B, Hd, Wd) class-agnostic)."""
        if not self.config.enabled:
            return
        masks = regions.one_hot()  # (B, 4, Hd, Wd)
        gap = (student_prob.float() - regions.confidence.float()).abs()[:, None]
        stats = torch.stack([(masks * gap).sum((0, 2, 3)), masks.sum((0, 2, 3))]).to(self.ema.device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(stats)
        total, count = stats
        present = count > 0
        mean = total / count.clamp(min=1.0)
        first = present & (self.seen == 0)
        m = self.config.momentum
        self.ema.copy_(torch.where(first, mean, torch.where(present, m * self.ema + (1 - m) * mean, self.ema)))
        self.seen += present.float()
        self.updates += 1

    def multipliers(self, base: tuple[float, ...]) -> torch.Tensor:
        """(4,) multipliers of the base weights; ones while disabled, warming up or with no statistics."""
        ones = torch.ones(len(REGIONS), device=self.ema.device)
        cfg = self.config
        if not cfg.enabled or int(self.updates) < cfg.warmup_steps:
            return ones
        active = (torch.tensor(base, device=self.ema.device) > 0) & (self.seen > 0)
        if not bool(active.any()):
            return ones
        reference = self.ema[active].mean().clamp(min=1e-6)
        ratio = (self.ema / reference).clamp(min=1e-6).pow(cfg.power)
        return torch.where(active, ratio.clamp(cfg.min_multiplier, cfg.max_multiplier), ones)

    def cell_weights(self, regions: RegionMaps, base: tuple[float, ...], scale: bool = True) -> torch.Tensor:
        """(B, 1, Hd, Wd) weights: base[region] x multiplier[region] (x FP confidence) (x scale^2) x coverage."""
        if len(base) != len(REGIONS):
            raise ValueError(f"region weights need {len(REGIONS)} values {REGIONS}, got {base}")
        per_region = torch.tensor(base, device=regions.region.device) * self.multipliers(base).to(
            regions.region.device)
        weight = per_region[regions.region]
        if self.config.enabled and self.config.confidence_fp:
            weight = torch.where(regions.region == FP, weight * regions.confidence, weight)
        if scale:
            weight = weight * regions.scale.pow(2)
        if regions.coverage is not None:
            weight = weight * regions.coverage
        return weight[:, None].detach()
