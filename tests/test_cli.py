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


def test_cli_errors_are_one_line_not_tracebacks(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(f'[patrons]\nfile = "{tmp_path / "p.toml"}"\n[[vendor]]\nid = "demo"\n'
                    'start = "https://www.vendor.com/"\nhosts = ["www.vendor.com"]\ngroups = ["wolcott"]\n')
    by_option = _cli("check-config", "--config", str(good))
    assert by_option.returncode == 0 and "(1 vendor," in by_option.stdout, by_option.stdout
    neither = _cli("check-config")
    assert neither.returncode == 2 and "Which configuration file" in neither.stderr
    patrons = tmp_path / "p.toml"
    no_tty = _cli("patrons", "add", "--file", str(patrons), "--card", "29000000000042", "--groups", "g", stdin="1234\n")
    assert no_tty.returncode == 1 and "--pin-stdin" in no_tty.stderr and "Traceback" not in no_tty.stderr
    short = _cli("patrons", "add", "--file", str(patrons), "--card", "29000000000042", "--groups", "g",
                 "--pin-stdin", stdin="12\n")
    assert short.returncode == 1 and "at least 4" in short.stderr
    nowhere = _cli("patrons", "add", "--file", str(tmp_path / "no" / "such" / "p.toml"), "--card", "1",
                   "--groups", "g", "--pin-stdin", stdin="123456\n")
    assert nowhere.returncode == 1 and "does not exist" in nowhere.stderr and "Traceback" not in nowhere.stderr
    status = _cli("patrons", "add", "--help")
    assert "active, expired, blocked" in status.stdout


def test_every_command_and_option_has_help() -> None:
    import argparse

    from proxy.cli import build_parser

    def walk(parser: argparse.ArgumentParser, where: str) -> list[str]:
        missing = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {a.dest: a.help for a in action._choices_actions}
                for name, sub in action.choices.items():
                    if not helps.get(name):
                        missing.append(f"{where} {name}")
                    missing += walk(sub, f"{where} {name}")
            elif not isinstance(action, argparse._HelpAction) and not action.help:
                missing.append(f"{where} {'/'.join(action.option_strings) or action.dest}")
        return missing

    assert walk(build_parser(), "libproxy") == []


def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        from tests.support import free_port

        result = subprocess.run([sys.executable, "-m", "proxy", "demo", "--port", str(port),
                                 "--vendor-port", str(free_port()), "--staff-port", str(free_port()),
                                 "--state-dir", str(tmp_path / "demo")], capture_output=True, text=True, timeout=60,
                                check=False)
    assert result.returncode == 1
    assert "cannot listen" in result.stderr and "Traceback" not in result.stderr


def test_stats_names_an_unknown_vendor(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(f'[patrons]\nfile = "{tmp_path / "p.toml"}"\n[proxy]\nstate_dir = "{tmp_path / "state"}"\n'
                    '[[vendor]]\nid = "demo"\nstart = "https://www.vendor.com/"\nhosts = ["www.vendor.com"]\n'
                    'groups = ["wolcott"]\n')
    result = _cli("stats", "--config", str(good), "--vendor", "nosuch")
    assert result.returncode == 1 and "no vendor 'nosuch'" in result.stderr and "demo" in result.stderr


def test_a_missing_patrons_file_is_named_by_check_config_and_serve(tmp_path: Path) -> None:
    from tests.support import free_port

    path = tmp_path / "proxy.toml"
    path.write_text(f'[proxy]\nlisten = "127.0.0.1:{free_port()}"\nstate_dir = "{tmp_path / "state"}"\n'
                    f'[patrons]\nfile = "{tmp_path / "nobody.toml"}"\n[admin]\nlisten = ""\n'
                    '[[vendor]]\nid = "demo"\nstart = "https://www.vendor.com/"\nhosts = ["www.vendor.com"]\n'
                    'groups = ["wolcott"]\n')
    checked = _cli("check-config", str(path))
    assert checked.returncode == 0, checked.stdout
    assert "warning: [patrons] file" in checked.stdout and "nobody.toml does not exist" in checked.stdout
    assert "patrons add --file" in checked.stdout
    served = _cli("serve", "--config", str(path))
    assert served.returncode == 1
    assert "cannot start" in served.stderr and "nobody.toml" in served.stderr, served.stderr
    assert "Traceback" not in served.stderr
