"""The SIP2 patron source against pysip2's ACS, an independently written SIP2 server (see
tests/sip2_server.py), on loopback.

The options are config/sip2-example.toml's [patrons.sip2] table with only servers, TLS, the
password and timeouts replaced, so the sample configuration is tested too. Nothing is mocked: a
wrong PIN fails because the server's records say so. The codec is checked byte for byte against
pysip2's own codec. The last tests run the whole proxy in front of the server: sign-in pages,
the 503 page, and a patron whose personal data carry markers that must appear nowhere the proxy
writes.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import ssl
import time
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pysip2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy import config as config_mod
from proxy.errors import ConfigError, DirectoryUnavailable
from proxy.membership import Membership
from proxy.patrons import sip2_codec as codec
from proxy.patrons.base import CardRefused
from proxy.patrons.sip2 import STATUS_FLAGS, Sip2Authenticator, Sip2Options, parse_options
from proxy.settings import Problems, Reader
from tests.ldap_server import TlsFiles, free_port, make_tls_files
from tests.sip2_server import (
    INSTITUTION,
    SIP_PASSWORD,
    Patron,
    Relay,
    Sip2Service,
    closing_server,
    flags_with,
    silent_server,
    with_patron,
)
from tests.support import PROXY_HOST, Browser, run_proxy

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "config" / "sip2-example.toml"
SECRET = b"sip2-test-secret-0123456789abcdef"
PASSWORD_ENV = "LIBPROXY_TEST_SIP2_PASSWORD"
WOLCOTT = {"bibliomation", "wolcott"}


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, SIP_PASSWORD)


def parse(table: dict[str, Any]) -> tuple[Sip2Options, list[str]]:
    problems = Problems()
    options = parse_options(Reader({"source": "sip2", "sip2": table}, "patrons", problems, REPO))
    return options, problems.items


def example_table(*addresses: str, **overrides: Any) -> dict[str, Any]:
    """The example's [patrons.sip2], pointed at ``addresses`` (plain text on loopback)."""
    table: dict[str, Any] = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))["patrons"]["sip2"]
    table.update(servers=list(addresses), tls=False, login_password=f"env:{PASSWORD_ENV}", institution=INSTITUTION,
                 connect_timeout="2s", response_timeout="2s", timeout="5s", expiry_field="PA")
    table.pop("location_code")
    for key, value in overrides.items():
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
    return table


def options_for(*addresses: str, **overrides: Any) -> Sip2Options:
    options, problems = parse(example_table(*addresses, **overrides))
    assert problems == []
    return options


@asynccontextmanager
async def running(options: Sip2Options) -> AsyncIterator[Sip2Authenticator]:
    auth = Sip2Authenticator(options, SECRET)
    await auth.start()
    try:
        yield auth
    finally:
        await auth.close()


@pytest.fixture
async def service() -> AsyncIterator[Sip2Service]:
    async with Sip2Service() as server:
        yield server


def closed_address() -> str:
    return f"127.0.0.1:{free_port()}"


# ----------------------------------------------------------------------------------------------
# The codec, against pysip2's


def test_requests_decode_in_pysip2_exactly_as_sent() -> None:
    frame = codec.encode("63", "000" + "20250630    120000" + " " * 10,
                         [("AO", "BIBLIO"), ("AA", "29000100000011"), ("AC", ""), ("AD", "Läsa 2024!")],
                         sequence=7, encoding="utf-8")
    decoded = pysip2.decode_message(frame, encoding="utf-8")
    assert decoded.sequence_number == 7 and decoded.checksum == frame[-5:-1].decode()
    message = decoded.message
    assert isinstance(message, pysip2.PatronInformationRequest)
    assert (message.institution_id, message.patron_identifier, message.patron_password) == (
        "BIBLIO", "29000100000011", "Läsa 2024!")
    assert frame == (b"63000" + b"20250630    120000" + b" " * 10 + b"AOBIBLIO|AA29000100000011|AC|AD"
                     + "Läsa 2024!".encode() + b"|AY7AZ" + frame[-5:-1] + b"\r")


