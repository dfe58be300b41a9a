"""The LDAP patron source against a real OpenLDAP slapd on loopback (see ldap_server.py).

The directory is config/bibliomation.ldif and the options are config/ldap-example.toml's
[patrons.ldap] table with only servers, the bind password and timeouts replaced, so the sample
configuration and the sample tree are tested together. Nothing is mocked: a wrong PIN fails
because slapd says so. The last tests run the whole proxy (tests/support.py) in front of it: the
sign-in pages, the 503 page, and signed-in patrons who keep reading while the directory is down
or hangs.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import tomllib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ldap3
import pytest
from ldap3.utils.dn import parse_dn

from proxy import config as config_mod
from proxy.errors import DirectoryUnavailable
from proxy.membership import Membership
from proxy.patrons.base import CardRefused
from proxy.patrons.ldap import (
    PERSONAL_ATTRIBUTES,
    LdapAuthenticator,
    LdapOptions,
    card_dn,
    card_filter,
    expires_at,
    parse_options,
)
from proxy.settings import Problems, Reader
from tests.ldap_server import (
    GROUPS,
    PATRONS,
    REPO,
    SERVICE_PASSWORD,
    Slapd,
    TlsFiles,
    free_port,
    make_tls_files,
    missing_reason,
    whoami,
)
from tests.support import PROXY_HOST, Browser, run_proxy

EXAMPLE = REPO / "config" / "ldap-example.toml"
SECRET = b"ldap-test-secret-0123456789abcdef"
PASSWORD_ENV = "LIBPROXY_TEST_LDAP_BIND_PASSWORD"
NO_SLAPD = missing_reason()
needs_slapd = pytest.mark.skipif(NO_SLAPD is not None, reason=NO_SLAPD or "")

# (sign-in name, PIN, groups, home library): the active patrons of bibliomation.ldif.
ACTIVE = [
    ("29000100000011", "1111", {"bibliomation", "wolcott"}, "wolcott"),
    ("wolcott1", "1111", {"bibliomation", "wolcott"}, "wolcott"),
    ("29000100000029", "2222", {"bibliomation", "wolcott", "staff", "genealogy"}, "wolcott"),
    ("29000200000010", "3333", {"bibliomation", "beacon-falls", "genealogy"}, "beacon-falls"),
    ("derby1", "4444", {"bibliomation", "derby"}, "derby"),
    ("29000900000016", "5555", {"bibliomation"}, None),
    ("seymour1", "Läsa 2024!", {"bibliomation", "seymour"}, "seymour"),
]


@pytest.fixture(autouse=True)
def _bind_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, SERVICE_PASSWORD)


# ----------------------------------------------------------------------------------------------
# Helpers


def parse(table: dict[str, Any], base: Path = REPO) -> tuple[LdapOptions, list[str]]:
    """parse_options over a [patrons] table holding ``ldap = table``; (options, problems)."""
    problems = Problems()
    options = parse_options(Reader({"source": "ldap", "ldap": table}, "patrons", problems, base))
    return options, problems.items


def example_table(*urls: str, **overrides: Any) -> dict[str, Any]:
    """The example configuration's [patrons.ldap], pointed at ``urls`` with short timeouts."""
    table: dict[str, Any] = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))["patrons"]["ldap"]
    table.update(servers=list(urls), bind_password=f"env:{PASSWORD_ENV}", connect_timeout="2s",
                 response_timeout="2s", timeout="5s", pool_size=4, server_retry="30s")
    for key, value in overrides.items():
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
    return table


def options_for(*urls: str, **overrides: Any) -> LdapOptions:
    options, problems = parse(example_table(*urls, **overrides))
    assert problems == []
    return options


def direct_overrides() -> dict[str, Any]:
    return {"mode": "direct", "dn_template": f"uid={{card}},{PATRONS}", "bind_dn": None,
            "bind_password": None, "filter": None}


@asynccontextmanager
async def running(options: LdapOptions) -> AsyncIterator[LdapAuthenticator]:
    auth = LdapAuthenticator(options, SECRET)
    await auth.start()
    try:
        yield auth
    finally:
        await auth.close()


def closed_url() -> str:
    """An ldap:// URL on which nothing listens (connection refused at once)."""
    return f"ldap://127.0.0.1:{free_port()}"


