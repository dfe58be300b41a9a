"""The embedded patron source: a TOML file of cards with scrypt-hashed PINs.

    [[patron]]
    card = "29000000000001"
    pin = "scrypt$15$8$1$...$..."      # written by `libproxy patrons add`, never by hand
    groups = ["wolcott", "bibliomation"]
    home = "wolcott"
    status = "active"                  # or "expired", "blocked"

The file is re-read when it changes, so adding a patron needs no restart. Reading and hashing
run in a worker thread: a slow KDF on the event loop would stall every patron.
"""

from __future__ import annotations

import asyncio
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy.errors import ConfigError, DirectoryUnavailable
from proxy.files import write_private
from proxy.membership import Membership
from proxy.patrons.base import CardRefused, acceptable_credentials
from proxy.patrons.hashing import dummy_hash, pseudonym, verify_pin

STATUSES = ("active", "expired", "blocked")


@dataclass(frozen=True, slots=True)
class PatronEntry:
    pin_hash: str
    groups: frozenset[str]
    home: str | None
    status: str


def parse_patrons(text: str, where: str) -> dict[str, PatronEntry]:
    """Parse a patrons file; raise ConfigError naming every bad entry."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{where}: not valid TOML: {exc}"]) from None
    problems: list[str] = []
    entries: dict[str, PatronEntry] = {}
    raw = data.get("patron", [])
    if not isinstance(raw, list):
        raise ConfigError([f"{where}: [[patron]] must be an array of tables"])
    for index, item in enumerate(raw, start=1):
        place = f"{where}: patron #{index}"
        if not isinstance(item, dict):
            problems.append(f"{place}: must be a table")
            continue
        card, pin, groups = item.get("card"), item.get("pin"), item.get("groups", [])
        home, status = item.get("home"), item.get("status", "active")
        if not isinstance(card, str) or not card:
            problems.append(f"{place}: card must be a non-empty string")
            continue
        if not isinstance(pin, str) or not pin.startswith("scrypt$"):
            problems.append(f"{place}: pin must be a scrypt hash written by `patrons add`")
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            problems.append(f"{place}: groups must be a list of strings")
            groups = []
        if home is not None and not isinstance(home, str):
            problems.append(f"{place}: home must be a string")
            home = None
        if status not in STATUSES:
            problems.append(f"{place}: status must be one of {', '.join(STATUSES)}")
        unknown = set(item) - {"card", "pin", "groups", "home", "status"}
        if unknown:
            problems.append(
                f"{place}: unknown keys {', '.join(sorted(unknown))} (names and e-mails do not belong here)"
            )
        if card in entries:
            problems.append(f"{place}: the same card appears twice")
        entries[card] = PatronEntry(str(pin), frozenset(groups), home, str(status))
    if problems:
        raise ConfigError(problems)
    return entries


class LocalFileAuthenticator:
    name = "local"

    def __init__(self, path: Path, secret: bytes, library_id: str) -> None:
        self._path = path
        self._secret = secret
        self._library_id = library_id
        self._entries: dict[str, PatronEntry] = {}
        self._stamp: tuple[int, int] | None = None

    async def start(self) -> None:
        await asyncio.to_thread(self._reload_if_changed)

    async def close(self) -> None:
        return None

    def _reload_if_changed(self) -> None:
        try:
            st = os.stat(self._path)
        except OSError as exc:
            raise DirectoryUnavailable(f"patrons file {self._path}: {exc.strerror}") from None
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            text = self._path.read_text(encoding="utf-8")
            self._entries = parse_patrons(text, str(self._path))
        except (OSError, UnicodeDecodeError) as exc:
            raise DirectoryUnavailable(f"patrons file {self._path}: cannot read ({exc})") from None
        except ConfigError as exc:
            # A broken edit must not lock everyone out silently: keep the last good table if we
            # have one, otherwise the source is unusable.
            if self._stamp is None:
                raise DirectoryUnavailable(f"patrons file is invalid: {exc.problems[0]}") from None
            return
        self._stamp = stamp

    def _check(self, card: str, pin: str) -> Membership | None:
        self._reload_if_changed()
        entry = self._entries.get(card)
        # SECURITY: an unknown card is checked against a dummy hash so that it takes as long
        # as a wrong PIN and the two cannot be told apart by timing.
        ok = verify_pin(pin, entry.pin_hash if entry else dummy_hash())
        if entry is None or not ok:
            return None
        if entry.status != "active":
            raise CardRefused(entry.status)
        return Membership(
            groups=entry.groups,
            home_library=entry.home,
            key=pseudonym(self._secret, "patron", self._library_id, card),
            source=self.name,
        )

    async def authenticate(self, card: str, pin: str) -> Membership | None:
        if not acceptable_credentials(card, pin):
            return None
        return await asyncio.to_thread(self._check, card, pin)


def add_patron(path: Path, card: str, pin_hash: str, groups: list[str], home: str | None,
               status: str = "active") -> bool:
    """Add or replace one patron in a patrons file, atomically. Returns True if replaced."""
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    entries: list[dict[str, Any]] = []
    if existing.strip():
        data = tomllib.loads(existing)
        entries = [dict(e) for e in data.get("patron", [])]
    replaced = any(e.get("card") == card for e in entries)
    entries = [e for e in entries if e.get("card") != card]
    entry: dict[str, Any] = {"card": card, "pin": pin_hash, "groups": groups, "status": status}
    if home:
        entry["home"] = home
    entries.append(entry)
    lines = [
        "# Patrons of the local source: card numbers, scrypt PIN hashes and groups.",
        "# Written by `libproxy patrons add`; keep this file readable by the proxy only.",
        "",
    ]
    for e in entries:
        lines.append("[[patron]]")
        for key in ("card", "pin", "groups", "home", "status"):
            if key in e:
                lines.append(f"{key} = {_toml_value(e[key])}")
        lines.append("")
    write_private(path, "\n".join(lines))
    return replaced


def _toml_value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
