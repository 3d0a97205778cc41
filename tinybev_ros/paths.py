"""Where the package's shared files (config/, launch/) are: the ament share dir, else the source tree."""

from __future__ import annotations

import os
from pathlib import Path

from tinybev_ros.errors import CheckpointNotFound, ConfigError

PACKAGE = "tinybev_ros"
SOURCE_ROOT = Path(__file__).resolve().parent.parent


def share_dir() -> Path:
    """`share/tinybev_ros` of a colcon install when the package is in the ament index, else the repository."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            return Path(get_package_share_directory(PACKAGE))
        except (PackageNotFoundError, OSError):  # not installed by colcon, or no AMENT_PREFIX_PATH
            pass
    except ImportError:
        pass
    return SOURCE_ROOT


def share_file(relative: str) -> Path:
    path = share_dir() / relative
    if not path.exists():
        raise FileNotFoundError(f"{relative} not found in {share_dir()} (is tinybev_ros installed completely?)")
    return path


DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "data" / "tinybev_tiny.safetensors"


def default_checkpoint() -> Path:
    """The `tiny` student shipped with the package (distilled on synthetic data; see README)."""
    if not DEFAULT_CHECKPOINT.exists():
        raise CheckpointNotFound(f"no checkpoint given and the shipped default {DEFAULT_CHECKPOINT} is missing; "
                                "pass one (parameter `checkpoint`, or --checkpoint)")
    return DEFAULT_CHECKPOINT


def check_output_folder(path: str | Path, what: str = "--out") -> Path:
    """`path` is a folder, or can be made one, that this user can write in: checked before the work, so a long run
    does not end in a traceback that loses its results. Creates nothing."""
    path = Path(path).resolve()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path} is a file; choose a folder")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"{what} {path}: {existing} is a file, so no folder can be made there")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path}: {existing} is not writable by this user")
    return path


def check_output_file(path: str | Path, what: str = "--out") -> Path:
    """`path` can be written as a file: not a folder, in a folder that exists or can be made and is writable.
    Checked before the work, as `check_output_folder` is. Creates nothing."""
    path = Path(path).resolve()
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a folder; give the file to write")
    check_output_folder(path.parent, f"the folder of {what}")
    return path
