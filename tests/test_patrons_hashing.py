"""PIN hashing and patron pseudonyms."""

from __future__ import annotations

from proxy.patrons.hashing import hash_pin, pseudonym, verify_pin


def test_pin_hashing() -> None:
    stored = hash_pin("2468", n_log2=10)
    assert verify_pin("2468", stored) and not verify_pin("2469", stored)
    assert not verify_pin("2468", "scrypt$99$8$1$AAAA$AAAA") and not verify_pin("2468", "garbage")
    assert pseudonym(b"k", "a") == pseudonym(b"k", "a") != pseudonym(b"k2", "a")
