"""The membership assertion: signing keys, JWT minting, and the published JWKS.

The assertion says only "a member of <library>, entitled under library licence terms". It holds
no subject, name, card or session identifier, so one token per vendor (and set of claims) is
minted and shared by every patron until shortly before it expires: signing stays off the hot
path and the token cannot tell patrons apart.

Keys are kept in a JSON file (mode 0600) created on first start:

    {"keys": [{"kid": "...", "alg": "ES256", "created": 1764300000, "private_pem": "..."}]}

Rotation (``libproxy keys rotate``) adds a key that is published at once and starts signing after
a grace period; the replaced key stays published until every assertion it signed has expired,
then the next rotation drops it. A running proxy re-reads the file when it changes.

Several instances must publish one JWKS and sign with the same key, so with ``[assertion]
key_store = "redis"`` (the default when sessions are in Redis) the same JSON lives in one Redis key
instead (``libproxy:assertion-keys``), created once by whichever instance starts first (seeded from
an existing key file, so moving to Redis keeps the keys vendors already know), rotated by ``keys
rotate`` with an optimistic transaction, and re-read by every instance within seconds. Should
the key vanish from Redis (``FLUSHALL``, eviction, a restart), the running
instances put back the set they hold (``SET NX``: one wins, all adopt the winner's) and log an
error, instead of leaving the next instance to start to create a second key set.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import jwt
from cachetools import TTLCache
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from proxy.errors import ConfigError
from proxy.files import write_private

if TYPE_CHECKING:
    from redis import asyncio as aioredis

log = logging.getLogger("libproxy")

ENTITLEMENT = "urn:mace:dir:entitlement:common-lib-terms"
AFFILIATION_CLAIM = "eduPersonScopedAffiliation"
ENTITLEMENT_CLAIM = "eduPersonEntitlement"

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str
    created: float
    private: PrivateKey
    # When this key starts signing. Until then it is only published, so vendors that cache the
    # JWKS learn it before the first assertion signed with it arrives.
    activate_at: float = 0.0

    def public_jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        if isinstance(public, ec.EllipticCurvePublicKey):
            jwk: dict[str, Any] = ECAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
        jwk.update({"kid": self.kid, "alg": self.alg, "use": "sig"})
        return jwk


def _generate(alg: str) -> PrivateKey:
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


def new_key(alg: str, now: float | None = None, activate_at: float | None = None) -> SigningKey:
    created = time.time() if now is None else now
    return SigningKey(
        kid=secrets.token_urlsafe(12), alg=alg, created=created, private=_generate(alg),
        activate_at=created if activate_at is None else activate_at,
    )


def _key_to_record(key: SigningKey) -> dict[str, Any]:
    pem = key.private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    return {"kid": key.kid, "alg": key.alg, "created": key.created, "activate_at": key.activate_at,
            "private_pem": pem}


def _record_to_key(record: dict[str, Any]) -> SigningKey:
    private = serialization.load_pem_private_key(record["private_pem"].encode("ascii"), password=None)
    if not isinstance(private, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise ValueError("unsupported key type")
    created = float(record["created"])
    return SigningKey(str(record["kid"]), str(record["alg"]), created, private,
                      float(record.get("activate_at", created)))


def keys_to_json(keys: list[SigningKey]) -> str:
    return json.dumps({"keys": [_key_to_record(k) for k in keys]}, indent=2)


def keys_from_json(text: str, where: str) -> list[SigningKey]:
    """The keys of a key file's text; ConfigError naming ``where`` when unusable or empty."""
    try:
        keys = [_record_to_key(r) for r in json.loads(text)["keys"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError([f"[assertion] {where} is not a usable key set ({exc})"]) from None
    if not keys:
        raise ConfigError([f"[assertion] {where} holds no keys"])
    return keys


def write_keys(path: Path, keys: list[SigningKey]) -> None:
    """Write the key file atomically, readable by the proxy's user only."""
    write_private(path, keys_to_json(keys))


def load_or_create_keys(path: Path, alg: str) -> list[SigningKey]:
    """The keys in ``path``, creating the file with one new key when it does not exist."""
    if not path.exists():
        keys = [new_key(alg)]
        write_keys(path, keys)
        return keys
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, ValueError) as exc:
        raise ConfigError([f"[assertion] key_file: {path} is not a usable key file ({exc})"]) from None
    return keys_from_json(text, f"key_file: {path}")


def signing_key_at(keys: list[SigningKey], now: float) -> SigningKey:
    """The key that signs at ``now``: the most recently activated one (the oldest if none is)."""
    active = [k for k in keys if k.activate_at <= now]
    if not active:
        return min(keys, key=lambda k: k.activate_at)
    return max(active, key=lambda k: k.activate_at)


def published_keys(keys: list[SigningKey], now: float, lifetime: float) -> list[SigningKey]:
    """Keys vendors must be able to verify with at ``now``: the signing key, keys waiting to
    sign, and a replaced key until every assertion it signed has expired."""
    current = signing_key_at(keys, now)
    kept = []
    for key in keys:
        if key is current or key.activate_at > now:
            kept.append(key)
            continue
        successor = min((k.activate_at for k in keys if k.activate_at > key.activate_at), default=None)
        # An assertion signed just before the switch lives ``lifetime`` more seconds.
        if successor is not None and now < successor + lifetime + 60:
            kept.append(key)
    return kept


def rotate_keys(path: Path, alg: str, grace: float, lifetime: float, now: float | None = None) -> SigningKey:
    """Add a key that starts signing after ``grace`` seconds; drop keys nobody needs any more."""
    now = time.time() if now is None else now
    keys, key = rotate_key_list(load_or_create_keys(path, alg), alg, grace, lifetime, now)
    write_keys(path, keys)
    return key


class KeySource(Protocol):
    """Where the minter finds the current keys (a file, or Redis shared by several instances)."""

    keys: list[SigningKey]

    async def refresh(self) -> bool:
        """Re-read the keys if they changed; True when they did. A broken set keeps the old keys."""


def rotate_key_list(keys: list[SigningKey], alg: str, grace: float, lifetime: float,
                    now: float) -> tuple[list[SigningKey], SigningKey]:
    """The key list after a rotation: unneeded keys dropped, a new key signing after ``grace``."""
    kept = published_keys(keys, now, lifetime)
    key = new_key(alg, now, activate_at=now + grace)
    return [*kept, key], key


class KeyRing:
    """The signing keys, re-read from their file when it changes (after ``keys rotate``)."""

    def __init__(self, path: Path, alg: str) -> None:
        self.path = path
        self.alg = alg
        self.keys = load_or_create_keys(path, alg)
        self._stamp = self._stat()

    def _stat(self) -> tuple[int, int]:
        st = self.path.stat()
        return st.st_mtime_ns, st.st_size

    def reload_if_changed(self) -> bool:
        """Blocking (file I/O): call from a worker thread. A broken file keeps the old keys."""
        try:
            stamp = self._stat()
            if stamp == self._stamp:
                return False
            self.keys = load_or_create_keys(self.path, self.alg)
            self._stamp = stamp
            return True
        except (OSError, ConfigError):
            return False

    async def refresh(self) -> bool:
        return await asyncio.to_thread(self.reload_if_changed)


REDIS_KEYS = "libproxy:assertion-keys"


class RedisKeyRing:
    """The signing keys of every instance, in one Redis key (see the module docstring).

    ``await open()`` before use: it creates the key set when nobody has (``SET NX``: of two
    instances starting at once, one wins and both read its keys), seeding it from ``seed_file``
    when that exists.
    """

    def __init__(self, redis: aioredis.Redis, alg: str, seed_file: Path | None = None) -> None:
        self._redis = redis
        self.alg = alg
        self.seed_file = seed_file
        self.keys: list[SigningKey] = []
        self._text = ""

    async def open(self) -> None:
        text = await self._redis.get(REDIS_KEYS)
        if text is None:
            seed = self.seed_file
            if seed is not None and await asyncio.to_thread(seed.exists):
                keys = await asyncio.to_thread(load_or_create_keys, seed, self.alg)
            else:
                keys = [new_key(self.alg)]
            # SECURITY: private keys in Redis: Redis must be as private as the sessions it
            # already holds (a password, loopback or a private network; see docs/operations.md).
            await self._redis.set(REDIS_KEYS, keys_to_json(keys), nx=True)
            text = await self._redis.get(REDIS_KEYS)
        if text is None:
            raise ConfigError(["[assertion] key_store: the keys could not be stored in Redis"])
        self.keys = keys_from_json(_text(text), "key_store: Redis")
        self._text = _text(text)

    async def refresh(self) -> bool:
        """Re-read the key set; True when it changed. A key set missing from Redis is put back
        from this instance's copy (of several instances doing so at once, one wins and the
        others adopt its set), so the instances keep publishing one JWKS."""
        try:
            raw = await self._redis.get(REDIS_KEYS)
            if raw is None and self._text:
                if await self._redis.set(REDIS_KEYS, self._text, nx=True):
                    log.error("the assertion signing keys were missing from Redis (flushed, evicted, or Redis "
                              "restarted) and were restored from this instance's copy; run Redis with "
                              "maxmemory-policy noeviction, and see docs/operations.md for a key file instead")
                    return False
                raw = await self._redis.get(REDIS_KEYS)  # another instance restored it first
            if raw is None or _text(raw) == self._text:
                return False
            self.keys = keys_from_json(_text(raw), "key_store: Redis")
            self._text = _text(raw)
            return True
        except (ConfigError, OSError, ValueError):
            return False
        except Exception as exc:  # redis-py's errors: the old keys stay in use
            if type(exc).__module__.startswith("redis"):
                return False
            raise


def _text(raw: str | bytes) -> str:
    return raw.decode("utf-8") if isinstance(raw, bytes) else raw


def rotate_keys_in_redis(url: str, alg: str, grace: float, lifetime: float, seed_file: Path | None = None,
                         now: float | None = None) -> SigningKey:
    """``keys rotate`` for keys kept in Redis: read, rotate and write in one optimistic
    transaction (WATCH), so two rotations at once cannot lose a key."""
    import redis

    now = time.time() if now is None else now
    client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=5, socket_connect_timeout=5)
    try:
        while True:
            with client.pipeline() as pipe:
                try:
                    pipe.watch(REDIS_KEYS)  # type: ignore[no-untyped-call]
                    text = pipe.get(REDIS_KEYS)
                    if text is not None:
                        keys = keys_from_json(str(text), "key_store: Redis")
                    elif seed_file is not None and seed_file.exists():
                        keys = load_or_create_keys(seed_file, alg)
                    else:
                        keys = [new_key(alg, now)]
                    rotated, key = rotate_key_list(keys, alg, grace, lifetime, now)
                    pipe.multi()
                    pipe.set(REDIS_KEYS, keys_to_json(rotated))
                    pipe.execute()
                    return key
                except redis.WatchError:
                    continue
    finally:
        client.close()


