"""The process's logging, set up in one place, with a privacy filter nothing can bypass.

``setup_logging(level, fmt, stream)`` is called once at start (``serve``, ``demo``, every CLI
command). It installs:

* a record factory that scrubs every record *as it is created* (message with its ``%`` arguments
  merged in, exception text, stack text; see ``scrub.py``), so even a handler added later by a
  library or a test sees only scrubbed text;
* one handler on the root logger, carrying ``PrivacyFilter`` (which also cleans ``extra`` fields:
  only ``ALLOWED_EXTRAS`` survive, scrubbed) and either ``TextFormatter`` or ``JsonFormatter``;
* aiohttp's access logger switched off: its default line holds the client address, the request
  line (path and query) and the Referer.

Callers log operational events: ``log.warning("vendor %s timed out", vendor.id)``, or with
structured fields, ``log.info("vendor error", extra={"vendor": v.id, "status": 502})``. Nobody
logs a card, PIN, address, URL, search term or header value; the filter is the safety net for
the day somebody does.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from proxy.records.scrub import scrub, scrub_traceback

if TYPE_CHECKING:
    from proxy.settings import Reader

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMATS = ("text", "json")

# Structured fields a caller may attach with ``extra=``; anything else is dropped unseen, so a
# field added in a hurry cannot carry a patron's data into a log shipper.
ALLOWED_EXTRAS = frozenset({"event", "vendor", "status", "reason", "kind", "count", "duration_ms", "component"})
_MAX_EXTRA = 200

_MARK = "_libproxy_scrubbed"
# Every attribute a bare LogRecord has: anything beyond these came from ``extra=``.
_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime", "taskName", _MARK,
}
_ACCESS_LOGGERS = ("aiohttp.access",)


@dataclass(frozen=True)
class LogOptions:
    """The ``[logging]`` table: ``level`` (DEBUG/INFO/WARNING/ERROR) and ``format`` (text/json)."""

    level: str = "INFO"
    format: str = "text"


def parse_options(reader: Reader) -> LogOptions:
    """Read the ``[logging]`` table (``root.sub("logging")``); problems go to the reader.

    The caller calls ``reader.unknown_keys()`` afterwards, as for every other table.
    """
    level = reader.str("level", "INFO").upper()
    if level not in LEVELS:
        reader.bad("level", f"must be one of {', '.join(LEVELS)}, not {level!r}")
        level = "INFO"
    fmt = reader.choice("format", "text", FORMATS)
    return LogOptions(level=level, format=fmt)


def scrub_record(record: logging.LogRecord) -> None:
    """Replace a record's message, arguments, exception and stack text with scrubbed text.

    Idempotent (a mark on the record skips the second pass). Afterwards ``record.args`` is empty,
    ``record.exc_info`` is None and ``record.exc_text`` holds the scrubbed traceback, so no
    formatter can reach the raw exception object or the raw arguments.
    """
    if getattr(record, _MARK, False):
        return
    try:
        message = record.getMessage()
    except Exception:
        # SECURITY: arguments that do not fit the format are dropped, never printed raw.
        message = f"{record.msg!s} [log arguments dropped: they did not match the format]"
    record.msg = scrub(message)
    record.args = ()
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = scrub_traceback(record.exc_text)
    # SECURITY: the exception object (and the frames' locals it points to) leaves the record.
    record.exc_info = None
    if record.stack_info:
        record.stack_info = scrub_traceback(record.stack_info)
    setattr(record, _MARK, True)


def _safe_extra(value: object) -> str | int | float | bool | None:
    if value is None or isinstance(value, bool | int | float):
        return value
    return scrub(str(value))[:_MAX_EXTRA]


class PrivacyFilter(logging.Filter):
    """Scrubs every record passing a handler and drops access-log records; never rejects others.

    Contract: after ``filter(record)`` the record's message, exception and stack text are
    scrubbed, its only non-standard attributes are ``ALLOWED_EXTRAS`` (scrubbed, at most 200
    characters), and records of aiohttp's access logger are refused.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        # SECURITY: an access-log line is address + request line + referer: never written.
        if record.name in _ACCESS_LOGGERS:
            return False
        scrub_record(record)
        for key in [k for k in record.__dict__ if k not in _STANDARD_ATTRS]:
            if key in ALLOWED_EXTRAS:
                record.__dict__[key] = _safe_extra(record.__dict__[key])
            else:
                # SECURITY: an extra field nobody reviewed is not written.
                del record.__dict__[key]
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: record.__dict__[k] for k in sorted(ALLOWED_EXTRAS) if k in record.__dict__}


class TextFormatter(logging.Formatter):
    """``time level logger: message [key=value ...]``, one event per line plus any traceback."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        scrub_record(record)
        # SECURITY: a line break inside a message would let it forge a separate log line.
        record.msg = str(record.msg).replace("\r", "\\r").replace("\n", "\\n")
        line = super().format(record)
        fields = _extras(record)
        if fields:
            first, sep, rest = line.partition("\n")
            tail = " ".join(f"{k}={v}" for k, v in fields.items())
            line = f"{first} [{tail}]{sep}{rest}"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``,
    ``exception`` and ``stack`` when present, and the allowed extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        scrub_record(record)
        when = datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")
        entry: dict[str, Any] = {
            "time": when.replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": str(record.msg),
        }
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        for key, value in _extras(record).items():
            entry.setdefault(key, value)
        return json.dumps(entry, ensure_ascii=False, separators=(",", ":"), default=str)


_base_factory: Callable[..., logging.LogRecord] | None = None


def _scrubbing_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    assert _base_factory is not None
    record = _base_factory(*args, **kwargs)
    scrub_record(record)
    return record


def install_record_factory() -> None:
    """Make every LogRecord of the process scrubbed at creation; safe to call more than once."""
    global _base_factory
    current = logging.getLogRecordFactory()
    if current is _scrubbing_factory:
        return
    _base_factory = current
    logging.setLogRecordFactory(_scrubbing_factory)


def setup_logging(level: str | int = "INFO", fmt: str = "text", stream: TextIO | None = None) -> logging.Handler:
    """Configure the whole process's logging; returns the handler it installed.

    Every handler already on the root logger is removed, so nothing configured earlier (a
    ``basicConfig`` call, say) can write around the filter. Calling it again replaces the
    previous setup. ``stream`` defaults to standard error.
    """
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    install_record_factory()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(PrivacyFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for name in _ACCESS_LOGGERS:
        # Belt and braces with access_log=None in web.run_app: the records are never created.
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
    return handler


def setup_from_options(options: LogOptions, stream: TextIO | None = None) -> logging.Handler:
    """``setup_logging`` from a parsed ``[logging]`` table."""
    return setup_logging(options.level, options.format, stream)


def safe_fields(**fields: object) -> Mapping[str, object]:
    """An ``extra=`` mapping restricted to ``ALLOWED_EXTRAS``; raises on any other name, so a
    mistake shows up in tests rather than silently vanishing in production."""
    unknown = set(fields) - ALLOWED_EXTRAS
    if unknown:
        raise ValueError(f"log fields not allowed: {', '.join(sorted(unknown))}")
    return fields
