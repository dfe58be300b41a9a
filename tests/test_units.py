"""Unit tests of the pure parts: host mapping, URL parsing, header policy, cookie jar, sessions,
assertion minting, configuration checking and the command line."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import jwt
import pytest

from proxy import config as config_mod
from proxy.assertion import AssertionMinter, load_or_create_keys
from proxy.errors import ConfigError
from proxy.forward import cookies
from proxy.forward.headers import OutboundPolicy, outbound_headers, response_headers
from proxy.membership import Membership
from proxy.patrons.hashing import hash_pin, pseudonym, verify_pin
from proxy.rewrite import HeaderMapper, RewriteTable
from proxy.sessions.memory import MemorySessionStore
from proxy.vendors import (
    Origin,
    VendorMap,
    decode_label,
    encode_label,
    parse_absolute_url,
)

# ---------------------------------------------------------------------------------------------
# Host <-> label mapping


@pytest.mark.parametrize(
    ("origin", "label"),
    [
        (Origin("https", "www.vendor.com", 443), "www-vendor-com"),
        (Origin("http", "www.vendor.com", 80), "www-vendor-com---h"),
        (Origin("http", "127.0.0.1", 8081), "127-0-0-1---h8081"),
        (Origin("https", "my-vendor.com", 8443), "my--vendor-com---s8443"),
        (Origin("https", "a--b.example", 443), "a----b-example"),
        (Origin("https", "xn--bcher-kva.example", 443), "xn----bcher--kva-example"),
    ],
)
def test_label_encoding_examples(origin: Origin, label: str) -> None:
    assert encode_label(origin) == label
    decoded = decode_label(label)
    assert decoded is not None
    assert (decoded.scheme, decoded.host, decoded.port) == (origin.scheme, origin.host, origin.port)


def test_label_encoding_is_reversible_and_unambiguous() -> None:
    rng = random.Random(7)
    alphabet = "abc0-"
    seen: dict[str, Origin] = {}
    for _ in range(5000):
        labels = []
        for _ in range(rng.randint(1, 4)):
            core = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6))).strip("-") or "a"
            labels.append(core)
        host = ".".join(labels)
        scheme = rng.choice(["http", "https"])
        port = rng.choice([80, 443, 8080, 1])
        origin = Origin(scheme, host, port)
        label = encode_label(origin)
        assert seen.setdefault(label, origin) == origin, (label, origin, seen[label])
        decoded = decode_label(label)
        assert decoded is not None and (decoded.scheme, decoded.host, decoded.port) == (scheme, host, port)


@pytest.mark.parametrize("label", ["", "-a", "a-", "a---", "a---x", "a---h080", "a---s443", "a---h80",
                                   "a-----b", "a---h1---h2", "a_b", "a---s99999"])
def test_labels_encode_label_cannot_produce_are_refused(label: str) -> None:
    assert decode_label(label) is None


def _vendor(**kw: object) -> config_mod.VendorConfig:
    base: dict[str, object] = {"id": "v", "title": "V", "start": "https://www.vendor.com/",
                               "hosts": ("www.vendor.com",), "domains": (), "groups": frozenset({"g"})}
    base.update(kw)
    return config_mod.VendorConfig(**base)  # type: ignore[arg-type]


def test_vendor_map_domains_and_aliases() -> None:
    long_host = "a" * 30 + "." + "b" * 30 + ".vendor.com"
    vmap = VendorMap([_vendor(domains=("vendor.com",), hosts=("www.vendor.com", long_host))],
                     "proxy.lib.example", "https")
    assert vmap.match(Origin("https", "cdn.vendor.com", 443)) is not None
    assert vmap.match(Origin("https", "vendor.com", 443)) is not None
    assert vmap.match(Origin("https", "evilvendor.com", 443)) is None
    assert vmap.match(Origin("https", "vendor.com.evil.example", 443)) is None
    assert vmap.match(Origin("https", "cdn.vendor.com", 8443)) is None  # domains: default ports only
    netloc = vmap.proxied_netloc(Origin("https", long_host, 443))
    assert netloc is not None and len(netloc.split(".")[0]) <= 63 and "---a" in netloc
    assert vmap.origin_for_host(netloc) == Origin("https", long_host, 443)
    assert vmap.origin_for_host("www-vendor-com.proxy.lib.example") == Origin("https", "www.vendor.com", 443)
    assert vmap.origin_for_host("www-evil-com.proxy.lib.example") is None
    assert vmap.origin_for_host("x.www-vendor-com.proxy.lib.example") is None
    mapper = HeaderMapper(RewriteTable(vmap))
    assert mapper.location("https://WWW.Vendor.COM./a?b=c") == "https://www-vendor-com.proxy.lib.example/a?b=c"


@pytest.mark.parametrize("url", [
    "https://vendor.example@evil.example/", "https://vendor.example:443@evil.example",
    "https://evil.example\\@vendor.example/", "https://vendor.example%2eevil.example/",
    "https://vendor.example%00.evil.example/", "//evil.example", "///evil.example", "/\\evil.example",
    "http:evil.example", "java\tscript:alert(1)", "javascript:alert(1)", "ftp://vendor.example/",
    " https://vendor.example/", "https://vendor.example:99999/", "https://vendor.example:/",
    "https://[::1]/", "https:///", "",
])
def test_parse_absolute_url_refuses_ambiguous_input(url: str) -> None:
    assert parse_absolute_url(url) is None


def test_parse_absolute_url_normalises_hosts() -> None:
    parsed = parse_absolute_url("https://vendor\u3002example/a b?q=\u00e9")
    assert parsed is not None
    assert parsed.origin == Origin("https", "vendor.example", 443)
    assert parsed.rest == "/a%20b?q=%C3%A9"
    upper = parse_absolute_url("HTTPS://VENDOR.EXAMPLE./")
    assert upper is not None and upper.origin == Origin("https", "vendor.example", 443)


# ---------------------------------------------------------------------------------------------
# Header policy


def test_outbound_headers_allow_list_and_connection() -> None:
    policy = OutboundPolicy(map_origin=lambda v: None, map_referer=lambda v: None)
    inbound = [("Accept", "text/html"), ("X-Forwarded-For", "1.2.3.4"), ("x_forwarded_for", "1.2.3.4"),
               ("Cookie", "libproxy=abc"), ("Connection", "keep-alive, Accept"), ("Range", "bytes=0-1"),
               ("Range", "bytes=5-9"), ("Accept-Encoding", "gzip, compress, br;q=0.5, sdch"),
               ("Origin", "https://evil.example"), ("Sec-CH-UA", "x"), ("User-Agent", "UA")]
    out = outbound_headers(inbound, policy)
    assert out == [("Range", "bytes=0-1"), ("Accept-Encoding", "gzip, br;q=0.5"), ("User-Agent", "UA")]


def test_cookie_passthrough_never_forwards_the_proxy_cookie() -> None:
    policy = OutboundPolicy(map_origin=lambda v: None, map_referer=lambda v: None, cookie_passthrough=True,
                            proxy_cookie_names=frozenset({"libproxy"}))
    out = outbound_headers([("Cookie", "libproxy=sess; consent=yes; __Host-libproxy=x; libproxy_csrf=t")], policy)
    assert out == [("Cookie", "consent=yes")]


def test_response_headers_drop_cookies_and_pins() -> None:
    out = response_headers([("Set-Cookie", "a=b"), ("Content-Type", "text/html"), ("Strict-Transport-Security", "x"),
                            ("Alt-Svc", "h3=\":443\""), ("Connection", "X-Secret"), ("X-Secret", "1"),
                            ("Report-To", "{}"), ("Content-Length", "5"), ("ETag", '"e"')])
    assert out == [("Content-Type", "text/html"), ("ETag", '"e"')]


# ---------------------------------------------------------------------------------------------
# Vendor cookie jar


def test_cookie_jar_rules() -> None:
    jar: list[cookies.Record] = []
    now = 1_000_000.0
    for header in ("sid=1; Path=/", "shared=2; Domain=.vendor.com; Path=/", "deep=3; Path=/a/b",
                   "sec=4; Secure", "old=5; Max-Age=0", "bad=6; Domain=evil.example", "tld=7; Domain=com"):
        record = cookies.parse_set_cookie(header, "www.vendor.com", "/a/b/page", now)
        if record is not None:
            cookies.store(jar, record, now)
    assert {c["name"] for c in jar} == {"sid", "shared", "deep", "sec"}
    assert cookies.header_for(jar, "www.vendor.com", "/a/b/c", True, now) == "deep=3; sec=4; sid=1; shared=2"
    assert cookies.header_for(jar, "cdn.vendor.com", "/", False, now) == "shared=2"
    assert cookies.header_for(jar, "www.vendor.com", "/a/bc", False, now) == "sid=1; shared=2"
    expiring = cookies.parse_set_cookie("t=1; Max-Age=10", "www.vendor.com", "/", now)
    assert expiring is not None
    cookies.store(jar, expiring, now)
    assert "t=1" not in (cookies.header_for(jar, "www.vendor.com", "/", False, now + 11) or "")


def test_cookie_jar_is_bounded() -> None:
    jar: list[cookies.Record] = []
    for i in range(cookies.MAX_COOKIES * 2):
        record = cookies.parse_set_cookie(f"c{i}=v", "www.vendor.com", "/", 0.0)
        assert record is not None
        cookies.store(jar, record, 0.0)
    assert len(jar) == cookies.MAX_COOKIES
    assert cookies.parse_set_cookie("big=" + "x" * 5000, "www.vendor.com", "/", 0.0) is None


# ---------------------------------------------------------------------------------------------
# Sessions


async def test_sessions_expire_idle_and_absolute() -> None:
    now = [1000.0]
    store = MemorySessionStore(idle=60, lifetime=300, max_sessions=10, clock=lambda: now[0])
    membership = Membership(groups=frozenset({"g"}))
    session = await store.create(membership)
    for _ in range(9):  # used every 30 s: never idle...
        now[0] += 30
        found = await store.get(session.id)
        assert found is not None
        await store.touch(found)
    now[0] += 30  # ...but 300 s after creation it ends anyway
    assert await store.get(session.id) is None
    idle = await store.create(membership)
    now[0] += 61
    assert await store.get(idle.id) is None
    ended = await store.create(membership)
    await store.delete(ended.id)
    assert await store.get(ended.id) is None


async def test_tickets_are_one_time_and_short_lived() -> None:
    now = [0.0]
    store = MemorySessionStore(idle=60, lifetime=300, max_sessions=10, clock=lambda: now[0])
    await store.add_ticket("t" * 32, "sid", "/x", 60)
    assert await store.take_ticket("t" * 32) == ("sid", "/x")
    assert await store.take_ticket("t" * 32) is None
    await store.add_ticket("u" * 32, "sid", "/x", 60)
    now[0] += 61
    assert await store.take_ticket("u" * 32) is None


# ---------------------------------------------------------------------------------------------
# Assertion


def test_assertion_is_shared_until_near_expiry(tmp_path: Path) -> None:
    now = [10_000.0]
    keys = load_or_create_keys(tmp_path / "keys.json", "ES256")
    assert oct((tmp_path / "keys.json").stat().st_mode & 0o777) == "0o600"
    minter = AssertionMinter(keys, "https://proxy.lib.example", "wolcott.lib.ct.us", 300, clock=lambda: now[0])
    first = minter.token("gale")
    now[0] += 200
    assert minter.token("gale") == first
    assert minter.token("ebsco") != first
    now[0] += 50  # within the re-mint margin (60 s before expiry)
    second = minter.token("gale")
    assert second != first
    assert jwt.get_unverified_header(second)["kid"] == keys[0].kid
    # Keys survive a restart.
    assert load_or_create_keys(tmp_path / "keys.json", "ES256")[0].kid == keys[0].kid


def test_eddsa_keys(tmp_path: Path) -> None:
    keys = load_or_create_keys(tmp_path / "ed.json", "EdDSA")
    minter = AssertionMinter(keys, "https://p", "lib.example", 60)
    jwk = minter.jwks()["keys"][0]
    assert jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519"
    public = jwt.PyJWK(jwk).key
    claims = jwt.decode(minter.token("v"), public, algorithms=["EdDSA"], audience="v")
    assert claims["eduPersonScopedAffiliation"] == "member@lib.example"


# ---------------------------------------------------------------------------------------------
# PIN hashing


def test_pin_hashing() -> None:
    stored = hash_pin("2468", n_log2=10)
    assert verify_pin("2468", stored) and not verify_pin("2469", stored)
    assert not verify_pin("2468", "scrypt$99$8$1$AAAA$AAAA") and not verify_pin("2468", "garbage")
    assert pseudonym(b"k", "a") == pseudonym(b"k", "a") != pseudonym(b"k2", "a")


# ---------------------------------------------------------------------------------------------
# Configuration


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
                     "vendor 'Bad Id'] id", "start", "exa mple.com", "'com'", "is used by another vendor",
                     "also listed by vendor 'dup'", "anonymous_paths", "not in this vendor's hosts"):
        assert expected in text, expected
    assert len(info.value.problems) >= 20


def test_example_configs_are_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = Path(__file__).resolve().parents[1]
    monkeypatch.setenv("LIBPROXY_SECRET", "s" * 40)
    cfg = config_mod.load(root / "config" / "example.toml")
    assert cfg.vendors and cfg.network.libraries
    monkeypatch.setenv("LDAP_BIND_PASSWORD", "sample")
    monkeypatch.setenv("LIBPROXY_REDIS_URL", "redis://127.0.0.1:6379/0")
    docker = config_mod.load(root / "config" / "docker.toml")
    assert docker.patrons.source == "ldap" and docker.sessions.store == "redis"
    assert config_mod.load(root / "config" / "ldap-example.toml").patrons.source == "ldap"


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
