#!/usr/bin/env bash
# The whole test run, from a fresh clone on a fresh Debian machine: system packages, a virtual
# environment with the project and its test tools, then ruff, mypy --strict and pytest.
# Usage: bash scripts/test.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v slapd >/dev/null 2>&1 || [ -x /usr/sbin/slapd ] || need_pkgs+=(slapd)
command -v ldapwhoami >/dev/null 2>&1 || need_pkgs+=(ldap-utils)
command -v redis-server >/dev/null 2>&1 || need_pkgs+=(redis-server)
command -v chromium >/dev/null 2>&1 || need_pkgs+=(chromium)
command -v npm >/dev/null 2>&1 || need_pkgs+=(npm)  # fetches axe-core for tests/test_accessibility.py
command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_pkgs+=(postgresql)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "== installing system packages: ${need_pkgs[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  # slapd's maintainer script would otherwise ask for an admin password; the tests start their
  # own slapd on a free loopback port and never use the system one.
  echo "slapd slapd/no_configuration boolean true" | $SUDO debconf-set-selections 2>/dev/null || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${need_pkgs[@]}"
fi
# The Debian packages start nothing here; make sure no system slapd/redis holds a port we need.
export PATH="$PATH:/usr/sbin"

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PY" -m venv .venv
fi
echo "== installing the project and test tools"
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'

echo "== ruff"
.venv/bin/ruff check proxy tests bench
echo "== mypy --strict proxy"
.venv/bin/mypy --strict proxy
echo "== pytest"
# The compiled rewriting loop (proxy/rewrite/_hostscan.c) must have been built here: the
# measured speed depends on it, and tests/test_rewrite_accel.py compares it with pure Python.
export LIBPROXY_REQUIRE_ACCEL=1
set +e
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests" >&2
  exit 1
fi
if [ "$status" -ne 0 ] || [ $# -gt 0 ]; then
  exit "$status"
fi
# The pure-Python loop is what runs where no C compiler was at hand: the rewriting suite again.
echo "== pytest, rewriting in pure Python (LIBPROXY_PURE_PYTHON=1)"
LIBPROXY_PURE_PYTHON=1 .venv/bin/python -m pytest -q -p no:cacheprovider \
  tests/test_rewrite_hosts.py tests/test_rewrite_body.py tests/test_rewrite_headers.py \
  tests/test_rewrite_through_proxy.py
echo "== the compiled loop under AddressSanitizer and UBSan"
bash scripts/sanitize.sh