def test_answers_of_pysip2_decode_to_the_wanted_fields_only() -> None:
    answer = pysip2.PatronStatusResponse(
        patron_status="Y" + " " * 13, language="000", transaction_date="20250630    120000",
        institution_id="BIBLIO", patron_identifier="123", personal_name="Private Person",
        valid_patron="Y", valid_patron_password="N", screen_message=("Hello Private Person",),
    )
    frame = pysip2.encode_message(answer, sequence_number=3, checksum=True, encoding="utf-8")
    decoded = codec.decode(frame, command="24", fixed_length=35, wanted=frozenset({"AA", "BL", "CQ"}),
                           checksums=True, encoding="utf-8")
    assert decoded.fields == {"AA": "123", "BL": "Y", "CQ": "N"}
    assert decoded.fixed.startswith("Y" + " " * 13) and decoded.sequence == 3
    assert "Private" not in repr(decoded)


@pytest.mark.parametrize(("frame", "fields"), [
    # Published in other SIP2 implementations' tests: an ACS login answer, and a login request.
    (b"941AY1AZFDFC\r", None),
    (b"9300CNuu|COpp|AY1AZF9E9\r", [("CN", "uu"), ("CO", "pp")]),
])
def test_golden_messages(frame: bytes, fields: list[tuple[str, str]] | None) -> None:
    if fields is None:
        answer = codec.decode(frame, command="94", fixed_length=1, wanted=frozenset(), checksums=True,
                              encoding="ascii")
        assert (answer.fixed, answer.sequence) == ("1", 1)
    else:
        assert codec.encode("93", "00", fields, sequence=1, encoding="ascii") == frame


@given(st.binary(min_size=1, max_size=300))
def test_checksums_match_pysip2_and_keep_leading_zeros(data: bytes) -> None:
    ours = codec.checksum(data)
    assert len(ours) == 4 and ours.decode() == pysip2.calculate_checksum(data)
    assert (sum(data) + int(ours, 16)) & 0xFFFF == 0


def test_a_checksum_with_leading_zeros_is_sent_whole() -> None:
    # Find a login whose checksum starts with "0" (the PyPI `sip2` client drops such zeros).
    # The checksum is the negated byte sum, so the sum must come close to 65536: a long field.
    for n in range(2000):
        frame = codec.encode("93", "00", [("CN", "user"), ("CO", "p" * n)], sequence=0, encoding="ascii")
        if frame[-5:-4] == b"0":
            break
    assert frame[-5:-4] == b"0" and len(frame.split(b"AZ")[1]) == 5
    assert pysip2.verify_checksum(frame[:-1])


@pytest.mark.parametrize("damage", [
    lambda f: f[:-2] + (b"0" if f[-2:-1] != b"0" else b"1") + b"\r",  # a wrong digit
    lambda f: f.replace(b"Y", b"N", 1),                              # a changed flag
    lambda f: f.split(b"AY")[0] + b"\r",                             # no trailer at all
])
def test_damaged_answers_are_refused(damage: Any) -> None:
    answer = pysip2.LoginResponse(ok="1")
    frame = damage(pysip2.encode_message(answer, sequence_number=1, checksum=True) + b"")
    with pytest.raises(codec.ChecksumError):
        codec.decode(frame, command="94", fixed_length=1, wanted=frozenset(), checksums=True, encoding="ascii")


@pytest.mark.parametrize("value", ["1|AD1111", "12\r63", "a\nb", "nul\x00"])
def test_values_that_would_add_fields_are_refused(value: str) -> None:
    assert not codec.valid_value(value)
    with pytest.raises(ValueError):
        codec.encode("63", "", [("AA", value)], sequence=None, encoding="utf-8")


# ----------------------------------------------------------------------------------------------
# Options


