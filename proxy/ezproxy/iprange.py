"""EZproxy address ranges (``AutoLoginIP``, ``ExcludeIP``, ``IncludeIP``) as sets of networks.

EZproxy writes a range as ``first-last`` (blanks around the dash allowed), a single address, or
(V6.3 on) CIDR. Sets are kept as sorted, disjoint integer intervals per IP version so that
``IncludeIP`` can cut holes in what ``ExcludeIP`` listed, and are written out as CIDR blocks.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

Interval = tuple[int, int, int]  # (version, first, last), inclusive


@dataclass(frozen=True, slots=True)
class RangeSet:
    intervals: tuple[Interval, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.intervals)

    def union(self, other: RangeSet) -> RangeSet:
        return RangeSet(_merge([*self.intervals, *other.intervals]))

    def minus(self, other: RangeSet) -> RangeSet:
        out: list[Interval] = []
        for version, first, last in self.intervals:
            pieces = [(first, last)]
            for o_version, o_first, o_last in other.intervals:
                if o_version != version:
                    continue
                next_pieces: list[tuple[int, int]] = []
                for a, b in pieces:
                    if o_last < a or o_first > b:
                        next_pieces.append((a, b))
                        continue
                    if a < o_first:
                        next_pieces.append((a, o_first - 1))
                    if o_last < b:
                        next_pieces.append((o_last + 1, b))
                pieces = next_pieces
            out.extend((version, a, b) for a, b in pieces)
        return RangeSet(_merge(out))

    def cidrs(self) -> list[str]:
        nets: list[str] = []
        for version, first, last in self.intervals:
            make = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
            nets.extend(str(n) for n in ipaddress.summarize_address_range(make(first), make(last)))
        return nets


def _merge(intervals: list[Interval]) -> tuple[Interval, ...]:
    out: list[Interval] = []
    for version, first, last in sorted(intervals):
        if out and out[-1][0] == version and first <= out[-1][2] + 1:
            out[-1] = (version, out[-1][1], max(out[-1][2], last))
        else:
            out.append((version, first, last))
    return tuple(out)


def parse_range(text: str) -> RangeSet | None:
    """``a.b.c.d``, ``a.b.c.d-e.f.g.h`` (blanks allowed around the dash) or a CIDR; None if not."""
    text = text.strip()
    try:
        if "/" in text:
            net = ipaddress.ip_network(text, strict=False)
            return RangeSet(((net.version, int(net.network_address), int(net.broadcast_address)),))
        first_text, dash, last_text = text.partition("-")
        first = ipaddress.ip_address(first_text.strip())
        last = ipaddress.ip_address(last_text.strip()) if dash else first
    except ValueError:
        return None
    if first.version != last.version or int(last) < int(first):
        return None
    return RangeSet(((first.version, int(first), int(last)),))
