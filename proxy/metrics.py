"""Prometheus metrics and readiness for IT's monitoring, served on the staff listener only.

Every label value comes from a short fixed list or from the configuration (vendor ids): never a
patron identifier, an address, a host name from a request, a path or a query. So a scrape can
be kept for as long as IT likes without becoming a record of anyone's reading.

    libproxy_requests_total{vendor,outcome}        every request ("-": the proxy's own pages,
    libproxy_request_seconds{vendor,outcome}        "unconfigured": hosts nobody configured)
    libproxy_upstream_errors_total{vendor,kind}    a vendor timed out or could not be reached
    libproxy_pool_wait_seconds{vendor}             waits for a connection to a vendor (requests
                                                    that found one free at once are not in it)
    libproxy_pool_turned_away_total{vendor}        ... that ended with the "busy" page
    libproxy_signins_total{outcome}                succeeded, failed, locked, unavailable, refused
    libproxy_vendor_bytes_total{vendor}            body bytes relayed from vendors (rewritten or not)
    libproxy_rewritten_bytes_total{vendor}         ... of bodies that went through the rewriter
    libproxy_cancelled_total{vendor}               patrons who went away mid-answer (a cancelled
                                                    download): counted, not an error
    libproxy_sessions                              live sessions (counted by the store, not scanned)
    libproxy_ready{part}                           1 when directory, store and keys are ready
    libproxy_session_store_errors                  failed calls to the session store since start

A private registry per application: two proxies in one process (the tests) never mix figures.

With ``serve --workers N`` every worker counts its own requests; a scrape, answered by the first
worker (the staff listener's), must show the sum. The parent of the workers calls
``share_between_workers`` before forking: from then on every process writes its figures to its
own files in a directory of that run (prometheus-client's multiprocess mode), and ``/metrics``
sums the files of every worker, dead ones' counters included (their requests happened). The
gauges are set by the worker answering the scrape; those of a dead worker are dropped
(``worker_gone``). One process (and the tests) never share: private registries as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess, values
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric

from proxy import context
from proxy.forward.hooks import Exchange
from proxy.forward.limits import OnWait, Slots

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Buckets from a cached asset (1 ms) to a slow PDF (a minute).
_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_OWN, _UNKNOWN = "-", "unconfigured"
OWN_PAGES = _OWN  # the label of the proxy's own pages (its own host)
# The request's vendor label, for the main middleware to set once it has found the host's route
# (a vendor id, or OWN_PAGES): the figures then need not look the host up a second time. Absent
# (an unconfigured host, a request refused before its host was read), the Host header decides.
VENDOR = web.RequestKey("libproxy.vendor", str)
READY_TIMEOUT = 2.0


def outcome_of(status: int) -> str:
    """A request's outcome from its status: a fixed, short list of label values."""
    if status < 300:
        return "ok"
    if status < 400:
        return "redirect"
    special = {429: "limited", 502: "vendor-unreachable", 503: "unavailable", 504: "vendor-timeout"}
    if status in special:
        return special[status]
    return "refused" if status < 500 else "error"


_SIGN_IN = {302: "succeeded", 303: "succeeded", 401: "failed", 429: "locked", 503: "unavailable"}

# The directory every worker of this run writes its figures to; None: a process of its own.
# Set in the parent before it forks, so each worker inherits it.
_shared_dir: str | None = None
# prometheus-client asks for the process id on every increment, to notice a fork; os.getpid() is
# a system call each time, so the id is kept here and refreshed in a forked child instead.
_pid = os.getpid()


def _refresh_pid() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_refresh_pid)


def _process_id() -> int:
    return _pid


def share_between_workers(directory: Path) -> None:
    """From now on, figures go to per-process files in ``directory`` (which must exist, empty).

    For the parent of ``serve --workers``, before the first fork and before any ``Metrics``: a
    metric's storage is chosen when it is made. prometheus-client chooses it once, when first
    imported, from PROMETHEUS_MULTIPROC_DIR; the command line has imported it long before it
    knows there will be workers, so the choice is made again here (the metrics read
    ``values.ValueClass`` when each is made). The variable is set too, for the parts of
    prometheus-client that look at it.
    """
    global _shared_dir
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    values.ValueClass = values.MultiProcessValue(_process_id)  # type: ignore[no-untyped-call]
    _shared_dir = str(directory)


