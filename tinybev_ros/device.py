"""Which torch device a run uses: one rule and one error for the node, the Predictor and every training command.

`auto` (or nothing) takes the GPU of this process when one is visible (its LOCAL_RANK's under torchrun), else the
CPU. A device this machine cannot run (`cuda` on a CPU-only torch or without a visible GPU, `cuda:3` on a one-GPU
machine, a typo) is refused here in one line, before any model or data is loaded, instead of failing later in a
traceback ("invalid device ordinal", "Torch not compiled with CUDA enabled").
"""

from __future__ import annotations

import torch

from tinybev_ros.errors import ConfigError


class DeviceError(ConfigError):
    """A device this machine cannot run; the message names it and what the machine has."""


def resolve_device(requested: str | torch.device | None = None, local_rank: int = 0) -> torch.device:
    """The device for `requested` (auto, cpu, cuda, cuda:N); a bare `cuda` is this process's GPU."""
    text = str(requested).strip() if requested is not None else "auto"
    if text in ("", "auto"):
        if not torch.cuda.is_available():
            return torch.device("cpu")
        text = "cuda"  # this process's GPU, which must exist (torchrun with more ranks than GPUs)
    try:
        device = torch.device(text)
    except RuntimeError:
        raise DeviceError(f"device {text!r} is not a device name; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise DeviceError(f"device {text!r}: only cpu and cuda are supported")
    if not torch.cuda.is_available():
        raise DeviceError(f"device {text!r} but CUDA is not available here (torch {torch.__version__}, "
                          f"{'no GPU visible' if torch.version.cuda else 'a CPU-only build'}); use auto or cpu")
    index = local_rank if device.index is None else device.index
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(f"device {text!r} (cuda:{index}): this machine has {count} visible GPU(s), cuda:0 to "
                          f"cuda:{count - 1}")
    return torch.device("cuda", index)
