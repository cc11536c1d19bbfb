#!/usr/bin/env bash
# The memory of idle connections: strata against nginx.
#
# For each server and protocol, on a freshly started server: its resident memory at rest; with N
# connections open, each having completed one request and now idle (HTTP/1.1 keep-alive, or
# HTTP/2 with prior knowledge and one completed stream); and SETTLE seconds after they all closed.
# Resident memory is VmRSS from /proc/PID/status, summed over nginx's master and workers (pages
# they share are counted once per process, the same at rest and under load, so the delta holds).
#
# Contenders:
#   strata   `strata serve`, one route to the built-in echo app, no stack
#   nginx    Debian's nginx, `return 200` on one port for HTTP/1.1 and, for h2c, a second port
#            with `listen ... http2` (nginx 1.22 speaks only prior-knowledge HTTP/2 there)
# Both keep idle connections for 10 minutes, longer than the run.
#
# The client is bench/idle_client.py (Python asyncio; the `h2` package for HTTP/2, installed with
# pip when missing).
#
# Usage: bash bench/idle-conns.sh
#   N=10000              connections per measurement
#   CONTENDERS="strata nginx"
#   PROTOCOLS="h1 h2c"
#   HOLD=3               seconds between the last connection opening and the reading of RSS
#   SETTLE=12            seconds between closing them and the reading of RSS
#   SKIP_BUILD=1         use target/release/strata as it is (CARGO_TARGET_DIR is honoured)
#   STRATA_BIN=PATH      measure this strata binary instead (implies nothing about SKIP_BUILD)
set -euo pipefail

N=${N:-10000}
HOLD=${HOLD:-3}
SETTLE=${SETTLE:-12}
read -r -a CONTENDERS <<<"${CONTENDERS:-strata nginx}"
read -r -a PROTOCOLS <<<"${PROTOCOLS:-h1 h2c}"
URL_PATH=/status/200

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
# The binary measured (another build of strata, for a before/after comparison).
STRATA_BIN=${STRATA_BIN:-$TARGET/release/strata}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/strata-idle-conns.XXXXXX")
chmod 755 "$WORK"
# die, free_port, wait_for_port, stop_servers, need, start_server.
source "$ROOT/bench/lib.sh"

declare -a SERVER_PIDS=() ROWS=()
declare -A PIDS_OF=()

cleanup() {
    [[ -n ${COPROC_PID:-} ]] && kill "$COPROC_PID" 2>/dev/null
    stop_servers
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

need nginx nginx
need python3 python3
python3 -c 'import h2' 2>/dev/null || pip install --quiet h2 || die "the h2 Python package is missing: pip install h2"

# Each side of N connections needs N descriptors and then some.
ulimit -n "$(ulimit -Hn)"
(($(ulimit -n) >= N + 100)) || die "open-file limit $(ulimit -n) is too low for N=$N (raise the hard limit)"

if [[ -z ${SKIP_BUILD:-} ]]; then
    echo "building: cargo build --release --bin strata"
    (cd "$ROOT" && cargo build --release --bin strata)
fi

# rss_kib NAME : resident memory of NAME's processes (nginx: master and workers), in KiB.
rss_kib() {
    local pid total=0 pids=${PIDS_OF[$1]}
    if [[ $1 == nginx* ]]; then pids="$pids $(pgrep -P "${PIDS_OF[$1]}" | tr '\n' ' ')"; fi
    for pid in $pids; do
        total=$((total + $(awk '$1 == "VmRSS:" { print $2 }' "/proc/$pid/status")))
    done
    echo "$total"
}

mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

start_strata() {
    PORT=$(free_port)
    cat >"$WORK/strata.toml" <<EOF
[server]
listen = "127.0.0.1:$PORT"
stack = []
keepalive_timeout = "600s"
max_connections = $((N + 1000))

[[route]]
prefix = "/"
stack = []
app = "echo"
EOF
    start_server strata "$PORT" "$STRATA_BIN" serve --config "$WORK/strata.toml"
}

start_nginx() {
    local dir=$WORK/nginx
    PORT=$(free_port)
    H2_PORT=$(free_port)
    nginx_conf "$dir" "
    keepalive_timeout 600s;
    server {
        listen 127.0.0.1:$PORT;
        location / { return 200 'ok'; }
    }
    server {
        listen 127.0.0.1:$H2_PORT http2;
        location / { return 200 'ok'; }
    }" $((N + 1000))
    start_server nginx "$PORT" nginx -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;'
}

# measure SERVER PROTOCOL : one row of the table, on a fresh server.
measure() {
    local server=$1 protocol=$2 port rest idle after line opened failed
    SERVER_PIDS=()
    "start_$server"
    port=$PORT
    [[ $server == nginx && $protocol == h2c ]] && port=$H2_PORT
    sleep 1
    rest=$(rss_kib "$server")
    coproc python3 "$ROOT/bench/idle_client.py" 127.0.0.1 "$port" "$N" "$protocol" "$URL_PATH"
    read -r -t 180 line <&"${COPROC[0]}" || die "$server $protocol: the client did not open its connections"
    read -r _ opened failed <<<"$line"
    sleep "$HOLD"
    idle=$(rss_kib "$server")
    echo close >&"${COPROC[1]}"
    read -r -t 60 line <&"${COPROC[0]}" || die "$server $protocol: the client did not close"
    wait "$COPROC_PID" 2>/dev/null || true
    sleep "$SETTLE"
    after=$(rss_kib "$server")
    ROWS+=("$(printf '%-8s %-5s %7s %9s %9s %10s %10s %11s %7s' "$server" "$protocol" "$opened" \
        "$(mib "$rest")" "$(mib "$idle")" "$(mib $((idle - rest)))" \
        "$(awk -v d=$((idle - rest)) -v n="$opened" 'BEGIN { printf "%.2f", n ? d / n : 0 }')" \
        "$(mib "$after")" "$failed")")
    echo "${ROWS[-1]}"
    stop_servers
}

echo "load average: $(cat /proc/loadavg)"
for server in "${CONTENDERS[@]}"; do
    for protocol in "${PROTOCOLS[@]}"; do
        measure "$server" "$protocol"
    done
done

echo
echo "RSS in MiB (per connection in KiB); N=$N, read $HOLD s after opening and $SETTLE s after closing"
printf '%-8s %-5s %7s %9s %9s %10s %10s %11s %7s\n' server proto open at-rest "N idle" delta "KiB/conn" after-close failed
printf '%s\n' "${ROWS[@]}"
echo "load average: $(cat /proc/loadavg)"