class _WorkerFiles(multiprocess.MultiProcessCollector):
    """The sum of every worker's files, leaving out a file another worker is just making.

    prometheus-client creates a file empty and then sizes it: read in between, it has not even
    its header, and the whole scrape would fail. Its figures are zero then anyway.
    """

    def collect(self) -> Iterable[Metric]:
        folder = Path(self._path)
        files = []
        for path in folder.glob("*.db"):
            with contextlib.suppress(FileNotFoundError):  # a dead worker's gauges, just removed
                if path.stat().st_size >= _HEADER:
                    files.append(str(path))
        found: Iterable[Metric] = self.merge(files, accumulate=True)  # type: ignore[no-untyped-call]
        return found


_HEADER = 8  # bytes of a metrics file's header (its used length, then padding)


def worker_gone(pid: int) -> None:
    """A worker has exited: its gauges no longer count (its counters still do)."""
    if _shared_dir is not None:
        multiprocess.mark_process_dead(pid, _shared_dir)  # type: ignore[no-untyped-call]


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("libproxy_requests", "Requests by vendor and outcome", ["vendor", "outcome"],
                                registry=registry)
        self.latency = Histogram("libproxy_request_seconds", "Time to the end of the answer",
                                 ["vendor", "outcome"], buckets=_LATENCY, registry=registry)
        self.upstream_errors = Counter("libproxy_upstream_errors", "Vendor timeouts and unreachable vendors",
                                       ["vendor", "kind"], registry=registry)
        self.pool_wait = Histogram("libproxy_pool_wait_seconds", "Waits for a connection to a vendor",
                                   ["vendor"], buckets=_LATENCY[:10], registry=registry)
        self.turned_away = Counter("libproxy_pool_turned_away", "Requests turned away: vendor pool full",
                                   ["vendor"], registry=registry)
        self.signins = Counter("libproxy_signins", "Sign-in attempts by outcome", ["outcome"], registry=registry)
        self.vendor_bytes = Counter("libproxy_vendor_bytes", "Body bytes relayed from vendors", ["vendor"],
                                    registry=registry)
        self.rewritten_bytes = Counter("libproxy_rewritten_bytes", "Body bytes from vendors that went through "
                                       "the rewriter (as received)", ["vendor"], registry=registry)
        self.cancelled = Counter("libproxy_cancelled", "Answers the patron left before the end (a cancelled "
                                 "download)", ["vendor"], registry=registry)
        # With workers, the gauges are set by the worker answering the scrape (the store is
        # shared, so its figure is everybody's): its latest value counts, a dead worker's not.
        self.sessions = Gauge("libproxy_sessions", "Live sessions", registry=registry,
                              multiprocess_mode="livemostrecent")
        self.ready = Gauge("libproxy_ready", "1 when the part is ready", ["part"], registry=registry,
                           multiprocess_mode="livemostrecent")
        self.store_errors = Gauge("libproxy_session_store_errors", "Failed session store calls since start",
                                  registry=registry, multiprocess_mode="livesum")
        if _shared_dir is None:
            self._exported = registry
        else:
            # The files of every worker, read at each scrape; the private registry of this
            # worker would only repeat its own share. No auto_describe: it would read the
            # files now, while the other workers are starting and making theirs.
            self._exported = CollectorRegistry()
            _WorkerFiles(self._exported, path=_shared_dir)  # type: ignore[no-untyped-call]
        self._children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
        # Labelled children cached per vendor: labels() is a locked dictionary lookup of its own.
        self._waits: dict[str, Histogram] = {}
        self._bytes: dict[str, Counter] = {}
        self._rewritten: dict[str, Counter] = {}
        self._routes: object = None
        self._vendor_of_host: dict[str, str] = {}
        self._vendor_of_netloc: dict[str, str] = {}

    # -- labels -----------------------------------------------------------------------------------

    def vendor_label(self, app: web.Application, host: str) -> str:
        """The vendor id a Host header names, "-" for the proxy itself, "unconfigured" else.

        SECURITY: a Host header is the client's to choose; only configured names become labels
        (and enter the cache), so no one can grow the label set or smuggle text into it.
        """
        routes = app[context.ROUTES]
        if routes is not self._routes:  # a reload: the vendors may have changed
            self._routes, self._vendor_of_host, self._vendor_of_netloc = routes, {}, {}
        found = self._vendor_of_host.get(host)
        if found is not None:
            return found
        if host == routes.vendors.proxy_host:
            label = _OWN
        else:
            target = routes.for_host(host)
            if target is None:
                return _UNKNOWN
            label = target[1].vendor.id
        self._vendor_of_host[host] = label
        return label

    def _vendor_of(self, netloc: str, app: web.Application) -> str:
        routes = app[context.ROUTES]
        if routes is not self._routes or not self._vendor_of_netloc:
            self._routes, self._vendor_of_host = routes, {}
            self._vendor_of_netloc = {o.netloc: v.id for v in routes.vendors.vendors for o in v.origins}
        return self._vendor_of_netloc.get(netloc, _UNKNOWN)

    def observe(self, vendor: str, outcome: str, seconds: float) -> None:
        children = self._children.get((vendor, outcome))
        if children is None:
            children = self._children[(vendor, outcome)] = (self.requests.labels(vendor, outcome),
                                                            self.latency.labels(vendor, outcome))
        children[0].inc()
        children[1].observe(seconds)

    def pool_waited(self, vendor: str, seconds: float) -> None:
        child = self._waits.get(vendor)
        if child is None:
            child = self._waits[vendor] = self.pool_wait.labels(vendor)
        child.observe(seconds)

    def relayed(self, vendor: str, size: int) -> None:
        child = self._bytes.get(vendor)
        if child is None:
            child = self._bytes[vendor] = self.vendor_bytes.labels(vendor)
        child.inc(size)

    def rewrote(self, vendor: str, size: int) -> None:
        child = self._rewritten.get(vendor)
        if child is None:
            child = self._rewritten[vendor] = self.rewritten_bytes.labels(vendor)
        child.inc(size)

    def pool_waiter(self, app: web.Application) -> OnWait:
        """The ``on_wait`` of the per-vendor-host slots: waits timed and turned-away requests
        counted, by vendor. Called only when a request had to queue."""

        def waited(netloc: str, seconds: float, turned_away: bool) -> None:
            vendor = self._vendor_of(netloc, app)
            self.pool_waited(vendor, seconds)
            if turned_away:
                self.turned_away.labels(vendor).inc()

        return waited

    def scrape(self) -> bytes:
        return generate_latest(self._exported)