def test_example_configuration_loads_and_hides_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIP2_LOGIN_PASSWORD", SIP_PASSWORD)
    cfg = config_mod.load(EXAMPLE)
    options = cfg.patrons.options
    assert cfg.patrons.source == "sip2" and isinstance(options, Sip2Options)
    assert options.login_password == SIP_PASSWORD and SIP_PASSWORD not in repr(options)
    assert options.tls and options.verify and options.checksums
    assert options.wanted() == {"AA", "BL", "CQ", "AQ"}


def test_every_problem_in_the_options_is_reported_at_once() -> None:
    _, problems = parse({
        "servers": ["sip.example.org:6001", "no-port", "[::1]:6001"],
        "login_user": "proxy",
        "institution": "A|B",
        "home_field": "AE",
        "expiry_field": "lower",
        "groups": ["bad group"],
        "status": {"card_reported_lost": "maybe", "colour": "refuse"},
        "message": "checkout",
        "timeout": "1s",
        "response_timeout": "5s",
        "pool_size": 0,
        "colour": "blue",
    })
    text = "\n".join(problems)
    for expected in (
        "[patrons.sip2] servers: 'sip.example.org:6001' would send PINs unencrypted",
        "[patrons.sip2] servers: 'no-port' must be host:port",
        "[patrons.sip2] login_password: is required with login_user",
        "[patrons.sip2] institution: must not contain '|'",
        "[patrons.sip2] home_field: 'AE' holds personal data",
        "[patrons.sip2] expiry_field: 'lower' is not a SIP2 field identifier",
        "[patrons.sip2] groups: group 'bad group'",
        "[patrons.sip2.status] card_reported_lost: must be one of refuse, allow",
        "[patrons.sip2.status] colour: is not a known option",
        "[patrons.sip2] message: must be one of",
        "[patrons.sip2] timeout: must be at least as long",
        "[patrons.sip2] pool_size: must be at least 1",
        "[patrons.sip2] colour: is not a known option",
        "[patrons.sip2] libraries: must map",
    ):
        assert expected in text, f"missing {expected!r} in:\n{text}"
    assert "[::1]" not in text  # loopback: plain text is fine


def test_plain_text_off_loopback_needs_allow_plaintext() -> None:
    options, problems = parse(example_table("sip.example.org:6001", allow_plaintext=True))
    assert problems == [] and not options.tls
    options, problems = parse(example_table("sip.example.org:6001", tls=True))
    assert problems == []
    with pytest.raises(ConfigError):  # a hand-built options object is checked again
        Sip2Authenticator(Sip2Options(servers=(("10.1.2.3", 6001),)), SECRET)


def test_only_the_fields_the_rules_need_are_read() -> None:
    options = options_for("127.0.0.1:6001")
    assert options.wanted() == {"AA", "BL", "CQ", "AQ", "PA"}
    assert options_for("127.0.0.1:6001", libraries=None, home_field=None, expiry_field=None).wanted() == {
        "AA", "BL", "CQ"}


# ----------------------------------------------------------------------------------------------
# Signing in


@pytest.mark.parametrize("message", ["patron_information", "patron_status"])
async def test_right_pin_gives_home_and_network_memberships(service: Sip2Service, message: str) -> None:
    async with running(options_for(service.address, message=message)) as auth:
        wolcott = await auth.authenticate("29000100000011", "1111")
        spaced = await auth.authenticate("29000100000029", "2222")
        derby = await auth.authenticate("29000200000010", "3333")
        unmapped = await auth.authenticate("29000900000016", "5555")
        accented = await auth.authenticate("29000100000037", "Läsa 2024!")
    assert wolcott is not None and wolcott.groups == WOLCOTT and wolcott.home_library == "wolcott"
    assert spaced is not None and spaced.home_library == "wolcott"
    assert derby is not None and derby.groups == {"bibliomation", "derby"}
    assert unmapped is not None and unmapped.groups == {"bibliomation"} and unmapped.home_library is None
    assert accented is not None and accented.source == "sip2"


