"""Output-level distillation: the student imitates every head of the teacher.

All terms are divergences that are exactly zero when the student's output equals the teacher's:
- dense sigmoid outputs (detection heatmap, map, occupancy): Bernoulli KL(p_teacher || p_student) of the
  temperature-softened probabilities, times T^2 (Hinton's correction so the gradient scale does not shrink
  with T). The heatmap term is weighted per cell by the region weights; map and occupancy are averaged.
- box code, at teacher detections only (local maxima of the teacher heatmap with score >= gamma, weighted
  by that score): elsewhere the teacher's box code was never trained and carries no knowledge. L1 on the
  regressed entries, Bernoulli KL on the direction logit (at T = 1: the teacher's doubt about front and back
  is what it knows), averaged with the supervised box loss's per-entry weights (`loss.box_code`): velocity
  and direction count a fifth there, and a camera student that cannot see motion should not be pushed harder
  to copy a velocity than to learn it.
- motion, at the same cells: KL of the mode distributions (softened) and the L1 error of each mode's trajectory
  weighted by the teacher's probability of that mode. Modes are matched by index, so the student adopts the
  teacher's mixture as a whole (its mode ordering included).
- plan: mean Euclidean distance between the student's and the teacher's waypoints.
Teacher-trust gating (`trust_gating`): map and occupancy cells count only where the teacher's binarised output
matches the ground truth, and the plan only in samples where the teacher's plan is closer to the driven path
than the student's. A teacher that is still weak on a task then cannot pull the student below what the ground
truth alone would teach; the heatmap has the same protection through the region weights (FN cells off).
Teacher maps on another raster are resized to the student's (dense terms only; box and motion codes are in
detection-cell units and need the same detection grid).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tinybev_ros.model.box_code import DIRECTION
from tinybev_ros.predictions import FORECAST_STEPS
from training.distillation.features import resize_feature

EPS = 1e-6


def bernoulli_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Elementwise KL(sigmoid(t/T) || sigmoid(s/T)) * T^2 (exactly 0 where the logits agree)."""
    s = student_logits.float() / temperature
    t = teacher_logits.detach().float() / temperature
    p = torch.sigmoid(t)
    # KL = p log p/q + (1-p) log (1-p)/(1-q), written with logsigmoid for stability.
    kl = p * (F.logsigmoid(t) - F.logsigmoid(s)) + (1.0 - p) * (F.logsigmoid(-t) - F.logsigmoid(-s))
    return kl * temperature**2


def _match_raster(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    return resize_feature(teacher.detach().float(), tuple(student.shape[-2:]))


def heatmap_distill_loss(student: torch.Tensor, teacher: torch.Tensor, weight: torch.Tensor,
                         temperature: float) -> torch.Tensor:
    """sum_cells w * sum_classes KL / sum_cells w, with (B, 1, Hd, Wd) region weights."""
    kl = bernoulli_kl(student, _match_raster(teacher, student), temperature).sum(1, keepdim=True)
    weight = weight.detach().float()
    return (weight * kl).sum() / weight.sum().clamp(min=EPS)


def dense_distill_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float,
                       weight: torch.Tensor | None = None) -> torch.Tensor:
    """Bernoulli KL over all cells and channels (map layers, occupancy frames), averaged with `weight` (same
    shape as the logits, e.g. `teacher_correct_cells`) or uniformly."""
    kl = bernoulli_kl(student, _match_raster(teacher, student), temperature)
    if weight is None:
        return kl.mean()
    weight = weight.detach().float()
    return (weight * kl).sum() / weight.sum().clamp(min=EPS)


def teacher_correct_cells(teacher: torch.Tensor, target: torch.Tensor, like: torch.Tensor,
                          frame_mask: torch.Tensor | None = None) -> torch.Tensor:
    """1 where the teacher's binarised probability agrees with the ground truth (B, C, H, W), else 0; frames with
    frame_mask False (B, C) are 0. Imitating the teacher only where it is right keeps a weak teacher's errors
    out of the student while still passing on its soft confidence there."""
    prob = _match_raster(torch.sigmoid(teacher.detach().float()), like)
    correct = ((prob > 0.5) == (target > 0.5)).float()
    if frame_mask is not None:
        correct = correct * frame_mask.float()[..., None, None]
    return correct


