"""Records, end to end: a scripted patron visit leaves no marker in anything the proxy wrote,
statistics from a scripted mix match with small counts suppressed, and the staff page shows
them only to its own network."""

from __future__ import annotations

import datetime
import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest

from proxy.context import RECORDS, SESSIONS
from proxy.patrons.hashing import hash_pin
from proxy.patrons.local import add_patron
from proxy.records.logsetup import setup_logging
from proxy.records.stats import day_of
from tests.staff_support import DIRECTOR_NAME, DIRECTOR_PASSWORD, StaffClient, write_staff
from tests.support import PROXY_HOST, Browser, EchoVendor, base_config, free_port, run_proxy

MARK_CARD = "29123456789012"
MARK_PIN = "Pz8642q"  # letters too: a bare 4-digit PIN could turn up in any timestamp
MARK_TERM = "zebrafishmarker"
PATRON_ADDRESS = "127.0.0.77"
IPV4 = re.compile(rb"\b(?:\d{1,3}\.){3}\d{1,3}\b")


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved_handlers, saved_level, saved_factory = list(root.handlers), root.level, logging.getLogRecordFactory()
    stream = io.StringIO()
    setup_logging("DEBUG", "json", stream)
    yield stream
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved_handlers:
        root.addHandler(handler)
    root.setLevel(saved_level)
    logging.setLogRecordFactory(saved_factory)


def _vendor(echo: EchoVendor, **extra: object) -> dict[str, object]:
    origin = f"http://vendor.test:{echo.port}"
    return {"id": "echo", "title": "Echo", "start": f"{origin}/", "hosts": [origin], "groups": ["wolcott"],
            "counter": {"search": ["/search*"], "download": ["re:\\.pdf$", "/big*"]}, **extra}


async def test_a_full_visit_leaves_no_marker_anywhere(tmp_path: Path, echo: EchoVendor,
                                                     captured_logs: io.StringIO) -> None:
    patrons = tmp_path / "patrons.toml"
    add_patron(patrons, MARK_CARD, hash_pin(MARK_PIN, n_log2=10), ["wolcott"], "wolcott")
    config = base_config(tmp_path, [_vendor(echo)], upstream={"hosts": {"vendor.test": "127.0.0.1"}},
                         records={"flush_interval": "1s"})
    origin = f"http://vendor.test:{echo.port}"
    async with run_proxy(config) as running:
        b = Browser(running, local_addr=PATRON_ADDRESS)
        # A wrong PIN first (security memory), then the right one.
        assert (await b.sign_in(MARK_CARD, "0000", f"{origin}/")).status == 401
        assert (await b.sign_in(MARK_CARD, MARK_PIN, f"{origin}/")).status == 200
        host = running.proxied_host(origin)
        set_cookie = quote("vsess=vendorcookie42; Path=/")
        await b.get(f"http://{host}/set-cookie?c={set_cookie}", follow=False)
        search = await b.get(f"http://{host}/search?q={MARK_TERM}", follow=False,
                             headers={"Referer": f"http://{host}/?q={MARK_TERM}"})
        assert search.status == 200
        pdf = await b.get(f"http://{host}/big?size=100000&name={MARK_TERM}.pdf", follow=False)
        assert len(pdf.body) == 100000
        # Bad input on the way, which must log nothing identifying either.
        await b.get(f"http://{PROXY_HOST}/login?url={quote('https://' + MARK_TERM + '.example/')}")
        await b.get(f"http://{host}/slow?s=5&q={MARK_TERM}", follow=False)
        store = running.app[SESSIONS]
        store_dump = json.dumps([s.to_dict() for s in store._sessions.values()])  # type: ignore[attr-defined]
        await b.sign_out()
        await b.close()
    written: dict[str, bytes] = {"logs": captured_logs.getvalue().encode(), "session store": store_dump.encode()}
    for path in (tmp_path / "state").rglob("*"):
        if path.is_file():
            written[str(path.relative_to(tmp_path))] = path.read_bytes()
    assert any(name.endswith("stats.sqlite3") for name in written)
    assert any(name.endswith("assertion-keys.json") for name in written)
    assert b"vendor echo timed out" in written["logs"]  # the logs are really captured
    for name, data in written.items():
        for marker in (MARK_CARD, MARK_PIN, MARK_TERM, PATRON_ADDRESS, "/search", "/big"):
            assert marker.encode() not in data, (marker, name)
        if name != "session store":
            assert not IPV4.search(data), (name, IPV4.search(data))
    # The session store held the vendor's cookie (that is its job) but never the card, PIN,
    # search or address; once signed out, the session and its jar are gone.
    assert "vendorcookie42" in store_dump
    assert not running.app[SESSIONS]._sessions  # type: ignore[attr-defined]


