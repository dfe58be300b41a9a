"""Running the proxy as a service: signals, live reload, clean shutdown, the machine's limits,
and several worker processes on one listening socket.

* **SIGHUP** (or ``libproxy reload``, which signals the pid written to ``state_dir``): the file is
  read and checked again. A broken file is refused with every problem logged, and the running
  configuration stays. A good one swaps in whole what can change live (vendor routes, library
  networks and trusted proxies, connection shares, group names, privacy options): sessions,
  connections and requests in flight are untouched (they keep the routes they started with).
  Parts that hold open resources (listeners, session store, patron directory, keys, records,
  logging) are named in the log as waiting for a restart.
* **SIGTERM**: stop accepting, let answers in progress (downloads) run up to ``[proxy]
  shutdown_deadline``, close (statistics flushed), exit 0.
* **Open files**: the soft limit is raised to the hard limit at start, and said so; when accept()
  fails for lack of descriptors, one line a minute instead of a traceback per attempt.
* **Workers** (``serve --workers N|auto``): the parent binds the socket once and forks N
  processes that accept on it; only the first runs the staff listener (on a socket the parent
  bound too, so a taken port stops the start and a restarted first worker loses no connection). The parent forwards
  SIGTERM and SIGHUP, restarts a worker that dies, and exits when they have all stopped. The
  workers' metrics are written to ``state_dir/metrics/<host name>-<parent pid>/`` (made empty at
  start, removed at the end), so the staff listener's ``/metrics`` is the sum over all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import re
import resource
import shutil
import signal
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiohttp import web

from proxy import config as config_mod
from proxy import context
from proxy.errors import ConfigError
from proxy.ratelog import RateLimitedLog
from proxy.web.bad_requests import BadRequestAppRunner, quiet_parser_errors

log = logging.getLogger("libproxy")

PID_FILE = "libproxy.pid"
# Sections whose objects were opened at start (listeners, stores, clients, files): a change is
# reported and waits for a restart; everything else is swapped in live.
RESTART_ONLY = ("proxy", "library", "patrons", "sessions", "assertion", "logging", "records", "admin")


# -- live reload ------------------------------------------------------------------------------------


def _set(app: web.Application, key: web.AppKey[Any], value: Any) -> None:
    # aiohttp warns on changing a started application's state: a reload is exactly the case
    # where one part is replaced whole, read by each request once, at its start.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        app[key] = value


def reconfigure(app: web.Application, new: config_mod.Config) -> list[str]:
    """Swap in the live parts of ``new``; returns the sections that wait for a restart."""
    from proxy.app import build_routes, make_clients
    from proxy.records.observer import UsageObserver

    old = app[context.CONFIG]
    waiting = [name for name in RESTART_ONLY if getattr(old, name) != getattr(new, name)]
    upstream_live = ("per_client", "limit_per_host", "queue_wait")
    if any(getattr(old.upstream, f) != getattr(new.upstream, f) for f in old.upstream.__dataclass_fields__
           if f not in upstream_live):
        waiting.append("upstream (timeouts, pool size, hosts, user_agent)")
    # Restart-only sections keep their running values, so what the pages show stays true.
    applied = replace(new, **{name: getattr(old, name) for name in RESTART_ONLY})
    applied = replace(applied, upstream=replace(old.upstream, **{f: getattr(new.upstream, f) for f in upstream_live}))
    routes = build_routes(applied, app[context.SITE])
    forwarder = app[context.FORWARDER]
    patterns = {v.id: v.counter for v in routes.vendors.vendors}
    forwarder.observers = tuple(UsageObserver(o.records, patterns) if isinstance(o, UsageObserver) else o
                                for o in forwarder.observers)
    up = applied.upstream
    # Requests holding a slot release it on the old object; new ones share the new one.
    if (up.per_client, up.queue_wait) != (forwarder.per_client.limit, forwarder.per_client.wait):
        forwarder.per_client = forwarder.per_client.resized(up.per_client, up.queue_wait)
    share = config_mod.library_share(up)
    if (share, up.queue_wait) != (forwarder.per_library.limit, forwarder.per_library.wait):
        forwarder.per_library = forwarder.per_library.resized(share, up.queue_wait)
    if (up.limit_per_host, up.queue_wait) != (forwarder.per_host.limit, forwarder.per_host.wait):
        forwarder.per_host = forwarder.per_host.resized(up.limit_per_host, up.queue_wait)
    _set(app, context.CLIENTS, make_clients(applied))
    _set(app, context.ROUTES, routes)
    _set(app, context.CONFIG, applied)
    return waiting


async def reload_app(app: web.Application, path: str | Path) -> bool:
    """Re-read ``path``; apply it when valid. Never raises: a reload must not stop the proxy."""
    try:
        new = await asyncio.to_thread(config_mod.load, path)
    except ConfigError as exc:
        log.error("reload refused: %s has %d problem(s); the running configuration stays", path,
                  len(exc.problems))
        for problem in exc.problems:
            log.error("  - %s", problem)
        return False
    try:
        waiting = reconfigure(app, new)
    except Exception:
        log.exception("reload failed while applying; the running configuration stays")
        return False
    if gc.get_freeze_count() > 0:
        # serve froze everything at start (install). Left so, the replaced configuration's
        # objects stay frozen (any in a reference cycle never collected), and the new one, made
        # after the freeze, is walked by every full collection again (the p99 cost the freeze
        # removed). Thawed, collected, and what lives on frozen again: one full collection per
        # reload. Old objects still held by a request in flight are frozen again with the rest,
        # until the next reload. A process that never froze (tests, other tools) is left alone.
        gc.unfreeze()
        gc.collect()
        gc.freeze()
    log.info("configuration reloaded: %d vendors", len(new.vendors))
    for name in waiting:
        log.warning("reload: changes to [%s] take effect at the next restart", name)
    return True


# -- signals, pid file, limits ----------------------------------------------------------------------


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns (soft, hard) now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft, hard


_DESCRIPTOR_ERRNOS = {24, 23, 105, 12}  # EMFILE, ENFILE, ENOBUFS, ENOMEM


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Turn the event loop's traceback per failed accept() into one line a minute."""
    limited = RateLimitedLog(log, 60.0)
    default = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, ctx: dict[str, Any]) -> None:
        exc = ctx.get("exception")
        if isinstance(exc, OSError) and exc.errno in _DESCRIPTOR_ERRNOS and "accept" in str(ctx.get("message", "")):
            soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
            limited.error("cannot accept new connections: out of file descriptors (%s; open-files limit %d): "
                          "raise LimitNOFILE / ulimit -n, or add workers or instances", exc.strerror, soft)
            return
        if default is not None:
            default(loop, ctx)
        else:
            loop.default_exception_handler(ctx)

    loop.set_exception_handler(handler)


