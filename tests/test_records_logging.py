"""Privacy-safe logging: markers fed through every logging path never reach the output."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.records.logsetup import (
    ALLOWED_EXTRAS,
    LogOptions,
    parse_options,
    safe_fields,
    setup_logging,
)
from proxy.records.scrub import header_names, scrub, scrub_traceback
from proxy.settings import Problems, Reader

CARD = "21234009876543"
CARD_SPACED = "2123 4009 8765 43"
PIN = "7395"
IPV4 = "203.0.113.77"
IPV6 = "2001:db8:85a3::8a2e:370:7334"
PATH_MARKER = "secretpathmarker"
QUERY_MARKER = "marmotmarker"
URL = f"https://search.vendor.example/{PATH_MARKER}/results?q={QUERY_MARKER}&page=2"
ENCODED_URL = f"https%3A%2F%2Fsearch.vendor.example%2F{PATH_MARKER}%3Fq%3D{QUERY_MARKER}"
EMAIL = "marker.patron@example.org"
JWT = ("eyJhbGciOiJFUzI1NiIsImtpZCI6Im1hcmtlciJ9."
       "eyJzdWIiOiJqd3RzdWJtYXJrZXIifQ.c2lnbmF0dXJlbWFya2VyX2J5dGVz")
COOKIE_VALUE = "cookievaluemarker0123"
SESSION_VALUE = "sessionvaluemarker4567"

# Every string that must never appear in a log line, whatever the path it took.
FORBIDDEN = (
    CARD, CARD_SPACED, PIN, IPV4, IPV6, "2001:db8", PATH_MARKER, QUERY_MARKER, EMAIL, "marker.patron",
    "eyJhbGciOiJFUzI1NiIsImtpZCI6Im1hcmtlciJ9", "c2lnbmF0dXJlbWFya2VyX2J5dGVz", COOKIE_VALUE, SESSION_VALUE,
)
IPV4_SHAPE = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    factory = logging.getLogRecordFactory()
    access = logging.getLogger("aiohttp.access")
    access_level = access.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging.setLogRecordFactory(factory)
    access.setLevel(access_level)


def _log_everything(log: logging.Logger) -> None:
    # 1. the message itself
    log.warning(f"sign-in for card {CARD} pin={PIN} from {IPV4} and {IPV6} wanted {URL}")
    log.warning(f"card typed with spaces {CARD_SPACED}, e-mail {EMAIL}, token {JWT}")
    log.warning(f"Cookie: libproxy={COOKIE_VALUE}; other=1")
    log.warning(f"GET /{PATH_MARKER}?q={QUERY_MARKER} HTTP/1.1")
    log.warning(f"login?url={ENCODED_URL}")
    # 2. %-style arguments, including a form dict and a peername tuple
    log.warning("form %s from %s", {"card": CARD, "pin": PIN, "url": URL}, (IPV4, 51234))
    log.warning("redirect to %s for %s with session_id=%s", URL, EMAIL, SESSION_VALUE)
    log.warning("%(who)s at %(where)s", {"who": EMAIL, "where": IPV6})
    log.warning("headers %r", [("Authorization", f"Bearer {JWT}"), ("X-Forwarded-For", IPV4)])
    # 3. exception text, through log.exception and exc_info=
    try:
        raise ValueError(f"patron {CARD} with pin {PIN} at {IPV4} failed on {URL} ({EMAIL})")
    except ValueError:
        log.exception("sign-in failed for %s", CARD)
    try:
        try:
            raise KeyError(f"session_id={SESSION_VALUE}")
        except KeyError as inner:
            raise RuntimeError(f"while proxying {URL} for {IPV6}") from inner
    except RuntimeError as exc:
        log.error("vendor error: %s", exc, exc_info=True)
    # 4. structured extras: allowed ones scrubbed, others dropped
    log.warning("vendor error", extra={"vendor": URL, "status": 502, "event": EMAIL, "patron": CARD,
                                       "client": IPV4})
    # 5. a stack
    log.warning("stack for %s", IPV4, stack_info=True)
    # 6. arguments that do not fit the format are dropped, not printed raw
    log.warning("only one %s", CARD, PIN)
    # 7. aiohttp's access log is never written
    logging.getLogger("aiohttp.access").warning('%s "GET /%s" 200', IPV4, PATH_MARKER)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_no_marker_survives_any_logging_path(fmt: str, restore_logging: None) -> None:
    stream = io.StringIO()
    setup_logging("DEBUG", fmt, stream)
    _log_everything(logging.getLogger("libproxy.test"))
    output = stream.getvalue()
    assert output.count("\n") >= 10, output
    for marker in FORBIDDEN:
        assert marker not in output, f"{marker!r} leaked in {fmt} output:\n{output}"
    assert not IPV4_SHAPE.search(output), output
    # Useful operational content survives: the vendor host, the status, exception types.
    assert "search.vendor.example" in output
    assert "502" in output
    assert "ValueError" in output and "RuntimeError" in output
    assert "[redacted]" in output and "[ip]" in output and "[number]" in output


def test_json_lines_are_objects_with_whitelisted_fields(restore_logging: None) -> None:
    stream = io.StringIO()
    setup_logging("INFO", "json", stream)
    log = logging.getLogger("libproxy.forward")
    log.info("vendor answered", extra={"vendor": "jstor", "status": 503, "event": "vendor-error",
                                       "card": CARD, "url": URL})
    try:
        raise OSError("connection refused")
    except OSError:
        log.exception("vendor unreachable", extra={"vendor": "gale"})
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 2
    first, second = lines
    assert set(first) == {"time", "level", "logger", "message", "vendor", "status", "event"}
    assert first["level"] == "INFO" and first["logger"] == "libproxy.forward"
    assert first["message"] == "vendor answered"
    assert first["vendor"] == "jstor" and first["status"] == 503 and first["event"] == "vendor-error"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert "OSError: connection refused" in second["exception"]
    assert second["vendor"] == "gale"


def test_text_lines_cannot_be_forged_and_show_fields(restore_logging: None) -> None:
    stream = io.StringIO()
    setup_logging("INFO", "text", stream)
    logging.getLogger("libproxy").info("first\nFAKE ERROR line", extra={"vendor": "jstor", "status": 200})
    output = stream.getvalue()
    assert output.count("\n") == 1
    assert "first\\nFAKE ERROR line" in output
    assert output.rstrip().endswith("[status=200 vendor=jstor]")


def test_handlers_added_later_also_see_scrubbed_records(restore_logging: None) -> None:
    setup_logging("INFO", "text", io.StringIO())
    later = io.StringIO()
    # A handler without our filter or formatter, as a library or a test harness might add.
    foreign = logging.StreamHandler(later)
    foreign.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger().addHandler(foreign)
    try:
        raise ValueError(f"card {CARD}")
    except ValueError:
        logging.getLogger("x").exception("from %s", IPV4)
    text = later.getvalue()
    assert CARD not in text and IPV4 not in text
    assert "[number]" in text and "[ip]" in text


def test_setup_replaces_earlier_handlers(restore_logging: None) -> None:
    logging.basicConfig(stream=io.StringIO())
    first = io.StringIO()
    setup_logging("INFO", "text", first)
    second = io.StringIO()
    setup_logging("WARNING", "json", second)
    logging.getLogger("libproxy").warning("once")
    assert first.getvalue() == ""
    assert len(second.getvalue().splitlines()) == 1
    assert len(logging.getLogger().handlers) == 1


def test_scrub_is_idempotent_and_keeps_harmless_text() -> None:
    samples = [
        f"sign-in {CARD} pin={PIN} {IPV4} {URL} {EMAIL} {JWT}",
        "proxy ready: 3 vendors, sessions in memory, patrons from ldap",
        "vendor jstor timed out after 60s (status 504) on 2026-11-28 09:44:17",
        "http://proxy.localhost:8080 listening",
    ]
    for sample in samples:
        once = scrub(sample)
        assert scrub(once) == once
    assert scrub(samples[1]) == samples[1]
    assert scrub(samples[2]) == samples[2]
    assert scrub(samples[3]) == samples[3]
    assert scrub("version 3.11.7, 1048576 bytes, port 8080") == "version 3.11.7, 1048576 bytes, port 8080"


@pytest.mark.parametrize("text", [
    "[::1]:8080", "::ffff:192.0.2.1", "fe80::1%eth0", "10.0.0.1.", "('192.0.2.9', 443)",
])
def test_scrub_addresses(text: str) -> None:
    out = scrub(text)
    assert "[ip]" in out
    assert not re.search(r"\d+\.\d+\.\d+\.\d+|::1|fe80", out), out


def test_scrub_urls_keep_scheme_and_host_only() -> None:
    assert scrub("https://user:pw@www.vendor.com:8443/a/b?c=d#e") == "https://www.vendor.com:8443"
    assert scrub("www.vendor.com/search/owls") == "www.vendor.com"
    assert scrub("see /ebsco/results?q=owls now") == "see [path] now"
    assert scrub("q=owls&page=2") == "[form]"


def test_scrub_traceback_keeps_code_locations() -> None:
    text = ('Traceback (most recent call last):\n'
            '  File "/srv/proxy/web/routes.py", line 42, in login_submit\n'
            f'    check("{CARD}")\n'
            f'ValueError: card {CARD} at {IPV4}')
    out = scrub_traceback(text)
    assert 'File "/srv/proxy/web/routes.py", line 42, in login_submit' in out
    assert CARD not in out and IPV4 not in out


def test_scrub_bounds_output() -> None:
    assert len(scrub("a " * 100_000)) < 20_000


def test_header_names_never_values() -> None:
    headers = [("Cookie", f"libproxy={COOKIE_VALUE}"), ("X-Forwarded-For", IPV4), ("cookie", "b=c")]
    assert header_names(headers) == "cookie, x-forwarded-for"


def test_safe_fields_refuses_unknown_names() -> None:
    assert safe_fields(vendor="jstor", status=200) == {"vendor": "jstor", "status": 200}
    with pytest.raises(ValueError, match="card"):
        safe_fields(card=CARD)
    assert "vendor" in ALLOWED_EXTRAS


def test_parse_options(tmp_path: Path) -> None:
    problems = Problems()
    reader = Reader({"logging": {"level": "debug", "format": "json"}}, "", problems, tmp_path).sub("logging")
    assert parse_options(reader) == LogOptions(level="DEBUG", format="json")
    reader.unknown_keys()
    assert problems.items == []

    problems = Problems()
    reader = Reader({"logging": {"level": "LOUD", "format": "xml", "colour": True}}, "", problems,
                    tmp_path).sub("logging")
    assert parse_options(reader) == LogOptions()
    reader.unknown_keys()
    assert len(problems.items) == 3, problems.items
    assert any("level" in p for p in problems.items)
    assert any("format" in p for p in problems.items)
    assert any("colour" in p for p in problems.items)


def test_setup_rejects_unknown_format(restore_logging: None) -> None:
    with pytest.raises(ValueError):
        setup_logging("INFO", "xml", io.StringIO())


def test_the_operators_own_addresses_stay_readable() -> None:
    """Issue 12: "listening on [ip]:20010" and "ldap://[ip]:20430" told the operator nothing."""
    from proxy.records.scrub import allow_addresses, scrub

    try:
        allow_addresses(["127.0.0.1", "[::1]", "not-an-address"])
        assert scrub("listening on 127.0.0.1:20010") == "listening on 127.0.0.1:20010"
        assert scrub("ldap://127.0.0.1:20430 unreachable") == "ldap://127.0.0.1:20430 unreachable"
        assert scrub("bound ::1 port 9") == "bound ::1 port 9"
        # Any other address is still removed, and a card number still goes.
        assert scrub("client 203.0.113.9 card 21234009876543") == "client [ip] card [number]"
    finally:
        allow_addresses([])
    assert scrub("listening on 127.0.0.1:20010") == "listening on [ip]:20010"
