"""One contract, every patron source: the local file, LDAP (a real slapd), SIP2 (pysip2's server)
and Evergreen RemoteAuth (its documented answers), each against a real server on loopback.

The contract of ``proxy/patrons/base.py``:

* right card and PIN: a ``Membership`` with the card's groups and a pseudonymous key (a keyed
  hash: stable for the card, never the card itself);
* wrong PIN and unknown card: ``None``, both;
* right PIN of a card that may not be used: ``CardRefused`` (or ``None`` where the service itself
  cannot tell the cases apart, as Evergreen's Basic form): never a membership;
* empty, overlong or control-character input: ``None``, without troubling the source;
* a source that is down: ``DirectoryUnavailable``, never ``None`` (that would read "wrong PIN").
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from proxy.errors import CardRefused, DirectoryUnavailable
from proxy.membership import Membership
from proxy.patrons.base import MAX_CARD_LENGTH, Authenticator

Running = Callable[[], AbstractAsyncContextManager[Authenticator]]


@dataclass
class Source:
    name: str
    running: Running  # the source against its live server
    broken: Running  # the same source configured against a server that is not there
    card: str
    pin: str
    groups: set[str]
    other_card: str  # another active card (its own pseudonym)
    other_pin: str
    refused_card: str | None  # a card that may not be used (expired or blocked), with its PIN
    refused_pin: str | None
    unknown_card: str = "29009999999999"


def _local(tmp: Path) -> Source:
    from proxy.patrons.local import LocalFileAuthenticator
    from tests.support import write_patrons

    path = write_patrons(tmp / "patrons.toml")

    @asynccontextmanager
    async def running_at(file: Path) -> AsyncIterator[Authenticator]:
        auth = LocalFileAuthenticator(file, b"contract-secret-0123456789abcdef", "wolcott.lib.ct.us")
        await auth.start()
        try:
            yield auth
        finally:
            await auth.close()

    return Source("local", lambda: running_at(path), lambda: running_at(tmp / "missing" / "patrons.toml"),
                  "1000", "1111", {"wolcott", "bibliomation"}, "2000", "2222", "4000", "4444")


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from tests.ldap_server import Slapd, missing_reason

    if missing_reason():
        pytest.skip(missing_reason() or "")
    with Slapd(tmp_path_factory.mktemp("contract-slapd")) as server:
        yield server


def _ldap(server: object) -> Source:
    from tests import test_ldap

    url = server.url  # type: ignore[attr-defined]
    return Source("ldap", lambda: test_ldap.running(test_ldap.options_for(url)),
                  lambda: test_ldap.running(test_ldap.options_for(test_ldap.closed_url())),
                  "29000100000011", "1111", {"bibliomation", "wolcott"}, "derby1", "4444", "expired1", "6666")


def _sip2(address: str) -> Source:
    from tests import test_patrons_sip2 as t

    return Source("sip2", lambda: t.running(t.options_for(address)),
                  lambda: t.running(t.options_for(t.closed_address())),
                  "29000100000011", "1111", {"bibliomation", "wolcott"}, "29000200000010", "3333",
                  "expired1", "6666")


def _remoteauth(origin: str) -> Source:
    from tests import test_patrons_remoteauth as t

    return Source("remoteauth", lambda: t.running(t.options_for(origin)),
                  lambda: t.running(t.options_for(t.closed_origin())),
                  "29000100000011", "1111", {"bibliomation", "wolcott"}, "29000200000010", "3333",
                  "barred1", "7777")


@pytest.fixture(params=["local", "ldap", "sip2", "remoteauth"])
async def source(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                 ) -> AsyncIterator[Source]:
    kind = request.param
    if kind == "local":
        yield _local(tmp_path)
    elif kind == "ldap":
        from tests import test_ldap

        monkeypatch.setenv(test_ldap.PASSWORD_ENV, test_ldap.SERVICE_PASSWORD)
        yield _ldap(request.getfixturevalue("slapd"))
    elif kind == "sip2":
        from tests import test_patrons_sip2 as t
        from tests.sip2_server import Sip2Service

        monkeypatch.setenv(t.PASSWORD_ENV, t.SIP_PASSWORD)
        async with Sip2Service() as server:
            yield _sip2(server.address)
    else:
        from tests import test_patrons_remoteauth as t
        from tests.remoteauth_server import RemoteAuthService

        monkeypatch.setenv(t.PASSWORD_ENV, t.CLIENT_PASSWORD)
        async with RemoteAuthService() as server:
            yield _remoteauth(server.origin)


async def test_right_card_and_pin_give_a_pseudonymous_membership(source: Source) -> None:
    async with source.running() as auth:
        first = await auth.authenticate(source.card, source.pin)
        again = await auth.authenticate(source.card, source.pin)
        other = await auth.authenticate(source.other_card, source.other_pin)
    assert isinstance(first, Membership) and isinstance(other, Membership)
    assert source.groups <= set(first.groups)
    assert first.key and first.key == (again.key if again else None)  # stable for the card
    assert other.key and other.key != first.key  # and different between cards
    assert source.card not in first.key and source.pin not in repr(first)
    assert source.card not in repr(first.to_dict())


async def test_wrong_pin_and_unknown_card_are_both_none(source: Source) -> None:
    async with source.running() as auth:
        assert await auth.authenticate(source.card, source.pin + "9") is None
        assert await auth.authenticate(source.unknown_card, source.pin) is None


async def test_a_refused_card_is_never_a_membership(source: Source) -> None:
    if source.refused_card is None or source.refused_pin is None:
        pytest.skip(f"the {source.name} test directory has no refused card")
    async with source.running() as auth:
        try:
            found = await auth.authenticate(source.refused_card, source.refused_pin)
        except CardRefused as refused:
            assert refused.reason in CardRefused.REASONS
        else:
            assert found is None


@pytest.mark.parametrize(("card", "pin"), [
    ("", "1111"), ("1000", ""), ("x" * (MAX_CARD_LENGTH + 1), "1111"), ("1000\x00", "1111"), ("1000", "11\n11"),
])
async def test_unusable_input_is_none(source: Source, card: str, pin: str) -> None:
    card = card.replace("1000", source.card)
    pin = pin.replace("1111", source.pin)
    async with source.running() as auth:
        assert await auth.authenticate(card, pin) is None


async def test_a_source_that_is_down_says_so(source: Source) -> None:
    async def sign_in() -> None:
        async with source.broken() as auth:
            await auth.authenticate(source.card, source.pin)

    with pytest.raises(DirectoryUnavailable):
        await sign_in()


