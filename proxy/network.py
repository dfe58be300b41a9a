"""Where a request comes from: the client address, and the library networks it may belong to.

The client address is decided once per request. It is the TCP peer, unless the peer is one of
the configured trusted proxies (a load balancer in front of this proxy); only then is a
forwarding header read, right to left, skipping trusted hops, and the right-most address that
is not a trusted proxy is the client. Forwarding headers from anyone else are ignored
everywhere: there is no default trust.

The address is used for in-library decisions only. It is never logged, stored or sent upstream.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def is_ip_literal(host: str) -> bool:
    """True when ``host`` is an IP address exactly as written (no brackets, no port)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=4096)
def parse_address(text: str) -> IPAddress | None:
    """An address as a header or socket gives it; IPv4-mapped IPv6 becomes plain IPv4."""
    text = text.strip().strip('"')
    if text.startswith("["):  # [v6]:port or [v6]
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    text = text.split("%", 1)[0]  # zone index
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_network(text: str) -> IPNetwork | None:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return None


def _in(address: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    return any(address.version == n.version and address in n for n in networks)


def forwarded_for_chain(header: str, values: Sequence[str]) -> list[IPAddress | None]:
    """Addresses in forwarding header values, left (first hop) to right (nearest hop).

    ``header`` is "x-forwarded-for" (comma lists), "forwarded" (RFC 7239 ``for=`` parameters)
    or a single-address header such as "x-real-ip". Unparseable entries become None, which
    stops the walk: the chain cannot be trusted past a garbled hop.
    """
    chain: list[IPAddress | None] = []
    for value in values:
        for element in value.split(","):
            if header == "forwarded":
                found: IPAddress | None = None
                for pair in element.split(";"):
                    key, _, val = pair.strip().partition("=")
                    if key.strip().lower() == "for":
                        found = parse_address(val)
                chain.append(found)
            else:
                chain.append(parse_address(element))
    return chain


def client_address(peer: str | None, forwarded_values: Sequence[str], header: str,
                   trusted: Sequence[IPNetwork]) -> IPAddress | None:
    """The client's address (see module docstring). None only when the peer is unknown."""
    address = parse_address(peer) if peer else None
    if address is None:
        return None
    # SECURITY: forwarding headers are believed only from a configured trusted proxy.
    if not trusted or not _in(address, trusted) or not forwarded_values:
        return address
    for hop in reversed(forwarded_for_chain(header, forwarded_values)):
        if hop is None:
            return address  # garbled: fall back to the last address we can vouch for
        if not _in(hop, trusted):
            return hop
        address = hop
    return address


@dataclass(frozen=True)
class LibraryNetwork:
    name: str
    networks: tuple[IPNetwork, ...]
    groups: frozenset[str]


class Networks:
    """The library's own networks and the groups each grants to the machines on it."""

    def __init__(self, libraries: Sequence[LibraryNetwork]) -> None:
        self.libraries = tuple(libraries)

    def groups_for(self, address: IPAddress | None) -> frozenset[str]:
        if address is None or not self.libraries:
            return frozenset()
        groups: set[str] = set()
        for library in self.libraries:
            if _in(address, library.networks):
                groups |= library.groups
        return frozenset(groups)
