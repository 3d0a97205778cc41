"""Planning head: command-conditioned ego waypoints, refined against the predicted occupancy.

1. An ego-centred square of the fused BEV features (`plan_window_m` wide) is average-pooled to 4x4, flattened
   and concatenated with a learned embedding of the navigation command (and, with `ego_status`, of the ego's
   velocity: tinybev_ros/ego_motion.py); an MLP predicts per-step displacements whose cumulative sum gives
   PLAN_STEPS waypoints (cumsum keeps early steps small and the path smooth).
2. Collision-aware refinement: each waypoint at time t looks at the predicted occupancy of the frame nearest
   t (frames beyond the last predicted one reuse the last), smoothed with a 5-cell box filter so the gradient
   reaches a car-width away, and steps down its finite-difference gradient: p <- p - step * grad(occ)(p).
   This is differentiable (bilinear `grid_sample`), batched (no Python loop over samples or waypoints, only
   over the fixed `plan_refine_iters`), ONNX-exportable (GridSample, opset 16+), and its step is learned.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from tinybev_ros.ego_motion import EGO_STATUS_SIZE
from tinybev_ros.model.config import ModelConfig

SMOOTH_KERNEL = 5
EGO_SPEED_SCALE = 0.1  # m/s -> network input (urban speeds ~ 0-15 m/s)


class Planner(nn.Module):
    def __init__(self, config: ModelConfig, in_channels: int) -> None:
        super().__init__()
        det = config.det_grid
        cells = max(4, int(round(config.plan_window_m / det.resolution / 4)) * 4)
        centre_row = int(round((0.0 - det.x_min) / det.resolution))
        centre_col = int(round((0.0 - det.y_min) / det.resolution))
        self.rows = (centre_row - cells // 2, centre_row + cells // 2)
        self.cols = (centre_col - cells // 2, centre_col + cells // 2)
        size_x, size_y = det.shape
        if self.rows[0] < 0 or self.cols[0] < 0 or self.rows[1] > size_x or self.cols[1] > size_y:
            raise ValueError(f"model config {config.name}: plan_window_m {config.plan_window_m} exceeds the grid")
        self.pool_kernel = cells // 4
        self.steps = config.plan_steps
        self.iters = config.plan_refine_iters
        self.grid = config.grid
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, 64, 1), nn.ReLU(inplace=True))
        self.command_embedding = nn.Embedding(3, 32)
        self.ego_embedding = (nn.Sequential(nn.Linear(EGO_STATUS_SIZE, 32), nn.ReLU(inplace=True))
                              if config.ego_status else None)
        self.mlp = nn.Sequential(
            nn.Linear(64 * 16 + 32 + (32 if config.ego_status else 0), config.plan_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(config.plan_hidden, config.plan_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(config.plan_hidden, self.steps * 2),
        )
        self.log_step = nn.Parameter(torch.tensor(math.log(config.plan_refine_step)))
        # Waypoint i is at (i + 1) * 0.5 s and occupancy frame f at f * 0.5 s (predictions.STEP_SECONDS).
        frames = [min(i + 1, config.occupancy_frames - 1) for i in range(self.steps)]
        self.register_buffer("frames", torch.tensor(frames, dtype=torch.long), persistent=False)
        delta = self.grid.resolution
        offsets = [[0.0, 0.0], [delta, 0.0], [-delta, 0.0], [0.0, delta], [0.0, -delta]]
        self.register_buffer("offsets", torch.tensor(offsets), persistent=False)
        g = self.grid  # metres -> grid_sample's [-1, 1] (align_corners=False: -1 and 1 are the outer cell edges)
        self.register_buffer("grid_low", torch.tensor([g.x_min, g.y_min]), persistent=False)
        self.register_buffer("grid_scale", torch.tensor([2.0 / (g.x_max - g.x_min), 2.0 / (g.y_max - g.y_min)]),
                             persistent=False)

    def initial_plan(self, fused: torch.Tensor, command: torch.Tensor,
                     ego_status: torch.Tensor | None = None) -> torch.Tensor:
        crop = fused[:, :, self.rows[0] : self.rows[1], self.cols[0] : self.cols[1]]
        pooled = nn.functional.avg_pool2d(self.reduce(crop), self.pool_kernel)
        parts = [pooled.flatten(1), self.command_embedding(command).to(pooled.dtype)]
        if self.ego_embedding is not None:
            if ego_status is None:
                raise ValueError("this planner reads the ego status (vx, vy, known): pass ego_status (B, 3)")
            scale = torch.tensor([EGO_SPEED_SCALE, EGO_SPEED_SCALE, 1.0], dtype=pooled.dtype, device=pooled.device)
            parts.append(self.ego_embedding(ego_status.to(pooled.dtype) * scale))
        return self.mlp(torch.cat(parts, dim=1)).view(-1, self.steps, 2).cumsum(dim=1)

    def refine(self, plan: torch.Tensor, occupancy_logits: torch.Tensor) -> torch.Tensor:
        batch = plan.shape[0]
        occ = nn.functional.avg_pool2d(
            occupancy_logits.sigmoid(), SMOOTH_KERNEL, stride=1, padding=SMOOTH_KERNEL // 2, count_include_pad=False
        )
        occ = occ.index_select(1, self.frames).reshape(batch * self.steps, 1, *occ.shape[-2:])
        step = self.log_step.exp()
        delta = self.offsets[1, 0]
        for _ in range(self.iters):
            samples = plan.reshape(batch * self.steps, 1, 1, 2) + self.offsets.view(1, 1, 5, 2).to(plan.dtype)
            norm = (samples - self.grid_low.to(plan.dtype)) * self.grid_scale.to(plan.dtype) - 1.0
            # grid_sample's last dim is (along W, along H) = (y, x): rows of the grid are x.
            values = nn.functional.grid_sample(occ, norm.flip(-1), mode="bilinear", align_corners=False)
            values = values.view(batch, self.steps, 5)
            grad = torch.stack([values[..., 1] - values[..., 2], values[..., 3] - values[..., 4]], dim=-1)
            plan = plan - step * grad / (2.0 * delta)
        return plan

    def forward(self, fused: torch.Tensor, occupancy_logits: torch.Tensor, command: torch.Tensor,
                ego_status: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, Hd, Wd) features, (B, T, H, W) occupancy logits, (B,) command, (B, 3) ego status ->
        (B, PLAN_STEPS, 2) metres."""
        return self.refine(self.initial_plan(fused, command, ego_status), occupancy_logits)