def write_pid(state_dir: Path) -> Path:
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / PID_FILE
    path.write_text(f"{os.getpid()}\n", encoding="ascii")
    return path


def signal_reload(state_dir: Path) -> str:
    """``libproxy reload``: SIGHUP to the pid in ``state_dir``; returns what happened, in words."""
    path = state_dir / PID_FILE
    try:
        pid = int(path.read_text(encoding="ascii").strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"no running proxy found through {path} ({exc})") from None
    return f"asked the proxy (pid {pid}) to reload its configuration"


def install(app: web.Application, config_path: str | Path | None) -> None:
    """Service behaviour for ``serve``: SIGHUP reloads, accept errors are rate-limited, and the
    pid is written for ``libproxy reload`` (by the process that owns the listener)."""

    async def on_startup(app: web.Application) -> None:
        loop = asyncio.get_running_loop()
        quiet_accept_errors(loop)
        if config_path is not None:
            tasks: set[asyncio.Task[bool]] = set()

            def hup() -> None:
                log.info("SIGHUP: reloading the configuration")
                task = loop.create_task(reload_app(app, config_path))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

            loop.add_signal_handler(signal.SIGHUP, hup)
        stopping = False

        def term() -> None:
            # aiohttp stops on the first SIGTERM by raising GracefulExit out of the loop; a second
            # one (systemd signals every process of the unit, and the parent of workers passes its
            # own on) would raise again in the middle of the shutdown and cut the downloads short.
            nonlocal stopping
            if stopping:
                log.info("SIGTERM again: already stopping")
                return
            stopping = True
            log.info("SIGTERM: no new connections; answers in progress have %.0f s",
                     app[context.CONFIG].proxy.shutdown_deadline)
            raise web.GracefulExit()

        loop.add_signal_handler(signal.SIGTERM, term)
        # What exists now (modules, the configuration, the application's parts; the lifecycle
        # ran first) lives as long as the process: frozen out of the collector's sight, so a
        # full collection no longer walks it. Each one took 15-20 ms, which every answer in
        # flight waited for: most of the p99 at 50 connections (docs/operations.md).
        gc.collect()
        gc.freeze()

    app.on_startup.append(on_startup)


