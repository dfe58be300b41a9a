"""Benchmark: signed-in requests per second and streaming through the proxy, against a minimal
aiohttp pass-through proxy measured in the same run (the machines are shared and noisy, so only
the ratio means much).

    python bench/bench_proxy.py [--seconds 8] [--rounds 3] [--stream-mib 1024]

Everything runs on 127.0.0.1: a vendor process, the proxy under test or the baseline, and the
load generator in this process. Runs are interleaved (baseline, proxy, baseline, proxy, ...)
and the median of each is reported. Peak memory is the proxy process's VmHWM from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
HOST = "proxy.localhost"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listening on {port}")


def rss_peak_kib(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+)", text)
    return int(match.group(1)) if match else 0


def rss_now_kib(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+)", text)
    return int(match.group(1)) if match else 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def sign_in(proxy_port: int, vendor_origin: str) -> tuple[str, str]:
    """Sign in through the real form; returns (proxied host, its session cookie)."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        base = f"http://127.0.0.1:{proxy_port}"
        target = quote(vendor_origin + "/small", safe="")
        async with http.get(f"{base}/login?url={target}", headers={"Host": HOST}) as r:
            page = await r.text()
            csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
            csrf_cookie = r.cookies["libproxy_csrf"].value
        async with http.post(f"{base}/login", headers={"Host": HOST, "Cookie": f"libproxy_csrf={csrf_cookie}"},
                             data={"csrf": csrf, "url": vendor_origin + "/small", "card": "1000", "pin": "1111"},
                             allow_redirects=False) as r:
            location = r.headers["Location"]
            bind = r.cookies["libproxy_bind"].value  # the ticket only works with this cookie
        host = location.split("//", 1)[1].split("/", 1)[0]
        path = "/" + location.split("//", 1)[1].split("/", 1)[1]
        async with http.get(f"{base}{path}", headers={"Host": host, "Cookie": f"libproxy_bind={bind}"},
                            allow_redirects=False) as r:
            cookie = r.cookies["libproxy"].value
        return host, cookie


async def load(port: int, host: str, cookie: str | None, seconds: float, concurrency: int) -> float:
    """Requests per second for /small over ``seconds`` with ``concurrency`` clients."""
    headers = {"Host": host}
    if cookie:
        headers["Cookie"] = f"libproxy={cookie}"
    connector = aiohttp.TCPConnector(limit=concurrency)
    done = 0
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()) as http:
        url = f"http://127.0.0.1:{port}/small"
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                async with http.get(url, headers=headers) as r:
                    body = await r.read()
                    if r.status != 200 or len(body) != 1024:
                        raise SystemExit(f"bad response {r.status} {len(body)}")
                done += 1

        start_t = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start_t
    return done / elapsed


async def stream(port: int, host: str, cookie: str | None, size: int) -> float:
    """MB/s for one download of ``size`` bytes."""
    headers = {"Host": host}
    if cookie:
        headers["Cookie"] = f"libproxy={cookie}"
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), timeout=timeout,
                                     auto_decompress=False) as http:
        t0 = time.perf_counter()
        got = 0
        async with http.get(f"http://127.0.0.1:{port}/stream?size={size}", headers=headers) as r:
            async for chunk in r.content.iter_any():
                got += len(chunk)
        elapsed = time.perf_counter() - t0
    if got != size:
        raise SystemExit(f"stream truncated: {got} of {size}")
    return size / elapsed / 1e6


