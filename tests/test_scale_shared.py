"""Several instances on one Redis (issue 13): a session and every vendor cookie shared, one
instance gone and the other carrying on, one lockout, one JWKS following a rotation."""

from __future__ import annotations

import asyncio
import json
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


@pytest.fixture
def redis_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with redis_server() as url:
        monkeypatch.setenv("LIBPROXY_TEST_REDIS", url)
        yield url


def _config(tmp_path: Path, echo: EchoVendor, name: str) -> Any:
    vendor = {"id": "echo", "title": "E", "start": f"{echo.origin}/", "hosts": [echo.origin],
              "groups": ["wolcott"]}
    # Each instance its own state directory, as on two machines: nothing shared through files.
    (tmp_path / name).mkdir(exist_ok=True)
    config = base_config(tmp_path, [vendor], sessions={"store": "redis", "redis_url": "env:LIBPROXY_TEST_REDIS"})
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
