"""Staff signing in with the library's directory ([staff.ldap]) against a real OpenLDAP slapd."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ldap_server import SERVICE_PASSWORD, Slapd, missing_reason
from tests.staff_support import IT_NAME, IT_PASSWORD, StaffClient, write_staff
from tests.support import base_config, free_port, run_proxy
from tests.test_ldap import PASSWORD_ENV, example_table

NO_SLAPD = missing_reason()
pytestmark = pytest.mark.skipif(NO_SLAPD is not None, reason=NO_SLAPD or "")


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    with Slapd(tmp_path_factory.mktemp("slapd")) as server:
        yield server


async def test_directory_groups_give_roles(tmp_path: Path, directory: Slapd,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, SERVICE_PASSWORD)
    port = free_port()
    # In the sample tree: wolcott2 is in "staff" and "genealogy", beaconfalls1 in "genealogy" only,
    # wolcott1 in neither.
    staff = {"ldap": example_table(directory.url), "ldap_roles": {"it": "staff", "director": "genealogy"}}
    config = base_config(tmp_path, [], admin={"listen": f"127.0.0.1:{port}"}, staff=staff)
    write_staff(config.proxy.state_dir)
    async with run_proxy(config):
        director = StaffClient(port)
        status, home = await director.sign_in("beaconfalls1", "3333")
        assert status == 200 and "Director" in home
        assert (await director.get("/director/retention"))[0] == 200
        assert (await director.get("/it/locks"))[0] == 403
        await director.close()
        for name, password in (("wolcott2", "2222"),  # in both groups: one role per person
                               ("wolcott1", "1111"),  # in no staff group
                               ("beaconfalls1", "wrong-pin"),
                               ("29000200000010", "3333")):  # a card number is never a staff name
            client = StaffClient(port)
            assert (await client.sign_in(name, password))[0] == 401, name
            await client.close()
        # Local accounts still work beside the directory.
        local = StaffClient(port)
        assert (await local.sign_in(IT_NAME, IT_PASSWORD))[0] == 200
        _, audit = await local.get("/audit")
        # Refused directory names are not kept (they may be patrons' names).
        assert "wolcott1" not in audit and "wolcott2" not in audit and "beaconfalls1" in audit
        await local.close()
        # The directory down: a clear message, local accounts unaffected.
        directory.stop()
        try:
            client = StaffClient(port)
            status, text = await client.sign_in("beaconfalls1", "3333")
            assert status == 503 and "not answering" in text
            await client.close()
        finally:
            directory.start()
