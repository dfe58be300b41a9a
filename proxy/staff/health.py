"""Health of the parts IT cares about: the patron directory, the session store, each vendor.

Each check is bounded by a timeout and says in plain words what is wrong; none of them sends a
patron's data anywhere (the directory probe binds as the service account, the vendor check
only opens a TCP connection to the vendor's start host).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from aiohttp import web

from proxy import context
from proxy.vendors import parse_absolute_url

DIRECTORY_TIMEOUT = 15.0
STORE_TIMEOUT = 5.0
VENDOR_TIMEOUT = 5.0


@dataclass(frozen=True)
class Health:
    part: str
    ok: bool
    text: str


async def directory(main: web.Application) -> Health:
    config = main[context.CONFIG]
    authenticator = main[context.PATRONS]
    name = f"Patron directory ({config.patrons.source})"
    probe = getattr(authenticator, "probe", None)
    if probe is not None:
        try:
            problems = await asyncio.wait_for(probe(), DIRECTORY_TIMEOUT)
        except TimeoutError:
            return Health(name, False, f"did not answer within {DIRECTORY_TIMEOUT:.0f} seconds")
        except Exception as exc:  # a probe failing any way is a finding, not a crash of the page
            return Health(name, False, f"the check failed: {type(exc).__name__}")
        if problems:
            return Health(name, False, "; ".join(str(p) for p in problems))
        return Health(name, True, "answering, base entries found")
    if config.patrons.file is not None:
        path = config.patrons.file
        readable = await asyncio.to_thread(lambda: path.is_file() and bool(path.stat().st_size))
        return Health(name, readable, "the patrons file is readable" if readable
                      else f"the patrons file {path} is missing or empty")
    return Health(name, True, "no health check is available for this source")


async def store(main: web.Application) -> Health:
    config = main[context.CONFIG]
    name = f"Session store ({config.sessions.store})"
    try:
        count = await asyncio.wait_for(main[context.SESSIONS].count(), STORE_TIMEOUT)
    except TimeoutError:
        return Health(name, False, f"did not answer within {STORE_TIMEOUT:.0f} seconds")
    except Exception as exc:
        return Health(name, False, f"not answering: {type(exc).__name__}")
    return Health(name, True, f"answering; {count} session{'s' if count != 1 else ''} open")


async def _vendor(main: web.Application, vendor_id: str, title: str, start: str) -> Health:
    name = f"{title} ({vendor_id})"
    parsed = parse_absolute_url(start)
    if parsed is None:
        return Health(name, False, "its start address is not a plain http(s) URL")
    origin = parsed.origin
    # The same name overrides as the upstream client ([upstream] hosts), so split DNS agrees.
    address = main[context.CONFIG].upstream.hosts.get(origin.host, origin.host)
    began = time.monotonic()
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(address, origin.port), VENDOR_TIMEOUT)
    except TimeoutError:
        return Health(name, False, f"{origin.netloc}: no connection within {VENDOR_TIMEOUT:.0f} seconds")
    except OSError as exc:
        return Health(name, False, f"{origin.netloc}: cannot connect ({exc.strerror or type(exc).__name__})")
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), 2)
    except (TimeoutError, OSError):
        pass
    return Health(name, True, f"{origin.netloc}: reachable in {1000 * (time.monotonic() - began):.0f} ms")


async def vendors(main: web.Application) -> list[Health]:
    vendor_list = main[context.ROUTES].vendors.vendors
    return list(await asyncio.gather(*(_vendor(main, v.id, v.title, v.start) for v in vendor_list)))
