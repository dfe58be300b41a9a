"""proxy/files.py: private files replaced whole."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from proxy.files import write_private


def test_written_private_and_whole(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "keys.json"
    write_private(path, "first")
    write_private(path, "second")
    assert path.read_text() == "second"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["keys.json"]  # no temporary file left


def test_a_failed_write_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "patrons.toml"
    write_private(path, "old")
    with pytest.raises(UnicodeEncodeError):
        write_private(path, "\udcff")  # cannot be written as UTF-8
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["patrons.toml"]


def test_writers_at_once_never_mix(tmp_path: Path) -> None:
    """Threads of one process (one pid) writing the same file: each reader sees one whole text."""
    import threading

    path = tmp_path / "needed-hosts.json"
    texts = [str(n) * 50_000 for n in range(8)]
    errors: list[BaseException] = []

    def write(text: str) -> None:
        try:
            for _ in range(20):
                write_private(path, text)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(t,)) for t in texts]
    for t in threads:
        t.start()
    seen = set()
    while any(t.is_alive() for t in threads):
        if path.exists():
            seen.add(path.read_text())
    for t in threads:
        t.join()
    assert errors == []
    assert seen <= set(texts) and path.read_text() in texts
    assert [p.name for p in tmp_path.iterdir()] == ["needed-hosts.json"]
