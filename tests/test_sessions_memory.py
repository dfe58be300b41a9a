"""The in-memory session store on its own clock (the shared store contract is in test_session_stores.py)."""

from __future__ import annotations

from proxy.membership import Membership
from proxy.sessions import Ticket
from proxy.sessions.memory import MemorySessionStore


async def test_sessions_expire_idle_and_absolute() -> None:
    now = [1000.0]
    store = MemorySessionStore(idle=60, lifetime=300, max_sessions=10, clock=lambda: now[0])
    membership = Membership(groups=frozenset({"g"}))
    session = await store.create(membership)
    for _ in range(9):  # used every 30 s: never idle...
        now[0] += 30
        found = await store.get(session.id)
        assert found is not None
        await store.touch(found)
    now[0] += 30  # ...but 300 s after creation it ends anyway
    assert await store.get(session.id) is None
    idle = await store.create(membership)
    now[0] += 61
    assert await store.get(idle.id) is None
    ended = await store.create(membership)
    await store.delete(ended.id)
    assert await store.get(ended.id) is None


async def test_tickets_are_one_time_and_short_lived() -> None:
    now = [0.0]
    store = MemorySessionStore(idle=60, lifetime=300, max_sessions=10, clock=lambda: now[0])
    ticket = Ticket("sid", "/x", (), "bind")
    await store.add_ticket("t" * 32, ticket, 60)
    assert await store.take_ticket("t" * 32) == ticket
    assert await store.take_ticket("t" * 32) is None
    await store.add_ticket("u" * 32, ticket, 60)
    now[0] += 61
    assert await store.take_ticket("u" * 32) is None
