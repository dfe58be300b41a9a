"""The staff listener: the director's statistics page and its CSV, on a separate address.

Never on the public listener or a proxied host: it listens on ``[admin] listen`` (loopback by
default) and answers only peers in ``[admin] allow``. A director reaches it on the server, or
through an SSH tunnel (``ssh -L 9080:127.0.0.1:9080 proxy-server``). Every figure shown has the
same small-count suppression as the ``stats`` command; charts are drawn from printed figures only.
"""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Callable

from aiohttp import web

from proxy import context
from proxy.network import client_address, parse_network
from proxy.records.report import COLUMNS, HEADINGS, PROXY_VENDOR, Report
from proxy.records.stats import day_of

# The staff application reads the parts of the public one (the same process, the same parts).
MAIN = web.AppKey("main", web.Application)
CHART_COLUMNS = ("requests_remote", "requests_in_library", "searches", "downloads")


@web.middleware
async def _allow_list(request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    main = request.app[MAIN]
    allowed = [n for n in map(parse_network, main[context.CONFIG].admin.allow) if n]
    # SECURITY: staff pages answer only the configured networks; forwarding headers are not
    # consulted here at all.
    peer = client_address(request.remote, (), "", [])
    if peer is None or not any(peer.version == n.version and peer in n for n in allowed):
        raise web.HTTPForbidden(text="Forbidden\n")
    response = await handler(request)
    main[context.PAGES].secure(response)
    return response


def _dates(request: web.Request, main: web.Application) -> tuple[str, datetime.date, datetime.date]:
    period = request.query.get("by", "month")
    if period not in ("day", "month"):
        period = "month"
    today = day_of(main[context.RECORDS].stats._clock(), main[context.CONFIG].records.tz)
    default_first = today - datetime.timedelta(days=30) if period == "day" else today.replace(day=1, month=1)
    try:
        first = datetime.date.fromisoformat(request.query.get("from", default_first.isoformat()))
        last = datetime.date.fromisoformat(request.query.get("to", today.isoformat()))
    except ValueError:
        raise web.HTTPBadRequest(text="Dates must be written YYYY-MM-DD.\n") from None
    if first > last or (last - first).days > 3660:
        raise web.HTTPBadRequest(text="The date range is empty or longer than ten years.\n")
    return period, first, last


async def _report(request: web.Request) -> tuple[web.Application, Report]:
    main = request.app[MAIN]
    period, first, last = _dates(request, main)
    stats = main[context.RECORDS].stats
    await stats.flush()
    report = await stats.report(first, last, period=period,  # type: ignore[arg-type]
                                threshold=main[context.CONFIG].records.threshold)
    return main, report


def _titles(main: web.Application) -> dict[str, str]:
    titles = {v.id: v.title for v in main[context.ROUTES].vendors.vendors}
    titles[PROXY_VENDOR] = "All databases (sign-ins)"
    return titles


async def stats_page(request: web.Request) -> web.StreamResponse:
    main, report = await _report(request)
    titles = _titles(main)
    rows = [{"period": r.period, "vendor": titles.get(r.vendor, r.vendor),
             "cells": [r.cells[c].text for c in COLUMNS]} for r in report.rows]
    # Bars per database, from printed figures only: a hidden cell draws no bar.
    per_vendor: dict[str, dict[str, int]] = {}
    for r in report.rows:
        if r.vendor == PROXY_VENDOR:
            continue
        bucket = per_vendor.setdefault(titles.get(r.vendor, r.vendor), dict.fromkeys(CHART_COLUMNS, 0))
        for c in CHART_COLUMNS:
            value = r.cells[c].value
            bucket[c] += value or 0
    peak = max((v for b in per_vendor.values() for v in b.values()), default=0) or 1
    charts = [{"title": title, "bars": [{"label": HEADINGS[c], "value": b[c], "width": round(300 * b[c] / peak)}
                                        for c in CHART_COLUMNS]} for title, b in sorted(per_vendor.items())]
    return main[context.PAGES].render(
        "stats.html", title="Usage statistics", headings=[HEADINGS[c] for c in COLUMNS], rows=rows,
        totals=[report.totals[c].text for c in COLUMNS] if report.rows else [], legend=report.legend,
        charts=charts, period=report.period, first=report.first.isoformat(), last=report.last.isoformat(),
    )


async def stats_csv(request: web.Request) -> web.StreamResponse:
    from proxy.records.report import report_csv

    _, report = await _report(request)
    name = f"libproxy-usage-{report.first.isoformat()}-{report.last.isoformat()}.csv"
    return web.Response(text=report_csv(report), content_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})


async def healthz(request: web.Request) -> web.StreamResponse:
    main = request.app[MAIN]
    return web.json_response({"status": "ok", "sessions": await main[context.SESSIONS].count(),
                              "vendors": len(main[context.ROUTES].vendors.vendors)})


def admin_app(main: web.Application) -> web.Application:
    app = web.Application(middlewares=[_allow_list])
    app[MAIN] = main
    app.router.add_get("/", _redirect)
    app.router.add_get("/stats", stats_page)
    app.router.add_get("/stats.csv", stats_csv)
    app.router.add_get("/healthz", healthz)
    return app


async def _redirect(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/stats")


async def start_admin(main: web.Application) -> web.AppRunner | None:
    """Start the staff listener when configured; the caller cleans the runner up."""
    listen = main[context.CONFIG].admin.listen
    if not listen:
        return None
    host, _, port = listen.rpartition(":")
    runner = web.AppRunner(admin_app(main), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host.strip("[]"), int(port)).start()
    return runner