async def test_wrong_pin_and_unknown_card_look_the_same(service: Sip2Service) -> None:
    async with running(options_for(service.address)) as auth:
        assert await auth.authenticate("29000100000011", "1112") is None
        assert await auth.authenticate("29000100000011", "2222") is None
        assert await auth.authenticate("29000199999999", "1111") is None
        # Never sent: they would add fields to the request.
        assert await auth.authenticate("29000100000011|AD1111", "x") is None
        assert await auth.authenticate("29000100000011", "1111|CQY") is None
    assert service.counters.requests == 3


async def test_expired_and_blocked_cards_are_refused_only_to_their_holders(service: Sip2Service) -> None:
    async with running(options_for(service.address)) as auth:
        for card, pin, reason in (("expired1", "6666", "expired"), ("blocked1", "7777", "blocked"),
                                  ("lost1", "8888", "blocked")):
            with pytest.raises(CardRefused) as refused:
                await auth.authenticate(card, pin)
            assert refused.value.reason == reason
            assert await auth.authenticate(card, "0000") is None  # without the PIN: just a failed sign-in


@pytest.mark.parametrize("position", range(14), ids=STATUS_FLAGS)
async def test_each_status_flag_refuses_or_allows_as_configured(position: int) -> None:
    flag = STATUS_FLAGS[position]
    card = f"flag{position}"
    patrons = with_patron(card, Patron("4321", flags=flags_with(position)))
    async with Sip2Service(patrons=patrons) as server:
        default_refuses = flag in ("charge_privileges_denied", "card_reported_lost")
        for action in ("refuse", "allow", None):
            status = {flag: action} if action else {}
            async with running(options_for(server.address, status=status)) as auth:
                refuses = action == "refuse" or (action is None and default_refuses)
                if refuses:
                    with pytest.raises(CardRefused):
                        await auth.authenticate(card, "4321")
                else:
                    assert await auth.authenticate(card, "4321") is not None
                assert await auth.authenticate("29000100000011", "1111") is not None  # no flag: fine


async def test_a_server_that_does_not_check_pins_signs_nobody_in(service: Sip2Service) -> None:
    async with running(options_for(service.address)) as auth:
        with pytest.raises(DirectoryUnavailable):
            await auth.authenticate("nocq1", "1234")
        with pytest.raises(DirectoryUnavailable):  # an answer about another card: out of step
            await auth.authenticate("other1", "1234")


async def test_a_refused_sip_login_is_a_broken_service_not_a_wrong_pin(
    service: Sip2Service, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "not-the-password")
    async with running(options_for(service.address)) as auth:
        with pytest.raises(DirectoryUnavailable):
            await auth.authenticate("29000100000011", "1111")
        problems = await auth.probe()
    assert problems == [f"{service.address}: the SIP2 server refused the proxy's SIP account"]
    # Without any login, this server closes the connection: also a broken service.
    async with running(options_for(service.address, login_user=None, login_password=None)) as auth:
        with pytest.raises(DirectoryUnavailable):
            await auth.authenticate("29000100000011", "1111")


async def test_a_server_without_login_or_checksums(monkeypatch: pytest.MonkeyPatch) -> None:
    async with Sip2Service(login=False) as server:
        options = options_for(server.address, login_user=None, login_password=None, checksums=False)
        async with running(options) as auth:
            assert await auth.authenticate("29000100000011", "1111") is not None
            assert await auth.authenticate("29000100000011", "1112") is None
    async with Sip2Service(login=False, error_detection="required") as server:
        options = options_for(server.address, login_user=None, login_password=None, checksums=False)
        async with running(options) as auth:  # the server asks for checksums: a broken setup
            with pytest.raises(DirectoryUnavailable):
                await auth.authenticate("29000100000011", "1111")


