"""One rule for the device of the node, the Predictor and training: what this machine can run, or one line why not."""

from __future__ import annotations

import pytest
import torch

from tinybev_ros.device import DeviceError, resolve_device
from tinybev_ros.errors import ConfigError


def test_auto_takes_a_visible_gpu_else_the_cpu_and_cpu_is_always_there():
    here = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    assert resolve_device(None) == resolve_device("auto") == resolve_device("") == here
    assert resolve_device("cpu") == resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_devices_this_machine_cannot_run_are_named_in_one_line():
    assert issubclass(DeviceError, ConfigError)  # the command line prints it as one line (cli.py)
    with pytest.raises(DeviceError, match="'warp' is not a device name; use auto, cpu, cuda or cuda:N"):
        resolve_device("warp")
    with pytest.raises(DeviceError, match="'meta': only cpu and cuda are supported"):
        resolve_device("meta")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count:
        assert resolve_device("cuda") == torch.device("cuda", 0)
        with pytest.raises(DeviceError, match=f"has {count} visible GPU"):
            resolve_device(f"cuda:{count}")
    else:
        for text in ("cuda", "cuda:0", "cuda:3"):
            with pytest.raises(DeviceError, match=f"device '{text}' but CUDA is not available here"):
                resolve_device(text)
