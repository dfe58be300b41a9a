"""Benchmark: the real-world corpus through the proxy, rewritten versus untouched, with nginx's
``sub_filter`` on the same pages as the anchor, in one run.

    python bench/bench_rewrite_nginx.py [--seconds 3] [--rounds 5] [--concurrency 8] [--ports own,default]

The corpus (tests/corpus: documentation pages, and the JavaScript and CSS bundles of a PDF viewer,
front-end frameworks, a math renderer and search UIs) is pointed at a three-host vendor by
tests/corpus/vendorize.py and served by one vendor process: plain, or gzip-compressed (level 6,
as servers store them) to clients that accept gzip. Clients ask for ``plain`` (identity),
``gzip`` (gzip only, as nginx is compared) or ``browser`` (``gzip, deflate, br, zstd``, as
browsers send; nginx answers that with gzip). Three ways to fetch a page, alternating in
every round so each round gives paired ratios under the same conditions:

* untouched: the proxy, under a vendor with ``rewrite = false`` (the pages stream as they come;
  a gzip page passes through still compressed);
* rewritten: the proxy, under the vendor of the corpus's hosts (every form of every mention is
  rewritten; a gzip page is decoded, rewritten and encoded again: gzip level 1 for a client
  that takes only gzip, zstd level 1 for one that sends what browsers send);
* nginx: nginx with ``sub_filter`` replacing each of the three vendor host names (with the port,
  when the URLs carry one) by its proxied name literally, one worker process, asking the vendor
  for uncompressed pages and gzip-encoding its output (level 1) for clients that accept gzip:
  the usual way to run sub_filter. It does one literal per host; the proxy does every form.

``--ports own`` serves the vendor on a port of its own (every URL carries it), ``default`` on port
80 (no port in any URL; needs the right to bind it). Reported per case: medians of pages/s and of
CPU time per page (the proxy process; nginx's worker), and the median and range of the per-round
ratios. Only loopback; the load generator shares the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_proxy import HOST, cpu_seconds, free_port, sign_in, start, wait_port, write_config

from tests.corpus.vendorize import VENDOR_HOSTS, vendor_files

# What the client accepts: nothing; gzip only (as nginx is compared); what a browser sends.
ACCEPT = {"plain": "identity", "gzip": "gzip", "browser": "gzip, deflate, br, zstd"}
FORMS = tuple(ACCEPT)
TYPES = {".html": "text/html", ".js": "application/javascript", ".mjs": "text/javascript", ".css": "text/css",
         ".json": "application/json", ".xml": "application/opensearchdescription+xml"}

VENDOR_SCRIPT = '''
import sys
from pathlib import Path
from aiohttp import web
root = Path(sys.argv[2])
names = sorted(p.name for p in (root / "plain").iterdir())
plain = [(root / "plain" / n).read_bytes() for n in names]
packed = [(root / "gzip" / n).read_bytes() for n in names]
types = [(root / "types" / n).read_text() for n in names]
async def page(request):
    n = int(request.match_info["n"]) % len(names)
    if request.match_info["form"] == "gzip" and "gzip" in request.headers.get("Accept-Encoding", ""):
        return web.Response(body=packed[n], content_type=types[n], headers={"Content-Encoding": "gzip"})
    return web.Response(body=plain[n], content_type=types[n])
async def other(request):
    return web.Response(text="vendor", content_type="text/plain")
app = web.Application()
app.router.add_get("/{form}/{n}", page)
app.router.add_route("*", "/{tail:.*}", other)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
'''

NGINX_CONF = """
worker_processes 1;
daemon off;
user root root;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/nginx-body;
    proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi;
    uwsgi_temp_path {tmp}/nginx-uwsgi;
    scgi_temp_path {tmp}/nginx-scgi;
    upstream vendor {{ server 127.0.0.1:{vport}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{nport};
        location / {{
            proxy_pass http://vendor;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host www.vendor.test;
            proxy_set_header Accept-Encoding "";
            proxy_buffers 64 16k;
            sub_filter_once off;
            sub_filter_types *;
{filters}
            gzip on;
            gzip_comp_level 1;
            gzip_types *;
            gzip_min_length 0;
        }}
    }}
}}
"""


def can_bind_80() -> bool:
    try:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", 80))
    except OSError:
        return False
    return True


def nginx_workers(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [int(c) for c in children]


async def load(port: int, host: str, cookie: str | None, form: str, count: int, seconds: float,
               concurrency: int) -> float:
    """Pages per second for ``seconds`` of requests cycling through the corpus."""
    headers = {"Host": host, "Accept-Encoding": ACCEPT[form]}
    path = "plain" if form == "plain" else "gzip"
    if cookie:
        headers["Cookie"] = f"libproxy={cookie}"
    done = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                     auto_decompress=False) as http:
        deadline = time.perf_counter() + seconds

        async def worker(k: int) -> None:
            nonlocal done
            n = k
            while time.perf_counter() < deadline:
                async with http.get(f"http://127.0.0.1:{port}/{path}/{n % count}", headers=headers) as r:
                    body = await r.read()
                    if r.status != 200 or not body:
                        raise SystemExit(f"bad response {r.status} {len(body)} from port {port}")
                done += 1
                n += concurrency

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return done / elapsed


def run_case(mode: str, args: argparse.Namespace) -> dict[tuple[str, str], list[tuple[float, float]]]:
    """{(way, form): [(pages/s, CPU ms per page) per round]} for one port mode."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        vport = 80 if mode == "default" else free_port()
        proxy_port, nport = free_port(), free_port()
        suffix = "" if vport == 80 else f":{vport}"
        files = vendor_files(vport)
        for sub in ("plain", "gzip", "types"):
            (tmp / sub).mkdir()
        for name, data in files.items():
            (tmp / "plain" / name).write_bytes(data)
            (tmp / "gzip" / name).write_bytes(gzip.compress(data, 6))
            (tmp / "types" / name).write_text(TYPES[Path(name).suffix])
        (tmp / "vendor.py").write_text(VENDOR_SCRIPT)
        label = "h" if vport == 80 else f"h{vport}"
        proxied = {h: f"{h.replace('.', '-')}---{label}.{HOST}:{proxy_port}" for h in VENDOR_HOSTS}
        filters = "\n".join(f"            sub_filter '{h}{suffix}' '{proxied[h]}';" for h in VENDOR_HOSTS)
        (tmp / "nginx.conf").write_text(NGINX_CONF.format(tmp=tmp, vport=vport, nport=nport, filters=filters))
        hosts = ", ".join(f'"http://{h}{suffix}"' for h in VENDOR_HOSTS)
        config = write_config(tmp, proxy_port, f"""
[upstream.hosts]
"www.vendor.test" = "127.0.0.1"
"cdn.vendor.test" = "127.0.0.1"
"api.vendor.test" = "127.0.0.1"
"www.plain.test" = "127.0.0.1"
[[vendor]]
id = "rewritten"
start = "http://www.vendor.test{suffix}/"
hosts = [{hosts}]
groups = ["wolcott"]
[[vendor]]
id = "untouched"
start = "http://www.plain.test{suffix}/"
hosts = ["http://www.plain.test{suffix}"]
groups = ["wolcott"]
rewrite = false
""")
        procs = [start([str(tmp / "vendor.py"), str(vport), str(tmp)])]
        wait_port(vport)
        proxy = start(["-m", "proxy", "--log-level", "WARNING", "serve", "--config", str(config)])
        procs.append(proxy)
        web = subprocess.Popen([nginx, "-c", str(tmp / "nginx.conf"), "-p", str(tmp)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_port(proxy_port)
            wait_port(nport)
            workers = nginx_workers(web.pid)
            host_r, cookie_r = asyncio.run(sign_in(proxy_port, f"http://www.vendor.test{suffix}"))
            host_u, cookie_u = asyncio.run(sign_in(proxy_port, f"http://www.plain.test{suffix}"))
            ways = {"untouched": (proxy_port, host_u, cookie_u, [proxy.pid]),
                    "rewritten": (proxy_port, host_r, cookie_r, [proxy.pid]),
                    "nginx": (nport, "www.vendor.test", None, workers)}
            count = len(files)
            for form in FORMS:
                for port, host, cookie, _ in ways.values():  # warm up
                    asyncio.run(load(port, host, cookie, form, count, 1.0, args.concurrency))
            runs: dict[tuple[str, str], list[tuple[float, float]]] = {}
            for _ in range(args.rounds):
                for form in FORMS:
                    for way, (port, host, cookie, pids) in ways.items():
                        c0 = sum(cpu_seconds(p) for p in pids)
                        t0 = time.perf_counter()
                        pps = asyncio.run(load(port, host, cookie, form, count, args.seconds, args.concurrency))
                        pages = pps * (time.perf_counter() - t0)
                        cpu = (sum(cpu_seconds(p) for p in pids) - c0) / pages * 1e3
                        runs.setdefault((way, form), []).append((pps, cpu))
        finally:
            web.terminate()
            for p in procs:
                p.terminate()
            for p in (*procs, web):
                p.wait(10)
    return runs


def report(mode: str, runs: dict[tuple[str, str], list[tuple[float, float]]], args: argparse.Namespace) -> None:
    files = vendor_files(None)
    size_kb = sum(map(len, files.values())) / len(files) / 1000
    where = "port 80: no port in any URL" if mode == "default" else "a port of its own: every URL carries it"
    print(f"\nvendor on {where}; {len(files)} corpus files of ~{size_kb:.0f} KB, {args.concurrency} clients, "
          f"{args.rounds} rounds of {args.seconds:.0f} s per case")
    print(f"{'':28}{'untouched':>10}{'rewritten':>10}{'nginx':>9}   rewritten/untouched    "
          f"rewritten/nginx")

    def med(way: str, form: str, i: int) -> float:
        return statistics.median(r[i] for r in runs[(way, form)])

    def ratio(a: str, b: str, form: str, i: int, invert: bool) -> str:
        values = sorted((y[i] / x[i]) if invert else (x[i] / y[i])
                        for x, y in zip(runs[(a, form)], runs[(b, form)], strict=True))
        return f"{statistics.median(values):5.2f} ({values[0]:.2f}-{values[-1]:.2f})"

    for form in FORMS:
        print(f"{form + ' pages/s':28}{med('untouched', form, 0):10.0f}{med('rewritten', form, 0):10.0f}"
              f"{med('nginx', form, 0):9.0f}   {ratio('rewritten', 'untouched', form, 0, False):>18}   "
              f"{ratio('rewritten', 'nginx', form, 0, False):>16}")
        # CPU ratios are inverted (other/rewritten) so that, like pages/s, higher is better.
        print(f"{form + ' CPU ms per page':28}{med('untouched', form, 1):10.2f}{med('rewritten', form, 1):10.2f}"
              f"{med('nginx', form, 1):9.2f}   {ratio('rewritten', 'untouched', form, 1, True):>18}   "
              f"{ratio('rewritten', 'nginx', form, 1, True):>16}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--ports", default="own,default", help="own (URLs carry the port), default (port 80)")
    args = parser.parse_args()
    if not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()):
        raise SystemExit("needs nginx (Debian: apt-get install nginx)")
    for mode in args.ports.split(","):
        if mode == "default" and not can_bind_80():
            print("\n(port 80 cannot be bound here: the case without ports is skipped)")
            continue
        report(mode, run_case(mode, args), args)
    print("\nCPU ratios are untouched/rewritten and nginx/rewritten per page: above 1, the rewritten page "
          "costs less.")


if __name__ == "__main__":
    main()
