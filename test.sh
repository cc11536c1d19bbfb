#!/usr/bin/env bash
# Runs every test of the workspace, after installing the real components the tests use when they are
# missing: Chromium (the browser CORS and TLS tests), curl and openssl (TLS clients), redis-server
# (shared rate limits), gunicorn (the Python upstream behind the proxy, also over TLS), python3 (its
# http.server is an upstream that normalises paths).
# Ends with one total line over every test binary: `tests: N passed, M failed`.
#
#   bash test.sh                 # everything
#   bash test.sh -p strata-http       # extra arguments go to `cargo test`
set -euo pipefail
cd "$(dirname "$0")"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=""
need_apt() { # need_apt COMMAND PACKAGE: install PACKAGE when COMMAND is missing
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "== installing $2 (for $1)"
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}

# The gateway's allocator (jemalloc) is built from C sources with `make`.
need_apt make make
# `kill` sends signals to the servers the tests start.
need_apt kill procps
need_apt chromium chromium
need_apt python3 python3
need_apt redis-server redis-server
# The TLS tests drive strata with curl (HTTP/1.1 and HTTP/2 over TLS) and `openssl s_client` (SNI).
need_apt curl curl
need_apt openssl openssl
if ! command -v gunicorn >/dev/null; then
  echo "== installing gunicorn"
  python3 -m pip --version >/dev/null 2>&1 || need_apt pip3 python3-pip
  # Debian's Python refuses system-wide pip installs unless told it may (PEP 668).
  python3 -m pip install -q gunicorn || python3 -m pip install -q --break-system-packages gunicorn
  # Under pyenv a new script is on PATH only once its shim exists.
  if command -v pyenv >/dev/null; then pyenv rehash; fi
  command -v gunicorn >/dev/null || { echo "gunicorn was installed but is not on PATH" >&2; exit 1; }
fi

# The jwt tests mint their tokens with PyJWT (RS256 and ES256 need `cryptography`).
if ! python3 -c "import jwt, cryptography" 2>/dev/null; then
  echo "== installing pyjwt and cryptography"
  python3 -m pip --version >/dev/null 2>&1 || need_apt pip3 python3-pip
  python3 -m pip install -q pyjwt cryptography || python3 -m pip install -q --break-system-packages pyjwt cryptography
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
# --no-fail-fast: one failing test binary must not hide the results of the others.
cargo test --workspace --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
# The benchmark plots' script (bench/plot.py, Python's standard library only) has tests of its own;
# they run with the whole suite, and their counts join the total in cargo's summary form.
if [ "$#" = 0 ]; then
  plot_log=$(mktemp)
  python3 -m unittest discover -s bench -p 'test_plot.py' >"$plot_log" 2>&1 || status=1
  cat "$plot_log"
  ran=$(sed -n 's/^Ran \([0-9]*\) tests\{0,1\} in .*/\1/p' "$plot_log")
  # (grep finds nothing when all pass: `|| true` keeps `set -e` and pipefail from ending the script.)
  bad=$({ grep -o -E '(failures|errors)=[0-9]+' "$plot_log" || true; } | awk -F= '{ n += $2 } END { print n + 0 }')
  echo "test result: bench/test_plot.py. $((${ran:-0} - bad)) passed; $bad failed" >>"$log"
  rm -f "$plot_log"
fi
# One total over every test binary and the doctests (cargo prints one summary per binary).
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' "$log"
exit "$status"
