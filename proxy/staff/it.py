"""The ``it`` role's pages: vendors, configuration, health, sign-in locks and suspensions.

Nothing here shows a card number, name, address, URL path of a patron or client address:
vendors and configuration are the library's own settings, health is about parts, and locks are
shown by a short pseudonym of a keyed hash (see ``SecurityMemory.locked``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import re
import signal
import tomllib
from pathlib import Path
from typing import Any

from aiohttp import web

from proxy import context
from proxy.config import from_dict
from proxy.config import load as load_config
from proxy.errors import ConfigError
from proxy.staff import health
from proxy.staff.auth import staff_form
from proxy.staff.state import CONSOLE, current
from proxy.vendorcheck import check_vendor
from proxy.vendors import parse_absolute_url
from proxy.web.pages import sign_in_link

log = logging.getLogger("libproxy.staff")

MAX_CANDIDATE = 512 * 1024
MAX_URL = 4096
LOCK_KINDS = {
    "pair": "Card locked at one address (too many wrong PINs from there)",
    "card": "Card locked everywhere (too many wrong PINs in all)",
    "client": "Address locked (many cards tried from it)",
    "global": "All sign-ins paused (too many failures across the library)",
}
# Keys whose values are never shown, whatever they hold (they are env:/file: references in a
# well-kept file, but a pasted plain value must not appear on a page either).
_SECRET_VALUE = re.compile(
    r"""(?P<key>["']?[A-Za-z0-9_-]*(?:secret|password|redis_url)[A-Za-z0-9_-]*["']?\s*=\s*)"""
    r"""(?P<value>"(?:[^"\\]|\\.)*"|'[^']*'|[^,}\s#]+)""",
    re.IGNORECASE,
)


def lock_kind(category: str) -> str:
    if category.startswith("usage:"):
        return f"Usage suspended: {category[len('usage:'):]}s over the limit"
    return LOCK_KINDS.get(category, category)


def mask_secrets(text: str) -> str:
    """The file with every value of a secret-named key replaced by ``"(hidden)"``."""
    return _SECRET_VALUE.sub(lambda m: f'{m.group("key")}"(hidden)"', text)


def _page(request: web.Request, template: str, **values: Any) -> web.Response:
    console = request.app[CONSOLE]
    session = current(request)
    return console.pages.render(template, staff=session, csrf=session.csrf, **values)


async def _audit(request: web.Request, what: str, detail: str = "") -> None:
    await request.app[CONSOLE].audit.record(current(request).user, what, detail)


def _vendor_rows(main: web.Application) -> list[dict[str, Any]]:
    names = main[context.CONFIG].group_names
    return [{
        "id": v.id, "title": v.title,
        "hosts": sorted(str(o) for o in v.origins), "domains": list(v.domains),
        "groups": sorted(names.get(g, g) for g in v.groups),
    } for v in main[context.ROUTES].vendors.vendors]


async def vendors_page(request: web.Request) -> web.StreamResponse:
    main = request.app[CONSOLE].main
    await _audit(request, "vendors-view")
    return _page(request, "vendors.html", title="Vendors", vendors=_vendor_rows(main))


async def vendor_check(request: web.Request) -> web.StreamResponse:
    main = request.app[CONSOLE].main
    form = await staff_form(request)
    vendor_id = str(form.get("vendor", ""))
    vendor = main[context.ROUTES].vendors.by_id(vendor_id)
    if vendor is None:
        raise web.HTTPNotFound()
    await _audit(request, "vendor-check", vendor.id)
    result = await check_vendor(main[context.CONFIG], vendor.id)
    return _page(request, "vendor_check.html", title=f"Test of {vendor.title}", vendor=vendor.title,
                 vendor_id=vendor.id, ok=result.ok, lines=list(result.lines))


async def lookup(request: web.Request) -> web.StreamResponse:
    """Which vendor covers a URL IT pasted (from a vendor's setup notes or a broken link)."""
    main = request.app[CONSOLE].main
    form = await staff_form(request)
    url = str(form.get("url", "")).strip()[:MAX_URL]
    vendors = main[context.ROUTES].vendors
    parsed = parse_absolute_url(url)
    vendor = vendors.match(parsed.origin) if parsed is not None else None
    proxied = vendors.proxied_origin(parsed.origin) if parsed is not None and vendor is not None else None
    link = sign_in_link(main[context.CONFIG].proxy.public_origin, url) if vendor is not None else None
    # The URL itself is never written to the audit trail: only which vendor, if any, covered it.
    await _audit(request, "vendor-lookup", vendor.id if vendor else "none")
    return _page(request, "lookup.html", title="Which vendor covers this address", url=url,
                 valid=parsed is not None, vendor=vendor.title if vendor else None,
                 vendor_id=vendor.id if vendor else None, proxied=proxied, link=link)


async def needed_hosts(request: web.Request) -> web.StreamResponse:
    main = request.app[CONSOLE].main
    needed = main.get(context.NEEDED_HOSTS)
    threshold = main[context.CONFIG].records.threshold
    titles = {v.id: v.title for v in main[context.ROUTES].vendors.vendors}
    report = needed.report(threshold) if needed is not None else {}
    rows = [{"title": titles.get(vendor_id, vendor_id), "id": vendor_id, "hosts": hosts}
            for vendor_id, hosts in report.items() if hosts]
    await _audit(request, "needed-hosts")
    return _page(request, "needed_hosts.html", title="Needed hosts", rows=rows, available=needed is not None,
                 threshold=threshold)


def _read_config(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


async def config_page(request: web.Request) -> web.StreamResponse:
    main = request.app[CONSOLE].main
    path = main[context.CONFIG].path
    text = await asyncio.to_thread(_read_config, path)
    await _audit(request, "config-view")
    return _page(request, "config.html", title="Configuration", path=str(path) if path else None,
                 text=mask_secrets(text) if text is not None else None, reload=await _reload_hook(main) is not None,
                 problems=None, candidate="", checked=False, refused=False)


def _check_candidate(text: str, base: Path) -> list[str]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return [f"not valid TOML: {exc}"]
    try:
        from_dict(data, base=base)
    except ConfigError as exc:
        return list(exc.problems)
    return []


async def config_check(request: web.Request) -> web.StreamResponse:
    main = request.app[CONSOLE].main
    config = main[context.CONFIG]
    form = await staff_form(request)
    candidate = str(form.get("candidate", ""))
    if len(candidate) > MAX_CANDIDATE:
        problems = [f"the text is longer than {MAX_CANDIDATE // 1024} KiB"]
    else:
        # Relative paths in the candidate mean what they would mean next to the file in force.
        base = config.path.parent.resolve() if config.path else config.proxy.state_dir
        problems = await asyncio.to_thread(_check_candidate, candidate, base)
    await _audit(request, "config-check", "problems" if problems else "ok")
    path = config.path
    text = await asyncio.to_thread(_read_config, path)
    return _page(request, "config.html", title="Configuration", path=str(path) if path else None,
                 text=mask_secrets(text) if text is not None else None, reload=await _reload_hook(main) is not None,
                 problems=[mask_secrets(p) for p in problems], candidate=candidate, checked=True,
                 refused=False)


# Written by `libproxy serve` (proxy/server.py) for `libproxy reload`; the console sends the same
# signal, so every worker process reloads, not only the one serving the console.
PID_FILE = "libproxy.pid"


def _serve_pid(main: web.Application) -> int | None:
    path = main[context.CONFIG].proxy.state_dir / PID_FILE
    try:
        pid = int(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None
    # SECURITY: only this process or its supervisor (the parent of the workers): a stale pid
    # file must never make the console signal an unrelated process.
    return pid if pid in (os.getpid(), os.getppid()) else None


async def _reload_hook(main: web.Application) -> Any:
    """How to reload the running proxy, or None: an application hook ``context.RELOAD`` if one
    is ever set (a callable, sync or async), else SIGHUP to the ``serve`` process, which
    re-reads the file, swaps in what can change live and logs what waits for a restart."""
    if main[context.CONFIG].path is None:
        return None
    key = getattr(context, "RELOAD", None)
    if isinstance(key, web.AppKey) and key in main:
        return main[key]
    pid = await asyncio.to_thread(_serve_pid, main)  # a file: not read on the event loop
    if pid is None:
        return None
    return lambda: os.kill(pid, signal.SIGHUP)


def _check_file(path: Path) -> list[str]:
    try:
        load_config(path)
    except ConfigError as exc:
        return list(exc.problems)
    return []


async def config_reload(request: web.Request) -> web.StreamResponse:
    main = request.app[CONSOLE].main
    hook = await _reload_hook(main)
    path = main[context.CONFIG].path
    if hook is None or path is None:
        await _audit(request, "config-reload", "not-available")
        return _page(request, "message.html", title="Reload not available",
                     text="This proxy was not started with `libproxy serve` from a configuration file, so it "
                          "cannot reload one while running. Restart it to put a changed file in force.")
    # Checked here first, so that a broken file is refused with its problems on this page
    # (the proxy would refuse it too, but only its log would say why).
    problems = await asyncio.to_thread(_check_file, path)
    if problems:
        await _audit(request, "config-reload", "problems")
        text = await asyncio.to_thread(_read_config, path)
        return _page(request, "config.html", title="Configuration", path=str(path),
                     text=mask_secrets(text) if text is not None else None, reload=True,
                     problems=[mask_secrets(p) for p in problems], candidate="", checked=True,
                     refused=True)
    result = hook()
    if inspect.isawaitable(result):
        await result
    await _audit(request, "config-reload", "ok")
    log.info("configuration reload asked for from the staff console")
    return _page(request, "message.html", title="Configuration reload asked for",
                 text="The file has no problems and the proxy is reading it again now. Vendors, library "
                      "networks and connection shares change at once; changes to other sections wait "
                      "for a restart (the service log names them).")


async def health_page(request: web.Request) -> web.StreamResponse:
    main = request.app[CONSOLE].main
    directory, store, vendors = await asyncio.gather(health.directory(main), health.store(main),
                                                     health.vendors(main))
    await _audit(request, "health")
    return _page(request, "health.html", title="Health", parts=[directory, store], vendors=vendors)


async def locks_page(request: web.Request) -> web.StreamResponse:
    main = request.app[CONSOLE].main
    locked = main[context.RECORDS].security.locked()
    rows = [{"pseudonym": p, "category": c, "kind": lock_kind(c), "count": n} for p, c, n in locked]
    await _audit(request, "locks-view")
    return _page(request, "locks.html", title="Sign-in locks and usage suspensions", rows=rows, cleared=None)


async def lock_clear(request: web.Request) -> web.StreamResponse:
    main = request.app[CONSOLE].main
    form = await staff_form(request)
    pseudonym, category = str(form.get("pseudonym", "")), str(form.get("category", ""))
    removed = main[context.RECORDS].security.clear(pseudonym, category)
    # By kind only: the pseudonym is not kept in a year-long file (see audit.py).
    await _audit(request, "lock-clear", category if re.fullmatch(r"[a-z:]{1,32}", category) else "")
    locked = main[context.RECORDS].security.locked()
    rows = [{"pseudonym": p, "category": c, "kind": lock_kind(c), "count": n} for p, c, n in locked]
    return _page(request, "locks.html", title="Sign-in locks and usage suspensions", rows=rows,
                 cleared=removed > 0)
