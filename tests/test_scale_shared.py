"""Several instances on one Redis (issue 13): a session and every vendor cookie shared, one
instance gone and the other carrying on, one lockout, one JWKS following a rotation."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy.assertion import rotate_keys_in_redis
from proxy.context import RECORDS, SESSIONS
from tests.redis_server import redis_server, redis_server_path
from tests.scale_support import until
from tests.support import Browser, EchoVendor, RunningProxy, base_config, run_proxy

pytestmark = pytest.mark.skipif(redis_server_path() is None, reason="redis-server is not installed")


SECRET = "s3cret-shared-by-every-instance-" + "x" * 16


@pytest.fixture
def redis_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with redis_server() as url:
        monkeypatch.setenv("LIBPROXY_TEST_REDIS", url)
        monkeypatch.setenv("LIBPROXY_TEST_SECRET", SECRET)
        yield url


def _config(tmp_path: Path, echo: EchoVendor, name: str, **sections: Any) -> Any:
    vendor = {"id": "echo", "title": "E", "start": f"{echo.origin}/", "hosts": [echo.origin],
              "groups": ["wolcott"]}
    # Each instance its own state directory, as on two machines: nothing shared through files,
    # the keyed-hash secret given to each from the environment.
    (tmp_path / name).mkdir(exist_ok=True)
    config = base_config(tmp_path, [vendor], sessions={"store": "redis", "redis_url": "env:LIBPROXY_TEST_REDIS"},
                         proxy={"secret": "env:LIBPROXY_TEST_SECRET"}, **sections)
    from dataclasses import replace

    return replace(config, proxy=replace(config.proxy, state_dir=tmp_path / name / "state"))


async def _jwks(proxy: RunningProxy) -> set[str]:
    browser = Browser(proxy)
    try:
        reply = await browser.get(f"http://{proxy.config.proxy.host}/.well-known/jwks.json")
        return {k["kid"] for k in json.loads(reply.body)["keys"]}
    finally:
        await browser.close()


async def test_two_instances_share_session_cookies_keys_and_lockout(tmp_path: Path, echo: EchoVendor,
                                                                    redis_env: str) -> None:
    first_config, second_config = _config(tmp_path, echo, "a"), _config(tmp_path, echo, "b")
    async with run_proxy(first_config) as first:
        async with run_proxy(second_config) as second:
            # One JWKS for both, and both follow a rotation done once.
            assert await _jwks(first) == await _jwks(second)
            key = await asyncio.to_thread(rotate_keys_in_redis, redis_env, "ES256", 3600.0, 300.0)

            async def both_publish() -> bool:
                return key.kid in await _jwks(first) and key.kid in await _jwks(second)

            await until(both_publish, timeout=30, what="both instances to publish the rotated key")

            # A patron signed in on one instance; concurrent responses on both set cookies.
            a = Browser(first)
            assert (await a.sign_in("1000", "1111", f"{echo.origin}/echo")).status == 200
            b = Browser(second)
            b.cookies = a.cookies
            host = first.proxied_host(echo.origin)
            replies = await asyncio.gather(*(
                (a if i % 2 else b).get(f"http://{host}/set-cookie?c=k{i}%3Dv{i}%3B%20Path%3D%2F", follow=False)
                for i in range(6)))
            assert all(r.status == 200 for r in replies)
            reply = await b.get(f"http://{host}/echo", follow=False)
            sent = dict(reply.json()["headers"]).get("Cookie", "")
            assert {f"k{i}=v{i}" for i in range(6)} <= {c.strip() for c in sent.split(";")}

            # A card locked on one instance is locked on the other.
            memory_a = first.app[RECORDS].security
            memory_b = second.app[RECORDS].security
            for _ in range(memory_a.options.card_max_failures):
                memory_a.note_failure("2000", "203.0.113.9")

            async def locked_on_b() -> bool:
                return memory_b.is_locked("2000")

            await until(locked_on_b, what="the lock to reach the other instance")
            locked = Browser(second)
            refused = await locked.sign_in("2000", "2222")
            assert refused.status == 429  # the right PIN, refused: the card is locked here too
            await locked.close()
        # The second instance is gone (as if killed): the first carries on with the same session.
        try:
            assert (await a.get(f"http://{host}/echo", follow=False)).status == 200
            assert await first.app[SESSIONS].count() >= 1
        finally:
            await a.close()
            await b.close()


async def test_lock_survives_an_instance_restart(tmp_path: Path, echo: EchoVendor, redis_env: str) -> None:
    """Counts are kept in Redis per epoch: an instance started later sees the lock too."""
    async with run_proxy(_config(tmp_path, echo, "a")) as first:
        memory = first.app[RECORDS].security
        for _ in range(memory.options.card_max_failures):
            memory.note_failure("3000", "198.51.100.7")

        async def stored() -> bool:
            import redis

            client = redis.Redis.from_url(redis_env)
            try:
                return any(client.hlen(k) for k in client.keys("libproxy:sec:c:*"))
            finally:
                client.close()

        await until(stored, what="the counts to reach Redis")
    async with run_proxy(_config(tmp_path, echo, "b")) as later:
        assert later.app[RECORDS].security.is_locked("3000")
        assert not later.app[RECORDS].security.is_locked("1000")


async def test_nothing_identifying_crosses_redis(tmp_path: Path, echo: EchoVendor, redis_env: str) -> None:
    import redis

    async with run_proxy(_config(tmp_path, echo, "a")) as first:
        memory = first.app[RECORDS].security
        memory.note_failure("29000100000011", "203.0.113.77")

        async def stored() -> bool:
            client = redis.Redis.from_url(redis_env)
            try:
                return bool(client.keys("libproxy:sec:c:*"))
            finally:
                client.close()

        await until(stored, what="the counts to reach Redis")
        client = redis.Redis.from_url(redis_env, decode_responses=True)
        try:
            dump = ""
            for key in client.keys("*"):
                kind = client.type(key)
                value: object = (client.get(key) if kind == "string" else client.hgetall(key) if kind == "hash"
                                 else client.zrange(key, 0, -1) if kind == "zset" else sorted(client.smembers(key)))
                dump += key + json.dumps(value)
                if key.startswith("libproxy:sec:"):
                    assert 0 < client.ttl(key), key  # everything shared for security expires
        finally:
            client.close()
        assert "29000100000011" not in dump and "203.0.113.77" not in dump


def _dump(url: str) -> dict[str, object]:
    """Every key in Redis and what it holds."""
    import redis

    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        dump: dict[str, object] = {}
        for key in client.keys("*"):
            kind = client.type(key)
            dump[key] = (client.get(key) if kind == "string" else client.hgetall(key) if kind == "hash"
                         else client.zrange(key, 0, -1) if kind == "zset" else sorted(client.smembers(key)))
        return dump
    finally:
        client.close()


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


async def test_redis_holds_nothing_that_recomputes_a_hash(tmp_path: Path, echo: EchoVendor, redis_env: str) -> None:
    """Failed sign-ins on two instances with one secret: the card is locked on both, and no
    value in Redis (salts included) works as the key that made the hashes stored next to it."""
    from proxy.records.security import normalise_client
    from proxy.records.shared_security import derive_epoch_key

    # A few real wrong PINs lock the card from this address; no growing delay to wait through.
    security = {"security": {"max_failures": 3, "slow_after": 50}}
    wrong = {"card": "2000", "client": normalise_client("127.0.0.1")}
    async with run_proxy(_config(tmp_path, echo, "a", records=security)) as first, \
            run_proxy(_config(tmp_path, echo, "b", records=security)) as second:
        guesser = Browser(first)
        try:
            for _ in range(3):
                reply = await guesser.sign_in("2000", "0000")
                assert reply.status != 429
            assert (await guesser.sign_in("29000100000011", "0000")).status != 429
        finally:
            await guesser.close()
        memory_b = second.app[RECORDS].security

        async def locked_on_b() -> bool:
            return memory_b.is_locked("2000", "127.0.0.1")

        await until(locked_on_b, what="the lock to reach the other instance")
        owner = Browser(second)
        try:
            assert (await owner.sign_in("2000", "2222")).status == 429  # the right PIN, locked here too
        finally:
            await owner.close()

        def counted() -> bool:
            return any(k.startswith("libproxy:sec:c:") and v for k, v in _dump(redis_env).items())

        await until(lambda: asyncio.to_thread(counted), what="the counts to reach Redis")
        dump = await asyncio.to_thread(_dump, redis_env)

    assert not [k for k in dump if k.startswith("libproxy:sec:k:")]  # no key of the old layout
    salts = {int(k.rsplit(":", 1)[1]): bytes.fromhex(str(v)) for k, v in dump.items()
             if k.startswith("libproxy:sec:salt:")}
    digests = {field.split("|")[0] for k, v in dump.items() if k.startswith("libproxy:sec:c:")
               for field in v}  # type: ignore[union-attr]
    assert salts and digests
    messages = [f"card\x1f{wrong['card']}", f"pair\x1f{wrong['card']}\x1f{wrong['client']}",
                f"client\x1f{wrong['client']}", "card\x1f29000100000011"]

    def made_with(key: bytes) -> set[str]:
        return {hmac.new(key, m.encode(), hashlib.sha256).digest()[:16].hex() for m in messages} & digests

    # Every value Redis holds, as text and (when it is hex) as the bytes it spells, tried as the key.
    candidates: set[bytes] = set()
    for text in [*dump, *(s for v in dump.values() for s in _strings(v))]:
        candidates.add(text.encode())
        with contextlib.suppress(ValueError):
            candidates.add(bytes.fromhex(text))
    for candidate in candidates:
        assert not made_with(candidate)
    # Not a vacuous check: with the secret, the salt gives the key that made the card's hashes.
    derived = set().union(*(made_with(derive_epoch_key(SECRET.encode(), salt, i)) for i, salt in salts.items()))
    assert len(derived) >= 3
    assert "29000100000011" not in json.dumps(dump)


async def test_a_key_set_lost_from_redis_is_put_back(redis_env: str, caplog: pytest.LogCaptureFixture) -> None:
    """FLUSHALL, eviction or a Redis restarted without persistence: the running instances put
    their key set back (one wins), so an instance started afterwards publishes the same JWKS."""
    from redis import asyncio as aioredis

    from proxy.assertion import REDIS_KEYS, AssertionMinter, RedisKeyRing

    clients = [aioredis.Redis.from_url(redis_env, decode_responses=True) for _ in range(3)]
    try:
        first, second = RedisKeyRing(clients[0], "ES256"), RedisKeyRing(clients[1], "ES256")
        await first.open()
        await second.open()
        before = AssertionMinter(first, issuer="https://p", scope="s", lifetime=300).jwks()
        for _ in range(2):  # once with one ring noticing, once with both at the same moment
            await clients[2].delete(REDIS_KEYS)
            caplog.clear()
            changed = await asyncio.gather(first.refresh(), second.refresh())
            assert changed == [False, False]  # the same set as before, on both
            restored = [r for r in caplog.records if "missing from Redis" in r.getMessage()]
            assert len(restored) == 1 and restored[0].levelname == "ERROR"
            assert "noeviction" in restored[0].getMessage()
        later = RedisKeyRing(clients[2], "ES256")
        await later.open()
        assert [k.kid for k in later.keys] == [k.kid for k in first.keys] == [k.kid for k in second.keys]
        for ring in (first, second, later):
            assert AssertionMinter(ring, issuer="https://p", scope="s", lifetime=300).jwks() == before
    finally:
        for client in clients:
            await client.aclose()


async def test_a_salt_lost_from_redis_is_put_back(redis_env: str, caplog: pytest.LogCaptureFixture) -> None:
    """The security memory's salts vanishing: a running instance puts its own back, so an
    instance started afterwards hashes as it does and sees its locks."""
    from redis import asyncio as aioredis

    from proxy.records.security import SecurityMemory
    from proxy.records.shared_security import RedisSharedCounters

    redis = aioredis.Redis.from_url(redis_env, decode_responses=True)
    memory_a, memory_b = SecurityMemory(), SecurityMemory()
    a = RedisSharedCounters(redis, memory_a, SECRET.encode())
    await a.start()
    try:
        for _ in range(memory_a.options.card_max_failures):
            memory_a.note_failure("2000")
        await redis.flushall()
        caplog.clear()
        await a._fetch_keys()  # what its key loop does every minute
        assert len([r for r in caplog.records if "missing from Redis" in r.getMessage()]) == 1
        b = RedisSharedCounters(redis, memory_b, SECRET.encode())
        await b.start()
        try:
            assert b._keys == a._keys
            memory_a.note_failure("3000")  # counted on a, seen by b: the same hashes

            async def shared() -> bool:
                return memory_b.entries > 0

            await until(shared, what="b to receive a's increment")
            for _ in range(memory_b.options.card_max_failures):
                memory_b.note_failure("4000")

            async def locked_on_a() -> bool:
                return memory_a.is_locked("4000")

            await until(locked_on_a, what="b's lock to reach a")
        finally:
            await b.close()
    finally:
        await a.close()
        await redis.aclose()


async def test_a_cleared_lock_is_cleared_on_every_instance(redis_env: str) -> None:
    """A lock cleared from the staff console of one instance, or by a correct sign-in there,
    ends on the others, and an instance started afterwards does not load it from Redis."""
    from redis import asyncio as aioredis

    from proxy.records.security import SecurityMemory
    from proxy.records.shared_security import RedisSharedCounters

    redis = aioredis.Redis.from_url(redis_env, decode_responses=True)
    memory_a, memory_b = SecurityMemory(), SecurityMemory()
    a = RedisSharedCounters(redis, memory_a, SECRET.encode())
    b = RedisSharedCounters(redis, memory_b, SECRET.encode())
    await a.start()
    await b.start()

    async def later_sees_lock() -> bool:
        """What an instance started now would load from Redis."""
        memory = SecurityMemory()
        counters = RedisSharedCounters(redis, memory, SECRET.encode())
        await counters.start()
        try:
            return memory.is_locked("5000", "192.0.2.5")
        finally:
            await counters.close()

    async def lock_on_a() -> None:
        for _ in range(memory_a.options.max_failures):
            memory_a.note_failure("5000", "192.0.2.5")

        async def both() -> bool:
            return memory_b.is_locked("5000", "192.0.2.5") and await later_sees_lock()

        await until(both, what="the lock to reach the other instance and Redis")

    async def unlocked_everywhere() -> bool:
        return not memory_a.is_locked("5000", "192.0.2.5") and not await later_sees_lock()

    try:
        # The staff console of instance b clears the lock (as /it/locks/clear does).
        await lock_on_a()
        pseudonym, category, _ = next(row for row in memory_b.locked() if row[1] == "pair")
        assert memory_b.clear(pseudonym, category) == 1
        assert not memory_b.is_locked("5000", "192.0.2.5")
        await until(unlocked_everywhere, what="the cleared lock to end on a and in Redis")

        # A correct sign-in on instance b clears the card's failures everywhere.
        await lock_on_a()
        memory_b.note_success("5000", "192.0.2.5")
        await until(unlocked_everywhere, what="the sign-in to clear the lock on a and in Redis")
        assert memory_a.is_locked("5000", "192.0.2.5") is False
    finally:
        await a.close()
        await b.close()
        await redis.aclose()


async def test_a_lock_this_instance_missed_is_cleared_from_it_on_every_instance(
        redis_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Instance a missed the increments that locked a card on b and in Redis (its subscription
    was down): a correct sign-in on a, or a staff clear on a of a lock it holds only in part,
    still ends the lock on b and in Redis."""
    from redis import asyncio as aioredis

    from proxy.records.security import SecurityMemory
    from proxy.records.shared_security import RedisSharedCounters

    card, client = "6000", "192.0.2.6"
    redis = aioredis.Redis.from_url(redis_env, decode_responses=True)
    memory_a, memory_b = SecurityMemory(), SecurityMemory()
    a = RedisSharedCounters(redis, memory_a, SECRET.encode())
    b = RedisSharedCounters(redis, memory_b, SECRET.encode())
    await a.start()
    await b.start()

    async def later_sees_lock() -> bool:
        """What an instance started now would load from Redis."""
        memory = SecurityMemory()
        counters = RedisSharedCounters(redis, memory, SECRET.encode())
        await counters.start()
        try:
            return memory.is_locked(card, client)
        finally:
            await counters.close()

    async def lock_on_b_unseen_by_a(seen_by_a: int) -> None:
        """b counts the pair up to its limit; a receives only the first ``seen_by_a``."""
        limit = memory_b.options.max_failures
        for _ in range(seen_by_a):
            memory_b.note_failure(card, client)

        async def a_caught_up() -> bool:
            return memory_a._estimate("card", card, time.time()) >= seen_by_a

        await until(a_caught_up, timeout=10, what="a to receive b's first increments")
        async def locked_on_b_and_in_redis() -> bool:
            return memory_b.is_locked(card, client) and await later_sees_lock()

        with monkeypatch.context() as patch:
            patch.setattr(a, "_receive", lambda data: None)  # a's subscription down
            for _ in range(limit - seen_by_a):
                memory_b.note_failure(card, client)
            await until(locked_on_b_and_in_redis, timeout=10, what="the lock on b and in Redis")
        assert not memory_a.is_locked(card, client)  # a missed the rest

    async def unlocked_everywhere() -> bool:
        return not memory_b.is_locked(card, client) and not await later_sees_lock()

    try:
        # A correct sign-in on a, which never saw any of the failures.
        await lock_on_b_unseen_by_a(0)
        assert memory_a.entries == 0
        memory_a.note_success(card, client)
        await until(unlocked_everywhere, timeout=10, what="a's sign-in to clear the lock on b and in Redis")

        # The staff console's page came from b; the clear reached a, which saw half the failures.
        await lock_on_b_unseen_by_a(memory_b.options.max_failures // 2)
        pseudonym, category, _ = next(row for row in memory_b.locked() if row[1] == "pair")
        assert memory_a.locked() == []
        assert memory_a.clear(pseudonym, category) == 1
        await until(unlocked_everywhere, timeout=10, what="a's clear to end the lock on b and in Redis")
    finally:
        await a.close()
        await b.close()
        await redis.aclose()


async def test_a_salt_replaced_in_redis_is_reported_once_as_counts_dropped(
        redis_env: str, caplog: pytest.LogCaptureFixture) -> None:
    """Redis lost its data and an instance started before a running one put its salt back: the
    running one adopts the new salt (all must hash alike), which drops the epoch's counts and so
    unlocks what was locked. That is said, as an error, once."""
    from redis import asyncio as aioredis

    from proxy.records.security import SecurityMemory
    from proxy.records.shared_security import RedisSharedCounters

    redis = aioredis.Redis.from_url(redis_env, decode_responses=True)
    memory_a, memory_c = SecurityMemory(), SecurityMemory()
    a = RedisSharedCounters(redis, memory_a, SECRET.encode())
    c = RedisSharedCounters(redis, memory_c, SECRET.encode())
    await a.start()
    try:
        for _ in range(memory_a.options.card_max_failures):
            memory_a.note_failure("7000")
        assert memory_a.is_locked("7000")
        await redis.flushall()
        await c.start()  # before a's key loop: c makes new salts
        try:
            caplog.clear()
            with caplog.at_level("ERROR", logger="libproxy.records"):
                await a._fetch_keys()  # what its key loop does every minute
                await a._fetch_keys()
            assert a._keys == c._keys
            assert not memory_a.is_locked("7000")
            said = [r for r in caplog.records if "shared salt" in r.getMessage()]
            assert len(said) == 1 and said[0].levelname == "ERROR", [r.getMessage() for r in caplog.records]
            message = said[0].getMessage()
            assert "Redis lost its data" in message and "docs/operations.md" in message
            assert "counts were dropped (2 here)" in message  # the card, and the card from no address
        finally:
            await c.close()
    finally:
        await a.close()
        await redis.aclose()
