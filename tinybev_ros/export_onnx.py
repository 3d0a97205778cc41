"""`tinybev export-onnx --checkpoint C --out student.onnx [--rig RIG.json]`: the student as ONNX (model/export.py)
and the rig's splat index as `student.splat.safetensors` (depth_index, pixel_index, cell_index; int64), so a
runtime without PyTorch can feed the graph directly. Its metadata names the model's `heading_code`, which says how
to read the box output's heading channels (tinybev_ros/model/box_code.py).
"""

from __future__ import annotations

import argparse

import torch

from tinybev_ros.checkpoint import load_checkpoint, write_tensors
from tinybev_ros.geometry import CAMERA_NAMES, Rig
from tinybev_ros.model.export import OPSET, export_inputs, export_onnx, input_names, rig_splat_index
from tinybev_ros.paths import check_output_file
from tinybev_ros.taxonomy import Command


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="student checkpoint (.safetensors)")
    parser.add_argument("--out", required=True, help="ONNX file to write")
    parser.add_argument("--rig", help="rig JSON for the index file (default: the shipped nuScenes rig)")


def run(args: argparse.Namespace) -> int:
    check_output_file(args.out)  # before the export's work, as the rig
    rig = Rig.load(args.rig)  # a bad rig is one line before the model is built
    model, config = load_checkpoint(args.checkpoint)
    splat = rig_splat_index(model, rig)
    images = torch.zeros(1, len(CAMERA_NAMES), 3, config.image_height, config.image_width)
    out = export_onnx(model, export_inputs(model, images, splat, torch.tensor([int(Command.STRAIGHT)])), args.out)
    index_path = out.with_suffix(".splat.safetensors")
    write_tensors(index_path, {"depth_index": splat.depth_index, "pixel_index": splat.pixel_index,
                               "cell_index": splat.cell_index},
                  {"rig": str(args.rig or "shipped nuScenes rig"), "model": config.name,
                   "heading_code": config.heading_code})
    print(f"wrote {out} (opset {OPSET}, inputs {', '.join(input_names(model))}) and {index_path} "
          f"({splat.cell_index.numel()} splat points)")
    return 0