# ----------------------------------------------------------------------------------------------
# Servers


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    if NO_SLAPD:
        pytest.skip(NO_SLAPD)
    with Slapd(tmp_path_factory.mktemp("slapd")) as server:
        yield server


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_directory(tmp_path_factory: pytest.TempPathFactory, tls_files: TlsFiles) -> Iterator[Slapd]:
    if NO_SLAPD:
        pytest.skip(NO_SLAPD)
    with Slapd(tmp_path_factory.mktemp("slapd-tls"), tls=tls_files) as server:
        yield server


@pytest.fixture
def spare(tmp_path: Path) -> Iterator[Callable[..., Slapd]]:
    """Start throw-away servers (to stop, pause or restart); all stopped at the end."""
    if NO_SLAPD:
        pytest.skip(NO_SLAPD)
    started: list[Slapd] = []

    def start(**kwargs: Any) -> Slapd:
        server = Slapd(tmp_path / f"slapd-{len(started)}", **kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


# ----------------------------------------------------------------------------------------------
# Pure parts: escaping, dates, options


@pytest.mark.parametrize(("card", "expected"), [
    ("*", r"(uid=\2a)"),
    ("wolcott1)(uid=*", r"(uid=wolcott1\29\28uid=\2a)"),
    ("back\\slash", r"(uid=back\5cslash)"),
    ("nul\x00", r"(uid=nul\00)"),
])
def test_card_filter_escapes_every_metacharacter(card: str, expected: str) -> None:
    assert card_filter("(uid={card})", card) == expected


def test_card_dn_keeps_the_card_one_value() -> None:
    dn = card_dn(f"uid={{card}},{PATRONS}", "x,ou=staff+cn=admin")
    assert len(parse_dn(dn)) == len(parse_dn(PATRONS)) + 1
    assert dn.startswith(r"uid=x\,ou\=staff\+cn\=admin,")


@pytest.mark.parametrize(("raw", "fmt", "expected"), [
    ("20250630120000Z", "generalized-time", datetime(2025, 6, 30, 12, tzinfo=UTC)),
    ("202506301200-0500", "generalized-time", datetime(2025, 6, 30, 17, tzinfo=UTC)),
    ("19023", "days-since-epoch", datetime(2022, 1, 31, tzinfo=UTC)),
    ("-1", "days-since-epoch", None),
])
def test_expiry_formats(raw: str, fmt: str, expected: datetime | None) -> None:
    assert expires_at(raw, fmt) == expected


def test_expiry_date_is_valid_through_the_whole_day() -> None:
    moment = expires_at("2025-06-30", "date")
    assert moment is not None
    local = moment.astimezone()
    assert (local.year, local.month, local.day, local.hour) == (2025, 7, 1, 0)
    with pytest.raises(ValueError):
        expires_at("next tuesday", "generalized-time")


def test_example_configuration_loads_and_hides_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LDAP_BIND_PASSWORD", SERVICE_PASSWORD)
    cfg = config_mod.load(EXAMPLE)
    options = cfg.patrons.options
    assert cfg.patrons.source == "ldap"
    assert isinstance(options, LdapOptions)
    assert options.bind_password == SERVICE_PASSWORD
    assert SERVICE_PASSWORD not in repr(options)
    assert options.cache_ttl == 0  # the cache is off unless asked for


def test_only_the_attributes_the_rules_need_are_requested() -> None:
    options = options_for("ldap://127.0.0.1:389")
    wanted = {name.casefold() for name in options.attributes()}
    assert wanted == {"entryuuid", "departmentnumber", "shadowexpire", "employeetype", "memberof"}
    assert not wanted & PERSONAL_ATTRIBUTES
    grouped = options_for("ldap://127.0.0.1:389", group_base_dn=GROUPS)
    assert "memberof" not in {name.casefold() for name in grouped.attributes()}


def test_every_problem_in_the_options_is_reported_at_once() -> None:
    _, problems = parse({
        "servers": ["ldap://ldap.example.org", "http://wrong.example.org"],
        "mode": "search",
        "filter": "uid={card}",
        "bind_dn": "not a dn",
        "home_attribute": "mail",
        "group_rule": [{"attribute": "cn", "values": [], "groups": ["bad group"]}],
        "timeout": "soon",
        "cache_ttl": "2h",
        "pool_size": 0,
        "colour": "blue",
    })
    text = "\n".join(problems)
    for expected in (
        "[patrons.ldap] servers: 'ldap://ldap.example.org' would send PINs unencrypted",
        "[patrons.ldap] servers: 'http://wrong.example.org' must be ldap://",
        "[patrons.ldap] base_dn: is required",
        "[patrons.ldap] filter: 'uid={card}' is not an LDAP filter",
        "[patrons.ldap] bind_dn: 'not a dn' is not a valid DN",
        "[patrons.ldap] bind_password: is required with bind_dn",
        "[patrons.ldap] home_attribute: 'mail' holds personal data",
        "[patrons.ldap] libraries: must map",
        "[patrons.ldap.group_rule #1] attribute: 'cn' holds personal data",
        "[patrons.ldap.group_rule #1] values: must list at least one value",
        "[patrons.ldap] group_rule: group 'bad group'",
        "[patrons.ldap] timeout: must be a duration",
        "[patrons.ldap] cache_ttl: must be at most 900s",
        "[patrons.ldap] pool_size: must be at least 1",
        "[patrons.ldap] colour: is not a known option",
    ):
        assert expected in text, f"missing {expected!r} in:\n{text}"


async def test_bad_input_is_refused_before_the_directory() -> None:
    # Nothing listens on this port: any attempt to ask the directory would raise.
    async with running(options_for(closed_url())) as auth:
        for card, pin in [
            ("29000100000011", ""),          # empty PIN
            ("", "1111"),                    # empty card
            ("9" * 65, "1111"),              # overlong card
            ("29000100000011", "1" * 129),   # overlong PIN
            ("29000100000011\x00", "1111"),  # NUL
            ("29000100000011", "11\n11"),    # control character
        ]:
            assert await auth.authenticate(card, pin) is None
        with pytest.raises(DirectoryUnavailable):
            await auth.authenticate("29000100000011", "1111")


# ----------------------------------------------------------------------------------------------
# Signing in against slapd


@needs_slapd
@pytest.mark.parametrize(("card", "pin", "groups", "home"), ACTIVE)
async def test_right_pin_gives_home_and_network_memberships(
    directory: Slapd, card: str, pin: str, groups: set[str], home: str | None,
) -> None:
    async with running(options_for(directory.url)) as auth:
        membership = await auth.authenticate(card, pin)
    assert membership is not None
    assert membership.groups == groups
    assert membership.home_library == home
    assert membership.source == "ldap"


@needs_slapd
async def test_wrong_pin_and_unknown_card_look_the_same(directory: Slapd) -> None:
    async with running(options_for(directory.url)) as auth:
        assert await auth.authenticate("29000100000011", "1112") is None
        assert await auth.authenticate("29000100000011", "2222") is None  # another patron's PIN
        assert await auth.authenticate("29000199999999", "1111") is None
        assert await auth.authenticate("nobody-at-all", "1111") is None


@needs_slapd
@pytest.mark.parametrize("direct", [False, True], ids=["search", "direct"])
async def test_expired_and_blocked_cards_are_refused_only_to_their_holders(directory: Slapd, direct: bool) -> None:
    overrides = direct_overrides() if direct else {}
    async with running(options_for(directory.url, **overrides)) as auth:
        with pytest.raises(CardRefused) as expired:
            await auth.authenticate("expired1", "6666")
        assert expired.value.reason == "expired"
        with pytest.raises(CardRefused) as blocked:
            await auth.authenticate("blocked1", "7777")
        assert blocked.value.reason == "blocked"
        # Without the PIN, a refused card is just a failed sign-in: its status stays private.
        assert await auth.authenticate("expired1", "7777") is None
        assert await auth.authenticate("blocked1", "6666") is None


@needs_slapd
async def test_membership_holds_only_groups_home_and_a_pseudonymous_key(directory: Slapd) -> None:
    async with running(options_for(directory.url)) as auth:
        by_card = await auth.authenticate("29000100000011", "1111")
        by_name = await auth.authenticate("wolcott1", "1111")
        other = await auth.authenticate("derby1", "4444")
    assert by_card is not None and by_name is not None and other is not None
    assert by_card == by_name  # one patron, one key, whichever name they sign in with
    assert by_card.key != other.key
    data = by_card.to_dict()
    assert set(data) == {"groups", "home_library", "key", "source"}
    flat = repr(data).casefold()
    for private in ("29000100000011", "wolcott1", "1111", "uid=", "ou=patrons", "sample reader",
                    "patrons.example", "sample street"):
        assert private not in flat
    assert isinstance(by_card.key, str) and len(by_card.key) == 32


@needs_slapd
async def test_the_directory_returns_no_personal_attribute(directory: Slapd) -> None:
    auth = LdapAuthenticator(options_for(directory.url), SECRET)
    service = auth._directory._service
    try:
        # The premise: the service account of the test slapd may read names and e-mails...
        _, _, everything = await asyncio.to_thread(service.run, lambda conn: auth._directory._search(
            conn, PATRONS, "(uid=wolcott1)", ldap3.SUBTREE, ["cn", "mail"], 2))
        assert set(everything[0].attributes) == {"cn", "mail"}
        # ...but the proxy does not ask for them.
        entry = await asyncio.to_thread(service.run, lambda conn: auth._directory._find("wolcott1", conn))
    finally:
        await auth.close()
    assert entry is not None
    assert set(entry.attributes) == {"entryuuid", "departmentnumber", "shadowexpire"}


@needs_slapd
async def test_group_search_gives_the_same_groups_as_member_of(directory: Slapd) -> None:
    async with running(options_for(directory.url, group_base_dn=GROUPS)) as auth:
        membership = await auth.authenticate("29000100000029", "2222")
    assert membership is not None
    assert membership.groups == {"bibliomation", "wolcott", "staff", "genealogy"}


@needs_slapd
async def test_direct_mode_binds_to_the_template_dn(directory: Slapd) -> None:
    async with running(options_for(directory.url, **direct_overrides())) as auth:
        membership = await auth.authenticate("wolcott2", "2222")
        assert membership is not None
        assert membership.groups == {"bibliomation", "wolcott", "staff", "genealogy"}
        assert await auth.authenticate("wolcott2", "2223") is None
        assert await auth.authenticate("nobody", "2222") is None
        # The card is one escaped RDN value: these name no entry at all.
        for card in ("wolcott2,ou=patrons", "wolcott2+uid=wolcott2", "#wolcott2", "wolcott2,"):
            assert await auth.authenticate(card, "2222") is None


@needs_slapd
async def test_anonymous_search_mode(directory: Slapd) -> None:
    async with running(options_for(directory.url, bind_dn=None, bind_password=None)) as auth:
        membership = await auth.authenticate("29000200000010", "3333")
        assert membership is not None and membership.home_library == "beacon-falls"
        assert await auth.authenticate("29000200000010", "3334") is None


@needs_slapd
async def test_a_refused_service_account_is_a_broken_directory_not_a_wrong_pin(
    directory: Slapd, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "not-the-password")
    async with running(options_for(directory.url)) as auth:
        with pytest.raises(DirectoryUnavailable):
            await auth.authenticate("29000100000011", "1111")
        problems = await auth.probe()
    assert len(problems) == 1 and "refused the proxy's service account" in problems[0]
    assert directory.url in problems[0]


@needs_slapd
async def test_empty_pin_never_authenticates(directory: Slapd) -> None:
    dn = f"uid=wolcott1,{PATRONS}"
    # The premise: this directory answers a bind with a DN and an empty password with success.
    assert whoami(directory.url, dn, "") == "anonymous"
    assert whoami(directory.url, dn, "1111") == f"dn:{dn}"
    for overrides in ({}, direct_overrides()):
        async with running(options_for(directory.url, **overrides)) as auth:
            assert await auth.authenticate("wolcott1", "") is None
            assert await auth.authenticate("wolcott1", "1111") is not None


@needs_slapd
@pytest.mark.parametrize("card", [
    "2900010000001*",          # unescaped: a prefix match on wolcott1's card
    "*",                       # unescaped: every patron
    "wolcott1)(uid=*",         # unescaped: an injected clause
    "*)(|(uid=wolcott1",
    r"wolcott\31",             # unescaped: \31 is "1", i.e. wolcott1
    "wolcott1\\",
    "wolcott1\x00",
    "(uid=wolcott1)",
])
async def test_filter_metacharacters_match_nothing(directory: Slapd, card: str) -> None:
    async with running(options_for(directory.url)) as auth:
        assert await auth.authenticate(card, "1111") is None


@needs_slapd
async def test_a_filter_matching_several_entries_signs_nobody_in(directory: Slapd) -> None:
    loose = "(|(uid={card})(departmentNumber=WOLCOTT))"
    async with running(options_for(directory.url, filter=loose)) as auth:
        assert await auth.authenticate("wolcott1", "1111") is None


@needs_slapd
async def test_concurrent_sign_ins_share_a_few_reused_connections(directory: Slapd) -> None:
    options = options_for(directory.url)
    async with running(options) as auth:
        calls = [auth.authenticate(card, pin) for card, pin, _, _ in ACTIVE * 4]
        results = await asyncio.gather(*calls)
        assert [r.groups if r else None for r in results] == [set(g) for _, _, g, _ in ACTIVE * 4]
        for _ in range(5):
            assert await auth.authenticate("derby1", "4444") is not None
        idle = auth._directory._service._idle, auth._directory._binds._idle
        assert all(1 <= len(pool) <= options.pool_size for pool in idle)


# ----------------------------------------------------------------------------------------------
# TLS


@needs_slapd
async def test_start_tls_and_ldaps_with_the_test_ca(tls_directory: Slapd, tls_files: TlsFiles) -> None:
    for url, start_tls in ((tls_directory.url, True), (tls_directory.ldaps_url, False)):
        options = options_for(url, start_tls=start_tls, ca_file=str(tls_files.ca))
        async with running(options) as auth:
            assert await auth.probe() == []
            membership = await auth.authenticate("29000100000011", "1111")
            assert membership is not None and membership.home_library == "wolcott"


@needs_slapd
async def test_an_untrusted_certificate_is_refused(tls_directory: Slapd, tmp_path: Path) -> None:
    stranger = make_tls_files(tmp_path, label="stranger")
    for url, start_tls in ((tls_directory.url, True), (tls_directory.ldaps_url, False)):
        options = options_for(url, start_tls=start_tls, ca_file=str(stranger.ca))
        async with running(options) as auth:
            with pytest.raises(DirectoryUnavailable):
                await auth.authenticate("29000100000011", "1111")
            problems = await auth.probe()
        assert len(problems) == 1 and "CERTIFICATE_VERIFY_FAILED" in problems[0], problems


@needs_slapd
async def test_a_certificate_for_another_host_is_refused(spare: Callable[..., Slapd], tmp_path: Path) -> None:
    files = make_tls_files(tmp_path / "tls", names=("ldap.example.invalid",))
    server = spare(tls=files)
    async with running(options_for(server.url, start_tls=True, ca_file=str(files.ca))) as auth:
        with pytest.raises(DirectoryUnavailable):
            await auth.authenticate("29000100000011", "1111")
        problems = await auth.probe()
    assert len(problems) == 1 and "not issued for this host name" in problems[0], problems


# ----------------------------------------------------------------------------------------------
# Failover, outages, slowness


@needs_slapd
async def test_failover_when_the_first_server_stops(spare: Callable[..., Slapd]) -> None:
    first, second = spare(), spare()
    async with running(options_for(first.url, second.url)) as auth:
        assert await auth.authenticate("wolcott1", "1111") is not None
        first.stop()  # the pooled connections to it are now dead
        for _ in range(3):
            assert await auth.authenticate("wolcott1", "1111") is not None
            assert await auth.authenticate("wolcott1", "1112") is None
        problems = await auth.probe()
    assert len(problems) == 1 and problems[0].startswith(f"{first.url}: cannot connect")


@needs_slapd
async def test_failover_when_the_first_server_hangs(spare: Callable[..., Slapd]) -> None:
    first, second = spare(), spare()
    options = options_for(first.url, second.url, connect_timeout="1s", response_timeout="1s", timeout="4s")
    async with running(options) as auth:
        assert await auth.authenticate("wolcott1", "1111") is not None
        first.pause()
        try:
            started = time.monotonic()
            assert await auth.authenticate("wolcott1", "1111") is not None  # after one response_timeout
            assert time.monotonic() - started < 3
            started = time.monotonic()
            assert await auth.authenticate("derby1", "4444") is not None  # the hung server is skipped now
            assert time.monotonic() - started < 0.5
        finally:
            first.resume()


@needs_slapd
async def test_a_first_server_down_from_the_start_is_skipped(directory: Slapd) -> None:
    async with running(options_for(closed_url(), directory.url)) as auth:
        assert await auth.authenticate("derby1", "4444") is not None


@needs_slapd
async def test_all_servers_down_is_directory_unavailable(spare: Callable[..., Slapd]) -> None:
    first, second = spare(), spare()
    async with running(options_for(first.url, second.url)) as auth:
        assert await auth.authenticate("wolcott1", "1111") is not None
        first.stop()
        second.stop()
        started = time.monotonic()
        for card, pin in (("wolcott1", "1111"), ("wolcott1", "wrong"), ("nobody", "1111")):
            with pytest.raises(DirectoryUnavailable):
                await auth.authenticate(card, pin)
        assert time.monotonic() - started < 2  # refused connections fail fast, no timeout needed
        second.start()  # and the proxy notices when a server is back
        assert await auth.authenticate("wolcott1", "1111") is not None


@needs_slapd
async def test_a_restarted_server_is_reconnected(spare: Callable[..., Slapd]) -> None:
    server = spare()
    async with running(options_for(server.url)) as auth:
        assert await auth.authenticate("wolcott1", "1111") is not None
        server.stop()
        server.start()
        assert await auth.authenticate("wolcott1", "1111") is not None


@needs_slapd
async def test_a_slow_directory_times_out_without_stalling_the_event_loop(spare: Callable[..., Slapd]) -> None:
    server = spare()
    options = options_for(server.url, connect_timeout="1s", response_timeout="1s", timeout="1500ms")
    async with running(options) as auth:
        assert await auth.authenticate("wolcott1", "1111") is not None
        server.pause()
        ticks: list[float] = []

        async def tick() -> None:
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.01)

        ticker = asyncio.create_task(tick())
        started = time.monotonic()
        try:
            with pytest.raises(DirectoryUnavailable):
                await auth.authenticate("wolcott1", "1111")
        finally:
            elapsed = time.monotonic() - started
            ticker.cancel()
            server.resume()
        assert 1.4 <= elapsed < 3.0
        gaps = [b - a for a, b in itertools.pairwise(ticks)]
        assert len(ticks) >= 50 and max(gaps) < 0.25, (len(ticks), max(gaps))
        # Once it answers again, so does the proxy.
        assert await auth.authenticate("wolcott1", "1111") is not None


