"""Sharing upstream connections fairly: no client can take a vendor away from everyone.

Two kinds of slots, both held from the moment a request leaves until its answer has been relayed
(a slow PDF download holds its slots for as long as it streams):

* per client (a session, or the client's address for anonymous use): a few parallel requests,
  well below the pool, so one patron or one trickling script cannot fill it;
* per vendor host: the connection pool's own size, so a full pool is known here, answered with a
  clear "busy" page after a short wait and logged as such, instead of every other patron waiting
  on aiohttp's connector until a timeout that the log would blame on the vendor.
"""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from types import TracebackType


@dataclass
class _Slot:
    semaphore: asyncio.Semaphore
    users: int = 0  # holders and waiters; the slot is dropped when it falls to zero
    held: int = 0


@dataclass
class Slots:
    """Counting semaphores by key, made on first use and forgotten when idle (so a key, which
    may name a session, lives no longer than its requests)."""

    limit: int
    wait: float  # seconds a request may queue for a slot
    _slots: dict[str, _Slot] = field(default_factory=dict)

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
                try:
                    async with asyncio.timeout(self.slots.wait):
                        await semaphore.acquire()
                except TimeoutError:
                    return False
            else:
                await semaphore.acquire()  # free: returns at once
        except BaseException:
            self._leave()
            raise
        self.got = True
        self.slot.held += 1
        return True

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
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
