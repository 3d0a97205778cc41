"""`tinybev release`: turn a trained student checkpoint into the file that ships (half the size, same model).

Training writes float32 weights; a shipped checkpoint stores them as float16, which halves the download and the
repository and changes the tiny student's outputs far below what any metric resolves (the loader copies them
back into the float32 model). The source's SHA-256 is recorded, so a shipped file names the run it came from.
Refuses weights beyond float16's range (they would become inf); values below its smallest subnormal (6e-8)
round to zero, which no layer can tell from their float32 value.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

from tinybev_ros.atomic_file import atomic_path
from tinybev_ros.checkpoint import load_checkpoint, read_checkpoint
from tinybev_ros.errors import CheckpointError
from tinybev_ros.paths import check_output_file

FLOAT16_MAX = torch.finfo(torch.float16).max


def to_float16(name: str, tensor: torch.Tensor) -> torch.Tensor:
    if not tensor.is_floating_point():
        return tensor
    if tensor.numel() and tensor.abs().max().item() > FLOAT16_MAX:
        raise CheckpointError(f"tensor {name} has values float16 cannot represent; ship it in float32")
    return tensor.to(torch.float16)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def release(source: str | Path, target: str | Path) -> Path:
    """Write `source` (a student checkpoint) to `target` with float16 weights; load it back to prove it works."""
    source, target = Path(source), Path(target)
    check_output_file(target)
    tensors, metadata = read_checkpoint(source)
    if metadata["kind"] != "student":
        raise CheckpointError(f"checkpoint {source} holds a {metadata['kind']}; only students are shipped")
    metadata["config"] = yaml.safe_dump(metadata["config"], sort_keys=False)
    metadata.update(precision="float16", released_from=f"{source.name} sha256:{sha256(source)}")
    halved = {name: to_float16(name, t) for name, t in tensors.items()}
    with atomic_path(target) as tmp:  # loaded back before it replaces `target` (often the shipped file itself)
        save_file(halved, str(tmp), metadata=metadata)
        load_checkpoint(tmp)
    return target


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="trained student: runs/X/checkpoints/step_N/model.safetensors")
    parser.add_argument("--out", type=Path, required=True, help="the file to write")


def run(args: argparse.Namespace) -> int:
    target = release(args.checkpoint, args.out)
    print(f"released {args.checkpoint} -> {target} ({target.stat().st_size / 2**20:.1f} MiB, float16 weights)")
    return 0