def teacher_detection_weight(teacher_heatmap: torch.Tensor, gamma: float, kernel: int = 3) -> torch.Tensor:
    """(B, 1, Hd, Wd): the teacher's score at its detections (class-agnostic local maxima >= gamma), else 0."""
    prob = torch.sigmoid(teacher_heatmap.detach().float()).amax(1, keepdim=True)
    peak = prob == F.max_pool2d(prob, kernel, stride=1, padding=kernel // 2)
    return torch.where(peak & (prob >= gamma), prob, torch.zeros((), device=prob.device))


def _require_same_grid(name: str, student: torch.Tensor, teacher: torch.Tensor) -> None:
    if student.shape[-2:] != teacher.shape[-2:]:
        raise ValueError(f"{name} distillation needs the teacher on the student's detection grid: teacher "
                         f"{tuple(teacher.shape[-2:])} vs student {tuple(student.shape[-2:])}; set its weight to 0")


def box_distill_loss(student: torch.Tensor, teacher: torch.Tensor, detection_weight: torch.Tensor,
                     code_weights: torch.Tensor) -> torch.Tensor:
    """Score-weighted mean at teacher detections of the `code_weights`-weighted mean of the box code's entries'
    errors (L1, KL of the direction); 0 when the teacher detects nothing."""
    _require_same_grid("box", student, teacher)
    if teacher.shape[1] != student.shape[1]:
        raise ValueError(f"box distillation: the teacher's box code has {teacher.shape[1]} channels, the student's "
                         f"{student.shape[1]} (tinybev_ros/model/box_code.py)")
    direction = bernoulli_kl(student[:, DIRECTION], teacher[:, DIRECTION], 1.0)
    error = (student.float() - teacher.detach().float()).abs()
    error = error.index_copy(1, torch.tensor([DIRECTION], device=error.device), direction[:, None])
    weights = code_weights.to(error.device, torch.float32).view(1, -1, 1, 1)
    error = (error * weights).sum(1, keepdim=True) / weights.sum()
    return (detection_weight * error).sum() / detection_weight.sum().clamp(min=EPS)


def motion_distill_losses(student_motion: torch.Tensor, student_logits: torch.Tensor, teacher_motion: torch.Tensor,
                          teacher_logits: torch.Tensor, detection_weight: torch.Tensor,
                          temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(trajectory, mode) terms at teacher detections; motion channel layout (K, FORECAST_STEPS, 2), K-major."""
    _require_same_grid("motion", student_motion, teacher_motion)
    batch, modes = student_logits.shape[:2]
    grid = student_logits.shape[-2:]
    if teacher_logits.shape[1] != modes:
        raise ValueError(f"motion distillation: teacher has {teacher_logits.shape[1]} modes, student {modes}")
    t_prob = torch.softmax(teacher_logits.detach().float() / temperature, dim=1)  # (B, K, Hd, Wd)
    s_logp = torch.log_softmax(student_logits.float() / temperature, dim=1)
    t_logp = torch.log_softmax(teacher_logits.detach().float() / temperature, dim=1)
    mode_kl = (t_prob * (t_logp - s_logp)).sum(1, keepdim=True) * temperature**2
    s_traj = student_motion.float().view(batch, modes, FORECAST_STEPS * 2, *grid)
    t_traj = teacher_motion.detach().float().view(batch, modes, FORECAST_STEPS * 2, *grid)
    mode_prob = torch.softmax(teacher_logits.detach().float(), dim=1)
    traj_l1 = ((s_traj - t_traj).abs().mean(2) * mode_prob).sum(1, keepdim=True)
    norm = detection_weight.sum().clamp(min=EPS)
    return (detection_weight * traj_l1).sum() / norm, (detection_weight * mode_kl).sum() / norm


def plan_distill_loss(student: torch.Tensor, teacher: torch.Tensor,
                      sample_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean Euclidean distance (m) between student and teacher waypoints, (B, T, 2) each; `sample_weight` (B,)
    (e.g. `teacher_plans_better`) averages over samples with weights instead of uniformly."""
    distance = torch.linalg.norm(student.float() - teacher.detach().float(), dim=-1).mean(-1)
    if sample_weight is None:
        return distance.mean()
    sample_weight = sample_weight.detach().float()
    return (sample_weight * distance).sum() / sample_weight.sum().clamp(min=EPS)


def teacher_plans_better(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor,
                         mask: torch.Tensor) -> torch.Tensor:
    """(B,) 1 where the teacher's plan is closer to the driven path than the student's (valid steps), else 0."""
    weight = mask.float()

    def error(plan: torch.Tensor) -> torch.Tensor:
        distance = torch.linalg.norm(plan.detach().float() - target, dim=-1)
        return (distance * weight).sum(-1) / weight.sum(-1).clamp(min=1.0)

    return (error(teacher) < error(student)).float()
