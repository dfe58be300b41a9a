"""A RemoteAuth service for tests and benchmarks: Evergreen's documented answers, on 127.0.0.1.

It follows Evergreen's RemoteAuth handlers (OpenILS::WWW::RemoteAuth, ::Basic, ::PatronAPI and
the patronapi templates) as the Evergreen documentation and source describe them:

* the client check first: when the service cannot log in its own staff account (``client_ok``
  false), Basic answers ``401`` and PatronAPI the generic ``ERRNUM=1`` page;
* patron check: an unknown card or a wrong PIN fails the login (Basic ``403``; pintest
  ``RETCOD=1 ERRNUM=4``); then deleted, barred, and the profile's permit test (not this
  organisation, expired unless allowed, inactive unless allowed, a blocking penalty) each give
  Basic ``403`` and pintest ``ERRNUM=1``; success is Basic ``200 {"id": <card>}`` and pintest
  ``RETCOD=0``;
* ``/dump`` only when allowed, and only for a patron the profile permits; the record here is a
  full one (name, address, phone, e-mail, birth date, barcode, fines, home library, expiry),
  as a site's dump template or Sierra prints it;
* ``flavour="sierra"``: Sierra's PatronAPI, where pintest checks only the PIN and an unknown
  card is ``ERRNUM=1``.

Extra routes for failure tests: ``/redirect`` (302 elsewhere), ``/huge`` (1 MiB), ``/error``
(500) and ``/hang`` (answers when ``release()`` is called).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import ssl
from dataclasses import dataclass, field
from datetime import date
from urllib.parse import unquote

from aiohttp import web

CLIENT_USER, CLIENT_PASSWORD = "libproxy", "remoteauth-client-pw"


@dataclass(frozen=True)
class EgPatron:
    """An Evergreen patron (actor.usr), personal data included."""

    pin: str
    home: str = "WOLCOTT"  # home_ou shortname
    expires: date = date(2099, 12, 31)
    barred: bool = False
    active: bool = True
    deleted: bool = False
    penalties: tuple[str, ...] = ()
    name: str = "Reader, Sample"
    address: str = "1 Sample Street, Wolcott CT 06716"
    phone: str = "203-555-0100"
    email: str = "reader@patrons.example"
    birth_date: str = "01-01-80"


LIBRARY_NAMES = {"WOLCOTT": "Wolcott Public Library", "DERBY": "Derby Public Library",
                 "SEYMOUR": "Seymour Public Library"}

PATRONS: dict[str, EgPatron] = {
    "29000100000011": EgPatron("1111"),
    "29000200000010": EgPatron("3333", home="DERBY"),
    "29000300000019": EgPatron("4444", home="SEYMOUR"),
    "29000100000037": EgPatron("Läsa 2024!/.."),
    "expired1": EgPatron("6666", expires=date(2020, 1, 31)),
    "barred1": EgPatron("7777", barred=True),
    "inactive1": EgPatron("8888", active=False),
    "fines1": EgPatron("9999", penalties=("PATRON_EXCEEDS_FINES",)),
    "deleted1": EgPatron("1234", deleted=True),
}


@dataclass(frozen=True)
class Profile:
    """A config.remoteauth_profile row."""

    context_org: str | None = None  # restrict_to_org: only this library's patrons (None: all)
    allow_expired: bool = False
    allow_inactive: bool = False
    block_list: tuple[str, ...] = ("PATRON_EXCEEDS_FINES",)


DEFAULT_PROFILES = {
    "/api/basicauth": Profile(),
    "/api/basicauth-wolcott": Profile("WOLCOTT"),
    "/api/basicauth-derby": Profile("DERBY"),
    "/api/basicauth-seymour": Profile("SEYMOUR"),
}


@dataclass
class RemoteAuthService:
    patrons: dict[str, EgPatron] = field(default_factory=lambda: dict(PATRONS))
    profiles: dict[str, Profile] = field(default_factory=lambda: dict(DEFAULT_PROFILES))
    patronapi_profile: Profile = field(default_factory=Profile)
    flavour: str = "evergreen"
    client_ok: bool = True
    hang_everything: bool = False  # every request waits for release()
    allow_dump: bool = True
    client_credentials: tuple[str, str] | None = None  # an HTTP Basic gate in front of the PatronAPI
    ssl_context: ssl.SSLContext | None = None
    port: int = 0
    requests: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)  # (kind, decoded segments)
    _runner: web.AppRunner | None = None
    _released: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def origin(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}"

    # -- Evergreen's checks ---------------------------------------------------------------------

    def _login(self, card: str, pin: str) -> EgPatron | None:
        patron = self.patrons.get(card)
        return patron if patron is not None and patron.pin == pin else None

    def _permit(self, patron: EgPatron, profile: Profile) -> str:
        """actor.permit_remoteauth: success, not_found, expired or blocked."""
        if patron.deleted or (profile.context_org and patron.home != profile.context_org):
            return "not_found"
        if patron.expires < date.today() and not profile.allow_expired:
            return "expired"
        if (not patron.active and not profile.allow_inactive) or patron.barred:
            return "blocked"
        if set(patron.penalties) & set(profile.block_list):
            return "blocked"
        return "success"

    # -- Basic -------------------------------------------------------------------------------------

    async def basic(self, request: web.Request) -> web.Response:
        if self.hang_everything:
            return await self.hang(request)
        profile = self.profiles[request.path]
        if not self.client_ok:
            return web.Response(status=401)
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="Basic"'})
        try:
            card, _, pin = base64.b64decode(header[6:]).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return web.Response(status=400)
        self.requests.append(("basic", (card,)))
        patron = self._login(card, pin)
        if patron is None or self._permit(patron, profile) != "success":
            return web.Response(status=403)
        return web.json_response({"id": card})

    # -- PatronAPI ---------------------------------------------------------------------------------

    async def patronapi(self, request: web.Request) -> web.Response:
        if self.client_credentials is not None:
            expected = base64.b64encode(":".join(self.client_credentials).encode()).decode()
            if request.headers.get("Authorization") != f"Basic {expected}":
                return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="PatronAPI"'})
        raw = request.raw_path.split("?", 1)[0].rstrip("/")
        segments = [unquote(part) for part in raw.split("/")]
        kind = segments[-1]
        self.requests.append((kind, tuple(segments[-3:-1] if kind == "pintest" else segments[-2:-1])))
        if kind == "pintest":
            return self._page(self._pintest(segments[-3], segments[-2]))
        if kind == "dump":
            return self._page(self._dump(segments[-2]))
        return self._page(_NOT_FOUND)

    def _pintest(self, card: str, pin: str) -> list[str]:
        if self.flavour == "sierra":
            patron = self.patrons.get(card)
            if patron is None:
                return _NOT_FOUND
            return ["RETCOD=0"] if patron.pin == pin else _WRONG_PIN
        if not self.client_ok:
            return _NOT_FOUND
        patron = self._login(card, pin)
        if patron is None:
            return _WRONG_PIN
        return ["RETCOD=0"] if self._permit(patron, self.patronapi_profile) == "success" else _NOT_FOUND

    def _dump(self, card: str) -> list[str]:
        if not self.client_ok or not self.allow_dump:
            return _NOT_FOUND
        patron = self.patrons.get(card)
        if patron is None:
            return _NOT_FOUND
        if self.flavour == "evergreen" and self._permit(patron, self.patronapi_profile) != "success":
            return _NOT_FOUND
        return [
            "REC INFO[p!]=p",
            f"EXP DATE[p43]={patron.expires:%m-%d-%y}",
            "PCODE1[p44]=-",
            "P TYPE[p47]=Patrons",
            "TOT CHKOUT[p48]=52",
            f"HOME LIBR[p53]={LIBRARY_NAMES.get(patron.home, patron.home)}",
            "MBLOCK[p56]=-",
            "MONEY OWED[p96]=$12.50",
            f"PATRN NAME[pn]={patron.name}",
            f"ADDRESS[pa]={patron.address}",
            f"TELEPHONE[pt]={patron.phone}",
            f"EMAIL ADDR[pz]={patron.email}",
            f"BIRTH DATE[p51]={patron.birth_date}",
            f"P BARCODE[pb]={card}",
        ]

    @staticmethod
    def _page(lines: list[str]) -> web.Response:
        body = "<HTML>\n<BODY>\n" + "".join(f"{line}<BR>\n" for line in lines) + "</BODY>\n</HTML>\n"
        return web.Response(text=body, content_type="text/html")

    # -- Failures ----------------------------------------------------------------------------------

    async def redirect(self, request: web.Request) -> web.Response:
        self.requests.append(("redirect", ()))
        return web.Response(status=302, headers={"Location": f"{self.origin}/api/basicauth"})

    async def huge(self, request: web.Request) -> web.Response:
        return web.Response(body=json.dumps({"id": "x", "pad": "x" * 1024 * 1024}).encode(),
                            content_type="application/json")

    async def error(self, request: web.Request) -> web.Response:
        return web.Response(status=500)

    async def hang(self, request: web.Request) -> web.Response:
        await self._released.wait()
        return web.Response(status=403)

    def release(self) -> None:
        self._released.set()

    # -- Running -----------------------------------------------------------------------------------

    async def start(self) -> RemoteAuthService:
        app = web.Application()
        for path in self.profiles:
            app.router.add_get(path, self.basic)
        app.router.add_get("/api/patronapi/{tail:.*}", self.patronapi)
        app.router.add_get("/PATRONAPI/{tail:.*}", self.patronapi)
        app.router.add_get("/redirect", self.redirect)
        app.router.add_get("/huge", self.huge)
        app.router.add_get("/error", self.error)
        app.router.add_get("/hang", self.hang)
        app.router.add_get("/hang/{tail:.*}", self.hang)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self.ssl_context)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        self.release()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> RemoteAuthService:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


_WRONG_PIN = ["RETCOD=1", "ERRNUM=4", "ERRMSG=Invalid patron PIN"]
_NOT_FOUND = ["ERRNUM=1", "ERRMSG=Requested record not found"]
