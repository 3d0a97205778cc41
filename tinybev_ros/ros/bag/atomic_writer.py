"""Writing a rosbag2 bag so that nothing half-written ever sits at the target path, and nothing else is replaced.

The bag is written into a hidden directory beside the target (same file system) under the target's own name,
so the storage file inside is already `<name>.db3` / `<name>.mcap` as rosbag2 names it; only a complete,
closed bag is renamed into place. A crash or kill leaves at most the hidden `.<name>.partial-<pid>-*`
directory; the next writer of the same target finds it (its owner pid is dead) and hands it to `on_stale`
(default: delete it, with one log line; the recorder recovers it instead, recover.py). A write that fails
(a full disk) deletes the staging directory, except for the recorder's (`keep_failed`): what it flushed cannot be
recorded again, so it stays for `tinybev bag recover`. `--force` replaces only a rosbag2 bag (a directory with
metadata.yaml), never an arbitrary directory.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from types import TracebackType

from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.rosbag2.storage_mcap import McapWriter
from rosbags.rosbag2.storage_sqlite3 import Sqlite3Writer

log = logging.getLogger("tinybev.bag")

STORAGES: dict[str, StoragePlugin] = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
# metadata.yaml version 8 (Iron's): it carries the RIHS01 type hashes Jazzy and later check, and keeps each topic's
# offered QoS as a YAML string, which is how Humble reads it (version 9 writes a list: Humble's `ros2 bag` then
# fails with "bad conversion"); Jazzy and later read both (rosbag2_storage/yaml.hpp).
BAG_VERSION = 8


class BagTargetError(ValueError):
    """A bag cannot be written at the target path: it exists (and --force was not given, or it is not a bag), or
    the storage cannot use that path."""


STALE_UNOWNED_S = 3600.0  # a staging folder without an owner pid in its name (older versions) is stale after this


def is_bag(path: Path) -> bool:
    """A rosbag2 bag as rosbag2 and this package write it: a directory holding metadata.yaml."""
    return path.is_dir() and (path / "metadata.yaml").is_file()


def check_sqlite_path(path: Path, storage: str = "sqlite3") -> None:
    """rosbags opens sqlite3 storage as the URI `file:<path>` without quoting it, so a '#' or '?' ends the path
    there and '%XX' is decoded: the database would be written to (or looked for at) another file."""
    bad = sorted(set(str(path)) & set("#?%"))
    if storage == "sqlite3" and bad:
        raise BagTargetError(f"{path}: a sqlite3 bag's path cannot contain {' or '.join(repr(c) for c in bad)} (the "
                             "storage library reads the path as a URI); rename it, or use --storage mcap")


def check_target(target: Path, force: bool) -> None:
    """Refuse an existing target unless --force; even then, refuse anything that is not a bag."""
    if not (target.exists() or target.is_symlink()):
        return
    if not force:
        raise BagTargetError(f"{target} already exists; pass --force to overwrite it")
    if not is_bag(target):
        raise BagTargetError(f"{target} exists and is not a rosbag2 bag (no metadata.yaml); --force replaces only "
                             "bags: remove it yourself or choose another path")


def staging_owner(staging: Path) -> int | None:
    """The pid in `.<name>.partial-<pid>-<random>`, None for names without one."""
    pid = staging.name.rsplit(".partial-", 1)[-1].split("-", 1)[0]
    return int(pid) if pid.isdigit() else None


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def stale_staging(target: Path) -> list[Path]:
    """Staging folders of `target` whose writer is gone (its pid is dead, or unowned and untouched for an hour)."""
    stale = []
    for staging in sorted(target.parent.glob(f".{target.name}.partial-*")):
        owner = staging_owner(staging)
        dead = (not process_alive(owner) if owner is not None
                else time.time() - staging.stat().st_mtime > STALE_UNOWNED_S)
        if staging.is_dir() and dead:
            stale.append(staging)
    return stale


def remove_stale(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)
    log.warning("removed %s, left by a killed writer (pid %s)", staging, staging_owner(staging) or "unknown")


def flush(writer: Writer) -> None:
    """Make every message written so far survive a kill or power loss.

    rosbags 0.11 has no public flush: its sqlite3 storage holds one transaction until close, and its mcap storage
    keeps up to 1 MiB in memory. So this reaches into the (pinned) storage objects: commit the transaction, or
    close the pending chunk and fsync. A killed recorder then loses only what came after the last flush.
    """
    storage = writer.storage
    if isinstance(storage, Sqlite3Writer):
        storage.conn.commit()
    elif isinstance(storage, McapWriter):
        if storage.chunk.msgs:
            storage.close_chunk()
        storage.bio.flush()
        os.fsync(storage.bio.fileno())


class AtomicBagWriter:
    """`with AtomicBagWriter(target, "sqlite3", force) as writer:` gives an open rosbags `Writer`."""

    def __init__(self, target: str | Path, storage: str = "sqlite3", force: bool = False,
                 on_stale: Callable[[Path], None] = remove_stale, keep_failed: bool = False) -> None:
        if storage not in STORAGES:
            raise ValueError(f"unknown storage '{storage}' (choose from {', '.join(STORAGES)})")
        self.target = Path(target).absolute()
        self.storage = storage
        self.force = force
        self.on_stale = on_stale
        self.keep_failed = keep_failed  # a recording cannot be made again: a failed one stays as a killed one would
        self._staging: Path | None = None
        self.writer: Writer | None = None

    def __enter__(self) -> Writer:
        check_sqlite_path(self.target, self.storage)
        check_target(self.target, self.force)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        for staging in stale_staging(self.target):
            self.on_stale(staging)
        self._staging = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.partial-{os.getpid()}-",
                                              dir=self.target.parent))
        try:
            writer = Writer(self._staging / self.target.name, version=BAG_VERSION,
                            storage_plugin=STORAGES[self.storage])
            writer.open()
        except BaseException:  # nothing written yet: no staging folder to keep
            shutil.rmtree(self._staging, ignore_errors=True)
            raise
        self.writer = writer
        return writer

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        assert self.writer is not None and self._staging is not None
        try:
            if exc_type is not None:
                self._fail()
                return
            self.writer.close()
        except BaseException:
            self._fail()
            raise
        finished = self._staging / self.target.name
        try:
            self._publish(finished)
        except BaseException:  # a complete bag is never deleted: say where it is
            log.error("the finished bag could not be moved to %s; it is kept in %s", self.target, finished)
            raise
        shutil.rmtree(self._staging, ignore_errors=True)

    @property
    def staging(self) -> Path | None:
        """The hidden folder the bag is written in (kept after a failure with `keep_failed`)."""
        return self._staging

    def _fail(self) -> None:
        """Close the storage unpublished; delete what was written, or keep it (`keep_failed`) for `recover`."""
        with suppress(Exception):  # on a full disk closing fails too; the error that got here is the one to report
            self.writer.abort()
        if not self.keep_failed:
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
