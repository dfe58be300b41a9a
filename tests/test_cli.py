"""The command line: check-config and patrons add, as a separate process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.test_config import BAD_CONFIG


def _cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy", *args], input=stdin, capture_output=True, text=True,
                          timeout=60, check=False)


def test_cli_check_config_and_patrons_add(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(BAD_CONFIG)
    result = _cli("check-config", str(bad))
    assert result.returncode == 1
    assert result.stdout.count("\n  - ") >= 20
    assert "Traceback" not in result.stdout + result.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text("[proxy\nlisten=")
    result = _cli("check-config", str(broken))
    assert result.returncode == 1 and "not valid TOML" in result.stdout
    missing = _cli("check-config", str(tmp_path / "nope.toml"))
    assert missing.returncode == 1 and "cannot read" in missing.stdout

    patrons = tmp_path / "patrons.toml"
    added = _cli("patrons", "add", "--file", str(patrons), "--card", "29000000000042", "--groups",
                 "wolcott,bibliomation", "--home", "wolcott", "--pin-stdin", stdin="9753\n")
    assert added.returncode == 0, added.stderr
    text = patrons.read_text()
    assert "9753" not in text and "scrypt$" in text
    assert oct(patrons.stat().st_mode & 0o777) == "0o600"
    empty = _cli("patrons", "add", "--file", str(patrons), "--card", "1", "--groups", "g", "--pin-stdin", stdin="\n")
    assert empty.returncode == 1

    good = tmp_path / "good.toml"
    good.write_text(json.dumps({}).replace("{}", "") + f"""
[patrons]
file = "{patrons}"
[[vendor]]
id = "demo"
start = "https://www.vendor.com/"
hosts = ["www.vendor.com"]
groups = ["wolcott"]
""")
    ok = _cli("check-config", str(good), "--probe")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "OK" in ok.stdout
