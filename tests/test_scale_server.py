"""The proxy as a service: live reload (SIGHUP, ``libproxy reload``), clean shutdown (SIGTERM),
worker processes on one socket, the open-files limit. Real processes on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from proxy import config as config_mod
from proxy.context import CONFIG, ROUTES
from proxy.server import reload_app
from tests.redis_server import redis_server, redis_server_path
from tests.scale_support import port_open, until, wait_for
from tests.support import PROXY_HOST, Browser, EchoVendor, free_port, run_proxy, write_patrons

ROOT = Path(__file__).resolve().parent.parent


def _toml(tmp: Path, port: int, vendors: list[tuple[str, str]], *, staff: int = 0, extra: str = "",
          store: str = 'store = "memory"') -> str:
    text = f"""
[proxy]
listen = "127.0.0.1:{port}"
host = "{PROXY_HOST}"
state_dir = "{tmp / 'state'}"
shutdown_deadline = "20s"

[library]
id = "wolcott.lib.ct.us"
name = "Wolcott Public Library"

[patrons]
source = "local"
file = "{tmp / 'patrons.toml'}"

[sessions]
{store}

[upstream]
connect_timeout = "2s"
read_timeout = "10s"

[admin]
listen = "{f'127.0.0.1:{staff}' if staff else ''}"
{extra}
"""
    for vendor_id, origin in vendors:
        text += f"""
