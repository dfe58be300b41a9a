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
