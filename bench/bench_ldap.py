"""Benchmark: patron sign-ins per second and their latency through LdapAuthenticator, against
``ldapwhoami`` (a simple bind as the same patron) run the same number of times in the same run.

    python bench/bench_ldap.py [--count 300] [--concurrency 8] [--rounds 3] [--max-seconds 60]

A private slapd with config/bibliomation.ldif is started on 127.0.0.1 (tests/ldap_server.py);
all traffic stays on loopback. Each method runs ``count`` sign-ins split into ``rounds`` chunks,
interleaved with the other methods so that noise from a shared machine falls on all of them.
A method that exceeds its share of ``--max-seconds`` stops early and reports what it did.

Methods:
  ldapwhoami             one process per sign-in: connect, simple bind, whoami, exit (baseline)
  ldap3 bind (floor)     one reused ldap3 connection, simple bind only, no thread hop, no checks
  search mode, 1 by 1    authenticate(): service-account search + bind, memberships, status
  direct mode, 1 by 1    authenticate(): bind to the DN template + read of the patron's entry
  search mode, N at once the same with N sign-ins in flight (throughput under load)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from proxy.patrons.ldap import LdapAuthenticator, LdapOptions, parse_options  # noqa: E402
from proxy.settings import Problems, Reader  # noqa: E402
from tests.ldap_server import (  # noqa: E402
    LDAPWHOAMI,
    PATRONS,
    SERVICE_PASSWORD,
    SLAPD,
    Slapd,
    missing_reason,
)

CARD, USER, PIN = "29000100000011", "wolcott1", "1111"
DN = f"uid={USER},{PATRONS}"
SERVICE_ENV_NAME = "LIBPROXY_BENCH_LDAP_BIND_PASSWORD"


@dataclass
class Result:
    name: str
    latencies: list[float] = field(default_factory=list)  # seconds, one per sign-in
    busy: float = 0.0  # wall-clock seconds spent running this method
    stopped_early: bool = False

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.busy if self.busy else 0.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


def options(url: str, **overrides: Any) -> LdapOptions:
    """The example configuration's [patrons.ldap] pointed at the bench slapd."""
    table: dict[str, Any] = tomllib.loads((ROOT / "config" / "ldap-example.toml").read_text())["patrons"]["ldap"]
    table.update(servers=[url], bind_password=f"env:{SERVICE_ENV_NAME}", pool_size=8)
    for key, value in overrides.items():
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
    problems = Problems()
    parsed = parse_options(Reader({"ldap": table}, "patrons", problems, ROOT))
    if problems.items:
        raise SystemExit("bad bench options: " + "; ".join(problems.items))
    return parsed


def run_whoami(url: str, n: int, result: Result, deadline: float) -> None:
    assert LDAPWHOAMI is not None
    command = [LDAPWHOAMI, "-x", "-H", url, "-D", DN, "-w", PIN]
    for _ in range(n):
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, check=False)
        result.latencies.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"ldapwhoami failed: {done.stderr.decode(errors='replace')}")
        if time.monotonic() > deadline:
            result.stopped_early = True
            return


def run_raw_bind(conn: Any, n: int, result: Result, deadline: float) -> None:
    for _ in range(n):
        started = time.perf_counter()
        conn.user, conn.password = DN, PIN
        ok = conn.bind(read_server_info=False)
        result.latencies.append(time.perf_counter() - started)
        if not ok[0]:
            raise SystemExit("ldap3 bind failed")
        if time.monotonic() > deadline:
            result.stopped_early = True
            return


async def run_auth(auth: LdapAuthenticator, card: str, n: int, concurrency: int, result: Result,
                   deadline: float) -> None:
    remaining = n

    async def one() -> None:
        nonlocal remaining
        while remaining > 0 and time.monotonic() < deadline:
            remaining -= 1
            started = time.perf_counter()
            membership = await auth.authenticate(card, PIN)
            result.latencies.append(time.perf_counter() - started)
            if membership is None:
                raise SystemExit("sign-in failed")

    await asyncio.gather(*(one() for _ in range(concurrency)))
    result.stopped_early = remaining > 0


async def timed(result: Result, work: Callable[[], Awaitable[None]]) -> None:
    started = time.perf_counter()
    await work()
    result.busy += time.perf_counter() - started


