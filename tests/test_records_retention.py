"""Retention: advancing an injected clock past each retention empties the matching store, on
disk as well as in the tables."""

from __future__ import annotations

import asyncio
import io
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from proxy.records.commands import run_purge_command
from proxy.records.options import DAY, RecordsOptions
from proxy.records.retention import Retention, purge_now
from proxy.records.security import SecurityOptions
from proxy.records.service import Records
from proxy.records.stats import StatsDB

START = datetime(2026, 1, 15, 12, 0, tzinfo=UTC).timestamp()
CARD = "21234009876543"
CLIENT = "198.51.100.23"
OLD_VENDOR = "oldmarkervendor"
NEW_VENDOR = "freshvendor"


class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _count(db: Path, sql: str, *params: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute(sql, params).fetchone()[0] or 0)


def _file_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db.parent.iterdir() if p.name.startswith(db.name))


async def test_purge_past_each_retention(tmp_path: Path) -> None:
    clock = Clock()
    db = tmp_path / "stats.sqlite3"
    options = RecordsOptions(
        database=db, detail_retention=30 * DAY, monthly_retention=400 * DAY, timezone="UTC",
        security=SecurityOptions(window=15 * 60, rotate=DAY),
    )
    sessions = {"s1": START + 2 * 3600}  # a stand-in session store: id -> expiry

    def purge_sessions(now: float) -> int:
        expired = [sid for sid, until in sessions.items() if until <= now]
        for sid in expired:
            del sessions[sid]
        return len(expired)

    records = Records(options, clock=clock)
    records.retention.add("sessions", purge_sessions)
    await records.start()
    try:
        records.stats.record(OLD_VENDOR, kind="request", n=9, bytes=1234, in_library=False)
        records.stats.record(OLD_VENDOR, kind="session", in_library=True)
        records.security.note_failure(CARD, CLIENT)
        await records.stats.flush()
        assert _count(db, "SELECT count(*) FROM daily WHERE vendor = ?", OLD_VENDOR) == 2
        assert records.security.entries == 3  # the card, the card from that client, the client

        # Within every retention: nothing goes.
        clock.advance(10 * 60)
        removed = await records.retention.run_once()
        assert removed == {"statistics": 0, "security": 0, "sessions": 0}

        # Past the security window (and the session's expiry): counters and session go.
        clock.advance(3 * 3600)
        removed = await records.retention.run_once()
        assert removed["security"] == 3 and removed["sessions"] == 1
        assert records.security.entries == 0 and sessions == {}

        # Past the detail retention: daily rows go, the monthly rollup stays.
        clock.advance(31 * DAY)
        removed = await records.retention.run_once()
        assert removed["statistics"] == 2
        assert _count(db, "SELECT count(*) FROM daily") == 0
        assert _count(db, "SELECT sum(count) FROM monthly WHERE vendor = ?", OLD_VENDOR) == 10

        # Past the monthly retention: the rollup goes too, and the file no longer holds the id.
        clock.advance(400 * DAY)
        records.stats.record(NEW_VENDOR, kind="request", in_library=False)
        removed = await records.retention.run_once()
        assert removed["statistics"] == 2
        assert _count(db, "SELECT count(*) FROM monthly WHERE vendor = ?", OLD_VENDOR) == 0
        assert _count(db, "SELECT count(*) FROM daily WHERE vendor = ?", NEW_VENDOR) == 1
    finally:
        await records.close()
    raw = _file_bytes(db)
    assert OLD_VENDOR.encode() not in raw
    assert NEW_VENDOR.encode() in raw  # recent data is kept
    assert CARD.encode() not in raw and CLIENT.encode() not in raw


async def test_retention_runs_on_schedule_and_survives_a_failing_purge(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    calls: list[float] = []

    def broken(now: float) -> int:
        raise RuntimeError(f"cannot purge {CARD}")

    async def counting(now: float) -> int:
        calls.append(now)
        return 0

    retention = Retention(interval=0.02, clock=clock)
    retention.add("broken", broken)
    retention.add("counting", counting)
    await retention.start()
    assert calls == [START]  # a first purge at start
    clock.advance(DAY)
    for _ in range(200):
        if len(calls) >= 3:
            break
        await asyncio.sleep(0.01)
    await retention.close()
    assert len(calls) >= 3 and calls[-1] == START + DAY
    assert retention.last_run == {"counting": 0}
    assert "purge of broken failed: RuntimeError" in caplog.text
    count = len(calls)
    await asyncio.sleep(0.05)
    assert len(calls) == count  # stopped


def _seed(db: Path) -> None:
    stats = StatsDB(db)
    stats.add({
        ("2025-12-01", OLD_VENDOR, "request", "remote"): [3, 100],
        ("2026-01-14", NEW_VENDOR, "request", "remote"): [5, 100],
    })
    stats.close()


def test_purge_command(tmp_path: Path) -> None:
    db = tmp_path / "stats.sqlite3"
    _seed(db)
    options = RecordsOptions(database=db, detail_retention=10 * DAY, monthly_retention=14 * DAY, timezone="UTC")
    out = io.StringIO()
    assert run_purge_command(options, out=out, clock=Clock()) == 0
    # The daily row of 2025-12-01 (45 days old), and the December rollup: 14 days before
    # 15 January is 1 January, so every month before January is past its retention.
    assert "removed 2 rows" in out.getvalue()
    assert _count(db, "SELECT count(*) FROM daily") == 1
    assert _count(db, "SELECT count(*) FROM monthly") == 1
    assert OLD_VENDOR.encode() not in _file_bytes(db)
    assert purge_now(options, clock=Clock()) == {"statistics": 0}


def test_purge_without_a_database(tmp_path: Path) -> None:
    options = RecordsOptions(database=tmp_path / "none.sqlite3")
    assert purge_now(options) == {"statistics": 0}
    assert not options.database.exists()
