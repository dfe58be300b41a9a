"""Benchmark: the proxy (1 and 2 workers, asyncio and uvloop) against the bare aiohttp
pass-through, nginx and Apache httpd as reverse proxies to the same vendor, measured by wrk in
one run: requests per second, p99 latency and server CPU per request.

    python bench/bench_servers.py [--seconds 8] [--rounds 2] [--connections 50] [--size 1024]

The vendor is nginx serving a static file (so the vendor is never what limits the figures); the
proxies under test run one at a time in front of it, interleaved round by round, and the median
of the rounds is reported. CPU per request is the user+system time of the server under test's
processes (all workers) divided by the requests wrk counted. Everything is on 127.0.0.1. The
proxy cases use a signed-in session (a real sign-in through the form) on the memory store, or on
a redis-server started here for several workers (the memory store is refused with more than one).

Two floors help read the pass-through (``bench/servers.py``): "minimal-client floor" is the same
aiohttp server with a client of a few lines instead of aiohttp's, and "aiohttp server alone"
answers the 1 KiB itself, with no second exchange.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_proxy import HOST, ROOT, cpu_seconds, free_port, sign_in, wait_port, write_config


@dataclass
class Result:
    rps: float
    p99_ms: float
    cpu_us: float
    non_2xx: int


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (workers), from /proc."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            found.extend(tree(int(child)))
    return found


def cpu_of(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except (OSError, IndexError):
            continue
    return total


def wrk(port: int, host: str, cookie: str | None, seconds: float, connections: int, pids: list[int]) -> Result:
    args = ["wrk", "-t2", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-H", f"Host: {host}"]
    if cookie:
        args += ["-H", f"Cookie: libproxy={cookie}"]
    before = cpu_of(pids)
    out = subprocess.run([*args, f"http://127.0.0.1:{port}/small"], capture_output=True, text=True,
                         check=True).stdout
    used = cpu_of(pids) - before
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    assert p99 is not None, out
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return Result(rps, float(p99.group(1)) * scale, used / max(total, 1) * 1e6, int(bad.group(1)) if bad else 0)


def nginx_conf(tmp: Path, name: str, body: str) -> Path:
    path = tmp / f"{name}.conf"
    path.write_text(f"""
daemon off;
master_process on;
worker_processes {os.cpu_count() or 1};
pid {tmp / name}.pid;
error_log {tmp / name}.err warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/{name}-body;
    proxy_temp_path {tmp}/{name}-proxy;
    fastcgi_temp_path {tmp}/{name}-fcgi;
    uwsgi_temp_path {tmp}/{name}-uwsgi;
    scgi_temp_path {tmp}/{name}-scgi;
    {body}
}}
""")
    return path


def apache_conf(tmp: Path, port: int, vendor: int) -> Path:
    mods = "/usr/lib/apache2/modules"
    path = tmp / "apache.conf"
    (tmp / "apache-run").mkdir(exist_ok=True)
    path.write_text(f"""
ServerRoot "{tmp}"
Listen 127.0.0.1:{port}
PidFile {tmp}/apache.pid
ErrorLog {tmp}/apache.err
LoadModule mpm_event_module {mods}/mod_mpm_event.so
LoadModule authz_core_module {mods}/mod_authz_core.so
LoadModule proxy_module {mods}/mod_proxy.so
LoadModule proxy_http_module {mods}/mod_proxy_http.so
User nobody
Group nogroup
ServerName localhost
KeepAlive On
MaxKeepAliveRequests 0
StartServers 2
ServerLimit 4
ThreadsPerChild 64
MaxRequestWorkers 256
ProxyPass / http://127.0.0.1:{vendor}/ keepalive=On
ProxyPassReverse / http://127.0.0.1:{vendor}/
""")
    return path


LOG = Path(tempfile.gettempdir()) / "libproxy-bench-servers.log"


def start(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    # Servers' messages go to one log file (named when something fails to start).
    with LOG.open("ab") as log:
        return subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=log, env={**os.environ, **(env or {})},
                                start_new_session=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--only", default="", help="comma-separated case names")
    args = parser.parse_args()
    LOG.unlink(missing_ok=True)  # this run's messages only
    for tool in ("wrk", "nginx", "redis-server"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(f"{tool} is not installed")
    tmp = Path(tempfile.mkdtemp(prefix="libproxy-bench-servers-"))
    tmp.chmod(0o755)  # nginx's and Apache's unprivileged workers read the vendor file here
    (tmp / "www").mkdir()
    (tmp / "www" / "small").write_bytes(b"x" * args.size)
    vendor_port = free_port()
    vendor = start(["nginx", "-c", str(nginx_conf(tmp, "vendor", f"""
        server {{ listen 127.0.0.1:{vendor_port}; keepalive_requests 1000000;
                 location / {{ root {tmp / 'www'}; default_type text/plain; }} }}"""))])
    redis_port = free_port()
    redis = start(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no"])
    wait_port(vendor_port)
    wait_port(redis_port)
    origin = f"http://127.0.0.1:{vendor_port}"
    vendor_rest = f"""[[vendor]]