async def bench(url: str, count: int, concurrency: int, rounds: int, max_seconds: float) -> list[Result]:
    import ldap3

    os.environ[SERVICE_ENV_NAME] = SERVICE_PASSWORD
    whoami = Result("ldapwhoami (baseline)")
    raw = Result("ldap3 bind, reused conn (floor)")
    search = Result("search mode, 1 at a time")
    direct = Result("direct mode, 1 at a time")
    loaded = Result(f"search mode, {concurrency} at a time")
    results = [whoami, raw, search, direct, loaded]
    share = max_seconds / len(results) / rounds
    chunk = max(1, count // rounds)

    host, port = url.removeprefix("ldap://").split(":")
    conn = ldap3.Connection(ldap3.Server(host, port=int(port), get_info=ldap3.NONE),
                            client_strategy=ldap3.SAFE_SYNC, authentication=ldap3.SIMPLE)
    conn.open(read_server_info=False)
    search_auth = LdapAuthenticator(options(url), b"bench-secret")
    direct_auth = LdapAuthenticator(
        options(url, mode="direct", dn_template=f"uid={{card}},{PATRONS}", bind_dn=None,
                bind_password=None, filter=None),
        b"bench-secret",
    )
    try:
        for auth, card in ((search_auth, CARD), (direct_auth, USER)):  # warm up pools and caches
            await auth.start()
            for _ in range(20):
                await auth.authenticate(card, PIN)
        for _ in range(rounds):
            await timed(whoami, lambda: asyncio.to_thread(
                run_whoami, url, chunk, whoami, time.monotonic() + share))
            await timed(raw, lambda: asyncio.to_thread(
                run_raw_bind, conn, chunk, raw, time.monotonic() + share))
            await timed(search, lambda: run_auth(search_auth, CARD, chunk, 1, search, time.monotonic() + share))
            await timed(direct, lambda: run_auth(direct_auth, USER, chunk, 1, direct, time.monotonic() + share))
            await timed(loaded, lambda: run_auth(search_auth, CARD, chunk, concurrency, loaded,
                                                 time.monotonic() + share))
    finally:
        conn.unbind()
        await search_auth.close()
        await direct_auth.close()
    return results


def report(results: list[Result]) -> str:
    baseline = results[0]
    lines = [
        f"{'method':<34} {'sign-ins':>8} {'per s':>8} {'p50 ms':>8} {'p99 ms':>8} {'x ldapwhoami':>13}",
        "-" * 84,
    ]
    for r in results:
        ratio = r.rate / baseline.rate if baseline.rate else 0.0
        note = " (stopped early: time limit)" if r.stopped_early else ""
        lines.append(f"{r.name:<34} {len(r.latencies):>8} {r.rate:>8.0f} {r.percentile(0.5):>8.2f} "
                     f"{r.percentile(0.99):>8.2f} {ratio:>12.2f}x{note}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=300, help="sign-ins per method (at most 5000)")
    parser.add_argument("--concurrency", type=int, default=8, help="sign-ins in flight for the loaded run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved chunks per method")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="time limit for all measurements")
    args = parser.parse_args()
    reason = missing_reason() or (None if LDAPWHOAMI else "ldapwhoami is not installed (ldap-utils)")
    if reason:
        raise SystemExit(reason)
    count = max(args.rounds, min(args.count, 5000))
    with tempfile.TemporaryDirectory(prefix="bench-ldap-") as folder, Slapd(Path(folder)) as server:
        version = subprocess.run([str(SLAPD), "-VV"], capture_output=True, check=False).stderr.decode()
        print(f"slapd: {version.splitlines()[0].strip() if version else '?'}")
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {count} sign-ins per method, "
              f"{args.rounds} interleaved rounds, all on 127.0.0.1\n")
        results = asyncio.run(bench(server.url, count, args.concurrency, args.rounds, args.max_seconds))
    print(report(results))
    print("\np50/p99: latency of one sign-in as its caller sees it (for the loaded run: while "
          f"{args.concurrency} are in flight). 'x ldapwhoami': sign-ins per second relative to the baseline.")
    print(f"median ldapwhoami {statistics.median(results[0].latencies) * 1000:.2f} ms "
          "(mostly process start-up: it is the cost of checking a PIN with the OpenLDAP tools)")


if __name__ == "__main__":
    main()
