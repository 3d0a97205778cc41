"""Raw head outputs -> one `Predictions` per sample (numpy, base_link).

Detection is CenterPoint-style: sigmoid heatmap, a cell is a peak where it equals the max of its
`peak_kernel` neighbourhood (this replaces NMS), top `max_detections` peaks over all classes, then the score
threshold. The box code at a peak: tinybev_ros/model/box_code.py. Motion modes are read at the same cell and are
relative to the box centre; their probabilities are the softmax of the mode logits at that cell.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from tinybev_ros.model import box_code
from tinybev_ros.model.config import ModelConfig
from tinybev_ros.predictions import Predictions

MAX_LOG_SIZE = 4.0  # exp(4) = 55 m: bounds sizes an untrained head may produce


def _gather(feature: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """(B, C, Hd, Wd) features at (B, n) flat cells -> (B, n, C)."""
    flat = feature.flatten(2)
    return flat.gather(2, cells.unsqueeze(1).expand(-1, flat.shape[1], -1)).transpose(1, 2)


@torch.no_grad()
def decode(
    outputs: dict, config: ModelConfig, stamps: Sequence[int], commands: Sequence[int]
) -> list[Predictions]:
    """Decode a batch of outputs (any dtype/device) for samples stamped `stamps` planned with `commands`."""
    heat = outputs["heatmap"].float().sigmoid()
    batch, classes, hd, wd = heat.shape
    if len(stamps) != batch or len(commands) != batch:
        raise ValueError(f"decode: batch of {batch} but {len(stamps)} stamps and {len(commands)} commands")
    kernel = config.decode.peak_kernel
    peaks = heat * (torch.nn.functional.max_pool2d(heat, kernel, 1, kernel // 2) == heat)
    scores, flat = peaks.flatten(1).topk(min(config.decode.max_detections, classes * hd * wd), dim=1)
    labels, cells = flat // (hd * wd), flat % (hd * wd)
    rows, cols = (cells // wd).float(), (cells % wd).float()
    box = _gather(outputs["box"].float(), cells)
    det = config.det_grid
    x = det.x_min + (rows + box[..., 0]) * det.resolution
    y = det.y_min + (cols + box[..., 1]) * det.resolution
    centers = torch.stack([x, y, box[..., box_code.Z]], dim=-1)
    sizes = box[..., box_code.LOG_SIZE].clamp(max=MAX_LOG_SIZE).exp()
    yaws = box_code.decode_yaws(box, config.heading_code)
    modes, steps = config.motion_modes, config.forecast_steps
    motion = _gather(outputs["motion"].float(), cells).view(batch, -1, modes, steps, 2)
    forecasts = motion + centers[:, :, None, None, :2]
    mode_probs = _gather(outputs["motion_logits"].float(), cells).softmax(dim=-1)
    map_probs = outputs["map"].float().sigmoid().cpu().numpy()
    occupancy = outputs["occupancy"].float().sigmoid().cpu().numpy()
    plan = outputs["plan"].float().cpu().numpy()
    velocities = box[..., box_code.VELOCITY]
    per_box = [t.cpu().numpy() for t in (scores, labels, centers, sizes, yaws, velocities, forecasts, mode_probs)]
    results = []
    for b in range(batch):
        score, label, center, size, yaw, velocity, forecast, prob = (a[b] for a in per_box)
        keep = score >= config.decode.score_threshold
        results.append(
            Predictions(
                stamp_ns=int(stamps[b]),
                centers=center[keep].astype(np.float64),
                sizes_wlh=size[keep].astype(np.float64),
                yaws=yaw[keep].astype(np.float64),
                velocities=velocity[keep].astype(np.float64),
                scores=score[keep].astype(np.float64),
                labels=label[keep].astype(np.int64),
                track_ids=np.full(int(keep.sum()), -1, dtype=np.int64),
                forecasts=forecast[keep].astype(np.float64),
                forecast_probs=prob[keep].astype(np.float64),
                map_probs=map_probs[b],
                occupancy=occupancy[b],
                ego_plan=plan[b].astype(np.float64),
                command=int(commands[b]),
                grid=config.grid,
            )
        )
    return results
