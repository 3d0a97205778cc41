"""Files that are either whole or absent: written to a temp file beside the target, then renamed into place.

Every writer of checkpoints, caches, reports, pictures and exports goes through `atomic_path`, so an
interrupted or failing write never leaves a half-written file where a reader (or a resumed run) would find it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _process_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which would race with other threads later.
_UMASK = _process_umask()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temp path beside `path` to write to, named `.NAME.*.partial` so that no glob for the real files (such as
    `*.safetensors` in a cache) ever picks up a write in progress or one a killed process left behind.

    On a clean exit it replaces `path` with the permissions a new file gets (mkstemp's are 0600); on any error it
    is removed and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> Path:
    """`text` (UTF-8) at `path`, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
