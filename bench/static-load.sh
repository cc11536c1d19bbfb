#!/usr/bin/env bash
# Static files: strata's `static` route against nginx serving the same directory.
#
# Contenders (each its own process on its own loopback port, the same files):
#   strata   `strata serve` (release build), `[[route]] prefix = "/" static = "<dir>"`, empty stack
#   nginx    Debian's nginx, `root <dir>;`, sendfile on, etag on (its defaults), access log off
# Files: `4k.bin` (4 KiB) and `1m.bin` (1 MiB), random bytes, one directory.
#
# For each file, the contenders take turns (strata nginx, then nginx strata, ...), each round
# preceded by a warm-up, wrk at fixed connections for a bounded duration. Printed: req/s and p99
# per round, the medians, the ratio strata / nginx per file, and the CPU time each contender's
# processes spent per request (from /proc/PID/stat), which moves less than req/s on a shared machine.
#
# nginx sends files with sendfile(2) (no copy through user space); strata reads them in 128 KiB
# chunks on tokio's blocking pool. The 1 MiB figures price that difference.
#
# Usage: bash bench/static-load.sh
#   DURATION=8      seconds measured per round
#   ROUNDS=2        rounds per contender and file
#   CONNECTIONS=32  concurrent keep-alive connections
#   THREADS=1       wrk threads (the client shares the machine's cores with the servers)
#   WARMUP=2        seconds of unmeasured load before each round
#   SKIP_BUILD=1    use the release strata as it is
#   CSV=FILE        every measured round is appended to FILE as contender NAME/FILE (default
#                   target/bench/static-load.csv; bench/plot.py draws it)
set -euo pipefail

DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-2}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-1}
WARMUP=${WARMUP:-2}
CONTENDERS=(strata nginx)
FILES=(4k.bin 1m.bin)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/strata-static-load.XXXXXX")
# nginx's workers drop root privileges: they must be able to read the files.
chmod 755 "$WORK"
# die, free_port, wait_for_port, stop_servers, to_ms, median, need, start_server, cpu_ticks, csv_row.
source "$ROOT/bench/lib.sh"

declare -a SERVER_PIDS=()
declare -A PORT=() RPS=() P99=() CPU_US=() PIDS_OF=()
CLK_TCK=$(getconf CLK_TCK)

cleanup() {
    stop_servers
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# load URL SECONDS : runs wrk; prints "req/s p99_ms requests".
load() {
    local out=$WORK/wrk.out
    wrk -t "$THREADS" -c "$CONNECTIONS" -d "${2}s" --timeout 10s --latency "$1" >"$out" 2>&1 || { cat "$out" >&2; die "wrk failed"; }
    if grep -qE 'Non-2xx|Socket errors' "$out"; then
        echo "warning: $1: $(grep -E 'Non-2xx|Socket errors' "$out" | tr -s ' ' | paste -sd';')" >&2
    fi
    local rps p99 requests
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    p99=$(awk '$1 == "99%" { print $2 }' "$out" | sed -E 's/^([0-9.]+)([a-z]+)$/\1 \2/')
    requests=$(awk '$2 == "requests" && $3 == "in" { print $1 }' "$out")
    # $p99 is "VALUE UNIT": two arguments to to_ms.
    # shellcheck disable=SC2086
    echo "${rps:-0} $(if [[ -n $p99 ]]; then to_ms $p99; else echo -; fi) ${requests:-0}"
}

# check NAME FILE : one GET must answer 200 with the file's exact bytes.
check() {
    local name=$1 file=$2 got
    got=$(curl -s "http://127.0.0.1:${PORT[$name]}/$file" | sha256sum | cut -d' ' -f1)
    [[ $got == $(sha256sum "$WORK/files/$file" | cut -d' ' -f1) ]] || die "$name: /$file is not the file"
}

start_strata() {
    local port
    port=$(free_port)
    cat >"$WORK/strata.toml" <<CONFIG
[server]
listen = "127.0.0.1:$port"
stack = []

[[route]]
prefix = "/"
static = "$WORK/files"
CONFIG
    start_server strata "$port" "$TARGET/release/strata" serve --config "$WORK/strata.toml"
    PORT[strata]=$port
}

start_nginx() {
    local dir=$WORK/nginx port
    port=$(free_port)
    nginx_conf "$dir" "
    sendfile on;
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$port;
        root $WORK/files;
    }"
    start_server nginx "$port" nginx -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;'
    PORT[nginx]=$port
}