def read_keys_in_redis(url: str) -> list[SigningKey] | None:
    """The keys kept in Redis (for ``keys list``), None when none were created yet."""
    import redis

    client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=5, socket_connect_timeout=5)
    try:
        text = client.get(REDIS_KEYS)
    finally:
        client.close()
    return None if text is None else keys_from_json(str(text), "key_store: Redis")


class AssertionMinter:
    """Mints and caches shared membership assertions, one per (vendor, claim set, key).

    Pairwise subjects (opt-in per vendor) are the only per-patron claim; those tokens are cached
    per subject in a bounded cache.
    """

    def __init__(self, keys: list[SigningKey] | KeySource, issuer: str, scope: str, lifetime: float,
                 clock: Callable[[], float] = time.time) -> None:
        self._ring = None if isinstance(keys, list) else keys
        self._keys = keys if isinstance(keys, list) else keys.keys
        self._issuer = issuer
        self._scope = scope
        self._lifetime = int(lifetime)
        self._clock = clock
        # Re-mint when less than a fifth of the lifetime (at least 10 s) is left, so a vendor
        # never receives a token about to expire in flight.
        self._margin = max(10, self._lifetime // 5)
        self._cache: dict[tuple[str, str, tuple[tuple[str, str | bool], ...]], tuple[str, float]] = {}
        self._signing: tuple[list[SigningKey], float, SigningKey] | None = None
        self._pairwise: TTLCache[tuple[str, str, str, tuple[tuple[str, str | bool], ...]], tuple[str, float]] = (
            TTLCache(maxsize=50_000, ttl=max(1, self._lifetime), timer=clock)
        )

    @property
    def keys(self) -> list[SigningKey]:
        return self._ring.keys if self._ring is not None else self._keys

    @property
    def signing_key(self) -> SigningKey:
        keys = self.keys
        now = self._clock()
        # Which key signs changes at most at a rotation's switch time: recomputed once a second.
        cached = self._signing
        if cached is not None and cached[0] is keys and now - cached[1] < 1.0:
            return cached[2]
        key = signing_key_at(keys, now)
        self._signing = (keys, now, key)
        return key

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.public_jwk() for k in published_keys(self.keys, self._clock(), self._lifetime)]}

    def token(self, vendor_id: str, extra: dict[str, str | bool] | None = None, subject: str | None = None) -> str:
        """The current assertion for ``vendor_id``.

        ``extra`` adds claims shared by a group of patrons (never per-patron values);
        ``subject`` is a pairwise pseudonym, for vendors that opted in to personal features.
        """
        now = self._clock()
        key = self.signing_key
        extra_items = tuple(sorted(extra.items())) if extra else ()
        cache: Any = self._cache if subject is None else self._pairwise
        cache_key: Any = (vendor_id, key.kid, extra_items) if subject is None else (
            vendor_id, key.kid, subject, extra_items)
        cached = cache.get(cache_key)
        if cached is not None and cached[1] - now > self._margin:
            return str(cached[0])
        iat = int(now)
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "aud": vendor_id,
            "iat": iat,
            "exp": iat + self._lifetime,
            "jti": secrets.token_urlsafe(16),
            AFFILIATION_CLAIM: f"member@{self._scope}",
            ENTITLEMENT_CLAIM: ENTITLEMENT,
        }
        claims.update(extra or {})
        if subject is not None:
            claims["sub"] = subject
        token = jwt.encode(claims, key.private, algorithm=key.alg, headers={"kid": key.kid})
        cache[cache_key] = (token, float(iat + self._lifetime))
        return token


def pairwise_subject(secret: bytes, patron_key: str, vendor_id: str, scope: str) -> str:
    """A per-vendor pseudonym of a patron: the same patron always gets the same value at one
    vendor, different values at different vendors, and nobody without the proxy's secret can go
    back from it to the patron or link two vendors' values."""
    mac = hmac.new(secret, b"pairwise\x1f" + patron_key.encode() + b"\x1f" + vendor_id.encode(), hashlib.sha256)
    return base64.b32encode(mac.digest()[:20]).decode("ascii").rstrip("=").lower() + "@" + scope
