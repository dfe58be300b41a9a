"""Benchmark: realistic ~200 KB vendor result pages through the proxy, rewritten versus streamed
untouched, in one run.

    python bench/bench_rewrite_proxy.py [--seconds 4] [--rounds 5] [--trickle]

The same page bytes are served by one vendor process under two configured vendors: one with
rewriting on (its pages are full of its own links: about 500 mentions of its hosts per page),
one with ``rewrite = false``. Runs alternate, so each round gives a paired ratio measured under
the same conditions; the medians of pages/s, MB/s, the proxy process's CPU time per page (the
steadier figure on a shared machine) and of the per-round ratios are reported, with the range
of the ratios. Only loopback.

On loopback a page reaches the proxy in one read, so the rewritten page is sent whole with a
Content-Length. ``--trickle`` makes the vendor send each page in 16 KiB pieces 2 ms apart, as
over a slow link: the proxy then streams it chunk by chunk (chunked transfer encoding). Pages/s
are then bound by the vendor's pace, so compare the CPU per page.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_proxy import (
    HOST,
    cpu_seconds,
    free_port,
    rss_now_kib,
    rss_peak_kib,
    sign_in,
    start,
    wait_port,
    write_config,
)
from bench_rewrite import page

PAGES = 8


def pages_for(port: int) -> list[bytes]:
    """The generator's pages, pointed at the loopback vendor (http; an explicit port unless 80)."""
    out = []
    for seed in range(PAGES):
        body = page(seed).replace(b"https:", b"http:").replace(b"https%3A", b"http%3A")
        if port != 80:
            body = body.replace(b"vendor.test", f"vendor.test:{port}".encode())
        out.append(body)
    return out


def vendor_port() -> int:
    """Port 80 when this process may bind it (as real vendors' URLs carry no port), else any."""
    try:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", 80))
        return 80
    except OSError:
        return free_port()


VENDOR_SCRIPT = '''
import asyncio
import sys
from pathlib import Path
from aiohttp import web
pages = [p.read_bytes() for p in sorted(Path(sys.argv[2]).glob("page-*.html"))]
trickle = sys.argv[3] == "trickle"
async def handler(request):
    n = int(request.match_info["n"]) % len(pages)
    if not trickle:
        return web.Response(body=pages[n], content_type="text/html")
    response = web.StreamResponse()
    response.content_type = "text/html"
    response.content_length = len(pages[n])
    await response.prepare(request)
    for pos in range(0, len(pages[n]), 16384):
        await response.write(pages[n][pos : pos + 16384])
        await asyncio.sleep(0.002)
    await response.write_eof()
    return response
app = web.Application()
app.router.add_get("/page/{n}", handler)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
'''


