"""Supervised multi-task losses: model outputs vs `targets.build_targets` (names and shapes per the contract).

Every term is normalised so its scale does not depend on batch size or object count, and each task's weight
comes from `LossWeights` (config). A task whose output the model does not produce is skipped, so the same
function trains the student and a teacher with fewer heads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from tinybev_ros.geometry import BevGrid
from tinybev_ros.model.box_code import BOX_CODE_SIZE, DIRECTION
from tinybev_ros.predictions import FORECAST_STEPS
from training.depth_targets import depth_loss


@dataclass(frozen=True)
class LossWeights:
    """Weight of each task's loss in the total; 0 switches a task off."""

    heatmap: float = 1.0
    box: float = 0.25
    motion_reg: float = 0.5
    motion_cls: float = 0.1
    map: float = 1.0
    occupancy: float = 1.0
    plan: float = 1.0
    collision: float = 0.1
    # Per-entry weights of the box code (tinybev_ros/model/box_code.py): CenterPoint down-weights velocity,
    # SECOND weights its direction classifier 0.2.
    box_code: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.2, 0.2, 0.2)
    focal_alpha: float = 2.0
    focal_beta: float = 4.0
    map_dice: float = 0.0  # extra dice term on map logits (0 = BCE only)
    # LiDAR depth supervision of the camera depth bins (training/depth_targets.py); > 0 also makes the dataset
    # read each keyframe's LiDAR sweep for the targets. 0 = depth learnt only through the BEV losses.
    depth: float = 0.0

    def __post_init__(self) -> None:
        tasks = {f.name: getattr(self, f.name) for f in fields(self) if f.type == "float"}
        for name, value in tasks.items():  # a negative weight would train the model to get that task wrong
            if not 0 <= value < math.inf:
                raise ValueError(f"loss.{name} must be a number >= 0, got {value}")
        if len(self.box_code) != BOX_CODE_SIZE or any(not 0 <= w < math.inf for w in self.box_code):
            raise ValueError(f"loss.box_code must be {BOX_CODE_SIZE} numbers >= 0, got {list(self.box_code)}")
        if not any(tasks[name] > 0 for name in tasks if name not in ("focal_alpha", "focal_beta", "map_dice")):
            raise ValueError("every loss weight is 0: the run would learn nothing")


def focal_heatmap_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0,
                       beta: float = 4.0) -> torch.Tensor:
    """CornerNet/CenterPoint penalty-reduced focal loss, normalised by the number of peaks (target == 1)."""
    prob = torch.sigmoid(logits.float()).clamp(1e-4, 1.0 - 1e-4)
    positive = target.eq(1.0).float()
    pos_loss = -torch.log(prob) * (1.0 - prob).pow(alpha) * positive
    neg_loss = -torch.log(1.0 - prob) * prob.pow(alpha) * (1.0 - target).pow(beta) * (1.0 - positive)
    return (pos_loss.sum() + neg_loss.sum()) / positive.sum().clamp(min=1.0)


