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
from nuscenes.utils.splits import create_splits_scenes, get_scenes_of_split, is_predefined_split

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


# The version (its name's ending) of each devkit split: the evaluators' `load_gt` asserts the same pairs.
DEVKIT_SPLIT_VERSIONS = {"mini_train": "mini", "mini_val": "mini", "train": "trainval", "val": "trainval",
                         "train_detect": "trainval", "train_track": "trainval", "test": "test"}


def check_devkit_split(nusc: NuScenes, eval_set: str) -> None:
    """Refuse a split the nuScenes evaluators (detection, tracking) would fail on after the whole inference (`tinybev
    eval` checks before it, `evaluate` for every caller). They score the devkit's own lists for their own
    version, the test split only with annotations, and any other name from `<dataroot>/<version>/splits.json`."""
    way_out = "our other metrics (map, motion, occupancy, planning) take any split"
    if is_predefined_split(eval_set):
        version = DEVKIT_SPLIT_VERSIONS[eval_set]
        if not nusc.version.endswith(version):
            raise DatasetError(f"the nuScenes devkit scores split {eval_set!r} on v1.0-{version} only, not on "
                               f"{nusc.version}, so detection and tracking cannot run; {way_out}")
        if eval_set == "test" and not nusc.sample_annotation:
            raise DatasetError(f"{nusc.dataroot} ({nusc.version}) has no annotations (the test split's are "
                               "withheld): detection and tracking cannot be scored; map and plan L2 can "
                               "(--tasks map,planning; motion, occupancy and collisions need annotations too)")
    else:
        custom = Path(nusc.dataroot) / nusc.version / "splits.json"
        if eval_set not in split_table(custom):
            raise DatasetError(f"split {eval_set!r} is not one of the devkit's, and the devkit reads other splits "
                               f"from {custom} only, which does not hold it: detection and tracking cannot run; "
                               f"{way_out}")
    present = {scene["name"] for scene in nusc.scene}
    ours = set(split_scene_names(nusc.dataroot, nusc.version, eval_set)) & present
    devkit = set(get_scenes_of_split(eval_set, nusc)) & present
    if ours != devkit:
        differ = sorted(ours ^ devkit)
        raise DatasetError(f"split {eval_set!r} here holds {len(ours)} of the dataroot's scenes and the devkit's "
                           f"{eval_set!r} {len(devkit)} ({len(differ)} differ, e.g. {differ[0]}): the devkit scores "
                           f"its own list of a split it defines, whatever a splits.json says (name yours "
                           f"differently); {way_out}")


def split_table(path: Path) -> dict:
    """A splits.json as {split name: scene names}; {} when there is none."""
    if not path.is_file():
        return {}
    try:
        table = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(table, dict):
        raise DatasetError(f"{path} must map split names to lists of scene names")
    return table


def split_scene_names(dataroot: str | Path, version: str, split: str) -> list[str]:
    """Scene names of `split` (splits.json in `<dataroot>/<version>/` or `<dataroot>/`, else the devkit's)."""
    candidates = [Path(dataroot) / version / "splits.json", Path(dataroot) / "splits.json"]
    found = next((path for path in candidates if path.is_file()), None)
    table = split_table(found) if found is not None else create_splits_scenes()
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
