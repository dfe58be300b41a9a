"""The ``director`` role's pages: statistics, the privacy page, retention, records requests.

Statistics have the same small-count suppression as the ``stats`` command; charts are drawn
from the printed figures only (``charts.py``). Nothing here reads a session, a lock or a log.
"""

from __future__ import annotations

import datetime
from typing import Any

from aiohttp import web

from proxy import context
from proxy.records.privacy import PrivacyFacts, human_duration, privacy_summary
from proxy.records.report import COLUMNS, HEADINGS, PROXY_VENDOR, Report, report_csv
from proxy.records.stats import day_of
from proxy.staff import facts
from proxy.staff.charts import charts
from proxy.staff.state import CONSOLE, current

MAX_DAYS = 3660


def _page(request: web.Request, template: str, **values: Any) -> web.Response:
    session = current(request)
    return request.app[CONSOLE].pages.render(template, staff=session, csrf=session.csrf, **values)


async def _audit(request: web.Request, what: str, detail: str = "") -> None:
    await request.app[CONSOLE].audit.record(current(request).user, what, detail)


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
        raise web.HTTPBadRequest() from None
    if first > last or (last - first).days > MAX_DAYS:
        raise web.HTTPBadRequest()
    return period, first, last


async def _report(request: web.Request) -> Report:
    main = request.app[CONSOLE].main
    period, first, last = _dates(request, main)
    stats = main[context.RECORDS].stats
    await stats.flush()
    return await stats.report(first, last, period=period,  # type: ignore[arg-type]
                              threshold=main[context.CONFIG].records.threshold)


def _titles(main: web.Application) -> dict[str, str]:
    titles = {v.id: v.title for v in main[context.ROUTES].vendors.vendors}
    titles[PROXY_VENDOR] = "All databases (sign-ins)"
    return titles


async def stats_page(request: web.Request) -> web.StreamResponse:
    main = request.app[CONSOLE].main
    report = await _report(request)
    titles = _titles(main)
    rows = [{"period": r.period, "vendor": titles.get(r.vendor, r.vendor), "signins": r.vendor == PROXY_VENDOR,
             "cells": [r.cells[c].text for c in COLUMNS]} for r in report.rows]
    await _audit(request, "stats-view", report.period)
    return _page(
        request, "stats.html", title="Usage statistics", headings=[HEADINGS[c] for c in COLUMNS], rows=rows,
        totals=[report.totals[c].text for c in COLUMNS] if report.rows else [], legend=report.legend,
        charts=charts(report, titles), period=report.period, first=report.first.isoformat(),
        last=report.last.isoformat(),
    )


async def stats_csv(request: web.Request) -> web.StreamResponse:
    report = await _report(request)
    await _audit(request, "stats-csv", report.period)
    name = f"libproxy-usage-{report.first.isoformat()}-{report.last.isoformat()}.csv"
    return web.Response(text=report_csv(report), content_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{name}"',
                                 "Cache-Control": "no-store"})


def _privacy_sections(main: web.Application) -> list[tuple[str, str]]:
    config = main[context.CONFIG]
    pairwise = [v.title for v in main[context.ROUTES].vendors.vendors if v.pairwise_id]
    facts_ = PrivacyFacts.from_config(config, config.records, pairwise_vendors=pairwise)
    return privacy_summary(facts_, config.logging)


async def privacy_page(request: web.Request) -> web.StreamResponse:
    main = request.app[CONSOLE].main
    await _audit(request, "privacy-view")
    return _page(request, "privacy.html", title="The privacy page", sections=_privacy_sections(main),
                 public=f"{main[context.CONFIG].proxy.public_origin}/privacy")


async def privacy_preview(request: web.Request) -> web.StreamResponse:
    """The page exactly as patrons get it: rendered by the patron pages, footer and all."""
    main = request.app[CONSOLE].main
    await _audit(request, "privacy-view", "preview")
    return main[context.PAGES].render("privacy.html", title="Privacy", sections=_privacy_sections(main))


def _holdings(main: web.Application) -> list[facts.Holding]:
    config = main[context.CONFIG]
    needed = main.get(context.NEEDED_HOSTS)
    kept = float(needed.retention_days * 86400) if needed is not None else None
    return facts.holdings(config, needed_hosts_kept=kept)


async def retention_page(request: web.Request) -> web.StreamResponse:
    main = request.app[CONSOLE].main
    config = main[context.CONFIG]
    await _audit(request, "retention-view")
    return _page(request, "retention.html", title="Retention in force", holdings=_holdings(main),
                 purge_every=human_duration(config.records.purge_interval))


async def records_request(request: web.Request) -> web.StreamResponse:
    main = request.app[CONSOLE].main
    config = main[context.CONFIG]
    today = day_of(main[context.RECORDS].stats._clock(), config.records.tz).isoformat()
    await _audit(request, "records-request")
    return _page(request, "records_request.html", title="Answering a records request",
                 statement=facts.statement(config, today), holdings=_holdings(main), not_held=facts.NOT_HELD,
                 today=today)
