"""A real OpenLDAP ``slapd`` for tests and benchmarks, on a free loopback port in a temp dir.

    with Slapd(tmp_path) as directory:          # config/bibliomation.ldif, slapadd'ed
        directory.url                           # "ldap://127.0.0.1:PORT"
        directory.pause() / directory.resume()  # SIGSTOP / SIGCONT: a hung directory
        directory.stop() / directory.start()    # a dead one, and back (same port, same data)

    tls = make_tls_files(tmp_path)              # a test CA and a server certificate
    Slapd(tmp_path, tls=tls)                    # StartTLS on url, TLS from the start on ldaps_url

The system slapd and its configuration are never touched: each instance has its own slapd.conf,
database directory and pid file, and listens on 127.0.0.1 only. The sample tree gets
``memberOf`` from the dynlist overlay; anonymous users may read everything but passwords and
personal attributes, may bind, and (as many servers allow) an unauthenticated simple bind with a
DN and an empty password succeeds as anonymous, which is what the empty-PIN test relies on.
Personal attributes (names, mail, addresses) are readable by their owner and by the proxy's
service account only: as on many real directories, the account *could* read them, so a test
can show that the proxy does not ask.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from tests.ports import free_port

REPO = Path(__file__).resolve().parents[1]
SAMPLE_LDIF = REPO / "config" / "bibliomation.ldif"
SUFFIX = "dc=bibliomation,dc=org"
PATRONS = f"ou=patrons,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"
ADMIN_DN = f"cn=admin,{SUFFIX}"
ADMIN_PASSWORD = "admin-test-only"
SERVICE_DN = f"cn=proxy,ou=services,{SUFFIX}"
SERVICE_PASSWORD = "proxy-service-pw"
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIRS = (Path("/usr/lib/ldap"), Path("/usr/lib64/openldap"), Path("/usr/lib/openldap"))


def _tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/usr/local/sbin", "/usr/local/libexec", "/usr/libexec"):
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


SLAPD = _tool("slapd")
SLAPADD = _tool("slapadd")
LDAPWHOAMI = _tool("ldapwhoami")


def missing_reason() -> str | None:
    """Why a real slapd cannot be started here (None when it can)."""
    if SLAPD is None or SLAPADD is None:
        return "OpenLDAP slapd is not installed (Debian: apt-get install slapd ldap-utils)"
    if not (SCHEMA_DIR / "inetorgperson.schema").is_file():
        return f"OpenLDAP schema files are not in {SCHEMA_DIR}"
    return None


# ----------------------------------------------------------------------------------------------
# Test certificates


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # the CA certificate a client must trust
    cert: Path  # the server certificate (signed by ca)
    key: Path  # the server key


def make_tls_files(directory: Path, *, names: tuple[str, ...] = ("127.0.0.1", "localhost"),
                   label: str = "server") -> TlsFiles:
    """A fresh test CA and a server certificate for ``names`` (IP addresses or DNS names)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"libproxy test CA ({label})")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = []
    for name in names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(directory / f"{label}-ca.pem", directory / f"{label}-cert.pem", directory / f"{label}-key.pem")
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(files.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    return files


# ----------------------------------------------------------------------------------------------
# slapd


_ACCESS = f"""
access to attrs=userPassword
    by self =w
    by anonymous auth
    by * none
access to dn.subtree="{PATRONS}"
        attrs=cn,sn,givenName,displayName,mail,telephoneNumber,postalAddress,homePostalAddress,street
    by self read
    by dn.exact="{SERVICE_DN}" read
    by * none
access to *
    by * read
"""


def _module_dir() -> Path | None:
    for folder in MODULE_DIRS:
        if (folder / "back_mdb.la").exists() or (folder / "back_mdb.so").exists():
            return folder
    return None


class Slapd:
    """One slapd process with its own configuration and database under ``workdir``."""

    def __init__(self, workdir: Path, *, tls: TlsFiles | None = None, ldif: Path = SAMPLE_LDIF) -> None:
        reason = missing_reason()
        if reason:
            raise RuntimeError(reason)
        self.workdir = workdir
        self.tls = tls
        self.ldif = ldif
        self.port = free_port()
        self.ldaps_port = free_port() if tls else None
        self.process: subprocess.Popen[bytes] | None = None
        self._loaded = False
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        assert self.ldaps_port is not None, "ldaps:// needs Slapd(..., tls=...)"
        return f"ldaps://127.0.0.1:{self.ldaps_port}"

    def _config(self) -> Path:
        lines = [f"include {SCHEMA_DIR / name}.schema"
                 for name in ("core", "cosine", "inetorgperson", "nis", "dyngroup")]
        module_dir = _module_dir()
        if module_dir is not None:  # Debian builds backends and overlays as modules
            lines += [f"modulepath {module_dir}", "moduleload back_mdb", "moduleload dynlist"]
        lines += [
            f"pidfile {self.workdir / 'slapd.pid'}",
            f"argsfile {self.workdir / 'slapd.args'}",
            # An unauthenticated bind (a DN with an empty password) succeeds as anonymous here,
            # as on many real servers: the proxy must never send one.
            "allow bind_anon_dn",
        ]
        if self.tls:
            lines += [
                f"TLSCACertificateFile {self.tls.ca}",
                f"TLSCertificateFile {self.tls.cert}",
                f"TLSCertificateKeyFile {self.tls.key}",
            ]
        lines += [
            "database mdb",
            "maxsize 16777216",
            f'suffix "{SUFFIX}"',
            f'rootdn "{ADMIN_DN}"',
            f"rootpw {ADMIN_PASSWORD}",
            f"directory {self.workdir / 'data'}",
            _ACCESS,
            "overlay dynlist",
            # memberOf on patron entries, computed from the static groups at search time.
            "dynlist-attrset groupOfURLs memberURL member+memberOf@groupOfNames",
        ]
        path = self.workdir / "slapd.conf"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    def _load(self, config: Path) -> None:
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        assert SLAPADD is not None
        done = subprocess.run([SLAPADD, "-f", str(config), "-l", str(self.ldif)],
                              capture_output=True, timeout=30, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"slapadd failed: {done.stderr.decode(errors='replace')[-2000:]}")
        self._loaded = True

    def start(self, timeout: float = 10.0) -> Slapd:
        """Start slapd (loading the LDIF the first time) and wait until it accepts connections."""
        config = self._config()
        if not self._loaded:
            self._load(config)
        urls = [f"ldap://127.0.0.1:{self.port}/"]
        if self.ldaps_port:
            urls.append(f"ldaps://127.0.0.1:{self.ldaps_port}/")
        log = open(self.workdir / "slapd.log", "ab")  # handed to the process, closed below
        assert SLAPD is not None
        # -d 0: stay in the foreground (we own the process, its pid, its signals), log nothing.
        self.process = subprocess.Popen(
            [SLAPD, "-f", str(config), "-h", " ".join(urls), "-d", "0"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"slapd exited with {self.process.returncode}: {self.log_tail()}")
            if all(self._accepts(port) for port in (self.port, self.ldaps_port) if port):
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"slapd did not start within {timeout}s: {self.log_tail()}")

    @staticmethod
    def _accepts(port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    def log_tail(self) -> str:
        try:
            return (self.workdir / "slapd.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def pause(self) -> None:
        """Freeze slapd (SIGSTOP): connections are still accepted by the kernel, nothing answers."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        """Stop slapd and wait for it; the data stays, so ``start()`` brings the same tree back."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGCONT)  # a paused slapd cannot act on SIGTERM
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def __enter__(self) -> Slapd:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def whoami(url: str, dn: str, password: str, *, ca_file: Path | None = None) -> str:
    """``ldapwhoami -x`` as ``dn``: the identity the server granted ("anonymous", "dn:...")."""
    assert LDAPWHOAMI is not None, "ldapwhoami is not installed (ldap-utils)"
    env = dict(os.environ, LDAPTLS_CACERT=str(ca_file)) if ca_file else None
    done = subprocess.run([LDAPWHOAMI, "-x", "-H", url, "-D", dn, "-w", password],
                          capture_output=True, timeout=10, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"ldapwhoami failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout.decode().strip()