[[vendor]]
id = "{vendor_id}"
title = "{vendor_id}"
start = "{origin}/"
hosts = ["{origin}"]
groups = ["wolcott"]
"""
    return text


def _write(tmp: Path, text: str) -> Path:
    if not (tmp / "patrons.toml").exists():
        write_patrons(tmp / "patrons.toml")
    path = tmp / "proxy.toml"
    path.write_text(text, encoding="utf-8")
    return path


async def test_reload_keeps_config_on_a_broken_file_and_swaps_vendors_live(tmp_path: Path, echo: EchoVendor,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    async with run_echo_other() as other:
        path = _write(tmp_path, _toml(tmp_path, 8080, [("echo", echo.origin)]))
        async with run_proxy(config_mod.load(path)) as proxy:
            browser = Browser(proxy)
            try:
                assert (await browser.sign_in("1000", "1111", f"{echo.origin}/echo")).status == 200
                host = proxy.proxied_host(echo.origin)
                before = proxy.app[CONFIG]
                path.write_text("[proxy\nbroken", encoding="utf-8")
                with caplog.at_level("ERROR", logger="libproxy"):
                    assert not await reload_app(proxy.app, path)
                assert "reload refused" in caplog.text
                assert proxy.app[CONFIG] is before
                # A good file: a second vendor, and a changed title for the first.
                text = _toml(tmp_path, 8080, [("echo", echo.origin), ("other", other.origin)])
                path.write_text(text.replace('title = "echo"', 'title = "Echo Renamed"'), encoding="utf-8")
                assert await reload_app(proxy.app, path)
                assert {v.id for v in proxy.app[ROUTES].vendors.vendors} == {"echo", "other"}
                # The signed-in patron keeps reading, and reaches the new vendor with the same session.
                assert (await browser.get(f"http://{host}/echo", follow=False)).status == 200
                new_host = proxy.proxied_host(other.origin)
                reached = await browser.get(f"http://{new_host}/echo")  # the sign-on hop, no new sign-in
                assert reached.status == 200 and reached.url.startswith(f"http://{new_host}/echo")
            finally:
                await browser.close()


class run_echo_other:
    """A second echo vendor (the fixture gives one)."""

    async def __aenter__(self) -> EchoVendor:
        from tests.support import run_echo_vendor

        self._cm = run_echo_vendor()
        return await self._cm.__aenter__()

    async def __aexit__(self, *exc: object) -> None:
        await self._cm.__aexit__(None, None, None)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """The log file and the working directory for a proxy run as a process."""
    yield tmp_path / "proxy.log", tmp_path


REDIS_STORE = 'store = "redis"\nredis_url = "env:LIBPROXY_TEST_REDIS"'


def _serve(path: Path, log: Path, *args: str, redis_url: str | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if redis_url is not None:
        env["LIBPROXY_TEST_REDIS"] = redis_url  # REDIS_STORE reads it
    return subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--config", str(path), *args],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=ROOT, env=env)


def _stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(10)


async def _status(port: int, host: str, path: str = "/") -> int:
    async with aiohttp.ClientSession() as client, client.get(
            f"http://127.0.0.1:{port}{path}", headers={"Host": host}, allow_redirects=False) as response:
        await response.read()
        return response.status


def _proxied(origin: str) -> str:
    return origin.removeprefix("http://").replace(".", "-").replace(":", "--") + "." + PROXY_HOST


async def test_sighup_and_sigterm_as_a_process(served: tuple[Path, Path], echo: EchoVendor) -> None:
    log, tmp = served
    port = free_port()
    path = _write(tmp, _toml(tmp, port, [("echo", echo.origin)]))
    proc = _serve(path, log)
    try:
        wait_for(lambda: port_open(port) or proc.poll() is not None, 60, "the proxy to listen")
        assert proc.poll() is None, log.read_text()
        assert "open-files limit" in log.read_text()
        cfg = config_mod.load(path)
        from proxy.vendors import VendorMap, parse_absolute_url

        def proxied(origin: str) -> str:
            parsed = parse_absolute_url(origin)
            assert parsed is not None
            found = VendorMap(cfg.vendors, cfg.proxy.host, cfg.proxy.scheme).proxied_netloc(parsed.origin)
            assert found is not None
            return found

        host = proxied(echo.origin)
        assert await _status(port, host, "/echo") == 302  # not signed in: to the sign-in page
        # A broken file: `libproxy reload` refuses to signal; a bare SIGHUP is refused by the proxy.
        path.write_text("[proxy\n", encoding="utf-8")
        cli = subprocess.run([sys.executable, "-m", "proxy", "reload", "--config", str(path)], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        assert cli.returncode == 1 and "keeps its configuration" in cli.stderr
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload refused" in log.read_text(), 30, "the refusal in the log")
        assert proc.poll() is None and await _status(port, host, "/echo") == 302
        # A good file removes the vendor: `libproxy reload` signals, the vendor is gone.
        path.write_text(_toml(tmp, port, []), encoding="utf-8")
        cli = subprocess.run([sys.executable, "-m", "proxy", "reload", "--config", str(path)], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        assert cli.returncode == 0, cli.stderr
        wait_for(lambda: "configuration reloaded" in log.read_text(), 30, "the reload in the log")
        deadline = time.monotonic() + 20
        while await _status(port, host, "/echo") == 302 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert await _status(port, host, "/echo") != 302
        path.write_text(_toml(tmp, port, [("echo", echo.origin)]), encoding="utf-8")
        proc.send_signal(signal.SIGHUP)

        async def back() -> bool:
            return await _status(port, host, "/echo") == 302

        await until(back, what="the vendor to come back")

        # SIGTERM: a clean exit.
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 60)
        assert code == 0, log.read_text()
    finally:
        _stop(proc)


async def test_sigterm_lets_a_download_finish(served: tuple[Path, Path], echo: EchoVendor) -> None:
    """A patron's download in progress when SIGTERM arrives runs to its end; the exit is clean."""
    log, tmp = served
    port = free_port()
    path = _write(tmp, _toml(tmp, port, [("echo", echo.origin)], extra='[[network.library]]\nname = "here"\n'
                                                                    'cidrs = ["127.0.0.0/8"]\ngroups = ["wolcott"]\n'))
    proc = _serve(path, log)
    try:
        wait_for(lambda: port_open(port) or proc.poll() is not None, 60, "the proxy to listen")
        assert proc.poll() is None, log.read_text()
        cfg = config_mod.load(path)
        from proxy.vendors import VendorMap, parse_absolute_url

        parsed = parse_absolute_url(echo.origin)
        assert parsed is not None
        host = VendorMap(cfg.vendors, cfg.proxy.host, cfg.proxy.scheme).proxied_netloc(parsed.origin)
        assert host is not None
        async with aiohttp.ClientSession() as client:
            # In the library network: no sign-in; the vendor answers after 2 s.
            request = asyncio.ensure_future(client.get(f"http://127.0.0.1:{port}/slow?s=2",
                                                       headers={"Host": host}, allow_redirects=False))
            async def reached() -> bool:
                return any(r.path.startswith("/slow") for r in echo.received)

            await until(reached, what="the request to reach the vendor")
            proc.send_signal(signal.SIGTERM)
            wait_for(lambda: "SIGTERM: no new connections" in log.read_text(), 30, "the first SIGTERM")
            proc.send_signal(signal.SIGTERM)  # as systemd does to every process of a unit: ignored
            response = await request
            assert response.status == 200 and await response.text() == "late"
            response.release()
        code = await asyncio.to_thread(proc.wait, 60)
        assert code == 0, log.read_text()
        assert "Traceback" not in log.read_text()
    finally:
        _stop(proc)