# ----------------------------------------------------------------------------------------------
# Cache, probe, logs


@needs_slapd
async def test_the_cache_spares_the_directory_and_never_holds_the_pin(spare: Callable[..., Slapd]) -> None:
    server = spare()
    async with running(options_for(server.url, cache_ttl="60s")) as auth:
        first = await auth.authenticate("29000100000029", "2222")
        assert first is not None
        server.stop()  # from now on, only the cache can answer
        assert await auth.authenticate("29000100000029", "2222") == first
        with pytest.raises(DirectoryUnavailable):  # another PIN is not in the cache
            await auth.authenticate("29000100000029", "2223")
        with pytest.raises(DirectoryUnavailable):  # nor is another name of the same patron
            await auth.authenticate("wolcott2", "2222")
        cache = auth._cache
        assert cache is not None and len(cache) == 1
        (key, value), = cache.items()
        assert isinstance(key, bytes) and len(key) == 32
        assert b"2222" not in key and b"29000100000029" not in key
        assert isinstance(value, Membership) and "2222" not in repr(value)


@needs_slapd
async def test_without_cache_ttl_every_sign_in_asks_the_directory(spare: Callable[..., Slapd]) -> None:
    server = spare()
    async with running(options_for(server.url)) as auth:
        assert auth._cache is None
        assert await auth.authenticate("29000100000029", "2222") is not None
        server.stop()
        with pytest.raises(DirectoryUnavailable):
            await auth.authenticate("29000100000029", "2222")


