"""What forwarding needs from the parts around it, as small interfaces it owns.

Forwarding knows nothing of the statistics, the usage limits or the proxy's pages: it announces
each exchange with a vendor to its ``Observer``s (the way mitmproxy's addons see events), and
asks its ``Answers`` for the pages it must send instead of the vendor's answer. The records
package implements an observer and the web package the answers; the application wires them in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web


@dataclass(slots=True)
class Exchange:
    """One request forwarded to a vendor, as observers see it.

    ``path`` is the path and query sent to the vendor: observers may classify it (a search, a
    download) but must never keep or log it. ``patron_key`` is the session's keyed-hash key, None
    for in-library and anonymous use.
    """

    vendor_id: str
    path: str
    in_library: bool
    patron_key: str | None
    first_visit: bool  # the session's first request to this vendor
    received: int = 0  # body bytes received from the vendor, set when the exchange is done
    rewritten: int = 0  # of those, the bytes of a body that went through the rewriter (as received)
    kinds: frozenset[str] = field(default_factory=frozenset)  # filled by observers that classify


class Observer(Protocol):
    def refuse(self, exchange: Exchange) -> str | None:
        """Before the request leaves: a message reason to refuse it with (a usage limit), or None."""

    def done(self, exchange: Exchange) -> None:
        """After the answer was relayed (or failed mid-body); ``exchange.received`` is set."""


class Answers(Protocol):
    """The pages forwarding sends instead of a vendor's answer (see ``web/texts.py``)."""

    def message(self, reason: str, *, status: int | None = None, links: list[tuple[str, str]] | None = None,
                **fields: object) -> web.Response: ...

    def leaving(self, target: str | None) -> web.Response: ...
