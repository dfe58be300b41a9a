"""Staff console test support: staff accounts on disk and a signed-in staff client.

The client is a real aiohttp session against the real staff listener on loopback, keeping the
console's cookies (an IP-address host, so the jar must accept "unsafe" hosts) and reading each
page's CSRF token from its forms, as a browser's form submission would send it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp

from proxy.patrons.hashing import hash_pin
from proxy.staff.accounts import add_account

IT_NAME, IT_PASSWORD = "ines", "it-password-1234"
DIRECTOR_NAME, DIRECTOR_PASSWORD = "dora", "director-password-1234"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def write_staff(state_dir: Path) -> Path:
    """The two test accounts in ``<state_dir>/staff-accounts.toml`` (cheap hashes: tests only)."""
    path = state_dir / "staff-accounts.toml"
    add_account(path, IT_NAME, "it", hash_pin(IT_PASSWORD, n_log2=10))
    add_account(path, DIRECTOR_NAME, "director", hash_pin(DIRECTOR_PASSWORD, n_log2=10))
    return path


def csrf_of(text: str) -> str:
    match = _CSRF.search(text)
    assert match is not None, "no CSRF token on the page"
    return match.group(1)


class StaffClient:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                          timeout=aiohttp.ClientTimeout(total=60))
        self.csrf = ""
        self.pages: list[str] = []  # every page body seen, for privacy searches

    async def close(self) -> None:
        await self.http.close()

    async def sign_in(self, name: str, password: str) -> tuple[int, str]:
        status, text = await self.get("/login")
        assert status == 200
        return await self.post("/login", {"name": name, "password": password, "csrf": csrf_of(text)}, token=False)

    async def get(self, path: str, **kw: Any) -> tuple[int, str]:
        async with self.http.get(self.base + path, **kw) as reply:
            text = await reply.text()
        self.pages.append(text)
        if 'name="csrf"' in text:
            self.csrf = csrf_of(text)
        return reply.status, text

    async def post(self, path: str, data: dict[str, str], *, token: bool = True, **kw: Any) -> tuple[int, str]:
        form = {"csrf": self.csrf, **data} if token else data
        async with self.http.post(self.base + path, data=form, **kw) as reply:
            text = await reply.text()
        self.pages.append(text)
        if 'name="csrf"' in text:
            self.csrf = csrf_of(text)
        return reply.status, text