METRICS = web.AppKey("libproxy.metrics", Metrics)


def measured(inner: Middleware) -> Middleware:
    """``inner`` (the proxy's middleware), counting and timing every request by vendor and
    outcome around it, so every page it makes of a failure is counted as what it is.

    One middleware rather than two: aiohttp wraps each middleware anew on every request, and on
    the proxying hot path that wrapping costs more than the counting.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            response = await inner(request, handler)
        except asyncio.CancelledError:
            _done(request, None, started)
            raise
        _done(request, response, started)
        return response

    return middleware


def _done(request: web.Request, response: web.StreamResponse | None, started: float) -> None:
    app = request.app
    metrics = app[METRICS]
    vendor = request.get(VENDOR)
    if vendor is None:
        vendor = metrics.vendor_label(app, request.headers.get("Host", "").lower())
    transport = request.transport
    if response is None or transport is None or transport.is_closing():
        # The patron went away before the answer ended: a cancelled download, not an error.
        metrics.cancelled.labels(vendor).inc()
        outcome = "cancelled"
    else:
        outcome = outcome_of(response.status)
        if vendor == _OWN and request.method == "POST" and request.path == "/login":
            metrics.signins.labels(_SIGN_IN.get(response.status, "refused")).inc()
        elif outcome in ("vendor-timeout", "vendor-unreachable") and vendor != _UNKNOWN:
            metrics.upstream_errors.labels(vendor, outcome.removeprefix("vendor-")).inc()
    metrics.observe(vendor, outcome, time.perf_counter() - started)


class MetricsObserver:
    """Forwarding's view (``forward/hooks.py``): the bytes each vendor's answers carried, and how
    many of them the rewriter had to read (what rewriting costs is per byte)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def refuse(self, exchange: Exchange) -> str | None:
        return None

    def done(self, exchange: Exchange) -> None:
        if exchange.received:
            self.metrics.relayed(exchange.vendor_id, exchange.received)
            if exchange.rewritten:
                self.metrics.rewrote(exchange.vendor_id, exchange.rewritten)


