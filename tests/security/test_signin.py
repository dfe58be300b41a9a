"""bad-inputs.md section 9: PIN guessing, lockout, enumeration; issue 11 finding 1 and the
"locking out the real patron" item.

The patron directory here is a RemoteAuth service on loopback that the test can observe and
hold: it counts the checks it is asked for, per card, and while its gate is closed it keeps
every check waiting. That makes "how many guesses reached the directory" a count, not a
timing, and lets a burst of concurrent sign-ins be in flight at once, deterministically.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.remoteauth_server import EgPatron, RemoteAuthService
from tests.security.conftest import WAIT, World, default_vendor, open_world
from tests.support import PROXY_HOST, EchoVendor


@dataclass
class Directory(RemoteAuthService):
    """A RemoteAuth service that counts the checks per card and can hold them."""

    asked: Counter[str] = field(default_factory=Counter)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def basic(self, request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        card = base64.b64decode(header[6:]).decode("utf-8").partition(":")[0] if header.startswith("Basic ") else ""
        self.asked[card] += 1
        self.changed.set()
        await asyncio.wait_for(self.gate.wait(), WAIT)
        return await super().basic(request)


async def until(condition: Callable[[], bool], changed: asyncio.Event, what: str, timeout: float = WAIT) -> None:
    """Wait until ``condition()`` holds, re-checking whenever ``changed`` is set; bounded."""
    deadline = time.monotonic() + timeout
    while not condition():
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"timed out waiting for {what}"
        changed.clear()
        if condition():
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), min(remaining, 1.0))


@contextlib.asynccontextmanager
async def signin_world(tmp_path: Path, echo: EchoVendor, **security: Any) -> AsyncIterator[tuple[World, Directory]]:
    directory = Directory(patrons={"1000": EgPatron("1111"), "2000": EgPatron("2222"), "3000": EgPatron("3333")})
    directory.gate.set()
    async with directory:
        patrons = {"source": "remoteauth",
                   "remoteauth": {"servers": [directory.origin], "form": "basic", "path": "/api/basicauth",
                                  "groups": ["wolcott", "bibliomation"], "connect_timeout": "5s",
                                  "response_timeout": "40s", "timeout": "40s"}}
        records = {"security": {"slow_after": 1000, **security}}
        async with open_world(tmp_path, echo=echo, vendors=[default_vendor(echo)], patrons=patrons,
                              records=records) as world:
            yield world, directory


async def post_sign_in(world: World, card: str, pin: str, address: str = "127.0.0.1",
                       headers: tuple[str, ...] = ()) -> int:
    token = secrets.token_hex(16)
    status, _, _ = await world.fetch(
        "/login", host=PROXY_HOST, method="POST", cookie=f"libproxy_csrf={token}", local_addr=address,
        headers=("Content-Type: application/x-www-form-urlencoded", *headers),
        body=f"csrf={token}&url=&card={card}&pin={pin}".encode())
    return status


async def test_signin_9_concurrent_guesses_cannot_outrun_the_lockout_issue11_finding1(tmp_path: Path,
                                                                                    echo: EchoVendor) -> None:
    """Before the fix, login_submit checked is_locked(), awaited the directory, and counted the
    failure afterwards: 61 simultaneous POSTs for one card (60 wrong, then the right PIN) were
    all sent to the directory (61 checks) and the right one signed in. Now attempts are reserved
    before the directory is asked and at most a few per client are in flight."""
    async with signin_world(tmp_path, echo) as (world, directory):
        directory.gate.clear()
        before = directory.asked["1000"]  # the harness's attacker signed in with this card
        done: list[int] = []

        async def guess(pin: str) -> int:
            status = await post_sign_in(world, "1000", pin)
            done.append(status)
            directory.changed.set()
            return status

        wrong = [asyncio.create_task(guess(f"{n:04d}")) for n in range(60)]
        # Every guess has been answered or is at the directory (before the fix: all 60 at the
        # directory); the ones that wait for the card's lock count as neither, at most a few.
        await until(lambda: len(done) + directory.asked["1000"] - before >= 55, directory.changed,
                    "the burst to settle")
        right = asyncio.create_task(guess("1111"))
        await until(lambda: right.done() or directory.asked["1000"] - before > 60, directory.changed, "the right PIN")
        await world.bystander.served()  # the bystander signed in before and keeps reading
        directory.gate.set()
        statuses = await asyncio.wait_for(asyncio.gather(*wrong), WAIT)
        right_status = await asyncio.wait_for(right, WAIT)
        assert right_status != 303, "the right PIN got in among concurrent guesses"
        assert right_status == 429
        assert set(statuses) <= {401, 429} and statuses.count(429) >= 50
        assert directory.asked["1000"] - before <= 10, directory.asked  # max_failures
        assert world.since(0) and all(r.path != "/databases" for r in world.since(0))


async def test_signin_9_concurrent_guesses_from_many_addresses_bounded_per_card(tmp_path: Path,
                                                                              echo: EchoVendor) -> None:
    """The same burst spread over twelve addresses (five guesses each): the per-card queue, not
    the per-client one, bounds it."""
    async with signin_world(tmp_path, echo) as (world, directory):
        directory.gate.clear()
        before = directory.asked["1000"]  # the harness's attacker signed in with this card
        done: list[int] = []

        async def guess(pin: str, address: str) -> int:
            status = await post_sign_in(world, "1000", pin, address)
            done.append(status)
            directory.changed.set()
            return status

        wrong = [asyncio.create_task(guess(f"{n:04d}", f"127.0.1.{n % 12 + 1}")) for n in range(60)]
        await until(lambda: len(done) + directory.asked["1000"] - before >= 55, directory.changed,
                    "the burst to settle")
        right = asyncio.create_task(guess("1111", "127.0.2.1"))
        await until(lambda: right.done() or directory.asked["1000"] - before > 60, directory.changed, "the right PIN")
        directory.gate.set()
        await asyncio.wait_for(asyncio.gather(*wrong), WAIT)
        assert await asyncio.wait_for(right, WAIT) == 429
        assert directory.asked["1000"] - before <= 10, directory.asked


async def test_signin_9_owner_not_locked_out_from_another_address_issue11(tmp_path: Path, echo: EchoVendor) -> None:
    """Before the fix, ten wrong PINs from one address locked the card everywhere for 15-30
    minutes (429 for the owner). Now the lock is per card and address (and a card-wide ceiling
    of 100): the attacker's address is locked, the owner's is not."""
    async with signin_world(tmp_path, echo) as (world, directory):
        before = directory.asked["1000"]  # the harness's attacker signed in with this card
        for n in range(10):
            assert await post_sign_in(world, "1000", f"{n:04d}", "127.0.0.20") == 401
        asked = directory.asked["1000"]
        assert asked == before + 10
        # The attacker's address is locked, even for the right PIN; the directory is not asked.
        assert await post_sign_in(world, "1000", "0010", "127.0.0.20") == 429
        assert await post_sign_in(world, "1000", "1111", "127.0.0.20") == 429
        assert directory.asked["1000"] == asked
        # The owner, from home: signed in.
        assert await post_sign_in(world, "1000", "1111", "127.0.0.21") == 303
        await world.bystander.served()


async def test_signin_9_vertical_brute_force_ezproxy_intruderuserattempts(tmp_path: Path, echo: EchoVendor) -> None:
    async with signin_world(tmp_path, echo) as (world, directory):
        statuses = [await post_sign_in(world, "3000", f"{n:04d}", "127.0.0.22") for n in range(30)]
        assert statuses[:10] == [401] * 10 and set(statuses[10:]) == {429}
        assert directory.asked["3000"] == 10
        # Spelling the card differently does not buy fresh guesses.
        for spelling in ("3 000", "30-00", " 3000 "):
            assert await post_sign_in(world, spelling, "0099", "127.0.0.22") == 429, spelling
        assert await post_sign_in(world, "3000", "3333", "127.0.0.22") == 429
        assert directory.asked["3000"] == 10


async def test_signin_9_horizontal_guessing_per_client_limit_ezproxy_intruderipattempts(tmp_path: Path,
                                                                                      echo: EchoVendor) -> None:
    """PIN 1234 against sequential cards from one address: the per-client limit trips."""
    async with signin_world(tmp_path, echo, client_max_failures=12) as (world, directory):
        statuses = [await post_sign_in(world, f"2999900000{n:04d}", "1234", "127.0.0.23") for n in range(20)]
        assert statuses[:12] == [401] * 12 and set(statuses[12:]) == {429}
        assert sum(directory.asked.values()) - directory.asked["1000"] - directory.asked["2000"] == 12


async def test_signin_9_horizontal_guessing_many_addresses_global_limit_owasp_stuffing(tmp_path: Path,
                                                                                     echo: EchoVendor) -> None:
    async with signin_world(tmp_path, echo, global_max_failures=15) as (world, directory):
        statuses = [await post_sign_in(world, f"2999900001{n:04d}", "1234", f"127.0.3.{n + 1}") for n in range(25)]
        assert statuses[:15] == [401] * 15 and set(statuses[15:]) == {429}
        guessed = sum(n for card, n in directory.asked.items() if card.startswith("29999"))
        assert guessed == 15


async def test_signin_9_forwarded_headers_do_not_dodge_the_limit_ezproxy_acceptxff(tmp_path: Path,
                                                                                 echo: EchoVendor) -> None:
    async with signin_world(tmp_path, echo) as (world, directory):
        statuses = []
        for n in range(14):
            spoof = f"10.9.{n}.1"
            statuses.append(await post_sign_in(world, "3000", f"{n:04d}", "127.0.0.24",
                                               headers=(f"X-Forwarded-For: {spoof}", f"X-Real-IP: {spoof}",
                                                        f"Forwarded: for={spoof}", f"True-Client-IP: {spoof}")))
        assert statuses[:10] == [401] * 10 and set(statuses[10:]) == {429}
        assert directory.asked["3000"] == 10


async def test_signin_9_lockout_reveals_nothing_about_the_card_owasp_enumeration(tmp_path: Path,
                                                                              echo: EchoVendor) -> None:
    async with signin_world(tmp_path, echo) as (world, _):
        pages = {}
        for card in ("3000", "3999999"):
            for n in range(10):
                assert await post_sign_in(world, card, f"{n:04d}", "127.0.0.25") == 401
            token = secrets.token_hex(16)
            status, headers, body = await world.fetch(
                "/login", host=PROXY_HOST, method="POST", cookie=f"libproxy_csrf={token}", local_addr="127.0.0.25",
                headers=("Content-Type: application/x-www-form-urlencoded",),
                body=f"csrf={token}&url=&card={card}&pin=0000".encode())
            pages[card] = (status, headers.get("x-libproxy-reason"), body)
        assert pages["3000"] == pages["3999999"]
        assert pages["3000"][0] == 429


@pytest.mark.parametrize("size", [16 * 1024 + 1, 200 * 1024])
async def test_signin_10_sign_in_form_is_size_limited_issue11(world: World, size: int) -> None:
    """The sign-in form stays small (16 KiB) while vendor forms may be larger (see test_limits)."""
    token = secrets.token_hex(16)
    body = f"csrf={token}&url=&card=1000&pin=1111&pad=".encode() + b"x" * size
    status, _, _ = await world.fetch("/login", host=PROXY_HOST, method="POST", cookie=f"libproxy_csrf={token}",
                                     headers=("Content-Type: application/x-www-form-urlencoded",), body=body)
    assert status == 413
