"""Oriented 2D boxes in the ground plane: corners and overlap tests shared by planning collision and drawing."""

from __future__ import annotations

import numpy as np


def box_corners(centers_xy: np.ndarray, lengths: np.ndarray, widths: np.ndarray, yaws: np.ndarray) -> np.ndarray:
    """(N, 4, 2) corners, counter-clockwise, of boxes whose length lies along their heading."""
    centers_xy = np.atleast_2d(np.asarray(centers_xy, dtype=float))
    half_l = np.asarray(lengths, dtype=float).reshape(-1) / 2.0
    half_w = np.asarray(widths, dtype=float).reshape(-1) / 2.0
    yaws = np.asarray(yaws, dtype=float).reshape(-1)
    local = np.stack(
        [np.stack([half_l, half_w], -1), np.stack([-half_l, half_w], -1),
         np.stack([-half_l, -half_w], -1), np.stack([half_l, -half_w], -1)], axis=1)
    cos, sin = np.cos(yaws)[:, None], np.sin(yaws)[:, None]
    x = local[..., 0] * cos - local[..., 1] * sin
    y = local[..., 0] * sin + local[..., 1] * cos
    return np.stack([x, y], -1) + centers_xy[:, None, :]


def boxes_overlap(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """(M,) bool: does the convex quadrilateral `box` (4, 2) overlap each of `others` (M, 4, 2)?

    Separating-axis test on the edge normals of both rectangles: exact for rectangles, no rasterisation
    error, so a hand-placed obstacle collides exactly when the geometry says it does. Touching counts as no
    overlap.
    """
    others = np.asarray(others, dtype=float).reshape(-1, 4, 2)
    if others.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    box = np.asarray(box, dtype=float)
    overlap = np.ones(others.shape[0], dtype=bool)
    edges = [np.broadcast_to(box[1] - box[0], others[:, 0].shape), np.broadcast_to(box[2] - box[1], others[:, 0].shape),
             others[:, 1] - others[:, 0], others[:, 2] - others[:, 1]]
    for edge in edges:
        axis = np.stack([-edge[:, 1], edge[:, 0]], -1)  # (M, 2) normal
        proj_a = np.einsum("kd,md->mk", box, axis)  # (M, 4)
        proj_b = np.einsum("mkd,md->mk", others, axis)
        separated = (proj_a.max(1) <= proj_b.min(1) + 1e-9) | (proj_b.max(1) <= proj_a.min(1) + 1e-9)
        overlap &= ~separated
    return overlap
