"""Multi-scale BEV encoder: ResNet-style levels at strides 1, 2, 4, ... of the grid plus FPN-like fusion.

The fused map at `det_stride` feeds detection, motion and planning; a full-resolution map (fused, upsampled,
plus the finest level) feeds the dense heads (map segmentation, occupancy) whose targets live on the grid.
All levels and the fused map are returned: distillation matches them against the teacher's.
"""

from __future__ import annotations

import torch
from torch import nn

from tinybev_ros.model.backbone import BasicBlock
from tinybev_ros.model.layers import conv_bn_relu


def _level(in_channels: int, out_channels: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [BasicBlock(in_channels, out_channels, stride)]
    layers += [BasicBlock(out_channels, out_channels) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def _resize(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if x.shape[-2:] == like.shape[-2:]:
        return x
    return nn.functional.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class BevEncoder(nn.Module):
    """BEV features (B, C_in, X, Y) -> levels (finest first), fused map at `det_stride`, full-resolution map."""

    def __init__(
        self, in_channels: int, channels: tuple[int, ...], blocks: tuple[int, ...], out_channels: int, det_stride: int
    ) -> None:
        super().__init__()
        self.det_level = det_stride.bit_length() - 1
        self.stem = conv_bn_relu(in_channels, channels[0])
        pairs = enumerate(zip(channels, blocks, strict=True))
        self.levels = nn.ModuleList(_level(channels[max(i - 1, 0)], c, n, 1 if i == 0 else 2) for i, (c, n) in pairs)
        self.laterals = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in channels[self.det_level :])
        self.fuse = conv_bn_relu(out_channels, out_channels)
        self.dense_lateral = nn.Conv2d(channels[0], out_channels, 1) if self.det_level > 0 else None
        self.dense_fuse = conv_bn_relu(out_channels, out_channels) if self.det_level > 0 else None

    def forward(self, bev: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        x = self.stem(bev)
        levels = []
        for level in self.levels:
            x = level(x)
            levels.append(x)
        target = levels[self.det_level]
        fused = sum(_resize(lat(f), target) for lat, f in zip(self.laterals, levels[self.det_level :], strict=True))
        fused = self.fuse(fused)
        if self.dense_lateral is None:
            return levels, fused, fused
        dense = self.dense_fuse(_resize(fused, levels[0]) + self.dense_lateral(levels[0]))
        return levels, fused, dense
