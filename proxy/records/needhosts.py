"""Hosts that vendors' pages tried to load from, as the browsers' CSP reports tell it.

Every proxied page carries a Content-Security-Policy limited to the proxy's own hosts, with a
``report-uri`` back to the proxy. A browser reports each load that policy blocked: a host the
vendor's entry does not list (the commonest reason a site breaks through a proxy) or a
third-party tracker the proxy kept away from the patron. IT sees both, per vendor.

Only two host names are kept from a report: the proxied host of the page (to know the vendor)
and the blocked host; the document URL, paths, queries and the reporting client are dropped on
arrival, never logged or stored. Counts are per vendor, blocked host and day, and small counts
are shown as "<threshold" like every other statistic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from proxy.files import write_private
from proxy.vendors import valid_host

log = logging.getLogger("libproxy.records")

MAX_REPORT_BYTES = 16 * 1024
MAX_HOSTS_PER_VENDOR = 200
SAVE_EVERY = 60.0


def _host_of(url: object, *, with_port: bool = False) -> str | None:
    if not isinstance(url, str) or "://" not in url:
        return None  # "inline", "eval", "data", "blob": not a host
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError:
        return None
    if not host:
        return None
    host = host.rstrip(".").lower()
    if not valid_host(host):
        return None
    return f"{host}:{port}" if with_port and port else host


def parse_report(body: bytes) -> Iterator[tuple[str, str]]:
    """(page host[:port], blocked host) pairs of a CSP report, in the ``report-uri`` form
    (``{"csp-report": {...}}``) or the Reporting API form (a list of ``csp-violation``
    reports). Everything else in the report is ignored; a malformed report yields nothing."""
    if len(body) > MAX_REPORT_BYTES:
        return
    try:
        data: Any = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: "[[[[...": nested past Python's stack
        return
    items: list[Any] = []
    if isinstance(data, dict) and isinstance(data.get("csp-report"), dict):
        report = data["csp-report"]
        items.append((report.get("document-uri"), report.get("blocked-uri")))
    elif isinstance(data, list):
        for entry in data[:50]:
            if isinstance(entry, dict) and entry.get("type") == "csp-violation" and isinstance(entry.get("body"), dict):
                body_ = entry["body"]
                items.append((body_.get("documentURL"), body_.get("blockedURL")))
    for page, blocked in items:
        page_host, blocked_host = _host_of(page, with_port=True), _host_of(blocked)
        if page_host and blocked_host:
            yield page_host, blocked_host


class NeededHosts:
    """Counts of blocked hosts per vendor and day, kept in a small JSON file in ``state_dir``."""

    def __init__(self, path: Path, *, retention_days: int, clock: Callable[[], float] = time.time,
                 tz: tzinfo | None = None) -> None:
        self.path = path
        self.retention_days = retention_days
        self._clock = clock
        self._tz = tz  # day boundaries as the statistics draw them ([records] timezone)
        # vendor -> host -> day (ISO) -> count
        self._counts: dict[str, dict[str, dict[str, int]]] = {}
        self._dirty = False
        self._task: asyncio.Task[None] | None = None

    def note(self, vendor_id: str, host: str) -> None:
        hosts = self._counts.setdefault(vendor_id, {})
        if host not in hosts and len(hosts) >= MAX_HOSTS_PER_VENDOR:
            return  # SECURITY: bounded, whatever a page makes browsers report
        day = datetime.fromtimestamp(self._clock(), self._tz).date().isoformat()
        days = hosts.setdefault(host, {})
        days[day] = days.get(day, 0) + 1
        self._dirty = True

    def report(self, threshold: int) -> dict[str, list[tuple[str, str]]]:
        """vendor id -> [(host, count)], most reported first; counts under ``threshold`` are
        shown as "<threshold"."""
        out: dict[str, list[tuple[str, str]]] = {}
        for vendor_id, hosts in sorted(self._counts.items()):
            totals = sorted(((sum(days.values()), host) for host, days in hosts.items()), key=lambda t: (-t[0], t[1]))
            out[vendor_id] = [(host, str(n) if n >= threshold else f"<{threshold}") for n, host in totals]
        return out

    def purge(self, now: float | None = None) -> int:
        """Forget counts older than the retention; returns how many day entries went."""
        current = self._clock() if now is None else now
        cutoff = datetime.fromtimestamp(current - self.retention_days * 86400.0, self._tz).date().isoformat()
        removed = 0
        for vendor_id in list(self._counts):
            hosts = self._counts[vendor_id]
            for host in list(hosts):
                days = hosts[host]
                for day in [d for d in days if d < cutoff]:
                    del days[day]
                    removed += 1
                if not days:
                    del hosts[host]
            if not hosts:
                del self._counts[vendor_id]
        if removed:
            self._dirty = True
        return removed

    # -- the file ------------------------------------------------------------------------------

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if not isinstance(data, dict):
            return
        for vendor_id, hosts in data.items():
            if not isinstance(hosts, dict):
                continue
            for host, days in hosts.items():
                if isinstance(days, dict) and valid_host(str(host)):
                    clean = {str(d): int(n) for d, n in days.items() if isinstance(n, int) and _is_day(str(d))}
                    if clean:
                        self._counts.setdefault(str(vendor_id), {})[str(host)] = clean

    def _save(self, snapshot: str) -> None:
        write_private(self.path, snapshot)

    async def flush(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        snapshot = json.dumps(self._counts, sort_keys=True)
        try:
            await asyncio.to_thread(self._save, snapshot)
        except OSError as exc:
            self._dirty = True  # try again at the next save
            log.warning("cannot save the needed-hosts counts: %s", exc.strerror)

    async def start(self) -> None:
        await asyncio.to_thread(self._load)

        async def saver() -> None:
            while True:
                await asyncio.sleep(SAVE_EVERY)
                await self.flush()

        self._task = asyncio.create_task(saver())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()


def _is_day(text: str) -> bool:
    try:
        datetime.strptime(text, "%Y-%m-%d")
    except ValueError:
        return False
    return True
