"""Vendor routes: everything the proxy needs to forward to one vendor, built once.

``Routes`` is built from the configuration when it is loaded: the vendor table, the rewriting
tables and header mapper, the CSP added to proxied documents, and per vendor its outbound header
policy and find/replace rules. Nothing is filled in lazily on first use, so a new configuration
is a new ``Routes`` swapped in whole (live reload needs exactly that), and requests already in
flight keep the one they started with.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.forward.headers import OutboundPolicy
from proxy.rewrite import FindReplace, HeaderMapper, RewriteTable
from proxy.vendors import Origin, Vendor, VendorMap


@dataclass(frozen=True, slots=True)
class VendorRoute:
    vendor: Vendor
    policy: OutboundPolicy  # which request headers may leave for this vendor, and how mapped
    rules: tuple[FindReplace, ...]  # the vendor's literal find/replace rules, compiled


class Routes:
    """Every vendor route of one configuration, and what they share."""

    def __init__(self, vendors: VendorMap, *, user_agent: str | None, proxy_cookie_names: frozenset[str],
                 reduce_user_agent: bool = True, first_language: bool = True, report_uri: str | None = None) -> None:
        self.vendors = vendors
        self.rewrite = RewriteTable(vendors)
        self.header_map = HeaderMapper(self.rewrite)
        # Added to every proxied document (see relay.py); the same for every vendor.
        self.proxy_policy = self.header_map.proxy_policy()
        if report_uri:
            # Browsers report what the policy blocked: the hosts a vendor's entry is missing,
            # and the trackers kept away from patrons (records/needhosts.py).
            self.proxy_policy += f"; report-uri {report_uri}"
        self._by_id = {
            vendor.id: VendorRoute(
                vendor=vendor,
                policy=self._policy(
                    vendor, user_agent, proxy_cookie_names,
                    reduce_user_agent=(vendor.user_agent or ("reduce" if reduce_user_agent else "pass")) == "reduce",
                    first_language=(vendor.accept_language or ("first" if first_language else "pass")) == "first",
                ),
                rules=tuple(FindReplace(f, r) for f, r in vendor.replace),
            )
            for vendor in vendors.vendors
        }

    def _policy(self, vendor: Vendor, user_agent: str | None, proxy_cookie_names: frozenset[str], *,
                reduce_user_agent: bool, first_language: bool) -> OutboundPolicy:
        mapper = self.header_map
        # Any origin of the vendor will do: the Referer check compares vendors, not hosts.
        some_origin = min(vendor.origins, key=str) if vendor.origins else Origin("https", vendor.domains[0], 443)
        return OutboundPolicy(
            map_origin=mapper.origin_to_vendor,
            map_referer=lambda value: mapper.referer_to_vendor(value, some_origin),
            user_agent=user_agent,
            cookie_passthrough=vendor.cookie_passthrough,
            proxy_cookie_names=proxy_cookie_names,
            reduce_user_agent=reduce_user_agent,
            first_language=first_language,
        )

    def route(self, vendor: Vendor) -> VendorRoute:
        return self._by_id[vendor.id]

    def for_host(self, host: str) -> tuple[Origin, VendorRoute] | None:
        """The vendor origin and route a proxied Host header stands for, or None."""
        origin = self.vendors.origin_for_host(host)
        if origin is None:
            return None
        vendor = self.vendors.match(origin)
        return (origin, self._by_id[vendor.id]) if vendor is not None else None
