"""What a session knows about a patron, and nothing more.

A Membership is the whole of what the proxy keeps about a signed-in patron: the groups that
decide which databases they may open, their home library, and a stable pseudonymous key (a keyed
hash chosen by the authenticator) that lets later features count or limit without knowing who the
patron is. Names, e-mail addresses, card numbers and PINs never enter it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Membership.source of an in-library session: granted by the library's network, no patron at all.
NETWORK_SOURCE = "network"


@dataclass(frozen=True, slots=True)
class Membership:
    groups: frozenset[str]
    home_library: str | None = None
    # A keyed hash of the patron's stable directory identifier; never the identifier itself.
    # None for in-library (network) sessions, which belong to no patron.
    key: str | None = None
    # Which kind of sign-in produced it ("local", "ldap", "network", ...); for statistics only.
    source: str = field(default="local")

    @property
    def in_library(self) -> bool:
        return self.source == NETWORK_SOURCE

    @classmethod
    def on_network(cls, groups: frozenset[str]) -> Membership:
        """The membership of an in-library session: the network's groups, no patron key."""
        return cls(groups=groups, key=None, source=NETWORK_SOURCE)

    def to_dict(self) -> dict[str, Any]:
        return {
            "groups": sorted(self.groups),
            "home_library": self.home_library,
            "key": self.key,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Membership:
        return cls(
            groups=frozenset(str(g) for g in data.get("groups", ())),
            home_library=data.get("home_library"),
            key=data.get("key"),
            source=str(data.get("source", "local")),
        )
