"""Teacher outputs cached on disk, so any model (ours, or UniAD & co. run in their own environment) can teach.

Cache format ("tinybev-teacher-cache/2"): a directory with one safetensors file per keyframe sample,
`<root>/<sample_token>.safetensors`, holding tensors WITHOUT the batch dimension:
  features.0 ... features.{L-1}   (C_i, H_i, W_i) BEV feature maps, finest encoder level first, the pre-head map
                                  last (rows = x forward, columns = y left, base_link, as the student's grid);
                                  any channel count and resolution: distillation adapts channels and resizes
  outputs.<name>                  any subset of heatmap (10, Hd, Wd) logits, box (11, Hd, Wd),
                                  motion (K*12*2, Hd, Wd), motion_logits (K, Hd, Wd), map (4, H, W) logits,
                                  occupancy (5, H, W) logits, plan (6, 2) metres: the student's names, shapes and
                                  encodings (tinybev_ros/model/heads.py; the box code in
                                  tinybev_ros/model/box_code.py: a model that outputs a yaw writes sin 2yaw,
                                  cos 2yaw and a direction logit of, say, +8 where `encode_heading`'s forward
                                  is True, -8 where it is False)
and string metadata: format = "tinybev-teacher-cache/2", sample_token, num_features = L, source (free text:
which model wrote it). Tensors may be float16 or float32; they are read as float32. Every file of one cache must
have the same keys and shapes. Files are written atomically (temp file + rename), so an interrupted caching run
leaves only complete files and can resume by skipping the samples already present.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from tqdm import tqdm

from tinybev_ros.checkpoint import write_tensors
from tinybev_ros.errors import CheckpointError, CheckpointNotFound
from tinybev_ros.model.box_code import BOX_CODE_SIZE
from training.teachers.base import OUTPUT_KEYS, Teacher, TeacherOutput

log = logging.getLogger(__name__)

CACHE_FORMAT = "tinybev-teacher-cache/2"
# Format 1 held box codes with (sin yaw, cos yaw) in place of the axis and no direction.
_OLD_FORMATS = {"tinybev-teacher-cache/1": "it holds box codes from before the axis/direction code"}


def cache_path(root: str | Path, sample_token: str) -> Path:
    if not sample_token or "/" in sample_token or sample_token.startswith("."):
        raise ValueError(f"sample token {sample_token!r} cannot name a cache file")
    return Path(root) / f"{sample_token}.safetensors"


def not_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """The names of the tensors holding a NaN or an infinity."""
    return [key for key, t in tensors.items() if not bool(torch.isfinite(t).all())]


def write_teacher_sample(root: str | Path, sample_token: str, features: list[torch.Tensor],
                         outputs: dict[str, torch.Tensor], source: str, dtype: torch.dtype = torch.float16) -> Path:
    """Write one sample's teacher features (C, H, W each) and outputs (no batch dimension) atomically."""
    unknown = sorted(set(outputs) - set(OUTPUT_KEYS))
    if unknown:
        raise ValueError(f"teacher outputs {unknown} are not student outputs {OUTPUT_KEYS}")
    if not features or any(f.dim() != 3 for f in features):
        raise ValueError(f"sample {sample_token}: features must be a non-empty list of (C, H, W) maps")
    tensors = {f"features.{i}": f.detach().to("cpu", dtype).contiguous() for i, f in enumerate(features)}
    tensors.update({f"outputs.{k}": v.detach().to("cpu", dtype).contiguous() for k, v in outputs.items()})
    # A value past the cache's float range (or a NaN from an external model's outputs) would surface mid-
    # distillation as a divergence with the wrong advice (lower the lr): refused here, naming it.
    if bad := not_finite(tensors):
        raise CheckpointError(f"teacher sample {sample_token}: {', '.join(bad)} not finite in {dtype} (a teacher "
                              "that diverged, or values beyond the cache's range); nothing was written for it")
    path = cache_path(root, sample_token)
    return write_tensors(path, tensors, {"format": CACHE_FORMAT, "sample_token": sample_token,
                                         "num_features": str(len(features)), "source": source})


def cache_teacher(teacher: Teacher, batches: Iterable[dict[str, Any]], root: str | Path, source: str,
                  total: int | None = None, dtype: torch.dtype = torch.float16) -> int:
    """Run `teacher` over `batches` and write every sample of each batch; samples already cached are skipped
    (a batch is run only if one of its samples is missing). Returns the number of files written."""
    written = 0
    for batch in tqdm(batches, total=total, desc="caching teacher", unit="batch"):
        tokens = [meta["sample_token"] for meta in batch["meta"]]
        if all(cache_path(root, t).exists() for t in tokens):
            continue
        result = teacher(batch)
        for i, token in enumerate(tokens):
            write_teacher_sample(root, token, [f[i] for f in result.features],
                                 {k: v[i] for k, v in result.outputs.items()}, source, dtype)
            written += 1
    log.info("teacher cache %s: %d sample files written", root, written)
    return written


