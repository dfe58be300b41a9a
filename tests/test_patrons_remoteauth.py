"""The RemoteAuth patron source against a service that answers as Evergreen's RemoteAuth does
(tests/remoteauth_server.py), on loopback: both forms, per-library and consortium profiles,
the PatronAPI dump of a full patron record, Sierra's PatronAPI, failures and TLS.

The options start from config/remoteauth-example.toml's table, so the sample is tested too.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from proxy import config as config_mod
from proxy.errors import ConfigError, DirectoryUnavailable
from proxy.patrons.base import CardRefused
from proxy.patrons.remoteauth import (
    RemoteAuthAuthenticator,
    RemoteAuthOptions,
    dump_fields,
    parse_expiry,
    parse_options,
    path_segment,
    pintest_result,
)
from proxy.settings import Problems, Reader
from tests.ldap_server import TlsFiles, free_port, make_tls_files
from tests.remoteauth_server import CLIENT_PASSWORD, CLIENT_USER, PATRONS, EgPatron, RemoteAuthService
from tests.support import PROXY_HOST, Browser, run_proxy

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "config" / "remoteauth-example.toml"
SECRET = b"remoteauth-test-secret-0123456789"
PASSWORD_ENV = "LIBPROXY_TEST_REMOTEAUTH_PASSWORD"
PATRONAPI = {"form": "patronapi", "path": "/api/patronapi", "profiles": None}
DUMP = {"home_field": "p53", "expiry_field": "p43",
        "libraries": {"Wolcott Public Library": "wolcott", "derby public library": "derby"}}


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, CLIENT_PASSWORD)


def parse(table: dict[str, Any]) -> tuple[RemoteAuthOptions, list[str]]:
    problems = Problems()
    options = parse_options(Reader({"source": "remoteauth", "remoteauth": table}, "patrons", problems, REPO))
    return options, problems.items


def example_table(*origins: str, **overrides: Any) -> dict[str, Any]:
    table: dict[str, Any] = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))["patrons"]["remoteauth"]
    table.update(servers=list(origins), connect_timeout="2s", response_timeout="2s", timeout="5s")
    for key, value in overrides.items():
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
    return table


def options_for(*origins: str, **overrides: Any) -> RemoteAuthOptions:
    options, problems = parse(example_table(*origins, **overrides))
    assert problems == []
    return options


@asynccontextmanager
async def running(options: RemoteAuthOptions) -> AsyncIterator[RemoteAuthAuthenticator]:
    auth = RemoteAuthAuthenticator(options, SECRET)
    await auth.start()
    try:
        yield auth
    finally:
        await auth.close()


@pytest.fixture
async def service() -> AsyncIterator[RemoteAuthService]:
    async with RemoteAuthService() as server:
        yield server


def closed_origin() -> str:
    return f"http://127.0.0.1:{free_port()}"


# ----------------------------------------------------------------------------------------------
# Pure parts and options


@pytest.mark.parametrize(("text", "encoded"), [
    ("29000100000011", "29000100000011"),
    ("..", "%2E%2E"),
    ("../../admin", "%2E%2E%2F%2E%2E%2Fadmin"),
    ("a/b?c#d e", "a%2Fb%3Fc%23d%20e"),
    ("Läsa", "L%C3%A4sa"),
    ("%2F", "%252F"),
])
def test_card_and_pin_stay_one_path_segment(text: str, encoded: str) -> None:
    assert path_segment(text) == encoded


def test_pintest_and_dump_parsing_reads_only_what_is_asked() -> None:
    assert pintest_result("<HTML>\n<BODY>\nRETCOD=0<BR>\n</BODY>\n</HTML>\n") == ("0", None)
    assert pintest_result("RETCOD=1<BR>\nERRNUM=4<BR>\nERRMSG=Invalid patron PIN<BR>") == ("1", "4")
    assert pintest_result("<BODY>ERRNUM=1<BR>ERRMSG=Requested record not found<BR></BODY>") == (None, "1")
    dump = ("<HTML><BODY>\nEXP DATE[p43]=06-30-27<BR>\nHOME LIBR[p53]=Wolcott Public Library<BR>\n"
            "PATRN NAME[pn]=Reader, Sample<BR>\nEMAIL ADDR[pz]=reader@patrons.example<BR>\n</BODY></HTML>")
    assert dump_fields(dump, frozenset({"p53"})) == {"p53": "Wolcott Public Library"}
    assert dump_fields(dump, frozenset({"p43", "p53"})) == {"p43": "06-30-27", "p53": "Wolcott Public Library"}
    moment = parse_expiry("06-30-27")
    assert moment is not None and moment.astimezone().date().isoformat() == "2027-07-01"
    assert parse_expiry("  -  -  ") is None
    assert parse_expiry("06-30-2027") == moment


def test_example_configuration_loads() -> None:
    cfg = config_mod.load(EXAMPLE)
    options = cfg.patrons.options
    assert cfg.patrons.source == "remoteauth" and isinstance(options, RemoteAuthOptions)
    assert options.form == "basic" and set(options.profiles) == {"wolcott", "derby", "seymour"}
    assert options.verify and options.dump_codes() == frozenset()


def test_every_problem_in_the_options_is_reported_at_once() -> None:
    _, problems = parse({
        "servers": ["http://evergreen.example.org", "ftp://x", "https://a.example/path"],
        "form": "patronapi",
        "client_user": "proxy",
        "home_field": "pn",
        "expiry_field": "P43",
        "client_cert": "missing.pem",
        "groups": ["bad group"],
        "max_response": "lots",
        "colour": "blue",
    })
    text = "\n".join(problems)
    for expected in (
        "[patrons.remoteauth] servers: 'http://evergreen.example.org' would send PINs unencrypted",
        "[patrons.remoteauth] servers: 'ftp://x' must be https://host[:port]",
        "[patrons.remoteauth] servers: 'https://a.example/path' must be https://host[:port]",
        '[patrons.remoteauth] path: is required with form = "patronapi"',
        "[patrons.remoteauth] client_password: is required with client_user",
        "[patrons.remoteauth] home_field: 'pn' holds personal data",
        "[patrons.remoteauth] expiry_field: 'P43' is not a PatronAPI field code",
        "[patrons.remoteauth] client_cert: file",
        "[patrons.remoteauth] client_key: client_cert and client_key must be given together",
        "[patrons.remoteauth] groups: group 'bad group'",
        "[patrons.remoteauth] max_response: must be a size",
        "[patrons.remoteauth] colour: is not a known option",
        "[patrons.remoteauth] libraries: must map",
    ):
        assert expected in text, f"missing {expected!r} in:\n{text}"
    _, problems = parse({"servers": ["https://e.example"], "path": "/a", "profiles": {"wolcott": "/b"},
                         "client_user": "x", "client_password": f"env:{PASSWORD_ENV}", "home_field": "p53"})
    text = "\n".join(problems)
    assert "give either path" in text and "cannot be sent with form" in text and "only with form" in text
    with pytest.raises(ConfigError):
        RemoteAuthAuthenticator(RemoteAuthOptions(servers=("http://10.1.2.3",)), SECRET)


# ----------------------------------------------------------------------------------------------
# Basic form


async def test_per_library_profiles_give_the_home_library(service: RemoteAuthService) -> None:
    async with running(options_for(service.origin)) as auth:
        wolcott = await auth.authenticate("29000100000011", "1111")
        derby = await auth.authenticate("29000200000010", "3333")
        accented = await auth.authenticate("29000100000037", "Läsa 2024!/..")
    assert wolcott is not None and wolcott.groups == {"bibliomation", "wolcott"} and wolcott.home_library == "wolcott"
    assert derby is not None and derby.groups == {"bibliomation", "derby"}
    assert accented is not None and accented.source == "remoteauth"


async def test_a_consortium_profile_gives_the_network_only(service: RemoteAuthService) -> None:
    async with running(options_for(service.origin, path="/api/basicauth", profiles=None)) as auth:
        membership = await auth.authenticate("29000300000019", "4444")
    assert membership is not None and membership.groups == {"bibliomation"} and membership.home_library is None


async def test_basic_form_every_not_this_card_looks_the_same(service: RemoteAuthService) -> None:
    async with running(options_for(service.origin)) as auth:
        for card, pin in (("29000100000011", "1112"), ("29009999999999", "1111"), ("expired1", "6666"),
                          ("barred1", "7777"), ("inactive1", "8888"), ("fines1", "9999"), ("deleted1", "1234"),
                          ("29000100000011:1111", "x")):
            assert await auth.authenticate(card, pin) is None, card
    assert ("basic", ("29000100000011:1111",)) not in service.requests  # never sent


async def test_a_service_that_refuses_the_proxy_is_unavailable_not_a_wrong_pin(service: RemoteAuthService) -> None:
    service.client_ok = False
    async with running(options_for(service.origin)) as auth:
        with pytest.raises(DirectoryUnavailable):
            await auth.authenticate("29000100000011", "1111")
        problems = await auth.probe()
    assert len(problems) == 3 and all("answered HTTP 401" in p for p in problems)


# ----------------------------------------------------------------------------------------------
# PatronAPI form


async def test_pintest_and_dump(service: RemoteAuthService) -> None:
    async with running(options_for(service.origin, **PATRONAPI, **DUMP)) as auth:
        wolcott = await auth.authenticate("29000100000011", "1111")
        derby = await auth.authenticate("29000200000010", "3333")
        seymour = await auth.authenticate("29000300000019", "4444")  # not in the libraries table
        accented = await auth.authenticate("29000100000037", "Läsa 2024!/..")
        assert await auth.authenticate("29000100000011", "1112") is None
        assert await auth.authenticate("29009999999999", "1111") is None
        assert await auth.probe() == []
    assert wolcott is not None and wolcott.groups == {"bibliomation", "wolcott"}
    assert derby is not None and derby.home_library == "derby"
    assert seymour is not None and seymour.groups == {"bibliomation"} and seymour.home_library is None
    assert accented is not None
    # The card and PIN arrived as the segments they are, ".." and "/" included.
    assert ("pintest", ("29000100000037", "Läsa 2024!/..")) in service.requests
    dumps = [segments for kind, segments in service.requests if kind == "dump"]
    assert dumps == [("29000100000011",), ("29000200000010",), ("29000300000019",), ("29000100000037",)]


async def test_pintest_without_dump_asks_no_patron_record(service: RemoteAuthService) -> None:
    async with running(options_for(service.origin, **PATRONAPI)) as auth:
        membership = await auth.authenticate("29000100000011", "1111")
    assert membership is not None and membership.groups == {"bibliomation"}
    assert [kind for kind, _ in service.requests] == ["pintest"]


async def test_evergreen_refusals_are_told_only_to_the_pin_holder(service: RemoteAuthService) -> None:
    async with running(options_for(service.origin, **PATRONAPI, **DUMP)) as auth:
        for card, pin in (("expired1", "6666"), ("barred1", "7777"), ("inactive1", "8888"), ("fines1", "9999")):
            with pytest.raises(CardRefused):
                await auth.authenticate(card, pin)
            assert await auth.authenticate(card, "0000") is None  # wrong PIN: nothing said
    assert not [kind for kind, _ in service.requests if kind == "dump"]


async def test_sierra_pintest_and_the_expiry_from_the_dump() -> None:
    async with RemoteAuthService(flavour="sierra") as server:
        options = options_for(server.origin, **{**PATRONAPI, "path": "/PATRONAPI"}, **DUMP, flavour="sierra")
        async with running(options) as auth:
            assert await auth.authenticate("29009999999999", "1111") is None  # ERRNUM=1: no such record
            assert await auth.authenticate("29000100000011", "1112") is None
            with pytest.raises(CardRefused) as expired:
                await auth.authenticate("expired1", "6666")
            assert expired.value.reason == "expired"
            membership = await auth.authenticate("29000100000011", "1111")
            assert membership is not None and membership.home_library == "wolcott"
            assert await auth.probe() == []


async def test_a_refused_dump_or_client_is_a_broken_service(service: RemoteAuthService) -> None:
    service.allow_dump = False
    async with running(options_for(service.origin, **PATRONAPI, **DUMP)) as auth:
        with pytest.raises(DirectoryUnavailable):
            await auth.authenticate("29000100000011", "1111")
    service.allow_dump, service.client_ok = True, False
    async with running(options_for(service.origin, **PATRONAPI)) as auth:
        problems = await auth.probe()
    assert len(problems) == 1 and "ERRNUM=1 for a card that cannot exist" in problems[0]


async def test_client_credentials_from_a_secret(service: RemoteAuthService) -> None:
    service.client_credentials = (CLIENT_USER, CLIENT_PASSWORD)
    async with running(options_for(service.origin, **PATRONAPI)) as auth:
        with pytest.raises(DirectoryUnavailable):  # without them: 401
            await auth.authenticate("29000100000011", "1111")
    with_client = {**PATRONAPI, "client_user": CLIENT_USER, "client_password": f"env:{PASSWORD_ENV}"}
    options = options_for(service.origin, **with_client)
    assert CLIENT_PASSWORD not in repr(options)
    async with running(options) as auth:
        assert await auth.authenticate("29000100000011", "1111") is not None
        assert await auth.authenticate("29000100000011", "1112") is None


async def test_only_the_configured_dump_fields_are_read(
    service: RemoteAuthService, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    marked = EgPatron("Pz8642q", name="Quorra, Zyxname", address="77 Zyxstreet Lane", phone="555-0177-99",
                      email="qxmail@zyx.example", birth_date="07-07-77")
    service.patrons["29077700000077"] = marked
    auth = RemoteAuthAuthenticator(options_for(service.origin, **PATRONAPI, **DUMP), SECRET)
    seen: list[frozenset[str]] = []
    import proxy.patrons.remoteauth as module

    original = module.dump_fields

    def spy(body: str, codes: frozenset[str]) -> dict[str, str]:
        assert "Zyxname" in body  # the premise: the service sent the whole record
        result = original(body, codes)
        seen.append(frozenset(result))
        return result

    module.dump_fields = spy  # type: ignore[assignment]
    try:
        membership = await auth.authenticate("29077700000077", "Pz8642q")
    finally:
        module.dump_fields = original  # type: ignore[assignment]
        await auth.close()
    assert seen == [frozenset({"p43", "p53"})]
    assert membership is not None
    for marker in ("Zyx", "Quorra", "qxmail", "555-0177", "07-07-77", "29077700000077", "Pz8642q"):
        assert marker not in repr(membership.to_dict()) and marker not in caplog.text


# ----------------------------------------------------------------------------------------------
# Failures: redirects, size, errors, hangs, failover


async def test_redirects_are_not_followed(service: RemoteAuthService) -> None:
    async with running(options_for(service.origin, path="/redirect", profiles=None)) as auth:
        with pytest.raises(DirectoryUnavailable):
            await auth.authenticate("29000100000011", "1111")
    assert [kind for kind, _ in service.requests] == ["redirect"]  # the target was never asked


async def test_oversized_answers_are_refused(service: RemoteAuthService) -> None:
    async with running(options_for(service.origin, path="/huge", profiles=None)) as auth:
        with pytest.raises(DirectoryUnavailable):
            await auth.authenticate("29000100000011", "1111")


async def test_server_errors_and_dead_servers_fail_over(service: RemoteAuthService) -> None:
    async with running(options_for(closed_origin(), service.origin)) as auth:
        assert await auth.authenticate("29000100000011", "1111") is not None
        assert await auth.authenticate("29000100000011", "1112") is None
    async with running(options_for(closed_origin(), closed_origin())) as auth:
        started = time.monotonic()
        with pytest.raises(DirectoryUnavailable):
            await auth.authenticate("29000100000011", "1111")
        assert time.monotonic() - started < 2
        assert len(await auth.probe()) == 6  # two servers, three profiles each
    async with running(options_for(service.origin, path="/error", profiles=None)) as auth:
        with pytest.raises(DirectoryUnavailable):
            await auth.authenticate("29000100000011", "1111")


async def test_a_hanging_server_times_out_and_the_next_is_used(service: RemoteAuthService) -> None:
    async with RemoteAuthService() as hanging:
        short = {"path": "/hang", "profiles": None, "connect_timeout": "1s", "response_timeout": "1s"}
        async with running(options_for(hanging.origin, timeout="1500ms", **short)) as auth:
            started = time.monotonic()
            with pytest.raises(DirectoryUnavailable):
                await auth.authenticate("29000100000011", "1111")
            assert 0.9 <= time.monotonic() - started < 3
        # A hung first server, a good second one: the sign-in fails over within its timeout.
        async with running(options_for(hanging.origin, service.origin, timeout="4s",
                                       **{**short, "path": "/api/basicauth"})) as auth:
            hanging.hang_everything = True
            started = time.monotonic()
            assert await auth.authenticate("29000100000011", "1111") is not None
            assert 0.9 <= time.monotonic() - started < 3
            started = time.monotonic()
            assert await auth.authenticate("29000100000011", "1111") is not None
            assert time.monotonic() - started < 0.5  # the hung server is skipped now
        hanging.release()


# ----------------------------------------------------------------------------------------------
# TLS


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("remoteauth-tls"))


def server_tls(files: TlsFiles) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.cert, files.key)
    return context


async def test_https_with_the_test_ca_and_an_untrusted_one(tls_files: TlsFiles, tmp_path: Path) -> None:
    async with RemoteAuthService(ssl_context=server_tls(tls_files)) as server:
        async with running(options_for(server.origin, ca_file=str(tls_files.ca))) as auth:
            assert await auth.probe() == []
            assert await auth.authenticate("29000100000011", "1111") is not None
        stranger = make_tls_files(tmp_path, label="stranger")
        async with running(options_for(server.origin, ca_file=str(stranger.ca))) as auth:
            with pytest.raises(DirectoryUnavailable):
                await auth.authenticate("29000100000011", "1111")
            problems = await auth.probe()
    assert len(problems) == 3 and all("certificate not trusted" in p for p in problems), problems


def make_client_cert(directory: Path) -> tuple[Path, Path, Path]:
    """A fresh CA and a client certificate (clientAuth) it signed: (ca, cert, key)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "libproxy test client CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "libproxy")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = (directory / "client-ca.pem", directory / "client.pem", directory / "client-key.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


