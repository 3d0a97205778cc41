"""SIGTERM handled as Ctrl-C by every `tinybev` command (cli.py) and `nuscenes_to_bag`.

Batch systems (SLURM, Kubernetes, torchrun, `timeout`) stop a job with SIGTERM, whose default action ends the
process at once: no `finally`, no `except BaseException`, so temp folders beside their targets stay behind and the
user sees no message. Raised as KeyboardInterrupt, SIGTERM unwinds like Ctrl-C: every atomic write removes its
temp files, and the command line prints "interrupted" (exit 130).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt (main thread only: elsewhere signals cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