async def test_concurrent_sign_ins_share_a_few_reused_connections(service: Sip2Service) -> None:
    options = options_for(service.address, pool_size=3)
    async with running(options) as auth:
        cards = [("29000100000011", "1111"), ("29000200000010", "3333"), ("29000100000011", "0000")] * 10
        results = await asyncio.gather(*(auth.authenticate(card, pin) for card, pin in cards))
        assert [r is not None for r in results] == [pin != "0000" for _, pin in cards]
    assert 1 <= service.counters.logins <= 3  # one login per connection, at most pool_size


# ----------------------------------------------------------------------------------------------
# Checksums, closing, hanging, failover


async def test_a_damaged_answer_is_asked_for_again(service: Sip2Service) -> None:
    async with Relay(service.port, damage=1) as relay, running(options_for(f"127.0.0.1:{relay.port}")) as auth:
        assert await auth.authenticate("29000100000011", "1111") is not None  # the login answer was damaged
        relay.damage = 1
        assert await auth.authenticate("29000100000011", "1111") is not None


async def test_a_server_sending_bad_checksums_is_a_broken_service(service: Sip2Service) -> None:
    async with Relay(service.port, damage=1_000_000) as relay, \
            running(options_for(f"127.0.0.1:{relay.port}")) as auth:
        for card, pin in (("29000100000011", "1111"), ("29000100000011", "1112")):
            with pytest.raises(DirectoryUnavailable):
                await auth.authenticate(card, pin)
        problems = await auth.probe()
    assert len(problems) == 1 and "checksum" in problems[0]


async def test_a_server_that_closes_the_connection(service: Sip2Service) -> None:
    async with closing_server() as port:
        async with running(options_for(f"127.0.0.1:{port}")) as auth:
            with pytest.raises(DirectoryUnavailable):
                await auth.authenticate("29000100000011", "1111")
        async with running(options_for(f"127.0.0.1:{port}", service.address)) as auth:
            assert await auth.authenticate("29000100000011", "1111") is not None


async def test_a_hanging_server_times_out_without_stalling_the_event_loop() -> None:
    async with silent_server() as port:
        options = options_for(f"127.0.0.1:{port}", connect_timeout="1s", response_timeout="1s", timeout="1500ms")
        async with running(options) as auth:
            ticks: list[float] = []

            async def tick() -> None:
                while True:
                    ticks.append(time.monotonic())
                    await asyncio.sleep(0.01)

            ticker = asyncio.create_task(tick())
            started = time.monotonic()
            try:
                with pytest.raises(DirectoryUnavailable):
                    await auth.authenticate("29000100000011", "1111")
            finally:
                elapsed = time.monotonic() - started
                ticker.cancel()
    assert 0.9 <= elapsed < 3.0
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert len(ticks) >= 40 and max(gaps) < 0.25, (len(ticks), max(gaps))


async def test_failover_from_a_hanging_server(service: Sip2Service) -> None:
    async with silent_server() as port:
        options = options_for(f"127.0.0.1:{port}", service.address, connect_timeout="1s",
                              response_timeout="1s", timeout="4s")
        async with running(options) as auth:  # start() found the first server hanging already
            started = time.monotonic()
            assert await auth.authenticate("29000100000011", "1111") is not None
            assert time.monotonic() - started < 0.5  # the hung server is skipped now


async def test_failover_when_the_first_server_stops_and_back() -> None:
    # Each server behind a relay, whose stop() and start() make a server going down and back
    # on the same port.
    async with Sip2Service() as one, Sip2Service() as two, Relay(one.port) as first, Relay(two.port) as second:
        first_address, second_address = f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"
        async with running(options_for(first_address, second_address, server_retry="1ms")) as auth:
            assert await auth.authenticate("29000100000011", "1111") is not None
            assert one.counters.requests == 1
            await first.stop()  # the kept connection to it is now closed
            for _ in range(3):
                assert await auth.authenticate("29000100000011", "1111") is not None
                assert await auth.authenticate("29000100000011", "1112") is None
            assert two.counters.requests == 6
            problems = await auth.probe()
            assert len(problems) == 1 and problems[0].startswith(f"{first_address}: cannot use the server")
            await second.stop()
            with pytest.raises(DirectoryUnavailable):
                await auth.authenticate("29000100000011", "1111")
            await first.start()  # same port: the proxy notices the server is back
            assert await auth.authenticate("29000100000011", "1111") is not None


