"""Security memory: locks after N failures, forgets after the window and key rotation, and never
holds a card number, client address or patron key in any recoverable form."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest

from proxy.records.security import (
    SecurityMemory,
    SecurityOptions,
    UsageLimit,
    normalise_card,
    normalise_client,
    parse_rate,
    parse_security_options,
)
from proxy.settings import Problems, Reader

CARD = "21234009876543"
OTHER_CARD = "21234001111111"
CLIENT = "198.51.100.23"
START = 1_800_000_000.0  # a round number of days since the epoch: an epoch boundary
MINUTE = 60.0


class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _storage_dump(memory: SecurityMemory) -> bytes:
    """Every byte of what the memory holds: keys, counters, epoch keys."""
    parts: list[bytes] = []
    for epoch in memory._epochs.values():
        parts.append(epoch.key)
        for digest, counter in epoch.counters.items():
            parts.append(digest)
            parts.append(repr((counter.window, counter.start, counter.current, counter.previous)).encode())
    return b"".join(parts)


def test_locks_after_max_failures_and_unlocks_after_the_window() -> None:
    clock = Clock()
    memory = SecurityMemory(clock, SecurityOptions(max_failures=10, window=15 * MINUTE))
    for i in range(9):
        memory.note_failure(CARD)
        clock.advance(5)
        assert not memory.is_locked(CARD), i
    memory.note_failure(CARD)
    assert memory.is_locked(CARD)
    assert not memory.is_locked(OTHER_CARD)
    clock.advance(10 * MINUTE)
    assert memory.is_locked(CARD)  # still inside the window
    clock.advance(25 * MINUTE)  # two windows after the last failure
    assert not memory.is_locked(CARD)


def test_unknown_and_known_cards_lock_alike_and_spellings_count_together() -> None:
    clock = Clock()
    memory = SecurityMemory(clock, SecurityOptions(max_failures=3))
    memory.note_failure("2123 4009 8765 43")
    memory.note_failure("2123-4009-8765-43")
    memory.note_failure(CARD)
    assert memory.is_locked(CARD)
    assert memory.is_locked(" 21234009876543 ")
    memory.note_failure("no-such-card")
    memory.note_failure("NO-SUCH-CARD")
    memory.note_failure("nosuchcard")
    assert memory.is_locked("nosuchcard")


def test_success_clears_the_card_but_not_the_client() -> None:
    clock = Clock()
    memory = SecurityMemory(clock, SecurityOptions(max_failures=3, client_max_failures=4))
    for _ in range(3):
        memory.note_failure(CARD, CLIENT)
    assert memory.is_locked(CARD, CLIENT)
    memory.note_success(CARD, CLIENT)
    assert not memory.is_locked(CARD, CLIENT)
    memory.note_failure(OTHER_CARD, CLIENT)
    assert memory.is_locked("any-card", CLIENT)  # 4 failures from this client
    assert not memory.is_locked("any-card", "198.51.100.24")


def test_client_limit_groups_ipv6_by_64() -> None:
    assert normalise_client("2001:db8:1:2:aaaa::1") == normalise_client("[2001:db8:1:2:ffff::9]") == "2001:db8:1:2::/64"
    assert normalise_client("::ffff:198.51.100.23") == CLIENT
    clock = Clock()
    memory = SecurityMemory(clock, SecurityOptions(max_failures=100, client_max_failures=3))
    for i in range(3):
        memory.note_failure(f"card{i}", f"2001:db8:1:2::{i + 1}")
    assert memory.is_locked("card9", "2001:db8:1:2:dead:beef::1")
    assert not memory.is_locked("card9", "2001:db8:1:3::1")


def test_global_limit_is_off_by_default_and_works_when_set() -> None:
    clock = Clock()
    memory = SecurityMemory(clock, SecurityOptions(max_failures=100, client_max_failures=0))
    for i in range(500):
        memory.note_failure(f"card{i}")
    assert not memory.is_locked("fresh")
    strict = SecurityMemory(clock, SecurityOptions(max_failures=100, global_max_failures=50))
    for i in range(50):
        strict.note_failure(f"card{i}")
    assert strict.is_locked("fresh")


def test_storage_never_holds_the_card_client_or_patron_key() -> None:
    clock = Clock()
    patron_key = "pseudonymkeymarker"
    memory = SecurityMemory(clock, SecurityOptions(usage_limits={"download": UsageLimit(5, 3600)}))
    memory.note_failure(CARD, CLIENT)
    memory.note_failure("2123 4009 8765 43", CLIENT)
    memory.note_usage(patron_key, "download")
    dump = _storage_dump(memory)
    for secret in (CARD, normalise_card(CARD), CLIENT, patron_key, "198.51.100"):
        assert secret.encode() not in dump
    # Nor a plain (unkeyed) hash of the card: only an HMAC under the random key is stored.
    for plain in (hashlib.sha256(CARD.encode()), hashlib.sha256(b"card\x1f" + CARD.encode())):
        assert plain.digest()[:16] not in dump
    # Nothing reachable from the object graph holds the card as a string either.
    seen: set[int] = set()
    stack: list[object] = [memory]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, str | bytes):
            assert CARD not in str(obj) and CLIENT not in str(obj) and patron_key not in str(obj)
        elif isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, list | tuple | set | frozenset):
            stack.extend(obj)
        elif hasattr(obj, "__dict__") or hasattr(obj, "__slots__"):
            for name in getattr(obj, "__slots__", ()):
                stack.append(getattr(obj, name, None))
            stack.extend(getattr(obj, "__dict__", {}).values())
            if hasattr(obj, "items") and callable(obj.items):
                stack.extend(x for pair in obj.items() for x in pair)


def test_key_rotation_makes_old_entries_unlinkable_and_gone() -> None:
    clock = Clock()
    options = SecurityOptions(rotate=86400.0, window=15 * MINUTE, max_failures=3)
    memory = SecurityMemory(clock, options)
    for _ in range(3):
        memory.note_failure(CARD)
    first_epoch = next(iter(memory._epochs.values()))
    first_key = first_epoch.key
    first_digest = hmac.new(first_key, b"card\x1f" + CARD.encode(), hashlib.sha256).digest()[:16]
    assert first_digest in first_epoch.counters
    assert memory.is_locked(CARD)

    clock.advance(86400)  # next epoch: a new key, the old one kept for one more period
    memory.note_failure(OTHER_CARD)
    assert len(memory._epochs) == 2
    keys = [e.key for e in memory._epochs.values()]
    assert keys[0] != keys[1]

    clock.advance(86400)  # two rotations later the first key is gone, with its counters
    removed = memory.purge()
    assert removed >= 1
    assert all(e.key != first_key for e in memory._epochs.values())
    assert first_digest not in _storage_dump(memory)
    assert not memory.is_locked(CARD)
    clock.advance(86400)
    memory.purge()
    assert memory.entries == 0


def test_purge_drops_counters_past_their_window() -> None:
    clock = Clock()
    memory = SecurityMemory(clock, SecurityOptions(window=15 * MINUTE))
    for i in range(20):
        memory.note_failure(f"card{i}", CLIENT)
    assert memory.entries == 41  # per card, per card and client, and the client
    clock.advance(5 * MINUTE)
    assert memory.purge() == 0
    clock.advance(30 * MINUTE)
    assert memory.purge() == 41
    assert memory.entries == 0


def test_memory_is_bounded() -> None:
    clock = Clock()
    memory = SecurityMemory(clock, SecurityOptions(max_entries=100, client_max_failures=0))
    for i in range(5000):
        memory.note_failure(f"card{i}")
    assert memory.entries <= 100


def test_usage_limits() -> None:
    clock = Clock()
    limits = {"download": UsageLimit(3, 3600.0)}
    memory = SecurityMemory(clock, SecurityOptions(usage_limits=limits))
    key = "patronpseudonym"
    # A kind without a limit is not counted at all: no record without need.
    assert memory.note_usage(key, "search") is False
    assert memory.entries == 0
    assert not memory.over_limit(key, {"download", "search"})
    assert memory.note_usage(key, "download") is False
    assert memory.note_usage(key, "download") is False
    assert memory.note_usage(key, "download") is True
    assert memory.over_limit(key, "download")
    assert memory.over_limit(key, ["search", "download"])
    assert not memory.over_limit("someone-else", "download")
    clock.advance(2 * 3600)
    assert not memory.over_limit(key, "download")


def test_parse_rate() -> None:
    assert parse_rate("100/1h") == UsageLimit(100, 3600.0)
    assert parse_rate(" 5 / 90s ") == UsageLimit(5, 90.0)
    assert parse_rate("20/2d") == UsageLimit(20, 172800.0)
    for bad in ("100", "0/1h", "1/0s", "x/1h", "10/1w"):
        assert parse_rate(bad) is None


def test_parse_security_options(tmp_path: Path) -> None:
    problems = Problems()
    reader = Reader({"security": {}}, "records", problems, tmp_path).sub("security")
    assert parse_security_options(reader) == SecurityOptions()
    assert problems.items == []

    problems = Problems()
    data = {"security": {
        "rotate_keys": "1h", "failure_window": "1h", "max_failures": 0,
        "usage_limits": {"download": "lots", "printing": "1/1h", "search": "100/10m"}, "colour": "red",
    }}
    reader = Reader(data, "records", problems, tmp_path).sub("security")
    options = parse_security_options(reader)
    assert options.usage_limits == {"search": UsageLimit(100, 600.0)}
    text = "\n".join(problems.items)
    assert len(problems.items) == 5, text
    for word in ("lots", "printing", "max_failures", "rotate_keys", "colour"):
        assert word in text


@pytest.mark.parametrize("card", ["2123 4009 8765 43", "2123-4009-8765-43", "\t21234009876543\n"])
def test_normalise_card(card: str) -> None:
    assert normalise_card(card) == CARD


def test_wrong_pins_from_one_address_do_not_lock_the_owner_out_elsewhere() -> None:
    """Issue 11: anyone who knows a card number could lock its owner out for half an hour."""
    clock = Clock()
    memory = SecurityMemory(clock, SecurityOptions(max_failures=10, card_max_failures=100))
    for _ in range(10):
        memory.note_failure(CARD, CLIENT)
    assert memory.is_locked(CARD, CLIENT)
    assert not memory.is_locked(CARD, "198.51.100.77")  # the owner, at home
    # ...but every attempt for that card is now slowed down, wherever it comes from.
    assert 0 < memory.delay_for(CARD) <= memory.options.max_delay
    assert memory.delay_for(OTHER_CARD) == 0


def test_failures_from_many_addresses_lock_the_card_at_its_ceiling() -> None:
    clock = Clock()
    memory = SecurityMemory(clock, SecurityOptions(max_failures=10, card_max_failures=30))
    for i in range(30):
        memory.note_failure(CARD, f"198.51.100.{i}")
    assert memory.is_locked(CARD, "203.0.113.9")


def test_delay_grows_then_stops_at_its_cap() -> None:
    clock = Clock()
    memory = SecurityMemory(clock, SecurityOptions(slow_after=5, max_delay=10.0, card_max_failures=1000))
    delays = []
    for _ in range(14):
        delays.append(memory.delay_for(CARD))
        memory.note_failure(CARD, CLIENT)
    assert delays[:6] == [0.0] * 6
    assert delays[6:] == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


async def test_concurrent_guesses_are_counted_before_the_directory_answers() -> None:
    """Issue 11 #1: 61 simultaneous attempts for one card (60 wrong, the right one last) were
    all checked. Now they are checked one at a time and stop at the lock."""
    import asyncio

    from proxy.records.guard import SignInGuard

    clock = Clock()
    memory = SecurityMemory(clock, SecurityOptions(max_failures=10, slow_after=1000, client_concurrency=100))
    guard = SignInGuard(memory)
    checked: list[str] = []

    async def directory(pin: str) -> bool:
        checked.append(pin)
        await asyncio.sleep(0)  # the directory answers later; others are already waiting
        return pin == "right"

    async def one(pin: str, client: str) -> str:
        async with guard.attempt(CARD, client) as attempt:
            if attempt is None:
                return "refused"
            if await directory(pin):
                attempt.succeeded()
                return "in"
            return "wrong"

    pins = [f"{i:04d}" for i in range(60)] + ["right"]
    results = await asyncio.gather(*(one(pin, CLIENT) for pin in pins))
    assert "in" not in results
    assert len(checked) <= 10  # at most max_failures PINs ever reach the directory
    assert results.count("wrong") == len(checked)
    # A well-behaved owner elsewhere, after the storm: not locked (only slowed).
    assert await one("right", "198.51.100.77") == "in"


async def test_an_attempt_without_a_verdict_is_refunded() -> None:
    from proxy.errors import DirectoryUnavailable
    from proxy.records.guard import SignInGuard

    clock = Clock()
    memory = SecurityMemory(clock, SecurityOptions(max_failures=2))
    guard = SignInGuard(memory)
    for _ in range(5):
        with pytest.raises(DirectoryUnavailable):
            async with guard.attempt(CARD, CLIENT) as attempt:
                assert attempt is not None
                raise DirectoryUnavailable("down")
    assert not memory.is_locked(CARD, CLIENT)


class _Recorder:
    """The SharedCounters side, recording what would be handed to the other instances."""

    def __init__(self) -> None:
        self.forgets: list[tuple[int, bytes, str, float]] = []

    def epoch_key(self, index: int) -> bytes | None:
        return None

    def publish(self, index: int, digest: bytes, category: str, window: float, n: int, now: float) -> None:
        pass

    def publish_forget(self, index: int, digest: bytes, category: str, window: float, now: float) -> None:
        self.forgets.append((index, digest, category, window))


def test_a_correct_sign_in_publishes_the_forget_even_for_counters_never_seen_here() -> None:
    """Another instance may hold the lock from increments this one missed: a correct sign-in
    here must clear it there all the same."""
    clock = Clock(START + 3600)
    memory = SecurityMemory(clock)
    shared = _Recorder()
    memory.shared = shared
    memory.note_success(CARD, CLIENT)  # nothing counted here
    [epoch] = memory._live(clock())
    pair = f"{normalise_card(CARD)}\x1f{normalise_client(CLIENT)}"
    assert sorted(shared.forgets) == sorted([
        (epoch.index, epoch.digest("card", normalise_card(CARD)), "card", memory.options.window),
        (epoch.index, epoch.digest("pair", pair), "pair", memory.options.window)])


class _SharedKeys(_Recorder):
    """Fixed shared keys per epoch, and the increments one instance hands to the others."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[int, bytes, str, float, int, float]] = []

    def epoch_key(self, index: int) -> bytes | None:
        return hashlib.sha256(b"epoch %d" % index).digest()

    def publish(self, index: int, digest: bytes, category: str, window: float, n: int, now: float) -> None:
        self.sent.append((index, digest, category, window, n, now))


