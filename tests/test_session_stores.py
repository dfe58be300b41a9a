"""One test suite, run against every session store: memory, and a real redis-server."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from proxy.errors import StoreUnavailable
from proxy.membership import Membership
from proxy.sessions import Cookie, SessionStore, Ticket
from proxy.sessions.memory import MemorySessionStore
from proxy.sessions.redis import RedisSessionStore
from tests.redis_server import redis_server, redis_server_path
from tests.support import Browser, EchoVendor, base_config, run_proxy

needs_redis = pytest.mark.skipif(redis_server_path() is None, reason="redis-server is not installed")


class Clock:
    def __init__(self) -> None:
        import time

        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    if redis_server_path() is None:
        pytest.skip("redis-server is not installed")
    with redis_server() as url:
        yield url


@pytest.fixture(params=["memory", pytest.param("redis", marks=needs_redis)])
async def store_and_clock(request: pytest.FixtureRequest) -> AsyncIterator[tuple[SessionStore, Clock]]:
    clock = Clock()
    store: SessionStore
    if request.param == "memory":
        store = MemorySessionStore(idle=60, lifetime=300, max_sessions=1000, clock=clock)
    else:
        store = RedisSessionStore(request.getfixturevalue("redis_url"), idle=60, lifetime=300, clock=clock)
    yield store, clock
    await store.close()


MEMBER = Membership(groups=frozenset({"wolcott"}), home_library="wolcott", key="k" * 32)


async def test_create_get_delete(store_and_clock: tuple[SessionStore, Clock]) -> None:
    store, _ = store_and_clock
    session = await store.create(MEMBER)
    found = await store.get(session.id)
    assert found is not None and found.membership == MEMBER and found.id == session.id
    await store.delete(session.id)
    assert await store.get(session.id) is None
    assert await store.get("no-such-session-id-000000000") is None


async def test_idle_and_absolute_expiry(store_and_clock: tuple[SessionStore, Clock]) -> None:
    store, clock = store_and_clock
    session = await store.create(MEMBER)
    for _ in range(9):
        clock.now += 30
        found = await store.get(session.id)
        assert found is not None
        await store.touch(found)
    clock.now += 30
    assert await store.get(session.id) is None  # 300 s after sign-in, however active
    idle = await store.create(MEMBER)
    clock.now += 61
    assert await store.get(idle.id) is None


def _cookie(name: str, value: str = "v", expires: float | None = None) -> Cookie:
    return Cookie(name=name, value=value, domain="x.example", host_only=True, path="/", secure=False,
                  expires=expires)


async def test_jar_is_saved(store_and_clock: tuple[SessionStore, Clock]) -> None:
    store, clock = store_and_clock
    session = await store.create(MEMBER)
    await store.set_cookies(session, "gale", [_cookie("a", "b")], clock.now)
    await store.mark_visited(session, "gale")
    found = await store.get(session.id)
    assert found is not None and [c.value for c in found.jars["gale"]] == ["b"]
    assert found.visited == {"gale"}
    # An expired cookie removes its namesake.
    await store.set_cookies(found, "gale", [_cookie("a", expires=clock.now - 1)], clock.now)
    again = await store.get(session.id)
    assert again is not None and not again.jars.get("gale")


async def test_concurrent_responses_keep_every_cookie(store_and_clock: tuple[SessionStore, Clock]) -> None:
    """Three responses of one vendor for one patron, each setting a cookie, handled at once from
    copies of the session read before any of them wrote (as two instances would): none is lost."""
    store, clock = store_and_clock
    session = await store.create(MEMBER)
    copies = [await store.get(session.id) for _ in range(3)]
    await asyncio.gather(*(store.set_cookies(c, "gale", [_cookie(f"c{i}")], clock.now)
                           for i, c in enumerate(copies) if c is not None))
    found = await store.get(session.id)
    assert found is not None and {c.name for c in found.jars["gale"]} == {"c0", "c1", "c2"}


async def test_concurrent_first_visits_count_once(store_and_clock: tuple[SessionStore, Clock]) -> None:
    """Twenty first requests to one vendor at once, each from its own copy of the session read
    before any wrote (as parallel requests or two instances have): exactly one is the first."""
    store, _ = store_and_clock
    session = await store.create(MEMBER)
    read = [await store.get(session.id) for _ in range(20)]
    copies = [replace(c, visited=set(c.visited)) for c in read if c is not None]
    assert len(copies) == 20 and not any("gale" in c.visited for c in copies)
    firsts = await asyncio.gather(*(store.mark_visited(c, "gale") for c in copies))
    assert firsts.count(True) == 1 and firsts.count(False) == 19
    found = await store.get(session.id)
    assert found is not None and found.visited == {"gale"}
    assert await store.mark_visited(found, "gale") is False
    assert await store.mark_visited(found, "jstor") is True


async def test_several_vendors_jars_and_a_touch(store_and_clock: tuple[SessionStore, Clock]) -> None:
    """Every vendor's cookies come back (each jar read when asked for), and a touch keeps the
    session alive without changing what it holds."""
    store, clock = store_and_clock
    session = await store.create(MEMBER)
    for vendor in ("gale", "jstor", "ebsco"):
        await store.set_cookies(session, vendor, [_cookie(f"{vendor}-a"), _cookie(f"{vendor}-b")], clock.now)
        await store.mark_visited(session, vendor)
    for _ in range(5):
        clock.now += 50  # within the idle timeout of 60 s only thanks to the touches
        found = await store.get(session.id)
        assert found is not None
        await store.touch(found)
    found = await store.get(session.id)
    assert found is not None and found.membership == MEMBER and found.visited == {"gale", "jstor", "ebsco"}
    assert "jstor" in found.jars and "wiley" not in found.jars and found.jars.get("wiley") is None
    assert {c.name for c in found.jars["jstor"]} == {"jstor-a", "jstor-b"}
    assert sorted(found.jars) == ["ebsco", "gale", "jstor"] and len(found.jars) == 3
    assert {v: sorted(c.name for c in jar) for v, jar in found.jars.items()} == {
        v: [f"{v}-a", f"{v}-b"] for v in ("ebsco", "gale", "jstor")}


async def test_a_touch_does_not_bring_back_an_ended_session(store_and_clock: tuple[SessionStore, Clock]) -> None:
    """A request in flight when the patron signs out (on another instance) touches its copy of
    the session afterwards: the session stays ended and is not counted."""
    store, clock = store_and_clock
    before = await store.count()  # the Redis server is shared by this module's tests
    session = await store.create(MEMBER)
    copy = await store.get(session.id)
    assert copy is not None
    await store.delete(session.id)
    clock.now += 30
    await store.touch(copy)
    assert await store.get(session.id) is None
    assert await store.count() == before


async def test_sign_out_everywhere(store_and_clock: tuple[SessionStore, Clock]) -> None:
    store, _ = store_and_clock
    patron = Membership(groups=frozenset({"wolcott"}), key=secrets.token_hex(16))
    a, b = await store.create(patron), await store.create(patron)
    other = await store.create(Membership(groups=frozenset({"derby"}), key="o" * 32))
    network = await store.create(Membership(groups=frozenset({"wolcott"}), key=None, source="network"))
    assert await store.delete_patron(patron.key or "") == 2
    assert await store.get(a.id) is None and await store.get(b.id) is None
    assert await store.get(other.id) is not None and await store.get(network.id) is not None


async def test_tickets_once(store_and_clock: tuple[SessionStore, Clock]) -> None:
    store, _ = store_and_clock
    ticket = Ticket("sid", "https://h.example/path?q=1", ("https://a.example",), "bind")
    await store.add_ticket("t" * 32, ticket, 60)
    assert await store.take_ticket("t" * 32) == ticket
    assert await store.take_ticket("t" * 32) is None
    assert await store.take_ticket("u" * 32) is None


@needs_redis
async def test_redis_holds_no_session_id_and_fails_clearly(redis_url: str) -> None:
    import redis

    store = RedisSessionStore(redis_url, idle=60, lifetime=300)
    session = await store.create(MEMBER)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    keys = client.keys("libproxy:*")
    await store.set_cookies(session, "gale", [_cookie("a")], time.time())
    keys = client.keys("libproxy:*")

    def value(key: str) -> object:
        kind = client.type(key)
        if kind == "zset":
            return client.zrange(key, 0, -1)
        return client.get(key) if kind == "string" else client.hgetall(key) if kind == "hash" else sorted(
            client.smembers(key))

    dump = json.dumps({k: value(k) for k in keys})
    assert session.id not in dump
    assert all(0 < client.ttl(k) <= 300 for k in keys)
    client.close()
    await store.close()
    dead = RedisSessionStore("redis://127.0.0.1:1/0", idle=60, lifetime=300, timeout=0.5)
    with pytest.raises(StoreUnavailable):
        await dead.get("x" * 40)
    await dead.close()


@pytest.fixture
def redis_env(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("LIBPROXY_TEST_REDIS", redis_url)
    return redis_url


@needs_redis
async def test_two_instances_one_redis(tmp_path: Path, echo: EchoVendor, redis_env: str) -> None:
    vendor = {"id": "echo", "title": "E", "start": f"{echo.origin}/", "hosts": [echo.origin], "groups": ["wolcott"]}
    config = base_config(tmp_path, [vendor], sessions={"store": "redis", "redis_url": "env:LIBPROXY_TEST_REDIS"})
    async with run_proxy(config) as first, run_proxy(config) as second:
        a = Browser(first)
        assert (await a.sign_in("1000", "1111", f"{echo.origin}/echo")).status == 200
        # The same browser cookies, now served by the other instance.
        b = Browser(second)
        b.cookies = a.cookies
        host = second.proxied_host(echo.origin)
        reply = await b.get(f"http://{host}/echo", follow=False)
        assert reply.status == 200
        await b.sign_out()
        assert (await a.get(f"http://{host}/echo", follow=False)).status == 302
        await a.close()
        await b.close()


@needs_redis
async def test_redis_stopped_and_restarted_is_recovered_without_restart(caplog: pytest.LogCaptureFixture) -> None:
    """Redis goes away: every call fails clearly (the cause named, logged once, not per call);
    Redis comes back: the same store object works again, with no restart of the proxy."""
    from tests.scale_support import RedisProcess, until

    server = RedisProcess()
    server.start()
    store = RedisSessionStore(server.url, idle=60, lifetime=300, timeout=0.5, pool_size=4, pool_wait=0.5)
    try:
        session = await store.create(MEMBER)
        assert await store.count() == 1
        server.stop()
        with caplog.at_level("ERROR", logger="libproxy.sessions"):
            for _ in range(20):
                with pytest.raises(StoreUnavailable) as failure:
                    await store.get(session.id)
        assert "cannot connect" in str(failure.value)
        lines = [r for r in caplog.records if "session store (Redis) unavailable" in r.getMessage()]
        assert len(lines) == 1 and "cannot connect" in lines[0].getMessage()
        server.start()

        async def works() -> bool:
            try:
                await store.count()
                return True
            except StoreUnavailable:
                return False

        await until(works, what="the store to reconnect")
        fresh = await store.create(MEMBER)  # the data went with the restart; the store did not
        assert await store.get(fresh.id) is not None
    finally:
        await store.close()
        server.close()


@needs_redis
async def test_redis_pool_waits_instead_of_failing(redis_url: str) -> None:
    """Far more concurrent calls than pooled connections: they queue for a connection, none fails."""
    store = RedisSessionStore(redis_url, idle=60, lifetime=300, pool_size=2, pool_wait=10)
    try:
        session = await store.create(MEMBER)
        found = await asyncio.gather(*(store.get(session.id) for _ in range(200)))
        assert all(f is not None for f in found)
    finally:
        await store.close()


@needs_redis
async def test_redis_count_does_not_scan(redis_url: str) -> None:
    """count() comes from an index of expiries, trimmed as sessions end; it never walks the keys."""
    import redis

    clock = Clock()
    store = RedisSessionStore(redis_url, idle=60, lifetime=300, clock=clock)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        client.flushdb()
        sessions = [await store.create(MEMBER) for _ in range(5)]
        assert await store.count() == 5
        await store.delete(sessions[0].id)
        assert await store.count() == 4
        clock.now += 61  # idle past the timeout: ended, whether or not Redis has dropped the keys
        assert await store.count() == 0
    finally:
        client.close()
        await store.close()


def test_redis_without_a_secret_is_warned_about(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Instances on several machines need one keyed-hash secret; check-config and the start say so."""
    from proxy.config import warnings

    monkeypatch.setenv("LIBPROXY_TEST_REDIS", "redis://127.0.0.1:1/0")
    config = base_config(tmp_path, [], sessions={"store": "redis", "redis_url": "env:LIBPROXY_TEST_REDIS"})
    found = [w for w in warnings(config) if "[proxy] secret" in w]
    assert len(found) == 1 and "env:LIBPROXY_SECRET" in found[0]
    config = replace(config, proxy=replace(config.proxy, secret="z" * 48))
    assert not [w for w in warnings(config) if "[proxy] secret" in w]
    memory = base_config(tmp_path, [])
    assert not [w for w in warnings(memory) if "[proxy] secret" in w]