async def test_statistics_from_a_scripted_mix(tmp_path: Path, echo: EchoVendor) -> None:
    small = {"id": "small", "title": "Small", "start": "https://small.example/", "hosts": ["small.example"],
             "groups": ["wolcott"]}
    admin_port = free_port()
    config = base_config(tmp_path, [_vendor(echo), small],
                         upstream={"hosts": {"vendor.test": "127.0.0.1"}},
                         admin={"listen": f"127.0.0.1:{admin_port}"},
                         network={"library": [{"name": "main", "cidrs": ["127.0.0.2/32"], "groups": ["wolcott"]}]})
    write_staff(config.proxy.state_dir)
    origin = f"http://vendor.test:{echo.port}"
    async with run_proxy(config) as running:
        host = running.proxied_host(origin)
        for _ in range(6):  # six remote sessions: 1 + 2 requests, one search each
            b = Browser(running, local_addr="127.0.0.3")
            assert (await b.sign_in("1000", "1111", f"{origin}/")).status == 200
            await b.get(f"http://{host}/search?q=owls", follow=False)
            await b.get(f"http://{host}/big?size=1000000", follow=False)
            await b.close()
        for _ in range(2):  # two in-library sessions, one request each
            b = Browser(running, local_addr="127.0.0.2")
            assert (await b.get(f"http://{PROXY_HOST}/login?url={quote(origin + '/')}")).status == 200
            await b.close()
        stats = running.app[RECORDS].stats
        await stats.flush()
        today = day_of(stats._clock(), None)
        report = await stats.report(today, today, period="day", threshold=5)
        rows = {r.vendor: r.cells for r in report.rows}
        echo_row = rows["echo"]
        assert echo_row["sessions_remote"].text == "6"
        assert echo_row["requests_remote"].text == "18"
        assert echo_row["searches"].text == "6"
        assert echo_row["downloads"].text == "6"
        assert echo_row["sessions_in_library"].text == "<5"  # 2: suppressed
        assert echo_row["requests_in_library"].text == "<5"
        assert echo_row["megabytes"].value is not None and echo_row["megabytes"].value >= 6
        assert rows["_proxy"]["sessions_remote"].text == "6"  # sign-ins
        assert "small" not in rows

        # The statistics are the director's pages of the staff console (signed in).
        director = StaffClient(admin_port)
        assert (await director.sign_in(DIRECTOR_NAME, DIRECTOR_PASSWORD))[0] == 200
        status, text = await director.get("/stats?by=day")
        assert status == 200 and "Echo" in text and "&lt;5" in text and "<svg" in text
        _, csv_text = await director.get("/stats.csv?by=day")
        assert csv_text.splitlines()[0].startswith("period,vendor,sessions_remote")
        assert ",<5," in csv_text and ",2," not in csv_text
        status, _ = await director.get("/stats", headers={"X-Forwarded-For": "127.0.0.1"})
        assert status == 200
        await director.close()
        # The staff pages are not on the public listener or on proxied hosts...
        b = Browser(running)
        assert (await b.get(f"http://{PROXY_HOST}/stats")).status == 404
        await b.close()
        # ...and the staff listener answers only its own networks.
        connector = aiohttp.TCPConnector(local_addr=("127.0.0.3", 0))
        async with aiohttp.ClientSession(connector=connector) as http, \
                http.get(f"http://127.0.0.1:{admin_port}/stats") as refused:
            assert refused.status == 403


async def test_sign_in_lockout_is_the_same_for_unknown_cards(tmp_path: Path, echo: EchoVendor) -> None:
    config = base_config(tmp_path, [_vendor(echo)], upstream={"hosts": {"vendor.test": "127.0.0.1"}},
                         records={"security": {"max_failures": 3}})
    async with run_proxy(config) as running:
        for card in ("1000", "99999999"):
            b = Browser(running)
            statuses = [(await b.sign_in(card, "0000")).status for _ in range(4)]
            assert statuses == [401, 401, 401, 429], card
            # Even the right PIN waits now.
            if card == "1000":
                assert (await b.sign_in("1000", "1111")).status == 429
            await b.close()


def test_memory_sessions_purge_on_schedule() -> None:
    import asyncio

    from proxy.membership import Membership
    from proxy.sessions.memory import MemorySessionStore

    now = [1000.0]
    store = MemorySessionStore(idle=60, lifetime=300, max_sessions=10, clock=lambda: now[0])
    asyncio.run(store.create(Membership(groups=frozenset({"g"}))))
    assert store.purge() == 0
    now[0] += 61
    assert store.purge() == 1
    assert not store._sessions


def test_stats_and_purge_commands(tmp_path: Path) -> None:
    import subprocess
    import sys

    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[proxy]\nstate_dir = "{tmp_path}/state"\n[[vendor]]\nid = "v"\nstart = "https://v.example/"\n'
                   'hosts = ["v.example"]\ngroups = ["g"]\n')
    today = datetime.date.today().isoformat()
    out = subprocess.run([sys.executable, "-m", "proxy", "stats", "--config", str(cfg), "--by", "day",
                          "--from", today, "--to", today], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "No usage recorded" in out.stdout
    purged = subprocess.run([sys.executable, "-m", "proxy", "purge", "--config", str(cfg)],
                            capture_output=True, text=True, timeout=60)
    assert purged.returncode == 0 and "Statistics: removed 0 rows" in purged.stdout
