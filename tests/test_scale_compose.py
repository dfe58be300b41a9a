"""docker-compose.yml checked offline (no Docker engine here): the structure the issue asks for,
and Debian's ``docker-compose config -q`` when it is installed."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from proxy import config as config_mod

yaml = pytest.importorskip("yaml")
ROOT = Path(__file__).resolve().parent.parent
ENV = {"LIBPROXY_SECRET": "s" * 64, "POSTGRES_PASSWORD": "p" * 32, "LDAP_BIND_PASSWORD": "proxy-service-pw",
       "LIBPROXY_REDIS_URL": "redis://redis:6379/0",
       "LIBPROXY_STATS_URL": "postgresql://libproxy:pw@postgres:5432/libproxy"}


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _seconds(text: str) -> float:
    return float(text.rstrip("s"))


def test_the_whole_system_with_health_and_order() -> None:
    services = _compose()["services"]
    assert {"nginx", "libproxy-a", "libproxy-b", "redis", "openldap", "postgres"} <= set(services)
    for name, service in services.items():
        assert service.get("restart") in ("unless-stopped", "always", "on-failure"), name
        assert "healthcheck" in service and service["healthcheck"]["test"][0] == "CMD", name
    for name in ("libproxy-a", "libproxy-b"):
        proxy = services[name]
        # PID 1: no shell in between (the image's exec-form ENTRYPOINT), so SIGTERM reaches it.
        assert "command" not in proxy and "entrypoint" not in proxy, name
        assert proxy["stop_signal"] == "SIGTERM"
        conditions = {dep: spec["condition"] for dep, spec in proxy["depends_on"].items()}
        assert conditions == {"openldap": "service_healthy", "redis": "service_healthy",
                              "postgres": "service_healthy"}
        assert "/readyz" in " ".join(proxy["healthcheck"]["test"])
    assert {d: s["condition"] for d, s in services["nginx"]["depends_on"].items()} == {
        "libproxy-a": "service_healthy", "libproxy-b": "service_healthy"}
    # Published ports on loopback only.
    for service in services.values():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), port


def test_dockerfile_runs_the_proxy_as_pid_1() -> None:
    lines = (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines()
    entry = next(line for line in lines if line.startswith("ENTRYPOINT"))
    assert json.loads(entry.removeprefix("ENTRYPOINT").strip()) == ["libproxy"]
    cmd = json.loads(next(line for line in lines if line.startswith("CMD")).removeprefix("CMD").strip())
    assert cmd[:3] == ["serve", "--config", "/src/config/docker.toml"]
    assert any(line.startswith("USER ") and "root" not in line for line in lines)


def test_compose_and_its_configuration_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    config = config_mod.load(ROOT / "config" / "docker.toml")
    compose = _compose()
    services = compose["services"]
    assert config.sessions.store == "redis" and config.assertion.key_store == "redis"
    assert config.records.database_url is not None
    # Docker waits longer than the proxy lets downloads finish.
    assert _seconds(services["libproxy-a"]["stop_grace_period"]) > config.proxy.shutdown_deadline
    # The proxies trust X-Forwarded-For from nginx's fixed address only, inside the compose subnet.
    nginx = ipaddress.ip_address(services["nginx"]["networks"]["default"]["ipv4_address"])
    subnet = ipaddress.ip_network(compose["networks"]["default"]["ipam"]["config"][0]["subnet"])
    assert config.network.trusted_proxies == (f"{nginx}/32",) and nginx in subnet
    upstream = (ROOT / "config" / "nginx-compose.conf").read_text(encoding="utf-8")
    assert "server libproxy-a:8080" in upstream and "server libproxy-b:8080" in upstream
    assert "access_log off;" in upstream


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed")
def test_docker_compose_config_accepts_it() -> None:
    result = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                            cwd=ROOT, env={**os.environ, **ENV}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