def gather_cells(feature: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(B, C, Hd, Wd) feature values at flat cell indices (B, M) -> (B, M, C)."""
    b, c = feature.shape[:2]
    flat = feature.reshape(b, c, -1)
    return flat.gather(2, index[:, None, :].expand(b, c, index.shape[1])).transpose(1, 2)


def box_loss(box_map: torch.Tensor, targets: dict[str, torch.Tensor], code_weights: torch.Tensor) -> torch.Tensor:
    """Weighted L1 of the box code's regressed entries and binary cross-entropy of its direction logit, at object
    cells, summed over entries and averaged over objects. A NaN target (a velocity the devkit does not know)
    teaches nothing."""
    pred = gather_cells(box_map.float(), targets["box_index"])
    known = torch.isfinite(targets["box"])
    target = targets["box"].float().nan_to_num()
    direction = F.binary_cross_entropy_with_logits(pred[..., DIRECTION], target[..., DIRECTION], reduction="none")
    error = (pred - target).abs().index_copy(-1, torch.tensor([DIRECTION], device=pred.device), direction[..., None])
    mask = targets["box_mask"].float()[..., None]
    return (error * code_weights * mask * known).sum() / mask.sum().clamp(min=1.0)


def motion_losses(motion_map: torch.Tensor, logits_map: torch.Tensor,
                  targets: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Winner-takes-all: L1 of the mode with the smallest ADE, plus cross-entropy making that mode likeliest.

    Channel layout of outputs["motion"]: (K, FORECAST_STEPS, 2) flattened, K-major.
    """
    num_modes = logits_map.shape[1]
    b, m = targets["box_index"].shape
    pred = gather_cells(motion_map.float(), targets["box_index"]).reshape(b, m, num_modes, FORECAST_STEPS, 2)
    logits = gather_cells(logits_map.float(), targets["box_index"])  # (B, M, K)
    step_mask = targets["motion_mask"].float()  # (B, M, T)
    agent = targets["box_mask"] & targets["motion_mask"].any(-1)  # objects with some future
    distance = torch.linalg.norm(pred - targets["motion"][:, :, None], dim=-1)  # (B, M, K, T)
    ade = (distance * step_mask[:, :, None]).sum(-1) / step_mask.sum(-1, keepdim=True).clamp(min=1.0)
    winner = ade.detach().argmin(-1)  # (B, M)
    best = pred.gather(2, winner[..., None, None, None].expand(b, m, 1, FORECAST_STEPS, 2)).squeeze(2)
    l1 = ((best - targets["motion"]).abs().sum(-1) * step_mask).sum(-1) / step_mask.sum(-1).clamp(min=1.0)
    count = agent.float().sum().clamp(min=1.0)
    reg = (l1 * agent.float()).sum() / count
    ce = F.cross_entropy(logits.reshape(-1, num_modes), winner.reshape(-1), reduction="none").reshape(b, m)
    cls = (ce * agent.float()).sum() / count
    return reg, cls


def _frame_mean(loss: torch.Tensor, frame_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of a (B, T) per-frame loss over the frames whose mask is True (all when no mask)."""
    if frame_mask is None:
        return loss.mean()
    weight = frame_mask.float()
    return (loss * weight).sum() / weight.sum().clamp(min=1.0)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
    prob = torch.sigmoid(logits.float())
    inter = (prob * target).sum((-2, -1))
    total = prob.sum((-2, -1)) + target.sum((-2, -1))
    return _frame_mean(1.0 - (2.0 * inter + 1.0) / (total + 1.0), frame_mask)


def masked_bce(logits: torch.Tensor, target: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean BCE over pixels of (B, T, H, W) logits; frames (or map layers) with frame_mask False (B, T) do not
    count."""
    loss = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none").mean((-2, -1))
    return _frame_mean(loss, frame_mask)


def plan_l2_loss(plan: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean Euclidean distance between planned and driven waypoints over valid steps."""
    distance = torch.linalg.norm(plan.float() - target, dim=-1)
    weight = mask.float()
    return (distance * weight).sum() / weight.sum().clamp(min=1.0)


def collision_penalty(plan: torch.Tensor, occupancy: torch.Tensor, occupancy_mask: torch.Tensor,
                      grid: BevGrid, blur_cells: int = 5) -> torch.Tensor:
    """Mean (blurred) GT occupancy under the planned waypoints at +0.5..+2.0 s.

    Waypoint t (at +0.5 (t+1) s) is looked up in occupancy frame t+1 by bilinear sampling; a box blur widens
    occupied regions so the penalty has a gradient that pushes waypoints out of them.
    """
    steps = min(plan.shape[1], occupancy.shape[1] - 1)
    occ = F.avg_pool2d(occupancy[:, 1: steps + 1].float(), blur_cells, stride=1, padding=blur_cells // 2,
                       count_include_pad=False)
    xy = plan[:, :steps].float()
    grid_x = (xy[..., 1] - grid.y_min) / (grid.y_max - grid.y_min) * 2.0 - 1.0  # columns follow y
    grid_y = (xy[..., 0] - grid.x_min) / (grid.x_max - grid.x_min) * 2.0 - 1.0  # rows follow x
    points = torch.stack([grid_x, grid_y], dim=-1)  # (B, steps, 2)
    b = plan.shape[0]
    sampled = F.grid_sample(occ.reshape(b * steps, 1, *occ.shape[-2:]), points.reshape(b * steps, 1, 1, 2),
                            align_corners=False, padding_mode="zeros").reshape(b, steps)
    weight = occupancy_mask[:, 1: steps + 1].float()
    return (sampled * weight).sum() / weight.sum().clamp(min=1.0)


def supervised_losses(outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], weights: LossWeights,
                      grid: BevGrid) -> dict[str, torch.Tensor]:
    """Each task's (unweighted) loss for the outputs present, plus "total" = the weighted sum."""
    terms: dict[str, torch.Tensor] = {}
    if "heatmap" in outputs:
        terms["heatmap"] = focal_heatmap_loss(outputs["heatmap"], targets["heatmap"], weights.focal_alpha,
                                              weights.focal_beta)
    if "box" in outputs:
        code = torch.tensor(weights.box_code, dtype=torch.float32, device=outputs["box"].device)
        terms["box"] = box_loss(outputs["box"], targets, code)
    if "motion" in outputs and "motion_logits" in outputs:
        terms["motion_reg"], terms["motion_cls"] = motion_losses(outputs["motion"], outputs["motion_logits"],
                                                                 targets)
    if "map" in outputs:
        # Layers a dataset without the map expansion does not know (map_valid False) teach nothing.
        terms["map"] = masked_bce(outputs["map"], targets["map"], targets["map_valid"])
        if weights.map_dice > 0:
            terms["map"] = terms["map"] + weights.map_dice * dice_loss(outputs["map"], targets["map"],
                                                                       targets["map_valid"])
    if "occupancy" in outputs:
        terms["occupancy"] = masked_bce(outputs["occupancy"], targets["occupancy"], targets["occupancy_mask"])
    if "plan" in outputs:
        terms["plan"] = plan_l2_loss(outputs["plan"], targets["ego_future"], targets["ego_future_mask"])
        terms["collision"] = collision_penalty(outputs["plan"], targets["occupancy"], targets["occupancy_mask"],
                                               grid)
    if "depth" in outputs and "depth" in targets:
        terms["depth"] = depth_loss(outputs["depth"], targets["depth"])
    total = sum(getattr(weights, name) * value for name, value in terms.items())
    if not isinstance(total, torch.Tensor):  # no task of these outputs has targets: a zero on their device
        total = next(v for v in outputs.values() if isinstance(v, torch.Tensor)).new_zeros((), dtype=torch.float32)
    terms["total"] = total
    return terms
