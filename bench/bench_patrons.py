"""Benchmark: sign-ins per second and their latency through the SIP2 and RemoteAuth sources,
each against a baseline measured in the same run (bench_ldap.py's approach).

    python bench/bench_patrons.py [--count 400] [--concurrency 8] [--rounds 3] [--max-seconds 60]

The test servers (tests/sip2_server.py: pysip2's ACS; tests/remoteauth_server.py: Evergreen's
RemoteAuth answers) run in a child process of their own on 127.0.0.1, so the servers' work does
not share the benchmark's event loop. Each method runs ``count`` sign-ins split into ``rounds``
chunks, interleaved with the other methods so that noise from a shared machine falls on all.

Methods:
  SIP2 raw exchange        one kept socket, a pre-built 63 request, read the answer (baseline:
                           the server's and the network's share of a sign-in)
  SIP2, 1 / N at a time    authenticate(): pooled connection, codec, checksum and sequence
                           checks, membership rules
  HTTP raw GET             one aiohttp session, GET of the consortium profile (baseline)
  Basic, 1 / N at a time   authenticate(), one consortium profile
  Basic, 3 profiles        authenticate(), three member-library profiles asked at once
  PatronAPI, 1 / N         authenticate(): pintest, then the dump for home library and expiry
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_ldap import Result  # noqa: E402

from proxy.patrons import sip2_codec as codec  # noqa: E402
from proxy.patrons.remoteauth import RemoteAuthAuthenticator, RemoteAuthOptions  # noqa: E402
from proxy.patrons.sip2 import Sip2Authenticator, Sip2Options  # noqa: E402

CARD, PIN = "29000100000011", "1111"
SECRET = b"bench-secret"


async def serve() -> None:
    """The child process: both test servers; prints their ports, runs until stdin closes."""
    from tests.remoteauth_server import RemoteAuthService
    from tests.sip2_server import Sip2Service

    async with Sip2Service() as sip2, RemoteAuthService() as remoteauth:
        print(sip2.port, remoteauth.port, flush=True)
        await asyncio.to_thread(sys.stdin.read)


def sip2_options(port: int) -> Sip2Options:
    from tests.sip2_server import INSTITUTION, SIP_PASSWORD, SIP_USER

    return Sip2Options(servers=(("127.0.0.1", port),), login_user=SIP_USER, login_password=SIP_PASSWORD,
                       institution=INSTITUTION, groups=frozenset({"bibliomation"}), home_field="AQ",
                       libraries={"wolcott": "wolcott"}, expiry_field="PA", pool_size=8)


def remoteauth_options(port: int, **changes: Any) -> RemoteAuthOptions:
    base: dict[str, Any] = {"servers": (f"http://127.0.0.1:{port}",), "path": "/api/basicauth",
                            "groups": frozenset({"bibliomation"}), "pool_size": 8}
    base.update(changes)
    return RemoteAuthOptions(**base)


async def run_auth(auth: Any, n: int, concurrency: int, result: Result, deadline: float) -> None:
    remaining = n

    async def one() -> None:
        nonlocal remaining
        while remaining > 0 and time.monotonic() < deadline:
            remaining -= 1
            started = time.perf_counter()
            membership = await auth.authenticate(CARD, PIN)
            result.latencies.append(time.perf_counter() - started)
            if membership is None:
                raise SystemExit("sign-in failed")

    await asyncio.gather(*(one() for _ in range(concurrency)))
    result.stopped_early = remaining > 0


class RawSip2:
    """One logged-in socket and a pre-built request: the least a SIP2 sign-in can cost."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def open(self) -> None:
        from tests.sip2_server import SIP_PASSWORD, SIP_USER

        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(codec.encode("93", "00", [("CN", SIP_USER), ("CO", SIP_PASSWORD)], sequence=0,
                                       encoding="utf-8"))
        await self.reader.readuntil(b"\r")
        fixed = "000" + codec.sip_datetime(__import__("datetime").datetime.now()) + " " * 10
        self.request = codec.encode("63", fixed, [("AO", "BIBLIO"), ("AA", CARD), ("AC", ""), ("AD", PIN)],
                                    sequence=1, encoding="utf-8")

    async def run(self, n: int, result: Result, deadline: float) -> None:
        for _ in range(n):
            started = time.perf_counter()
            self.writer.write(self.request)
            await self.reader.readuntil(b"\r")
            result.latencies.append(time.perf_counter() - started)
            if time.monotonic() > deadline:
                result.stopped_early = True
                return

    def close(self) -> None:
        self.writer.close()


async def run_raw_http(port: int, n: int, result: Result, deadline: float) -> None:
    import aiohttp

    header = {"Authorization": aiohttp.encode_basic_auth(CARD, PIN)}
    async with aiohttp.ClientSession() as session:
        for _ in range(n):
            started = time.perf_counter()
            async with session.get(f"http://127.0.0.1:{port}/api/basicauth", headers=header) as response:
                await response.read()
            result.latencies.append(time.perf_counter() - started)
            if response.status != 200:
                raise SystemExit("raw GET failed")
            if time.monotonic() > deadline:
                result.stopped_early = True
                return


