"""Reading EZproxy configuration into a flat list of directives, each with its file and line.

The rules, as EZproxy applies them and as this reader does:

* One directive per line: a name, blanks, then the argument text. Leading and trailing blanks
  are ignored (so are CR line ends); blank lines are skipped.
* A line whose first non-blank character is ``#`` is a comment. There are no end-of-line
  comments: ``#`` inside an argument (a URL fragment) is data.
* Directive names are case-insensitive, and several have short forms (``T`` for ``Title``,
  ``HJ`` for ``HostJavaScript``, ``A``/``E``/``I`` for the IP directives...): ``directives.py``.
  ``Option`` names are case-insensitive too (``Option cookiepassthrough``).
* EZproxy has no continuation character. Stanzas pasted from e-mail or web pages, however, often
  arrive with a long line wrapped: a line that starts with blanks and does not start with a
  known directive is taken as the rest of the line before it, and the join is reported (a
  note), so nothing is silently dropped or silently glued.
* ``IncludeFile name`` reads another file in place, relative to the directory of the file that
  includes it. A file that includes itself, directly or through others, is refused (an error
  naming the chain), as is nesting deeper than ``MAX_DEPTH``.
* Files are UTF-8 (a byte-order mark is dropped); a file that is not is read as Windows-1252
  (what the Windows editors EZproxy files are often kept in write), else Latin-1, and the report
  says so.
* An IncludeFile name written on a Windows server (``Stanzas\\EBSCO.txt``) is found here when
  exactly one file matches it with ``/`` for ``\\`` and letter case ignored (a note says so).
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from proxy.ezproxy.directives import canonical_name, is_known, known_option
from proxy.ezproxy.report import Finding, Kind

MAX_DEPTH = 16  # IncludeFile nesting; real configurations use one or two levels
MAX_FILE_BYTES = 16 * 1024 * 1024  # SECURITY: a config.txt is kilobytes; refuse to slurp a disk image
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_NAME = re.compile(r"^(\S+)\s*(.*)$", re.S)
# Byte-order marks and zero-width spaces (with blanks between them) at the start of a line.
_INVISIBLE = re.compile(r"^[\s\ufeff\u200b]*[\ufeff\u200b][\s\ufeff\u200b]*")
# Directives whose argument is one URL or host: a wrapped line is glued without a blank.
_GLUE_TIGHT = frozenset({"URL", "Host", "HostJavaScript", "Domain", "DomainJavaScript", "AnonymousURL", "NeverProxy"})


class ImportFailure(Exception):
    """A file named on the command line cannot be read at all: one line for the user."""


@dataclass(frozen=True, slots=True)
class Directive:
    file: str  # display name of the file it came from
    line: int  # 1-based line of the directive's first physical line
    name: str  # canonical name ("Title", "Option CookiePassThrough"); unknown names as written
    raw_name: str  # the name as written ("hj", "T", "OPTION")
    args: str  # the argument text, blanks at both ends removed
    known: bool = True  # False for a directive this importer does not recognise


@dataclass
class Parsed:
    directives: list[Directive] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # every file read, in order
    comment_only: set[str] = field(default_factory=set)  # files with no directive at all


def read_files(paths: list[str]) -> Parsed:
    """Read the named files in order, following IncludeFile. A missing or unreadable file named
    on the command line raises ImportFailure; the same problem in an IncludeFile is a finding."""
    parsed = Parsed()
    for given in paths:
        path = Path(given)
        problem = _unreadable(path)
        if problem:
            raise ImportFailure(f"{given}: {problem}")
        _read(path, given, parsed, stack=())
    return parsed


def _unreadable(path: Path) -> str | None:
    """Why ``path`` cannot be read as a configuration file, or None. Only regular files are
    read: a device (``/dev/zero``) or a FIFO reports no size and would never end, so they are
    refused without being opened."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return "no such file"
    except OSError as exc:
        return f"cannot read: {exc.strerror}"
    if stat.S_ISDIR(info.st_mode):
        return "is a directory (name the config.txt or stanza files in it)"
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file (a device, FIFO or socket): refused"
    if info.st_size > MAX_FILE_BYTES:
        return f"is {info.st_size} bytes; an EZproxy configuration is far smaller (limit {MAX_FILE_BYTES})"
    return None


