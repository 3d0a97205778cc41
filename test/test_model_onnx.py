"""The student exports to ONNX with standard operators and onnxruntime reproduces PyTorch within 1e-3."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from tinybev_ros.checkpoint import save_checkpoint
from tinybev_ros.cli import main as tinybev
from tinybev_ros.geometry import Rig, Transform
from tinybev_ros.model import SplatIndex, build_student, load_model_config
from tinybev_ros.model.export import OUTPUT_NAMES, export_inputs, input_names, rig_splat_index
from tinybev_ros.release import sha256

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-6))


def test_onnx_export_matches_pytorch(tmp_path):
    config = load_model_config(CONFIG_DIR / "model_tiny.yaml")
    torch.manual_seed(0)
    model = build_student(config).eval()
    checkpoint = save_checkpoint(tmp_path / "student.safetensors", model, config)
    assert tinybev(["export-onnx", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "tinybev.onnx")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student.safetensors", "tinybev.onnx",
                                                          "tinybev.splat.safetensors"]
    splat = rig_splat_index(model, Rig.load())
    saved = load_file(str(tmp_path / "tinybev.splat.safetensors"))
    assert torch.equal(saved["cell_index"], splat.cell_index) and torch.equal(saved["depth_index"], splat.depth_index)
    with safe_open(str(tmp_path / "tinybev.splat.safetensors"), framework="pt") as handle:
        assert handle.metadata()["heading_code"] == config.heading_code  # how to read the box output's heading
        assert handle.metadata()["onnx_sha256"] == sha256(tmp_path / "tinybev.onnx")  # the graph it belongs to

    graph = onnx.load(str(tmp_path / "tinybev.onnx"))
    onnx.checker.check_model(graph)
    assert {op.domain for op in graph.opset_import} <= {"", "ai.onnx"}  # no custom operator sets
    assert "ScatterElements" in {node.op_type for node in graph.graph.node}

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(tmp_path / "tinybev.onnx"), options, providers=["CPUExecutionProvider"])
    # Same graph, a second calibration (all cameras yawed 2 degrees -> a different number of splat points):
    # the index inputs are dynamic, so the exported model follows calibration changes.
    rig = Rig.load()
    yaw = np.radians(2.0)
    rot = np.array([[np.cos(yaw), -np.sin(yaw), 0.0], [np.sin(yaw), np.cos(yaw), 0.0], [0.0, 0.0, 1.0]])
    yawed = dataclasses.replace(rig, cameras={
        name: dataclasses.replace(cam, sensor_to_ego=Transform(rot @ cam.sensor_to_ego.rotation,
                                                               cam.sensor_to_ego.translation))
        for name, cam in rig.cameras.items()})
    splat_yawed = rig_splat_index(model, yawed)
    assert splat_yawed.cell_index.numel() != splat.cell_index.numel()
    images = torch.randn(1, 6, 3, config.image_height, config.image_width)
    command = torch.tensor([1])
    assert config.ego_status and input_names(model)[-1] == "ego_status"
    from_file = SplatIndex(saved["depth_index"], saved["pixel_index"], saved["cell_index"])
    for case, status in ((from_file, torch.tensor([[6.0, 0.3, 1.0]])), (splat_yawed, torch.zeros(1, 3))):
        inputs = export_inputs(model, images, case, command, status)
        feed = dict(zip(input_names(model), (t.numpy() for t in inputs), strict=True))
        got = session.run(list(OUTPUT_NAMES), feed)
        with torch.no_grad():
            want = model(images, None, None, command, case, status)
        for name, value in zip(OUTPUT_NAMES, got, strict=True):
            assert value.shape == tuple(want[name].shape), name
            assert relative_error(value, want[name].numpy()) < 1e-3, name
