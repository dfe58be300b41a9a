"""Findings of an EZproxy import, and the report a librarian reads (text) or a script reads (JSON).

A leaf module: the parser and the converter both produce ``Finding``s, so the type lives here
and imports nothing else of the package.

Every directive of the input ends in exactly one of three places: it is mapped into the TOML
(and, when that deserves a look, noted), it is reported as handled by the proxy by default, or
it is reported as not carried over (no equivalent, a privacy problem, or an error). The report
names the file and line of each.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    """What became of a directive. The order is the order of the report's sections."""

    PRIVACY = "privacy"  # would break a privacy promise: deliberately not carried over
    ERROR = "error"  # asked for something that could not be imported (bad host, missing file...)
    FILL_IN = "fill-in"  # a stanza template's value the library must fill in ([siteID], {yourlibrary})
    DUPLICATE = "duplicate"  # a host or domain another database already has: EZproxy's first wins
    NO_EQUIVALENT = "no-equivalent"  # the proxy has nothing like it: not carried over
    DEFAULT = "default"  # the proxy always does this (or its safe equivalent): nothing to carry
    NOTE = "note"  # carried over, but worth a look


SECTION_TITLES: dict[Kind, str] = {
    Kind.PRIVACY: "Privacy: not carried over, because they would identify patrons to vendors or in logs",
    Kind.ERROR: "Errors: could not be imported",
    Kind.FILL_IN: "To fill in: the stanza holds a placeholder for your library's own value; edit it and import again",
    Kind.DUPLICATE: "Duplicates: EZproxy lets the first database win; so does the output",
    Kind.NO_EQUIVALENT: "No equivalent in this proxy: not carried over",
    Kind.DEFAULT: "Handled by the proxy by default: nothing to carry over",
    Kind.NOTE: "Notes: carried over, worth a look",
}

# What the proxy sends a vendor instead of anything identifying (the README's promise 1).
INSTEAD = (
    "the proxy sends only a signed membership assertion (a short-lived JWT shared by all patrons: "
    "\"member of the library\"), from its own address; no user name, card, session or client address"
)


# The same, in a finding's message (the report states INSTEAD in full once).
INSTEAD_SHORT = "not carried over; the proxy sends vendors only its signed membership assertion"


@dataclass(frozen=True, slots=True)
class Finding:
    kind: Kind
    file: str  # as shown to the user (the path given, or an include resolved from it)
    line: int  # 1-based; 0 when the finding concerns a whole file
    directive: str  # canonical directive name, e.g. "AddUserHeader" or "Option X-Forwarded-For"
    message: str
    vendor: str = ""  # id of the vendor entry concerned, when there is one

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": str(self.kind), "file": self.file, "line": self.line,
            "directive": self.directive, "message": self.message, "vendor": self.vendor,
        }


@dataclass(frozen=True, slots=True)
class VendorSummary:
    id: str
    title: str
    file: str
    line: int
    hosts: int
    domains: int


@dataclass(frozen=True, slots=True)
class Report:
    files: tuple[str, ...]  # every file read, includes too, in reading order
    vendors: tuple[VendorSummary, ...]
    networks: int
    findings: tuple[Finding, ...]

    def count(self, kind: Kind) -> int:
        return sum(1 for f in self.findings if f.kind is kind)

    def files_with_errors(self) -> set[str]:
        return {f.file for f in self.findings if f.kind is Kind.ERROR}


def summary_line(report: Report) -> str:
    """One line for the terminal when the report itself went to a file."""
    counts = Counter(f.kind for f in report.findings)
    parts = ", ".join(f"{counts.get(kind, 0)} {kind}" for kind in Kind)
    return f"{len(report.vendors)} vendor entries, {report.networks} library networks; findings: {parts}"


def render_text(report: Report) -> str:
    """The report for IT staff: a summary, then one section per kind, each line file:line."""
    counts = Counter(f.kind for f in report.findings)
    out: list[str] = [
        "EZproxy import report",
        "=====================",
        "",
        f"Read {len(report.files)} file(s); wrote {len(report.vendors)} vendor entr"
        f"{'y' if len(report.vendors) == 1 else 'ies'} and {report.networks} library network(s).",
    ]
    out.extend(f"  {counts.get(kind, 0):5d}  {SECTION_TITLES[kind].split(':')[0].lower()}" for kind in Kind)
    if counts.get(Kind.PRIVACY):
        out += ["", f"Instead of what the privacy findings asked for, {INSTEAD}."]
    for kind in Kind:
        items = [f for f in report.findings if f.kind is kind]
        if not items:
            continue
        out += ["", SECTION_TITLES[kind], "-" * len(SECTION_TITLES[kind])]
        out.extend(_line(f) for f in items)
    if report.vendors:
        title = "Vendor entries written (id, title, from)"
        out += ["", title, "-" * len(title)]
        width = max(len(v.id) for v in report.vendors)
        out.extend(f"{v.id:<{width}}  {v.title}  ({v.file}:{v.line})" for v in report.vendors)
    return "\n".join(out) + "\n"


def _line(finding: Finding) -> str:
    vendor = f" [{finding.vendor}]" if finding.vendor else ""
    return f"{finding.where}: {finding.directive}{vendor}: {finding.message}"


def render_json(report: Report) -> str:
    """The same report for scripts; keys are stable, output is deterministic."""
    counts = Counter(str(f.kind) for f in report.findings)
    data = {
        "files": list(report.files),
        "summary": {
            "files": len(report.files),
            "vendors": len(report.vendors),
            "networks": report.networks,
            "findings": {str(kind): counts.get(str(kind), 0) for kind in Kind},
        },
        "instead": INSTEAD,
        "vendors": [
            {"id": v.id, "title": v.title, "file": v.file, "line": v.line, "hosts": v.hosts, "domains": v.domains}
            for v in report.vendors
        ],
        "findings": [f.as_dict() for f in report.findings],
    }
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def sort_findings(findings: Iterable[Finding], file_order: Sequence[str]) -> tuple[Finding, ...]:
    """Findings in reading order (file as read, then line), so re-runs give the same report."""
    rank = {name: i for i, name in enumerate(file_order)}
    return tuple(sorted(findings, key=lambda f: (rank.get(f.file, len(rank)), f.file, f.line, f.kind, f.message)))
