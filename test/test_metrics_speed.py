"""Size and speed measurements on a module whose numbers are known by hand."""

from __future__ import annotations

import torch

from training.metrics.speed import count_flops, count_parameters, measure_latency, speed_report


def test_parameters_flops_and_latency_of_a_linear_layer() -> None:
    layer = torch.nn.Linear(64, 32)  # 64*32 weights + 32 biases
    layer.bias.requires_grad_(False)
    x = torch.randn(8, 64)
    assert count_parameters(layer) == 64 * 32 + 32
    assert count_parameters(layer, trainable_only=True) == 64 * 32
    assert count_flops(lambda: layer(x)) == 2 * 8 * 64 * 32  # one multiply-add = 2 FLOPs
    calls = []
    latency = measure_latency(lambda: calls.append(layer(x)), warmup=2, repeats=5)
    assert len(calls) == 7 and latency["repeats"] == 5 and 0 < latency["median_ms"] <= latency["p90_ms"] + 1e-9
    report = speed_report(layer, lambda: layer(x), repeats=3)
    assert report["parameters_M"] == (64 * 32 + 32) / 1e6 and report["gflops"] == 2 * 8 * 64 * 32 / 1e9
