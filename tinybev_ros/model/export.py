"""ONNX export of the student with the LSS splat index as graph inputs (no custom operators).

The command (`tinybev export-onnx`, which reads a checkpoint and also writes the rig's index) is
tinybev_ros/export_onnx.py: the model package never imports the checkpoint module, which imports the model.

The graph takes images (1, 6, 3, H, W), the three flat index vectors of a `SplatIndex` (length Q is dynamic:
it depends on the calibration), the command and, for a planner that reads it, the ego status (1, 3)
(tinybev_ros/ego_motion.py), and returns the head outputs in OUTPUT_NAMES order. The
runtime computes the index once per calibration (as the `Predictor` does) and feeds it every frame.
Uses torch's TorchScript-based exporter (the torch.export-based one needs onnxscript, which we do not ship);
the BEV pooling becomes ScatterElements(reduction="add"), hence opset >= 16.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from tinybev_ros.atomic_file import atomic_path
from tinybev_ros.geometry import CAMERA_NAMES, Rig
from tinybev_ros.model.preprocess import ResizeCrop
from tinybev_ros.model.student import TinyBEV
from tinybev_ros.model.view_transform import SplatIndex

OUTPUT_NAMES = ("heatmap", "box", "motion", "motion_logits", "map", "occupancy", "plan")
OPSET = 17


def input_names(model: TinyBEV) -> tuple[str, ...]:
    """The exported graph's inputs, in order."""
    names = ("images", "depth_index", "pixel_index", "cell_index", "command")
    return (*names, "ego_status") if model.config.ego_status else names


class _ExportGraph(nn.Module):
    def __init__(self, model: TinyBEV) -> None:
        super().__init__()
        self.model = model

    def forward(self, images, depth_index, pixel_index, cell_index, command, ego_status=None):  # noqa: ANN001, ANN201
        splat = SplatIndex(depth_index, pixel_index, cell_index)
        outputs = self.model(images, None, None, command, splat, ego_status)
        return tuple(outputs[name] for name in OUTPUT_NAMES)


def export_inputs(model: TinyBEV, images: torch.Tensor, splat: SplatIndex, command: torch.Tensor,
                  ego_status: torch.Tensor | None = None) -> tuple:
    """The positional inputs of the exported graph, in `input_names(model)` order (ego status: unknown if
    not given)."""
    inputs = (images, splat.depth_index, splat.pixel_index, splat.cell_index, command)
    if not model.config.ego_status:
        return inputs
    return (*inputs, images.new_zeros(len(images), 3) if ego_status is None else ego_status)


def export_onnx(model: TinyBEV, example: tuple, path: str | Path, opset: int = OPSET) -> Path:
    """Export `model` in eval mode to `path` atomically; `example` comes from `export_inputs`.

    The wrapper is put in eval mode itself: the exporter restores the wrapper's previous mode recursively
    afterwards, which would otherwise leave the student's BatchNorm layers in training mode.
    """
    points = {0: "points"}
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is deprecated
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks: static per config, as intended
        torch.onnx.export(
            _ExportGraph(model).eval(), example, str(tmp), dynamo=False, opset_version=opset,
            input_names=list(input_names(model)), output_names=list(OUTPUT_NAMES),
            dynamic_axes={"depth_index": points, "pixel_index": points, "cell_index": points},
        )
    return Path(path)


def rig_splat_index(model: TinyBEV, rig: Rig) -> SplatIndex:
    """The splat index of a rig's cameras at the model's input size (the Predictor's preprocessing)."""
    config = model.config
    ks, poses = [], []
    for name in CAMERA_NAMES:
        cam = rig.cameras[name]
        crop = ResizeCrop.fit_width((cam.height, cam.width), (config.image_height, config.image_width))
        ks.append(torch.tensor(crop.intrinsics(cam.intrinsic), dtype=torch.float32))
        poses.append(torch.tensor(cam.sensor_to_ego.matrix, dtype=torch.float32))
    return model.splat_index(torch.stack(ks)[None], torch.stack(poses)[None])