async def test_a_restarted_server_is_reconnected(service: Sip2Service) -> None:
    async with Relay(service.port) as relay, running(options_for(f"127.0.0.1:{relay.port}")) as auth:
        assert await auth.authenticate("29000100000011", "1111") is not None
        await relay.stop()
        await relay.start()
        assert await auth.authenticate("29000100000011", "1111") is not None
        assert service.counters.logins == 2


async def test_nothing_listening_is_directory_unavailable_fast() -> None:
    async with running(options_for(closed_address(), closed_address())) as auth:
        started = time.monotonic()
        with pytest.raises(DirectoryUnavailable):
            await auth.authenticate("29000100000011", "1111")
        assert time.monotonic() - started < 2
        assert len(await auth.probe()) == 2


# ----------------------------------------------------------------------------------------------
# TLS (the relay plays stunnel)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("sip2-tls"))


def server_tls(files: TlsFiles) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.cert, files.key)
    return context


async def test_tls_with_the_test_ca(service: Sip2Service, tls_files: TlsFiles) -> None:
    async with Relay(service.port, ssl_context=server_tls(tls_files)) as relay:
        options = options_for(f"127.0.0.1:{relay.port}", tls=True, ca_file=str(tls_files.ca))
        async with running(options) as auth:
            assert await auth.probe() == []
            membership = await auth.authenticate("29000100000011", "1111")
            assert membership is not None and membership.home_library == "wolcott"
            assert await auth.authenticate("29000100000011", "1112") is None


async def test_an_untrusted_or_misnamed_certificate_is_refused(
    service: Sip2Service, tls_files: TlsFiles, tmp_path: Path,
) -> None:
    stranger = make_tls_files(tmp_path / "stranger", label="stranger")
    misnamed = make_tls_files(tmp_path / "misnamed", names=("sip.example.invalid",))
    for files, ca, reason in ((tls_files, stranger.ca, "unable to get local issuer"),
                              (misnamed, misnamed.ca, "mismatch")):
        async with Relay(service.port, ssl_context=server_tls(files)) as relay:
            options = options_for(f"127.0.0.1:{relay.port}", tls=True, ca_file=str(ca))
            async with running(options) as auth:
                with pytest.raises(DirectoryUnavailable):
                    await auth.authenticate("29000100000011", "1111")
                problems = await auth.probe()
        assert len(problems) == 1 and "certificate not trusted" in problems[0] and reason in problems[0], problems


async def test_plain_text_to_a_tls_port_fails_closed(service: Sip2Service, tls_files: TlsFiles) -> None:
    async with Relay(service.port, ssl_context=server_tls(tls_files)) as relay, \
            running(options_for(f"127.0.0.1:{relay.port}", response_timeout="1s", timeout="2s")) as auth:
        with pytest.raises(DirectoryUnavailable):
            await auth.authenticate("29000100000011", "1111")


# ----------------------------------------------------------------------------------------------
# Privacy: a patron whose personal data carry markers


NAME, MAIL, STREET, PHONE, BIRTH = ("Zyxname Quorra", "qxmail@zyx.example", "77 Zyxstreet Lane", "555-0177-99",
                                    "19770707")
MARKED = Patron("Pz8642q", name=NAME, email=MAIL, address=STREET, phone=PHONE, birth_date=BIRTH)
MARKED_CARD = "29077700000077"


def sip2_proxy_config(tmp: Path, echo: Any, table: dict[str, Any]) -> Any:
    return config_mod.from_dict({
        "proxy": {"listen": "127.0.0.1:8080", "host": PROXY_HOST, "state_dir": str(tmp / "state")},
        "library": {"id": "wolcott.lib.ct.us", "name": "Wolcott Public Library"},
        "patrons": {"source": "sip2", "sip2": table},
        "upstream": {"connect_timeout": "2s", "read_timeout": "2s"},
        "admin": {"listen": ""},
        "vendor": [{"id": "echo", "title": "Echo Vendor", "start": f"{echo.origin}/", "hosts": [echo.origin],
                    "groups": ["wolcott"]}],
    }, base=tmp)


