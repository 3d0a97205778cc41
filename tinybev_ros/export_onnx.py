"""`tinybev export-onnx --checkpoint C --out student.onnx [--rig RIG.json]`: the student as ONNX (model/export.py)
and the rig's splat index as `student.splat.safetensors` (depth_index, pixel_index, cell_index; int64), so a
runtime without PyTorch can feed the graph directly. Its metadata names the model's `heading_code`, which says how
to read the box output's heading channels (tinybev_ros/model/box_code.py), and the SHA-256 of the ONNX file it
was written with (`onnx_sha256`): the index is written before the graph takes its place, so a run cut off between
the two leaves an index a runtime can tell from the graph beside it, never a silent mismatch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from tinybev_ros.atomic_file import atomic_path
from tinybev_ros.checkpoint import load_checkpoint, write_tensors
from tinybev_ros.geometry import CAMERA_NAMES, Rig
from tinybev_ros.model.export import OPSET, export_inputs, export_onnx, input_names, rig_splat_index
from tinybev_ros.paths import check_output_file
from tinybev_ros.release import sha256
from tinybev_ros.taxonomy import Command


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="student checkpoint (.safetensors)")
    parser.add_argument("--out", required=True, help="ONNX file to write")
    parser.add_argument("--rig", help="rig JSON for the index file (default: the shipped nuScenes rig)")


def run(args: argparse.Namespace) -> int:
    index_path = Path(args.out).with_suffix(".splat.safetensors")
    for path in (args.out, index_path):  # before the export's work, as the rig
        check_output_file(path)
    rig = Rig.load(args.rig)  # a bad rig is one line before the model is built
    model, config = load_checkpoint(args.checkpoint)
    splat = rig_splat_index(model, rig)
    images = torch.zeros(1, len(CAMERA_NAMES), 3, config.image_height, config.image_width)
    out = Path(args.out)
    with atomic_path(out) as graph:
        export_onnx(model, export_inputs(model, images, splat, torch.tensor([int(Command.STRAIGHT)])), graph)
        write_tensors(index_path, {"depth_index": splat.depth_index, "pixel_index": splat.pixel_index,
                                   "cell_index": splat.cell_index},
                      {"rig": str(args.rig or "shipped nuScenes rig"), "model": config.name,
                       "heading_code": config.heading_code, "onnx_sha256": sha256(graph)})
    print(f"wrote {out} (opset {OPSET}, inputs {', '.join(input_names(model))}) and {index_path} "
          f"({splat.cell_index.numel()} splat points)")
    return 0
