"""Sign-in attempts reserved before the patron directory is asked.

``SignInGuard.attempt(card, client)`` is the only way the sign-in form checks a PIN:

1. a client (an address, or its IPv6 /64) has at most ``client_concurrency`` attempts in flight,
   and at most ``MAX_WAITING`` attempts wait for one card: more are refused at once;
2. attempts for one card are checked one at a time (a per-card lock, under a keyed hash);
3. the locks of ``SecurityMemory`` are checked *after* waiting, so the attempts queued behind a
   failure see it;
4. the growing per-card delay is served, inside the lock;
5. the failure is counted *before* the directory is asked, and taken back when the attempt
   succeeds, or when it ends without a verdict (the directory is down, the card is refused with
   the right PIN, the request was cancelled).

So sixty simultaneous guesses for one card are checked one after another and stop at the lock;
they cannot all be in flight before the first failure is counted. Nothing here outlives the
attempts in flight: the keys of the in-flight tables are keyed hashes, dropped at zero.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from proxy.records.security import SecurityMemory, normalise_card, normalise_client

# Attempts for one card that may wait behind the one being checked; more are refused.
MAX_WAITING = 4


@dataclass
class Attempt:
    """One reserved attempt; call ``succeeded()`` when the card and PIN were right."""

    outcome: str = "failed"  # "failed", "succeeded" or "void" (no verdict: refunded)

    def succeeded(self) -> None:
        self.outcome = "succeeded"

    def void(self) -> None:
        """End without a verdict (right PIN but a refused card, a broken directory)."""
        self.outcome = "void"


@dataclass
class _CardSlot:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0  # the attempt holding the lock and those waiting for it


class SignInGuard:
    def __init__(self, memory: SecurityMemory) -> None:
        self.memory = memory
        self._cards: dict[bytes, _CardSlot] = {}
        self._clients: dict[bytes, int] = {}

    @contextlib.asynccontextmanager
    async def attempt(self, card: str, client: str | None) -> AsyncIterator[Attempt | None]:
        """An attempt to check ``card``'s PIN for ``client``, or None when it must be refused
        (locked, or too many attempts in flight): the caller answers "too many attempts"."""
        memory = self.memory
        client_key = memory.inflight_key("client", normalise_client(client)) if client else None
        card_key = memory.inflight_key("card", normalise_card(card))
        # SECURITY: bounded concurrency per client and per card, checked before anything waits.
        if client_key is not None and self._clients.get(client_key, 0) >= memory.options.client_concurrency:
            yield None
            return
        slot = self._cards.get(card_key)
        if slot is None:
            slot = self._cards[card_key] = _CardSlot()
        if slot.users > MAX_WAITING:
            yield None
            return
        slot.users += 1
        if client_key is not None:
            self._clients[client_key] = self._clients.get(client_key, 0) + 1
        try:
            async with slot.lock:
                if memory.is_locked(card, client):
                    yield None
                    return
                delay = memory.delay_for(card)
                if delay > 0:
                    await asyncio.sleep(delay)
                # SECURITY: counted before the directory is asked; taken back below if it was right.
                memory.note_failure(card, client)
                attempt = Attempt()
                try:
                    yield attempt
                except BaseException:
                    if attempt.outcome == "failed":
                        attempt.void()
                    raise
                finally:
                    if attempt.outcome != "failed":
                        memory.note_failure(card, client, n=-1)
                    if attempt.outcome == "succeeded":
                        memory.note_success(card, client)
        finally:
            slot.users -= 1
            if slot.users == 0:
                self._cards.pop(card_key, None)
            if client_key is not None:
                left = self._clients.get(client_key, 1) - 1
                if left:
                    self._clients[client_key] = left
                else:
                    self._clients.pop(client_key, None)
