"""SIP2 servers for tests and benchmarks, all on free 127.0.0.1 ports.

``Sip2Service`` is the independently written ACS of the ``pysip2`` package (its own codec,
checksum check, resend handling and login gating), driven by the patron records below. Around it:

* ``Relay``: what stunnel does in front of a SIP2 server (TLS on the proxy's side), and a
  damaged line for tests of checksums (the next ``damage`` answers get a wrong checksum);
* ``silent_server`` (accepts, reads, never answers) and ``closing_server`` (closes the connection
  on the first request): the two ways a SIP2 service fails besides refusing connections.

Each server runs in a task of its own, so its cancel scopes are entered and left in one task.

The pysip2 models have no field for the home library (``AQ``) or an expiry date (``PA``), which
Evergreen and Koha add to answers 64 and 24; ``_extend`` registers the two messages with those
fields in pysip2's table of layouts, which its codec reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from pysip2 import (
    LOGIN,
    PATRON_INFORMATION,
    PATRON_STATUS,
    LoginRequest,
    LoginResponse,
    PatronInformationRequest,
    PatronInformationResponse,
    PatronStatusRequest,
    PatronStatusResponse,
    SIP2Server,
)
from pysip2.models import MESSAGE_SPECS_BY_TYPE, MessageSpec, ident

# The library system's own log (peer addresses, protocol errors): kept apart from the proxy's,
# which the privacy tests read.
_SERVER_LOG = logging.getLogger("sip2-test-server")
_SERVER_LOG.propagate = False
_SERVER_LOG.addHandler(logging.NullHandler())

INSTITUTION = "BIBLIO"
SIP_USER, SIP_PASSWORD = "libproxy", "sip-account-pw"  # the example configuration's account
NO_FLAGS = " " * 14


class PatronInformationWithHome(PatronInformationResponse, frozen=True, kw_only=True):
    home_library: str | None = None  # AQ
    expiration_date: str | None = None  # PA (YYYYMMDD, as Koha sends it)
    birth_date: str | None = None  # PB


class PatronStatusWithHome(PatronStatusResponse, frozen=True, kw_only=True):
    home_library: str | None = None
    expiration_date: str | None = None


def _extend() -> None:
    extra = (ident("home_library", "AQ"), ident("expiration_date", "PA"))
    for base, extended, more in ((PatronInformationResponse, PatronInformationWithHome, (ident("birth_date", "PB"),)),
                                 (PatronStatusResponse, PatronStatusWithHome, ())):
        spec = MESSAGE_SPECS_BY_TYPE[base]
        MESSAGE_SPECS_BY_TYPE[extended] = MessageSpec(spec.command_id, extended, spec.fields + extra + more)


_extend()


@dataclass(frozen=True)
class Patron:
    """A patron record as the test library system holds it, personal data included."""

    pin: str
    name: str = "Sample Reader"
    email: str = "reader@patrons.example"
    address: str = "1 Sample Street, Wolcott CT"
    phone: str = "203-555-0100"
    birth_date: str = "19800101"
    home: str | None = "WOLCOTT"
    expires: str | None = "20991231"
    flags: str = NO_FLAGS  # the 14 patron status flags, "Y" or " "
    send_cq: bool = True
    answer_as: str | None = None  # another card in AA: an answer out of step


def flags_with(position: int) -> str:
    return NO_FLAGS[:position] + "Y" + NO_FLAGS[position + 1 :]


PATRONS: dict[str, Patron] = {
    "29000100000011": Patron("1111"),
    "29000100000029": Patron("2222", home="wolcott "),
    "29000200000010": Patron("3333", home="DERBY"),
    "29000900000016": Patron("5555", home="ELSEWHERE"),
    "29000100000037": Patron("Läsa 2024!"),
    "expired1": Patron("6666", expires="20200131"),
    "blocked1": Patron("7777", flags="YYYY          "),
    "lost1": Patron("8888", flags=flags_with(4)),
    "nocq1": Patron("1234", send_cq=False),
    "other1": Patron("1234", answer_as="29000100000011"),
}


@dataclass
class Counters:
    connections: int = 0
    logins: int = 0
    requests: int = 0


@dataclass
class Sip2Service:
    """pysip2's ACS on 127.0.0.1 with ``patrons``; ``login`` makes the SIP account mandatory."""

    patrons: dict[str, Patron] = field(default_factory=lambda: dict(PATRONS))
    login: bool = True
    error_detection: str = "auto"
    port: int = 0
    counters: Counters = field(default_factory=Counters)
    _task: asyncio.Task[None] | None = None
    _stop: asyncio.Event | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _app(self) -> SIP2Server:
        app = SIP2Server(institution_id=INSTITUTION, login_required=self.login, encoding="utf-8",
                         error_detection=self.error_detection, logger=_SERVER_LOG)
        counters, patrons = self.counters, self.patrons

        @app.route(LOGIN)
        async def login(req: LoginRequest, ctx: Any) -> LoginResponse:
            counters.logins += 1
            ok = req.login_user_id == SIP_USER and req.login_password == SIP_PASSWORD
            return LoginResponse(ok="1" if ok else "0")

        def look_up(card: str, pin: str | None) -> tuple[Patron | None, dict[str, Any]]:
            counters.requests += 1
            patron = patrons.get(card)
            if patron is None:
                return None, {"patron_status": NO_FLAGS, "personal_name": "", "valid_patron": "N",
                              "valid_patron_password": "N"}
            common: dict[str, Any] = {
                "patron_status": patron.flags, "personal_name": patron.name, "valid_patron": "Y",
                "valid_patron_password": ("Y" if pin == patron.pin else "N") if patron.send_cq else None,
                "home_library": patron.home, "expiration_date": patron.expires,
                "screen_message": (f"Greetings {patron.name}",),
            }
            return patron, common

        @app.route(PATRON_INFORMATION)
        async def information(req: PatronInformationRequest, ctx: Any) -> PatronInformationResponse:
            patron, values = look_up(req.patron_identifier, req.patron_password)
            if patron is not None:
                values.update(home_address=patron.address, email_address=patron.email,
                              home_phone_number=patron.phone, birth_date=patron.birth_date)
            return PatronInformationWithHome(
                language=req.language, transaction_date=ctx.now_18(), hold_items_count="0000",
                overdue_items_count="0000", charged_items_count="0000", fine_items_count="0001",
                recall_items_count="0000", unavailable_holds_count="0000", institution_id=req.institution_id,
                patron_identifier=(patron.answer_as if patron and patron.answer_as else req.patron_identifier),
                fee_amount="12.50", **values,
            )

        @app.route(PATRON_STATUS)
        async def status(req: PatronStatusRequest, ctx: Any) -> PatronStatusResponse:
            patron, values = look_up(req.patron_identifier, req.patron_password)
            return PatronStatusWithHome(
                language=req.language, transaction_date=ctx.now_18(), institution_id=req.institution_id,
                patron_identifier=(patron.answer_as if patron and patron.answer_as else req.patron_identifier),
                **values,
            )

        return app

    async def start(self) -> Sip2Service:
        """Serve (again, on the same port after ``stop``)."""
        app = self._app()
        ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        stop = asyncio.Event()

        async def serve() -> None:
            try:
                async with app.start("127.0.0.1", self.port) as port:
                    ready.set_result(port)
                    await stop.wait()
            except BaseException as exc:
                if not ready.done():
                    ready.set_exception(exc)
                raise

        self._stop, self._task = stop, asyncio.create_task(serve())
        self.port = await ready
        return self

    async def stop(self) -> None:
        if self._task is None or self._stop is None:
            return
        self._stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def __aenter__(self) -> Sip2Service:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def _damaged(line: bytes) -> bytes:
    """The line with its checksum changed (so it no longer sums to zero)."""
    body = line.rstrip(b"\r")
    digit = body[-1:]
    return body[:-1] + (b"0" if digit != b"0" else b"1") + b"\r"


