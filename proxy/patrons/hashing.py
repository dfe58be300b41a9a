"""PIN hashing with scrypt (memory-hard, in the standard library) and keyed pseudonyms.

Hashes are stored as ``scrypt$<log2 n>$<r>$<p>$<salt b64>$<hash b64>`` so the cost can be raised
later without invalidating existing entries.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

_N_LOG2 = 15  # 32 MiB of memory and ~60-100 ms per check on this kind of machine
_R = 8
_P = 1
_DKLEN = 32


def hash_pin(pin: str, *, n_log2: int = _N_LOG2) -> str:
    salt = secrets.token_bytes(16)
    digest = _scrypt(pin, salt, n_log2, _R, _P)
    return "$".join(
        ["scrypt", str(n_log2), str(_R), str(_P), _b64(salt), _b64(digest)]
    )


def verify_pin(pin: str, stored: str) -> bool:
    """Constant-time check of ``pin`` against a stored hash; False for any malformed hash."""
    try:
        kind, n_log2, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = _scrypt(pin, base64.b64decode(salt), int(n_log2), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(expected, actual)


def _scrypt(pin: str, salt: bytes, n_log2: int, r: int, p: int) -> bytes:
    if not 10 <= n_log2 <= 20:
        raise ValueError("scrypt cost out of range")
    return hashlib.scrypt(
        pin.encode("utf-8"), salt=salt, n=1 << n_log2, r=r, p=p, dklen=_DKLEN,
        maxmem=256 * 1024 * 1024,
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def pseudonym(secret: bytes, *parts: str) -> str:
    """A stable keyed hash of ``parts``: the same patron always gets the same value, and without
    the secret nobody can go back from it to the card or directory entry."""
    mac = hmac.new(secret, "\x1f".join(parts).encode("utf-8"), hashlib.sha256).digest()
    return base64.b32encode(mac[:20]).decode("ascii").rstrip("=").lower()


# A hash checked when the card is unknown, so that an unknown card costs as much time as a wrong
# PIN and the two cannot be told apart by timing. Computed once, lazily, at the default cost.
_DUMMY: str | None = None


def dummy_hash() -> str:
    global _DUMMY
    if _DUMMY is None:
        _DUMMY = hash_pin(secrets.token_hex(8))
    return _DUMMY
