"""The security memory shared by several instances through Redis, under the same rotating keys.

Each instance keeps its own ``SecurityMemory`` (its checks stay synchronous and cheap, and
``SignInGuard`` is unchanged); what makes the instances agree:

* **one key per epoch for all, never in Redis**: the first instance to need epoch N makes a
  32-byte random *salt* and stores it with ``SET NX`` (the others read the winner's), expiring
  when the epoch's counters must be unreachable (two rotations after it began, plus a minute).
  Every instance derives the epoch's key as ``HMAC-SHA256(keyed-hash secret, label || salt ||
  N)``: the secret (``[proxy] secret``) is the same on every instance and is never written to
  Redis, so a copy of Redis (salts, keyed hashes, counts) does not let anyone test card numbers
  or addresses against the hashes. Salts for the current and the next epoch are fetched ahead,
  so a rotation never waits on Redis. Once an epoch's salt has expired and every instance has
  dropped the epoch, its key cannot be derived again, even with the secret;
* **every increment to every instance**: a failed sign-in counted on one instance is published
  (epoch, keyed hash, category, window, n) and added by the others within a round trip, so a
  card locked on one instance is locked on all of them;
* **a cleared counter is cleared everywhere**: a sign-in that succeeded (which clears the card's
  failures) and a lock cleared from the staff console are published the same way, and removed
  from the epoch's sums in Redis, so no instance (nor one started later) keeps the lock;
* **a restarted instance catches up**: increments are also summed per window in a Redis hash per
  epoch (expiring with the epoch's salt), read once at start.

What crosses Redis is what the memory holds: keyed hashes and counts, never a card number,
address, patron key or hashing key. Instances with different secrets compute different hashes
and so do not share locks: ``check-config`` warns when Redis sessions are used without an
explicit ``[proxy] secret``. If Redis is unreachable each instance goes on counting on its own
(and says so, once a minute), exactly as a single instance would. If Redis loses its data the
running instances put their salts back; should another instance have made a new salt first,
all adopt it, which drops the epoch's counts (unlocking what was locked): logged as an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from proxy.ratelog import RateLimitedLog
from proxy.records.security import SecurityMemory

log = logging.getLogger("libproxy.records")

CHANNEL = "libproxy:sec"
_SALT = "libproxy:sec:salt:"  # + epoch index: the epoch's salt (hex); the key is derived from it
# The previous version stored each epoch's hashing key itself here: removed at start.
_LEGACY_KEY = "libproxy:sec:k:"
# Keeps epoch keys apart from every other HMAC the proxy makes with the same secret.
_LABEL = b"libproxy security memory epoch key\x00"
_COUNTS = "libproxy:sec:c:"  # + epoch index: hash of "digest|category|window|start" -> count
_GLOBAL = "libproxy:sec:g"  # hash of "window|start" -> count (names nobody)
MAX_OUTBOX = 10_000  # increments waiting for Redis; beyond that the oldest are dropped


def derive_epoch_key(secret: bytes, salt: bytes, index: int) -> bytes:
    """The hashing key of epoch ``index``: what every instance with the same secret computes
    from the salt stored in Redis (and what nobody can compute from Redis alone)."""
    return hmac.new(secret, _LABEL + salt + index.to_bytes(8, "big", signed=True), hashlib.sha256).digest()


class RedisSharedCounters:
    def __init__(self, redis: aioredis.Redis, memory: SecurityMemory, secret: bytes,
                 clock: Callable[[], float] = time.time) -> None:
        if not secret:
            raise ValueError("the shared security memory needs the keyed-hash secret")
        self._redis = redis
        self._secret = secret
        self._memory = memory
        self._rotate = memory.options.rotate
        self._clock = clock
        self._instance = secrets.token_hex(8)
        self._keys: dict[int, bytes] = {}
        self._salts: dict[int, str] = {}  # hex, as in Redis: put back should Redis lose them
        # (epoch index, digest, category, window, n or None for a cleared counter, time)
        self._outbox: list[tuple[int, bytes, str, float, int | None, float]] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._log = RateLimitedLog(log, 60.0)
        self.ready = False  # keys fetched: the readiness check asks

    # -- SharedCounters (called synchronously by SecurityMemory) ----------------------------------

    def epoch_key(self, index: int) -> bytes | None:
        key = self._keys.get(index)
        if key is None and index >= int(self._clock() // self._rotate):
            self._log.warning("security memory: no shared key for the current epoch yet (Redis unreachable?): "
                              "this instance counts failed sign-ins on its own until Redis answers")
        return key

    def publish(self, index: int, digest: bytes, category: str, window: float, n: int, now: float) -> None:
        if len(self._outbox) >= MAX_OUTBOX:
            del self._outbox[0]
        self._outbox.append((index, digest, category, window, n, now))
        self._wake.set()

    def publish_forget(self, index: int, digest: bytes, category: str, window: float, now: float) -> None:
        if len(self._outbox) >= MAX_OUTBOX:
            del self._outbox[0]
        self._outbox.append((index, digest, category, window, None, now))
        self._wake.set()

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Fetch the epoch keys and the counts so far, then follow the others' increments."""
        # Set before the counts are loaded: an epoch the memory makes while loading them must
        # take the shared key, or the loaded counts would be filed under a key nobody else has.
        self._memory.shared = self
        try:
            # SECURITY: the previous version kept each epoch's key in Redis next to its hashes:
            # deleting the keys makes those hashes unlinkable to any card.
            current = self._index()
            await self._redis.delete(*(f"{_LEGACY_KEY}{i}" for i in (current - 1, current, current + 1)))
            await self._fetch_keys()
            await self._load_counts()
        except (RedisError, OSError) as exc:
            log.error("security memory: Redis unreachable at start (%s): counting locally until it answers",
                      type(exc).__name__)
        except ValueError:
            # A damaged count in Redis: counting goes on from what this instance sees.
            log.error("security memory: unreadable counts in Redis were ignored at start")
        self._tasks = [asyncio.create_task(self._sender(), name="libproxy-sec-send"),
                       asyncio.create_task(self._receiver(), name="libproxy-sec-receive"),
                       asyncio.create_task(self._key_loop(), name="libproxy-sec-keys")]

    async def close(self) -> None:
        self._memory.shared = None
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(2):
                await self._flush()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- keys -----------------------------------------------------------------------------------

    def _index(self) -> int:
        return int(self._clock() // self._rotate)

    async def _fetch_keys(self) -> None:
        current = self._index()
        restored = 0
        changed: list[int] = []  # epochs whose salt in Redis is not the one this instance used
        for index in (current - 1, current, current + 1):
            name = f"{_SALT}{index}"
            # SECURITY: the salt expires when the epoch's counters must be unreachable: after
            # that, its key cannot be derived again, the secret notwithstanding.
            expires = int((index + 2) * self._rotate + 60)
            mine = self._salts.get(index)
            if mine is not None:
                # A salt gone from Redis (flushed, evicted, Redis restarted) is put
                # back, or an instance starting now would make another and hash apart from us.
                restored += bool(await self._redis.set(name, mine, nx=True, exat=expires))
            elif index >= current:
                await self._redis.set(name, secrets.token_hex(32), nx=True, exat=expires)
            raw = await self._redis.get(name)
            if raw is None or _s(raw) == mine:
                continue
            try:
                salt = bytes.fromhex(_s(raw))
            except ValueError:
                self._log.warning("security memory: the salt of epoch %d in Redis is damaged", index)
                continue
            # SECURITY: only the salt is in Redis; the key needs the secret as well. A salt that
            # replaced ours (another instance made a new one after Redis lost ours) is adopted:
            # all agree again, at the price of the counts hashed under the old key.
            if mine is not None:
                changed.append(index)
            self._salts[index] = _s(raw)
            self._keys[index] = derive_epoch_key(self._secret, salt, index)
        if restored:
            log.error("security memory: the salts of the live epochs were missing from Redis and were restored "
                      "from this instance's copy; run Redis with maxmemory-policy noeviction (docs/operations.md)")
        for old in [i for i in self._keys if i < current - 1]:
            del self._keys[old]
            self._salts.pop(old, None)
        dropped = self._memory.adopt_keys(self._keys)
        if changed:
            # Said once per change (the new salt is ours from now on): every instance that used
            # the old salt drops the same counts, so cards locked until now are unlocked.
            log.error("security memory: the shared salt of epoch(s) %s changed in Redis (Redis lost its data: "
                      "flushed, evicted or restarted, and an instance made a new salt before one could be "
                      "put back); their failed sign-in and usage counts were dropped (%d here), so cards "
                      "and addresses locked until now are unlocked. Run Redis with maxmemory-policy "
                      "noeviction (docs/operations.md)",
                      ", ".join(map(str, changed)), dropped)
        self.ready = current in self._keys

    async def _key_loop(self) -> None:
        while True:
            await asyncio.sleep(min(60.0, self._rotate / 10))
            try:
                await self._fetch_keys()
            except (RedisError, OSError) as exc:
                self._log.warning("security memory: cannot fetch the shared keys (%s)", type(exc).__name__)

    # -- increments -----------------------------------------------------------------------------

    async def _load_counts(self) -> None:
        current = self._index()
        for index in (current - 1, current):
            fields = {_s(k): int(v) for k, v in (await self._redis.hgetall(f"{_COUNTS}{index}")).items()}
            for field, count in sorted(fields.items(), key=lambda kv: float(kv[0].rsplit("|", 1)[1])):
                digest, category, window, start = field.split("|")
                self._memory.apply(index, bytes.fromhex(digest), category, float(window), int(count), float(start))
        for raw, total in (await self._redis.hgetall(_GLOBAL)).items():
            window, start = _s(raw).split("|")
            self._memory.apply(-1, b"", "global", float(window), int(total), float(start))

    async def _flush(self) -> None:
        batch, self._outbox = self._outbox, []
        if not batch:
            return
        # On failure the batch is lost to the others (counted here all the same; said once a minute).
        async with self._redis.pipeline(transaction=False) as pipe:
            for index, digest, category, window, n, now in batch:
                start = now - now % window
                # A cleared counter travels as "clear" in the place of the count (an older
                # instance ignores the message: it is not a number).
                pipe.publish(CHANNEL, f"{self._instance}|{index}|{digest.hex()}|{category}|{window}|"
                                      f"{'clear' if n is None else n}|{now}")
                if n is None:
                    # A live counter spans the current window and the one before: both sums go.
                    starts = (start, start - window)
                    if index == -1:
                        pipe.hdel(_GLOBAL, *(f"{window}|{s}" for s in starts))
                    else:
                        pipe.hdel(f"{_COUNTS}{index}", *(f"{digest.hex()}|{category}|{window}|{s}" for s in starts))
                elif index == -1:
                    pipe.hincrby(_GLOBAL, f"{window}|{start}", n)
                    pipe.expire(_GLOBAL, int(2 * window) + 60)
                else:
                    name = f"{_COUNTS}{index}"
                    pipe.hincrby(name, f"{digest.hex()}|{category}|{window}|{start}", n)
                    pipe.expireat(name, int((index + 2) * self._rotate + 60))
            await pipe.execute()

    async def _sender(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._flush()
            except (RedisError, OSError) as exc:
                self._log.warning("security memory: cannot share counts with the other instances (%s)",
                                  type(exc).__name__)
                await asyncio.sleep(1)

    async def _receiver(self) -> None:
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CHANNEL)
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._receive(message["data"])
            except (RedisError, OSError) as exc:
                self._log.warning("security memory: not receiving the other instances' counts (%s)",
                                  type(exc).__name__)
                await asyncio.sleep(1)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _receive(self, data: str | bytes) -> None:
        text = _s(data)
        try:
            origin, index, digest, category, window, n, at = text.split("|")
            if origin == self._instance:
                return
            if n == "clear":
                self._memory.forget(int(index), bytes.fromhex(digest))
            else:
                self._memory.apply(int(index), bytes.fromhex(digest), category, float(window), int(n), float(at))
        except ValueError:
            return  # not one of ours: ignored


def _s(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
