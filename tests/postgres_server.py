"""A real PostgreSQL server on a free loopback port, in a temporary directory.

PostgreSQL refuses to run as root, so when the tests run as root the cluster is made and run by
the unprivileged ``nobody`` user (``runuser``) in a directory it owns. Trust authentication on
loopback only; the cluster is deleted afterwards.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

from tests.scale_support import port_open, postgres_bin, wait_for
from tests.support import free_port

USER = "libproxy"


def available() -> bool:
    return postgres_bin() is not None and (os.geteuid() != 0 or shutil.which("runuser") is not None)


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "nobody", "--", *argv]
    return argv


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Start PostgreSQL; yields a connection URL and removes the cluster afterwards."""
    bindir = postgres_bin()
    assert bindir is not None, "PostgreSQL (postgresql package) is not installed"
    root = tempfile.mkdtemp(prefix="libproxy-pg-")
    data, sockets = os.path.join(root, "data"), os.path.join(root, "run")
    os.mkdir(sockets)
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chmod(root, 0o755)  # noqa: S103 - nobody must reach its own directories inside
        os.chown(sockets, nobody.pw_uid, nobody.pw_gid)
        os.mkdir(data, 0o700)
        os.chown(data, nobody.pw_uid, nobody.pw_gid)
    port = free_port()
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    subprocess.run(_as_server_user([os.path.join(bindir, "initdb"), "-D", data, "-U", USER, "-A", "trust",
                                    "--no-sync", "-E", "UTF8"]),
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=root)
    log = os.path.join(sockets, "server.log")
    subprocess.run(_as_server_user([
        os.path.join(bindir, "pg_ctl"), "-D", data, "-l", log, "-w", "-t", "60", "start", "-o",
        f"-p {port} -k {sockets} -h 127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
    ]), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=root)
    try:
        wait_for(lambda: port_open(port), what="PostgreSQL to listen")
        yield f"postgresql://{USER}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_server_user([os.path.join(bindir, "pg_ctl"), "-D", data, "-m", "immediate", "-w",
                                        "stop"]),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=root, check=False)
        shutil.rmtree(root, ignore_errors=True)
