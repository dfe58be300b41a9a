"""Staff accounts: a local TOML file of staff names, roles and scrypt-hashed passwords.

::

    [[staff]]
    name = "maria"
    role = "it"                          # "it" or "director"
    password = "scrypt$15$8$1$...$..."   # written by `libproxy staff add`, never by hand

Staff accounts are not patron cards: a staff member signs in to the console with a name of their
own, and nothing here is shared with the patron directory. The file is re-read when it changes
(adding or removing a person needs no restart). Hashing runs in a worker thread, never on the
event loop. Signing in with an LDAP group is not built yet (see docs/staff-console.md).
"""

from __future__ import annotations

import asyncio
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from proxy.files import write_private
from proxy.patrons.hashing import dummy_hash, hash_pin, verify_pin
from proxy.staff.options import ROLE_NAMES

ROLES = ROLE_NAMES
ROLE_TITLES = {"it": "IT staff", "director": "Director"}
MIN_PASSWORD = 10
# Names are shown on pages and written to the audit trail: plain, short, no markup or spaces.
_NAME = re.compile(r"^[a-z][a-z0-9._-]{1,31}\Z")


class AccountsError(ValueError):
    """The accounts file cannot be used; the message names the file and the entry."""


@dataclass(frozen=True, slots=True)
class StaffAccount:
    name: str
    role: str
    password_hash: str


def valid_name(name: str) -> bool:
    return bool(_NAME.match(name))


def parse_accounts(text: str, where: str) -> dict[str, StaffAccount]:
    """Parse an accounts file; raise AccountsError naming the first bad entry."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise AccountsError(f"{where}: not valid TOML: {exc}") from None
    raw = data.get("staff", [])
    if not isinstance(raw, list):
        raise AccountsError(f"{where}: [[staff]] must be an array of tables")
    accounts: dict[str, StaffAccount] = {}
    for index, item in enumerate(raw, start=1):
        if not isinstance(item, dict):
            raise AccountsError(f"{where}: staff #{index} must be a table")
        name, role, password = item.get("name"), item.get("role"), item.get("password")
        if not isinstance(name, str) or not valid_name(name):
            raise AccountsError(f"{where}: staff #{index}: name must be 2-32 lower-case letters, digits, . _ -")
        if role not in ROLES:
            raise AccountsError(f"{where}: staff {name!r}: role must be one of {', '.join(ROLES)}")
        if not isinstance(password, str) or not password.startswith("scrypt$"):
            raise AccountsError(f"{where}: staff {name!r}: password must be a hash written by `libproxy staff add`")
        accounts[name] = StaffAccount(name, str(role), password)
    return accounts


def add_account(path: Path, name: str, role: str, password_hash: str) -> bool:
    """Add or replace one staff account, atomically, mode 0600. Returns True if replaced."""
    if not valid_name(name):
        raise AccountsError("a staff name is 2-32 lower-case letters, digits, '.', '_' or '-', starting with a letter")
    if role not in ROLES:
        raise AccountsError(f"role must be one of {', '.join(ROLES)}")
    existing = parse_accounts(path.read_text(encoding="utf-8"), str(path)) if path.exists() else {}
    replaced = name in existing
    existing[name] = StaffAccount(name, role, password_hash)
    lines = [
        "# Staff accounts of the libproxy staff console: names, roles and scrypt password hashes.",
        "# Written by `libproxy staff add`; keep this file readable by the proxy only.",
        "",
    ]
    for account in existing.values():
        # Names and roles are checked above and hashes are base64 and "$": no quoting needed.
        lines += ["[[staff]]", f'name = "{account.name}"', f'role = "{account.role}"',
                  f'password = "{account.password_hash}"', ""]
    # SECURITY: 0600 from the first byte: the hashes are worth guessing offline.
    write_private(path, "\n".join(lines))
    return replaced


class StaffAccounts:
    """The accounts file, re-read when it changes; ``authenticate`` hashes in a worker thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._accounts: dict[str, StaffAccount] = {}
        self._stamp: tuple[int, int] | None = None
        self.problem: str | None = None  # why the file cannot be used, for the sign-in page

    def _reload_if_changed(self) -> None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._accounts, self._stamp = {}, None
            self.problem = f"no staff accounts yet: add one with `libproxy staff add --file {self.path}`"
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            self._accounts = parse_accounts(self.path.read_text(encoding="utf-8"), str(self.path))
            self.problem = None
        except (AccountsError, OSError, UnicodeDecodeError) as exc:
            # SECURITY: a broken file signs nobody in (fails closed) rather than keeping stale entries.
            self._accounts = {}
            self.problem = str(exc)
        self._stamp = stamp

    def _check(self, name: str, password: str) -> StaffAccount | None:
        self._reload_if_changed()
        account = self._accounts.get(name)
        # SECURITY: an unknown name costs one hash too, so timing does not tell names apart.
        ok = verify_pin(password, account.password_hash if account else dummy_hash())
        return account if ok and account is not None else None

    async def authenticate(self, name: str, password: str) -> StaffAccount | None:
        """The account when the name and password are right, else None. Never blocks the loop."""
        if not valid_name(name) or not password or len(password) > 1024 or not password.isprintable():
            return None
        return await asyncio.to_thread(self._check, name, password)

    async def exists(self, name: str) -> bool:
        """Whether ``name`` is a staff account (for the audit trail of refused sign-ins)."""
        await asyncio.to_thread(self._reload_if_changed)
        return name in self._accounts

    async def status(self) -> str | None:
        """Why nobody can sign in (no file, a broken file), or None when the file is usable."""
        await asyncio.to_thread(self._reload_if_changed)
        return self.problem


def make_hash(password: str) -> str:
    """The stored form of a staff password (the patron PINs' scrypt, same cost)."""
    return hash_pin(password)
