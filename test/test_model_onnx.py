"""The student exports to ONNX with standard operators and onnxruntime reproduces PyTorch within 1e-3."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from tinybev_ros.model import build_student, load_model_config
from tinybev_ros.model.export import INPUT_NAMES, OUTPUT_NAMES, export_inputs, export_onnx

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-6))


def test_onnx_export_matches_pytorch(tmp_path):
    from test_model_geometry import calibration

    config = load_model_config(CONFIG_DIR / "model_tiny.yaml")
    torch.manual_seed(0)
    model = build_student(config).eval()
    ks, poses = calibration(config)
    k = torch.tensor(ks, dtype=torch.float32)[None]
    pose = torch.tensor(poses, dtype=torch.float32)[None]
    images = torch.randn(1, 6, 3, config.image_height, config.image_width)
    command = torch.tensor([1])
    splat = model.splat_index(k, pose)
    path = export_onnx(model, export_inputs(model, images, splat, command), tmp_path / "tinybev.onnx")
    assert not model.training and sorted(p.name for p in tmp_path.iterdir()) == ["tinybev.onnx"]

    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    assert {op.domain for op in graph.opset_import} <= {"", "ai.onnx"}  # no custom operator sets
    assert "ScatterElements" in {node.op_type for node in graph.graph.node}

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    # Same graph, a second calibration (front cameras yawed 2 degrees -> a different number of splat points):
    # the index inputs are dynamic, so the exported model follows calibration changes.
    yawed = pose.clone()
    c, s = np.cos(np.radians(2.0)), np.sin(np.radians(2.0))
    yaw = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float32)
    yawed[0, :3, :3, :3] = yaw @ yawed[0, :3, :3, :3]
    splat_yawed = model.splat_index(k, yawed)
    assert splat_yawed.cell_index.numel() != splat.cell_index.numel()
    for case in (splat, splat_yawed):
        feed = dict(zip(INPUT_NAMES, (t.numpy() for t in export_inputs(model, images, case, command)), strict=True))
        got = session.run(list(OUTPUT_NAMES), feed)
        with torch.no_grad():
            want = model(images, None, None, command, case)
        for name, value in zip(OUTPUT_NAMES, got, strict=True):
            assert value.shape == tuple(want[name].shape), name
            assert relative_error(value, want[name].numpy()) < 1e-3, name
