"""One run per output folder, held for as long as the run lives.

A second `tinybev train`, `distill` or `ablate` into a folder a run is using would mix two runs' checkpoints, and
its first checkpoint write would remove the temp folder the other is writing (stale temp folders are cleared
before each write). An exclusive `flock` on `<out>/.lock` refuses it in one line; the kernel releases the lock
however the holder ends (SIGKILL included), so a stale lock never blocks a resume. A folder the lock created is
removed again if the run wrote nothing into it (a run refused for a bad dataset leaves no output folder).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tinybev_ros.errors import ConfigError

LOCK_FILE = ".lock"


@contextmanager
def run_lock(folder: str | Path) -> Iterator[None]:
    """Hold `folder` for this process (created if need be); ConfigError naming the holder if another has it."""
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with open(folder / LOCK_FILE, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise ConfigError(f"--out {folder} is in use by a run still going ({holder}); wait for it to end, "
                                  "or choose another --out") from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}\n")
            handle.flush()
            yield  # closing the file releases the lock
    finally:
        if created and os.listdir(folder) == [LOCK_FILE]:  # a run that failed before writing anything leaves no folder
            (folder / LOCK_FILE).unlink()
            folder.rmdir()
