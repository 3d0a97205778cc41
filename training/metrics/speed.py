"""Model size and speed: parameter count, FLOPs of one forward pass, latency on the current device."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only))


def count_flops(forward: Callable[[], Any]) -> int:
    """Floating-point operations of one call (a multiply-add counts as 2), as counted by PyTorch's FlopCounterMode.

    Operators PyTorch has no formula for (e.g. the scatter-sum of the LSS splat) count as zero, so this is a
    lower bound dominated by convolutions and matrix products.
    """
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        forward()
    return int(counter.get_total_flops())


def measure_latency(forward: Callable[[], Any], device: torch.device | str = "cpu", warmup: int = 2,
                    repeats: int = 10) -> dict[str, float]:
    """Wall-clock milliseconds per call after `warmup` calls; CUDA work is synchronised before each reading."""
    device = torch.device(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times = []
    with torch.no_grad():
        for i in range(warmup + repeats):
            sync()
            start = time.perf_counter()
            forward()
            sync()
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000.0)
    values = np.array(times)
    return {"median_ms": float(np.median(values)), "p90_ms": float(np.percentile(values, 90)),
            "mean_ms": float(values.mean()), "repeats": int(repeats), "device": str(device)}


def speed_report(model: torch.nn.Module, forward: Callable[[], Any], device: torch.device | str = "cpu",
                 warmup: int = 2, repeats: int = 10) -> dict[str, Any]:
    """Parameters (total, in millions), GFLOPs and latency of `forward` (a closure calling `model`)."""
    return {
        "parameters_M": count_parameters(model) / 1e6,
        "gflops": count_flops(forward) / 1e9,
        "latency": measure_latency(forward, device, warmup, repeats),
    }
