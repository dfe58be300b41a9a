"""Statistics: classification, the hot-path accumulator, SQLite off the loop, suppressed reports."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import sqlite3
import threading
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from proxy.records.commands import add_stats_arguments, run_stats_command, stats_from_args
from proxy.records.options import RecordsOptions
from proxy.records.report import COLUMNS, Report, build_report, plan_month, render_table, report_csv
from proxy.records.stats import (
    PROXY_VENDOR,
    CounterPatterns,
    StatsDB,
    UsageStats,
    classify,
    compile_patterns,
    parse_counter_patterns,
)
from proxy.settings import Problems, Reader
from tests.support import EchoVendor

DAY1 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC).timestamp()
DAY2 = datetime(2026, 3, 3, 15, 30, tzinfo=UTC).timestamp()
MARCH = (date(2026, 3, 1), date(2026, 3, 31))

JSTOR = compile_patterns(search=["/action/doBasicSearch*"], download=["re:^/stable/pdf/"])
GALE = compile_patterns(search=["re:^/ps/(?:basic|advanced)Search"], download=["*/pdf?*"])
PATTERNS = {"jstor": JSTOR, "gale": GALE}
QUERY_MARKER = "marmotmarker"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def stats(tmp_path: Path) -> AsyncIterator[tuple[UsageStats, Clock]]:
    clock = Clock(DAY1)
    usage = UsageStats(tmp_path / "stats.sqlite3", clock=clock, tz=UTC, flush_interval=3600)
    await usage.start()
    yield usage, clock
    await usage.close()


def _visit(usage: UsageStats, vendor: str, pages: list[tuple[str, int]], *, in_library: bool) -> None:
    """One patron's visit as the request path would count it."""
    usage.record(vendor, kind="session", in_library=in_library)
    if not in_library:
        usage.record(PROXY_VENDOR, kind="session", in_library=False)
    for path, size in pages:
        usage.count_request(vendor, path, patterns=PATTERNS[vendor], bytes=size, in_library=in_library)


def _scripted_mix(usage: UsageStats, clock: Clock) -> None:
    clock.now = DAY1
    for i in range(12):
        _visit(usage, "jstor", [
            (f"/action/doBasicSearch?Query={QUERY_MARKER}{i}", 50_000),
            (f"/stable/pdf/1234{i}.pdf", 1_500_000),
            ("/stable/10.2307/1234", 20_000),
        ], in_library=False)
    for _ in range(6):
        _visit(usage, "jstor", [(f"/action/doBasicSearch?Query={QUERY_MARKER}", 50_000),
                                ("/stable/10.2307/99", 20_000)], in_library=True)
    for _ in range(2):
        _visit(usage, "gale", [(f"/ps/basicSearch.do?q={QUERY_MARKER}", 40_000)], in_library=False)
    clock.now = DAY2
    for _ in range(7):
        _visit(usage, "gale", [(f"/ps/advancedSearch.do?q={QUERY_MARKER}", 40_000)], in_library=False)
    _visit(usage, "jstor", [(f"/action/doBasicSearch?Query={QUERY_MARKER}", 50_000),
                            ("/stable/pdf/777.pdf", 1_500_000)], in_library=False)


def _cells(report: Report) -> dict[tuple[str, str], list[str]]:
    return {(row.period, row.vendor): [row.cells[c].text for c in COLUMNS] for row in report.rows}


# ----------------------------------------------------------------------------------------------
# classification


@pytest.mark.parametrize(("path", "expected"), [
    ("/action/doBasicSearch?Query=owls", {"search"}),
    ("/action/doBasicSearch", {"search"}),
    ("/stable/pdf/12345.pdf", {"download"}),
    ("/stable/10.2307/12345", set()),
    ("/x/action/doBasicSearch?Query=owls", set()),  # globs match the whole path and query
    ("/ACTION/DOBASICSEARCH", set()),
])
def test_classify_jstor(path: str, expected: set[str]) -> None:
    assert classify(path, JSTOR) == expected


def test_classify_globs_span_slashes_and_queries() -> None:
    assert classify("/ps/i.do/pdf?id=GALE%7CA1&v=2.1", GALE) == {"download"}
    assert classify("/ps/advancedSearch.do?q=x", GALE) == {"search"}
    both = compile_patterns(search=["*"], download=["re:pdf"])
    assert classify("/pdf", both) == {"search", "download"}
    assert classify("/anything", CounterPatterns()) == frozenset()


