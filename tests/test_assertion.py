"""Signing keys and the shared membership assertion."""

from __future__ import annotations

from pathlib import Path

import jwt

from proxy.assertion import AssertionMinter, load_or_create_keys


def test_assertion_is_shared_until_near_expiry(tmp_path: Path) -> None:
    now = [10_000.0]
    keys = load_or_create_keys(tmp_path / "keys.json", "ES256")
    assert oct((tmp_path / "keys.json").stat().st_mode & 0o777) == "0o600"
    minter = AssertionMinter(keys, "https://proxy.lib.example", "wolcott.lib.ct.us", 300, clock=lambda: now[0])
    first = minter.token("gale")
    now[0] += 200
    assert minter.token("gale") == first
    assert minter.token("ebsco") != first
    now[0] += 50  # within the re-mint margin (60 s before expiry)
    second = minter.token("gale")
    assert second != first
    assert jwt.get_unverified_header(second)["kid"] == keys[0].kid
    # Keys survive a restart.
    assert load_or_create_keys(tmp_path / "keys.json", "ES256")[0].kid == keys[0].kid


def test_eddsa_keys(tmp_path: Path) -> None:
    keys = load_or_create_keys(tmp_path / "ed.json", "EdDSA")
    minter = AssertionMinter(keys, "https://p", "lib.example", 60)
    jwk = minter.jwks()["keys"][0]
    assert jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519"
    public = jwt.PyJWK(jwk).key
    claims = jwt.decode(minter.token("v"), public, algorithms=["EdDSA"], audience="v")
    assert claims["eduPersonScopedAffiliation"] == "member@lib.example"
