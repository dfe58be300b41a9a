"""Records the privacy policy allows, and none it forbids (promise 5 of DESIGN.md).

    scrub.py      pure text scrubbing: addresses, URL paths and queries, cards, e-mails, tokens
    logsetup.py   setup_logging(): one handler, a privacy filter, text or JSON lines; [logging]
    stats.py      per-vendor, per-day counts: hot-path accumulator, SQLite on a worker thread,
                  classify() of searches and downloads by per-vendor URL patterns
    report.py     reports with small counts suppressed ("<5"), tables and CSV
    security.py   failed sign-ins and usage limits under rotating keyed hashes, in memory only
    retention.py  the purge schedule and purge_now() for ``python -m proxy purge``
    options.py    the [records] table and its defaults (and why they are what they are)
    privacy.py    the plain-language privacy page, generated from the configuration
    commands.py   the ``stats`` and ``purge`` commands
    service.py    Records: all of the above opened and closed with the application

Nothing in this package stores a patron identifier, an address, a URL or a time of day.
"""

from __future__ import annotations

from proxy.records.commands import add_stats_arguments, run_purge_command, run_stats_command, stats_from_args
from proxy.records.logsetup import LogOptions, PrivacyFilter, setup_logging
from proxy.records.logsetup import parse_options as parse_log_options
from proxy.records.options import RecordsOptions, default_options, parse_options
from proxy.records.privacy import PrivacyFacts, privacy_summary
from proxy.records.report import PROXY_VENDOR, Cell, Report, ReportRow, render_table, report_csv, write_csv
from proxy.records.retention import Retention, purge_now
from proxy.records.scrub import header_names, scrub
from proxy.records.security import SecurityMemory, SecurityOptions
from proxy.records.service import Records
from proxy.records.stats import (
    KINDS,
    NO_PATTERNS,
    CounterPatterns,
    Kind,
    UsageStats,
    classify,
    compile_patterns,
    parse_counter_patterns,
)

__all__ = [
    "KINDS",
    "NO_PATTERNS",
    "PROXY_VENDOR",
    "Cell",
    "CounterPatterns",
    "Kind",
    "LogOptions",
    "PrivacyFacts",
    "PrivacyFilter",
    "Records",
    "RecordsOptions",
    "Report",
    "ReportRow",
    "Retention",
    "SecurityMemory",
    "SecurityOptions",
    "UsageStats",
    "add_stats_arguments",
    "classify",
    "compile_patterns",
    "default_options",
    "header_names",
    "parse_counter_patterns",
    "parse_log_options",
    "parse_options",
    "privacy_summary",
    "purge_now",
    "render_table",
    "report_csv",
    "run_purge_command",
    "run_stats_command",
    "scrub",
    "setup_logging",
    "stats_from_args",
    "write_csv",
]