# -- running ----------------------------------------------------------------------------------------


def make_loop(choice: str) -> asyncio.AbstractEventLoop:
    """asyncio's own loop, or uvloop when chosen (or "auto" and installed)."""
    if choice in ("uvloop", "auto"):
        try:
            import uvloop

            return uvloop.new_event_loop()
        except ImportError:
            if choice == "uvloop":
                raise SystemExit("--loop uvloop: uvloop is not installed (pip install \"libproxy[fast]\")") from None
    return asyncio.new_event_loop()


def run_one(make_app: Callable[[], web.Application], cfg: config_mod.Config, *, sock: socket.socket | None,
            loop_choice: str, ssl_context: Any) -> None:
    """Run one process's application until SIGTERM/SIGINT; statistics are flushed on the way out."""
    loop = make_loop(loop_choice)
    asyncio.set_event_loop(loop)
    log.info("event loop: %s", "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio")
    app = make_app()
    # access_log=None: aiohttp's default access log records the client address, the request
    # line (path and query) and the Referer: exactly what the privacy policy forbids keeping.
    # SECURITY: BadRequestAppRunner: a request aiohttp's parser refuses gets a generic answer and
    # one rate-limited line, instead of its own bytes (a session cookie) echoed and logged.
    # And any other listener of the process left with aiohttp's answer (the staff console's):
    # its log record becomes the same line.
    quiet_parser_errors()
    runner = BadRequestAppRunner(app, handle_signals=True, access_log=None,
                                 shutdown_timeout=cfg.proxy.shutdown_deadline,
                                 keepalive_timeout=cfg.proxy.keepalive)
    serve_forever(loop, runner, ssl_context=ssl_context, sock=sock, host=cfg.proxy.listen_host,
                  port=cfg.proxy.listen_port)


def serve_forever(loop: asyncio.AbstractEventLoop, runner: web.AppRunner, *, ssl_context: Any,
                  sock: socket.socket | None, host: str, port: int, backlog: int = 1024) -> None:
    """What ``web.run_app`` does, with the runner given (``run_app`` makes its own, aiohttp's):
    serve on ``sock`` (or ``host:port``) until SIGTERM/SIGINT (``GracefulExit``), then clean up
    (connections closed after the runner's ``shutdown_timeout``), cancel what is left, close the
    loop."""

    async def serve() -> None:
        await runner.setup()
        try:
            site: web.BaseSite
            if sock is not None:
                site = web.SockSite(runner, sock, ssl_context=ssl_context, backlog=backlog)
            else:
                site = web.TCPSite(runner, host, port, ssl_context=ssl_context, backlog=backlog)
            await site.start()
            await asyncio.Event().wait()  # until GracefulExit or KeyboardInterrupt stops the loop
        finally:
            await runner.cleanup()

    main = loop.create_task(serve())
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        try:
            if not main.done():
                main.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    loop.run_until_complete(main)
        finally:
            _cancel_all(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel the tasks still pending at the end (as ``asyncio.run`` and ``web.run_app`` do)."""
    tasks = asyncio.all_tasks(loop)
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler({"message": "unhandled exception during shutdown",
                                         "exception": task.exception(), "task": task})


def worker_count(text: str) -> int:
    if text == "auto":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    count = int(text)
    if not 1 <= count <= 256:
        raise ValueError("between 1 and 256")
    return count


def bind(host: str, port: int) -> socket.socket:
    """A listening socket the workers inherit (an OSError when the port is taken)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def bind_staff(cfg: config_mod.Config) -> socket.socket | None:
    """The staff listener's socket, bound by the parent of several workers: a port already taken
    stops the start with one clear line, instead of the first worker failing and being started
    again forever; and while that worker is restarted the port stays open (connections wait in
    the backlog instead of being refused)."""
    if not cfg.admin.listen:
        return None
    from proxy.web.admin import split_listen

    return bind(*split_listen(cfg.admin.listen))


METRICS_DIR = "metrics"


def metrics_dir_name(pid: int | None = None) -> str:
    """``<host name>-<pid>``: the name of a run's metrics directory (the parent's pid).

    The pid alone is not enough: containers sharing one ``state_dir`` volume each have their
    own pid 1. Characters other than letters, digits, dots and dashes become ``_``.
    """
    return f"{_host_label()}-{os.getpid() if pid is None else pid}"


def _host_label() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())[:64] or "host"


