"""Sharing upstream connections fairly: no client can take a vendor away from everyone.

Two kinds of slots, both held from the moment a request leaves until its answer has been relayed
(a slow PDF download holds its slots for as long as it streams):

* per client (a session, or the client's address for anonymous use): a few parallel requests,
  well below the pool, so one patron or one trickling script cannot fill it;
* per vendor host: the connection pool's own size, so a full pool is known here, answered with a
  clear "busy" page after a short wait and logged as such, instead of every other patron waiting
  on aiohttp's connector until a timeout that the log would blame on the vendor.

Whoever watches (the metrics) gives ``on_wait``: it hears of the holds that had to queue, and of
those turned away, never of a slot taken at once, so the usual case pays nothing for it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from types import TracebackType


@dataclass
class _Slot:
    semaphore: asyncio.Semaphore
    users: int = 0  # holders and waiters; the slot is dropped when it falls to zero
    held: int = 0


# (key, seconds waited, turned away): called after a hold queued for a slot.
OnWait = Callable[[str, float, bool], None]


@dataclass
class Slots:
    """Counting semaphores by key, made on first use and forgotten when idle (so a key, which
    may name a session, lives no longer than its requests)."""

    limit: int
    wait: float  # seconds a request may queue for a slot
    on_wait: OnWait | None = None
    _slots: dict[str, _Slot] = field(default_factory=dict)

    def resized(self, limit: int, wait: float) -> Slots:
        """New slots of another size, told to the same watcher. Holds in progress release theirs
        on this object; new ones share the new one."""
        return Slots(limit, wait, self.on_wait)

    def hold(self, key: str) -> AbstractAsyncContextManager[bool]:
        """``async with slots.hold(key) as ok``: ``ok`` is True while holding a slot for
        ``key``, False when none came free within ``wait``."""
        return _Hold(self, key)

    def in_use(self, key: str) -> int:
        slot = self._slots.get(key)
        return 0 if slot is None else slot.held


class _Hold:
    """The context of one hold. A class rather than a generator-based context manager: it is
    entered twice on every proxied request, and a free slot (the usual case) is then taken
    without a timer or a generator frame."""

    __slots__ = ("got", "key", "slot", "slots")

    def __init__(self, slots: Slots, key: str) -> None:
        self.slots = slots
        self.key = key
        self.got = False
        slot = slots._slots.get(key)
        if slot is None:
            slot = slots._slots[key] = _Slot(asyncio.Semaphore(slots.limit))
        slot.users += 1
        self.slot = slot

    async def __aenter__(self) -> bool:
        semaphore = self.slot.semaphore
        try:
            if semaphore.locked():
                return await self._queue(semaphore)
            await semaphore.acquire()  # free: returns at once
        except BaseException:
            self._release()  # no __aexit__ follows a failed __aenter__
            raise
        self.got = True
        self.slot.held += 1
        return True

    async def _queue(self, semaphore: asyncio.Semaphore) -> bool:
        """The slow path: wait up to ``wait`` for a slot, timed for ``on_wait``."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.slots.wait):
                await semaphore.acquire()
        except TimeoutError:
            self._waited(started, turned_away=True)
            return False
        # Held before the watcher hears of it: were it to raise, the slot is still released.
        self.got = True
        self.slot.held += 1
        self._waited(started, turned_away=False)
        return True

    def _waited(self, started: float, *, turned_away: bool) -> None:
        on_wait = self.slots.on_wait
        if on_wait is not None:
            on_wait(self.key, time.perf_counter() - started, turned_away)

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
        # _release() written out: this runs twice on every proxied request.
        if self.got:
            self.got = False
            self.slot.held -= 1
            self.slot.semaphore.release()
        self._leave()

    def _release(self) -> None:
        if self.got:
            self.got = False
            self.slot.held -= 1
            self.slot.semaphore.release()
        self._leave()

    def _leave(self) -> None:
        slot = self.slot
        slot.users -= 1
        if slot.users == 0 and self.slots._slots.get(self.key) is slot:
            del self.slots._slots[self.key]
