"""Model checkpoints: ONE `.safetensors` file holding the weights and, in its metadata, the config that built them.

Metadata keys: "format" (FORMAT), "kind" ("student" or "teacher"), "config" (the model config as YAML), plus any
`extra_metadata` (values stored as strings). No pickle anywhere: a checkpoint can be loaded from an untrusted
source without running code. Files are written to a temp file beside the target and renamed into place.
Teacher checkpoints are read with `read_checkpoint` and built by `training.teachers` (runtime code never
imports training code).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from tinybev_ros.atomic_file import atomic_path
from tinybev_ros.config import to_dict
from tinybev_ros.errors import CheckpointError, CheckpointNotFound

FORMAT = "tinybev-checkpoint/1"
KINDS = ("student", "teacher")


def save_checkpoint(
    path: str | Path, model: nn.Module, config: Any, extra_metadata: dict[str, Any] | None = None,
    kind: str = "student",
) -> Path:
    """Write `model`'s weights and its dataclass `config` atomically to `path` (a .safetensors file)."""
    if kind not in KINDS:
        raise ValueError(f"checkpoint kind must be one of {KINDS}, got {kind!r}")
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"config must be a dataclass, got {type(config).__name__}")
    metadata = {
        key: value if isinstance(value, str) else json.dumps(value) for key, value in (extra_metadata or {}).items()
    }
    metadata.update(format=FORMAT, kind=kind, config=yaml.safe_dump(to_dict(config), sort_keys=False))
    tensors = {name: t.detach().to("cpu").contiguous().clone() for name, t in model.state_dict().items()}
    return write_tensors(path, tensors, metadata)


def write_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """Atomic safetensors write: a temp file beside `path`, renamed into place (never a half-written file)."""
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


def read_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and metadata of a checkpoint; metadata["config"] is parsed from YAML into a dict."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory, not a safetensors file")
    if not path.is_file():
        raise CheckpointNotFound(f"checkpoint {path} does not exist")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"checkpoint {path} is not a readable safetensors file: {error}") from error
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path}: format {metadata.get('format')!r}, expected {FORMAT!r}")
    if metadata.get("kind") not in KINDS:
        raise CheckpointError(f"checkpoint {path}: kind {metadata.get('kind')!r} is not one of {KINDS}")
    try:
        metadata["config"] = yaml.safe_load(metadata.get("config", "")) or {}
    except yaml.YAMLError as error:
        raise CheckpointError(f"checkpoint {path}: its config metadata is not valid YAML ({error.__class__.__name__}: "
                              f"{str(error).splitlines()[0]})") from error
    if not isinstance(metadata["config"], dict):
        raise CheckpointError(f"checkpoint {path}: its config metadata is a {type(metadata['config']).__name__}, "
                              "not a mapping of config keys")
    _read_legacy_heading_code(metadata["kind"], metadata["config"])
    broken = [name for name, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if broken:  # a diverged run: refused here, so release, export, resume and the node never use it
        raise CheckpointError(f"checkpoint {path} holds non-finite values (NaN/inf) in {len(broken)} tensors, "
                         f"e.g. {', '.join(broken[:3])}; retrain from an earlier checkpoint")
    return tensors, metadata


def _read_legacy_heading_code(kind: str, config: dict) -> None:
    """A model config without `heading_code` predates the axis/direction box code: its head wrote (sin yaw, cos
    yaw) (tinybev_ros/model/box_code.py). A teacher's model config is its `camera` entry."""
    from tinybev_ros.model.box_code import SIN_COS

    model = config if kind == "student" else config.get("camera")
    if isinstance(model, dict):
        model.setdefault("heading_code", SIN_COS)


def load_state(model: nn.Module, tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    """Strict load that names the checkpoint and the first mismatching keys on failure."""
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    wrong = sorted(k for k in set(own) & set(tensors) if own[k].shape != tensors[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(f"checkpoint {path} does not match its model: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}, wrong shape {wrong[:5]}")
    model.load_state_dict(tensors)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, Any]:
    """The student (`TinyBEV`, eval mode, on `device`) and its `ModelConfig` from a student checkpoint."""
    from tinybev_ros.model import build_student
    from tinybev_ros.model.config import model_config_from_dict

    tensors, metadata = read_checkpoint(path)
    if metadata["kind"] != "student":
        raise CheckpointError(f"checkpoint {path} holds a {metadata['kind']}; use training.teachers to load it")
    try:
        config = model_config_from_dict(metadata["config"])
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"checkpoint {path}: bad model config in metadata: {error}") from error
    model = build_student(config)
    load_state(model, tensors, path)
    return model.to(device).eval(), config
