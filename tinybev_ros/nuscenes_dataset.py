"""Opening a nuScenes-format dataset and reading its records and files, with errors that name what is wrong.

Every command that reads a dataroot (eval, demo, train, teacher-cache, bag convert, ablate, synth-render) opens it
here, so a wrong `--version`, a dataroot that is not one, a table that does not parse or a truncated image is one
clear line (errors.DatasetError) instead of a devkit AssertionError, TypeError or a half-grey image scored as if
it were real. The sensor records of a keyframe (sample_data, its calibrated_sensor and ego_pose) are read here
too, as `Transform`s in our conventions, so no other module walks those tables.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tinybev_ros.errors import DatasetError, DatasetFileMissing
from tinybev_ros.geometry import CAMERA_NAMES, LIDAR_NAME, CameraCalibration, Rig, Transform
from tinybev_ros.jpeg import is_truncated_jpeg


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
    import difflib

    names = sorted(scene["name"] for scene in nusc.scene)
    near = difflib.get_close_matches(name, names, n=5, cutoff=0.5) or names[:5]
    more = f" ... ({len(names)} in all)" if len(names) > len(near) else ""
    raise DatasetError(f"unknown scene {name!r} in {nusc.dataroot}/{nusc.version}; scenes: {', '.join(near)}{more}")


def load_map_expansion(dataroot: str | Path, location: str):
    """The devkit's NuScenesMap of a location. Any failure is a DatasetError naming the file: the devkit raises a
    bare Exception for a map expansion older than v1.3, and a truncated JSON fails inside its parser."""
    from nuscenes.map_expansion.map_api import NuScenesMap

    try:
        return NuScenesMap(dataroot=str(dataroot), map_name=location)
    except Exception as exc:  # the devkit raises bare Exceptions (docstring)
        path = Path(dataroot) / "maps" / "expansion" / f"{location}.json"
        raise DatasetError(f"cannot load the map expansion {path}: {exc}") from exc


def read_image_rgb(path: str | Path, reduction: int = 1) -> np.ndarray:
    """An image file as RGB uint8 (at 1/`reduction` scale, as the node decodes it: preprocess.decode_image); a
    missing, truncated or corrupt file is an error naming it."""
    from tinybev_ros.model.preprocess import decode_image

    if not Path(path).is_file():
        raise DatasetFileMissing(f"image {path} does not exist")
    data = Path(path).read_bytes()
    if is_truncated_jpeg(data):
        raise DatasetError(f"image {path} is a truncated JPEG (no end-of-image marker)")
    image = decode_image(data, reduction)
    if image is None:
        raise DatasetError(f"image {path} does not decode")
    return image


POINT_BYTES = 5 * 4  # .pcd.bin: x, y, z, intensity, ring as float32


def lidar_points(data: bytes, path: str | Path) -> np.ndarray:
    """(P, 5) float32 points of a nuScenes .pcd.bin's bytes (read-only view); an empty or cut file is an error."""
    if not data or len(data) % POINT_BYTES:
        raise DatasetError(f"corrupt point cloud {path}: {len(data)} bytes is not a whole number of "
                           f"{POINT_BYTES}-byte points (x, y, z, intensity, ring float32)")
    return np.frombuffer(data, dtype="<f4").reshape(-1, 5)


def read_lidar_file(path: str | Path) -> np.ndarray:
    """A .pcd.bin file as (P, 5) float32 points; a missing, empty or cut file is an error naming it."""
    if not Path(path).is_file():
        raise DatasetFileMissing(f"LiDAR file {path} does not exist")
    return lidar_points(Path(path).read_bytes(), path)


# ---------------------------------------------------------------------------------------- a keyframe's sensors
def sample_data(nusc, sample: dict | str, channel: str) -> dict:
    """The sample_data record of `channel` at a keyframe (its record or token)."""
    if isinstance(sample, str):
        sample = nusc.get("sample", sample)
    if channel not in sample["data"]:
        raise DatasetError(f"sample {sample['token']} has no {channel} data")
    return nusc.get("sample_data", sample["data"][channel])


def sensor_to_ego(nusc, record: dict) -> Transform:
    """The sensor's mounting (calibrated_sensor) of a sample_data record: sensor -> base_link."""
    calib = nusc.get("calibrated_sensor", record["calibrated_sensor_token"])
    return Transform.from_nuscenes(calib["translation"], calib["rotation"])


def camera_intrinsic(nusc, record: dict) -> np.ndarray:
    """The 3x3 K of a camera sample_data record."""
    calib = nusc.get("calibrated_sensor", record["calibrated_sensor_token"])
    intrinsic = np.asarray(calib["camera_intrinsic"], dtype=float)
    if intrinsic.shape != (3, 3):
        raise DatasetError(f"calibrated_sensor {calib['token']} of {record.get('channel', 'a camera')}: "
                           "camera_intrinsic is not 3x3")
    return intrinsic


def ego_pose(nusc, record: dict) -> Transform:
    """The ego pose at a sample_data record's timestamp: base_link -> global (the `map` frame of our bags)."""
    pose = nusc.get("ego_pose", record["ego_pose_token"])
    return Transform.from_nuscenes(pose["translation"], pose["rotation"])


def data_path(nusc, record: dict) -> Path:
    """The file of a sample_data record."""
    return Path(nusc.dataroot) / record["filename"]


def sample_rig(nusc, sample_token: str) -> Rig:
    """The six cameras' and the LiDAR's calibration at this keyframe (the dataset's, not the shipped default rig)."""
    cameras = {}
    for name in CAMERA_NAMES:
        record = sample_data(nusc, sample_token, name)
        cameras[name] = CameraCalibration(name, camera_intrinsic(nusc, record), sensor_to_ego(nusc, record),
                                          int(record["width"]), int(record["height"]))
    return Rig(cameras, sensor_to_ego(nusc, sample_data(nusc, sample_token, LIDAR_NAME)))


def sample_images(nusc, sample_token: str, reduction: int = 1) -> dict[str, np.ndarray]:
    """RGB images of the six cameras of a keyframe (at 1/`reduction` scale); a missing, truncated or corrupt file
    is a DatasetError (an evaluation never scores a half-grey image as if it were real)."""
    return {name: read_image_rgb(data_path(nusc, sample_data(nusc, sample_token, name)), reduction)
            for name in CAMERA_NAMES}