id = "bench"
title = "Bench"
start = "{origin}/"
hosts = ["{origin}"]
groups = ["wolcott"]
[upstream]
connections_per_client = 63
connections_per_host = 256
"""
    redis_rest = '[sessions]\nstore = "redis"\nredis_url = "env:BENCH_REDIS"\n'

    def proxy_case(workers: int, loop: str, store: str) -> tuple[list[str], dict[str, str], str]:
        port = free_port()
        case_dir = tmp / f"proxy-{workers}-{loop}-{store}"
        case_dir.mkdir(exist_ok=True)
        rest = vendor_rest + (redis_rest if store == "redis" else "")
        config = write_config(case_dir, port, rest)
        return ([sys.executable, "-m", "proxy", "serve", "--config", str(config), "--workers", str(workers),
                 "--loop", loop], {"BENCH_REDIS": f"redis://127.0.0.1:{redis_port}/0"}, str(port))

    cases: dict[str, tuple[list[str], dict[str, str], int, bool]] = {}
    for name, (workers, loop, store) in {
        "proxy 1w asyncio": (1, "asyncio", "memory"), "proxy 1w uvloop": (1, "uvloop", "memory"),
        "proxy 1w redis": (1, "asyncio", "redis"), "proxy 2w redis": (2, "asyncio", "redis"),
        "proxy 2w redis uvloop": (2, "uvloop", "redis"),
    }.items():
        argv, env, port = proxy_case(workers, loop, store)
        cases[name] = (argv, env, int(port), True)
    port = free_port()
    cases["aiohttp pass-through"] = ([sys.executable, "bench/servers.py", "passthrough", str(port),
                                      str(vendor_port)], {}, port, False)
    port = free_port()
    # Floors, to read the pass-through by: the same server with a client of a few lines (how much
    # of it is aiohttp's client), and the vendor's answer made by aiohttp itself (no second exchange).
    cases["minimal-client floor"] = ([sys.executable, "bench/servers.py", "minimal", str(port), str(vendor_port)],
                                     {}, port, False)
    port = free_port()
    cases["aiohttp server alone"] = ([sys.executable, "bench/servers.py", "vendor", str(port)], {}, port, False)
    port = free_port()
    cases["nginx"] = (["nginx", "-c", str(nginx_conf(tmp, "front", f"""
        upstream vendor {{ server 127.0.0.1:{vendor_port}; keepalive 64; }}
        server {{ listen 127.0.0.1:{port}; keepalive_requests 1000000;
                 location / {{ proxy_pass http://vendor; proxy_http_version 1.1;
                              proxy_set_header Connection ""; }} }}"""))], {}, port, False)
    if shutil.which("apache2") or Path("/usr/sbin/apache2").exists():
        port = free_port()
        cases["apache httpd"] = (["apache2", "-f", str(apache_conf(tmp, port, vendor_port)), "-DFOREGROUND"],
                                 {}, port, False)
    wanted = {c.strip() for c in args.only.split(",") if c.strip()}
    results: dict[str, list[Result]] = {name: [] for name in cases if not wanted or name in wanted}
    try:
        for _ in range(args.rounds):
            for name in results:
                argv, env, port, signed_in = cases[name]
                proc = start(argv, env)
                try:
                    try:
                        wait_port(port, 60)
                    except SystemExit:
                        raise SystemExit(f"{name} did not start; see {LOG}") from None
                    time.sleep(1.0 if "2w" in name else 0.3)  # every worker up
                    host, cookie = (asyncio.run(sign_in(port, origin)) if signed_in else (HOST, None))
                    wrk(port, host, cookie, 2, args.connections, tree(proc.pid))  # warm-up
                    results[name].append(wrk(port, host, cookie, args.seconds, args.connections, tree(proc.pid)))
                finally:
                    stop(proc)
    finally:
        stop(vendor)
        stop(redis)
        shutil.rmtree(tmp, ignore_errors=True)
    base = statistics.median(r.rps for r in results.get("aiohttp pass-through", [])) if results.get(
        "aiohttp pass-through") else None
    print(f"\n{args.size}-byte bodies, {args.connections} connections, {args.seconds:g} s x {args.rounds} rounds, "
          f"{os.cpu_count()} cores (wrk, the vendor and the server share them)\n")
    print(f"{'server':24} {'req/s':>9} {'vs aiohttp':>10} {'p99 ms':>8} {'CPU us/req':>11} {'non-2xx':>8}")
    for name, runs in results.items():
        rps = statistics.median(r.rps for r in runs)
        ratio = f"{rps / base:.2f}" if base else "-"
        print(f"{name:24} {rps:9.0f} {ratio:>10} {statistics.median(r.p99_ms for r in runs):8.2f} "
              f"{statistics.median(r.cpu_us for r in runs):11.0f} {sum(r.non_2xx for r in runs):8d}")


if __name__ == "__main__":
    main()