def write_config(tmp: Path, proxy_port: int, rest: str) -> Path:
    """A proxy configuration on ``proxy_port`` with one signed-up patron (card 1000, PIN 1111,
    group wolcott) and no staff listener; ``rest`` adds sections (vendors, upstream hosts)."""
    sys.path.insert(0, str(ROOT))
    from proxy.patrons.hashing import hash_pin
    from proxy.patrons.local import add_patron

    add_patron(tmp / "patrons.toml", "1000", hash_pin("1111", n_log2=10), ["wolcott"], "wolcott")
    path = tmp / "bench.toml"
    path.write_text(f"""
[proxy]
listen = "127.0.0.1:{proxy_port}"
host = "{HOST}"
state_dir = "{tmp / 'state'}"
[patrons]
file = "{tmp / 'patrons.toml'}"
[admin]
listen = ""
{rest}""")
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--stream-mib", type=int, default=1024)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        vendor_port, proxy_port, base_port = free_port(), free_port(), free_port()
        procs = [start(["bench/servers.py", "vendor", str(vendor_port)])]
        wait_port(vendor_port)
        config = write_config(tmp, proxy_port, f"""
[[vendor]]
id = "bench"
start = "http://127.0.0.1:{vendor_port}/small"
hosts = ["http://127.0.0.1:{vendor_port}"]
groups = ["wolcott"]
""")
        proxy = start(["-m", "proxy", "--log-level", "WARNING", "serve", "--config", str(config)])
        baseline = start(["bench/servers.py", "passthrough", str(base_port), str(vendor_port)])
        procs += [proxy, baseline]
        try:
            wait_port(proxy_port)
            wait_port(base_port)
            vendor_origin = f"http://127.0.0.1:{vendor_port}"
            host, cookie = asyncio.run(sign_in(proxy_port, vendor_origin))
            # Warm both up (connection pools, first-use imports).
            asyncio.run(load(base_port, "127.0.0.1", None, 1.0, args.concurrency))
            asyncio.run(load(proxy_port, host, cookie, 1.0, args.concurrency))
            base_rps, proxy_rps = [], []
            base_cpu, proxy_cpu = [], []
            for _ in range(args.rounds):
                for rps_list, cpu_list, proc, port, h, c in (
                    (base_rps, base_cpu, baseline, base_port, "127.0.0.1", None),
                    (proxy_rps, proxy_cpu, proxy, proxy_port, host, cookie),
                ):
                    c0, t0 = cpu_seconds(proc.pid), time.perf_counter()
                    rate = asyncio.run(load(port, h, c, args.seconds, args.concurrency))
                    requests = rate * (time.perf_counter() - t0)
                    rps_list.append(rate)
                    cpu_list.append((cpu_seconds(proc.pid) - c0) / requests * 1e6)
            size = args.stream_mib * 1024 * 1024
            rss_before = rss_now_kib(proxy.pid)
            base_mbs, proxy_mbs = [], []
            for _ in range(max(1, args.rounds - 1)):
                base_mbs.append(asyncio.run(stream(base_port, "127.0.0.1", None, size)))
                proxy_mbs.append(asyncio.run(stream(proxy_port, host, cookie, size)))
            peak = rss_peak_kib(proxy.pid)
            base_peak = rss_peak_kib(baseline.pid)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()

    b_rps, p_rps = statistics.median(base_rps), statistics.median(proxy_rps)
    b_mbs, p_mbs = statistics.median(base_mbs), statistics.median(proxy_mbs)
    print(f"machine: {os.cpu_count()} cores; {args.rounds} rounds of {args.seconds:.0f} s, "
          f"{args.concurrency} concurrent clients; stream {args.stream_mib} MiB")
    print(f"{'':34}{'baseline':>12}{'libproxy':>12}{'ratio':>8}")
    print(f"{'signed-in 1 KiB requests/s':34}{b_rps:12.0f}{p_rps:12.0f}{p_rps / b_rps:8.2f}")
    b_cpu, p_cpu = statistics.median(base_cpu), statistics.median(proxy_cpu)
    print(f"{'proxy CPU per request (us)':34}{b_cpu:12.0f}{p_cpu:12.0f}{b_cpu / p_cpu:8.2f}")
    print(f"{'streaming MB/s':34}{b_mbs:12.0f}{p_mbs:12.0f}{p_mbs / b_mbs:8.2f}")
    print(f"{'peak RSS MiB (after stream)':34}{base_peak / 1024:12.1f}{peak / 1024:12.1f}")
    print(f"libproxy RSS before streaming: {rss_before / 1024:.1f} MiB; peak after "
          f"{args.stream_mib} MiB x {len(proxy_mbs)}: {peak / 1024:.1f} MiB")
    print(f"all rounds: baseline rps {[round(x) for x in base_rps]}, libproxy rps {[round(x) for x in proxy_rps]}")


if __name__ == "__main__":
    main()
