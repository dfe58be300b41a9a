"""Private files written whole: a leaf, importing nothing of the proxy."""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically, readable and writable by the proxy's user only.

    A reader sees the old file or the new one, never half of it. The temporary file is named for
    this process, so several processes writing at once (workers, a command run beside the
    service) cannot write into each other's.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    # SECURITY: 0600 from the first byte: keys, hashes and counts are nobody else's to read.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
