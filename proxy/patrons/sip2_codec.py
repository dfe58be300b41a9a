"""The SIP2 wire format (3M Standard Interchange Protocol 2.00), as far as the proxy speaks it.

A message is one line: a two-digit command, fixed-width fields, then variable fields each made
of a two-letter identifier, a value and ``|``, ended by a carriage return. With error detection
on, ``AY<sequence digit>AZ<checksum>`` closes the line: the checksum is four upper-case hex
digits, the 16-bit two's complement of the sum of every byte before it (so message bytes plus
checksum add up to zero). Leading zeros of the checksum are kept: ``000F`` is not ``F``.

Pure functions, no I/O and no logging: messages carry PINs and personal data, and nothing here
may copy them anywhere. ``decode`` reads only the identifiers it is asked for; every other field
(names, addresses, e-mails, screen messages) is skipped without being decoded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

DELIMITER = b"|"
TERMINATOR = b"\r"
MAX_FRAME = 16 * 1024  # longer answers are refused (a SIP2 line is a few hundred bytes)

# SECURITY: these would end a field or the message early, letting a card number such as
# "123|AD0000" add fields of its author's choosing to a request.
_FORBIDDEN = re.compile(r"[|\r\n\x00]")
_TRAILER = re.compile(rb"AY([0-9])AZ([0-9A-Fa-f]{4})\Z")
_CHECKSUM_ONLY = re.compile(rb"AZ([0-9A-Fa-f]{4})\Z")
_FIELD_ID = re.compile(r"^[A-Z][A-Z0-9]\Z")


class FormatError(Exception):
    """An answer that is not a well-formed SIP2 message of the expected kind. The message
    names the defect only, never a field value."""


class ChecksumError(FormatError):
    """The answer's checksum is missing or wrong: it was damaged on the way, or the server
    does not do error detection as configured."""


def checksum(data: bytes) -> bytes:
    """The four hex digits that make ``data`` plus themselves sum to zero (mod 2**16)."""
    return b"%04X" % (-sum(data) & 0xFFFF)


def valid_value(value: str) -> bool:
    """True when ``value`` can be sent as one field (no delimiter, terminator or NUL)."""
    return _FORBIDDEN.search(value) is None


def valid_field_id(field_id: str) -> bool:
    return _FIELD_ID.match(field_id) is not None


def sip_datetime(moment: datetime) -> str:
    """The 18-character transaction date: YYYYMMDD, four spaces (local time), HHMMSS."""
    return moment.strftime("%Y%m%d") + "    " + moment.strftime("%H%M%S")


def encode(command: str, fixed: str, fields: Sequence[tuple[str, str]], *, sequence: int | None,
           encoding: str) -> bytes:
    """One request line. ``sequence`` (0-9) adds the AY/AZ trailer; None sends none.

    Raises ValueError when a value cannot be sent as one field; the caller must have refused
    such input before (``valid_value``).
    """
    parts = [command, fixed]
    for field_id, value in fields:
        if not valid_value(value):
            raise ValueError(f"field {field_id} holds a character SIP2 cannot carry")
        parts.append(f"{field_id}{value}|")
    body = "".join(parts).encode(encoding)
    if sequence is not None:
        body += b"AY%dAZ" % sequence
        body += checksum(body)
    return body + TERMINATOR


def resend_request(*, checksums: bool) -> bytes:
    """``97``: ask the server to send its last answer again (after a damaged one)."""
    body = b"97"
    if checksums:
        body += b"AZ"
        body += checksum(body)
    return body + TERMINATOR


@dataclass(frozen=True, slots=True)
class Answer:
    """The parts of one answer the caller asked for: the command, its fixed-width part, the
    first value of each wanted identifier, and the sequence digit (None without a trailer)."""

    command: str
    fixed: str
    fields: Mapping[str, str]
    sequence: int | None


def decode(line: bytes, *, command: str, fixed_length: int, wanted: frozenset[str], checksums: bool,
           encoding: str) -> Answer:
    """Parse one answer line (with or without its final CR).

    With ``checksums`` the line must end in a valid AY/AZ trailer (ChecksumError otherwise);
    without, a trailer that is present is still verified. Raises FormatError for anything
    malformed, or for another command than ``command``.
    """
    body = line.lstrip(b"\n")  # some servers end lines with CR LF: the LF starts the next read
    if body.endswith(TERMINATOR):
        body = body[:-1]
    if b"\r" in body or b"\x00" in body:
        raise FormatError("a control character inside the answer")
    sequence: int | None = None
    trailer = _TRAILER.search(body) or _CHECKSUM_ONLY.search(body)
    if trailer is not None:
        if (sum(body[:-4]) + int(body[-4:], 16)) & 0xFFFF:
            raise ChecksumError("the answer's checksum is wrong")
        if trailer.re is _TRAILER:
            sequence = int(trailer.group(1))
        body = body[: trailer.start()]
    elif checksums:
        raise ChecksumError("the answer has no checksum")
    head = body[: 2 + fixed_length]
    if len(head) != 2 + fixed_length or not head.isascii():
        raise FormatError("the answer is too short")
    if head[:2].decode("ascii") != command:
        raise FormatError(f"expected a {command} answer")
    found: dict[str, str] = {}
    for piece in body[2 + fixed_length:].split(DELIMITER):
        field_id = piece[:2]
        if len(field_id) < 2 or not field_id.isascii():
            continue  # an empty tail after the last delimiter, or bytes no field starts with
        name = field_id.decode("ascii")
        # Only wanted identifiers are decoded at all; the first occurrence counts.
        if name in wanted and name not in found:
            found[name] = piece[2:].decode(encoding, "replace")
    return Answer(command, head[2:].decode("ascii"), found, sequence)
