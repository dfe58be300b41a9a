"""``mount``: the staff console on the staff listener's application.

Called by ``proxy.web.admin.admin_app`` once the public application's parts exist. The console
lives only there: the public application has no staff route at all, so neither the public
listener nor a proxied host name can reach it whatever the request says.
"""

from __future__ import annotations

from aiohttp import web

from proxy import context
from proxy.staff import auth, director, it
from proxy.staff.accounts import ROLE_TITLES, StaffAccounts
from proxy.staff.audit import AuditTrail
from proxy.staff.render import StaffPages, stylesheet
from proxy.staff.sessions import StaffSessions
from proxy.staff.state import CONSOLE, Console, current

AUDIT_FILE = "staff-audit.log"


async def home(request: web.Request) -> web.StreamResponse:
    session = current(request)
    return request.app[CONSOLE].pages.render("home.html", title="Staff console", staff=session, csrf=session.csrf,
                                             role_title=ROLE_TITLES[session.role])


async def audit_page(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    session = current(request)
    await console.audit.record(session.user, "audit-view")
    entries = await console.audit.recent()
    return console.pages.render("audit.html", title="Audit trail", staff=session, csrf=session.csrf,
                                entries=entries)


async def stats_moved(request: web.Request) -> web.StreamResponse:
    """The old addresses of the statistics: now the director's pages (after signing in)."""
    target = "/director/stats.csv" if request.path.endswith(".csv") else "/director/stats"
    if request.query_string:
        target += "?" + request.query_string
    raise web.HTTPSeeOther(target)


def mount(app: web.Application, main: web.Application) -> None:
    """Add the console's middleware, routes and parts to the staff application ``app``."""
    config = main[context.CONFIG]
    options = config.staff
    console = Console(
        main=main,
        accounts=StaffAccounts(options.accounts_path(config.proxy.state_dir)),
        sessions=StaffSessions(options.idle, options.lifetime),
        audit=AuditTrail(config.proxy.state_dir / AUDIT_FILE, options.audit_retention),
        pages=StaffPages(config.library.name),
    )
    if options.ldap is not None:
        from proxy.staff.directory import StaffDirectory

        directory = StaffDirectory(options.ldap, options.ldap_roles)
        console.directory = directory

        async def close_directory(_app: web.Application) -> None:
            await directory.close()

        app.on_cleanup.append(close_directory)
    app[CONSOLE] = console
    app.middlewares.append(auth.guard)
    records = main[context.RECORDS]
    records.retention.add("staff-audit", console.audit.purge)
    records.retention.add("staff-sessions", console.sessions.purge)

    r = app.router
    r.add_get("/static/staff.css", stylesheet)
    r.add_get("/login", auth.login_page)
    r.add_post("/login", auth.login)
    r.add_post("/logout", auth.logout)
    r.add_get("/", home)
    r.add_get("/audit", audit_page)
    r.add_get("/stats", stats_moved)
    r.add_get("/stats.csv", stats_moved)

    r.add_get("/it/vendors", it.vendors_page)
    r.add_post("/it/vendors/check", it.vendor_check)
    r.add_post("/it/lookup", it.lookup)
    r.add_get("/it/needed-hosts", it.needed_hosts)
    r.add_get("/it/config", it.config_page)
    r.add_post("/it/config/check", it.config_check)
    r.add_post("/it/config/reload", it.config_reload)
    r.add_get("/it/health", it.health_page)
    r.add_get("/it/locks", it.locks_page)
    r.add_post("/it/locks/clear", it.lock_clear)

    r.add_get("/director/stats", director.stats_page)
    r.add_get("/director/stats.csv", director.stats_csv)
    r.add_get("/director/privacy", director.privacy_page)
    r.add_get("/director/privacy/preview", director.privacy_preview)
    r.add_get("/director/retention", director.retention_page)
    r.add_get("/director/records-request", director.records_request)
