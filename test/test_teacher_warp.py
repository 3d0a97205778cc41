"""A cached teacher's maps moved by a BEV augmentation say what the teacher says about the moved scene."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tinybev_ros.geometry import BevGrid
from tinybev_ros.model.box_code import BOX_CODE_SIZE, encode_heading
from training.bev_augmentation import BevTransform
from training.teachers.base import TeacherOutput
from training.teachers.bev_warp import OUTSIDE_LOGIT, warp_teacher_output

GRID = BevGrid(-50.0, 50.0, -50.0, 50.0, 1.0)
BOXES = [  # x, y, z, w, l, h, yaw, vx, vy
    (12.3, -7.6, 0.9, 1.9, 4.5, 1.6, 0.4, 6.0, 1.0),
    (-20.4, 15.2, 1.1, 2.5, 9.0, 3.0, -2.0, 0.0, -3.0),
    (3.7, 30.1, 0.8, 0.6, 0.7, 1.7, 1.2, 1.0, 0.5),
]


def code_map(boxes, grid: BevGrid = GRID, axis_length: float = 1.0) -> torch.Tensor:
    """(1, 11, H, W) box codes as a teacher regresses them: every cell within one of a box's cell points at it, sure
    of its direction, with an axis vector of `axis_length` (its confidence)."""
    out = torch.zeros(1, BOX_CODE_SIZE, *grid.shape)
    for x, y, z, w, length, h, yaw, vx, vy in boxes:
        u, v = (x - grid.x_min) / grid.resolution, (y - grid.y_min) / grid.resolution
        for row in range(int(u) - 1, int(u) + 2):
            for col in range(int(v) - 1, int(v) + 2):
                sin2, cos2, forward = encode_heading(np.float64(yaw))
                out[0, :, row, col] = torch.tensor([u - row, v - col, z, np.log(w), np.log(length), np.log(h),
                                                    sin2 * axis_length, cos2 * axis_length, vx, vy,
                                                    8.0 if forward else -8.0])
    return out


def moved_boxes(transform: BevTransform):
    out = []
    for x, y, z, w, length, h, yaw, vx, vy in BOXES:
        (px, py, pz), = transform.points(np.array([[x, y, z]]))
        s = transform.scale
        (mvx, mvy), = transform.vectors_xy(np.array([[vx, vy]]))
        out.append((px, py, pz, w * s, length * s, h * s, float(transform.headings(np.array([yaw]))[0]), mvx, mvy))
    return out


def teacher_of(boxes, plan: torch.Tensor | None = None, axis_length: float = 1.0) -> TeacherOutput:
    box = code_map(boxes, axis_length=axis_length)
    heat = torch.full((1, 10, *GRID.shape), -5.0)
    for x, y, *_ in boxes:
        heat[0, 0, int(x - GRID.x_min), int(y - GRID.y_min)] = 5.0
    motion = torch.zeros(1, 4, *GRID.shape)  # 2 waypoints: displacement = velocity * (0.5, 1.0) s
    motion[0, 0:2], motion[0, 2:4] = box[0, 8:10] * 0.5, box[0, 8:10] * 1.0
    return TeacherOutput(features=[box[:, :3].clone(), box[:, :3, ::2, ::2].clone()],
                         outputs={"heatmap": heat, "box": box, "motion": motion,
                                  "plan": plan if plan is not None else torch.tensor([[[5.0, 0.0], [10.0, 1.0]]])})


def peak_cells(teacher: TeacherOutput) -> list[tuple[int, int]]:
    heat = teacher.outputs["heatmap"][0, 0]
    return [tuple(int(i) for i in cell) for cell in torch.nonzero(heat > 0)]


def test_identity_changes_nothing_and_a_mirror_flips_the_maps():
    teacher = teacher_of(BOXES)
    assert warp_teacher_output(teacher, torch.eye(3)[None], GRID) is teacher
    mirror = BevTransform.compose(flip_x=False, flip_y=True, rotation_rad=0.0, scale=1.0)
    moved = warp_teacher_output(teacher, torch.tensor(mirror.matrix, dtype=torch.float32)[None], GRID)
    for got, want in zip(moved.features, teacher.features, strict=True):
        torch.testing.assert_close(got, want.flip(-1), atol=1e-4, rtol=1e-4)  # bilinear at cell centres
    torch.testing.assert_close(moved.outputs["heatmap"], teacher.outputs["heatmap"].flip(-1), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(moved.outputs["plan"], teacher.outputs["plan"] * torch.tensor([1.0, -1.0]))


@pytest.mark.parametrize("flip_x, degrees", [(False, 20.0), (True, 20.0), (False, 75.0), (False, -160.0),
                                             (True, 100.0)])
def test_moved_box_and_motion_codes_decode_to_the_moved_boxes(flip_x: bool, degrees: float):
    """The direction logit flips where a heading is carried across the edge of the axis range and only there (a
    20-degree turn keeps every box's direction label, the others flip some or all); the axis keeps its length."""
    transform = BevTransform.compose(flip_x=flip_x, flip_y=False, rotation_rad=np.radians(degrees), scale=1.04)
    bev = torch.tensor(transform.matrix, dtype=torch.float32)[None]
    moved = warp_teacher_output(teacher_of(BOXES, axis_length=0.6), bev, GRID)
    expected = code_map(moved_boxes(transform), axis_length=0.6)
    checked = 0
    for x, y, *_, vx, vy in moved_boxes(transform):
        row, col = int(x - GRID.x_min), int(y - GRID.y_min)
        got, want = moved.outputs["box"][0, :, row, col], expected[0, :, row, col]
        torch.testing.assert_close(got[:6], want[:6], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got[6:], want[6:], atol=1e-4, rtol=1e-4)  # axis, velocity, direction
        displacement = moved.outputs["motion"][0, 2:4, row, col]  # the 1 s waypoint: the moved velocity
        torch.testing.assert_close(displacement, torch.tensor([vx, vy], dtype=torch.float32), atol=1e-4, rtol=1e-4)
        # The peak moved too: bilinear sampling gives some cell nearby at least a quarter of it (logit 5 over -5).
        assert moved.outputs["heatmap"][0, 0, row - 1: row + 2, col - 1: col + 2].max() >= -2.5
        checked += 1
    assert checked == len(BOXES)
    # Where the moved view has no source (corners), the teacher sees nothing, not probability 0.5.
    assert moved.outputs["heatmap"][0, 0, 0, 0] == OUTSIDE_LOGIT
    assert peak_cells(moved)


def test_cells_moved_in_from_beyond_the_grid_are_marked_unseen():
    """A 45 degree turn brings the corners of the raster from outside the teacher's grid: coverage 0 there (not
    imitated), 1 where the whole cell came from inside, and no coverage at all for an un-moved batch."""
    teacher = teacher_of(BOXES)
    assert warp_teacher_output(teacher, torch.eye(3)[None], GRID).coverage is None
    turn = BevTransform.compose(flip_x=False, flip_y=False, rotation_rad=np.radians(45.0), scale=1.0)
    moved = warp_teacher_output(teacher, torch.tensor(turn.matrix, dtype=torch.float32)[None], GRID)
    coverage = moved.coverage[0, 0]
    assert coverage.shape == GRID.shape
    assert float(coverage[50, 50]) == pytest.approx(1.0) and float(coverage[0, 0]) == 0.0
    centres = torch.stack(torch.meshgrid(torch.arange(100.0) - 49.5, torch.arange(100.0) - 49.5, indexing="ij"))
    inside = (centres.abs().sum(0) <= 50.0 * np.sqrt(2.0) - 1.0)  # the turned square, a cell away from its edge
    outside = (centres.abs().sum(0) >= 50.0 * np.sqrt(2.0) + 1.0)
    assert bool((coverage[inside] > 0.999).all()) and bool((coverage[outside] == 0.0).all())
    # the four corners beyond |x| + |y| = 50 sqrt(2): triangles with legs 100 - 50 sqrt(2), 17 % of the raster
    assert 0.15 < float((coverage == 0).float().mean()) < 0.2


def test_the_warp_computes_in_float32_inside_a_mixed_precision_step():
    """Distillation steps run under bf16 (CPU) or fp16 (CUDA) autocast; the moved teacher is a target and must come
    out as in float32 (bf16 rounded box centres 50 m out by up to 0.25 m, a quarter of a cell)."""
    far = [(44.3, -41.6, 0.9, 1.9, 4.5, 1.6, 0.4, 6.0, 1.0), *BOXES]
    transform = BevTransform.compose(flip_x=False, flip_y=True, rotation_rad=np.radians(7.0), scale=0.97)
    bev = torch.tensor(transform.matrix, dtype=torch.float32)[None]
    plain = warp_teacher_output(teacher_of(far), bev, GRID)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = warp_teacher_output(teacher_of(far), bev, GRID)
    for name, value in plain.outputs.items():
        assert mixed.outputs[name].dtype == torch.float32
        torch.testing.assert_close(mixed.outputs[name], value, atol=0.0, rtol=0.0)
    for got, want in zip(mixed.features, plain.features, strict=True):
        torch.testing.assert_close(got, want, atol=0.0, rtol=0.0)
