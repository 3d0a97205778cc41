"""The ResNet-18 is our own code but must accept torchvision's ImageNet state dict unchanged."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from tinybev_ros.errors import CheckpointError
from tinybev_ros.model.backbone import ResNet18, load_imagenet_weights


def torchvision_resnet18_keys() -> dict[str, tuple[int, ...]]:
    """Key -> shape of torchvision's resnet18().state_dict(), written out from its architecture."""
    keys: dict[str, tuple[int, ...]] = {"conv1.weight": (64, 3, 7, 7)}

    def bn(prefix: str, c: int) -> None:
        keys.update({f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
                     f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()})

    bn("bn1", 64)
    in_c = 64
    for layer, c in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            p = f"layer{layer}.{block}"
            keys[f"{p}.conv1.weight"] = (c, in_c if block == 0 else c, 3, 3)
            bn(f"{p}.bn1", c)
            keys[f"{p}.conv2.weight"] = (c, c, 3, 3)
            bn(f"{p}.bn2", c)
            if block == 0 and layer > 1:
                keys[f"{p}.downsample.0.weight"] = (c, in_c, 1, 1)
                bn(f"{p}.downsample.1", c)
        in_c = c
    keys["fc.weight"] = (1000, 512)
    keys["fc.bias"] = (1000,)
    return keys


def fake_imagenet_state() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    shapes = torchvision_resnet18_keys()
    return {k: (torch.tensor(7) if not s else torch.randn(s, generator=gen)) for k, s in shapes.items()}


def test_parameter_names_and_shapes_match_torchvision():
    expected = {k: s for k, s in torchvision_resnet18_keys().items() if not k.startswith("fc.")}
    ours = {k: tuple(v.shape) for k, v in ResNet18().state_dict().items()}
    assert ours == expected


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_imagenet_weights_load_from_local_file(tmp_path, suffix):
    state = fake_imagenet_state()
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        save_file(state, str(path))
    backbone = ResNet18()
    load_imagenet_weights(backbone, path)
    loaded = backbone.state_dict()
    assert torch.equal(loaded["layer3.1.conv2.weight"], state["layer3.1.conv2.weight"])
    assert torch.equal(loaded["layer4.0.downsample.1.running_var"], state["layer4.0.downsample.1.running_var"])


def test_wrong_weights_file_is_rejected_naming_it(tmp_path):
    state = fake_imagenet_state()
    del state["layer2.0.downsample.0.weight"]
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    path = tmp_path / "not_resnet18.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match="not_resnet18.pth.*layer2.0.downsample.0.weight.*layer1.0.conv1.weight"):
        load_imagenet_weights(ResNet18(), path)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_imagenet_weights(ResNet18(), tmp_path / "missing.pth")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_weights_file_that_does_not_read_is_a_checkpoint_error_naming_it(tmp_path, suffix):
    """A half-downloaded file is the user's, not our bug: `tinybev train` prints it as one line (cli.py)."""
    whole = tmp_path / f"whole{suffix}"
    state = fake_imagenet_state()
    if suffix == ".pth":
        torch.save(state, whole)
    else:
        save_file(state, str(whole))
    half = tmp_path / f"resnet18{suffix}"
    half.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=f"weights file {half} cannot be read: "):
        load_imagenet_weights(ResNet18(), half)
