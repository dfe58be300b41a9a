"""The Authenticator interface: one small contract for every patron source.

``authenticate(card, pin)`` returns

* a ``Membership`` when the credentials are right and the card may be used;
* ``None`` when they are wrong *or* the card is unknown (the two must look the same to a caller);
* raises ``CardRefused`` when the credentials are right but the card may not be used (expired,
  blocked): the patron holds the card, so saying so in general words reveals nothing;
* raises ``DirectoryUnavailable`` when the source is broken or unreachable.

Implementations must not block the event loop (slow hashing and directory calls go to a thread
pool), must never log or store the card number or PIN, and must refuse empty or overlong input
before it reaches the source.
"""

from __future__ import annotations

from typing import Protocol

from proxy.errors import CardRefused as CardRefused  # re-exported: every source raises it
from proxy.membership import Membership

# SECURITY: bounds applied before any source sees the input, so a megabyte "card number"
# costs nothing and cannot reach an LDAP filter or a KDF.
MAX_CARD_LENGTH = 64
MAX_PIN_LENGTH = 128


def acceptable_credentials(card: str, pin: str) -> bool:
    """True when the input is worth asking a source about (non-empty, bounded, printable)."""
    if not card or not pin:
        # SECURITY: an empty PIN must never authenticate (an LDAP simple bind with an empty
        # password is an anonymous bind that "succeeds").
        return False
    if len(card) > MAX_CARD_LENGTH or len(pin) > MAX_PIN_LENGTH:
        return False
    # SECURITY: control characters (NUL above all) are never part of a card or PIN.
    return card.isprintable() and pin.isprintable()


class Authenticator(Protocol):
    """A source of patrons. See the module docstring for the contract."""

    name: str

    async def authenticate(self, card: str, pin: str) -> Membership | None: ...

    async def start(self) -> None:
        """Open connections or files; raise ConfigError/DirectoryUnavailable if unusable."""

    async def close(self) -> None: ...
