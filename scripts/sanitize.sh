#!/usr/bin/env bash
# The compiled rewriting loop (proxy/rewrite/_hostscan.c) under AddressSanitizer and
# UndefinedBehaviorSanitizer: builds it with both into a scratch copy of the package and runs the
# rewriting tests against that build. Any out-of-bounds access, use after free or undefined
# behaviour aborts the run. Needs .venv (scripts/test.sh makes it) and gcc with libasan.
# Usage: bash scripts/sanitize.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
py="$root/.venv/bin/python"
asan=$(gcc -print-file-name=libasan.so)
if [ ! -e "$asan" ]; then
  echo "sanitize: gcc has no libasan here; skipped" >&2
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r proxy tests pyproject.toml "$work"/
rm -f "$work"/proxy/rewrite/_hostscan*.so
suffix=$("$py" -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
include=$("$py" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
gcc -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer \
  -shared -fPIC -I"$include" proxy/rewrite/_hostscan.c -o "$work/proxy/rewrite/_hostscan$suffix"
cd "$work"
# PYTHONMALLOC=malloc lets ASan see every allocation; leaks are CPython's own at exit, not ours.
export LD_PRELOAD="$asan" ASAN_OPTIONS=detect_leaks=0 PYTHONMALLOC=malloc LIBPROXY_REQUIRE_ACCEL=1 PYTHONPATH="$work"
# The sanitized build in the scratch copy must be what is imported, not the installed checkout.
"$py" -c "import sys, proxy.rewrite._hostscan as m; print('sanitize: testing', m.__file__)
sys.exit(not m.__file__.startswith('$work'))"
# -s: without it pytest would swallow a sanitizer's report.
"$py" -m pytest -q -s -p no:cacheprovider \
  tests/test_rewrite_accel.py tests/test_rewrite_accel_contract.py tests/test_rewrite_hosts.py \
  tests/test_rewrite_body.py
