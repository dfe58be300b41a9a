"""A real headless Chromium, driven over the DevTools protocol with aiohttp's WebSocket client.

Debian's ``chromium`` is started with a fresh profile and with background networking off (this
machine has no network but loopback). Every request the page makes is recorded from the Network
domain, so tests can assert where the browser went. ``*.localhost`` names resolve to loopback
inside Chromium itself, as in every modern browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
    "--no-first-run", "--disable-component-update", "--disable-sync", "--disable-extensions",
    "--disable-default-apps", "--remote-debugging-port=0", "--remote-allow-origins=*",
]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse, session_id: str) -> None:
        self._ws = ws
        self._session = session_id
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.requests: list[str] = []
        self.failed: list[str] = []
        self._load = asyncio.Event()
        self._listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self._reader = asyncio.create_task(self._read())

    def listen(self, callback: Callable[[str, dict[str, Any]], None]) -> None:
        """Call ``callback(method, params)`` for every DevTools event of this page from now on
        (after the recording above), in the order Chromium sends them."""
        self._listeners.append(callback)

    async def _read(self) -> None:
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self._pending:
                self._pending.pop(data["id"]).set_result(data)
                continue
            method = data.get("method")
            params = data.get("params", {})
            if method == "Network.requestWillBeSent":
                self.requests.append(params["request"]["url"])
            elif method == "Network.loadingFailed" and not params.get("canceled"):
                self.failed.append(params.get("errorText", ""))
            elif method == "Page.loadEventFired":
                self._load.set()
            if method:
                for callback in self._listeners:
                    callback(method, params)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        await self._ws.send_json({"id": ident, "sessionId": self._session, "method": method, "params": params})
        reply = await asyncio.wait_for(future, 30)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return dict(reply.get("result", {}))

    async def goto(self, url: str) -> None:
        self._load.clear()
        await self.send("Page.navigate", url=url)
        await asyncio.wait_for(self._load.wait(), 30)

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result.get("result", {}).get("value")

    async def submit_and_wait(self, expression: str) -> None:
        """Run script that submits a form or follows a link, and wait for the next page load."""
        self._load.clear()
        await self.evaluate(expression)
        await asyncio.wait_for(self._load.wait(), 30)

    async def text(self) -> str:
        return str(await self.evaluate("document.body ? document.body.innerText : ''"))

    async def url(self) -> str:
        return str(await self.evaluate("location.href"))

    async def screenshot(self, path: str) -> None:
        import base64

        data = await self.send("Page.captureScreenshot", format="png")
        with open(path, "wb") as fh:
            fh.write(base64.b64decode(data["data"]))


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Page]:
    path = chromium_path()
    assert path is not None, "chromium is not installed"
    profile = tempfile.mkdtemp(prefix="libproxy-chromium-")
    proc = await asyncio.create_subprocess_exec(
        path, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        ws_url = None
        while ws_url is None:
            line = await asyncio.wait_for(proc.stderr.readline(), 30)
            if not line:
                raise RuntimeError("chromium exited before DevTools was ready")
            match = re.search(rb"DevTools listening on (ws://\S+)", line)
            if match:
                ws_url = match.group(1).decode()
        drain = asyncio.create_task(proc.stderr.read())
        async with aiohttp.ClientSession() as http, http.ws_connect(ws_url, max_msg_size=64 * 1024 * 1024) as ws:
            await ws.send_json({"id": 1, "method": "Target.createTarget", "params": {"url": "about:blank"}})
            target = None
            while target is None:
                msg = json.loads((await ws.receive()).data)
                if msg.get("id") == 1:
                    target = msg["result"]["targetId"]
            await ws.send_json({"id": 2, "method": "Target.attachToTarget",
                                "params": {"targetId": target, "flatten": True}})
            session = None
            while session is None:
                msg = json.loads((await ws.receive()).data)
                if msg.get("id") == 2:
                    session = msg["result"]["sessionId"]
            page = Page(ws, session)
            await page.send("Page.enable")
            await page.send("Network.enable")
            await page.send("Runtime.enable")
            try:
                yield page
            finally:
                page._reader.cancel()
        drain.cancel()
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        shutil.rmtree(profile, ignore_errors=True)
