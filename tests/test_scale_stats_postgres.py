"""Statistics of several instances in one PostgreSQL server (a real one, started by the test)."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.records.options import RecordsOptions
from proxy.records.stats import UsageStats, day_of, open_stats_db
from tests import postgres_server

pytestmark = pytest.mark.skipif(not postgres_server.available(), reason="PostgreSQL is not installed")


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with postgres_server.postgres_server() as url:
        yield url


async def test_two_instances_count_into_one_store_with_suppression(tmp_path: Path, pg_url: str) -> None:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS daily, monthly")
    first = UsageStats(tmp_path / "a.sqlite3", database_url=pg_url, flush_interval=0.1)
    second = UsageStats(tmp_path / "b.sqlite3", database_url=pg_url, flush_interval=0.1)
    await first.start()
    await second.start()
    for _ in range(7):
        first.record("gale", kind="request", bytes=100, in_library=False)
    for _ in range(6):
        second.record("gale", kind="request", bytes=100, in_library=False)
    second.record("jstor", kind="request", in_library=False)  # one request: suppressed in reports
    await first.close()
    await second.close()
    assert not (tmp_path / "a.sqlite3").exists()  # the file is not used at all

    today = day_of(time.time())
    db = open_stats_db(tmp_path / "unused", pg_url, create=False)
    try:
        report = db.report(today, today, "month", threshold=5)
        cells = {row.vendor: row.cells for row in report.rows}
        assert cells["gale"]["requests_remote"].value == 13
        assert cells["jstor"]["requests_remote"].hidden
        assert db.purge("9999-01-01", "9999-01") == 4  # daily and monthly rows of both vendors
        assert db.rows(today, today) == ([], [])
    finally:
        db.close()


async def test_stats_command_reads_postgres(tmp_path: Path, pg_url: str) -> None:
    from proxy.records.commands import run_stats_command

    stats = UsageStats(tmp_path / "x.sqlite3", database_url=pg_url)
    await stats.start()
    for _ in range(5):
        stats.record("ebsco", kind="search", in_library=True)
    await stats.close()
    out = io.StringIO()
    options = RecordsOptions(database=tmp_path / "missing.sqlite3", database_url=pg_url)
    assert run_stats_command(options, titles={"ebsco": "EBSCO"}, out=out) == 0
    assert "EBSCO" in out.getvalue()