def _file_layout(path: Path) -> dict[str, list[int]]:
    """Every tensor's shape in a cache file, from its header; a damaged file (cut short, not safetensors, another
    format) is a CheckpointError naming it."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            _check_format(path, handle.metadata() or {})
            return {key: list(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"teacher cache file {path} is damaged ({error}); remove it and run `tinybev "
                              "teacher-cache` again (it writes the missing files)") from error


def _check_format(path: Path, metadata: dict[str, str]) -> None:
    found = metadata.get("format")
    if found != CACHE_FORMAT:
        why = f" ({_OLD_FORMATS[found]}: cache it again)" if found in _OLD_FORMATS else ""
        raise CheckpointError(f"teacher cache file {path}: format {found!r}, expected {CACHE_FORMAT!r}{why}")


def read_teacher_sample(path: Path) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            _check_format(path, metadata)
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"teacher cache file {path} is not readable safetensors: {error}") from error
    count = int(metadata.get("num_features", "0"))
    try:
        features = [tensors[f"features.{i}"].float() for i in range(count)]
    except KeyError as error:
        raise CheckpointError(f"teacher cache file {path}: missing {error.args[0]}") from error
    outputs = {key.removeprefix("outputs."): t.float() for key, t in tensors.items() if key.startswith("outputs.")}
    if bad := not_finite(tensors):
        raise CheckpointError(f"teacher cache file {path}: {', '.join(bad)} not finite; make the cache again")
    return features, outputs


class CachedTeacher:
    """`Teacher` that reads each batch sample's cached file (by `meta[i]["sample_token"]`) and stacks them."""

    needs_lidar = False

    def __init__(self, root: str | Path, device: str | torch.device = "cpu") -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise CheckpointNotFound(f"teacher cache directory {self.root} does not exist")
        self.device = torch.device(device)

    def check(self, splits: dict[str, list[str]]) -> None:
        """Before training: every sample of every split has a file that opens, in this cache's format, with the
        first file's keys and shapes (headers only, about a millisecond a file). Found mid-run, a damaged or
        foreign file would stop the run at the same step on every resume."""
        for split, sample_tokens in splits.items():
            missing = [token for token in sample_tokens if not cache_path(self.root, token).is_file()]
            if missing:
                raise CheckpointError(f"teacher cache {self.root} has no file for {len(missing)} of the "
                                      f"{len(sample_tokens)} samples of split {split!r} (first: {missing[0]}); run "
                                      "`tinybev teacher-cache` over that split into it")
        layout: tuple[Path, dict[str, list[int]]] | None = None
        for token in (token for tokens in splits.values() for token in tokens):
            path = cache_path(self.root, token)
            shapes = _file_layout(path)
            if layout is None:
                layout = (path, shapes)
                box = shapes.get("outputs.box")
                if box is not None and box[0] != BOX_CODE_SIZE:
                    raise CheckpointError(f"teacher cache file {path}: its box code has {box[0]} channels, the "
                                          f"student's {BOX_CODE_SIZE} (tinybev_ros/model/box_code.py)")
            elif shapes != layout[1]:
                raise CheckpointError(f"teacher cache files {layout[0].name} and {path.name} differ in keys or "
                                      f"shapes (two teachers in one cache?); remove the odd ones and run "
                                      "`tinybev teacher-cache` again")

    def __call__(self, batch: dict[str, Any]) -> TeacherOutput:
        samples = []
        for meta in batch["meta"]:
            path = cache_path(self.root, meta["sample_token"])
            if not path.is_file():
                raise FileNotFoundError(f"teacher cache {self.root} has no file for sample {meta['sample_token']} "
                                        f"({path.name}); run the caching step over this split first")
            samples.append((path, *read_teacher_sample(path)))
        first_path, first_features, first_outputs = samples[0]
        for path, features, outputs in samples[1:]:
            same = [f.shape for f in features] == [f.shape for f in first_features] and (
                {k: v.shape for k, v in outputs.items()} == {k: v.shape for k, v in first_outputs.items()})
            if not same:
                raise CheckpointError(f"teacher cache files {first_path.name} and {path.name} differ in keys or "
                                      "shapes")
        features = [torch.stack([s[1][i] for s in samples]).to(self.device) for i in range(len(first_features))]
        outputs = {k: torch.stack([s[2][k] for s in samples]).to(self.device) for k in first_outputs}
        return TeacherOutput(features=features, outputs=outputs)
