"""Task heads on the fused BEV features (names and shapes are the contract with targets and losses).

outputs (Hd, Wd = detection grid; H, W = BEV grid; K = motion_modes; T = FORECAST_STEPS):
  heatmap        (B, 10, Hd, Wd)     CenterPoint class heatmap logits
  box            (B, 11, Hd, Wd)     off_x, off_y (cells, in [0, 1) of the peak cell), z, log w, log l, log h,
                                     sin 2yaw, cos 2yaw, vx, vy (m/s, base_link), direction logit
                                     (tinybev_ros/model/box_code.py)
  motion         (B, K*T*2, Hd, Wd)  future xy minus current centre (m); channel = (k * T + t) * 2 + {0: x, 1: y}
  motion_logits  (B, K, Hd, Wd)      mode scores (softmax over K gives the probabilities)
  map            (B, 4, H, W)        map-layer logits (MAP_CLASSES order)
  occupancy      (B, 5, H, W)        occupancy logits, now and +0.5 .. +2.0 s
  plan           (B, 6, 2)           ego waypoints (m) at +0.5 .. +3.0 s
"""

from __future__ import annotations

import torch
from torch import nn

from tinybev_ros.model.config import ModelConfig
from tinybev_ros.model.layers import conv_bn_relu
from tinybev_ros.model.planner import Planner

HEATMAP_PRIOR = 0.1  # initial foreground probability (CenterPoint/focal-loss practice: stable early training)


class ConvHead(nn.Sequential):
    def __init__(self, in_channels: int, hidden: int, out_channels: int, bias: float | None = None) -> None:
        super().__init__(conv_bn_relu(in_channels, hidden), nn.Conv2d(hidden, out_channels, 1))
        if bias is not None:
            nn.init.constant_(self[1].bias, bias)


class TaskHeads(nn.Module):
    def __init__(self, config: ModelConfig, in_channels: int) -> None:
        super().__init__()
        hidden = config.head_channels
        prior = float(torch.log(torch.tensor(HEATMAP_PRIOR / (1 - HEATMAP_PRIOR))))
        modes = config.motion_modes
        self.heatmap = ConvHead(in_channels, hidden, config.num_classes, bias=prior)
        self.box = ConvHead(in_channels, hidden, config.box_code_size)
        self.motion = ConvHead(in_channels, hidden, modes * config.forecast_steps * 2)
        self.motion_logits = ConvHead(in_channels, hidden, modes)
        self.map = ConvHead(in_channels, hidden, config.num_map_classes)
        self.occupancy = ConvHead(in_channels, hidden, config.occupancy_frames, bias=prior)
        self.planner = Planner(config, in_channels)

    def forward(self, fused: torch.Tensor, dense: torch.Tensor, command: torch.Tensor,
                ego_status: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        occupancy = self.occupancy(dense)
        return {
            "heatmap": self.heatmap(fused),
            "box": self.box(fused),
            "motion": self.motion(fused),
            "motion_logits": self.motion_logits(fused),
            "map": self.map(dense),
            "occupancy": occupancy,
            "plan": self.planner(fused, occupancy, command, ego_status),
        }
