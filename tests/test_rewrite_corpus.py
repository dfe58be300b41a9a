"""Every page of the real-world corpus (tests/corpus) through the proxy, served as vendors serve
them: plain, gzip-compressed, in paced pieces (streamed, chunked) and inside a JSON string.

For each: no mention of a vendor host is left in any URL form, and mapping the proxied hosts
back (the reverse rewriter, as request bodies use it) gives the vendor's bytes exactly, apart
from the case of host names (an upper-case host comes back lower-case). Both with the vendor on
a port of its own (every URL carries ``:PORT``) and, where this process may bind it, on port 80
(no port in any URL).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import zstandard
from aiohttp import web

from proxy.context import ROUTES
from proxy.rewrite import RewriteTable
from proxy.rewrite.compression import OFFERED
from tests.corpus.vendorize import VENDOR_HOSTS, vendor_files
from tests.support import Browser, RunningProxy, base_config, free_port, run_proxy

TYPES = {".html": "text/html", ".js": "application/javascript", ".mjs": "text/javascript", ".css": "text/css",
         ".json": "application/json", ".xml": "application/opensearchdescription+xml"}
FORMS = ("plain", "gzip", "pieces", "json")

# A vendor host in any URL form: after "//" written plainly, JSON-escaped, \u-escaped or
# percent-encoded once or twice, in either case.
# (Not after a scheme other than http(s) and ws(s): ``ftp://cdn.vendor.test/`` is no web
# traffic, and the proxy leaves it as it is.)
LEFT_IN_URL = re.compile(
    rb"(?<!ftp:)(?<!ftp%3a)(?://|\\/\\/|\\u002f\\u002f|\\x2f\\x2f|%2f%2f|%252f%252f)"
    rb"(?:www|cdn|api)\.vendor\.test", re.IGNORECASE)
HOST_CASE = re.compile(rb"(?:www|cdn|api)\.vendor\.test", re.IGNORECASE)
# A mention with its scheme: an upper-case one ("HTTP://WWW.VENDOR.TEST") comes back lower-case.
MENTION = re.compile(rb"(?:(?:https?|wss?)(?::|%3a|%253a|\\u003a))?(?://|\\/\\/|%2f%2f|%252f%252f)?"
                     rb"(?:www|cdn|api)\.vendor\.test", re.IGNORECASE)


def fold(data: bytes) -> bytes:
    return MENTION.sub(lambda m: m.group(0).lower(), data)


def content_type(name: str) -> str:
    return TYPES[Path(name).suffix]


def vendor_app(files: dict[str, bytes]) -> web.Application:
    async def handler(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in files:
            raise web.HTTPNotFound()
        body = files[name]
        form = request.query.get("as", "plain")
        if form == "gzip":
            return web.Response(body=gzip.compress(body, 6), content_type=content_type(name),
                                headers={"Content-Encoding": "gzip"})
        if form == "json":
            # An API answering with the page in a JSON string, "/" escaped as PHP writes it.
            text = json.dumps({"html": body.decode("utf-8")}).replace("/", "\\/")
            return web.Response(text=text, content_type="application/json")
        if form == "pieces":
            response = web.StreamResponse(headers={"Content-Type": content_type(name)})
            await response.prepare(request)
            for pos in range(0, len(body), 7919):  # a prime: pieces end anywhere in a mention
                await response.write(body[pos : pos + 7919])
                await asyncio.sleep(0)
            await response.write_eof()
            return response
        return web.Response(body=body, content_type=content_type(name))

    async def start(request: web.Request) -> web.Response:
        return web.Response(text="<p>the corpus vendor</p>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/", start)
    app.router.add_get("/corpus/{name}", handler)
    return app


def vendor_port_choices() -> list[str]:
    """"own" (a free port: URLs carry it) and, where this process may bind port 80, "default"."""
    try:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", 80))
    except OSError:
        return ["own"]
    return ["own", "default"]


@pytest.fixture(params=vendor_port_choices())
async def corpus_proxy(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[
        tuple[RunningProxy, dict[str, bytes], str]]:
    port = free_port() if request.param == "own" else 80
    suffix = "" if port == 80 else f":{port}"
    files = vendor_files(port)
    runner = web.AppRunner(vendor_app(files), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    config = base_config(
        tmp_path,
        [{"id": "corpus", "title": "Corpus", "start": f"http://www.vendor.test{suffix}/", "groups": ["wolcott"],
          "hosts": [f"http://{h}{suffix}" for h in VENDOR_HOSTS]}],
        upstream={"hosts": dict.fromkeys(VENDOR_HOSTS, "127.0.0.1"), "max_decoded_body": "64MiB"},
    )
    try:
        async with run_proxy(config) as proxy:
            yield proxy, files, suffix
    finally:
        await runner.cleanup()


def expected(files: dict[str, bytes], name: str, form: str) -> bytes:
    if form == "json":
        return json.dumps({"html": files[name].decode("utf-8")}).replace("/", "\\/").encode()
    return files[name]


async def test_every_corpus_page_is_rewritten_completely_and_maps_back(
        corpus_proxy: tuple[RunningProxy, dict[str, bytes], str]) -> None:
    proxy, files, suffix = corpus_proxy
    table: RewriteTable = proxy.app[ROUTES].rewrite  # the proxy's own table
    back = table.to_vendor()
    browser = Browser(proxy)
    # The proxy's answers as sent (the test's browser would undo their coding itself).
    raw = aiohttp.ClientSession(auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar())
    try:
        assert (await browser.sign_in("1000", "1111", f"http://www.vendor.test{suffix}/")).status == 200
        host = proxy.proxied_host(f"http://www.vendor.test{suffix}")
        mentions = 0
        for name in sorted(files):
            for form in FORMS:
                # A compressed page goes to a browser that takes every coding the proxy offers.
                accept = "gzip, deflate, br, zstd" if form == "gzip" else "identity"
                headers = {"Host": host, "Cookie": browser.cookie_header(host), "Accept-Encoding": accept}
                async with raw.get(f"http://127.0.0.1:{proxy.port}/corpus/{name}?as={form}", headers=headers,
                                   allow_redirects=False) as reply:
                    assert reply.status == 200, (name, form)
                    body = await reply.read()
                    coding = reply.headers.get("Content-Encoding")
                if form == "gzip":
                    assert coding == OFFERED[0], name
                    if coding == "zstd":
                        body = zstandard.ZstdDecompressor().decompressobj().decompress(body)
                    else:
                        body = gzip.decompress(body)
                else:
                    assert coding is None, name
                vendor = expected(files, name, form)
                left = LEFT_IN_URL.findall(body)
                assert not left, f"{name} ({form}): {len(left)} vendor URLs left, e.g. {left[:3]}"
                mapped_back = back.rewrite_all(body)
                if mapped_back != vendor:
                    assert fold(mapped_back) == fold(vendor), f"{name} ({form}) does not map back to the vendor's bytes"
                mentions += len(HOST_CASE.findall(vendor))
        assert mentions > 1000 * len(FORMS) // 2  # the corpus is what the test is about
    finally:
        await raw.close()
        await browser.close()


def test_the_corpus_files_are_the_published_ones() -> None:
    pages = Path(__file__).parent / "corpus" / "pages"
    sums = dict(line.split()[::-1] for line in (pages.parent / "SHA256SUMS").read_text().splitlines())
    assert sorted(sums) == sorted(p.name for p in pages.iterdir())
    for name, digest in sums.items():
        assert hashlib.sha256((pages / name).read_bytes()).hexdigest() == digest, name
