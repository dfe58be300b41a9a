"""Checking a configuration file as a whole: every problem at once; the shipped examples."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy import config as config_mod
from proxy.errors import ConfigError

BAD_CONFIG = """
[proxy]
listen = "nowhere"
host = "bad host!"
tls_cert = "missing.pem"
secret = "plain-text-secret"
max_upload = "lots"

[sessions]
idle = "3 weeks"
lifetime = "1h"
store = "floppy"
tipo = 1

[assertion]
header = "X Bad"
lifetime = "2h"

[network]
trusted_proxies = ["not-a-cidr"]

[[network.library]]
name = "main"
cidrs = ["300.1.1.1/24"]

[[vendor]]
id = "Bad Id"
start = "ftp://x/"
hosts = ["exa mple.com"]
domains = ["com"]

[[vendor]]
id = "dup"
title = "A"
start = "https://other.example/"
hosts = ["a.example"]
groups = ["g"]
anonymous_paths = ["open/*"]

[[vendor]]
id = "dup"
start = "https://a.example/"
hosts = ["b.example"]
groups = ["g"]

[[vendor]]
id = "third"
start = "https://a.example/"
hosts = ["a.example"]
groups = ["g"]
"""


def test_config_lists_every_problem_at_once(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(BAD_CONFIG)
    with pytest.raises(ConfigError) as info:
        config_mod.load(path)
    text = "\n".join(info.value.problems)
    for expected in ("[proxy] listen", "[proxy] host", "[proxy] tls_cert", "[proxy] secret", "[proxy] max_upload",
                     "[sessions] idle", "[sessions] store", "[sessions] tipo", "[assertion] header",
                     "[assertion] lifetime", "[network] trusted_proxies", "cidrs", "groups",
                     '[[vendor]] "Bad Id" id', "start", "exa mple.com", '"com"', "is used by another vendor",
                     'also listed by vendor "dup"', "anonymous_paths", "not in this vendor's hosts"):
        assert expected in text, expected
    assert len(info.value.problems) >= 20


def test_example_configs_are_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = Path(__file__).resolve().parents[1]
    monkeypatch.setenv("LIBPROXY_SECRET", "s" * 40)
    cfg = config_mod.load(root / "config" / "example.toml")
    assert cfg.vendors and cfg.network.libraries
    monkeypatch.setenv("LDAP_BIND_PASSWORD", "sample")
    monkeypatch.setenv("LIBPROXY_REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("LIBPROXY_STATS_URL", "postgresql://libproxy@127.0.0.1:5432/libproxy")
    docker = config_mod.load(root / "config" / "docker.toml")
    assert docker.patrons.source == "ldap" and docker.sessions.store == "redis"
    assert config_mod.load(root / "config" / "ldap-example.toml").patrons.source == "ldap"


def test_messages_name_places_one_way_and_values_as_toml(tmp_path: Path) -> None:
    """Issue 12's polish: one line per mistake, TOML spelling, ranges, userinfo, one naming."""
    path = tmp_path / "c.toml"
    path.write_text("""
[proxy]
listen = "127.0.0.1:99999"
secret = "file:short.txt"
[[vendor]]
id = "demo"
start = "https://user:pw@www.vendor.com/"
hosts = ["www.vendor.com", "www.other.com:99999"]
groups = 5
cookie_passthrough = "yes"
""")
    (tmp_path / "short.txt").write_text("abc")
    with pytest.raises(ConfigError) as info:
        config_mod.load(path)
    problems = info.value.problems
    text = "\n".join(problems)
    assert "[proxy] listen: port 99999 is out of the range 1-65535" in text
    assert "[proxy] secret: must be at least 32 characters" in text
    assert '[[vendor]] "demo" start: "https://user:pw@www.vendor.com/" must not contain a user name' in text
    assert '"www.other.com:99999" has port 99999, out of the range 1-65535' in text
    assert '[[vendor]] "demo" cookie_passthrough: must be true or false, not "yes"' in text
    assert sum("groups" in p for p in problems) == 1
    assert "[vendor " not in text and "True" not in text and "'" not in text.replace("vendor's", "")


def test_example_toml_shows_every_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12: config/example.toml must show every option the proxy reads (patron sources other
    than the local file have their own example files)."""
    from proxy.settings import Reader

    asked: set[tuple[str, str]] = set()
    original = Reader.raw

    def recording(self: Reader, key: str, default: object) -> object:
        asked.add((self.where, key))
        return original(self, key, default)

    monkeypatch.setattr(Reader, "raw", recording)
    root = Path(__file__).resolve().parents[1]
    config_mod.load(root / "config" / "example.toml")
    text = (root / "config" / "example.toml").read_text()
    import re

    def shown(key: str) -> bool:
        return bool(re.search(rf"(?m)^\s*#?\s*{re.escape(key)}\s*=", text)
                    or re.search(rf"\[\[?(?:[\w.]+\.)?{re.escape(key)}\]", text))

    missing = sorted(f"{where} {key}" for where, key in asked if not where.startswith("patrons") and not shown(key))
    assert missing == []


def test_a_mistyped_secret_is_never_echoed_and_odd_paths_are_problems(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9" * 20)
    path.write_text('[proxy]\nsecret = 918273645546372819\nstate_dir = "~no-such-user-here/var"\n'
                    '[sessions]\nstore = "redis"\nredis_url = "file:latin1.txt"\n')
    with pytest.raises(ConfigError) as info:
        config_mod.load(path)
    text = "\n".join(info.value.problems)
    assert "918273645546372819" not in text and "[proxy] secret: must be a string" in text
    assert "home folder of a user this machine does not have" in text
    assert "is not UTF-8 text" in text
