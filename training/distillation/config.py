"""Distillation settings: a weight per loss term (0 = off), the region machinery's switches, and the stage.

Stages (as in the paper): S1 feature-level terms only, S2 output-level terms only, S3 both; `none` trains the
student on the ground truth alone (the ablation's baseline, through the same code path). A stage never changes
the weights, it only gates the two groups, so each ablation row is `--stage X` on one config.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from tinybev_ros.config import load_yaml, path_field, resolve_relative
from training.distillation.adaptive import AdaptiveConfig

# What the distillation code makes of a recipe, by number: bump it with any change to the code that changes what
# a distilled run learns. Recorded ablation runs of another revision are trained again (training/ablation.py).
# 2: cells moved in from beyond the teacher's grid are not imitated, weights sum-pooled, adapters clipped.
# 3: the cached teacher's outputs are moved in float32 under bf16/fp16 autocast (box centres were rounded by up to
#    0.25 m in bf16); float32 runs compute what revision 2 did.
# 4: the box imitation weights the box code's entries as the supervised box loss does (velocity and direction
#    0.2), not all alike.
REVISION = 4
STAGES = ("none", "S1", "S2", "S3")
FEATURE_TERMS = ("feature", "attention")
OUTPUT_TERMS = ("heatmap", "box", "motion_traj", "motion_mode", "map", "occupancy", "plan")


@dataclass
class RegionConfig:
    """Region decomposition (TP, FN, FP, TN) and adaptive scaling; see training/distillation/regions.py."""

    enabled: bool = True  # False: every cell weighted alike (ablation of the decomposition)
    gamma: float = 0.3  # teacher heatmap probability above which a cell is a teacher detection
    feature_weights: tuple[float, float, float, float] = (1.0, 1.0, 0.5, 0.0)  # TP, FN, FP (eta), TN
    # Output imitation skips FN cells: there the teacher missed the object, so copying its output teaches a miss.
    output_weights: tuple[float, float, float, float] = (1.0, 0.0, 0.5, 0.0)
    adaptive_scaling: bool = True  # object cells weighted by 1/area (residual by 1/sqrt(area))

    def __post_init__(self) -> None:
        if not 0 < self.gamma < 1:  # a probability threshold: outside (0, 1) one region takes every cell
            raise ValueError(f"distill.regions.gamma must lie in (0, 1), got {self.gamma}")
        for name in ("feature_weights", "output_weights"):
            weights = getattr(self, name)
            if len(weights) != 4 or any(not 0 <= w < math.inf for w in weights):
                raise ValueError(f"distill.regions.{name} must be 4 numbers >= 0 (TP, FN, FP, TN), got {list(weights)}")


@dataclass
class DistillConfig:
    stage: str = "S3"
    supervised: float = 1.0  # weight of the ground-truth multi-task loss (training/losses.py) in every stage
    # feature level (S1, S3)
    feature: float = 1.0
    attention: float = 0.5
    feature_levels: tuple[int, ...] = ()  # indices into bev_features to distil; () = all (levels + pre-head)
    attention_weighting: bool = True  # weight the imitation by the mean of teacher and student attention
    attention_temperature: float = 1.0
    normalize_features: bool = True
    # output level (S2, S3)
    heatmap: float = 1.0
    box: float = 0.25
    motion_traj: float = 0.1
    motion_mode: float = 0.05
    map: float = 1.0
    occupancy: float = 1.0
    plan: float = 0.5
    temperature: float = 2.0  # softening of heatmap / map / occupancy / mode logits
    trust_gating: bool = True  # map/occupancy/plan imitation only where the teacher beats the GT check (outputs.py)
    regions: RegionConfig = field(default_factory=RegionConfig)
    adaptive: AdaptiveConfig = field(default_factory=AdaptiveConfig)

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"distill stage must be one of {STAGES}, not {self.stage!r}")
        if not (0 < self.temperature < math.inf and 0 < self.attention_temperature < math.inf):
            raise ValueError(f"distill temperatures must be positive numbers, got {self.temperature} and "
                             f"{self.attention_temperature}")
        for name in ("supervised", *FEATURE_TERMS, *OUTPUT_TERMS):  # negative: the student learns to disagree
            if not 0 <= getattr(self, name) < math.inf:
                raise ValueError(f"distill.{name} must be a number >= 0, got {getattr(self, name)}")

    def active_weights(self) -> dict[str, float]:
        """Weight of every distillation term in this stage (terms off in the stage or with weight 0 left out)."""
        groups = {"none": (), "S1": FEATURE_TERMS, "S2": OUTPUT_TERMS, "S3": FEATURE_TERMS + OUTPUT_TERMS}
        return {name: getattr(self, name) for name in groups[self.stage] if getattr(self, name) > 0}


@dataclass
class DistillRunConfig:
    """A `tinybev distill --config` file: the supervised training YAML it builds on, plus the distillation."""

    train_config: str = path_field("train_tiny.yaml")  # relative to this file's folder
    distill: DistillConfig = field(default_factory=DistillConfig)
    source: str = ""
    train_overrides: tuple[str, ...] = ()  # key=value overrides of the training config (set by the loader)

    def train_config_path(self) -> Path:
        return resolve_relative(self.train_config, self.source, "training config")

    def training(self):  # -> training.config.TrainConfig (imported here: training.config imports this package)
        """The training config this run builds on, with the command line's overrides of it applied."""
        from training.config import load_train_config

        return load_train_config(self.train_config_path(), self.train_overrides)


def load_distill_config(path: str | Path, overrides: Sequence[str] = ()) -> DistillRunConfig:
    """A distillation YAML and `key=value` overrides: `distill.*` and `train_config` set this file, every other
    key the training config it names (`tinybev distill --config C distill.stage=S1 optim.lr=0.001 steps=500`)."""
    own = {f.name for f in fields(DistillRunConfig)} - {"source", "train_overrides"}
    mine = [item for item in overrides if item.partition("=")[0].split(".")[0] in own]
    config = load_yaml(DistillRunConfig, path, mine)
    config.source = str(Path(path).resolve())
    config.train_overrides = tuple(item for item in overrides if item not in mine)
    return config
