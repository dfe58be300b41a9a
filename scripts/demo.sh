#!/usr/bin/env bash
# Install the proxy into .venv and start it on its embedded defaults: a demo vendor on
# 127.0.0.1:8081, a local patrons file with one demo card, in-memory sessions.
# Open the URL it prints; *.localhost names resolve to this computer in every modern browser.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q .
exec .venv/bin/libproxy demo "$@"