run_contender() {
    local name=$1 file=$2 round=$3 url result rps p99 requests before after cpu key
    url="http://127.0.0.1:${PORT[$name]}/$file"
    key="$name $file"
    load "$url" "$WARMUP" >/dev/null
    before=$(cpu_ticks "$name")
    result=$(load "$url" "$DURATION")
    after=$(cpu_ticks "$name")
    read -r rps p99 requests <<<"$result"
    cpu=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v n="$requests" 'BEGIN { printf "%.1f", (n > 0) ? t * 1e6 / hz / n : 0 }')
    RPS[$key]+="$rps "
    P99[$key]+="$p99 "
    CPU_US[$key]+="$cpu "
    csv_row "$name/$file" "$round" "$DURATION" "$CONNECTIONS" "$rps" "$p99" "$cpu"
    printf '  round %d  %-7s %-7s %12.0f req/s   p99 %8s ms   %7s µs CPU/request\n' "$round" "$name" "$file" "$rps" "$p99" "$cpu"
}

# --- main ----------------------------------------------------------------------------------------

cd "$ROOT"
need wrk wrk
need nginx nginx
need curl curl
if [[ -z ${SKIP_BUILD:-} ]]; then
    echo "building: cargo build --release --bin strata"
    cargo build --release --bin strata
fi
mkdir -p "$WORK/files"
head -c 4096 /dev/urandom >"$WORK/files/4k.bin"
head -c 1048576 /dev/urandom >"$WORK/files/1m.bin"
chmod -R a+rX "$WORK/files"
start_strata
start_nginx
for name in "${CONTENDERS[@]}"; do
    for file in "${FILES[@]}"; do check "$name" "$file"; done
done

echo
echo "load: wrk, $CONNECTIONS connections, $THREADS client thread(s), ${WARMUP}s warm-up + ${DURATION}s per round," \
    "$ROUNDS round(s) per file, GET of a 4 KiB and a 1 MiB file, loopback"
echo "load average (1, 5, 15 min) at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
for file in "${FILES[@]}"; do
    for round in $(seq "$ROUNDS"); do
        order=("${CONTENDERS[@]}")
        if ((round % 2 == 0)); then order=("${CONTENDERS[1]}" "${CONTENDERS[0]}"); fi
        for name in "${order[@]}"; do run_contender "$name" "$file" "$round"; done
    done
done

declare -A MEDIAN=() MEDIAN_CPU=()
echo
printf '%-7s %-7s %14s %14s %22s\n' server file "median req/s" "median p99 ms" "median µs CPU/request"
for file in "${FILES[@]}"; do
    for name in "${CONTENDERS[@]}"; do
        key="$name $file"
        MEDIAN[$key]=$(tr ' ' '\n' <<<"${RPS[$key]}" | grep . | median)
        MEDIAN_CPU[$key]=$(tr ' ' '\n' <<<"${CPU_US[$key]}" | grep . | median)
        p99=$(tr ' ' '\n' <<<"${P99[$key]}" | grep -E '^[0-9.]+$' | median)
        printf '%-7s %-7s %14.0f %14s %22s\n' "$name" "$file" "${MEDIAN[$key]}" "$p99" "${MEDIAN_CPU[$key]}"
    done
done
echo
echo "ratios (strata / nginx): req/s (higher is better for strata), CPU per request (lower is better)"
for file in "${FILES[@]}"; do
    awk -v a="${MEDIAN[strata $file]}" -v b="${MEDIAN[nginx $file]}" -v c="${MEDIAN_CPU[strata $file]}" \
        -v d="${MEDIAN_CPU[nginx $file]}" -v f="$file" 'BEGIN {
        printf "  %-7s req/s %6.3f   CPU/request %6.3f\n", f, (b > 0) ? a / b : 0, (d > 0) ? c / d : 0
    }'
done