def _read_bytes(path: Path, display: str) -> bytes:
    """The file's bytes, at most MAX_FILE_BYTES. Opened without blocking and checked again once
    open (the file may have been swapped for a FIFO or device since ``_unreadable``)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ImportFailure(f"{display}: cannot read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise ImportFailure(f"{display}: is not a regular file (a device, FIFO or socket): refused")
        try:
            data = handle.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise ImportFailure(f"{display}: cannot read: {exc.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ImportFailure(f"{display}: is more than {MAX_FILE_BYTES} bytes; an EZproxy configuration is far "
                            "smaller: refused")
    return data


def _decode(data: bytes, display: str, parsed: Parsed) -> str | None:
    if b"\x00" in data:
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        first_bad = data.count(b"\n", 0, exc.start) + 1
    # Windows-1252 first: it is what Windows editors write, and Latin-1 would turn its curly
    # quotes and dashes (0x80-0x9F) into control characters. Latin-1 decodes anything.
    for encoding, label in (("cp1252", "Windows-1252"), ("latin-1", "Latin-1")):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        parsed.findings.append(Finding(
            Kind.NOTE, display, first_bad, "(file)",
            f"not UTF-8 text: read as {label} (check accented titles in the output)",
        ))
        return text
    raise AssertionError("Latin-1 decodes every byte string")


def _read(path: Path, display: str, parsed: Parsed, stack: tuple[Path, ...]) -> None:
    resolved = path.resolve()
    data = _read_bytes(path, display)
    text = _decode(data, display, parsed)
    parsed.files.append(display)
    if text is None:
        parsed.findings.append(Finding(Kind.ERROR, display, 0, "(file)", "is not a text file (it contains NUL bytes)"))
        return
    before, findings_before = len(parsed.directives), len(parsed.findings)
    for directive in _directives(text, display, parsed):
        if directive.name == "IncludeFile":
            _include(directive, resolved, parsed, (*stack, resolved))
        else:
            parsed.directives.append(directive)
    if len(parsed.directives) == before and not any(
        f.file == display and f.kind is Kind.ERROR for f in parsed.findings[findings_before:]
    ):
        parsed.comment_only.add(display)


def _include(directive: Directive, including: Path, parsed: Parsed, stack: tuple[Path, ...]) -> None:
    name = directive.args.strip().strip('"')
    if not name:
        parsed.findings.append(Finding(Kind.ERROR, directive.file, directive.line, "IncludeFile", "names no file"))
        return
    target = Path(name) if os.path.isabs(name) else including.parent / name
    if not target.exists():
        found = _windows_name(including.parent, name)
        if found is not None:
            parsed.findings.append(Finding(Kind.NOTE, directive.file, directive.line, "IncludeFile",
                                           f"{name}: found as {found.relative_to(including.parent)} (a Windows name: "
                                           "backslashes or different letter case)"))
            name, target = str(found.relative_to(including.parent)), found
    display = os.path.normpath(os.path.join(os.path.dirname(directive.file), name))
    problem = _unreadable(target)
    if problem is None and target.resolve() in stack:
        chain = " -> ".join([*(p.name for p in stack[stack.index(target.resolve()):]), target.name])
        problem = f"would include itself ({chain}): refused"
    elif problem is None and len(stack) >= MAX_DEPTH:
        problem = f"nests includes deeper than {MAX_DEPTH}: refused"
    if problem:
        parsed.findings.append(Finding(Kind.ERROR, directive.file, directive.line, "IncludeFile", f"{name}: {problem}"))
        return
    try:
        _read(target, display, parsed, stack)
    except ImportFailure as exc:
        parsed.findings.append(Finding(Kind.ERROR, directive.file, directive.line, "IncludeFile", str(exc)))


def _windows_name(base: Path, name: str) -> Path | None:
    """The file an IncludeFile written on a Windows EZproxy server means here: backslashes as
    separators, and letter case ignored (one match per step, or none). Relative names only."""
    parts = [p for p in re.split(r"[\\/]", name) if p and p != "."]
    if os.path.isabs(name) or re.match(r"^[A-Za-z]:", name) or ".." in parts:
        return None
    current = base
    for part in parts:
        try:
            matches = [c for c in current.iterdir() if c.name.lower() == part.lower()]
        except OSError:
            return None
        if len(matches) != 1:
            return None
        current = matches[0]
    return current if current.is_file() else None


def _directives(text: str, display: str, parsed: Parsed) -> list[Directive]:
    out: list[Directive] = []
    for number, raw in enumerate(_LINE_BREAK.split(text), start=1):
        invisible = _INVISIBLE.match(raw)
        if invisible:
            # Files joined with `cat *.txt > config.txt` keep each file's byte-order mark mid-file.
            raw = raw[invisible.end():]
            if raw.strip():
                parsed.findings.append(Finding(
                    Kind.NOTE, display, number, "(file)",
                    f"invisible {', '.join(sorted({f'U+{ord(c):04X}' for c in invisible.group()}))} before the "
                    "line (a byte-order mark or zero-width space, often left by joining files): ignored",
                ))
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _NAME.match(line)
        assert match is not None  # a non-empty stripped line has a first word
        raw_name, args = match.group(1), match.group(2).strip()
        if raw[0].isspace() and out and not is_known(raw_name):
            previous = out[-1]
            glue = "" if previous.name in _GLUE_TIGHT else " "
            out[-1] = Directive(previous.file, previous.line, previous.name, previous.raw_name,
                                previous.args + glue + line, previous.known)
            parsed.findings.append(Finding(
                Kind.NOTE, display, number, previous.name,
                f"indented line taken as the rest of line {previous.line} (a wrapped line); check it",
            ))
            continue
        name, args = canonical_name(raw_name, args)
        known = is_known(raw_name) and (not name.startswith("Option ") or known_option(name))
        out.append(Directive(display, number, name, raw_name, args, known))
    return out
