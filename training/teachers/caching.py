"""`tinybev teacher-cache`: run a teacher checkpoint once over dataset splits and write the teacher cache.

Students then distil from the cache (`tinybev distill --teacher DIR`) without LiDAR loading or teacher compute;
BEV-augmented batches read it moved (training/teachers/bev_warp.py). The teacher sees un-augmented items with
LiDAR, as in its own validation (training/teachers/predict.py). Samples already cached are skipped, so an
interrupted run continues; `teacher.json` names the teacher (SHA-256) that made the files, the dataset they are
of (its tables' SHA-256) and the grid they cover, so a cache is never continued with another teacher (a retrained
one would otherwise leave every old file in place) or on other data, and a student distils only from a cache of
its own data over its own ground (training/distill.py: check_teacher_fits).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterable
from pathlib import Path

import torch
from nuscenes.nuscenes import NuScenes
from torch.utils.data import DataLoader

from tinybev_ros.arguments import positive_int
from tinybev_ros.atomic_file import write_text
from tinybev_ros.device import resolve_device
from tinybev_ros.errors import CheckpointError
from tinybev_ros.geometry import BevGrid
from tinybev_ros.nuscenes_dataset import open_nuscenes
from tinybev_ros.paths import check_output_folder
from tinybev_ros.release import sha256
from training.data import collate, move_batch
from training.sample_cache import SAMPLE_CACHE_HELP, dataset_fingerprint
from training.teachers.cached import cache_teacher
from training.teachers.fusion_teacher import LiveTeacher
from training.teachers.predict import teacher_dataset

log = logging.getLogger(__name__)
TEACHER_MARKER = "teacher.json"


def cache_marker(root: Path) -> dict:
    """The marker of cache `root` ({} if it has no readable one): the teacher's sha256 and path, and, in caches
    written since they are recorded, the dataset's fingerprint and the teacher's grid."""
    try:
        marker = json.loads((root / TEACHER_MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return marker if isinstance(marker, dict) else {}


def marked_teacher(root: Path) -> str | None:
    """The sha256 of the teacher checkpoint whose cache `root` is, from its marker (None: no readable marker)."""
    digest = cache_marker(root).get("teacher_sha256")
    return digest if isinstance(digest, str) else None


def claim_cache(root: Path, checkpoint: Path, dataset: str, grid: BevGrid, adopt_unmarked: bool = False) -> None:
    """Mark `root` as `checkpoint`'s cache of the dataset with fingerprint `dataset`, or refuse a cache another
    teacher made, or made of other data (synthetic sample tokens repeat across worlds of one seed: files kept as
    "done" would be another world's). `adopt_unmarked`: files without a marker are this teacher's (a caller that
    vouches for the folder otherwise, as `tinybev ablate`'s settings stamp does for caches written before the
    marker existed)."""
    digest = sha256(checkpoint)
    marker = root / TEACHER_MARKER
    if marker.is_file():
        made = cache_marker(root)
        if made.get("teacher_sha256") != digest:
            raise CheckpointError(f"teacher cache {root} was made by another teacher (sha256 "
                                  f"{made.get('teacher_sha256')}, not {checkpoint}'s {digest}); give another --out, "
                                  "or remove it")
        check_cache_dataset(root, made, dataset)
        if "dataset" in made:
            return
    elif not adopt_unmarked and any(root.glob("*.safetensors")):  # skipped as "done", they would mix two teachers
        raise CheckpointError(f"teacher cache {root} has files but no {TEACHER_MARKER}: which teacher made them "
                              "cannot be checked; give another --out, or remove them")
    root.mkdir(parents=True, exist_ok=True)  # a marker from before datasets were recorded gains the fields
    write_text(marker, json.dumps({"teacher_sha256": digest, "teacher": str(checkpoint), "dataset": dataset,
                                   "grid": [grid.x_min, grid.x_max, grid.y_min, grid.y_max, grid.resolution]}))


def check_cache_dataset(root: Path, marker: dict, dataset: str) -> None:
    """Refuse cache `root` if its marker names another dataset (a marker without one cannot say: accepted)."""
    made_of = marker.get("dataset")
    if made_of is not None and made_of != dataset:
        raise CheckpointError(f"teacher cache {root} was made of another dataset (tables sha256 {made_of[:16]}..., "
                              f"not {dataset[:16]}...); give another --out, or remove it")


def cache_splits(checkpoint: str | Path, nusc: NuScenes, splits: Iterable[str], root: str | Path,
                 device: str | torch.device, batch_size: int = 4, sample_cache_dir: str | Path = "",
                 adopt_unmarked: bool = False) -> int:
    """Cache `checkpoint`'s features and outputs for every keyframe of `splits`; returns the files written."""
    teacher = LiveTeacher.from_checkpoint(checkpoint, device)  # not a teacher: refused before --out is claimed
    claim_cache(Path(root), Path(checkpoint), dataset_fingerprint(nusc.dataroot, nusc.version), teacher.grid,
                adopt_unmarked)
    written = 0
    for split in splits:
        dataset = teacher_dataset(nusc, split, teacher.model.config, sample_cache_dir, partial_ok=True)
        loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate)
        batches = (move_batch(b, torch.device(device)) for b in loader)
        written += cache_teacher(teacher, batches, root, source=f"FusionTeacher {checkpoint}", total=len(loader))
    files = list(Path(root).glob("*.safetensors"))
    size = sum(p.stat().st_size for p in files)
    log.info("teacher cache %s: %d samples, %.1f MB (%.2f MB per sample)", root, len(files), size / 1e6,
             size / 1e6 / max(len(files), 1))
    return written


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", required=True, help="teacher checkpoint (.safetensors)")
    parser.add_argument("--dataroot", required=True, help="nuScenes-format dataroot")
    parser.add_argument("--version", default="v1.0-trainval", help="nuScenes version folder (v1.0-mini, ...)")
    parser.add_argument("--splits", nargs="+", default=["train", "val"], help="splits to cache")
    parser.add_argument("--out", required=True, help="teacher-cache directory (created; resumed if it exists)")
    parser.add_argument("--batch-size", type=positive_int, default=4)
    parser.add_argument("--device", default=None, help="torch device (default: cuda if present, else cpu)")
    parser.add_argument("--sample-cache", default="", metavar="DIR",
                        help=SAMPLE_CACHE_HELP)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not Path(args.teacher).is_file():
        raise SystemExit(f"tinybev teacher-cache: teacher checkpoint {args.teacher} does not exist")
    check_output_folder(args.out)
    device = resolve_device(args.device)
    nusc = open_nuscenes(args.dataroot, args.version)
    with torch.no_grad():
        written = cache_splits(args.teacher, nusc, args.splits, args.out, device, args.batch_size,
                               args.sample_cache)
    print(f"tinybev teacher-cache: wrote {written} sample files to {args.out}")
    return 0
