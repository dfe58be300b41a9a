"""The staff listener: the staff console (``proxy/staff/``) and health, on a separate address.

Never on the public listener or a proxied host: it listens on ``[admin] listen`` (loopback by
default) and answers only peers in ``[admin] allow``. A director reaches it on the server, or
through an SSH tunnel (``ssh -L 9080:127.0.0.1:9080 proxy-server``). Every figure shown has the
same small-count suppression as the ``stats`` command; charts are drawn from printed figures only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from proxy import context
from proxy.network import client_address, parse_network
from proxy.staff.console import mount as mount_console
from proxy.staff.render import secure as staff_secure
from proxy.web.bad_requests import BadRequestAppRunner

# The staff application reads the parts of the public one (the same process, the same parts).
MAIN = web.AppKey("main", web.Application)


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
    # The console's pages set their own policy (and the patron privacy page its patron one).
    if "Content-Security-Policy" not in response.headers:
        staff_secure(response)
    return response


async def healthz(request: web.Request) -> web.StreamResponse:
    """Alive: the process answers. Whether it can serve patrons is /readyz."""
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.StreamResponse:
    """Directory, session store and keys ready: 200, or 503 naming the parts that are not."""
    from proxy.metrics import readyz_response

    return await readyz_response(request.app[MAIN])


async def metrics(request: web.Request) -> web.StreamResponse:
    """Prometheus text format; no label carries anything about a patron (proxy/metrics.py)."""
    from proxy.metrics import metrics_response

    return await metrics_response(request.app[MAIN])


def admin_app(main: web.Application) -> web.Application:
    app = web.Application(middlewares=[_allow_list])
    app[MAIN] = main
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    # The staff console (sign-in, roles, statistics, audit): its middleware guards every path
    # but the monitoring ones.
    mount_console(app, main)
    return app


async def start_admin(main: web.Application) -> web.AppRunner | None:
    """Start the staff listener when configured; the caller cleans the runner up."""
    listen = main[context.CONFIG].admin.listen
    if not listen:
        return None
    # SECURITY: browsers send a proxy cookie to this port too (cookies ignore ports): a request
    # the parser refuses gets the generic answer, never its own bytes echoed (web/bad_requests.py).
    runner = BadRequestAppRunner(admin_app(main), access_log=None)
    await runner.setup()
    sock = main.get(context.ADMIN_SOCKET)
    if sock is not None:
        await web.SockSite(runner, sock).start()
    else:
        host, port = split_listen(listen)
        await web.TCPSite(runner, host, port).start()
    return runner


def split_listen(listen: str) -> tuple[str, int]:
    """``[admin] listen``'s "address:port" (an IPv6 address may be in brackets)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)