@dataclass
class Relay:
    """A forwarder in front of ``upstream_port``: TLS with ``ssl_context`` (stunnel's job), and
    the next ``damage`` answers sent with a wrong checksum. ``stop()`` closes the listener and
    every relayed connection (a restarted server, as its clients see it); ``start()`` again
    listens on the same port."""

    upstream_port: int
    ssl_context: ssl.SSLContext | None = None
    damage: int = 0
    port: int = 0
    _server: asyncio.Server | None = None
    _open: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self) -> Relay:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        self._open.update((writer, up_writer))

        async def requests() -> None:
            while data := await reader.read(4096):
                up_writer.write(data)
                await up_writer.drain()
            up_writer.close()

        async def answers() -> None:
            while line := await up_reader.readuntil(b"\r"):
                if self.damage > 0:
                    self.damage -= 1
                    line = _damaged(line)
                writer.write(line)
                await writer.drain()

        tasks = [asyncio.create_task(requests()), asyncio.create_task(answers())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            writer.close()
            up_writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in self._open:
            writer.close()
        self._open.clear()

    async def __aenter__(self) -> Relay:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


@asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A server that accepts and reads but never answers (a hung SIP2 service); yields its port."""
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with contextlib.suppress(OSError):
            while await reader.read(4096):
                pass

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in writers:
            writer.close()


@asynccontextmanager
async def closing_server() -> AsyncIterator[int]:
    """A server that closes each connection as soon as a request arrives; yields its port."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r")
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


def with_patron(card: str, patron: Patron) -> dict[str, Patron]:
    """The standard records plus (or with a replaced) ``card``."""
    records = dict(PATRONS)
    records[card] = patron
    return records


__all__ = ["INSTITUTION", "NO_FLAGS", "PATRONS", "SIP_PASSWORD", "SIP_USER", "Patron", "Relay", "Sip2Service",
           "closing_server", "flags_with", "silent_server", "with_patron"]
