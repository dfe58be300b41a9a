"""Benchmark: the statistics hot path against a bare dictionary increment, in the same run.

    python bench/bench_stats.py [--calls 1000000] [--rounds 5]

``UsageStats.record`` is called on the event loop for every proxied request, so it must stay a
small constant factor of the cheapest possible counter. Reported: nanoseconds per call for the
baseline (``d[key] += 1``), ``record``, and ``count_request`` with two patterns per kind, as
medians over interleaved rounds, and their ratios to the baseline. Also the time to flush a
day's worth of distinct cells to SQLite on the worker thread (which the loop never waits for).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from proxy.records.stats import UsageStats, compile_patterns

PATTERNS = compile_patterns(search=["/action/doBasicSearch*", "re:^/search"], download=["re:^/stable/pdf/", "*.pdf"])


def _time(fn: Callable[[], None], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        usage = UsageStats(Path(tmp) / "bench.sqlite3")
        counts: dict[tuple[str, str, str, str], int] = {}
        key = ("2026-03-02", "jstor", "request", "remote")

        def baseline() -> None:
            counts[key] = counts.get(key, 0) + 1

        def record() -> None:
            usage.record("jstor", kind="request", bytes=1000, in_library=False)

        def count_request() -> None:
            usage.count_request("jstor", "/action/doBasicSearch?Query=owls", patterns=PATTERNS, bytes=1000,
                                in_library=False)

        results: dict[str, list[float]] = {"baseline": [], "record": [], "count_request": []}
        for _ in range(args.rounds):
            results["baseline"].append(_time(baseline, args.calls))
            results["record"].append(_time(record, args.calls))
            results["count_request"].append(_time(count_request, args.calls // 4))
        base = statistics.median(results["baseline"])
        for name, samples in results.items():
            median = statistics.median(samples)
            print(f"{name:14s} {median:8.1f} ns/call   x{median / base:5.1f} baseline")

        async def flush_many() -> float:
            await usage.start()
            for vendor in range(200):
                for kind in ("session", "request", "search", "download"):
                    usage.record(f"v{vendor}", kind=kind, in_library=bool(vendor % 2))
            start = time.perf_counter()
            await usage.flush()
            elapsed = time.perf_counter() - start
            await usage.close()
            return elapsed

        print(f"flush of 800 cells: {asyncio.run(flush_many()) * 1000:.1f} ms (on the worker thread)")


if __name__ == "__main__":
    main()