async def load(port: int, host: str, cookie: str, seconds: float, concurrency: int) -> tuple[float, float]:
    """(pages/s, MB/s) for ``seconds`` of page requests through the proxy."""
    headers = {"Host": host, "Cookie": f"libproxy={cookie}", "Accept-Encoding": "identity"}
    done = 0
    size = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                     auto_decompress=False) as http:
        deadline = time.perf_counter() + seconds

        async def worker(k: int) -> None:
            nonlocal done, size
            n = k
            while time.perf_counter() < deadline:
                async with http.get(f"http://127.0.0.1:{port}/page/{n}", headers=headers) as r:
                    body = await r.read()
                    if r.status != 200 or len(body) < 150_000:
                        raise SystemExit(f"bad response {r.status} {len(body)}")
                done += 1
                size += len(body)
                n += concurrency

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return done / elapsed, size / elapsed / 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--trickle", action="store_true", help="the vendor sends pages in paced pieces")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        vport, proxy_port = vendor_port(), free_port()
        for n, body in enumerate(pages_for(vport)):
            (tmp / f"page-{n}.html").write_bytes(body)
        (tmp / "vendor.py").write_text(VENDOR_SCRIPT)

        suffix = "" if vport == 80 else f":{vport}"
        label = "h" if vport == 80 else f"h{vport}"
        config = write_config(tmp, proxy_port, f"""
[upstream.hosts]
"www.vendor.test" = "127.0.0.1"
"cdn.vendor.test" = "127.0.0.1"
"api.vendor.test" = "127.0.0.1"
"www.plain.test" = "127.0.0.1"
[[vendor]]
id = "rewritten"
start = "http://www.vendor.test{suffix}/page/0"
hosts = ["http://www.vendor.test{suffix}", "http://cdn.vendor.test{suffix}", "http://api.vendor.test{suffix}"]
domains = ["vendor-sso.test"]
groups = ["wolcott"]
[[vendor]]
id = "untouched"
start = "http://www.plain.test{suffix}/page/0"
hosts = ["http://www.plain.test{suffix}"]
groups = ["wolcott"]
rewrite = false
""")
        procs = [start([str(tmp / "vendor.py"), str(vport), str(tmp), "trickle" if args.trickle else "whole"])]
        wait_port(vport)
        proxy = start(["-m", "proxy", "--log-level", "WARNING", "serve", "--config", str(config)])
        procs.append(proxy)
        try:
            wait_port(proxy_port)
            _, cookie_r = asyncio.run(sign_in(proxy_port, f"http://www.vendor.test{suffix}"))
            _, cookie_u = asyncio.run(sign_in(proxy_port, f"http://www.plain.test{suffix}"))
            host_r = f"www-vendor-test---{label}.{HOST}"
            host_u = f"www-plain-test---{label}.{HOST}"
            runs: dict[str, list[tuple[float, float, float]]] = {"untouched": [], "rewritten": []}
            for host, cookie in ((host_u, cookie_u), (host_r, cookie_r)):
                asyncio.run(load(proxy_port, host, cookie, 1.0, args.concurrency))  # warm up
            rss_warm = rss_now_kib(proxy.pid)
            for _ in range(args.rounds):
                for name, host, cookie in (("untouched", host_u, cookie_u), ("rewritten", host_r, cookie_r)):
                    c0 = cpu_seconds(proxy.pid)
                    t0 = time.perf_counter()
                    pps, mbs = asyncio.run(load(proxy_port, host, cookie, args.seconds, args.concurrency))
                    pages = pps * (time.perf_counter() - t0)
                    runs[name].append((pps, mbs, (cpu_seconds(proxy.pid) - c0) / pages * 1e3))
            rss_peak = rss_peak_kib(proxy.pid)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(10)

    def med(name: str, i: int) -> float:
        return statistics.median(r[i] for r in runs[name])

    def paired(i: int, invert: bool = False) -> str:
        """Median and range of the per-round ratios rewritten/untouched (untouched/rewritten
        for CPU time, so that higher is better throughout)."""
        ratios = sorted((u[i] / r[i]) if invert else (r[i] / u[i])
                        for u, r in zip(runs["untouched"], runs["rewritten"], strict=True))
        return f"{statistics.median(ratios):8.2f}   {ratios[0]:.2f}-{ratios[-1]:.2f}"

    size_kb = sum(len(b) for b in pages_for(1)) / PAGES / 1000
    print(f"vendor on port {vport}; {PAGES} pages of ~{size_kb:.0f} KB "
          f"{'in paced 16 KiB pieces' if args.trickle else 'in one piece'}, {args.concurrency} concurrent "
          f"clients, {args.rounds} rounds of {args.seconds:.0f} s, identity encoding")
    print(f"{'':24}{'untouched':>11}{'rewritten':>11}{'ratio':>8}   range of the per-round ratios")
    print(f"{'pages/s':24}{med('untouched', 0):11.1f}{med('rewritten', 0):11.1f}{paired(0)}")
    print(f"{'MB/s':24}{med('untouched', 1):11.1f}{med('rewritten', 1):11.1f}{paired(1)}")
    print(f"{'proxy CPU ms per page':24}{med('untouched', 2):11.2f}{med('rewritten', 2):11.2f}{paired(2, True)}")
    print(f"proxy memory: {rss_warm / 1024:.1f} MiB after the warm-up, peak {rss_peak / 1024:.1f} MiB "
          f"over all rounds")


if __name__ == "__main__":
    main()
