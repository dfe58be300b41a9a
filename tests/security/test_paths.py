"""bad-inputs.md section 4: path normalisation, double encoding, prefix escape; issue 11 overlong UTF-8.

The vendor opens ``/open/*`` and ``/help/*`` without sign-in. A path that a lenient server could
read as leaving those prefixes must require sign-in (a GET is sent to the sign-in page), and
reach the vendor not at all. The control shows a plain anonymous path is forwarded, without the
membership assertion.
"""

from __future__ import annotations

import pytest

from tests.security.conftest import World
from tests.support import PROXY_HOST

ESCAPES = [
    ("dotdot_envoy_cve_2019_9901", "/open/../private"),
    ("encoded_dots_traefik_cve_2025_47952", "/open/%2e%2e/private"),
    ("encoded_dots_upper_heimdall_ghsa_3q34", "/open/%2E%2E/private"),
    ("half_encoded_dots_traefik_cve_2026_48020", "/open/.%2e/private"),
    ("encoded_slash_envoy_cve_2021_29492", "/open%2f..%2fprivate"),
    ("dotdot_encoded_slash_envoy_cve_2021_29492", "/open/..%2fprivate"),
    ("double_encoded_heimdall", "/open/%252e%252e/private"),
    ("matrix_param_envoy_cve_2026_73551", "/open/..;x/private"),
    ("matrix_param_prefix_traefik_cve_2026_137481", "/open;x/../private"),
    ("backslash_envoy_cve_2021_29492", "/open/..\\private"),
    ("encoded_backslash_envoy_cve_2021_29492", "/open/%5c..%5cprivate"),
    ("double_slash_middie_cve_2026_2880", "//open/x"),
    ("empty_segment_dotdot_pomerium_cve_2023_33189", "/open//../../private"),
    ("dot_dotdot_pomerium_cve_2023_33189", "/open/./../private"),
    ("nul_dotdot_bad_inputs_4", "/open/%00/../private"),
    ("dotdot_nul_bad_inputs_4", "/open/..%00/private"),
    ("percent_u_iis_bad_inputs_4", "/open/%u002e%u002e/private"),
    # Issue 11 (unclear): these three forms were forwarded without sign-in before the fix.
    ("overlong_2byte_issue11", "/help/%c0%ae%c0%ae/private"),
    ("overlong_3byte_issue11", "/help/%e0%80%ae%e0%80%ae/private"),
    ("percent_u_issue11", "/help/%u002e%u002e/private"),
    ("overlong_slash_issue11", "/help/..%c0%afprivate"),
    ("stray_byte_issue11", "/help/%ff/private"),
    ("case_variant_bad_inputs_4", "/OPEN/x"),
    ("prefix_not_segment_bad_inputs_4", "/openx/private"),
    ("api_dotdot_traefik_cve_2026_48020", "/open../private"),
    ("space_nginx_cve_2013_4547", "/open/x%20/../../private"),
]


@pytest.mark.parametrize(("case", "path"), ESCAPES, ids=[c[0] for c in ESCAPES])
async def test_paths_4_anonymous_prefix_escape_requires_sign_in(world: World, case: str, path: str) -> None:
    mark = world.mark()
    status, headers, _ = await world.fetch(path, cookie=None)
    assert status in (302, 400, 404), (path, status)
    if status == 302:
        assert headers["location"].startswith(f"http://{PROXY_HOST}/login?url="), headers["location"]
    assert world.since(mark) == [], [r.path for r in world.since(mark)]
    # POST too: "please sign in", not forwarded.
    status, _, _ = await world.fetch(path, cookie=None, method="POST", body=b"q=1",
                                     headers=("Content-Type: application/x-www-form-urlencoded",))
    assert status in (400, 401, 404), (path, status)
    assert world.since(mark) == []


async def test_paths_4_plain_anonymous_path_forwarded_without_assertion_control(world: World) -> None:
    mark = world.mark()
    for path in ("/open/plain-page", "/help/topic/1", "/open/%C3%A9t%C3%A9"):
        status, _, _ = await world.fetch(path, cookie=None)
        assert status == 200, path
    got = world.since(mark)
    assert [r.path for r in got] == ["/open/plain-page", "/help/topic/1", "/open/%C3%A9t%C3%A9"]
    for r in got:
        assert r.header("X-Library-Membership") is None, r.path
        assert "cookie" not in r.names()


async def test_paths_4_fragment_in_request_target_envoy_cve_2021_32779(world: World) -> None:
    """aiohttp drops a fragment silently (observed); whatever is done with it, the anonymous
    prefix cannot be escaped through it and no "#" reaches the vendor as part of a path."""
    mark = world.mark()
    for target in ("/open/x#/../private", "/private#/../open/x", "/open/%23/../private"):
        status, _, _ = await world.fetch(target, cookie=None)
        assert status in (200, 302, 400, 404), target
    for r in world.since(mark):
        assert r.path.startswith("/open/") and "private" not in r.path, r.path
        assert r.header("X-Library-Membership") is None


@pytest.mark.parametrize("path", ["/static/../../../../etc/passwd", "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
                                  "/static/..%2f..%2f..%2fproxy%2fapp.py", "/static/..\\..\\app.py",
                                  "/static//etc/passwd", "/login/../admin", "/%2e%2e/%2e%2e/etc/passwd"])
async def test_paths_4_traversal_on_the_proxy_host_static_files(world: World, path: str) -> None:
    mark = world.mark()
    status, _, body = await world.fetch(path, host=PROXY_HOST)
    assert status in (400, 403, 404), (path, status)
    assert b"root:" not in body and b"import " not in body
    assert world.since(mark) == []
