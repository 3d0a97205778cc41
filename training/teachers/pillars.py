"""LiDAR branch of the teacher: points -> pillar features on the BEV grid (PointPillars-style, vectorised).

Each point gets [x, y, z, intensity / 255, ring / 32, x - cell centre x, y - cell centre y] (the offsets tell
the network where inside its pillar the point is; the scales bring nuScenes intensity 0-255 and ring 0-31 near
unit range), and with `sweeps: 2` its time lag (0 for the keyframe sweep, ~0.5 s for the earlier one). A shared
per-point MLP lifts them to C channels; each pillar keeps the channel-wise max over its points (one
`scatter_reduce`, no Python loop) plus log(1 + point count); two convolutions follow.

With two sweeps each sweep is pooled into its own pillar map and the two maps are stacked as channels (as BEVDet4D
stacks two frames' BEV features), not max-pooled together with the lag as a feature (CenterPoint's input): a moving
object is then two displaced footprints that a convolution compares directly. Pooled together, the lag must first
be learnt into the point features before the max keeps the two sweeps apart; a teacher trained so for 4000 steps
here saw no motion at all. Pooled apart, a 1000-step probe does not see it yet either: the sweeps being apart
is necessary, not sufficient (docs/ablation_worlds.md, "Velocity").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tinybev_ros.geometry import BevGrid
from tinybev_ros.model.layers import conv_bn_relu

INTENSITY_SCALE = 255.0
RING_SCALE = 32.0


@dataclass
class PillarConfig:
    point_channels: int = 64  # per-point MLP width = pillar feature width
    bev_channels: int = 64  # LiDAR BEV channels handed to the fusion
    z_min: float = -5.0  # points outside [z_min, z_max) in base_link are ignored
    z_max: float = 3.0
    sweeps: int = 1  # 1: the keyframe sweep; 2: also the sweep ~0.5 s earlier, pooled into a map of its own

    def __post_init__(self) -> None:
        if self.sweeps not in (1, 2):
            raise ValueError(f"lidar.sweeps must be 1 or 2, got {self.sweeps}")


class PillarEncoder(nn.Module):
    def __init__(self, config: PillarConfig, grid: BevGrid) -> None:
        super().__init__()
        self.config = config
        self.grid = grid
        c = config.point_channels
        features = 7 + (config.sweeps > 1)
        self.point_net = nn.Sequential(nn.Linear(features, c, bias=False), nn.BatchNorm1d(c), nn.ReLU(inplace=True),
                                       nn.Linear(c, c, bias=False), nn.BatchNorm1d(c), nn.ReLU(inplace=True))
        self.bev = nn.Sequential(conv_bn_relu((c + 1) * config.sweeps, config.bev_channels),
                                 conv_bn_relu(config.bev_channels, config.bev_channels))

    def forward(self, points: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """points (B, P, 6) x, y, z, intensity, ring, time lag in base_link; mask (B, P) -> (B, bev_channels, X, Y).

        Single-sweep models ignore the time lag (and accept (B, P, 5) points); two-sweep ones put a point with a
        positive lag in the earlier sweep's map (the keyframe sweep's lag is 0)."""
        g = self.grid
        size_x, size_y = g.shape
        batch = points.shape[0]
        rows = torch.floor((points[..., 0] - g.x_min) / g.resolution).long()
        cols = torch.floor((points[..., 1] - g.y_min) / g.resolution).long()
        z = points[..., 2]
        valid = mask & (rows >= 0) & (rows < size_x) & (cols >= 0) & (cols < size_y)
        valid &= (z >= self.config.z_min) & (z < self.config.z_max)
        b_idx, p_idx = torch.nonzero(valid, as_tuple=True)
        pts = points[b_idx, p_idx].float()
        r, c = rows[b_idx, p_idx], cols[b_idx, p_idx]
        centre_x = g.x_min + (r.float() + 0.5) * g.resolution
        centre_y = g.y_min + (c.float() + 0.5) * g.resolution
        feats = torch.stack([pts[:, 0], pts[:, 1], pts[:, 2], pts[:, 3] / INTENSITY_SCALE, pts[:, 4] / RING_SCALE,
                             pts[:, 0] - centre_x, pts[:, 1] - centre_y]
                            + ([pts[:, 5]] if self.config.sweeps > 1 else []), dim=1)
        channels, sweeps = self.config.point_channels, self.config.sweeps
        cells = batch * sweeps * size_x * size_y
        sweep = (pts[:, 5] > 0).long() if sweeps > 1 else torch.zeros_like(r)
        cell = ((b_idx * sweeps + sweep) * size_x + r) * size_y + c
        pooled = torch.zeros(cells, channels, device=points.device)
        counts = torch.zeros(cells, device=points.device)
        # BatchNorm1d needs two points in training (running statistics suffice in eval); an empty sweep leaves
        # the map empty.
        if pts.shape[0] > 1 or (pts.shape[0] == 1 and not self.training):
            lifted = self.point_net(feats).float()  # >= 0 after ReLU, so max-pooling into zeros is exact
            pooled = pooled.scatter_reduce(0, cell.unsqueeze(1).expand(-1, channels), lifted, reduce="amax",
                                           include_self=True)
            counts = counts.index_add(0, cell, torch.ones_like(cell, dtype=torch.float32))
        elif self.training:  # keep the point net in the graph (zero gradient): DDP waits for every parameter's
            pooled = pooled + 0.0 * sum(p.sum() for p in self.point_net.parameters())
        out = torch.cat([pooled, torch.log1p(counts).unsqueeze(1)], dim=1)
        bev = out.view(batch, sweeps, size_x, size_y, channels + 1).permute(0, 1, 4, 2, 3)
        return self.bev(bev.reshape(batch, sweeps * (channels + 1), size_x, size_y))
