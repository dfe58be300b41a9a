"""The configuration file's reader: typed access to TOML tables and one list of problems.

A leaf: it imports nothing of the proxy, so every part (vendors, records, patron sources,
sessions) can parse its own table with it and ``config.py`` can import those parsers without
any of them importing ``config.py`` back. Each getter records a problem with its place
(``[sessions] idle: ...``) and returns a usable default, so checking goes on and an
administrator sees every problem of a file at once.

Secrets never sit in the file itself: a value ``"env:NAME"`` reads an environment variable,
``"file:/path"`` reads a file (relative paths are relative to the configuration file).
"""

from __future__ import annotations

import builtins
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def shown(value: Any) -> str:
    """A value as it is written in the TOML file (``"text"``, ``true``, ``5``), for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(shown(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "a table"
    return str(value)


def plural(n: int, word: str, words: str | None = None) -> str:
    """"1 vendor", "2 vendors"."""
    return f"{n} {word if n == 1 else (words or word + 's')}"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+)\s*(b|kb|kib|mb|mib|gb|gib)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    None: 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2,
    "gb": 1000**3, "gib": 1024**3,
}


class Problems:
    """Collects configuration problems; ``config.load`` turns them into one ``ConfigError``."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.items.append(f"{where}: {message}" if where else message)

    def __bool__(self) -> bool:
        return bool(self.items)