@needs_slapd
async def test_probe_names_what_failed(directory: Slapd) -> None:
    async with running(options_for(directory.url, group_base_dn=GROUPS)) as auth:
        assert await auth.probe() == []
    down = closed_url()
    options = options_for(down, directory.url, base_dn="ou=nowhere,dc=bibliomation,dc=org")
    async with running(options) as auth:
        problems = await auth.probe()
    assert len(problems) == 2
    assert problems[0].startswith(f"{down}: cannot connect")
    assert problems[1].startswith(f"{directory.url}: base_dn 'ou=nowhere,dc=bibliomation,dc=org' was not found")


@needs_slapd
async def test_logs_hold_no_card_pin_dn_or_directory_value(
    directory: Slapd, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running(options_for(directory.url)) as auth:
        await auth.authenticate("29000100000011", "1111")
        await auth.authenticate("29000100000011", "9999")
        await auth.authenticate("29000199999999", "9999")
        for card, pin in (("expired1", "6666"), ("blocked1", "7777")):
            with pytest.raises(CardRefused):
                await auth.authenticate(card, pin)
    async with running(options_for(directory.url, filter="(|(uid={card})(departmentNumber=WOLCOTT))")) as auth:
        await auth.authenticate("wolcott1", "1111")  # ambiguous: logged as a warning
    async with running(options_for(closed_url())) as auth:
        with pytest.raises(DirectoryUnavailable):
            await auth.authenticate("29000100000011", "1111")
    assert "more than one entry" in caplog.text and "failed" in caplog.text
    for private in ("29000100000011", "29000199999999", "1111", "9999", "6666", "wolcott1", "expired1",
                    "uid=", "ou=patrons", "Sample Reader", "WOLCOTT", "DERBY", "19023"):
        assert private not in caplog.text


# ----------------------------------------------------------------------------------------------
# Through the proxy: the sign-in page, the 503 page, and signed-in patrons who keep reading


def ldap_proxy_config(tmp: Path, echo: Any, table: dict[str, Any]) -> Any:
    return config_mod.from_dict({
        "proxy": {"listen": "127.0.0.1:8080", "host": PROXY_HOST, "state_dir": str(tmp / "state")},
        "library": {"id": "wolcott.lib.ct.us", "name": "Wolcott Public Library"},
        "patrons": {"source": "ldap", "ldap": table},
        "upstream": {"connect_timeout": "2s", "read_timeout": "2s"},
        "admin": {"listen": ""},
        "vendor": [{"id": "echo", "title": "Echo Vendor", "start": f"{echo.origin}/", "hosts": [echo.origin],
                    "groups": ["wolcott"]}],
    }, base=tmp)


async def sign_in(proxy: Any, card: str, pin: str, url: str) -> tuple[Browser, Any]:
    browser = Browser(proxy)
    return browser, await browser.sign_in(card, pin, url)


@needs_slapd
async def test_proxy_sign_in_pages_and_an_outage(tmp_path: Path, echo: Any, spare: Callable[..., Slapd]) -> None:
    server = spare()
    url = f"{echo.origin}/echo"
    async with run_proxy(ldap_proxy_config(tmp_path, echo, example_table(server.url))) as proxy:
        reader, reply = await sign_in(proxy, "29000100000011", "1111", url)
        assert reply.status == 200 and reply.json()["path"] == "/echo"
        failed = []
        for card, pin in (("29000100000011", "1112"), ("29000199999999", "1111")):
            browser, reply = await sign_in(proxy, card, pin, url)
            await browser.close()
            failed.append(reply)
        assert [r.status for r in failed] == [401, 401]
        assert len({r.text.split('name="csrf" value="')[0] for r in failed}) == 1  # the same page
        browser, expired = await sign_in(proxy, "expired1", "6666", url)
        await browser.close()
        assert expired.status == 403 and "expired" in expired.text
        server.stop()
        browser, down = await sign_in(proxy, "29000100000029", "2222", url)
        await browser.close()
        assert down.status == 503 and "directory is unavailable" in down.text
        still = await reader.get(f"http://{proxy.proxied_host(echo.origin)}/echo/next", follow=False)
        assert still.status == 200 and still.json()["path"] == "/echo/next"
        await reader.close()


@needs_slapd
async def test_proxy_keeps_serving_while_the_directory_hangs(
    tmp_path: Path, echo: Any, spare: Callable[..., Slapd],
) -> None:
    server = spare()
    table = example_table(server.url, connect_timeout="1s", response_timeout="1s", timeout="2s")
    url = f"{echo.origin}/echo"
    async with run_proxy(ldap_proxy_config(tmp_path, echo, table)) as proxy:
        reader, reply = await sign_in(proxy, "29000100000011", "1111", url)
        assert reply.status == 200
        server.pause()
        try:
            hanging = asyncio.create_task(sign_in(proxy, "29000100000029", "2222", url))
            await asyncio.sleep(0.1)
            host = proxy.proxied_host(echo.origin)
            for n in range(5):
                started = time.monotonic()
                page = await reader.get(f"http://{host}/echo/{n}", follow=False)
                assert page.status == 200 and time.monotonic() - started < 0.5
            assert not hanging.done()  # the sign-in is still waiting for the directory
            browser, down = await hanging
            await browser.close()
            assert down.status == 503
        finally:
            server.resume()
        await reader.close()
