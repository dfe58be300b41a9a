"""The membership assertion: signing keys, JWT minting, and the published JWKS.

The assertion says only "a member of <library>, entitled under library licence terms". It holds
no subject, name, card or session identifier, so one token per vendor (and set of claims) is
minted and shared by every patron until shortly before it expires: signing stays off the hot
path and the token cannot tell patrons apart.

Keys are kept in a JSON file (mode 0600) created on first start:

    {"keys": [{"kid": "...", "alg": "ES256", "created": 1764300000, "private_pem": "..."}]}

The first key signs; every key in the file is published in the JWKS, so a later rotation can add
a key, publish it, then switch signing to it.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from proxy.errors import ConfigError

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


def new_key(alg: str, now: float | None = None) -> SigningKey:
    return SigningKey(
        kid=secrets.token_urlsafe(12), alg=alg, created=time.time() if now is None else now,
        private=_generate(alg),
    )


def _key_to_record(key: SigningKey) -> dict[str, Any]:
    pem = key.private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    return {"kid": key.kid, "alg": key.alg, "created": key.created, "private_pem": pem}


def _record_to_key(record: dict[str, Any]) -> SigningKey:
    private = serialization.load_pem_private_key(record["private_pem"].encode("ascii"), password=None)
    if not isinstance(private, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise ValueError("unsupported key type")
    return SigningKey(str(record["kid"]), str(record["alg"]), float(record["created"]), private)


def write_keys(path: Path, keys: list[SigningKey]) -> None:
    """Write the key file atomically, readable by the proxy's user only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"keys": [_key_to_record(k) for k in keys]}, fh, indent=2)
    os.replace(tmp, path)


def load_or_create_keys(path: Path, alg: str) -> list[SigningKey]:
    """The keys in ``path``, creating the file with one new key when it does not exist."""
    if not path.exists():
        keys = [new_key(alg)]
        write_keys(path, keys)
        return keys
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        keys = [_record_to_key(r) for r in data["keys"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError([f"[assertion] key_file: {path} is not a usable key file ({exc})"]) from None
    if not keys:
        raise ConfigError([f"[assertion] key_file: {path} holds no keys"])
    return keys


class AssertionMinter:
    """Mints and caches shared membership assertions, one per (vendor, claim set)."""

    def __init__(self, keys: list[SigningKey], issuer: str, scope: str, lifetime: float,
                 clock: Callable[[], float] = time.time) -> None:
        self._keys = keys
        self._issuer = issuer
        self._scope = scope
        self._lifetime = int(lifetime)
        self._clock = clock
        # Re-mint when less than a fifth of the lifetime (at least 10 s) is left, so a vendor
        # never receives a token about to expire in flight.
        self._margin = max(10, self._lifetime // 5)
        self._cache: dict[tuple[str, tuple[tuple[str, str | bool], ...]], tuple[str, float]] = {}

    @property
    def signing_key(self) -> SigningKey:
        return self._keys[0]

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.public_jwk() for k in self._keys]}

    def token(self, vendor_id: str, extra: dict[str, str | bool] | None = None) -> str:
        """The current assertion for ``vendor_id``; ``extra`` adds claims shared by a group of
        patrons (never per-patron values)."""
        cache_key = (vendor_id, tuple(sorted((extra or {}).items())))
        now = self._clock()
        cached = self._cache.get(cache_key)
        if cached is not None and cached[1] - now > self._margin:
            return cached[0]
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
        key = self.signing_key
        token = jwt.encode(claims, key.private, algorithm=key.alg, headers={"kid": key.kid})
        self._cache[cache_key] = (token, float(iat + self._lifetime))
        return token
