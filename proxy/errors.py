"""The exception tree of the proxy.

    ProxyError                      every error the proxy raises on purpose
    ├── ConfigError                 the configuration is unusable; carries every problem found
    ├── DirectoryUnavailable        a patron source (file, LDAP, ...) is broken or unreachable:
    │                               the patron sees "try again shortly" (503), never "wrong PIN"
    ├── StoreUnavailable            the session store cannot be reached (503)
    ├── BadInput                    a request the proxy refuses to act on (400 page)
    └── UpstreamError               a vendor could not be reached or misbehaved
        ├── VendorUnreachable       connection refused, reset, DNS failure, bad response (502)
        ├── VendorTimeout           the vendor did not answer in time (504)
        └── VendorResponseTooLarge  a body exceeded the proxy's caps (502)

Wrong credentials are *not* an exception: an authenticator returns ``None`` for them, so that
"wrong PIN" and "directory broken" can never be confused.
"""

from __future__ import annotations

from collections.abc import Sequence


class ProxyError(Exception):
    """Base class of every error the proxy raises on purpose."""


class ConfigError(ProxyError):
    """The configuration cannot be used. ``problems`` lists every problem, each with its place."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        super().__init__("\n".join(self.problems))


class DirectoryUnavailable(ProxyError):
    """The patron directory could not answer; it says nothing about the credentials."""


class StoreUnavailable(ProxyError):
    """The session store could not be reached."""


class BadInput(ProxyError):
    """A request the proxy refuses. ``message`` is safe to show to the patron."""

    def __init__(self, message: str, status: int = 400) -> None:
        self.message = message
        self.status = status
        super().__init__(message)


class UpstreamError(ProxyError):
    """A vendor could not be reached or answered in a way the proxy will not pass on."""

    status = 502


class VendorUnreachable(UpstreamError):
    status = 502


class VendorTimeout(UpstreamError):
    status = 504


class VendorResponseTooLarge(UpstreamError):
    status = 502