def session_store_dump(app: Any) -> str:
    """Every session the proxy's memory store holds, as JSON (found by shape: the store is
    the part of the application with a ``_sessions`` table)."""
    stores = [value for key in app for value in (app[key], getattr(app[key], "store", None))
              if hasattr(value, "_sessions")]
    assert stores, "no session store found"
    return json.dumps([s.to_dict() for store in stores for s in store._sessions.values()])


async def test_personal_data_reach_nothing_the_proxy_writes(
    tmp_path: Path, echo: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    # SIP2 clients have been known to write every message to a log file in the working
    # directory (the PyPI `sip2` package: sip2.log): this one must write nothing there.
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    url = f"{echo.origin}/echo"
    async with Sip2Service(patrons=with_patron(MARKED_CARD, MARKED)) as server, \
            Relay(server.port) as relay:
        table = example_table(server.address, f"127.0.0.1:{relay.port}")
        async with run_proxy(sip2_proxy_config(tmp_path, echo, table)) as proxy:
            browser = Browser(proxy)
            assert (await browser.sign_in(MARKED_CARD, "0000", url)).status == 401
            reply = await browser.sign_in(MARKED_CARD, MARKED.pin, url)
            assert reply.status == 200 and reply.json()["path"] == "/echo"
            relay.damage = 1_000_000  # and a broken server on the way, which logs
            await server.stop()
            other = Browser(proxy)
            assert (await other.sign_in(MARKED_CARD, MARKED.pin, url)).status == 503
            await other.close()
            sessions = session_store_dump(proxy.app)
            await browser.close()
    assert list(workdir.iterdir()) == []
    written = {"logs": caplog.text, "sessions": sessions}
    for path in (tmp_path / "state").rglob("*"):
        if path.is_file():
            written[str(path)] = path.read_bytes().decode("latin-1")
    assert "failed" in caplog.text  # the logs really were captured
    for where, text in written.items():
        for marker in (NAME, "Zyxname", "Quorra", MAIL, STREET, "Zyxstreet", PHONE, BIRTH, MARKED_CARD, MARKED.pin):
            assert marker not in text, (marker, where)


async def test_a_membership_holds_only_groups_home_and_a_pseudonymous_key() -> None:
    async with Sip2Service(patrons=with_patron(MARKED_CARD, MARKED)) as server, \
            running(options_for(server.address)) as auth:
        membership = await auth.authenticate(MARKED_CARD, MARKED.pin)
        again = await auth.authenticate(MARKED_CARD, MARKED.pin)
        other = await auth.authenticate("29000100000011", "1111")
    assert isinstance(membership, Membership) and membership == again and other is not None
    assert membership.key != other.key and len(membership.key or "") == 32
    data = repr(membership.to_dict())
    for private in (MARKED_CARD, MARKED.pin, "Zyx", "Quorra"):
        assert private not in data


def test_expiry_dates() -> None:
    from proxy.patrons.sip2 import parse_expiry

    moment = parse_expiry("20250630")
    assert moment is not None and moment.astimezone().date().isoformat() == "2025-07-01"
    assert parse_expiry("20250630    120000") == moment == parse_expiry("2025-06-30")
    assert parse_expiry("  ") is None
    with pytest.raises(ValueError):
        parse_expiry("next week")
    assert isinstance(moment, datetime)


async def test_a_pin_the_servers_encoding_cannot_carry_is_a_wrong_pin(service: Sip2Service) -> None:
    """Review: a UnicodeEncodeError escaped as a 500, its text quoting the PIN's character."""
    async with running(options_for(service.address, encoding="ascii")) as auth:
        assert await auth.authenticate("29000100000011", "1111é") is None
