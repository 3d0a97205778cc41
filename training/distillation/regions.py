"""Region decomposition of the BEV detection grid for region-aware distillation (DistillBEV-style).

Every detection-grid cell falls in one region, decided from the ground truth and the teacher's own heatmap:
- TP (true positive): inside the footprint of a ground-truth object that the teacher detects (its class-agnostic
  heatmap probability reaches `gamma` somewhere on the footprint);
- FN (false negative): inside the footprint of an object the teacher misses;
- FP (false positive): outside every footprint, where the teacher's probability is >= `gamma`;
- TN (true negative): everything else (background the teacher also calls background).
Weighting them (1, 1, eta, ~0) keeps the ~99% background cells from drowning the few object cells.

Adaptive scaling: each object's cells carry scale s = 1/sqrt(area in cells). The scale multiplies the feature
*residual*, so the squared error of a cell is weighted by s^2 = 1/area and every object contributes the mean error
over its footprint: a one-cell pedestrian counts as much as a forty-cell bus. Where footprints overlap the
smaller object's (larger) scale wins. Background cells have scale 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tinybev_ros.model.box_code import AXIS_COS, AXIS_SIN, axis_angle

REGIONS: tuple[str, ...] = ("tp", "fn", "fp", "tn")
TP, FN, FP, TN = range(4)


@dataclass
class RegionMaps:
    """Per-cell region information on the (student's) detection grid.

    region:     (B, Hd, Wd) int64, index into REGIONS
    scale:      (B, Hd, Wd) float, 1/sqrt(area) on object cells, 1 elsewhere
    confidence: (B, Hd, Wd) float, teacher's class-agnostic heatmap probability
    coverage:   (B, Hd, Wd) float, share of the cell the teacher saw (TeacherOutput.coverage), or None (all)
    """

    region: torch.Tensor
    scale: torch.Tensor
    confidence: torch.Tensor
    coverage: torch.Tensor | None = None

    def one_hot(self) -> torch.Tensor:
        """(B, 4, Hd, Wd) float region masks; a cell the teacher did not see belongs to no region."""
        masks = F.one_hot(self.region, len(REGIONS)).permute(0, 3, 1, 2).float()
        return masks if self.coverage is None else masks * self.coverage[:, None]


def resize_probability(prob: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, C, H, W) probabilities onto `size`: max-pooled when shrinking (a peak must not vanish), else bilinear."""
    if tuple(prob.shape[-2:]) == tuple(size):
        return prob
    if prob.shape[-2] >= size[0] and prob.shape[-1] >= size[1]:
        return F.adaptive_max_pool2d(prob, size)
    return F.interpolate(prob, size=size, mode="bilinear", align_corners=False)


def object_footprints(targets: dict[str, torch.Tensor], shape: tuple[int, int],
                      cell_size: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Which detection cells each ground-truth box covers: (B, M', Hd*Wd) bool and (B, M') valid mask.

    A cell belongs to a box when its centre lies inside the rotated box; the cell holding the box centre always
    does, so objects smaller than a cell still own one cell. M' is the number of box slots in use (<= M).
    Box code per tinybev_ros/model/box_code.py (a footprint needs the axis only).
    """
    mask = targets["box_mask"].bool()
    used = int(mask.any(0).nonzero().max()) + 1 if bool(mask.any()) else 0
    batch = mask.shape[0]
    hd, wd = shape
    device = targets["box"].device
    if used == 0:
        return torch.zeros(batch, 0, hd * wd, dtype=torch.bool, device=device), mask[:, :0]
    mask = mask[:, :used]
    index = targets["box_index"][:, :used]
    code = targets["box"][:, :used].float()
    centre_row = (index // wd).float() + code[..., 0]  # continuous position in cells, cell i spans [i, i+1)
    centre_col = (index % wd).float() + code[..., 1]
    half_w = code[..., 3].exp() / (2.0 * cell_size)
    half_l = code[..., 4].exp() / (2.0 * cell_size)
    axis = axis_angle(code[..., AXIS_SIN], code[..., AXIS_COS])
    sin, cos = axis.sin(), axis.cos()
    rows = torch.arange(hd, device=device, dtype=torch.float32) + 0.5
    cols = torch.arange(wd, device=device, dtype=torch.float32) + 0.5
    cell_row = rows[:, None].expand(hd, wd).reshape(-1)
    cell_col = cols[None, :].expand(hd, wd).reshape(-1)
    dx = cell_row[None, None] - centre_row[..., None]  # along x (rows)
    dy = cell_col[None, None] - centre_col[..., None]  # along y (columns)
    along = dx * cos[..., None] + dy * sin[..., None]
    across = -dx * sin[..., None] + dy * cos[..., None]
    inside = (along.abs() <= half_l[..., None]) & (across.abs() <= half_w[..., None])
    inside.scatter_(2, index[..., None], True)
    return inside & mask[..., None], mask


def decompose_regions(targets: dict[str, torch.Tensor], teacher_heatmap: torch.Tensor, shape: tuple[int, int],
                      cell_size: float, gamma: float) -> RegionMaps:
    """Split the detection grid into TP / FN / FP / TN cells and compute the adaptive scale (see module doc).

    teacher_heatmap: (B, C, Ht, Wt) logits, resized to `shape` (the student's detection grid) when needed.
    cell_size: side of a detection cell in metres (grid resolution x det_stride).
    """
    with torch.no_grad():
        prob = resize_probability(torch.sigmoid(teacher_heatmap.detach().float()), shape)
        confidence = prob.amax(1)  # (B, Hd, Wd)
        batch = confidence.shape[0]
        flat_conf = confidence.reshape(batch, -1)
        footprint, valid = object_footprints(targets, shape, cell_size)
        covered = footprint.any(1)  # (B, Hd*Wd)
        if footprint.shape[1]:
            best = torch.where(footprint, flat_conf[:, None], torch.zeros((), device=flat_conf.device)).amax(2)
            detected = (best >= gamma) & valid  # (B, M')
            in_tp = (footprint & detected[..., None]).any(1)
            area = footprint.sum(2).clamp(min=1).float()
            object_scale = torch.where(footprint, area.rsqrt()[..., None], torch.zeros((), device=area.device))
            scale = torch.where(covered, object_scale.amax(1), torch.ones((), device=area.device))
        else:
            in_tp = covered
            scale = torch.ones_like(flat_conf)
        region = torch.full_like(flat_conf, TN, dtype=torch.long)
        region[~covered & (flat_conf >= gamma)] = FP
        region[covered] = FN
        region[in_tp] = TP
    return RegionMaps(region.view(batch, *shape), scale.view(batch, *shape), confidence)


def uniform_regions(like: torch.Tensor, shape: tuple[int, int]) -> RegionMaps:
    """Every cell treated alike (region decomposition switched off): all TP, scale 1, confidence 1."""
    batch = like.shape[0]
    ones = torch.ones(batch, *shape, device=like.device)
    return RegionMaps(torch.full((batch, *shape), TP, dtype=torch.long, device=like.device), ones, ones)
