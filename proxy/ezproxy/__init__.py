"""Import EZproxy configuration (a whole config.txt, or vendor stanza files) as vendor entries.

    parser.py      files -> directives with file and line (comments, case, short names, IncludeFile)
    directives.py  the catalogue: names, short forms, and the fixed verdict of unmapped directives
    convert.py     replays the directives in order: stanzas and position-dependent state
    tables.py      the rules needing every stanza: NeverProxy, duplicates, anonymous paths, networks
    urls.py        argument syntaxes (hosts, domains, ^ templates, AnonymousURL wildcards)
    output.py      the TOML, byte-identical for the same input
    report.py      findings, and the report as text or JSON

``run_import`` is the whole pipeline; ``libproxy import-ezproxy`` is its command line.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.ezproxy.parser import ImportFailure
from proxy.ezproxy.report import Report

__all__ = ["ImportFailure", "ImportResult", "run_import"]


@dataclass(frozen=True)
class ImportResult:
    toml: str
    report: Report


def run_import(paths: list[str], default_groups: tuple[str, ...] = ("default",)) -> ImportResult:
    """Convert the files, read in the order given (as if one config.txt included them all).

    Raises ImportFailure (a one-line message) only when a named file cannot be read at all;
    everything else becomes a finding in the report.
    """
    from proxy.ezproxy.convert import replay
    from proxy.ezproxy.output import render_toml
    from proxy.ezproxy.parser import read_files
    from proxy.ezproxy.report import Finding, Kind, VendorSummary, sort_findings
    from proxy.ezproxy.tables import finish
    from proxy.ezproxy.urls import emit_hosts
    from proxy.vendors import VendorConfig, check_vendor_table

    parsed = read_files(paths)
    conversion = finish(replay(parsed.directives, default_groups))
    findings = [*parsed.findings, *conversion.findings]
    for name in sorted(parsed.comment_only):
        findings.append(Finding(Kind.NOTE, name, 1, "(file)", "holds only comments: no database to import"))
    # Belt and braces: the output must pass the proxy's own table checks. A problem here is a
    # bug in this importer, reported rather than written silently into a configuration.
    configs = [
        VendorConfig(id=s.id, title=s.title, start=s.start, hosts=tuple(emit_hosts(s.origins)),
                     domains=tuple(s.domains), groups=frozenset(s.groups))
        for s in conversion.vendors
    ]
    for problem in check_vendor_table(configs):
        findings.append(Finding(Kind.ERROR, parsed.files[0] if parsed.files else "", 0, "(output)", problem))
    report = Report(
        files=tuple(parsed.files),
        vendors=tuple(
            VendorSummary(s.id, s.title, s.file, s.line, len(s.origins), len(s.domains)) for s in conversion.vendors
        ),
        networks=len(conversion.networks),
        findings=sort_findings(findings, parsed.files),
    )
    return ImportResult(render_toml(conversion, parsed.files), report)