async def timed(result: Result, work: Callable[[], Awaitable[None]]) -> None:
    started = time.perf_counter()
    await work()
    result.busy += time.perf_counter() - started


async def bench(sip2_port: int, http_port: int, count: int, concurrency: int, rounds: int,
                max_seconds: float) -> tuple[list[Result], list[Result]]:
    sip2 = Sip2Authenticator(sip2_options(sip2_port), SECRET)
    basic = RemoteAuthAuthenticator(remoteauth_options(http_port), SECRET)
    profiles = RemoteAuthAuthenticator(remoteauth_options(http_port, path="", profiles={
        "wolcott": "/api/basicauth-wolcott", "derby": "/api/basicauth-derby", "seymour": "/api/basicauth-seymour"}),
        SECRET)
    patronapi = RemoteAuthAuthenticator(remoteauth_options(
        http_port, form="patronapi", path="/api/patronapi", home_field="p53", expiry_field="p43",
        libraries={"wolcott public library": "wolcott"}), SECRET)
    raw = RawSip2(sip2_port)
    await raw.open()
    sip2_results = [Result("SIP2 raw exchange (baseline)"), Result("SIP2, 1 at a time"),
                    Result(f"SIP2, {concurrency} at a time")]
    http_results = [Result("HTTP raw GET (baseline)"), Result("Basic, 1 at a time"),
                    Result(f"Basic, {concurrency} at a time"), Result("Basic, 3 profiles, 1 at a time"),
                    Result("PatronAPI + dump, 1 at a time"), Result(f"PatronAPI + dump, {concurrency} at a time")]
    share = max_seconds / (len(sip2_results) + len(http_results)) / rounds
    chunk = max(1, count // rounds)
    plan: list[tuple[Result, Callable[[float], Awaitable[None]]]] = [
        (sip2_results[0], lambda deadline: raw.run(chunk, sip2_results[0], deadline)),
        (sip2_results[1], lambda deadline: run_auth(sip2, chunk, 1, sip2_results[1], deadline)),
        (sip2_results[2], lambda deadline: run_auth(sip2, chunk, concurrency, sip2_results[2], deadline)),
        (http_results[0], lambda deadline: run_raw_http(http_port, chunk, http_results[0], deadline)),
        (http_results[1], lambda deadline: run_auth(basic, chunk, 1, http_results[1], deadline)),
        (http_results[2], lambda deadline: run_auth(basic, chunk, concurrency, http_results[2], deadline)),
        (http_results[3], lambda deadline: run_auth(profiles, chunk, 1, http_results[3], deadline)),
        (http_results[4], lambda deadline: run_auth(patronapi, chunk, 1, http_results[4], deadline)),
        (http_results[5], lambda deadline: run_auth(patronapi, chunk, concurrency, http_results[5], deadline)),
    ]
    try:
        for auth in (sip2, basic, profiles, patronapi):  # warm up pools
            await auth.start()
            for _ in range(20):
                await auth.authenticate(CARD, PIN)
        for _ in range(rounds):
            for result, work in plan:
                await timed(result, lambda work=work: work(time.monotonic() + share))  # type: ignore[misc]
    finally:
        raw.close()
        for auth in (sip2, basic, profiles, patronapi):
            await auth.close()
    return sip2_results, http_results


def report(results: list[Result]) -> str:
    baseline = results[0]
    lines = [f"{'method':<34} {'sign-ins':>8} {'per s':>8} {'p50 ms':>8} {'p99 ms':>8} {'x baseline':>11}",
             "-" * 82]
    for r in results:
        ratio = r.rate / baseline.rate if baseline.rate else 0.0
        note = " (stopped early: time limit)" if r.stopped_early else ""
        lines.append(f"{r.name:<34} {len(r.latencies):>8} {r.rate:>8.0f} {r.percentile(0.5):>8.2f} "
                     f"{r.percentile(0.99):>8.2f} {ratio:>10.2f}x{note}")
    return "\n".join(lines)


def main() -> None:
    if "--serve" in sys.argv:
        asyncio.run(serve())
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=400, help="sign-ins per method (at most 5000)")
    parser.add_argument("--concurrency", type=int, default=8, help="sign-ins in flight for the loaded runs")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved chunks per method")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="time limit for all measurements")
    args = parser.parse_args()
    count = max(args.rounds, min(args.count, 5000))
    child = subprocess.Popen([sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True)
    try:
        assert child.stdout is not None
        sip2_port, http_port = (int(port) for port in child.stdout.readline().split())
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {count} sign-ins per method, "
              f"{args.rounds} interleaved rounds, servers in a child process, all on 127.0.0.1\n")
        sip2_results, http_results = asyncio.run(
            bench(sip2_port, http_port, count, args.concurrency, args.rounds, args.max_seconds))
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(timeout=10)
    print(report(sip2_results))
    print()
    print(report(http_results))
    print(f"\np50/p99: latency of one sign-in as its caller sees it (loaded runs: while {args.concurrency} are "
          "in flight). 'x baseline': sign-ins per second relative to the raw exchange of the same protocol.")


if __name__ == "__main__":
    main()