async def test_a_client_certificate_when_the_server_asks_for_one(tls_files: TlsFiles, tmp_path: Path) -> None:
    client_ca, cert, key = make_client_cert(tmp_path)
    context = server_tls(tls_files)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(client_ca)
    async with RemoteAuthService(ssl_context=context) as server:
        async with running(options_for(server.origin, ca_file=str(tls_files.ca))) as auth:
            with pytest.raises(DirectoryUnavailable):  # no certificate: the handshake fails
                await auth.authenticate("29000100000011", "1111")
        options = options_for(server.origin, ca_file=str(tls_files.ca), client_cert=str(cert), client_key=str(key))
        async with running(options) as auth:
            assert await auth.authenticate("29000100000011", "1111") is not None
            assert await auth.authenticate("29000100000011", "1112") is None


# ----------------------------------------------------------------------------------------------
# Through the proxy


async def test_proxy_sign_in_pages_and_an_outage(tmp_path: Path, echo: Any, service: RemoteAuthService) -> None:
    table = example_table(service.origin, **PATRONAPI, **DUMP)
    cfg = config_mod.from_dict({
        "proxy": {"listen": "127.0.0.1:8080", "host": PROXY_HOST, "state_dir": str(tmp_path / "state")},
        "library": {"id": "wolcott.lib.ct.us", "name": "Wolcott Public Library"},
        "patrons": {"source": "remoteauth", "remoteauth": table},
        "admin": {"listen": ""},
        "vendor": [{"id": "echo", "title": "Echo", "start": f"{echo.origin}/", "hosts": [echo.origin],
                    "groups": ["wolcott"]}],
    }, base=tmp_path)
    url = f"{echo.origin}/echo"
    async with run_proxy(cfg) as proxy:
        replies = []
        for card, pin in (("29000100000011", "1112"), ("29009999999999", "1111"), ("expired1", "0000"),
                          ("expired1", "6666"), ("29000100000011", "1111")):
            browser = Browser(proxy)
            replies.append(await browser.sign_in(card, pin, url))
            await browser.close()
        assert [r.status for r in replies] == [401, 401, 401, 403, 200]
        await service.stop()
        browser = Browser(proxy)
        down = await browser.sign_in("29000100000011", "1111", url)
        await browser.close()
        assert down.status == 503


async def test_sign_ins_run_concurrently(service: RemoteAuthService) -> None:
    async with running(options_for(service.origin)) as auth:
        cards = [("29000100000011", "1111"), ("29000200000010", "3333"), ("29000100000011", "0")] * 8
        results = await asyncio.gather(*(auth.authenticate(c, p) for c, p in cards))
    assert [r is not None for r in results] == [p != "0" for _, p in cards]
    assert set(PATRONS) >= {"29000100000011"}
