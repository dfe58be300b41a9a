"""The upstream HTTP client, configured for a proxy rather than a browser.

* no cookie jar (vendor cookies live in each patron's session, never shared);
* no redirect following (the browser follows, through the proxy, after Location is mapped);
* no automatic decompression (bodies pass through as sent, or are decoded under caps);
* per-host connection limits, real connect and read timeouts;
* an egress check at connect time: a configured *name* that resolves to a private, loopback or
  link-local address is refused, which also defeats DNS rebinding. Addresses the administrator
  wrote into the configuration (IP-literal hosts, ``[upstream] hosts``) are trusted as written.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from proxy.config import UpstreamConfig


def is_public_address(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class EgressResolver(AbstractResolver):
    """Resolves vendor names, refusing answers that point inside the library's own network."""

    def __init__(self, static: Mapping[str, str], inner: AbstractResolver | None = None) -> None:
        self._static = dict(static)
        self._inner = inner or DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        fixed = self._static.get(host.lower())
        if fixed is not None:
            fam = socket.AF_INET6 if ":" in fixed else socket.AF_INET
            return [ResolveResult(hostname=host, host=fixed, port=port, family=fam, proto=0,
                                  flags=socket.AI_NUMERICHOST)]
        results = await self._inner.resolve(host, port, family)
        # SECURITY: no SSRF through DNS: a vendor name resolving (or rebinding) to loopback,
        # private or link-local space is treated as unreachable.
        allowed = [r for r in results if is_public_address(r["host"])]
        if not allowed:
            raise OSError(f"{host} resolves only to non-public addresses")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def make_client(config: UpstreamConfig, resolver: AbstractResolver | None = None) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=config.limit,
        limit_per_host=config.limit_per_host,
        ttl_dns_cache=60,
        resolver=resolver or EgressResolver(config.hosts),
    )
    timeout = aiohttp.ClientTimeout(
        total=None, connect=config.connect_timeout, sock_connect=config.connect_timeout,
        sock_read=config.read_timeout,
    )
    kwargs: dict[str, Any] = {}
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        timeout=timeout,
        trust_env=False,
        # Only the headers the policy built may leave: no aiohttp defaults.
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        **kwargs,
    )
