"""Benchmark: this working tree's proxy against the proxy at an earlier commit, in one run.

    python bench/bench_commits.py REV [--rounds 3] [--seconds 6] [--connections 50]

Checks out REV into a temporary git worktree (its compiled rewriting loop built there), runs a
vendor (nginx serving a 1 KiB file) and then, alternating round by round, each proxy on the memory
store with one signed-in session under wrk, and reports requests per second, p99 and the proxy's
CPU per request for both, with their medians. What a change costs per request is best read from
the CPU column: the machines are shared, so rates move with everything else running.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_proxy import ROOT, free_port, sign_in, wait_port, write_config
from bench_servers import LOG, Result, nginx_conf, start, stop, tree, wrk

_BUILD = """
from setuptools import Extension, setup
setup(name="hostscan", ext_modules=[Extension("_hostscan", ["_hostscan.c"])])
"""


def checkout(rev: str, where: Path) -> Path:
    """REV as a worktree under ``where``, with its compiled loop built (when it has one)."""
    path = where / "old"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), rev], check=True)
    source = path / "proxy" / "rewrite" / "_hostscan.c"
    if source.exists():
        build = where / "build"
        build.mkdir()
        shutil.copy(source, build)
        (build / "setup.py").write_text(_BUILD)
        done = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=build,
                              capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"building {rev}'s compiled loop failed:\n{done.stderr[-2000:]}")
        for built in build.glob("_hostscan*.so"):
            shutil.copy(built, source.parent)
    return path


def upstream_section(tree_path: Path) -> str:
    """The [upstream] table for a tree: fair shares wide enough for one session's 50 connections,
    in the keys that tree knows."""
    config = (tree_path / "proxy" / "config.py").read_text()
    lines = ["[upstream]", "connections_per_host = 256"]
    if "connections_per_client" in config:
        lines.append("connections_per_client = 63")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("rev", help="the earlier commit (anything git rev-parse takes)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args()
    if shutil.which("wrk") is None or (shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists()):
        raise SystemExit("wrk and nginx are needed")
    LOG.unlink(missing_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="libproxy-bench-commits-"))
    tmp.chmod(0o755)  # nginx's workers read the vendor's file here
    (tmp / "www").mkdir()
    (tmp / "www" / "small").write_bytes(b"x" * 1024)
    vendor_port = free_port()
    origin = f"http://127.0.0.1:{vendor_port}"
    vendor = None
    old = tmp / "old"
    try:
        trees = {args.rev: checkout(args.rev, tmp), "working tree": ROOT}
        results: dict[str, list[Result]] = {name: [] for name in trees}
        vendor = start(["nginx", "-c", str(nginx_conf(tmp, "vendor", f"""
            server {{ listen 127.0.0.1:{vendor_port}; keepalive_requests 1000000;
                     location / {{ root {tmp / 'www'}; default_type text/plain; }} }}"""))])
        wait_port(vendor_port)
        for round_ in range(args.rounds):
            # Each round in the other order: neither always runs on the warmer machine.
            order = list(trees.items()) if round_ % 2 == 0 else list(trees.items())[::-1]
            for name, path in order:
                port = free_port()
                case = tmp / f"case-{round_}-{len(results[name])}-{name.replace(' ', '-')}"
                case.mkdir()
                config = write_config(case, port, f'[[vendor]]\nid = "bench"\ntitle = "Bench"\nstart = "{origin}/"\n'
                                                  f'hosts = ["{origin}"]\ngroups = ["wolcott"]\n'
                                                  + upstream_section(path))
                env = {"PYTHONPATH": str(path)}
                proc = subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--config", str(config)],
                                        cwd=path, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                                        stderr=LOG.open("ab"), start_new_session=True)
                try:
                    wait_port(port, 60)
                    time.sleep(0.3)
                    host, cookie = asyncio.run(sign_in(port, origin))
                    wrk(port, host, cookie, 2, args.connections, tree(proc.pid))  # warm-up
                    result = wrk(port, host, cookie, args.seconds, args.connections, tree(proc.pid))
                    results[name].append(result)
                    print(f"round {round_ + 1} {name:14} {result.rps:8.0f} req/s  p99 {result.p99_ms:6.1f} ms  "
                          f"{result.cpu_us:5.0f} us/req  non-2xx {result.non_2xx}", flush=True)
                finally:
                    stop(proc)
    finally:
        if vendor is not None:
            stop(vendor)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n1 KiB bodies, {args.connections} connections, {args.seconds:g} s x {args.rounds} rounds (medians)")
    for name, runs in results.items():
        print(f"{name:14} {statistics.median(r.rps for r in runs):8.0f} req/s  "
              f"p99 {statistics.median(r.p99_ms for r in runs):6.1f} ms  "
              f"{statistics.median(r.cpu_us for r in runs):5.0f} us/req")


if __name__ == "__main__":
    main()
