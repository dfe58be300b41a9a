"""Security memory: failed sign-ins and usage limits, remembered only under rotating keyed hashes.

What is remembered is a handful of counters. Each counter is filed under
``HMAC-SHA256(epoch key, category + subject)``, where the epoch key is 32 random bytes made in
memory when the epoch starts (``rotate``, default one day) and never written anywhere. The
current and the previous epoch's keys are kept (so a window straddling the rotation still
counts), older keys are dropped together with every counter filed under them. Once that happens
nobody, the proxy included, can tell which card a forgotten counter was about: the only way back
from a hash to a card is the key, and the key is gone.

Several instances sharing the memory (``shared_security.py``) use one key per epoch instead,
derived from the proxy's keyed-hash secret and a random per-epoch salt kept in Redis: Redis
never holds a key, and once the salt has expired the key cannot be derived again.

Nothing here is written to disk; a restart forgets everything (and so unlocks every card, which
costs an attacker a restart of the library's server, not something they can cause).

Counters are sliding-window estimates (a fixed current window plus the previous one, weighted by
how much of it still overlaps): constant memory per subject whatever the rate. A card locked after
``max_failures`` failures in ``window`` unlocks at most two windows after its last failure.

Failed sign-ins are limited so that they slow an attacker without denying the card's owner:

* ``max_failures`` (10) per card *and client address* lock that pair: ten wrong PINs from one
  address do not lock the owner out at another;
* per card, across addresses, every failure beyond ``slow_after`` (5) doubles a delay before
  the next attempt for that card is checked (up to ``max_delay``, 10 s): the owner waits a few
  seconds, a distributed guesser gets a few attempts a minute; ``card_max_failures`` (100, the
  NIST SP 800-63B ceiling) finally locks the card;
* per client address, ``client_max_failures`` (50) lock the address (guessing many cards);
* across all cards, ``global_max_failures`` (off by default: anyone could trip it).

Attempts are *reserved* before the patron directory is asked (``SignInGuard.attempt``): the
failure is counted first and taken back on success, so sixty simultaneous guesses cannot all be
checked before the first failure is counted; attempts for one card are checked one at a time
and a client has at most ``client_concurrency`` attempts in flight.

Where the calls belong:

* sign-in form: ``async with guard.attempt(card, client) as attempt:`` (None: refuse, 429), then
  ask the directory and call ``attempt.succeeded()`` when the credentials were right;
* a proxied request (optional usage limits): before forwarding,
  ``memory.over_limit(membership.key, kinds)`` refuses; afterwards ``memory.note_usage(key, kind)``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from cachetools import TTLCache

if TYPE_CHECKING:
    from proxy.settings import Reader

Clock = Callable[[], float]

USAGE_KINDS = ("request", "search", "download")
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_HASH_BYTES = 16  # 128 bits: no collisions among a library's cards, half the memory of a full digest


@dataclass(frozen=True)
class UsageLimit:
    """At most ``count`` events of one kind per ``window`` seconds per patron."""

    count: int
    window: float


@dataclass(frozen=True)
class SecurityOptions:
    """The ``[records.security]`` table.

    ``rotate``              how often the hashing key changes (default 1 day); must be at least
                            twice the longest window, so a live counter is always findable;
    ``window``              the failed sign-in window (default 15 minutes);
    ``max_failures``        failures per card from one client within the window before that
                            pair is locked (10);
    ``card_max_failures``   failures per card from every client before the card is locked (100);
    ``slow_after``          failures per card after which each attempt is delayed (5), the delay
                            doubling per failure up to ``max_delay`` (10 s);
    ``client_max_failures`` failures from one client address (IPv6: its /64) before that client
                            is locked (50); 0 turns it off;
    ``global_max_failures`` failures across all cards before every sign-in is refused (0 = off:
                            anyone could trip it and lock the whole library out);
    ``usage_limits``        per kind (request, search, download), ``"N/duration"`` (none);
    ``max_entries``         counters kept per epoch before the least recently used are dropped.
    """

    rotate: float = 86400.0
    window: float = 900.0
    max_failures: int = 10
    card_max_failures: int = 100
    slow_after: int = 5
    max_delay: float = 10.0
    client_max_failures: int = 50
    client_concurrency: int = 4
    global_max_failures: int = 0
    usage_limits: Mapping[str, UsageLimit] = field(default_factory=dict)
    max_entries: int = 100_000

    @property
    def longest_window(self) -> float:
        return max([self.window, *(limit.window for limit in self.usage_limits.values())])


def parse_rate(text: str) -> UsageLimit | None:
    """``"100/1h"`` -> ``UsageLimit(100, 3600.0)``; None when malformed or zero."""
    match = _RATE.match(text)
    if match is None:
        return None
    count, window = int(match.group(1)), float(match.group(2)) * _UNITS[match.group(3)]
    if count <= 0 or window <= 0:
        return None
    return UsageLimit(count, window)


def parse_security_options(reader: Reader) -> SecurityOptions:
    """Read ``[records.security]`` (``records_reader.sub("security")``); problems go to the reader.

    Calls ``reader.unknown_keys()`` itself: the table belongs to this module.
    """
    limits: dict[str, UsageLimit] = {}
    for kind, text in reader.str_map("usage_limits").items():
        limit = parse_rate(text)
        if kind not in USAGE_KINDS:
            reader.bad("usage_limits", f"{kind!r} is not one of {', '.join(USAGE_KINDS)}")
        elif limit is None:
            reader.bad("usage_limits", f"{kind} must be like \"100/1h\" (count per duration), not {text!r}")
        else:
            limits[kind] = limit
    options = SecurityOptions(
        rotate=reader.duration("rotate_keys", "1d"),
        window=reader.duration("failure_window", "15m"),
        max_failures=reader.int("max_failures", 10, minimum=1, maximum=1000),
        card_max_failures=reader.int("card_max_failures", 100, minimum=1, maximum=10_000),
        slow_after=reader.int("slow_after", 5, minimum=0),
        max_delay=reader.duration("max_delay", "10s"),
        client_max_failures=reader.int("client_max_failures", 50, minimum=0),
        client_concurrency=reader.int("client_concurrency", 4, minimum=1, maximum=100),
        global_max_failures=reader.int("global_max_failures", 0, minimum=0),
        usage_limits=limits,
        max_entries=reader.int("max_entries", 100_000, minimum=100),
    )
    if options.rotate < 2 * options.longest_window:
        reader.bad("rotate_keys", "must be at least twice the longest window (failure_window, usage_limits)")
    reader.unknown_keys()
    return options


class _Counter:
    """A sliding-window event count in constant space. ``category`` ("card", "pair", "client",
    "usage:<kind>") names what kind of subject it counts, never which one: the staff console
    lists locks by kind."""

    __slots__ = ("category", "current", "previous", "start", "window")

    def __init__(self, window: float, now: float, category: str = "") -> None:
        self.category = category
        self.window = window
        self.start = now - now % window
        self.current = 0
        self.previous = 0

    def _advance(self, now: float) -> None:
        if now < self.start + self.window:
            return  # same window (or a clock that stepped back: keep what we have)
        if now < self.start + 2 * self.window:
            self.previous, self.current = self.current, 0
            self.start += self.window
        else:
            self.previous = self.current = 0
            self.start = now - now % self.window

    def add(self, now: float, n: int) -> None:
        self._advance(now)
        self.current += n

    def estimate(self, now: float) -> float:
        self._advance(now)
        overlap = 1.0 - min(max((now - self.start) / self.window, 0.0), 1.0)
        return self.current + self.previous * overlap


class _Epoch:
    __slots__ = ("counters", "index", "key")

    def __init__(self, index: int, maxsize: int, ttl: float, clock: Clock, key: bytes | None = None) -> None:
        self.index = index
        # SECURITY: random when on its own; when instances share the memory, derived from the
        # secret and a salt that expires from Redis with the epoch. Either way, once this
        # object is dropped (and the salt has expired), hashes made with it cannot be recomputed.
        self.key = key if key is not None else secrets.token_bytes(32)
        # SECURITY: bounded; a flood of distinct cards evicts the least recently used counters
        # (a flood from one client is stopped earlier by the per-client limit).
        self.counters: TTLCache[bytes, _Counter] = TTLCache(maxsize, ttl, timer=clock)

    def digest(self, category: str, subject: str) -> bytes:
        message = f"{category}\x1f{subject}".encode()
        return hmac.new(self.key, message, hashlib.sha256).digest()[:_HASH_BYTES]


def normalise_card(card: str) -> str:
    """The form of a card number that is hashed: no spaces or dashes, case-folded.

    SECURITY: "2123 4001" and "21234001" are the same card to a patron directory; without this
    an attacker would get ``max_failures`` fresh guesses per spelling.
    """
    return "".join(card.split()).replace("-", "").casefold()


def normalise_client(client: str) -> str:
    """The client key that is hashed: an IPv4 address, or an IPv6 address's /64 network.

    SECURITY: one IPv6 subscriber usually holds a whole /64; counting per address would give an
    attacker 2**64 fresh allowances.
    """
    try:
        address = ipaddress.ip_address(client.strip().strip("[]"))
    except ValueError:
        return client.strip()
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class SharedCounters(Protocol):
    """What several instances share (``shared_security.py``): the epoch keys, and each increment."""

    def epoch_key(self, index: int) -> bytes | None:
        """The key every instance uses for epoch ``index``, or None (then a local random key)."""

    def publish(self, index: int, digest: bytes, category: str, window: float, n: int, now: float) -> None:
        """Hand an increment to the other instances (without waiting: never blocks the caller)."""

    def publish_forget(self, index: int, digest: bytes, category: str, window: float, now: float) -> None:
        """Hand a cleared counter to the other instances (a sign-in that succeeded, a lock the
        staff cleared), so that they forget it too; index -1 is the global counter."""


class SecurityMemory:
    """Failed sign-in counters and usage limits, keyed only by rotating keyed hashes.

    Contract: no method stores a card number, client address or patron key in any form other
    than an HMAC under a key younger than two ``rotate`` periods; counters older than that are
    unreachable and removed. Memory is bounded by ``max_entries`` per epoch. Methods are cheap
    and synchronous (two HMACs at most), safe to call on the event loop.
    """

    def __init__(self, clock: Clock = time.time, options: SecurityOptions | None = None) -> None:
        self.options = options if options is not None else SecurityOptions()
        self._clock = clock
        self._epochs: dict[int, _Epoch] = {}
        self._removed = 0  # counters dropped since the last purge() (for its report)
        # A global count names nobody, so it needs no hashing.
        self._global = _Counter(self.options.window, clock())
        # Several instances: epoch keys and every increment shared (records/shared_security.py).
        self.shared: SharedCounters | None = None

    # -- keys ---------------------------------------------------------------------------------

    def _live(self, now: float) -> list[_Epoch]:
        """The current epoch (created if needed) then the previous one; older ones are dropped."""
        index = int(now // self.options.rotate)
        if index not in self._epochs:
            ttl = 2 * self.options.longest_window
            key = self.shared.epoch_key(index) if self.shared is not None else None
            self._epochs[index] = _Epoch(index, self.options.max_entries, ttl, self._clock, key)
        for old in [i for i in self._epochs if i < index - 1 or i > index]:
            # SECURITY: dropping the epoch drops its key; its counters go with it.
            counters = self._epochs.pop(old).counters
            self._removed += len(list(counters.expire())) + len(counters)
            counters.clear()
        return [self._epochs[i] for i in (index, index - 1) if i in self._epochs]

    def _previous(self, index: int) -> _Epoch | None:
        """The previous epoch made late, under the shared key (None without one: a key of its
        own would hash apart from every other instance)."""
        key = self.shared.epoch_key(index) if self.shared is not None else None
        if key is None:
            return None
        epoch = self._epochs[index] = _Epoch(index, self.options.max_entries, 2 * self.options.longest_window,
                                              self._clock, key)
        return epoch

    def _bump(self, category: str, subject: str, window: float, n: int, now: float) -> None:
        epoch = self._live(now)[0]
        digest = epoch.digest(category, subject)
        counter = epoch.counters.get(digest)
        if counter is None:
            counter = _Counter(window, now, category)
        counter.add(now, n)
        epoch.counters[digest] = counter  # re-inserting renews the entry's time to live
        if self.shared is not None:
            self.shared.publish(epoch.index, digest, category, window, n, now)

    def adopt_keys(self, keys: Mapping[int, bytes]) -> int:
        """Use the shared keys for epochs made before they were known (at start, or while Redis
        was away); counters filed under a replaced key are dropped with it. Returns how many."""
        dropped = 0
        for index, epoch in self._epochs.items():
            key = keys.get(index)
            if key is not None and key != epoch.key:
                epoch.key = key
                dropped += len(epoch.counters)
                epoch.counters.clear()
        return dropped

    def apply(self, index: int, digest: bytes, category: str, window: float, n: int, at: float) -> None:
        """Add an increment another instance counted (``shared_security.py``); never re-published.
        ``index`` -1 is the global counter."""
        now = self._clock()
        if index == -1:
            self._global.add(at, n)
            return
        epochs = {e.index: e for e in self._live(now)}
        epoch = epochs.get(index)
        if epoch is None and index == int(now // self.options.rotate) - 1:
            # An instance started after a rotation has not made the previous epoch itself, yet
            # the others' failures in it still count (a lock made just before the rotation).
            epoch = self._previous(index)
        if epoch is None:
            return  # an epoch this instance has already forgotten (or not reached yet)
        counter = epoch.counters.get(digest)
        if counter is None:
            counter = _Counter(window, at, category)
        counter.add(at, n)
        epoch.counters[digest] = counter

    def forget(self, index: int, digest: bytes) -> None:
        """Drop a counter another instance cleared (``shared_security.py``); never re-published.
        ``index`` -1 is the global counter."""
        if index == -1:
            self._global = _Counter(self.options.window, self._clock())
            return
        for epoch in self._live(self._clock()):
            if epoch.index == index:
                epoch.counters.pop(digest, None)

    def _drop(self, epoch: _Epoch, digest: bytes, category: str, window: float) -> bool:
        """Clear one counter here and on every other instance; False when there was none here.

        The forget is published whether or not this instance held the counter: it may have
        missed the increments (Redis away for it, the subscription dropped) that locked the
        card on the others and in Redis's sums.
        """
        counter = epoch.counters.pop(digest, None)
        if self.shared is not None:
            self.shared.publish_forget(epoch.index, digest, category, window, self._clock())
        return counter is not None

    def _estimate(self, category: str, subject: str, now: float) -> float:
        total = 0.0
        for epoch in self._live(now):
            counter = epoch.counters.get(epoch.digest(category, subject))
            if counter is not None:
                total += counter.estimate(now)
        return total

    # -- sign-in failures ---------------------------------------------------------------------

    def note_failure(self, card: str, client: str | None = None, n: int = 1) -> None:
        """Count one failed sign-in for ``card`` (unknown cards too), for the card from
        ``client`` and for ``client``; ``n = -1`` takes back a reserved one."""
        now = self._clock()
        window = self.options.window
        subject = normalise_card(card)
        self._bump("card", subject, window, n, now)
        self._bump("pair", f"{subject}\x1f{normalise_client(client) if client else ''}", window, n, now)
        if client and self.options.client_max_failures:
            self._bump("client", normalise_client(client), window, n, now)
        self._global.add(now, n)
        if self.shared is not None:
            self.shared.publish(-1, b"", "global", window, n, now)

    def is_locked(self, card: str, client: str | None = None) -> bool:
        """True when the card from this client, the card, the client or the whole proxy is
        over its failure limit.

        Unknown cards lock exactly like known ones, so the answer says nothing about whether a
        card exists.
        """
        now = self._clock()
        opts = self.options
        subject = normalise_card(card)
        pair = f"{subject}\x1f{normalise_client(client) if client else ''}"
        if self._estimate("pair", pair, now) >= opts.max_failures:
            return True
        if self._estimate("card", subject, now) >= opts.card_max_failures:
            return True
        if client and opts.client_max_failures:
            if self._estimate("client", normalise_client(client), now) >= opts.client_max_failures:
                return True
        return bool(opts.global_max_failures) and self._global.estimate(now) >= opts.global_max_failures

    def delay_for(self, card: str) -> float:
        """Seconds to wait before checking an attempt for ``card``: nothing up to ``slow_after``
        recent failures, then doubling per failure up to ``max_delay``."""
        opts = self.options
        failures = self._estimate("card", normalise_card(card), self._clock())
        over = failures - opts.slow_after
        if over < 1:
            return 0.0
        return float(min(opts.max_delay, 0.25 * 2 ** min(over - 1, 16)))

    def note_success(self, card: str, client: str | None = None) -> None:
        """A correct sign-in clears the card's failures (the client's stay: it may be guessing
        other cards), on every instance sharing the memory."""
        subject = normalise_card(card)
        pair = f"{subject}\x1f{normalise_client(client) if client else ''}"
        window = self.options.window
        now = self._clock()
        epochs = self._live(now)
        previous = int(now // self.options.rotate) - 1
        if self.shared is not None and all(e.index != previous for e in epochs):
            # Started after a rotation, this instance never made the previous epoch; the lock
            # may be there on the others all the same.
            made = self._previous(previous)
            if made is not None:
                epochs.append(made)
        for epoch in epochs:
            self._drop(epoch, epoch.digest("card", subject), "card", window)
            self._drop(epoch, epoch.digest("pair", pair), "pair", window)

    def inflight_key(self, category: str, subject: str) -> bytes:
        """A keyed hash to track attempts in flight under (never a card or an address)."""
        return self._live(self._clock())[0].digest(category, subject)

    # -- usage limits -------------------------------------------------------------------------

    def note_usage(self, subject: str, kind: str, n: int = 1) -> bool:
        """Count ``n`` events of ``kind`` for ``subject`` (a patron's pseudonymous key); returns
        True when the subject is now at or over its limit. Kinds without a configured limit are
        not counted at all: no record without need."""
        limit = self.options.usage_limits.get(kind)
        if limit is None:
            return False
        now = self._clock()
        self._bump(f"usage:{kind}", subject, limit.window, n, now)
        return self._estimate(f"usage:{kind}", subject, now) >= limit.count

    def over_limit(self, subject: str, kinds: Iterable[str] | str) -> bool:
        """True when ``subject`` has used up any of ``kinds``'s limits (check before forwarding)."""
        now = self._clock()
        for kind in [kinds] if isinstance(kinds, str) else kinds:
            limit = self.options.usage_limits.get(kind)
            if limit is not None and self._estimate(f"usage:{kind}", subject, now) >= limit.count:
                return True
        return False

    # -- the staff console ----------------------------------------------------------------------

    def _limit_of(self, category: str) -> int:
        """The count at which a counter of ``category`` locks or suspends (0: never)."""
        opts = self.options
        if category.startswith("usage:"):
            limit = opts.usage_limits.get(category[len("usage:"):])
            return limit.count if limit is not None else 0
        return {"pair": opts.max_failures, "card": opts.card_max_failures,
                "client": opts.client_max_failures}.get(category, 0)

    def locked(self) -> list[tuple[str, str, int]]:
        """Subjects locked or suspended now, as ``(pseudonym, category, count)``, highest first.

        The pseudonym is the first 8 hex digits of the counter's keyed hash: enough to tell two
        locks apart on a page and to clear one, and like the hash it names nobody once the
        epoch's key is dropped. Each epoch is looked at on its own (the same card hashes
        differently in two epochs), so a lock straddling a key rotation may show only once its
        current epoch alone is over the limit. A tripped global limit is listed as "global".
        """
        now = self._clock()
        found: list[tuple[str, str, int]] = []
        for epoch in self._live(now):
            for digest, counter in list(epoch.counters.items()):
                limit = self._limit_of(counter.category)
                count = counter.estimate(now)
                if limit and count >= limit:
                    found.append((digest.hex()[:8], counter.category, int(count)))
        opts = self.options
        if opts.global_max_failures and self._global.estimate(now) >= opts.global_max_failures:
            found.append(("global", "global", int(self._global.estimate(now))))
        return sorted(found, key=lambda item: (-item[2], item[0]))

    def clear(self, pseudonym: str, category: str) -> int:
        """Forget the counters of ``category`` whose pseudonym is ``pseudonym`` (as shown by
        ``locked``), here and on every instance sharing the memory; returns how many were
        removed here (0 when this instance holds none).

        A counter is cleared even when it is under the limit here: the page may have come from
        another instance, where it is over (this one missed increments). One this instance does
        not hold at all cannot be cleared from here: the pseudonym is too short to name it.
        """
        if pseudonym == "global" and category == "global":
            self._global = _Counter(self.options.window, self._clock())
            if self.shared is not None:
                self.shared.publish_forget(-1, b"", "global", self.options.window, self._clock())
            return 1
        # SECURITY: only the exact 8-hex-digit form; a shorter prefix would clear many at once.
        if len(pseudonym) != 8 or any(ch not in "0123456789abcdef" for ch in pseudonym):
            return 0
        now = self._clock()
        removed = 0
        for epoch in self._live(now):
            for digest, counter in list(epoch.counters.items()):
                # SECURITY: only kinds that lock; a counter sharing the 8 digits by chance (one in
                # 2**32 per counter of the kind) gets a fresh allowance, like the lock cleared.
                if counter.category == category and digest.hex()[:8] == pseudonym and self._limit_of(category):
                    removed += self._drop(epoch, digest, counter.category, counter.window)
        return removed

    # -- retention ----------------------------------------------------------------------------

    def purge(self, now: float | None = None) -> int:
        """Drop old keys with their counters, and counters that have fallen to zero.

        Returns how many counters this purge removed, plus those dropped with a key since the
        last one (a figure for the log: counters that expired on access are not counted).
        ``now`` is accepted for the retention runner's convenience; the memory's own clock decides.
        """
        del now
        current = self._clock()
        for epoch in self._live(current):
            self._removed += len(list(epoch.counters.expire()))
            for digest, counter in list(epoch.counters.items()):
                if counter.estimate(current) <= 0:
                    del epoch.counters[digest]
                    self._removed += 1
        removed, self._removed = self._removed, 0
        return removed

    @property
    def entries(self) -> int:
        """How many counters are held (for health pages and tests)."""
        return sum(len(epoch.counters) for epoch in self._epochs.values())
