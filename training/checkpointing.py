"""Training state for exact resume: optimizer, AMP scaler, step and every RNG, as safetensors + JSON (no pickle).

A checkpoint directory `step_XXXXXXXX/` holds the model (`model.safetensors`, written by
tinybev_ros.checkpoint.save_checkpoint: weights + the config that built them) and `train_state.safetensors`
(optimizer tensors and RNG byte states as tensors; everything else as JSON in the file's metadata). The
directory is written under a temporary name beside its target and renamed when complete, and `latest` (a text
file naming the newest directory) is replaced atomically afterwards, so a crash never leaves a half-written
checkpoint where resume would look.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from tinybev_ros.atomic_file import write_text
from tinybev_ros.errors import CheckpointError, ConfigError

STATE_FILE = "train_state.safetensors"
MODEL_FILE = "model.safetensors"
LATEST = "latest"
log = logging.getLogger(__name__)


def _split_tensors(value: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-able copy of `value` with every tensor moved into `tensors` and replaced by {"__tensor__": key}."""
    if isinstance(value, torch.Tensor):
        tensors[prefix] = value.detach().cpu().contiguous()
        return {"__tensor__": prefix}
    if isinstance(value, dict):
        return {"__dict__": [[_split_tensors(k, f"{prefix}.k{i}", tensors),
                              _split_tensors(v, f"{prefix}.{i}", tensors)] for i, (k, v) in enumerate(value.items())]}
    if isinstance(value, tuple):
        return {"__tuple__": [_split_tensors(v, f"{prefix}.{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_split_tensors(v, f"{prefix}.{i}", tensors) for i, v in enumerate(value)]
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.integer | np.floating):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} at {prefix} in the training state")


def _join_tensors(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_join_tensors(v, tensors) for v in value]
    if isinstance(value, dict):
        if "__tensor__" in value:
            return tensors[value["__tensor__"]]
        if "__dict__" in value:
            return {_join_tensors(k, tensors): _join_tensors(v, tensors) for k, v in value["__dict__"]}
        if "__tuple__" in value:
            return tuple(_join_tensors(v, tensors) for v in value["__tuple__"])
        if "__ndarray__" in value:
            return np.asarray(value["__ndarray__"], dtype=value["dtype"])
    return value


def rng_state() -> dict[str, Any]:
    """Every random generator the training touches (Python, NumPy, torch CPU and CUDA)."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():  # this process's GPU only: a resume may see fewer GPUs than were visible here
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        saved = state["cuda"]  # one state; a list of every visible GPU's in checkpoints before this rule
        torch.cuda.set_rng_state(saved[0] if isinstance(saved, (list, tuple)) else saved)


def save_train_state(path: str | Path, state: dict[str, Any]) -> None:
    """Write a nested state (tensors, numbers, strings, lists, tuples, dicts) to one safetensors file."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _split_tensors(state, "s", tensors)
    if not tensors:  # safetensors needs at least one entry to be a valid file
        tensors["s.none"] = torch.zeros(0)
    save_file(tensors, str(path), metadata={"state": json.dumps(skeleton), "format": "tinybev-train-state-1"})


def load_train_state(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training state {path} does not exist")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != "tinybev-train-state-1":
                raise ValueError(f"{path} is not a tinybev training state (format {metadata.get('format')!r})")
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (safe_open has no iter)
        return _join_tensors(json.loads(metadata["state"]), tensors)
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"training state {path} is damaged: {exc}") from exc


def write_checkpoint_dir(out_dir: str | Path, step: int, write_model, state: dict[str, Any], keep: int = 3) -> Path:
    """Atomically create `out_dir/step_XXXXXXXX/` with the model (via `write_model(path)`) and the state."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(".step_*"):  # a write cut short by SIGKILL or a power cut: about a checkpoint each
        shutil.rmtree(stale, ignore_errors=True)
    target = out_dir / f"step_{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=out_dir))
    try:
        write_model(tmp / MODEL_FILE)
        save_train_state(tmp / STATE_FILE, state)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
        write_text(out_dir / LATEST, target.name + "\n")
    except (OSError, SafetensorError) as error:  # e.g. a full disk (safetensors reports it as its own error)
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"cannot write checkpoint {target} ({error}); the earlier checkpoints in {out_dir} "
                              "are intact (resume picks the newest that reads back): free space and resume") \
            from error
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in sorted(out_dir.glob("step_*"))[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return target


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest complete checkpoint directory in `out_dir`, or None if there is none."""
    marker = Path(out_dir) / LATEST
    if not marker.is_file():
        return None
    path = Path(out_dir) / marker.read_text().strip()
    if not (path / MODEL_FILE).is_file() or not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"{marker} names {path.name}, which is missing {MODEL_FILE} or {STATE_FILE}")
    return path


class NoIntactCheckpoint(RuntimeError):
    """Checkpoints exist but none reads back."""


def check_fresh_start(run_dir: str | Path) -> None:
    """`--no-resume` into a folder that already holds a run would mix the two: the pruning of old checkpoints
    deletes the new run's first ones, `latest` can name a deleted folder and a later resume picks the old run's
    newest step; validation.jsonl and TensorBoard would interleave both runs."""
    found = sorted((Path(run_dir) / "checkpoints").glob("step_*"))
    if found:
        raise ConfigError(f"--no-resume: {run_dir} already holds a run (up to {found[-1].name}); starting another "
                          "there would mix the two runs' checkpoints and logs: give another --out, or remove it")


def resume_point(out_dir: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint whose files read back, with its training state; None when there is none.

    The one `latest` names comes first, then the others newest first. One that does not read back (a disk that
    filled up, a copy cut short) is skipped with a warning naming the bad file, so a run resumes from the newest
    intact checkpoint instead of stopping on a SafetensorError.
    """
    from tinybev_ros.checkpoint import read_checkpoint

    out_dir = Path(out_dir)
    marker = out_dir / LATEST
    named = [out_dir / marker.read_text().strip()] if marker.is_file() else []
    candidates = list(dict.fromkeys([*named, *sorted(out_dir.glob("step_*"), reverse=True)]))
    for path in candidates:
        try:
            state = load_train_state(path / STATE_FILE)
            read_checkpoint(path / MODEL_FILE)
        except (ValueError, FileNotFoundError) as exc:
            log.warning("cannot resume from %s (%s); trying an older checkpoint", path, exc)
            continue
        return path, state
    if candidates:
        raise NoIntactCheckpoint(f"no checkpoint in {out_dir} reads back ({', '.join(p.name for p in candidates)}); "
                                 "start over with --no-resume or another --out")
    return None