def fresh_metrics_dir(state_dir: Path) -> Path:
    """An empty directory for this run's metrics files, ``state_dir/metrics/<host>-<pid>``.

    Figures left by an earlier run must not be added to this one's, so the directory starts
    empty; those of runs on this host whose parent is gone are removed (a run killed without
    its cleanup), those of a run still going are left alone. Directories of other hosts (other
    containers or machines on the same state_dir) are never touched: their pids mean nothing
    here. (Nor those named by a pid alone, from versions before the host name: such a run may
    still be going elsewhere.)
    """
    base = state_dir / METRICS_DIR
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    prefix = f"{_host_label()}-"
    for entry in base.iterdir():
        pid = entry.name[len(prefix):]
        if entry.name.startswith(prefix) and pid.isdigit() and (int(pid) == os.getpid() or not _alive(int(pid))):
            shutil.rmtree(entry, ignore_errors=True)
    directory = base / metrics_dir_name()
    directory.mkdir(mode=0o700)
    return directory


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def run_workers(make_app: Callable[[config_mod.Config], web.Application], cfg: config_mod.Config, count: int, *,
                loop_choice: str, ssl_context: Any) -> int:
    """The parent of ``count`` workers accepting on one socket; returns the exit status."""
    sock = bind(cfg.proxy.listen_host, cfg.proxy.listen_port)
    try:
        staff_sock = bind_staff(cfg)
    except OSError:
        sock.close()
        raise
    write_pid(cfg.proxy.state_dir)
    # The state directory's secret and key file made once, here, not raced for by every worker.
    from proxy.assertion import load_or_create_keys
    from proxy.shared import load_secret

    load_secret(cfg)
    load_or_create_keys(cfg.assertion.key_file, cfg.assertion.algorithm)
    from proxy import metrics

    # Before the first fork: every worker inherits where to write its figures.
    shared = fresh_metrics_dir(cfg.proxy.state_dir)
    metrics.share_between_workers(shared)
    children: dict[int, int] = {}  # pid -> worker number
    stopping = False

    def spawn(number: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            status = 0
            try:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
                    signal.signal(sig, signal.SIG_DFL)
                # The staff listener (and its port) in the first worker only.
                own = cfg if number == 0 else replace(cfg, admin=replace(cfg.admin, listen=None))
                if staff_sock is not None and number != 0:
                    staff_sock.close()

                def build() -> web.Application:
                    app = make_app(own)
                    if staff_sock is not None and number == 0:
                        app[context.ADMIN_SOCKET] = staff_sock
                    return app

                run_one(build, own, sock=sock, loop_choice=loop_choice, ssl_context=ssl_context)
            except (web.GracefulExit, KeyboardInterrupt):
                pass  # a signal during the shutdown itself: still a normal stop
            except BaseException:  # a worker must never return into the parent's code
                log.exception("worker %d stopped with an error", number)
                status = 1
            finally:
                logging.shutdown()
                os._exit(status)
        children[pid] = number

    def forward(sig: int, _frame: object) -> None:
        nonlocal stopping
        if sig in (signal.SIGTERM, signal.SIGINT):
            stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM if sig == signal.SIGINT else sig)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    log.info("starting %d workers on %s:%d", count, cfg.proxy.listen_host, cfg.proxy.listen_port)
    for number in range(count):
        spawn(number)
    failures = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid not in children:
            continue
        number = children.pop(pid)
        metrics.worker_gone(pid)
        code = os.waitstatus_to_exitcode(status)
        if not stopping:
            failures += 1
            log.error("worker %d exited unexpectedly (status %d): starting it again", number, code)
            time.sleep(min(5.0, 0.2 * failures))  # a worker that dies at once must not spin
            spawn(number)
    sock.close()
    if staff_sock is not None:
        staff_sock.close()
    shutil.rmtree(shared, ignore_errors=True)
    log.info("all workers stopped")
    return 0


def refuse_workers(cfg: config_mod.Config, count: int) -> str | None:
    """Why ``count`` workers cannot run with this configuration, or None."""
    if count > 1 and cfg.sessions.store != "redis":
        return (f"--workers {count} needs sessions every worker can see: with [sessions] store = "
                f"\"{cfg.sessions.store}\" each worker would have its own, and patrons would be signed out at "
                "random. Set [sessions] store = \"redis\" (and redis_url), or run one worker.")
    return None


def start_message(soft: int, hard: int) -> str:
    return f"open-files limit {soft} (hard limit {hard})" + (
        "" if soft >= 4096 else ": low for a proxy; each patron connection and each vendor connection takes one")

