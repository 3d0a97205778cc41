"""Shared pytest set-up: ROS isolation for direct `pytest` runs, and shared fixtures."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

# tools/test sets these; a bare `pytest` gets the same isolation (and its log folder is removed at exit).
if "ROS_LOG_DIR" not in os.environ:
    os.environ["ROS_LOG_DIR"] = tempfile.mkdtemp(prefix="tinybev-roslog-")
    atexit.register(shutil.rmtree, os.environ["ROS_LOG_DIR"], ignore_errors=True)
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(os.getpid() % 100 + 1))
# camera bursts need the large shared-memory segment of the shipped Fast DDS profile
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE",
                      str(Path(__file__).resolve().parent.parent / "config" / "fastdds.xml"))


# --- synthetic nuScenes-format dataset (owner: SYNTH) -------------------------------------------------------
import dataclasses as _dataclasses  # noqa: E402
from pathlib import Path as _Path  # noqa: E402

import pytest as _pytest  # noqa: E402


@_dataclasses.dataclass(frozen=True)
class SynthDataset:
    """A generated dataroot: load it with `NuScenes(version, str(dataroot))`; `config` rebuilds any frame."""

    dataroot: _Path
    version: str
    config: object


@_pytest.fixture(scope="session")
def synth_dataset(tmp_path_factory) -> SynthDataset:
    """2 scenes x 8 s, keyframes only: scene-0061 (mini_train) and scene-0103 (mini_val), two maps."""
    from tinybev_ros.synth import SynthConfig, generate

    config = SynthConfig(scenes=2, seed=0, duration_s=8.0, version="v1.0-mini")
    root = generate(tmp_path_factory.mktemp("synth") / "nuscenes", config)
    return SynthDataset(root, config.version, config)
