"""The exception tree of the proxy.

    ProxyError                      every error the proxy raises on purpose
    ├── ConfigError                 the configuration is unusable; carries every problem found
    ├── DirectoryUnavailable        a patron source (file, LDAP, ...) is broken or unreachable:
    │                               the patron sees "try again shortly" (503), never "wrong PIN"
    ├── CardRefused                 right card and PIN, but the card may not be used now
    │                               (expired, blocked): said in general words, only to its holder
    ├── StoreUnavailable            the session store cannot be reached (503)
    ├── BadInput                    a request the proxy refuses to act on (a 4xx page)
    │   ├── UploadTooLarge          a request body over the proxy's cap (413)
    │   └── BodyTooSlow             a request body that did not arrive in time (408)
    └── UpstreamError               a vendor could not be reached or misbehaved
        ├── VendorUnreachable       connection refused, reset, DNS failure, bad response (502)
        ├── VendorTimeout           the vendor did not answer in time (504)
        └── VendorResponseTooLarge  a body exceeded the proxy's caps (502)

Wrong credentials are *not* an exception: an authenticator returns ``None`` for them, so that
"wrong PIN" and "directory broken" can never be confused.

Exceptions carry short reason codes, never patron-facing words: the words live in
``proxy/web/texts.py``, in one place, so they can be translated.
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


class CardRefused(ProxyError):
    """Right credentials, but the card may not be used now. ``reason`` is "expired" or "blocked"."""

    REASONS = ("expired", "blocked")

    def __init__(self, reason: str) -> None:
        self.reason = reason if reason in self.REASONS else "blocked"
        super().__init__(self.reason)


class StoreUnavailable(ProxyError):
    """The session store could not be reached."""


class BadInput(ProxyError):
    """A request the proxy refuses. ``reason`` names the page shown (see ``web/texts.py``)."""

    def __init__(self, reason: str, status: int = 400) -> None:
        self.reason = reason
        self.status = status
        super().__init__(reason)


class UploadTooLarge(BadInput):
    """A request body larger than the proxy accepts."""

    def __init__(self) -> None:
        super().__init__("upload-too-large", 413)


class BodyTooSlow(BadInput):
    """A request body trickled in too slowly (a slow-POST attack holds connections open)."""

    def __init__(self) -> None:
        super().__init__("slow-body", 408)


class UpstreamError(ProxyError):
    """A vendor could not be reached or answered in a way the proxy will not pass on."""

    status = 502


class VendorUnreachable(UpstreamError):
    status = 502


class VendorTimeout(UpstreamError):
    status = 504


class VendorResponseTooLarge(UpstreamError):
    status = 502
