"""Lift-Splat-Shoot view transform: image features -> per-pixel depth distribution x context -> BEV grid.

Why the splat looks the way it does:
- The frustum-to-BEV mapping depends only on the calibration (K after preprocessing, camera->base_link), so it
  is computed once into a `SplatIndex` (flat indices) and cached by the `Predictor` until the calibration
  changes. Training recomputes it per batch (augmentation changes K) with the same vectorised code.
- Only frustum points that fall inside the grid (and the z band) are kept, and each kept point's feature is
  built as depth[p] * context[pixel(p)] from two gathers, so the (B, N, D, h, w, C) outer product is never
  materialised.
- Pooling is one vectorised sum: `index_add` in eager mode; while exporting to ONNX it is written as
  `scatter_add`, which becomes a standard ScatterElements(reduction="add") (opset >= 16). Measured with
  torch 2.13's TorchScript exporter: `index_add` with repeated indices is refused, and
  `index_put(accumulate=True)` is exported as a plain ScatterND that silently drops duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tinybev_ros.model.backbone import ResNet18
from tinybev_ros.model.config import ModelConfig
from tinybev_ros.model.layers import conv_bn_relu


@dataclass
class SplatIndex:
    """Which frustum points go to which BEV cell, for one batch of calibrations (all indices flat, int64).

    depth_index: (Q,) into depth probabilities flattened over (B, N, D, h, w)
    pixel_index: (Q,) into context rows flattened over (B, N, h, w)
    cell_index:  (Q,) into BEV cells flattened over (B, X, Y) (X = rows along x forward, Y = cols along y left)
    """

    depth_index: torch.Tensor
    pixel_index: torch.Tensor
    cell_index: torch.Tensor


class ImageNeck(nn.Module):
    """Fuses ResNet layer4 (upsampled) into layer3: stride-16 features with context from stride 32."""

    def __init__(self, c3_channels: int, c4_channels: int, out_channels: int) -> None:
        super().__init__()
        self.lateral3 = nn.Conv2d(c3_channels, out_channels, 1)
        self.lateral4 = nn.Conv2d(c4_channels, out_channels, 1)
        self.fuse = conv_bn_relu(out_channels, out_channels)

    def forward(self, c3: torch.Tensor, c4: torch.Tensor) -> torch.Tensor:
        up = nn.functional.interpolate(self.lateral4(c4), size=c3.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(self.lateral3(c3) + up)


class DepthNet(nn.Module):
    """Per image-feature pixel: logits over the depth bins and the context vector that gets lifted."""

    def __init__(self, in_channels: int, depth_bins: int, context_channels: int) -> None:
        super().__init__()
        self.depth_bins = depth_bins
        self.body = conv_bn_relu(in_channels, in_channels)
        self.out = nn.Conv2d(in_channels, depth_bins + context_channels, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.out(self.body(x))
        return y[:, : self.depth_bins].softmax(dim=1), y[:, self.depth_bins :]


class LiftSplat(nn.Module):
    """Frustum geometry and BEV pooling (no learnable parameters)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        stride = config.feature_stride
        h, w = config.image_height // stride, config.image_width // stride
        d = config.num_depth_bins
        self.frustum_shape = (d, h, w)

    def frustum(self, device: torch.device) -> torch.Tensor:
        """(D, h, w, 3) = (u d, v d, d) of every frustum cell centre, float64: K^-1 of it is the optical-frame point.

        u, v are feature-cell centres in input pixels (integer = pixel centre), d the depth-bin centres. Built on
        demand rather than stored as a buffer, so `model.half()` cannot round it (u d reaches 4e4, where fp16
        steps are 32).
        """
        d, h, w = self.frustum_shape
        stride, config = self.config.feature_stride, self.config
        us = torch.arange(w, dtype=torch.float64, device=device) * stride + (stride - 1) / 2.0
        vs = torch.arange(h, dtype=torch.float64, device=device) * stride + (stride - 1) / 2.0
        ds = config.depth_min + (torch.arange(d, dtype=torch.float64, device=device) + 0.5) * config.depth_step
        dd, vv, uu = torch.meshgrid(ds, vs, us, indexing="ij")
        return torch.stack([uu * dd, vv * dd, dd], dim=-1)

    def points(self, intrinsics: torch.Tensor, cam_to_ego: torch.Tensor) -> torch.Tensor:
        """base_link coordinates (B, N, D, h, w, 3), float64, of every frustum cell centre.

        In float64 with autocast off: under mixed precision einsum would run in fp16, whose 1e-3 relative
        error is several centimetres at 60 m and would move points across cell borders.
        """
        with torch.autocast(device_type=intrinsics.device.type, enabled=False):
            k_inv = torch.linalg.inv(intrinsics.double())
            rot = cam_to_ego[..., :3, :3].double() @ k_inv  # (B, N, 3, 3)
            pts = torch.einsum("bnij,dhwj->bndhwi", rot, self.frustum(intrinsics.device))
            return pts + cam_to_ego[..., None, None, None, :3, 3].double()

    def splat_index(self, intrinsics: torch.Tensor, cam_to_ego: torch.Tensor) -> SplatIndex:
        """Precompute the pooling indices for these calibrations ((B, N, 3, 3) K, (B, N, 4, 4) camera->ego)."""
        grid = self.config.grid
        pts = self.points(intrinsics, cam_to_ego)
        cams = pts.shape[1]
        rows = torch.floor((pts[..., 0] - grid.x_min) / grid.resolution).long()
        cols = torch.floor((pts[..., 1] - grid.y_min) / grid.resolution).long()
        size_x, size_y = grid.shape
        z = pts[..., 2]
        valid = (rows >= 0) & (rows < size_x) & (cols >= 0) & (cols < size_y)
        valid &= (z >= self.config.z_min) & (z < self.config.z_max)
        point = torch.nonzero(valid.reshape(-1), as_tuple=False).squeeze(1)
        d, h, w = self.frustum_shape
        per_cam = d * h * w
        cam_index = point // per_cam  # b * N + n
        pixel = cam_index * (h * w) + point % (h * w)
        b = cam_index // cams
        cell = b * (size_x * size_y) + rows.reshape(-1)[point] * size_y + cols.reshape(-1)[point]
        return SplatIndex(point, pixel, cell)

    def forward(self, depth: torch.Tensor, context: torch.Tensor, splat: SplatIndex) -> torch.Tensor:
        """Pool depth (B, N, D, h, w) x context (B, N, C, h, w) into BEV features (B, C, X, Y), channels_last.

        Always in float32, also under mixed precision: a cell sums hundreds of frustum points, and bf16's 8-bit
        mantissa would round the small ones away.
        """
        batch, channels = context.shape[0], context.shape[2]
        size_x, size_y = self.config.grid.shape
        with torch.autocast(device_type=depth.device.type, enabled=False):
            rows = context.float().permute(0, 1, 3, 4, 2).reshape(-1, channels)
            feats = depth.float().reshape(-1)[splat.depth_index].unsqueeze(1) * rows[splat.pixel_index]
            out = feats.new_zeros(batch * size_x * size_y, channels)
            if torch.onnx.is_in_onnx_export():
                out = out.scatter_add(0, splat.cell_index.unsqueeze(1).expand(-1, channels), feats)
            else:
                out = out.index_add(0, splat.cell_index, feats)
        # (B, X, Y, C) memory seen as (B, C, X, Y) is already the channels_last layout: no copy.
        return out.view(batch, size_x, size_y, channels).permute(0, 3, 1, 2)


class CameraBev(nn.Module):
    """Six images -> BEV features: ResNet-18, neck, depth/context net, lift-splat."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.backbone = ResNet18()
        self.neck = ImageNeck(*ResNet18.out_channels, config.neck_channels)
        self.depth_net = DepthNet(config.neck_channels, config.num_depth_bins, config.context_channels)
        self.lift_splat = LiftSplat(config)

    def forward(self, images: torch.Tensor, splat: SplatIndex) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, N, 3, H, W) -> BEV (B, C, X, Y) and depth probabilities (B, N, D, h, w)."""
        batch, cams = images.shape[:2]
        flat = images.flatten(0, 1)
        if self.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last):
            flat = flat.contiguous(memory_format=torch.channels_last)  # the model was put in channels_last
        c3, c4 = self.backbone(flat)
        depth, context = self.depth_net(self.neck(c3, c4))
        depth = depth.view(batch, cams, *depth.shape[1:])
        context = context.view(batch, cams, *context.shape[1:])
        return self.lift_splat(depth, context, splat), depth
