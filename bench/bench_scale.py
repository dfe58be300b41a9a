"""Load and soak on the Redis store (issue 13): many signed-in patrons at once, then thousands of
sessions, with the proxy's memory watched.

    python bench/bench_scale.py [--clients 200] [--seconds 60] [--sessions 3000] [--workers 1]

1. load: ``--clients`` patrons, each signed in through the real form (own session), request a
   vendor page in a loop for ``--seconds``; every status is counted (the target: no 5xx at all)
   and the latency percentiles reported. The load generator shares the machine's cores with the
   proxy, Redis and the vendor (nginx serving a static file), so the rate is not the point.
2. soak: ``--sessions`` more sign-ins in rounds of 500, each session making a few requests (and
   left to expire in Redis); the proxy's resident memory after each round (flat: nothing per
   session is kept in the process).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_proxy import free_port, rss_now_kib, sign_in, wait_port, write_config
from bench_servers import LOG, nginx_conf, start, stop, tree


async def sign_in_many(port: int, origin: str, count: int, parallel: int = 4) -> list[tuple[str, str]]:
    """``count`` sessions, at most ``parallel`` sign-ins at once (the per-address limit)."""
    gate = asyncio.Semaphore(parallel)

    async def one() -> tuple[str, str]:
        async with gate:
            return await sign_in(port, origin)

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def load(port: int, sessions: list[tuple[str, str]], seconds: float) -> tuple[dict[int, int], list[float]]:
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=len(sessions) + 10)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                     timeout=timeout) as http:
        deadline = time.perf_counter() + seconds

        async def patron(host: str, cookie: str) -> None:
            headers = {"Host": host, "Cookie": f"libproxy={cookie}"}
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    async with http.get(f"http://127.0.0.1:{port}/small", headers=headers,
                                        allow_redirects=False) as r:
                        await r.read()
                        status = r.status
                except (aiohttp.ClientError, TimeoutError):
                    status = 599  # no answer at all: counted with the server errors
                latencies.append(time.perf_counter() - started)
                statuses[status] = statuses.get(status, 0) + 1

        await asyncio.gather(*(patron(h, c) for h, c in sessions))
    return statuses, latencies


async def soak_round(port: int, origin: str, count: int) -> int:
    sessions = await sign_in_many(port, origin, count)
    errors = 0
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        for host, cookie in sessions:
            headers = {"Host": host, "Cookie": f"libproxy={cookie}"}
            for _ in range(3):
                async with http.get(f"http://127.0.0.1:{port}/small", headers=headers, allow_redirects=False) as r:
                    await r.read()
                    errors += r.status >= 500
    return errors


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--sessions", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    LOG.unlink(missing_ok=True)  # this run's messages only
    tmp = Path(tempfile.mkdtemp(prefix="libproxy-bench-scale-"))
    tmp.chmod(0o755)  # nginx's and Apache's unprivileged workers read the vendor file here
    (tmp / "www").mkdir()
    (tmp / "www" / "small").write_bytes(b"x" * 1024)
    vendor_port, redis_port, port = free_port(), free_port(), free_port()
    vendor = start(["nginx", "-c", str(nginx_conf(tmp, "vendor", f"""
        server {{ listen 127.0.0.1:{vendor_port}; keepalive_requests 1000000;
                 location / {{ root {tmp / 'www'}; default_type text/plain; }} }}"""))])
    redis = start(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no"])
    origin = f"http://127.0.0.1:{vendor_port}"
    config = write_config(tmp, port, f"""[sessions]
store = "redis"
redis_url = "env:BENCH_REDIS"
[[vendor]]
id = "bench"
title = "Bench"
start = "{origin}/"
hosts = ["{origin}"]
groups = ["wolcott"]
""")
    proxy = start([sys.executable, "-m", "proxy", "serve", "--config", str(config), "--workers", str(args.workers)],
                  {"BENCH_REDIS": f"redis://127.0.0.1:{redis_port}/0"})
    try:
        for p in (vendor_port, redis_port, port):
            wait_port(p, 60)
        time.sleep(1)
        t0 = time.perf_counter()
        sessions = asyncio.run(sign_in_many(port, origin, args.clients))
        print(f"{args.clients} sign-ins in {time.perf_counter() - t0:.1f} s")
        statuses, latencies = asyncio.run(load(port, sessions, args.seconds))
        total = sum(statuses.values())
        server_errors = sum(n for s, n in statuses.items() if s >= 500)
        print(f"load: {args.clients} signed-in clients for {args.seconds:g} s on Redis, {args.workers} worker(s): "
              f"{total} requests, {total / args.seconds:.0f}/s, statuses {dict(sorted(statuses.items()))}, "
              f"5xx or no answer: {server_errors}")
        print(f"latency ms: p50 {percentile(latencies, 0.5) * 1e3:.1f}  p90 {percentile(latencies, 0.9) * 1e3:.1f}  "
              f"p99 {percentile(latencies, 0.99) * 1e3:.1f}  max {max(latencies) * 1e3:.1f}")
        rss: list[int] = []
        done = 0
        while done < args.sessions:
            count = min(500, args.sessions - done)
            errors = asyncio.run(soak_round(port, origin, count))
            done += count
            rss.append(sum(rss_now_kib(p) for p in tree(proxy.pid)))
            print(f"soak: {done} sessions, proxy RSS {rss[-1] / 1024:.1f} MiB, 5xx {errors}")
        if len(rss) > 1:
            growth = (rss[-1] - rss[0]) / rss[0] * 100
            print(f"soak: RSS after the first round {rss[0] / 1024:.1f} MiB, after the last {rss[-1] / 1024:.1f} MiB "
                  f"({growth:+.1f}%), median of rounds {statistics.median(rss) / 1024:.1f} MiB")
        if LOG.exists():
            unexpected = len(re.findall(r"unexpected error|Traceback", LOG.read_text(errors="replace")))
            print(f"tracebacks in the servers' log: {unexpected}")
    finally:
        stop(proxy)
        stop(redis)
        stop(vendor)


if __name__ == "__main__":
    main()
