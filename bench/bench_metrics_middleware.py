"""Micro-benchmark: what the metrics cost per request, around a trivial handler (not a test).

    python bench/bench_metrics_middleware.py [--calls 200000] [--rounds 5] [--shared]

Measured by driving each coroutine by hand (``coro.send(None)``): the handler never suspends,
so no event loop runs and what is timed is the middleware's own work. Reported in nanoseconds
per request, medians over interleaved rounds:

* ``bare``: the inner middleware (a stand-in for ``proxy_middleware``) and the handler alone;
* ``measured``: the same inside ``metrics.measured``, the vendor found from the Host header;
* ``measured+key``: the inner middleware stores the vendor label on the request (as
  ``app.serve`` would) and ``measured`` reads it instead of resolving the host again;
* ``hold``/``measured hold``: entering and leaving a free per-vendor-host slot, plain and with
  the metrics' wait timing wired in.

``--shared`` runs it all a second time with the figures written to per-process files (what
``serve --workers N`` does), to show what the multiprocess mode adds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from proxy import config as config_mod
from proxy import context, metrics
from proxy.app import build_routes

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Transport:
    """Just enough of a transport for ``measured``: an open connection."""

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def _drive(coro: Coroutine[Any, Any, Any]) -> None:
    try:
        coro.send(None)
    except StopIteration:
        return
    raise RuntimeError("the benchmarked coroutine suspended")


def _app(tmp: Path) -> tuple[web.Application, str]:
    vendor = {"id": "echo", "title": "E", "start": "http://127.0.0.1:9/", "hosts": ["http://127.0.0.1:9"],
              "groups": ["wolcott"]}
    cfg = config_mod.from_dict({
        "proxy": {"listen": "127.0.0.1:8080", "host": "proxy.localhost:8080", "state_dir": str(tmp / "state")},
        "library": {"id": "wolcott.lib.ct.us", "name": "Wolcott Public Library"},
        "patrons": {"source": "local", "file": str(tmp / "patrons.toml")},
        "admin": {"listen": ""}, "vendor": [vendor]}, base=tmp)
    routes = build_routes(cfg, context.Site.from_config(cfg))
    app = web.Application()
    app[metrics.METRICS] = metrics.Metrics()
    app[context.ROUTES] = routes
    host = routes.vendors.proxied_netloc(next(iter(routes.vendors.vendors[0].origins)))
    assert host is not None
    return app, host


def _cases(app: web.Application, host: str) -> dict[str, Callable[[], None]]:
    request = make_mocked_request("GET", "/page", headers={"Host": host}, app=app,
                                  transport=_Transport())  # type: ignore[arg-type]
    answer = web.Response(text="ok")
    label_key = getattr(metrics, "VENDOR", None)

    async def handler(request: web.Request) -> web.StreamResponse:
        return answer

    @web.middleware
    async def inner(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await handler(request)

    @web.middleware
    async def inner_with_key(request: web.Request, handler: Handler) -> web.StreamResponse:
        request[label_key] = "echo"
        return await handler(request)

    outer = metrics.measured(inner)
    cases: dict[str, Callable[[], None]] = {
        "bare": lambda: _drive(inner(request, handler)),
        "measured": lambda: _drive(outer(request, handler)),
    }
    if label_key is not None:
        outer_key = metrics.measured(inner_with_key)

        def with_key() -> None:
            _drive(outer_key(request, handler))
            del request[label_key]  # the next round finds a fresh request, as in the proxy

        cases["measured+key"] = with_key
    from proxy.forward.limits import Slots

    plain = Slots(6, 1.0)
    measured_slots = metrics.MeasuredSlots(6, 1.0, app[metrics.METRICS], app)

    async def hold(slots: Slots) -> None:
        async with slots.hold("127.0.0.1:9"):
            pass

    cases["hold"] = lambda: _drive(hold(plain))
    cases["measured hold"] = lambda: _drive(hold(measured_slots))
    return cases


def _time(fn: Callable[[], None], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e9


def _run(label: str, calls: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        app, host = _app(Path(tmp))
        cases = _cases(app, host)
        for fn in cases.values():
            _time(fn, calls // 10)  # warm the caches and the labelled children
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(rounds):
            for name, fn in cases.items():
                samples[name].append(_time(fn, calls))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    print(f"-- {label}")
    for name, value in medians.items():
        extra = ""
        if name.startswith("measured") and "hold" not in name:
            extra = f"   metrics' own cost {value - medians['bare']:6.0f} ns"
        elif name == "measured hold":
            extra = f"   over a plain hold {value - medians['hold']:6.0f} ns"
        print(f"{name:>14}: {value:7.0f} ns/request{extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--shared", action="store_true", help="also with per-process files (workers)")
    args = parser.parse_args()
    asyncio.set_event_loop(asyncio.new_event_loop())  # Slots' semaphores want one to exist
    _run("one process, private registry", args.calls, args.rounds)
    share = getattr(metrics, "share_between_workers", None)
    if args.shared and share is not None:
        with tempfile.TemporaryDirectory() as shared_dir:
            share(Path(shared_dir))
            _run("workers: figures in per-process files", args.calls, args.rounds)


if __name__ == "__main__":
    main()
