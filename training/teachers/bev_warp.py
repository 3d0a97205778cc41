"""A cached teacher's BEV maps moved by the batch's BEV augmentation, so a cache made once teaches augmented batches.

A teacher cache holds each sample's features and outputs in the un-moved base_link; a BEV-augmented batch lives in
base_link moved by A = s R F (training/bev_augmentation.py). The teacher's view of the moved sample is its maps
resampled at A^-1 of every cell (F.grid_sample: bilinear for features and logits, nearest for the box and motion
codes, which belong to one cell), with the geometric channels transformed like the labels are: the box centre
(cell + offset) moved by A and re-expressed from its new cell, z and sizes scaled, the heading and the velocity
turned by A, the motion displacements and the plan waypoints mapped by A. Cells whose source lies outside the
grid read "nothing there" (zero features, logits of a near-zero probability) and are marked in `coverage`, so the
distillation leaves them out instead of teaching "nothing there" where the teacher simply did not look.

The result is what a BEV-equivariant teacher would have said; a live teacher run on the moved input (LiDAR and
extrinsics moved) may differ where the network is not equivariant (e.g. the LiDAR's own sensor position).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tinybev_ros.geometry import BevGrid
from tinybev_ros.model.box_code import AXIS_COS, AXIS_SIN, DIRECTION, VELOCITY, axis_angle, encode_heading
from training.teachers.base import TeacherOutput

OUTSIDE_LOGIT = -12.0  # a logit read where the moved view has no source cell (sigmoid ~ 6e-6)
_LOGIT_MAPS = ("heatmap", "map", "occupancy")


def sampling_grid(bev: torch.Tensor, grid: BevGrid, shape: tuple[int, int]) -> torch.Tensor:
    """(B, H, W, 2) F.grid_sample locations: for every cell of the moved raster, where its centre came from.

    grid_sample's last dimension is (along W, along H) = (y, x) here (rows follow x), in [-1, 1] from the outer
    cell edges (align_corners=False), so any raster covering `grid`'s extent shares this grid.
    """
    batch = bev.shape[0]
    half = torch.tensor([(grid.x_max - grid.x_min) / 2.0, (grid.y_max - grid.y_min) / 2.0], dtype=torch.float64)
    centre = torch.tensor([(grid.x_max + grid.x_min) / 2.0, (grid.y_max + grid.y_min) / 2.0], dtype=torch.float64)
    inverse = torch.linalg.inv(bev[:, :2, :2].double().cpu())  # (B, 2, 2)
    matrix = torch.diag(1.0 / half) @ inverse @ torch.diag(half)
    offset = (inverse @ centre - centre) / half  # (B, 2)
    swap = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    theta = torch.cat([swap @ matrix @ swap, (offset @ swap)[..., None]], dim=2)  # (y, x) order
    return F.affine_grid(theta.float(), [batch, 1, *shape], align_corners=False).to(bev.device)


def _sample(maps: torch.Tensor, locations: torch.Tensor, mode: str, outside: float = 0.0) -> torch.Tensor:
    moved = F.grid_sample(maps.float() - outside, locations, mode=mode, padding_mode="zeros", align_corners=False)
    return moved + outside


def _move_box_codes(box: torch.Tensor, bev: torch.Tensor, grid: BevGrid, locations: torch.Tensor) -> torch.Tensor:
    """(B, 11, Hd, Wd) box codes (tinybev_ros/model/box_code.py) after nearest resampling, in the moved frame."""
    b, _, hd, wd = box.shape
    cell = (grid.x_max - grid.x_min) / hd
    linear = bev[:, :2, :2].float()  # (B, 2, 2)
    scale = torch.linalg.det(bev.float()).abs().pow(1.0 / 3.0)  # (B,)
    sampled = F.grid_sample(box.float(), locations, mode="nearest", padding_mode="zeros", align_corners=False)
    # The source cell each moved cell read from (the same rule as nearest sampling: the cell holding the point).
    source_rows = torch.floor((locations[..., 1] + 1.0) / 2.0 * hd)  # (B, Hd, Wd)
    source_cols = torch.floor((locations[..., 0] + 1.0) / 2.0 * wd)
    centre_x = grid.x_min + (source_rows + sampled[:, 0]) * cell
    centre_y = grid.y_min + (source_cols + sampled[:, 1]) * cell
    moved = torch.einsum("bij,bjhw->bihw", linear, torch.stack([centre_x, centre_y], dim=1))
    rows = torch.arange(hd, device=box.device, dtype=torch.float32).view(1, hd, 1)
    cols = torch.arange(wd, device=box.device, dtype=torch.float32).view(1, 1, wd)
    off_x = (moved[:, 0] - grid.x_min) / cell - rows
    off_y = (moved[:, 1] - grid.y_min) / cell - cols
    # The axis angle is the heading the direction logit votes for: turn it, code it again, and flip the logit
    # where the turned heading is the new axis angle + pi. The axis vector keeps its length (the teacher's
    # confidence in the axis).
    axis = axis_angle(sampled[:, AXIS_SIN], sampled[:, AXIS_COS])
    turned = torch.einsum("bij,bjhw->bihw", linear, torch.stack([axis.cos(), axis.sin()], dim=1))
    sin2, cos2, forward = encode_heading(torch.atan2(turned[:, 1], turned[:, 0]))
    length = torch.hypot(sampled[:, AXIS_SIN], sampled[:, AXIS_COS])
    sin2, cos2 = sin2 * length, cos2 * length
    direction = torch.where(forward, sampled[:, DIRECTION], -sampled[:, DIRECTION])
    velocity = torch.einsum("bij,bjhw->bihw", linear, sampled[:, VELOCITY])
    log_scale = torch.log(scale).view(b, 1, 1, 1)
    return torch.stack([off_x, off_y, sampled[:, 2] * scale.view(b, 1, 1), *(sampled[:, 3:6] + log_scale).unbind(1),
                        sin2, cos2, velocity[:, 0], velocity[:, 1], direction], dim=1)


def _move_motion(motion: torch.Tensor, bev: torch.Tensor, locations: torch.Tensor) -> torch.Tensor:
    """(B, K*T*2, Hd, Wd) displacements, channel (k*T + t)*2 + {x, y}, resampled and mapped by A."""
    b, channels, hd, wd = motion.shape
    sampled = F.grid_sample(motion.float(), locations, mode="nearest", padding_mode="zeros", align_corners=False)
    xy = sampled.view(b, channels // 2, 2, hd, wd)
    return torch.einsum("bij,bmjhw->bmihw", bev[:, :2, :2].float(), xy).reshape(b, channels, hd, wd)


def warp_teacher_output(teacher: TeacherOutput, bev: torch.Tensor, grid: BevGrid) -> TeacherOutput:
    """`teacher` (un-moved samples) as seen in the frames moved by `bev` (B, 3, 3), every map covering `grid`.

    In float32 also under a training step's autocast: these are targets, and in bf16 (fp16) the einsums rounded
    box centres 50 m out to 0.25 m (0.03 m), a quarter of a 1 m cell in the offset targets.
    """
    with torch.autocast(bev.device.type, enabled=False):
        return _warp(teacher, bev, grid)


def _warp(teacher: TeacherOutput, bev: torch.Tensor, grid: BevGrid) -> TeacherOutput:
    if torch.equal(bev, torch.eye(3, device=bev.device, dtype=bev.dtype).expand_as(bev)):
        return teacher
    locations: dict[tuple[int, int], torch.Tensor] = {}

    def where(maps: torch.Tensor) -> torch.Tensor:
        key = tuple(maps.shape[-2:])
        if key not in locations:
            locations[key] = sampling_grid(bev, grid, key)
        return locations[key]

    features = [_sample(f, where(f), "bilinear") for f in teacher.features]
    outputs: dict[str, torch.Tensor] = {}
    for name, value in teacher.outputs.items():
        if name in _LOGIT_MAPS:
            outputs[name] = _sample(value, where(value), "bilinear", OUTSIDE_LOGIT)
        elif name == "motion_logits":
            outputs[name] = _sample(value, where(value), "bilinear")
        elif name == "box":
            outputs[name] = _move_box_codes(value, bev, grid, where(value))
        elif name == "motion":
            outputs[name] = _move_motion(value, bev, where(value))
        elif name == "plan":
            outputs[name] = torch.einsum("bij,btj->bti", bev[:, :2, :2].float(), value.float())
        else:
            raise ValueError(f"teacher output {name!r}: no rule to move it with the BEV augmentation")
    finest = teacher.features[0] if teacher.features else teacher.outputs["heatmap"]
    ones = torch.ones_like(finest[:, :1], dtype=torch.float32)
    coverage = F.grid_sample(ones, where(finest), mode="bilinear", padding_mode="zeros", align_corners=False)
    return TeacherOutput(features=features, outputs=outputs, coverage=coverage)

