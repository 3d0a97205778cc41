"""What the distillation looks at, for one sample: the pictures DistillBEV shows, drawn from a finished S3 run.

Panels (BEV, x forward = up, y left = left, ground-truth boxes outlined everywhere):
1. the teacher's class-agnostic heatmap (what it detects);
2. the region decomposition TP / FN / FP / TN the feature and heatmap terms are weighted by;
3. the feature term's cell weight: region weight x the run's adaptive multiplier (x teacher confidence on FP)
   x 1/area of the object (log colour scale);
4. the S3 student's heatmap;
5.-7. spatial attention of the pre-head BEV map: teacher, S3 student, supervised student (same colour scale);
8. the adaptive multipliers per region the S3 run ended with, next to the base weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from tinybev_ros.atomic_file import atomic_path
from tinybev_ros.checkpoint import load_checkpoint
from tinybev_ros.model.box_code import AXIS_COS, AXIS_SIN, axis_angle
from training.checkpointing import STATE_FILE, load_train_state
from training.data import collate
from training.distillation.config import DistillConfig
from training.distillation.features import spatial_attention
from training.distillation.loss import DistillationLoss
from training.distillation.regions import REGIONS, RegionMaps, decompose_regions
from training.losses import LossWeights
from training.teachers import CachedTeacher

REGION_COLOURS = np.array([[0.2, 0.75, 0.3], [0.9, 0.2, 0.2], [0.95, 0.6, 0.1], [0.93, 0.93, 0.93]])


def _student_outputs(checkpoint: Path, batch: dict[str, Any]) -> dict[str, Any]:
    model, _ = load_checkpoint(checkpoint)
    model.eval()
    with torch.no_grad():
        return model(batch["images"], batch["intrinsics"], batch["cam_to_ego"], batch["command"],
                     ego_status=batch["ego_status"])


def _box_outlines(targets: dict[str, torch.Tensor], cell: float, shape: tuple[int, int]) -> list[np.ndarray]:
    """Ground-truth footprints as (5, 2) polygons in (column, row) pixel coordinates of the detection grid."""
    mask = targets["box_mask"][0].bool()
    index = targets["box_index"][0][mask]
    code = targets["box"][0][mask].float()
    wd = shape[1]
    rows = (index // wd).float() + code[:, 0]
    cols = (index % wd).float() + code[:, 1]
    width, length = code[:, 3].exp() / cell, code[:, 4].exp() / cell
    axis = axis_angle(code[:, AXIS_SIN], code[:, AXIS_COS])  # an outline needs no direction
    sin, cos = axis.sin(), axis.cos()
    outlines = []
    for r, c, w, ln, s, co in zip(rows, cols, width, length, sin, cos, strict=True):
        corners = [(ln / 2, w / 2), (ln / 2, -w / 2), (-ln / 2, -w / 2), (-ln / 2, w / 2), (ln / 2, w / 2)]
        points = [(c + a * s + b * co, r + a * co - b * s) for a, b in corners]  # (column, row)
        outlines.append(np.array([[float(x), float(y)] for x, y in points]))
    return outlines


def distillation_figure(teacher_cache: Path, s3_checkpoint_dir: Path, supervised_model: Path, dataset: Any,
                        distill: DistillConfig, cell_size: float, path: Path, index: int = 0) -> Path:
    """Draw the panels (module doc) for item `index` of `dataset` (un-augmented, with targets) into `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap, LogNorm

    batch = collate([dataset[index]])
    teacher = CachedTeacher(teacher_cache)(batch)
    s3 = _student_outputs(s3_checkpoint_dir / "model.safetensors", batch)
    supervised = _student_outputs(supervised_model, batch)
    shape = tuple(s3["heatmap"].shape[-2:])
    regions: RegionMaps = decompose_regions(batch["targets"], teacher.outputs["heatmap"], shape, cell_size,
                                            distill.regions.gamma)
    kd = DistillationLoss.from_example(distill, s3["bev_features"], teacher.features, cell_size,
                                       LossWeights().box_code)  # the box term is not drawn
    kd.load_state_dict(load_train_state(s3_checkpoint_dir / STATE_FILE)["distill"])
    weight = kd.adaptive.cell_weights(regions, distill.regions.feature_weights, distill.regions.adaptive_scaling)
    multipliers = kd.adaptive.multipliers(distill.regions.feature_weights).numpy()

    def attention(features: list[torch.Tensor]) -> np.ndarray:
        return spatial_attention(features[-1].float())[0, 0].numpy()

    attentions = [attention(teacher.features), attention(s3["bev_features"]), attention(supervised["bev_features"])]
    top = max(float(np.percentile(a, 99.5)) for a in attentions)
    outlines = _box_outlines(batch["targets"], cell_size, shape)
    fig, axes = plt.subplots(2, 4, figsize=(17, 8.6), dpi=100)
    panels = [
        ("teacher heatmap (max over classes)", torch.sigmoid(teacher.outputs["heatmap"][0].float()).amax(0).numpy(),
         {"cmap": "magma", "vmin": 0, "vmax": 1}),
        ("regions: TP green, FN red, FP orange, TN grey", regions.region[0].numpy(),
         {"cmap": ListedColormap(REGION_COLOURS), "vmin": -0.5, "vmax": 3.5}),
        ("feature-loss cell weight (region x adaptive x 1/area)", weight[0, 0].numpy() + 1e-4,
         {"cmap": "viridis", "norm": LogNorm(vmin=1e-3, vmax=max(float(weight.max()), 1e-2))}),
        ("S3 student heatmap", torch.sigmoid(s3["heatmap"][0].float()).amax(0).numpy(),
         {"cmap": "magma", "vmin": 0, "vmax": 1}),
        ("teacher spatial attention (pre-head map)", attentions[0], {"cmap": "inferno", "vmin": 0, "vmax": top}),
        ("S3 student spatial attention", attentions[1], {"cmap": "inferno", "vmin": 0, "vmax": top}),
        ("supervised student spatial attention", attentions[2], {"cmap": "inferno", "vmin": 0, "vmax": top}),
    ]
    for ax, (title, image, style) in zip(axes.flat, panels, strict=False):
        shown = ax.imshow(image, origin="upper", interpolation="nearest", **style)
        for outline in outlines if image.shape == shape else ():
            ax.plot(outline[:, 0], outline[:, 1], color="cyan", linewidth=0.7)
        # row index grows with x (forward), column index with y (left): forward up, left to the left
        ax.set_ylim(-0.5, image.shape[0] - 0.5)
        ax.set_xlim(image.shape[1] - 0.5, -0.5)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
    ax = axes.flat[7]
    base = np.array(distill.regions.feature_weights)
    x = np.arange(len(REGIONS))
    ax.bar(x - 0.2, base, 0.4, label="base weight", color="lightgray")
    ax.bar(x + 0.2, base * multipliers, 0.4, label="x adaptive multiplier (end of run)", color="tab:red")
    ax.set_xticks(x, [r.upper() for r in REGIONS])
    ax.set_title("feature-term region weights of the S3 run", fontsize=9)
    ax.legend(fontsize=8)
    fig.suptitle(f"What the distillation looks at (sample {batch['meta'][0]['sample_token']}; ego at the centre, "
                 "forward up)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
