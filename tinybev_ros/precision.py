"""Which floating-point type the network computes in: float16 on CUDA, bfloat16 on CPUs that have it.

One rule for training and inference, so the node runs the student in the precision it was trained in.
bf16 autocast with channels_last convolutions halves a CPU student step where the CPU has native bf16
(avx512_bf16 / AMX; measured 0.535 s vs 1.10 s fp32, 2 cores, batch 2), and halves the node's model time
(benchmarks/node_latency.py). Losses, the LSS pooling and the optimiser stay in float32. float16 needs a
GradScaler in training and is used on CUDA only; bf16 has float32's range and needs none.
"""

from __future__ import annotations

import torch

from tinybev_ros.device import DeviceError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def cpu_has_bf16() -> bool:
    """True when oneDNN runs bf16 natively on this CPU (emulated bf16 is slower than fp32)."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `precision` on `device` (None = plain float32); DeviceError (one line at the command
    line) for a precision this machine cannot run."""
    if precision not in PRECISIONS:
        raise DeviceError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if device.type == "cpu" and cpu_has_bf16() else None
    if precision == "fp32":
        return None
    if precision == "fp16" and device.type != "cuda":
        raise DeviceError(f"precision fp16 needs a CUDA device (this run is on {device}); use bf16 or fp32")
    if precision == "bf16" and device.type == "cpu" and not cpu_has_bf16():
        raise DeviceError("precision bf16: this CPU has no native bfloat16 (avx512_bf16/AMX); use fp32 or auto")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        raise DeviceError(f"precision bf16: {device} has no native bfloat16 (compute capability 8.0 or later; "
                          "emulated it is slower than float32); use fp16 or auto")
    return torch.float16 if precision == "fp16" else torch.bfloat16
