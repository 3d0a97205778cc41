"""The box head's code: what each channel means, and headings in and out of it (targets, decoding, teachers).

Channels (`BOX_CODE_SIZE`): off_x, off_y (the centre inside its detection cell, in cells), z, log w, log l,
log h, sin 2yaw, cos 2yaw (the axis), vx, vy (m/s, base_link), direction logit.

Why an axis and a direction, not (sin yaw, cos yaw): seen by cameras (and often by a LiDAR scan) a car's front
and back look alike. An L1 loss on (sin yaw, cos yaw) of an object the model cannot tell front from back is
smallest at the mean of the two answers, a short vector whose angle is noise: the axis is lost with the
direction (measured: the heading table of docs/ablation_worlds.md, "The long record so far"). The doubled angle
is one answer for both directions, so the axis is learnt wherever it can be seen, and the direction is a yes/no
question of its own (a logit, with binary cross-entropy), as in SECOND's and PointPillars' direction classifier.

The axis angle is `atan2(sin 2yaw, cos 2yaw) / 2` taken into [-pi/4, 3pi/4); the direction says whether the
heading is that angle (logit >= 0) or that angle + pi. The range's edge, where the direction label flips
between two objects that look alike and a small axis error decodes to a reversed heading, lies on the
diagonals (SECOND's and mmdetection3d's `dir_offset` of pi/4), not at +-90 degrees: crossing traffic and cars
parked across the road head there, diagonal headings are rarer on roads.

Checkpoints from before this code have `heading_code: sin_cos` (10 channels: sin yaw, cos yaw in place of the
axis, no direction). They still decode, so a released model keeps working, but nothing trains or teaches with
them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

Z = 2
LOG_SIZE = slice(3, 6)
AXIS_SIN, AXIS_COS = 6, 7  # sin 2yaw, cos 2yaw (sin yaw, cos yaw in the legacy sin_cos code)
VELOCITY = slice(8, 10)
DIRECTION = 10
BOX_CODE_SIZE = 11

AXIS_DIRECTION = "axis_direction"
SIN_COS = "sin_cos"  # legacy: decoding only
HEADING_CODES = (AXIS_DIRECTION, SIN_COS)
AXIS_RANGE_START = -math.pi / 4  # the axis angle lies in [AXIS_RANGE_START, AXIS_RANGE_START + pi)
CODE_SIZES = {AXIS_DIRECTION: BOX_CODE_SIZE, SIN_COS: 10}


def _math(x: Any) -> Any:
    """numpy for arrays, torch for tensors: the formulas below are written once for both."""
    return torch if isinstance(x, torch.Tensor) else np


def encode_heading(yaws: Any) -> tuple[Any, Any, Any]:
    """(sin 2yaw, cos 2yaw, forward): forward is True where the heading is the axis angle, not the angle + pi.

    forward is decided on the axis angle as computed from the code, so decoding gives the heading back also at
    the edge of the axis range.
    """
    xp = _math(yaws)
    sin2, cos2 = xp.sin(2.0 * yaws), xp.cos(2.0 * yaws)
    forward = xp.cos(yaws - axis_angle(sin2, cos2)) > 0
    return sin2, cos2, forward


def axis_angle(sin2: Any, cos2: Any) -> Any:
    """The axis in [-pi/4, 3pi/4) from (sin 2yaw, cos 2yaw) of any length."""
    half = _math(sin2).arctan2(sin2, cos2) / 2.0
    return (half - AXIS_RANGE_START) % math.pi + AXIS_RANGE_START


def decode_heading(sin2: Any, cos2: Any, forward: Any) -> Any:
    """The heading in [-pi, pi): the axis angle where `forward`, else the angle + pi."""
    xp = _math(sin2)
    yaw = axis_angle(sin2, cos2) + xp.where(forward, 0.0, math.pi)
    return (yaw + math.pi) % (2.0 * math.pi) - math.pi


def decode_yaws(box: torch.Tensor, heading_code: str) -> torch.Tensor:
    """Headings of box codes (..., C) as the head writes them (direction as a logit)."""
    if heading_code == SIN_COS:
        return torch.atan2(box[..., AXIS_SIN], box[..., AXIS_COS])
    return decode_heading(box[..., AXIS_SIN], box[..., AXIS_COS], box[..., DIRECTION] >= 0)


def require_trainable(heading_code: str, what: str) -> None:
    """Training and teaching use the axis code only; a legacy model can be evaluated and run, nothing more."""
    if heading_code != AXIS_DIRECTION:
        raise ValueError(f"{what} has heading_code {heading_code!r} (a model from before the axis/direction box "
                         f"code): it can be run and evaluated, not trained or used as a teacher; train a new one")
