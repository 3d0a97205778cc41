"""Which scenes and keyframes a split holds: one answer for training, evaluation, the ablation and the demo.

A split's scenes come from the dataroot's `splits.json` when it has one (synthetic datasets, or a user's own
split), else from the devkit's official lists (`create_splits_scenes()`). On a mini version "train"/"val" mean
"mini_train"/"mini_val", as the devkit names them; the nuScenes evaluators filter their ground truth by those
devkit names, which `devkit_split` and `devkit_split_of` give.
"""

from __future__ import annotations

import json
from pathlib import Path

from nuscenes.nuscenes import NuScenes
from nuscenes.utils.splits import create_splits_scenes

from tinybev_ros.errors import DatasetError


def devkit_split(version: str, split: str) -> str:
    """The devkit split name for a user's split: "val" on v1.0-mini means "mini_val"."""
    if version.endswith("mini") and split in ("train", "val"):
        return f"mini_{split}"
    return split


def devkit_split_of(scene_name: str, version: str) -> str:
    """The devkit split that lists this scene (evaluators filter by these names)."""
    candidates = ("mini_val", "mini_train") if "mini" in version else ("val", "train", "test")
    splits = create_splits_scenes()
    for split in candidates:
        if scene_name in splits[split]:
            return split
    raise DatasetError(f"scene {scene_name} is in no devkit split of {version}; the evaluators cannot score it "
                       "(give --bag without --dataroot to replay it without metrics)")


def split_scene_names(dataroot: str | Path, version: str, split: str) -> list[str]:
    """Scene names of `split` (splits.json in `<dataroot>/<version>/` or `<dataroot>/`, else the devkit's)."""
    candidates = [Path(dataroot) / version / "splits.json", Path(dataroot) / "splits.json"]
    found = next((path for path in candidates if path.is_file()), None)
    table = json.loads(found.read_text()) if found is not None else create_splits_scenes()
    source = str(found) if found is not None else "the devkit's create_splits_scenes()"
    name = devkit_split(version, split) if devkit_split(version, split) in table else split
    if name not in table:
        raise DatasetError(f"{source} has no split {split!r} for {version}; it has {sorted(table)}")
    return list(table[name])


def split_sample_tokens(nusc: NuScenes, split: str) -> list[str]:
    """Keyframe tokens of the split's scenes present in `nusc`, in scene-name order then time order."""
    wanted = set(split_scene_names(nusc.dataroot, nusc.version, split))
    tokens: list[str] = []
    for scene in sorted(nusc.scene, key=lambda s: s["name"]):
        if scene["name"] not in wanted:
            continue
        token = scene["first_sample_token"]
        while token:
            tokens.append(token)
            token = nusc.get("sample", token)["next"]
    if not tokens:
        raise DatasetError(f"split {split!r} has no scenes in {nusc.dataroot} ({nusc.version})")
    return tokens
