"""Patron sources behind one interface (see ``base.py``), chosen by ``[patrons] source``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from proxy.patrons.base import Authenticator, CardRefused, acceptable_credentials

if TYPE_CHECKING:
    from proxy.config import Config
    from proxy.settings import Reader

__all__ = ["Authenticator", "CardRefused", "acceptable_credentials", "make_authenticator", "option_parsers"]


def _no_options(reader: Reader) -> Any:
    return None


def _ldap_options(reader: Reader) -> Any:
    from proxy.patrons import ldap

    return ldap.parse_options(reader)


def _sip2_options(reader: Reader) -> Any:
    from proxy.patrons import sip2

    return sip2.parse_options(reader)


def _remoteauth_options(reader: Reader) -> Any:
    from proxy.patrons import remoteauth

    return remoteauth.parse_options(reader)


def option_parsers() -> dict[str, Any]:
    """Each source's parser of its own options in the [patrons] table."""
    return {"local": _no_options, "ldap": _ldap_options, "sip2": _sip2_options, "remoteauth": _remoteauth_options}


def make_authenticator(config: Config, secret: bytes) -> Authenticator:
    """The one factory: the configured source, ready to ``start()``.

    ``secret`` keys the pseudonymous patron key every source derives from its stable identifier.
    """
    source = config.patrons.source
    if source == "local":
        from proxy.patrons.local import LocalFileAuthenticator

        assert config.patrons.file is not None
        return LocalFileAuthenticator(config.patrons.file, secret, config.library.id)
    if source == "ldap":
        from proxy.patrons.ldap import LdapAuthenticator

        return LdapAuthenticator(config.patrons.options, secret)
    if source == "sip2":
        from proxy.patrons.sip2 import Sip2Authenticator

        return Sip2Authenticator(config.patrons.options, secret)
    if source == "remoteauth":
        from proxy.patrons.remoteauth import RemoteAuthAuthenticator

        return RemoteAuthAuthenticator(config.patrons.options, secret)
    raise ValueError(f"unknown patron source {source!r}")
