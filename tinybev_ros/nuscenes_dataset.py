"""Opening a nuScenes-format dataset and reading its files, with errors that name what is wrong.

Every command that reads a dataroot (eval, demo, train, teacher-cache, bag convert, ablate, synth-render) opens it
here, so a wrong `--version`, a dataroot that is not one, a table that does not parse or a truncated image is one
clear line (errors.DatasetError) instead of a devkit AssertionError, TypeError or a half-grey image scored as if
it were real.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tinybev_ros.errors import DatasetError, DatasetFileMissing


def open_nuscenes(dataroot: str | Path, version: str):
    """The devkit's NuScenes object for `dataroot`/`version`."""
    from nuscenes.nuscenes import NuScenes

    root = Path(dataroot)
    if not root.is_dir():
        raise DatasetError(f"dataroot {root} is not a directory")
    tables = root / version
    if not (tables / "scene.json").is_file():
        found = sorted(p.name for p in root.iterdir() if (p / "scene.json").is_file())
        raise DatasetError(f"no nuScenes tables at {tables} (missing {tables / 'scene.json'}); "
                           f"versions found in {root}: {', '.join(found) or 'none'} (use --version)")
    try:
        return NuScenes(version=version, dataroot=str(root), verbose=False)
    except (OSError, ValueError, KeyError, TypeError, AssertionError) as exc:
        raise DatasetError(f"cannot load nuScenes {version} from {root}: {_bad_table(tables) or exc}") from exc


def _bad_table(tables: Path) -> str:
    """Which table JSON does not parse (looked for only after the devkit failed: the tables can be large)."""
    for path in sorted(tables.glob("*.json")):
        try:
            json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            return f"{path} is not valid JSON ({exc})"
    return ""


def find_scene(nusc, name: str) -> dict:
    """The scene record called `name`."""
    for scene in nusc.scene:
        if scene["name"] == name:
            return scene
    names = [scene["name"] for scene in nusc.scene]
    raise DatasetError(f"unknown scene {name!r} in {nusc.dataroot}/{nusc.version}; scenes: {', '.join(names)}")


def read_image_rgb(path: str | Path, reduction: int = 1) -> np.ndarray:
    """An image file as RGB uint8 (at 1/`reduction` scale, as the node decodes it: preprocess.decode_image); a
    missing, truncated or corrupt file is an error naming it."""
    from tinybev_ros.model.preprocess import decode_image

    if not Path(path).is_file():
        raise DatasetFileMissing(f"image {path} does not exist")
    data = Path(path).read_bytes()
    if data[:2] == b"\xff\xd8" and data[-2:] != b"\xff\xd9":
        raise DatasetError(f"image {path} is a truncated JPEG (no end-of-image marker)")
    image = decode_image(data, reduction)
    if image is None:
        raise DatasetError(f"image {path} does not decode")
    return image
