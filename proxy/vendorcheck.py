"""What a vendor needs: fetch its start page the way the proxy would, and say what breaks.

``libproxy check-vendor ID`` (and the staff console's "test" button) uses the proxy's own
upstream client (the same egress rules, timeouts and no automatic redirects) to fetch the
vendor's ``start`` URL, then follows redirects itself and reports, in plain words:

* whether the vendor answered at all, and TLS problems (an expired or wrong certificate);
* redirects to hosts the vendor's entry does not name: the usual reason a site breaks through
  a proxy (the patron gets "this link leaves the library's databases");
* mixed http/https between the entry and where the vendor sends browsers;
* the hosts the start page loads from (scripts, styles, images, frames, links), split into
  those the entry covers and those it does not.

No patron data is involved: the request carries no cookie, no assertion and no browser headers.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import aiohttp
from yarl import URL

from proxy.config import Config
from proxy.forward.client import make_client
from proxy.vendors import Origin, Vendor, VendorMap, parse_absolute_url

MAX_REDIRECTS = 8
MAX_PAGE = 4 * 1024 * 1024
# Where pages name the things they load: src/href/action attributes, CSS url(), srcset.
_REFERENCE = re.compile(rb"""(?:src|href|action|data-src|poster)\s*=\s*["']?([^"'\s>]+)|url\(\s*["']?([^"')\s]+)""",
                        re.IGNORECASE)
_SRCSET = re.compile(rb"""srcset\s*=\s*["']([^"']+)["']""", re.IGNORECASE)


@dataclass
class VendorCheck:
    vendor_id: str
    ok: bool = True
    lines: list[str] = field(default_factory=list)
    covered_hosts: list[str] = field(default_factory=list)
    missing_hosts: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        self.ok = False
        self.lines.append("PROBLEM: " + text)

    def note(self, text: str) -> None:
        self.lines.append(text)


def referenced_hosts(page: bytes, base: str) -> list[tuple[str, str]]:
    """(scheme, host[:port]) of every absolute http(s) reference in ``page``, resolved against
    ``base``; sorted, without duplicates. Pure."""
    found: set[tuple[str, str]] = set()
    candidates: list[bytes] = []
    for match in _REFERENCE.finditer(page):
        candidates.append(match.group(1) or match.group(2) or b"")
    for match in _SRCSET.finditer(page):
        candidates.extend(part.strip().split(b" ")[0] for part in match.group(1).split(b","))
    for raw in candidates:
        text = raw.decode("latin-1").strip()
        if not text or text.startswith(("#", "data:", "javascript:", "mailto:", "blob:", "about:")):
            continue
        try:
            absolute = urljoin(base, text)
            parts = urlsplit(absolute)
        except ValueError:
            continue
        if parts.scheme in ("http", "https") and parts.hostname:
            found.add((parts.scheme, parts.netloc.rpartition("@")[2].lower()))
    return sorted(found)


def _covered(vendors: VendorMap, vendor: Vendor, url: str) -> bool:
    parsed = parse_absolute_url(url)
    return parsed is not None and vendors.match(parsed.origin) is vendor


async def check_vendor(config: Config, vendor_id: str, client: aiohttp.ClientSession | None = None) -> VendorCheck:
    """Fetch ``vendor_id``'s start page through the proxy's upstream client and report."""
    vendors = VendorMap(config.vendors, config.proxy.host, config.proxy.scheme)
    vendor = vendors.by_id(vendor_id)
    result = VendorCheck(vendor_id)
    if vendor is None:
        known = ", ".join(v.id for v in vendors.vendors) or "none"
        result.problem(f"there is no vendor {vendor_id!r} in the configuration (vendors: {known})")
        return result
    own = client is None
    session = client if client is not None else make_client(config.upstream)
    try:
        await _check(session, vendors, vendor, result)
    finally:
        if own:
            await session.close()
    return result


async def _check(client: aiohttp.ClientSession, vendors: VendorMap, vendor: Vendor, result: VendorCheck) -> None:
    url = vendor.start
    start = parse_absolute_url(url)
    result.note(f"{vendor.title} ({vendor.id}): start page {url}")
    schemes = {o.scheme for o in vendor.origins}
    for hop in range(MAX_REDIRECTS + 1):
        try:
            async with client.get(URL(url, encoded=True), allow_redirects=False,
                                  headers={"Accept": "text/html,*/*;q=0.8"}) as response:
                status = response.status
                location = response.headers.get("Location")
                content_type = response.headers.get("Content-Type", "")
                body = await response.content.read(MAX_PAGE) if status < 300 else b""
        except aiohttp.ClientConnectorCertificateError as exc:
            result.problem(f"the TLS certificate of {urlsplit(url).netloc} is not valid: {exc.certificate_error}")
            return
        except (aiohttp.ClientSSLError, ssl.SSLError) as exc:
            result.problem(f"TLS with {urlsplit(url).netloc} failed: {type(exc).__name__}")
            return
        except (TimeoutError, aiohttp.ServerTimeoutError):
            result.problem(f"{urlsplit(url).netloc} did not answer in time")
            return
        except (aiohttp.ClientError, OSError) as exc:
            result.problem(f"{urlsplit(url).netloc} could not be reached ({type(exc).__name__}: {exc})")
            return
        if 300 <= status < 400 and location:
            target = urljoin(url, location)
            covered = _covered(vendors, vendor, target)
            where = urlsplit(target)
            if covered:
                result.note(f"redirect {hop + 1} ({status}) to {where.scheme}://{where.netloc}: covered by the entry")
            else:
                result.problem(f"redirect {hop + 1} ({status}) to {where.scheme}://{where.netloc}, which this "
                               "vendor's entry does not list: add it to hosts (or its domain to domains), or "
                               "patrons will be sent out of the proxy")
            if where.scheme not in schemes and where.scheme in ("http", "https"):
                result.note(f"the vendor switches to {where.scheme}, which its entry does not use for any host")
            if not covered:
                return
            url = target
            continue
        if status >= 400:
            result.problem(f"the start page answered {status}")
            return
        result.note(f"the start page answered {status} ({content_type.split(';')[0] or 'no type'})")
        _report_hosts(vendors, vendor, url, body, result, start.origin if start else None)
        return
    result.problem(f"more than {MAX_REDIRECTS} redirects")


def _report_hosts(vendors: VendorMap, vendor: Vendor, url: str, body: bytes, result: VendorCheck,
                  start: Origin | None) -> None:
    page_scheme = urlsplit(url).scheme
    covered, missing, mixed = [], [], []
    for scheme, netloc in referenced_hosts(body, url):
        ref = f"{scheme}://{netloc}/"
        if _covered(vendors, vendor, ref):
            covered.append(f"{scheme}://{netloc}")
        else:
            missing.append(f"{scheme}://{netloc}")
        if page_scheme == "https" and scheme == "http":
            mixed.append(netloc)
    result.covered_hosts = _unique(covered)
    result.missing_hosts = _unique(missing)
    if result.covered_hosts:
        result.note("loads from hosts the entry covers: " + ", ".join(result.covered_hosts))
    if result.missing_hosts:
        result.note("loads from hosts the entry does not cover (add the vendor's own; the others are "
                    "third parties the proxy keeps away from patrons): " + ", ".join(result.missing_hosts))
    if mixed:
        result.note("the https page loads http content from: " + ", ".join(_unique(mixed)))


def _unique(items: Iterable[str]) -> list[str]:
    return sorted(set(items))
