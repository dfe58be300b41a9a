"""Key rotation and opt-in pairwise identifiers."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest
from jwt import PyJWKSet

from proxy.assertion import AssertionMinter, KeyRing, pairwise_subject, rotate_keys
from tests.support import PROXY_HOST, Browser, EchoVendor, base_config, run_echo_vendor, run_proxy


def verify(token: str, jwks: dict[str, object], audience: str) -> dict[str, object]:
    keyset = PyJWKSet.from_dict(jwks)
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in keyset.keys if k.key_id == kid)
    return dict(jwt.decode(token, key.key, algorithms=["ES256"], audience=audience,
                           options={"verify_exp": False, "verify_iat": False}))


def test_rotation_keeps_old_assertions_verifiable_until_they_expire(tmp_path: Path) -> None:
    now = [time.time()]
    path = tmp_path / "keys.json"
    ring = KeyRing(path, "ES256")
    minter = AssertionMinter(ring, "https://proxy", "lib.example", 300, clock=lambda: now[0])
    old_token = minter.token("gale")
    old_kid = jwt.get_unverified_header(old_token)["kid"]

    new = rotate_keys(path, "ES256", grace=3600, lifetime=300, now=now[0])
    assert ring.reload_if_changed()
    # During the grace period: both published, the old key still signs.
    assert {k["kid"] for k in minter.jwks()["keys"]} == {old_kid, new.kid}
    assert jwt.get_unverified_header(minter.token("gale"))["kid"] == old_kid
    # After the switch: the new key signs; the old one stays published while its last
    # assertions may still be in use.
    now[0] += 3600 + 1
    switched = minter.token("gale")
    assert jwt.get_unverified_header(switched)["kid"] == new.kid
    jwks = minter.jwks()
    assert {k["kid"] for k in jwks["keys"]} == {old_kid, new.kid}
    assert verify(old_token, jwks, "gale")["aud"] == "gale"
    assert verify(switched, jwks, "gale")["aud"] == "gale"
    # Once every assertion signed by the old key has expired, it is no longer published, and
    # the next rotation drops it from the file.
    now[0] += 300 + 61
    assert {k["kid"] for k in minter.jwks()["keys"]} == {new.kid}
    third = rotate_keys(path, "ES256", grace=60, lifetime=300, now=now[0])
    assert ring.reload_if_changed()
    assert {k.kid for k in ring.keys} == {new.kid, third.kid}


def test_pairwise_subjects_differ_per_vendor_and_hide_the_patron() -> None:
    a = pairwise_subject(b"secret", "patronkey", "gale", "wolcott.lib.ct.us")
    b = pairwise_subject(b"secret", "patronkey", "ebsco", "wolcott.lib.ct.us")
    assert a != b and a.endswith("@wolcott.lib.ct.us")
    assert a == pairwise_subject(b"secret", "patronkey", "gale", "wolcott.lib.ct.us")
    assert a != pairwise_subject(b"other", "patronkey", "gale", "wolcott.lib.ct.us")
    assert "patronkey" not in a


async def test_pairwise_ids_only_for_vendors_that_opt_in(tmp_path: Path) -> None:
    async with run_echo_vendor() as v1, run_echo_vendor() as v2, run_echo_vendor() as v3:
        vendors = [
            {"id": "one", "title": "One", "start": f"{v1.origin}/", "hosts": [v1.origin], "groups": ["wolcott"],
             "pairwise_id": True},
            {"id": "two", "title": "Two", "start": f"{v2.origin}/", "hosts": [v2.origin], "groups": ["wolcott"],
             "pairwise_id": True},
            {"id": "three", "title": "Three", "start": f"{v3.origin}/", "hosts": [v3.origin], "groups": ["wolcott"]},
        ]
        async with run_proxy(base_config(tmp_path, vendors)) as running:
            subjects: dict[str, list[str]] = {"one": [], "two": []}
            for card, pin in (("1000", "1111"), ("2000", "2222"), ("1000", "1111")):
                b = Browser(running)
                for vendor, echo in (("one", v1), ("two", v2), ("three", v3)):
                    reply = await b.sign_in(card, pin, f"{echo.origin}/echo")
                    assert reply.status == 200
                    claims = jwt.decode(echo.last.header("X-Library-Membership") or "",
                                        options={"verify_signature": False})
                    if vendor == "three":
                        assert "sub" not in claims
                    else:
                        subjects[vendor].append(str(claims["sub"]))
                await b.close()
            # Same patron, same vendor, later session: same id. Different vendors: different ids.
            assert subjects["one"][0] == subjects["one"][2] != subjects["one"][1]
            assert subjects["one"][0] != subjects["two"][0]
            assert "1000" not in subjects["one"][0]


async def test_running_proxy_picks_up_a_rotation(tmp_path: Path, echo: EchoVendor) -> None:
    vendor = {"id": "echo", "title": "E", "start": f"{echo.origin}/", "hosts": [echo.origin], "groups": ["wolcott"]}
    config = base_config(tmp_path, [vendor])
    async with run_proxy(config) as running:
        b = Browser(running)
        before = (await b.get(f"http://{PROXY_HOST}/.well-known/jwks.json")).json()
        new = rotate_keys(config.assertion.key_file, "ES256", grace=0, lifetime=300)
        from proxy.context import ASSERTIONS

        ring = running.app[ASSERTIONS]._ring
        assert ring is not None and ring.reload_if_changed()
        after = (await b.get(f"http://{PROXY_HOST}/.well-known/jwks.json")).json()
        assert len(after["keys"]) == 2 and len(before["keys"]) == 1
        await b.sign_in("1000", "1111", f"{echo.origin}/echo")
        token = echo.last.header("X-Library-Membership") or ""
        assert jwt.get_unverified_header(token)["kid"] == new.kid
        assert verify(token, after, "echo")["iss"] == f"http://{PROXY_HOST}"
        await b.close()


def test_cli_keys_rotate_and_list(tmp_path: Path) -> None:
    import subprocess
    import sys

    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[proxy]\nstate_dir = "{tmp_path}/state"\n[[vendor]]\nid = "v"\nstart = "https://v.example/"\n'
                   'hosts = ["v.example"]\ngroups = ["g"]\n')
    run = [sys.executable, "-m", "proxy", "keys"]
    listed = subprocess.run([*run, "list", "--config", str(cfg)], capture_output=True, text=True, check=True)
    assert listed.stdout.count("signing") == 1
    rotated = subprocess.run([*run, "rotate", "--config", str(cfg), "--grace", "2h"], capture_output=True,
                             text=True, check=True)
    assert "Added key" in rotated.stdout
    listed = subprocess.run([*run, "list", "--config", str(cfg)], capture_output=True, text=True, check=True)
    assert listed.stdout.count("signing") == 1 and listed.stdout.count("waiting") == 1
    bad = subprocess.run([*run, "rotate", "--config", str(cfg), "--grace", "soon"], capture_output=True, text=True)
    assert bad.returncode == 1


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_keyring_survives_a_broken_file(tmp_path: Path, alg: str) -> None:
    path = tmp_path / "k.json"
    ring = KeyRing(path, alg)
    kid = ring.keys[0].kid
    path.write_text("{ not json")
    assert not ring.reload_if_changed()
    assert ring.keys[0].kid == kid
