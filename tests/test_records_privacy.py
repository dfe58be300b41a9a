"""The [records] options and the privacy summary generated from the configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from proxy import config as config_mod
from proxy.records.options import DAY, RecordsOptions, default_options, parse_options
from proxy.records.privacy import PrivacyFacts, human_duration, privacy_summary
from proxy.records.security import SecurityOptions, UsageLimit
from proxy.settings import Problems, Reader


def _records(data: dict[str, Any], tmp_path: Path) -> tuple[RecordsOptions, list[str]]:
    problems = Problems()
    reader = Reader({"records": data}, "", problems, tmp_path).sub("records")
    options = parse_options(reader, state_dir=tmp_path / "var")
    reader.unknown_keys()
    return options, problems.items


def test_defaults(tmp_path: Path) -> None:
    options, problems = _records({}, tmp_path)
    assert problems == []
    assert options == default_options(tmp_path / "var")
    assert options.database == tmp_path / "var" / "stats.sqlite3"
    assert options.threshold == 5
    assert options.detail_retention == 90 * DAY and options.monthly_retention == 1100 * DAY
    assert options.flush_interval == 5 and options.purge_interval == 3600  # a crash loses seconds (issue 13)
    assert options.tz is None
    assert options.security == SecurityOptions()


def test_all_keys(tmp_path: Path) -> None:
    options, problems = _records({
        "database": "stats/usage.db", "threshold": 10, "detail_retention": "30d", "monthly_retention": "730d",
        "flush_interval": "5m", "purge_interval": "6h", "timezone": "America/New_York",
        "security": {"rotate_keys": "12h", "failure_window": "10m", "max_failures": 5,
                     "usage_limits": {"download": "100/1h"}},
    }, tmp_path)
    assert problems == []
    assert options.database == tmp_path / "stats" / "usage.db"
    assert (options.threshold, options.detail_retention, options.monthly_retention) == (10, 30 * DAY, 730 * DAY)
    assert (options.flush_interval, options.purge_interval) == (300, 6 * 3600)
    assert options.tz is not None and str(options.tz) == "America/New_York"
    assert options.security.rotate == 12 * 3600 and options.security.max_failures == 5
    assert options.security.usage_limits == {"download": UsageLimit(100, 3600)}


def test_every_problem_listed_at_once(tmp_path: Path) -> None:
    _, problems = _records({
        "threshold": 1, "detail_retention": "forever", "monthly_retention": "10d", "timezone": "Mars/Olympus",
        "flush_interval": "2h", "colour": "red", "security": {"max_failures": "ten"},
    }, tmp_path)
    text = "\n".join(problems)
    for word in ("threshold", "detail_retention", "monthly_retention", "timezone", "flush_interval", "colour",
                 "max_failures"):
        assert word in text, text
    assert all(p.startswith("[records") for p in problems), problems


@pytest.mark.parametrize(("seconds", "text"), [
    (90 * DAY, "90 days"), (DAY, "1 day"), (7200, "2 hours"), (900, "15 minutes"), (90, "90 seconds"),
    (1100 * DAY, "1100 days (about 3 years)"), (5400, "90 minutes"),
])
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def _config(tmp_path: Path) -> config_mod.Config:
    return config_mod.from_dict({
        "library": {"id": "wolcott.lib.ct.us", "name": "Wolcott Public Library"},
        "sessions": {"idle": "1h", "lifetime": "8h"},
        "assertion": {"lifetime": "5m"},
    }, base=tmp_path)


def test_summary_follows_the_configuration(tmp_path: Path) -> None:
    records = RecordsOptions(
        database=tmp_path / "s.sqlite3", threshold=10, detail_retention=30 * DAY, monthly_retention=730 * DAY,
        security=SecurityOptions(rotate=DAY, window=900, max_failures=6,
                                 usage_limits={"download": UsageLimit(100, 3600)}),
    )
    sections = privacy_summary(PrivacyFacts.from_config(_config(tmp_path), records))
    headings = [h for h, _ in sections]
    assert headings[0] == "What the databases receive"
    assert "Usage statistics" in headings and "Protection against guessing" in headings
    text = "\n".join(p for _, p in sections)
    for expected in ("Wolcott Public Library", "wolcott.lib.ct.us", "5 minutes", "1 hour", "8 hours",
                     "30 days", "2 years", '"<10"', "1 to 9", "6 failures", "15 minutes",
                     "every day", "2 days", "100 downloads every hour", "No database receives any identifier"):
        assert expected in text, expected
    assert "{" not in text and "}" not in text
    assert all(isinstance(h, str) and isinstance(p, str) and p for h, p in sections)


def test_summary_names_vendors_with_pairwise_identifiers(tmp_path: Path) -> None:
    facts = PrivacyFacts.from_config(_config(tmp_path), default_options(tmp_path),
                                     pairwise_vendors=["JSTOR", "Gale Virtual Reference"])
    text = "\n".join(p for _, p in privacy_summary(facts))
    assert "JSTOR and Gale Virtual Reference offer personal features" in text
    assert "only identifier that ever leaves" in text
    assert "No database receives any identifier" not in text
    assert "90 days" in text and "1,100 days (about 3 years)" in text
    # Issue 16: periods and durations in words, and no possessive of the library's name.
    assert "every 1 " not in text and "every hour" in text
