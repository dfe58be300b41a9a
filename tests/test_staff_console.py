"""The staff console over real HTTP: roles, CSRF, session expiry, the audit trail, privacy.

A real proxy with its staff listener on loopback, a real echo vendor, real staff accounts on
disk; patrons use the public listener with the test Browser. Nothing is mocked.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import time
from pathlib import Path
from urllib.parse import quote

import aiohttp

from proxy.context import RECORDS
from proxy.patrons.hashing import hash_pin
from proxy.patrons.local import add_patron
from proxy.records.report import Cell, Report, ReportRow
from proxy.records.security import SecurityMemory, SecurityOptions
from proxy.staff.audit import AuditTrail
from proxy.staff.charts import charts
from proxy.staff.it import mask_secrets
from tests.staff_support import (
    DIRECTOR_NAME,
    DIRECTOR_PASSWORD,
    IT_NAME,
    IT_PASSWORD,
    StaffClient,
    write_staff,
)
from tests.support import PROXY_HOST, Browser, EchoVendor, base_config, free_port, run_proxy, write_patrons

MARK_CARD = "29123456789012"
MARK_PIN = "Pz8642q"
MARK_PATH = "zebrafishpath"
MARK_TERM = "quokkamarker"
PATRON_ADDRESS = "127.0.0.77"
IT_PAGES = ("/it/vendors", "/it/needed-hosts", "/it/config", "/it/health", "/it/locks")
DIRECTOR_PAGES = ("/director/stats", "/director/stats.csv", "/director/privacy", "/director/privacy/preview",
                  "/director/retention", "/director/records-request")


def _vendor(echo: EchoVendor) -> dict[str, object]:
    origin = f"http://vendor.test:{echo.port}"
    return {"id": "echo", "title": "Echo", "start": f"{origin}/", "hosts": [origin], "groups": ["wolcott"],
            "counter": {"search": ["/search*"]}}


def _config(tmp_path: Path, echo: EchoVendor, admin_port: int, **staff: str):  # type: ignore[no-untyped-def]
    patrons = tmp_path / "patrons.toml"
    if not patrons.exists():
        write_patrons(patrons)
        add_patron(patrons, MARK_CARD, hash_pin(MARK_PIN, n_log2=10), ["wolcott"], "wolcott")
    write_staff(tmp_path / "state")
    return base_config(tmp_path, [_vendor(echo)], upstream={"hosts": {"vendor.test": "127.0.0.1"}},
                       admin={"listen": f"127.0.0.1:{admin_port}"},
                       records={"security": {"max_failures": 3}}, **({"staff": staff} if staff else {}))


async def test_each_role_sees_its_pages_and_is_refused_the_others(tmp_path: Path, echo: EchoVendor) -> None:
    port = free_port()
    async with run_proxy(_config(tmp_path, echo, port)):
        anonymous = StaffClient(port)
        for path in (*IT_PAGES, *DIRECTOR_PAGES, "/", "/audit"):
            async with anonymous.http.get(anonymous.base + path, allow_redirects=False) as reply:
                assert reply.status == 303 and reply.headers["Location"] == "/login", path
        async with anonymous.http.get(anonymous.base + "/stats?by=day", allow_redirects=False) as reply:
            assert reply.headers["Location"] == "/login"
        # Monitoring stays open to the staff networks without a staff session.
        async with anonymous.http.get(anonymous.base + "/healthz", allow_redirects=False) as reply:
            assert reply.status == 200
        assert (await anonymous.sign_in(IT_NAME, "wrong-password-000"))[0] == 401
        assert (await anonymous.sign_in("nobody", IT_PASSWORD))[0] == 401
        await anonymous.close()

        it = StaffClient(port)
        status, home = await it.sign_in(IT_NAME, IT_PASSWORD)
        assert status == 200 and "IT staff" in home and "/it/vendors" in home
        assert "Your library shares only your membership" not in home  # no patron footer
        for path in IT_PAGES:
            assert (await it.get(path))[0] == 200, path
        for path in DIRECTOR_PAGES:
            status, text = await it.get(path)
            assert status == 403 and "Not for your role" in text, path
        await it.close()

        director = StaffClient(port)
        assert (await director.sign_in(DIRECTOR_NAME, DIRECTOR_PASSWORD))[0] == 200
        for path in DIRECTOR_PAGES:
            assert (await director.get(path))[0] == 200, path
        # The old statistics addresses lead to the director's page.
        async with director.http.get(director.base + "/stats?by=day", allow_redirects=False) as reply:
            assert reply.headers["Location"] == "/director/stats?by=day"
        for path in IT_PAGES:
            assert (await director.get(path))[0] == 403, path
        assert (await director.post("/it/locks/clear", {"pseudonym": "00000000", "category": "pair"}))[0] == 403
        status, audit = await director.get("/audit")
        assert status == 200 and IT_NAME in audit and DIRECTOR_NAME in audit
        await director.close()


async def test_every_post_needs_the_session_token(tmp_path: Path, echo: EchoVendor) -> None:
    port = free_port()
    async with run_proxy(_config(tmp_path, echo, port)):
        it = StaffClient(port)
        await it.sign_in(IT_NAME, IT_PASSWORD)
        await it.get("/it/locks")
        for form in ({}, {"csrf": "forged"}, {"csrf": ""}):
            status, text = await it.post("/it/config/reload", form, token=False)
            assert status == 403 and "not sent from this console" in text
        # The right token from another site's page is refused too (Origin says so).
        status, _ = await it.post("/it/config/reload", {}, headers={"Origin": "http://evil.example"})
        assert status == 403
        status, text = await it.post("/it/config/reload", {})
        assert status == 200 and "not available" in text  # no live reload in this version
        # Sign-out is a POST with the token as well.
        assert (await it.post("/logout", {}, token=False))[0] == 403
        assert (await it.post("/logout", {}))[0] == 200
        async with it.http.get(it.base + "/it/vendors", allow_redirects=False) as reply:
            assert reply.status == 303
        # The sign-in form has its own token: a forged sign-in is refused before any password check.
        async with it.http.post(it.base + "/login", data={"name": IT_NAME, "password": IT_PASSWORD,
                                                          "csrf": "x"}) as reply:
            assert reply.status == 400
        await it.close()


async def test_a_session_ends_after_its_idle_time(tmp_path: Path, echo: EchoVendor) -> None:
    port = free_port()
    async with run_proxy(_config(tmp_path, echo, port, idle="1s", lifetime="1h")):
        it = StaffClient(port)
        await it.sign_in(IT_NAME, IT_PASSWORD)
        async with it.http.get(it.base + "/it/vendors", allow_redirects=False) as reply:
            assert reply.status == 200
            cookie = reply.request_info.headers.get("Cookie", "")
        assert "libproxy_staff=" in cookie
        deadline = time.monotonic() + 15
        while True:
            await asyncio.sleep(0.3)
            async with it.http.get(it.base + "/", allow_redirects=False) as reply:
                if reply.status == 303:
                    break
            # Each request renews the idle clock, so wait longer than the idle time between tries.
            await asyncio.sleep(1.2)
            assert time.monotonic() < deadline, "the session never expired"
        await it.close()


async def test_cookie_flags(tmp_path: Path, echo: EchoVendor) -> None:
    port = free_port()
    async with run_proxy(_config(tmp_path, echo, port)):
        it = StaffClient(port)
        await it.get("/login")
        async with it.http.post(it.base + "/login", allow_redirects=False, data={
                "name": IT_NAME, "password": IT_PASSWORD, "csrf": it.csrf}) as reply:
            assert reply.status == 303
            raw = [h for h in reply.headers.getall("Set-Cookie") if h.startswith("libproxy_staff=")]
            assert raw and "HttpOnly" in raw[0] and "SameSite=Strict" in raw[0] and "Path=/" in raw[0]
        _, home = await it.get("/")
        async with it.http.get(it.base + "/") as reply:
            policy = reply.headers["Content-Security-Policy"]
            assert "script-src" not in policy and "default-src 'none'" in policy
            assert reply.headers["Cache-Control"] == "no-store"
        assert "<script" not in home
        await it.close()


async def test_console_actions_and_audit_hold_no_patron_data(tmp_path: Path, echo: EchoVendor) -> None:
    port = free_port()
    config = _config(tmp_path, echo, port)
    origin = f"http://vendor.test:{echo.port}"
    async with run_proxy(config) as running:
        # The privacy markers: a patron's card, PIN, address, page and search...
        patron = Browser(running, local_addr=PATRON_ADDRESS)
        assert (await patron.sign_in(MARK_CARD, "wrong-1")).status == 401
        assert (await patron.sign_in(MARK_CARD, MARK_PIN, f"{origin}/{MARK_PATH}")).status == 200
        host = running.proxied_host(origin)
        await patron.get(f"http://{host}/search?q={MARK_TERM}", follow=False)
        await patron.close()
        # ...and a card locked by wrong PINs from another address.
        guesser = Browser(running, local_addr="127.0.0.78")
        statuses = [(await guesser.sign_in("2000", "0000")).status for _ in range(4)]
        assert statuses[-1] == 429
        await guesser.close()
        security = running.app[RECORDS].security
        assert any(kind == "pair" for _, kind, _ in security.locked())

        it = StaffClient(port)
        await it.sign_in(IT_NAME, IT_PASSWORD)
        for path in IT_PAGES:
            await it.get(path)
        status, text = await it.post("/it/vendors/check", {"vendor": "echo"})
        assert status == 200 and "Test of Echo" in text
        status, text = await it.post("/it/lookup", {"url": f"{origin}/some/article"})
        assert status == 200 and "Covered by Echo" in text
        status, text = await it.post("/it/lookup", {"url": "https://elsewhere.example/"})
        assert "No configured vendor covers" in text
        status, text = await it.post("/it/config/check", {"candidate": "[proxy]\nlisten = 5\n"})
        assert status == 200 and "[proxy] listen" in text
        status, text = await it.get("/it/health")
        assert "Session store (memory)" in text and "reachable" in text
        _, locks = await it.get("/it/locks")
        assert "Card locked at one address" in locks
        pseudonym = next(p for p, kind, _ in security.locked() if kind == "pair")
        assert pseudonym in locks
        status, text = await it.post("/it/locks/clear", {"pseudonym": pseudonym, "category": "pair"})
        assert status == 200 and "Cleared." in text
        assert not any(p == pseudonym for p, _, _ in security.locked())
        # The card's owner signs in again from that address.
        guesser = Browser(running, local_addr="127.0.0.78")
        assert (await guesser.sign_in("2000", "2222")).status == 200
        await guesser.close()
        await it.get("/audit")

        director = StaffClient(port)
        await director.sign_in(DIRECTOR_NAME, DIRECTOR_PASSWORD)
        for path in DIRECTOR_PAGES:
            await director.get(path)
        await director.get("/director/stats?by=day")
        _, request_page = await director.get("/director/records-request")
        assert "holds no record that links a library card" in request_page
        await director.get("/audit")

        audit_path = config.proxy.state_dir / "staff-audit.log"
        assert stat.S_IMODE(os.stat(audit_path).st_mode) == 0o600
        lines = [json.loads(line) for line in audit_path.read_text(encoding="utf-8").splitlines()]
        whats = {(e["who"], e["what"]) for e in lines}
        for expected in ((IT_NAME, "sign-in"), (IT_NAME, "vendor-check"), (IT_NAME, "vendor-lookup"),
                         (IT_NAME, "config-check"), (IT_NAME, "lock-clear"), (DIRECTOR_NAME, "stats-view"),
                         (DIRECTOR_NAME, "records-request")):
            assert expected in whats, expected
        assert all(set(e) == {"at", "who", "what", "detail"} for e in lines)
        everything = [audit_path.read_text(encoding="utf-8"), *it.pages, *director.pages]
        for marker in (MARK_CARD, MARK_PIN, MARK_PATH, MARK_TERM, PATRON_ADDRESS, "127.0.0.78", "2222"):
            for text in everything:
                assert marker not in text, marker
        # The URL IT looked up is shown back to IT, but never written to the trail.
        assert "some/article" not in everything[0] and "elsewhere.example" not in everything[0]
        await it.close()
        await director.close()


async def test_no_staff_route_on_the_public_listener_or_a_proxied_host(tmp_path: Path, echo: EchoVendor) -> None:
    port = free_port()
    async with run_proxy(_config(tmp_path, echo, port)) as running:
        origin = f"http://vendor.test:{echo.port}"
        patron = Browser(running)
        assert (await patron.sign_in("1000", "1111", f"{origin}/")).status == 200
        host = running.proxied_host(origin)
        paths = ("/it/vendors", "/it/locks", "/director/stats", "/director/records-request", "/audit",
                 "/static/staff.css", "/stats", "/stats.csv", "/it/config")
        for name in (PROXY_HOST, host):
            for path in paths:
                reply = await patron.get(f"http://{name}{path}", follow=False)
                assert "Staff console" not in reply.text and "staff console" not in reply.text, (name, path)
                assert "Sign-in locks" not in reply.text and "Usage statistics" not in reply.text
                if name == PROXY_HOST:
                    assert reply.status == 404, path
            reply = await patron.post(f"http://{name}/it/locks/clear",
                                      data={"pseudonym": "00000000", "category": "pair"}, follow=False)
            assert "Staff" not in reply.text
        # The vendor got the proxied-host requests as its own paths: the proxy kept none.
        assert any(r.path == "/it/vendors" for r in echo.received)
        staff_login = await patron.get(f"http://{PROXY_HOST}/login")
        assert "Staff name" not in staff_login.text  # the patron sign-in, not the staff one
        await patron.close()
        # And the staff listener answers only its own networks.
        connector = aiohttp.TCPConnector(local_addr=("127.0.0.3", 0))
        async with aiohttp.ClientSession(connector=connector) as http, \
                http.get(f"http://127.0.0.1:{port}/login") as refused:
            assert refused.status == 403


async def test_stats_page_totals_and_charts(tmp_path: Path, echo: EchoVendor) -> None:
    port = free_port()
    origin = f"http://vendor.test:{echo.port}"
    async with run_proxy(_config(tmp_path, echo, port)) as running:
        for _ in range(2):  # two sign-ins, two requests: every figure of the day is small
            b = Browser(running)
            assert (await b.sign_in("1000", "1111", f"{origin}/")).status == 200
            await b.close()
        director = StaffClient(port)
        await director.sign_in(DIRECTOR_NAME, DIRECTOR_PASSWORD)
        status, page = await director.get("/director/stats?by=day")
        assert status == 200 and "suppressed (small count)" in page and "&lt;5" in page
        assert '<rect x="150"' not in page  # nothing printed, so no bar at all
        _, csv_text = await director.get("/director/stats.csv?by=day")
        total = next(line for line in csv_text.splitlines() if line.startswith("total,"))
        assert total.split(",")[2] == "0+"  # the 2 sign-ins are not added to the databases' total
        await director.close()


def test_charts_draw_no_zero_for_hidden_figures() -> None:
    def row(vendor: str, requests: Cell) -> ReportRow:
        cells = {c: Cell("0", 0) for c in ("sessions_remote", "sessions_in_library", "requests_in_library",
                                           "searches", "downloads", "megabytes")}
        cells["requests_remote"] = requests
        return ReportRow("2026-03", vendor, cells)

    import datetime

    day = datetime.date(2026, 3, 1)
    report = Report("month", day, day, 5, (row("a", Cell("<5", None)), row("b", Cell("40", 40)),
                                            row("_proxy", Cell("99", 99))))
    drawn = {c.title: c.bars[0] for c in charts(report, {"a": "A", "b": "B"})}
    assert set(drawn) == {"A", "B"}  # sign-ins are not a database
    assert drawn["A"].width == 0 and drawn["A"].hidden and drawn["A"].text.startswith("suppressed")
    assert drawn["B"].width == 300 and drawn["B"].text == "40"


def test_security_memory_lists_and_clears_locks() -> None:
    now = [1_000_000.0]
    memory = SecurityMemory(lambda: now[0], SecurityOptions(max_failures=3, client_max_failures=5))
    for _ in range(3):
        memory.note_failure("2123 4001", "192.0.2.7")
    memory.note_failure("5555", "192.0.2.8")
    assert memory.is_locked("21234001", "192.0.2.7")
    locked = memory.locked()
    assert [kind for _, kind, _ in locked] == ["pair"]
    pseudonym, _, count = locked[0]
    assert len(pseudonym) == 8 and count == 3
    assert "21234001" not in repr(locked) and "192.0.2.7" not in repr(locked)
    assert memory.clear(pseudonym[:4], "pair") == 0  # never by a prefix
    assert memory.clear(pseudonym, "card") == 0  # nor under another kind
    assert memory.clear(pseudonym, "pair") == 1
    assert not memory.is_locked("21234001", "192.0.2.7") and memory.locked() == []


def test_usage_suspensions_are_listed_and_cleared() -> None:
    from proxy.records.security import UsageLimit

    memory = SecurityMemory(lambda: 1_000_000.0, SecurityOptions(usage_limits={"download": UsageLimit(2, 3600.0)}))
    memory.note_usage("patron-key-1", "download")
    assert memory.locked() == []
    memory.note_usage("patron-key-1", "download")
    assert memory.over_limit("patron-key-1", "download")
    [(pseudonym, category, count)] = memory.locked()
    assert category == "usage:download" and count == 2
    assert memory.clear(pseudonym, category) == 1
    assert not memory.over_limit("patron-key-1", "download")


def test_secrets_are_masked_on_the_configuration_page() -> None:
    text = ('[proxy]\nsecret = "env:LIBPROXY_SECRET"\n[sessions]\nredis_url = "redis://:pw@h/0"\n'
            '[patrons]\nbind_password = "plain-oops"  # comment\nldap = { password = "x1", url = "ldap://h" }\n'
            'listen = "127.0.0.1:8080"\n')
    masked = mask_secrets(text)
    for value in ("env:LIBPROXY_SECRET", "redis://:pw@h/0", "plain-oops", "x1"):
        assert value not in masked
    assert 'listen = "127.0.0.1:8080"' in masked and "# comment" in masked and 'url = "ldap://h"' in masked


async def test_audit_trail_is_private_and_purged(tmp_path: Path) -> None:
    now = [1_800_000_000.0]
    trail = AuditTrail(tmp_path / "staff-audit.log", retention=86400.0, clock=lambda: now[0])
    await trail.record("ines", "sign-in", "it")
    await trail.record("ines", "vendor-lookup", "https://vendor.example/private/path")
    assert stat.S_IMODE(os.stat(trail.path).st_mode) == 0o600
    now[0] += 2 * 86400
    await trail.record("dora", "stats-view", "day")
    entries = await trail.recent()
    assert [e.who for e in entries] == ["dora", "ines", "ines"]
    assert entries[1].detail == "(withheld)"  # a URL is never written
    assert "vendor.example" not in trail.path.read_text(encoding="utf-8")
    assert await trail.purge() == 2
    assert [e.who for e in await trail.recent()] == ["dora"]
    assert stat.S_IMODE(os.stat(trail.path).st_mode) == 0o600


def test_staff_add_command(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import io

    from proxy.cli import main
    from proxy.staff.accounts import parse_accounts

    path = tmp_path / "staff.toml"
    monkeypatch.setattr("sys.stdin", io.StringIO("a-long-password-1\n"))
    assert main(["staff", "add", "--file", str(path), "--name", "maria", "--role", "it", "--password-stdin"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["staff", "add", "--file", str(path), "--name", "dora", "--role", "director",
                 "--password-stdin"]) == 1
    accounts = parse_accounts(path.read_text(encoding="utf-8"), str(path))
    assert set(accounts) == {"maria"} and accounts["maria"].role == "it"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert quote("a-long-password-1") not in path.read_text(encoding="utf-8")


async def test_reload_from_the_console(tmp_path: Path, echo: EchoVendor) -> None:
    import signal

    from proxy.config import load

    port = free_port()
    patrons = write_patrons(tmp_path / "patrons.toml")
    state = tmp_path / "state"
    write_staff(state)
    text = (f'[proxy]\nhost = "{PROXY_HOST}"\nstate_dir = "{state}"\n'
            f'[patrons]\nsource = "local"\nfile = "{patrons}"\n'
            f'[admin]\nlisten = "127.0.0.1:{port}"\n'
            f'[[vendor]]\nid = "echo"\ntitle = "Echo"\nstart = "http://127.0.0.1:{echo.port}/"\n'
            f'hosts = ["http://127.0.0.1:{echo.port}"]\ngroups = ["wolcott"]\n')
    path = tmp_path / "proxy.toml"
    path.write_text(text, encoding="utf-8")
    hup = asyncio.Event()
    loop = asyncio.get_running_loop()
    async with run_proxy(load(path)):
        it = StaffClient(port)
        await it.sign_in(IT_NAME, IT_PASSWORD)
        # Not started by `libproxy serve` (no pid file): reloading is not offered.
        _, page = await it.get("/it/config")
        assert "Live reload is not available here" in page
        # As `serve` does: the pid file, and SIGHUP handled by the running process.
        (state / "libproxy.pid").write_text(f"{os.getpid()}\n", encoding="ascii")
        loop.add_signal_handler(signal.SIGHUP, hup.set)
        try:
            _, page = await it.get("/it/config")
            assert "Reload the configuration" in page
            path.write_text(text.replace('groups = ["wolcott"]', "groups = 5"), encoding="utf-8")
            status, page = await it.post("/it/config/reload", {})
            assert status == 200 and "Reload refused" in page and "groups" in page
            assert not hup.is_set()
            path.write_text(text, encoding="utf-8")
            status, page = await it.post("/it/config/reload", {})
            assert status == 200 and "reading it again now" in page
            await asyncio.wait_for(hup.wait(), 10)
            # A stale pid file naming another process is never signalled.
            hup.clear()
            (state / "libproxy.pid").write_text("1\n", encoding="ascii")
            _, page = await it.post("/it/config/reload", {})
            assert "not available" in page and not hup.is_set()
        finally:
            loop.remove_signal_handler(signal.SIGHUP)
        await it.close()


def test_a_flood_of_names_never_stops_the_counting() -> None:
    """Review: once the failure table was full, new names were not counted at all."""
    from types import SimpleNamespace

    from proxy.staff import auth

    console = SimpleNamespace(failures={})
    for i in range(auth.MAX_TRACKED + 50):
        auth._note_failure(console, f"flood{i}", 1000.0)  # type: ignore[arg-type]
        auth._note_failure(console, f"!{i}", 1000.0)  # type: ignore[arg-type]  # not a name: not counted
    for _ in range(auth.MAX_FAILURES):
        auth._note_failure(console, "maria", 1000.0)  # type: ignore[arg-type]
    assert len(console.failures) <= auth.MAX_TRACKED
    assert auth._too_many(console, "maria", 1001.0)  # type: ignore[arg-type]
