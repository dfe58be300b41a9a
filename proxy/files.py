"""Private files written whole: a leaf, importing nothing of the proxy."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically, readable and writable by the proxy's user only.

    A reader sees the old file or the new one, never half of it, also after a power cut (the
    data is on disk before the name changes). Each write has a temporary file of its own, so
    writers at once (threads, workers, containers on one volume) never write into each other's;
    the last to finish wins.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # SECURITY: mkstemp creates a new file (O_EXCL, 0600, no symlink followed): a file or link
    # planted under a predictable temporary name cannot receive keys or hashes.
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # not every file system lets a directory be synced
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