def test_workers_refused_with_the_memory_store(served: tuple[Path, Path]) -> None:
    log, tmp = served
    path = _write(tmp, _toml(tmp, free_port(), []))
    proc = _serve(path, log, "--workers", "2")
    assert proc.wait(60) == 1
    assert 'store = "redis"' in log.read_text()


@pytest.mark.skipif(redis_server_path() is None, reason="redis-server is not installed")
async def test_two_workers_on_one_socket(served: tuple[Path, Path], echo: EchoVendor) -> None:
    log, tmp = served
    port, staff = free_port(), free_port()
    with redis_server() as url:
        path = _write(tmp, _toml(tmp, port, [("echo", echo.origin)], staff=staff, store=REDIS_STORE))
        proc = _serve(path, log, "--workers", "2", redis_url=url)
        try:
            wait_for(lambda: (port_open(port) and port_open(staff)) or proc.poll() is not None, 60,
                     "the workers to listen")
            assert proc.poll() is None, log.read_text()
            statuses = await asyncio.gather(*(_status(port, PROXY_HOST, "/healthz") for _ in range(40)))
            assert set(statuses) == {200}
            async with aiohttp.ClientSession() as client, client.get(f"http://127.0.0.1:{staff}/readyz") as r:
                assert r.status == 200
            wait_for(lambda: log.read_text().count("proxy ready") == 2, 60, "both workers to be ready")
            proc.send_signal(signal.SIGHUP)  # passed on to every worker
            wait_for(lambda: log.read_text().count("configuration reloaded") == 2, 60, "both workers to reload")
            # The whole process group at once, as systemd does: each worker gets it twice.
            workers = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            assert len(workers) == 2
            proc.send_signal(signal.SIGTERM)
            for pid in workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 60) == 0, log.read_text()
            assert "all workers stopped" in log.read_text()
            assert "Traceback" not in log.read_text()
        finally:
            _stop(proc)


def test_open_files_limit_raised_to_the_hard_limit() -> None:
    import resource

    from proxy.server import raise_open_files_limit

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
        now_soft, now_hard = raise_open_files_limit()
        assert now_hard == hard and now_soft == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert now_soft == hard or hard == resource.RLIM_INFINITY
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_out_of_descriptors_is_one_line_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    """What asyncio reports per failed accept() (a traceback each) becomes one line a minute."""
    import errno

    from proxy.server import quiet_accept_errors

    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    quiet_accept_errors(loop)
    try:
        with caplog.at_level("ERROR"):
            for _ in range(500):
                loop.call_exception_handler({"message": "socket.accept() out of system resource",
                                             "exception": OSError(errno.EMFILE, "Too many open files")})
        lines = [r for r in caplog.records if "out of file descriptors" in r.getMessage()]
        assert len(lines) == 1 and lines[0].exc_info is None
        assert not [r for r in caplog.records if r.exc_info]
    finally:
        loop.set_exception_handler(previous)


@pytest.mark.skipif(redis_server_path() is None, reason="redis-server is not installed")
async def test_one_instance_killed_the_other_carries_on(served: tuple[Path, Path], echo: EchoVendor) -> None:
    """Two proxy processes on one Redis: a patron signed in on one; that one is SIGKILLed (no
    clean shutdown at all); the other serves the same browser, same session, at once."""
    from tests.support import RunningProxy

    log, tmp = served
    with redis_server() as url:
        os.environ["LIBPROXY_TEST_REDIS"] = url
        procs: list[subprocess.Popen[bytes]] = []
        try:
            ports = [free_port(), free_port()]
            configs = []
            for index, port in enumerate(ports):
                folder = tmp / f"instance-{index}"
                folder.mkdir()
                write_patrons(folder / "patrons.toml")
                text = _toml(folder, port, [("echo", echo.origin)], store=REDIS_STORE)
                path = folder / "proxy.toml"
                path.write_text(text.replace("[proxy]", '[proxy]\nsecret = "env:LIBPROXY_TEST_SECRET"'),
                                encoding="utf-8")
                os.environ["LIBPROXY_TEST_SECRET"] = "t" * 48  # the same keyed-hash secret on both
                configs.append(config_mod.load(path))
                procs.append(_serve(path, log))
            for port, proc in zip(ports, procs, strict=True):
                wait_for(lambda p=port, pr=proc: port_open(p) or pr.poll() is not None, 60, "both to listen")
                assert proc.poll() is None, log.read_text()
        finally:
            os.environ.pop("LIBPROXY_TEST_REDIS", None)
            os.environ.pop("LIBPROXY_TEST_SECRET", None)
        try:
            first = RunningProxy(configs[0], ports[0], None, None)  # type: ignore[arg-type]
            second = RunningProxy(configs[1], ports[1], None, None)  # type: ignore[arg-type]
            a, b = Browser(first), Browser(second)
            try:
                assert (await a.sign_in("1000", "1111", f"{echo.origin}/echo")).status == 200
                host = _proxied_host(configs[0], echo.origin)
                procs[0].kill()  # SIGKILL: no goodbye
                procs[0].wait(30)
                b.cookies = a.cookies
                reply = await b.get(f"http://{host}/echo", follow=False)
                assert reply.status == 200
            finally:
                await a.close()
                await b.close()
        finally:
            for proc in procs:
                _stop(proc)


