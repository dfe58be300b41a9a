"""The proxy terminating TLS itself with a wildcard certificate, as a library would deploy it."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path
from urllib.parse import quote

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support import EchoVendor, base_config, run_proxy

PROXY = "proxy.test"


def wildcard_certificate(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, PROXY)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(PROXY), x509.DNSName(f"*.{PROXY}")]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "wildcard.pem", tmp / "wildcard.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def test_tls_wildcard_and_secure_host_cookies(tmp_path: Path, echo: EchoVendor) -> None:
    cert, key = wildcard_certificate(tmp_path)
    vendor = {"id": "echo", "title": "Echo", "start": f"{echo.origin}/echo", "hosts": [echo.origin],
              "groups": ["wolcott"]}
    config = base_config(tmp_path, [vendor], proxy={"host": PROXY, "tls_cert": str(cert), "tls_key": str(key)})
    assert config.proxy.scheme == "https"
    trust = ssl.create_default_context(cafile=str(cert))
    async with run_proxy(config) as running, aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        base = f"https://127.0.0.1:{running.port}"

        async def get(host: str, path: str, cookie: str = "", **kw: object) -> aiohttp.ClientResponse:
            headers = {"Host": host, **({"Cookie": cookie} if cookie else {})}
            resp = await http.request(kw.pop("method", "GET"), base + path, headers=headers, ssl=trust,  # type: ignore[arg-type]
                                      server_hostname=host, allow_redirects=False, **kw)
            await resp.read()
            return resp

        form = await get(PROXY, f"/login?url={quote(echo.origin + '/echo')}")
        page = (await form.read()).decode()
        csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        csrf_cookie = form.cookies["__Host-libproxy_csrf"]
        assert csrf_cookie["secure"] and csrf_cookie["path"] == "/"
        posted = await get(PROXY, "/login", cookie=f"__Host-libproxy_csrf={csrf_cookie.value}", method="POST",
                           data={"csrf": csrf, "url": echo.origin + "/echo", "card": "1000", "pin": "1111"},
                           )
        assert posted.status == 303
        session = posted.cookies["__Host-libproxy"]
        assert session["secure"] and session["httponly"] and not session["domain"] and session["path"] == "/"
        location = posted.headers["Location"]
        assert location.startswith(f"https://127-0-0-1---h{echo.port}.{PROXY}/.libproxy/connect?ticket=")
        label_host = location.split("/")[2]
        bind = posted.cookies["__Secure-libproxy_bind"]
        assert bind["secure"] and bind["domain"] == PROXY and bind["httponly"]
        # Without the browser's binding cookie, the ticket does not sign anyone in...
        assert (await get(label_host, "/" + location.split("/", 3)[3])).status == 400
        # ...and a fresh ticket with it does.
        again = await get(PROXY, f"/login?url={quote(echo.origin + '/echo')}",
                          cookie=f"__Host-libproxy={session.value}; __Secure-libproxy_bind={bind.value}")
        location = again.headers["Location"]
        connected = await get(label_host, "/" + location.split("/", 3)[3],
                              cookie=f"__Secure-libproxy_bind={bind.value}")
        vendor_cookie = connected.cookies["__Host-libproxy"]
        assert vendor_cookie["secure"]
        reply = await get(label_host, "/echo", cookie=f"__Host-libproxy={vendor_cookie.value}")
        assert reply.status == 200
        assert echo.last.header("X-Library-Membership")
        assert "Cookie" not in {k for k, _ in echo.last.headers}
