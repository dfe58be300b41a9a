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
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


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

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[bool]:
        """True while holding a slot for ``key``; False when none came free within ``wait``."""
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot(asyncio.Semaphore(self.limit))
        slot.users += 1
        try:
            try:
                async with asyncio.timeout(self.wait):
                    await slot.semaphore.acquire()
            except TimeoutError:
                yield False
                return
            slot.held += 1
            try:
                yield True
            finally:
                slot.held -= 1
                slot.semaphore.release()
        finally:
            slot.users -= 1
            if slot.users == 0:
                self._slots.pop(key, None)

    def in_use(self, key: str) -> int:
        slot = self._slots.get(key)
        return 0 if slot is None else slot.held