def _proxied_host(cfg: config_mod.Config, origin: str) -> str:
    from proxy.vendors import VendorMap, parse_absolute_url

    parsed = parse_absolute_url(origin)
    assert parsed is not None
    found = VendorMap(cfg.vendors, cfg.proxy.host, cfg.proxy.scheme).proxied_netloc(parsed.origin)
    assert found is not None
    return found


def _requests_total(text: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("libproxy_requests_total{"))


def _pids_that_counted(folder: Path) -> set[str]:
    # A worker's counter file appears with its first counted request (every counter is
    # labelled, so none exists before): which workers have answered, without asking them.
    return {p.stem.rsplit("_", 1)[1] for p in folder.glob("counter_*.db")}


@pytest.mark.skipif(redis_server_path() is None, reason="redis-server is not installed")
async def test_metrics_are_the_sum_over_workers(served: tuple[Path, Path], echo: EchoVendor) -> None:
    """``serve --workers 2``: /metrics (answered by the first worker) counts the requests every
    worker answered, still counts those of a worker that died, and says nothing of anyone."""
    log, tmp = served
    port, staff = free_port(), free_port()
    marker = "privacy-marker-path-77c1"
    with redis_server() as url:
        path = _write(tmp, _toml(tmp, port, [("echo", echo.origin)], staff=staff, store=REDIS_STORE))
        proc = _serve(path, log, "--workers", "2", redis_url=url)
        from proxy.server import metrics_dir_name

        folder = tmp / "state" / "metrics" / metrics_dir_name(proc.pid)
        try:
            wait_for(lambda: (port_open(port) and port_open(staff)) or proc.poll() is not None, 60,
                     "the workers to listen")
            assert proc.poll() is None, log.read_text()
            wait_for(lambda: log.read_text().count("proxy ready") == 2, 60, "both workers to be ready")
            sent = 0

            async def batch(count: int) -> None:
                # A connection each, so the kernel hands them to either worker.
                nonlocal sent
                statuses = await asyncio.gather(*(_status(port, PROXY_HOST, f"/{marker}?q={marker}" if i == 0
                                                          else "/healthz") for i in range(count)))
                sent += count
                assert set(statuses) <= {200, 404}, statuses

            async def both_answered() -> bool:
                await batch(10)
                return len(_pids_that_counted(folder)) == 2

            await until(both_answered, 60, "both workers to answer some requests")

            async def scrape() -> str:
                async with aiohttp.ClientSession() as client, client.get(f"http://127.0.0.1:{staff}/metrics") as r:
                    assert r.status == 200
                    return await r.text()

            text = await scrape()
            assert _requests_total(text) == sent, text
            assert 'libproxy_requests_total{outcome="ok",vendor="-"}' in text
            # No address, path or query; no worker named (a pid as a label value: as a bare number it
            # could be digits of a latency sum).
            for secret in (marker, "127.0.0.1", "pid=", *(f'"{pid}"' for pid in _pids_that_counted(folder))):
                assert secret not in text, secret

            # (A worker once failed at start here: its staff port had been taken by an outgoing connection.)
            assert "exited unexpectedly" not in (text := log.read_text()), text
            # A worker dies and is started again: its requests still count, its gauges no more.
            workers = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            victim = next(pid for pid in workers if pid in _pids_that_counted(folder))
            os.kill(int(victim), signal.SIGKILL)
            wait_for(lambda: "exited unexpectedly" in log.read_text(), 30, "the parent to see the worker die")
            assert not list(folder.glob(f"gauge_live*_{victim}.db"))
            assert list(folder.glob(f"counter_{victim}.db"))
            wait_for(lambda: log.read_text().count("proxy ready") == 3 and port_open(staff), 60,
                     "the worker to be started again")
            await batch(10)
            scraped = ""

            async def all_counted() -> bool:
                nonlocal scraped
                with contextlib.suppress(aiohttp.ClientError):
                    scraped = await scrape()
                return _requests_total(scraped) == sent

            await until(all_counted, 30, f"{sent} requests in the scrape")
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 60) == 0, log.read_text()
            assert not folder.exists()  # nothing of the run's figures is left behind
            assert "Traceback" not in log.read_text()
        finally:
            _stop(proc)