@needs_redis
async def test_redis_reads_only_the_vendor_asked_for_and_touch_writes_no_record(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import redis

    clock = Clock()
    store = RedisSessionStore(redis_url, idle=60, lifetime=300, clock=clock)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        session = await store.create(MEMBER)
        for vendor in ("gale", "jstor", "ebsco"):
            await store.set_cookies(session, vendor, [_cookie(f"{vendor}-{i}") for i in range(4)], clock.now)
        parsed: list[str] = []
        real = Cookie.from_json

        def counting(text: str | bytes) -> Cookie | None:
            parsed.append(str(text))
            return real(text)

        monkeypatch.setattr(Cookie, "from_json", counting)
        found = await store.get(session.id)
        assert found is not None and not parsed  # nothing parsed before a jar is asked for
        jar = found.jars.get("jstor")
        assert jar is not None and len(jar) == 4 and len(parsed) == 4  # that vendor's cookies only
        key = "libproxy:j:" + hashlib.sha256(session.id.encode()).hexdigest()
        record = client.hget(key, "s")
        clock.now += 30
        await store.touch(found)
        assert client.hget(key, "s") == record  # the record is not rewritten
        assert float(client.hget(key, "t") or 0) == clock.now
        again = await store.get(session.id)
        assert again is not None and again.last_seen == clock.now
    finally:
        client.close()
        await store.close()
