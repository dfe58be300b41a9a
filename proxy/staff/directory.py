"""Staff who sign in with the library's directory: LDAP, through the patron source's own code.

``[staff.ldap]`` takes the same table as ``[patrons.ldap]`` (servers, TLS, search or direct
binds, group rules), and ``[staff] ldap_roles`` names the group that gives each role. The
sign-in runs in the LDAP source's own thread pool, under its timeouts: the event loop never
waits on the directory. An entry in no role's group, or in both, does not sign in.

The membership the LDAP source builds is used for its groups only and then dropped: staff
sessions hold a name and a role, nothing from the directory entry.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from proxy.patrons.base import CardRefused
from proxy.patrons.ldap import LdapAuthenticator
from proxy.staff.accounts import StaffAccount, valid_name


class StaffDirectory:
    def __init__(self, options: Any, roles: Mapping[str, str]) -> None:
        # A throw-away key: the pseudonymous key the LDAP source makes is never used here.
        self._ldap = LdapAuthenticator(options, secrets.token_bytes(32))
        self._roles = dict(roles)

    async def authenticate(self, name: str, password: str) -> StaffAccount | None:
        """The account (role from the directory's groups) or None. Raises DirectoryUnavailable
        when the directory cannot answer (which must never look like a wrong password)."""
        if not valid_name(name) or not password:
            return None
        try:
            membership = await self._ldap.authenticate(name, password)
        except CardRefused:
            return None  # an expired or blocked entry
        if membership is None:
            return None
        roles = [role for role, group in self._roles.items() if group in membership.groups]
        # SECURITY: one role per person; an entry in both groups is a directory mistake to fix,
        # not a reason to grant the wider of the two.
        if len(roles) != 1:
            return None
        return StaffAccount(name, roles[0], "")

    async def close(self) -> None:
        await self._ldap.close()