async def test_a_reload_in_a_frozen_process_freezes_the_new_configuration_and_frees_the_old(
        tmp_path: Path, echo: EchoVendor) -> None:
    """``serve`` freezes what exists once started (server.install). A reload thaws, collects and
    freezes again: the new routes are out of the full collections' way like the old ones were,
    and the replaced ones do not stay frozen (uncollectable when in a reference cycle)."""
    import gc
    import weakref

    def frozen(obj: object) -> bool:
        # gc.get_objects() lists the three generations, not the permanent (frozen) one.
        return gc.is_tracked(obj) and not any(o is obj for o in gc.get_objects())

    path = _write(tmp_path, _toml(tmp_path, 8080, [("echo", echo.origin)]))
    async with run_proxy(config_mod.load(path)) as proxy:
        gc.collect()
        gc.freeze()  # as serve's on_startup does; undone below whatever happens
        try:
            assert frozen(proxy.app[ROUTES])
            assert await reload_app(proxy.app, path)
            assert gc.get_freeze_count() > 0 and frozen(proxy.app[ROUTES])
            # The routes of that reload, in a reference cycle (as any object of the configuration
            # could be), must be collected once a later reload replaces them.
            routes = proxy.app[ROUTES]
            routes.cycle = routes  # type: ignore[attr-defined]
            replaced = weakref.ref(routes)
            del routes
            assert await reload_app(proxy.app, path)
            assert replaced() is None, "the replaced routes are still frozen"
            assert gc.get_freeze_count() > 0 and frozen(proxy.app[ROUTES])
        finally:
            gc.unfreeze()


def test_metrics_directories_of_two_containers_on_one_volume_stay_apart(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Two containers sharing one state_dir both run as pid 1: each has its own metrics
    directory (host name and pid), and one starting does not remove the other's. Only this
    host's directories of runs that are gone are cleaned up."""
    import socket

    from proxy.server import fresh_metrics_dir, metrics_dir_name

    base = tmp_path / "metrics"
    monkeypatch.setattr(socket, "gethostname", lambda: "container-a")
    first = fresh_metrics_dir(tmp_path)
    (first / "counter_7.db").write_bytes(b"live figures")
    monkeypatch.setattr(socket, "gethostname", lambda: "container b/odd")  # same pid, other host
    second = fresh_metrics_dir(tmp_path)
    assert first != second and second.parent == base and second.name == f"container_b_odd-{os.getpid()}"
    assert (first / "counter_7.db").read_bytes() == b"live figures"

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(30)
    dead, alive = gone.pid, os.getppid()
    for name in (metrics_dir_name(dead), metrics_dir_name(alive), f"container-a-{dead}", "12345"):
        (base / name).mkdir()
    again = fresh_metrics_dir(tmp_path)  # this host ("container b/odd") starting again
    assert again == second and not list(again.iterdir())
    left = {p.name for p in base.iterdir()}
    assert metrics_dir_name(dead) not in left  # this host's, its run gone: removed
    # This host's live run, another host's directories (dead pid or not: not ours to judge) and
    # one named by a pid alone (an older version, perhaps running elsewhere) are left alone.
    assert {metrics_dir_name(alive), f"container-a-{dead}", first.name, "12345", second.name} == left


@pytest.mark.skipif(redis_server_path() is None, reason="redis-server is not installed")
def test_workers_do_not_start_when_the_staff_port_is_taken(served: tuple[Path, Path], echo: EchoVendor) -> None:
    """The parent binds the staff port before forking: a taken port stops the start with one line
    (it used to leave the first worker failing and being started again for ever)."""
    import socket

    log, tmp = served
    port, staff = free_port(), free_port()
    with redis_server() as url, socket.socket() as taken:
        taken.bind(("127.0.0.1", staff))
        taken.listen()
        path = _write(tmp, _toml(tmp, port, [("echo", echo.origin)], staff=staff, store=REDIS_STORE))
        proc = _serve(path, log, "--workers", "2", redis_url=url)
        try:
            code = proc.wait(60)
        finally:
            _stop(proc)
        text = log.read_text()
        assert code == 1, text
        assert "cannot listen" in text and "Traceback" not in text and "exited unexpectedly" not in text, text
        assert not port_open(port), "the proxy's own port must be closed again"