def test_an_instance_started_after_a_rotation_honours_a_lock_made_just_before_it() -> None:
    shared = _SharedKeys()
    rotate = SecurityOptions().rotate
    boundary = (START // rotate + 1) * rotate
    before = Clock(boundary - MINUTE)  # the last minute of the previous epoch
    locker = SecurityMemory(before, SecurityOptions(max_failures=10, window=15 * MINUTE))
    locker.shared = shared
    for _ in range(12):
        locker.note_failure(CARD, CLIENT)
    assert locker.is_locked(CARD, CLIENT)
    after = Clock(boundary + 30)  # a new instance, started in the new epoch
    late = SecurityMemory(after, SecurityOptions(max_failures=10, window=15 * MINUTE))
    late.shared = shared
    for increment in shared.sent:
        late.apply(*increment)
    assert late.is_locked(CARD, CLIENT)
    # Its correct sign-in clears the lock everywhere, the previous epoch's counter included.
    late.note_success(CARD, CLIENT)
    assert not late.is_locked(CARD, CLIENT)
    previous = int(before() // late.options.rotate)
    assert any(index == previous and category == "pair" for index, _, category, _ in shared.forgets)


def test_a_late_instance_that_saw_nothing_still_clears_the_previous_epoch() -> None:
    """Started after a rotation and having missed every increment, an instance's correct
    sign-in still sends the forget for the previous epoch, where the others hold the lock."""
    shared = _SharedKeys()
    rotate = SecurityOptions().rotate
    boundary = (START // rotate + 1) * rotate
    late = SecurityMemory(Clock(boundary + 30))
    late.shared = shared
    late.note_success(CARD, CLIENT)
    previous = int(boundary // rotate) - 1
    locker = SecurityMemory(Clock(boundary - MINUTE))
    locker.shared = shared
    [epoch] = locker._live(boundary - MINUTE)
    assert (previous, epoch.digest("card", normalise_card(CARD)), "card", late.options.window) in shared.forgets