class MeasuredSlots(Slots):
    """The per-vendor-host slots, their waits told to the metrics (``Metrics.pool_waiter``).
    The same as ``Slots(limit, wait, metrics.pool_waiter(app))``, under the name the wiring uses."""

    def __init__(self, limit: int, wait: float, metrics: Metrics, app: web.Application) -> None:
        super().__init__(limit, wait, metrics.pool_waiter(app))


# -- readiness ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    name: str
    ok: bool
    detail: str


async def _bounded(check: Awaitable[str | None]) -> str | None:
    """A check's problem (None: fine), a timeout counting as one."""
    try:
        return await asyncio.wait_for(check, READY_TIMEOUT)
    except TimeoutError:
        return f"no answer within {READY_TIMEOUT:g} s"


async def _store_problem(app: web.Application) -> str | None:
    from proxy.errors import StoreUnavailable

    metrics = app[METRICS]
    store = app[context.SESSIONS]
    try:
        metrics.sessions.set(await store.count())
    except StoreUnavailable as exc:
        return str(exc) or "unavailable"
    except Exception as exc:  # not ready is an answer; a 500 from /readyz would not be
        return type(exc).__name__
    finally:
        metrics.store_errors.set(getattr(store, "failures", 0))
    return None


async def _directory_problem(app: web.Application) -> str | None:
    probe = getattr(app[context.PATRONS], "probe", None)
    if probe is None:
        return None  # a local file: read at start, nothing to reach
    try:
        problems: list[str] = await probe()
    except Exception as exc:  # any failure of the directory is "not ready", never a 500
        return f"{type(exc).__name__}"
    return "; ".join(problems) or None


async def _keys_problem(app: web.Application) -> str | None:
    from proxy.shared import SHARED

    if not app[context.ASSERTIONS].keys:
        return "no signing keys"
    shared = app.get(SHARED)
    if shared is not None and not shared.ready:
        return "the shared security keys are not in Redis yet"
    return None


async def readiness(app: web.Application) -> list[Part]:
    """Directory, session store and keys, each checked within a few seconds, all at once."""
    names = ("directory", "store", "keys")
    results = await asyncio.gather(_bounded(_directory_problem(app)), _bounded(_store_problem(app)),
                                   _bounded(_keys_problem(app)))
    metrics = app[METRICS]
    parts = []
    for name, problem in zip(names, results, strict=True):
        metrics.ready.labels(name).set(0 if problem else 1)
        parts.append(Part(name, problem is None, problem or "ready"))
    return parts


async def readyz_response(app: web.Application) -> web.Response:
    parts = await readiness(app)
    failing = [p.name for p in parts if not p.ok]
    body = {"status": "ready" if not failing else "not ready", "failing": failing,
            "parts": {p.name: p.detail for p in parts}}
    return web.json_response(body, status=503 if failing else 200)


async def metrics_response(app: web.Application) -> web.Response:
    await readiness(app)  # fresh gauges for the scrape
    response = web.Response(body=app[METRICS].scrape())
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response
