"""The records' view of forwarding: statistics and usage limits as an observer of exchanges.

Forwarding announces each exchange with a vendor (``proxy/forward/hooks.py``); this observer
counts it per vendor and day, recognises searches and downloads by the vendor's patterns, and
checks and notes the usage limits by the session's keyed-hash key. The path it classifies is
never kept: only the kinds recognised are counted.
"""

from __future__ import annotations

from collections.abc import Mapping

from proxy.counters import NO_PATTERNS, CounterPatterns, Kind, classify
from proxy.forward.hooks import Exchange
from proxy.records.service import Records


class UsageObserver:
    def __init__(self, records: Records, patterns: Mapping[str, CounterPatterns]) -> None:
        self.records = records
        # Only vendors with search/download patterns are worth classifying.
        self.patterns = {vendor_id: p for vendor_id, p in patterns.items() if not p.empty}
        self.limits = bool(records.options.security.usage_limits)

    def _kinds(self, exchange: Exchange) -> frozenset[Kind]:
        patterns = self.patterns.get(exchange.vendor_id)
        return classify(exchange.path, patterns) if patterns is not None else frozenset()

    def refuse(self, exchange: Exchange) -> str | None:
        if not (self.limits and exchange.patron_key):
            return None
        kinds = self._kinds(exchange)
        exchange.kinds = kinds
        if self.records.security.over_limit(exchange.patron_key, kinds | {"request"}):
            return "usage-limit"
        return None

    def done(self, exchange: Exchange) -> None:
        stats = self.records.stats
        if exchange.first_visit:
            # The first request of a session to this vendor: one "session" in the statistics.
            stats.record(exchange.vendor_id, kind="session", in_library=exchange.in_library)
        checked = self.limits and exchange.patron_key
        kinds: frozenset[Kind] = exchange.kinds if checked else self._kinds(exchange)  # type: ignore[assignment]
        stats.count_request(exchange.vendor_id, exchange.path, patterns=NO_PATTERNS, bytes=exchange.received,
                            in_library=exchange.in_library, kinds=kinds)
        if checked and exchange.patron_key:
            for kind in (*kinds, "request"):
                self.records.security.note_usage(exchange.patron_key, kind)