class Reader:
    """Typed access to one TOML table, recording problems instead of raising.

    Each getter returns a usable default after recording a problem, so checking goes on and
    the next problems are found too.
    """

    def __init__(self, data: Mapping[builtins.str, Any], where: builtins.str, problems: Problems, base: Path) -> None:
        self.data = data
        self.where = where
        self.problems = problems
        self.base = base
        self._seen: set[builtins.str] = set()

    def sub(self, key: builtins.str) -> Reader:
        value = self.raw(key, {})
        if not isinstance(value, Mapping):
            self.bad(key, "must be a table")
            value = {}
        return Reader(value, f"{self.where}.{key}" if self.where else key, self.problems, self.base)

    def place(self, key: builtins.str) -> builtins.str:
        if not self.where:
            return key
        # An entry of an array of tables is named as the file writes it: [[vendor]] "gale".
        return f"{self.where} {key}" if self.where.startswith("[[") else f"[{self.where}] {key}"

    def raw(self, key: builtins.str, default: Any) -> Any:
        self._seen.add(key)
        return self.data.get(key, default)

    def bad(self, key: builtins.str, message: builtins.str) -> None:
        self.problems.add(self.place(key), message)

    def has(self, key: builtins.str) -> builtins.bool:
        return key in self.data

    def _typed(self, key: builtins.str, default: T, kind: type | tuple[type, ...], label: builtins.str) -> T:
        value = self.raw(key, default)
        # bool is an int in Python; a TOML `true` where a number is wanted is a mistake.
        if not isinstance(value, kind) or (isinstance(value, builtins.bool) and kind is not bool):
            self.bad(key, f"must be {label}, not {shown(value)}")
            return default
        return value  # type: ignore[return-value]

    def str(self, key: builtins.str, default: builtins.str = "", *, required: builtins.bool = False) -> builtins.str:
        if required and key not in self.data:
            self.bad(key, "is required")
            self._seen.add(key)
            return default
        return self._typed(key, default, builtins.str, "a string")

    def choice(self, key: builtins.str, default: builtins.str, choices: tuple[builtins.str, ...]) -> builtins.str:
        value = self.str(key, default)
        if value not in choices:
            self.bad(key, f"must be one of {', '.join(choices)}, not {shown(value)}")
            return default
        return value

    def bool(self, key: builtins.str, default: builtins.bool = False) -> builtins.bool:
        return self._typed(key, default, builtins.bool, "true or false")

    def int(
        self, key: builtins.str, default: builtins.int, *,
        minimum: builtins.int | None = None, maximum: builtins.int | None = None,
    ) -> builtins.int:
        value = self._typed(key, default, builtins.int, "a whole number")
        if minimum is not None and value < minimum:
            self.bad(key, f"must be at least {minimum}")
            return default
        if maximum is not None and value > maximum:
            self.bad(key, f"must be at most {maximum}")
            return default
        return value

    def str_list(self, key: builtins.str, default: tuple[builtins.str, ...] = ()) -> tuple[builtins.str, ...]:
        value = self.raw(key, list(default))
        if isinstance(value, builtins.str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, builtins.str) for v in value):
            self.bad(key, "must be a list of strings")
            return default
        return tuple(value)

    def str_map(self, key: builtins.str) -> dict[builtins.str, builtins.str]:
        value = self.raw(key, {})
        if not isinstance(value, Mapping) or not all(isinstance(v, builtins.str) for v in value.values()):
            self.bad(key, "must be a table of strings")
            return {}
        return {str(k): v for k, v in value.items()}

    def duration(self, key: builtins.str, default: builtins.str) -> float:
        """Seconds, from "90s", "5m", "2h", "7d" or a bare number of seconds."""
        raw = self.raw(key, default)
        if isinstance(raw, builtins.int | float) and not isinstance(raw, builtins.bool):
            raw = str(raw)
        match = _DURATION.match(raw) if isinstance(raw, builtins.str) else None
        if match is None:
            self.bad(key, f"must be a duration like \"90s\", \"5m\", \"2h\" or \"7d\", not {shown(raw)}")
            match = _DURATION.match(default)
            assert match is not None
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        if seconds <= 0:
            self.bad(key, "must be longer than zero")
        return seconds

    def size(self, key: builtins.str, default: builtins.str) -> builtins.int:
        """Bytes, from "64KiB", "100MB", "1GiB" or a bare number."""
        raw = self.raw(key, default)
        if isinstance(raw, builtins.int) and not isinstance(raw, builtins.bool):
            raw = str(raw)
        match = _SIZE.match(raw) if isinstance(raw, builtins.str) else None
        if match is None:
            self.bad(key, f"must be a size like \"64KiB\" or \"100MB\", not {shown(raw)}")
            match = _SIZE.match(default)
            assert match is not None
        unit = match.group(2).lower() if match.group(2) else None
        return int(match.group(1)) * _SIZE_UNITS[unit]

    def path(self, key: builtins.str, default: builtins.str = "", *, required: builtins.bool = False) -> Path | None:
        value = self.str(key, default, required=required)
        if not value:
            return None
        path = self._expand(key, value)
        return path if path.is_absolute() else (self.base / path)

    def _expand(self, key: builtins.str, value: builtins.str) -> Path:
        """``~`` and ``~user`` expanded; an unknown user is a problem, not a traceback."""
        try:
            return Path(value).expanduser()
        except RuntimeError:
            self.bad(key, f"{shown(value)} names a home folder of a user this machine does not have")
            return Path(value)

    def secret(self, key: builtins.str, *, required: builtins.bool = False) -> builtins.str | None:
        """A secret given as "env:NAME" or "file:PATH"; plain values are refused."""
        raw = self.raw(key, "")
        if not isinstance(raw, builtins.str):
            # SECURITY: never echo a secret mistyped as a number or a table into a message.
            self.bad(key, f"must be a string \"env:VARIABLE\" or \"file:PATH\", not {type(raw).__name__}")
            return None
        value = self.str(key, "", required=required)
        if not value:
            return None
        kind, _, ref = value.partition(":")
        if kind == "env" and ref:
            found = os.environ.get(ref)
            if not found:
                self.bad(key, f"environment variable {ref} is not set or empty")
            return found or None
        if kind == "file" and ref:
            path = self._expand(key, ref)
            path = path if path.is_absolute() else self.base / path
            try:
                return path.read_text(encoding="utf-8").strip() or None
            except OSError as exc:
                self.bad(key, f"cannot read secret file {path}: {exc.strerror}")
                return None
            except UnicodeDecodeError:
                self.bad(key, f"the secret file {path} is not UTF-8 text")
                return None
        self.bad(key, 'must be "env:VARIABLE" or "file:PATH" (secrets are never written in the file)')
        return None

    def unknown_keys(self, known_tables: tuple[builtins.str, ...] = ()) -> None:
        """Report keys nobody asked for: a typo must not be silently ignored."""
        for key in self.data:
            if key not in self._seen and key not in known_tables:
                self.bad(key, "is not a known option (a typo?)")