def test_classify_caps_input() -> None:
    pattern = compile_patterns(download=["re:TAIL$"])
    assert classify("/a" + "x" * 10_000 + "TAIL", pattern) == frozenset()


def test_parse_counter_patterns_reports_bad_regexes(tmp_path: Path) -> None:
    problems = Problems()
    data = {"counter": {"search": ["/s*", "re:(unclosed"], "download": "re:\\.pdf$", "views": []}}
    reader = Reader(data, "vendor 'jstor'", problems, tmp_path).sub("counter")
    patterns = parse_counter_patterns(reader)
    assert len(patterns.search) == 1 and len(patterns.download) == 1
    assert classify("/file.pdf", patterns) == {"download"}
    assert len(problems.items) == 2, problems.items
    assert "(unclosed" in problems.items[0] and "views" in problems.items[1]


# ----------------------------------------------------------------------------------------------
# the accumulator


async def test_record_refuses_anything_but_vendor_ids(stats: tuple[UsageStats, Clock]) -> None:
    usage, _ = stats
    for bad in ("/search?q=owls", "www.vendor.com", "jstor\n", "", "JSTOR", "a" * 41, "_other"):
        with pytest.raises(ValueError):
            usage.record(bad, kind="request", in_library=False)
    with pytest.raises(ValueError):
        usage.record("jstor", kind="view", in_library=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        usage.record("jstor", kind="request", n=-1, in_library=False)
    usage.record(PROXY_VENDOR, kind="session", in_library=False)


async def test_scripted_mix_daily_report(stats: tuple[UsageStats, Clock]) -> None:
    usage, clock = stats
    _scripted_mix(usage, clock)
    report = await usage.report(*MARCH, period="day")
    d1, d2 = "2026-03-02", "2026-03-03"
    # columns: sessions remote/library, requests remote/library, searches, downloads, MB
    assert _cells(report) == {
        (d1, PROXY_VENDOR): ["14", "0", "0", "0", "0", "0", "0"],
        (d1, "gale"): ["<5", "0", "<5", "0", "<5", "0", "*"],
        # jstor's day-2 figures are small and March is printed, so day 1 is withheld as well:
        # otherwise "March minus 2 March" would give the hidden day-2 values away.
        (d1, "jstor"): ["*", "6", "*", "12", "*", "*", "*"],
        (d2, PROXY_VENDOR): ["8", "0", "0", "0", "0", "0", "0"],
        (d2, "gale"): ["*", "0", "*", "0", "*", "0", "*"],
        (d2, "jstor"): ["<5", "0", "<5", "0", "<5", "<5", "*"],
    }
    totals = {c: report.totals[c].text for c in COLUMNS}
    assert totals == {
        "sessions_remote": "0+", "sessions_in_library": "6", "requests_remote": "0+",
        "requests_in_library": "12", "searches": "0+", "downloads": "0+", "megabytes": "0+",
    }


async def test_scripted_mix_monthly_report(stats: tuple[UsageStats, Clock]) -> None:
    usage, clock = stats
    _scripted_mix(usage, clock)
    report = await usage.report(*MARCH, period="month")
    assert _cells(report) == {
        ("2026-03", PROXY_VENDOR): ["22", "0", "0", "0", "0", "0", "0"],
        ("2026-03", "gale"): ["9", "0", "9", "0", "9", "0", "0"],
        ("2026-03", "jstor"): ["13", "6", "38", "12", "19", "13", "21"],
    }
    assert {c: report.totals[c].text for c in COLUMNS} == {
        # 13 + 9: the 22 sign-ins are the proxy's sessions, not a database's (not added).
        "sessions_remote": "22", "sessions_in_library": "6", "requests_remote": "47",
        "requests_in_library": "12", "searches": "28", "downloads": "13", "megabytes": "21",
    }
    assert not any(cell.partial for cell in report.totals.values())


async def test_small_counts_suppressed_in_table_and_csv(stats: tuple[UsageStats, Clock], tmp_path: Path) -> None:
    usage, clock = stats
    _scripted_mix(usage, clock)
    await usage.flush()
    options = RecordsOptions(database=usage.database)

    out = io.StringIO()
    assert run_stats_command(options, period="day", since=MARCH[0], until=MARCH[1], out=out,
                             titles={"jstor": "JSTOR"}) == 0
    table = out.getvalue()
    assert "<5" in table and "JSTOR" in table and "All databases (sign-ins)" in table
    assert "fewer" in table or "not shown" in table  # the legend explains the markers

    csv_path = tmp_path / "march.csv"
    assert run_stats_command(options, period="day", since=MARCH[0], until=MARCH[1], csv_path=str(csv_path),
                             out=io.StringIO()) == 0
    rows = list(csv.reader(csv_path.open(encoding="utf-8")))
    assert rows[0] == ["period", "vendor", *COLUMNS]
    by_key = {(r[0], r[1]): r[2:] for r in rows[1:]}
    # The exact small values (2 gale sessions on day 1; 1 jstor session, 2 requests on day 2)
    # appear nowhere; neither do the day-1 jstor figures that would reveal them.
    assert by_key[("2026-03-02", "gale")] == ["<5", "0", "<5", "0", "<5", "0", "*"]
    assert by_key[("2026-03-03", "jstor")] == ["<5", "0", "<5", "0", "<5", "<5", "*"]
    assert by_key[("2026-03-02", "jstor")][0] == "*"
    assert by_key[("total", "all")][0] == "0+"  # every database's session figure is hidden that month
    for row in rows[1:]:
        for value in row[2:]:
            assert value in ("0", "<5", "*") or value.endswith("+") or int(value) >= 5, row

    out = io.StringIO()
    assert run_stats_command(options, period="month", since=MARCH[0], until=MARCH[1], csv_path="-",
                             totals=False, out=out) == 0
    lines = out.getvalue().splitlines()
    assert lines[-1].startswith("2026-03,jstor,13,6,38,12,19,13,")


async def test_sqlite_never_holds_paths_queries_or_time_of_day(stats: tuple[UsageStats, Clock]) -> None:
    usage, clock = stats
    _scripted_mix(usage, clock)
    await usage.close()
    raw = b"".join(p.read_bytes() for p in usage.database.parent.iterdir() if p.name.startswith("stats"))
    for marker in (QUERY_MARKER, "doBasicSearch", "stable/pdf", "basicSearch", "/ps/", "10.2307", "10:00"):
        assert marker.encode() not in raw, marker
    with sqlite3.connect(usage.database) as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(daily)")}
        assert columns == {"day", "vendor", "kind", "place", "count", "bytes"}
        vendors = {row[0] for row in conn.execute("SELECT DISTINCT vendor FROM daily")}
        assert vendors == {"jstor", "gale", PROXY_VENDOR}


async def test_database_work_runs_on_one_worker_thread(stats: tuple[UsageStats, Clock],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    usage, _ = stats
    threads: set[str] = set()
    original = StatsDB.add

    def spy(self: StatsDB, batch: dict[tuple[str, str, str, str], list[int]]) -> None:
        threads.add(threading.current_thread().name)
        original(self, batch)

    monkeypatch.setattr(StatsDB, "add", spy)
    for _ in range(3):
        usage.record("jstor", kind="request", in_library=False)
        await usage.flush()
    assert len(threads) == 1
    name = threads.pop()
    assert name.startswith("libproxy-stats") and name != threading.current_thread().name


async def test_failed_flush_keeps_counts_for_the_next(stats: tuple[UsageStats, Clock],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    usage, _ = stats
    original = StatsDB.add
    calls = {"n": 0}

    def flaky(self: StatsDB, batch: dict[tuple[str, str, str, str], list[int]]) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise sqlite3.OperationalError("disk full")
        original(self, batch)

    monkeypatch.setattr(StatsDB, "add", flaky)
    usage.record("jstor", kind="request", n=4, bytes=10, in_library=False)
    with pytest.raises(sqlite3.OperationalError):
        await usage.flush()
    usage.record("jstor", kind="request", n=3, bytes=5, in_library=False)
    assert await usage.flush() == 1
    with sqlite3.connect(usage.database) as conn:
        assert conn.execute("SELECT count, bytes FROM daily").fetchall() == [(7, 15)]
        assert conn.execute("SELECT count, bytes FROM monthly").fetchall() == [(7, 15)]


async def test_periodic_flush_and_final_flush(tmp_path: Path) -> None:
    clock = Clock(DAY1)
    usage = UsageStats(tmp_path / "s.sqlite3", clock=clock, tz=UTC, flush_interval=0.05)
    await usage.start()
    usage.record("jstor", kind="request", in_library=True)
    for _ in range(100):
        await asyncio.sleep(0.02)
        with sqlite3.connect(usage.database) as conn:
            if conn.execute("SELECT count(*) FROM daily").fetchone()[0]:
                break
    else:
        pytest.fail("the periodic flush never ran")
    usage.record("jstor", kind="request", in_library=True)
    await usage.close()
    usage.record("jstor", kind="request", in_library=True)  # after close: dropped, no error
    with sqlite3.connect(usage.database) as conn:
        assert conn.execute("SELECT place, count FROM daily").fetchall() == [("library", 2)]
    assert not (tmp_path / "s.sqlite3-wal").exists() or (tmp_path / "s.sqlite3-wal").stat().st_size == 0


async def test_days_follow_the_configured_zone(tmp_path: Path) -> None:
    from zoneinfo import ZoneInfo

    # 03:00 UTC on 2 March is still 1 March in New York.
    clock = Clock(datetime(2026, 3, 2, 3, 0, tzinfo=UTC).timestamp())
    usage = UsageStats(tmp_path / "s.sqlite3", clock=clock, tz=ZoneInfo("America/New_York"))
    usage.record("jstor", kind="request", in_library=False)
    clock.now += 6 * 3600  # 09:00 UTC, 04:00 in New York: 2 March there too
    usage.record("jstor", kind="request", in_library=False)
    await usage.close()
    with sqlite3.connect(usage.database) as conn:
        assert conn.execute("SELECT day, count FROM daily ORDER BY day").fetchall() == [
            ("2026-03-01", 1), ("2026-03-02", 1)]


# ----------------------------------------------------------------------------------------------
# suppression rules


def test_plan_month_withholds_until_nothing_can_be_worked_out() -> None:
    # One small day beside a big one: the big one is withheld too.
    assert plan_month({"a": 2, "b": 10}, {"a"}, month_printed=True, column="searches", threshold=5) == ({"b"}, False)
    # 1 + 5 = 6 pins both ("<5" is at least 1, "*" at least 5): a third day is needed.
    assert plan_month({"a": 1, "b": 5, "c": 9}, {"a"}, month_printed=True, column="searches",
                      threshold=5) == ({"b", "c"}, False)
    # Nothing left to withhold: the month itself must go.
    assert plan_month({"a": 1, "b": 5}, {"a"}, month_printed=True, column="searches", threshold=5) == (set(), True)
    assert plan_month({"a": 4, "b": 4}, {"a", "b"}, month_printed=True, column="searches",
                      threshold=5) == (set(), True)
    # Two small days summing to 5 cannot be told apart (1+4, 2+3, ...).
    assert plan_month({"a": 2, "b": 3}, {"a", "b"}, month_printed=True, column="searches",
                      threshold=5) == (set(), False)
    # A month not printed publishes no relation.
    assert plan_month({"a": 2, "b": 0}, {"a"}, month_printed=False, column="searches", threshold=5) == (set(), False)
    # Data volume: one hidden day is always pinned by the month; a second one is enough.
    assert plan_month({"a": 10, "b": 7, "c": 3}, {"a"}, month_printed=True, column="megabytes",
                      threshold=5) == ({"c"}, False)


def test_monthly_figure_withheld_when_days_would_reveal_it() -> None:
    rows = [("2026-03-02", "gale", "request", "remote", 4, 0), ("2026-03-03", "gale", "request", "remote", 4, 0)]
    monthly = [("2026-03", "gale", "request", "remote", 8, 0)]
    month = build_report(rows, monthly, period="month", first=MARCH[0], last=MARCH[1])
    assert month.rows[0].cells["requests_remote"].text == "*"
    assert month.totals["requests_remote"].text == "0+"
    days = build_report(rows, monthly, period="day", first=MARCH[0], last=MARCH[1])
    assert [r.cells["requests_remote"].text for r in days.rows] == ["<5", "<5"]


def test_suppression_does_not_depend_on_the_range_asked() -> None:
    rows = [("2026-03-02", "jstor", "search", "remote", 40, 0), ("2026-03-20", "jstor", "search", "remote", 2, 0)]
    monthly = [("2026-03", "jstor", "search", "remote", 42, 0)]
    first_week = build_report(rows, monthly, period="day", first=date(2026, 3, 1), last=date(2026, 3, 7))
    assert [r.cells["searches"].text for r in first_week.rows] == ["*"]


def test_threshold_is_configurable() -> None:
    rows = [("2026-03-02", "jstor", "search", "remote", 7, 0)]
    report = build_report(rows, [("2026-03", "jstor", "search", "remote", 7, 0)], period="month",
                          first=MARCH[0], last=MARCH[1], threshold=10)
    assert report.rows[0].cells["searches"].text == "<10"
    assert "<10" in render_table(report)
    assert "<10" in report_csv(report)


def test_stats_command_without_a_database(tmp_path: Path) -> None:
    options = RecordsOptions(database=tmp_path / "missing.sqlite3")
    out = io.StringIO()
    assert run_stats_command(options, out=out) == 0
    assert "No usage recorded" in out.getvalue()
    assert not options.database.exists()
    out = io.StringIO()
    assert run_stats_command(options, csv_path="-", out=out) == 0
    assert out.getvalue().splitlines() == [",".join(["period", "vendor", *COLUMNS])]


def test_stats_arguments(tmp_path: Path) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_stats_arguments(parser)
    args = parser.parse_args(["--by", "day", "--from", "2026-03-01", "--to", "2026-03-31", "--vendor", "jstor",
                              "--csv", "-", "--no-totals"])
    assert (args.by, args.since, args.until, args.vendors, args.csv_path, args.totals) == (
        "day", date(2026, 3, 1), date(2026, 3, 31), ["jstor"], "-", False)
    out = io.StringIO()
    assert stats_from_args(RecordsOptions(database=tmp_path / "none.sqlite3"), args, out=out) == 0
    with pytest.raises(SystemExit):
        parser.parse_args(["--from", "March"])
    assert run_stats_command(RecordsOptions(database=tmp_path / "x"), since=date(2026, 3, 2),
                             until=date(2026, 3, 1), out=io.StringIO()) == 2


def _feasible_values(bounds: list[tuple[int, int]], total: int) -> list[set[int]]:
    """By brute force: every value each hidden cell can take, given its bounds and the total."""
    values: list[set[int]] = [set() for _ in bounds]

    def walk(i: int, left: int, chosen: list[int]) -> None:
        if i == len(bounds):
            if left == 0:
                for j, v in enumerate(chosen):
                    values[j].add(v)
            return
        lo, hi = bounds[i]
        for v in range(lo, min(hi, left) + 1):
            walk(i + 1, left - v, [*chosen, v])

    walk(0, total, [])
    return values


def test_no_hidden_day_can_be_worked_out_from_the_month_by_brute_force() -> None:
    import random

    rng = random.Random(20260302)  # fixed: the same cases on every run
    threshold = 5
    checked = 0
    for _ in range(400):
        days = {f"2026-03-{d:02d}": rng.choice([0, 1, 2, 3, 4, 5, 6, 8, 12]) for d in range(1, rng.randint(2, 5))}
        rows = [(d, "v", "search", "remote", n, 0) for d, n in days.items() if n]
        total = sum(days.values())
        if not rows:
            continue
        monthly = [("2026-03", "v", "search", "remote", total, 0)]
        day_report = build_report(rows, monthly, period="day", first=MARCH[0], last=MARCH[1])
        month_report = build_report(rows, monthly, period="month", first=MARCH[0], last=MARCH[1])
        month_cell = month_report.rows[0].cells["searches"]
        printed = {r.period: r.cells["searches"] for r in day_report.rows}
        for cell in [*printed.values(), month_cell]:
            assert cell.text in ("0", "<5", "*") or int(cell.text) >= threshold
        if month_cell.hidden:
            continue
        # A reader holding both reports: the hidden days sum to the month minus the shown days.
        hidden = [d for d, c in printed.items() if c.hidden]
        if not hidden:
            continue
        remaining = int(month_cell.text) - sum(c.value or 0 for c in printed.values())
        bounds = [(1, threshold - 1) if printed[d].text == "<5" else (threshold, remaining) for d in hidden]
        for d, possible in zip(hidden, _feasible_values(bounds, remaining), strict=True):
            assert len(possible) >= 2, (days, d, possible)
        checked += 1
    assert checked > 50


def test_stats_command_on_a_file_that_is_not_a_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bogus = tmp_path / "stats.sqlite3"
    bogus.write_bytes(b"this is not a database, just some text long enough to have a header" * 10)
    assert run_stats_command(RecordsOptions(database=bogus), out=io.StringIO()) == 1
    assert "Cannot read the statistics file" in capsys.readouterr().err


async def test_count_request_reuses_a_classification(stats: tuple[UsageStats, Clock]) -> None:
    usage, _ = stats
    kinds = classify("/stable/pdf/1.pdf", JSTOR)
    assert usage.count_request("jstor", "", patterns=JSTOR, bytes=7, in_library=True, kinds=kinds) == {"download"}
    report = await usage.report(*MARCH, period="month")
    assert report.rows[0].cells["downloads"].text == "<5"
    assert report.rows[0].cells["requests_in_library"].text == "<5"


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_concurrent_first_requests_count_one_session(tmp_path: Path, echo: EchoVendor, store: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A page's first requests to a vendor often arrive together (the page, its scripts, its
    images): the session's visit is counted once, whichever request the store marks first (with
    Redis each request reads its own copy of the session, so only the store can tell)."""
    from tests.redis_server import redis_server

    with contextlib.ExitStack() as stack:
        sessions: dict[str, str] = {}
        if store == "redis":
            monkeypatch.setenv("LIBPROXY_TEST_REDIS", stack.enter_context(redis_server()))
            sessions = {"store": "redis", "redis_url": "env:LIBPROXY_TEST_REDIS"}
        await _count_concurrent_first_requests(tmp_path, echo, sessions)


async def _count_concurrent_first_requests(tmp_path: Path, echo: EchoVendor, sessions: dict[str, str]) -> None:
    from proxy.context import RECORDS, SESSIONS
    from tests.support import PROXY_HOST, Browser, base_config, run_proxy

    second = f"http://localhost:{echo.port}"
    vendors = [{"id": "echo", "title": "Echo", "start": f"{echo.origin}/", "hosts": [echo.origin],
                "groups": ["wolcott"]},
               {"id": "second", "title": "Second", "start": f"{second}/", "hosts": [second],
                "groups": ["wolcott"]}]
    config = base_config(tmp_path, vendors, upstream={"hosts": {"localhost": "127.0.0.1"}}, sessions=sessions)
    async with run_proxy(config) as running:
        browser = Browser(running)
        assert (await browser.sign_in("1000", "1111", f"{echo.origin}/echo")).status == 200
        host = running.proxied_host(second)
        # The session's cookie as the connect step would set it on the second vendor's host.
        browser.cookies[host] = {"libproxy": browser.cookies[PROXY_HOST]["libproxy"]}
        # Every request reads the session before any of them goes on (as on several instances,
        # or when the reads interleave): each holds a copy in which the vendor is not visited yet.
        store = running.app[SESSIONS]
        read, everyone_read = store.get, asyncio.Event()
        waiting: list[object] = []

        async def get_then_wait(session_id: str) -> Any:
            session = await read(session_id)
            waiting.append(session)
            if len(waiting) == 8:
                everyone_read.set()
            await asyncio.wait_for(everyone_read.wait(), 10)
            return session

        store.get = get_then_wait  # type: ignore[method-assign]
        replies = await asyncio.gather(*(browser.get(f"http://{host}/echo/{n}", follow=False)
                                         for n in range(8)))
        store.get = read  # type: ignore[method-assign]
        assert [r.status for r in replies] == [200] * 8
        pending = running.app[RECORDS].stats._pending
        counted = {key[1]: cell[0] for key, cell in pending.items() if key[2] == "session" and key[1] != "_proxy"}
        assert counted == {"echo": 1, "second": 1}
        await browser.close()
