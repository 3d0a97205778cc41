"""TinyBEV: the camera-only multi-task student (ResNet-18 + LSS + BEV encoder + five task heads)."""

from __future__ import annotations

import torch
from torch import nn

from tinybev_ros.model.bev_encoder import BevEncoder
from tinybev_ros.model.config import ModelConfig
from tinybev_ros.model.heads import TaskHeads
from tinybev_ros.model.view_transform import CameraBev, SplatIndex


class TinyBEV(nn.Module):
    """forward(images, intrinsics, cam_to_ego, command[, splat, ego_status]) -> outputs (`heads` has the keys).

    Inputs follow the model-batch contract: images (B, 6, 3, H, W) normalised by `preprocess`, intrinsics
    (B, 6, 3, 3) after resize/crop, cam_to_ego (B, 6, 4, 4) optical camera -> base_link, command (B,) int64,
    cameras in CAMERA_NAMES order. `splat` is the precomputed `SplatIndex` for these calibrations; without it
    the index is computed here (training, where augmentation changes K per sample). `ego_status` (B, 3) is the
    ego's (vx, vy, known) (tinybev_ros/ego_motion.py), required when the config's planner reads it.
    Extra outputs: "depth" (B, 6, D, h, w) depth-bin probabilities and "bev_features": the BEV encoder levels
    (finest first, strides 1, 2, 4, ...) followed by the fused pre-head map at det_stride.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.camera = CameraBev(config)
        self.encoder = BevEncoder(
            config.context_channels, config.bev_channels, config.bev_blocks, config.fpn_channels, config.det_stride
        )
        self.heads = TaskHeads(config, config.fpn_channels)

    def splat_index(self, intrinsics: torch.Tensor, cam_to_ego: torch.Tensor) -> SplatIndex:
        return self.camera.lift_splat.splat_index(intrinsics, cam_to_ego)

    def forward(
        self,
        images: torch.Tensor,
        intrinsics: torch.Tensor | None,
        cam_to_ego: torch.Tensor | None,
        command: torch.Tensor,
        splat: SplatIndex | None = None,
        ego_status: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        if splat is None:
            if intrinsics is None or cam_to_ego is None:
                raise ValueError("TinyBEV.forward needs intrinsics and cam_to_ego when no splat index is given")
            splat = self.splat_index(intrinsics, cam_to_ego)
        bev, depth = self.camera(images, splat)
        levels, fused, dense = self.encoder(bev)
        outputs: dict[str, torch.Tensor | list[torch.Tensor]] = dict(self.heads(fused, dense, command, ego_status))
        outputs["depth"] = depth
        outputs["bev_features"] = [*levels, fused]
        return outputs

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per part, for `tinybev params` and the model card."""
        parts = {
            "image backbone (ResNet-18)": self.camera.backbone,
            "image neck": self.camera.neck,
            "depth/context net (LSS)": self.camera.depth_net,
            "BEV encoder": self.encoder,
        }
        parts.update({f"head: {name}": module for name, module in self.heads.named_children()})
        counts = {name: sum(p.numel() for p in module.parameters()) for name, module in parts.items()}
        counts["total"] = sum(p.numel() for p in self.parameters())
        return counts


def build_student(config: ModelConfig) -> TinyBEV:
    return TinyBEV(config)
