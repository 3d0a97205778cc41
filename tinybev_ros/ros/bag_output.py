"""Writing a rosbag2 bag so that nothing half-written ever sits at the target path.

The bag is written into a hidden directory beside the target (same file system) under the target's own name,
so the storage file inside is already `<name>.db3` / `<name>.mcap` as rosbag2 names it; only a complete,
closed bag is renamed into place. A crash or kill leaves at most the hidden `.<name>.partial-*` directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType

from rosbags.rosbag2 import StoragePlugin, Writer

STORAGES: dict[str, StoragePlugin] = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
BAG_VERSION = 9  # metadata.yaml version of Jazzy/Kilted rosbag2 (carries RIHS01 type hashes)


class BagExistsError(FileExistsError):
    """The target path exists and overwriting was not asked for."""


def check_target(target: Path, force: bool) -> None:
    if target.exists() and not force:
        raise BagExistsError(f"{target} already exists; pass --force to overwrite it")


class AtomicBagWriter:
    """`with AtomicBagWriter(target, "sqlite3", force) as writer:` gives an open rosbags `Writer`."""

    def __init__(self, target: str | Path, storage: str = "sqlite3", force: bool = False) -> None:
        if storage not in STORAGES:
            raise ValueError(f"unknown storage '{storage}' (choose from {', '.join(STORAGES)})")
        self.target = Path(target).absolute()
        self.storage = storage
        self.force = force
        self._staging: Path | None = None
        self.writer: Writer | None = None

    def __enter__(self) -> Writer:
        check_target(self.target, self.force)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self._staging = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.partial-", dir=self.target.parent))
        self.writer = Writer(self._staging / self.target.name, version=BAG_VERSION,
                             storage_plugin=STORAGES[self.storage])
        self.writer.open()
        return self.writer

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        assert self.writer is not None and self._staging is not None
        try:
            if exc_type is not None:
                self.writer.abort()
                return
            self.writer.close()
            self._publish(self._staging / self.target.name)
        finally:
            shutil.rmtree(self._staging, ignore_errors=True)

    def _publish(self, finished: Path) -> None:
        """Move the closed bag into place; an existing target (with --force) is swapped out, then deleted."""
        check_target(self.target, self.force)
        old = None
        if self.target.exists():
            old = self._staging / ".replaced"
            os.replace(self.target, old)
        os.replace(finished, self.target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def bag_size_bytes(path: str | Path) -> int:
    """Total size of the files of a bag directory."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
