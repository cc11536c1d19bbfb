#!/usr/bin/env bash
# Load comparison: the strata gateway against other servers answering the same requests.
#
# Every contender serves the built-in `echo` app's `/status/200` on its own loopback port, and every
# request carries the same `Authorization: Basic` (alice / wonderland) and allowed `Origin` headers,
# so the classic stacks' CORS and auth layers do real work and all contenders parse the same bytes.
# Contenders take turns (A B, then B A, ...), each run preceded by a short warm-up, so that noise
# from the shared machine lands on all of them alike. The script prints req/s and p99 latency per
# round, the median per contender, each contender's ratio to the baseline (bare hyper), and the
# ratios with a target (strata-empty/bare, strata-classic/bare, strata-classic/axum-classic).
#
# Contenders:
#   strata-empty    the gateway, empty stack, over the echo app
#   bare-hyper      hyper + hyper-util serving the same echo endpoint (crates/strata-gateway/examples)
#   strata-classic  the gateway with examples/classic.toml's stack (timing, request_id, JSON
#                   access_log to a file, cors, basic_auth with an argon2id hash) over the echo app
#   axum-classic    axum + tower-http with the equivalent stack (bench/axum-classic/, built outside
#                   the workspace), with a cache of verified credentials as strata has
#   axum-classic-nocache  the same without the cache: argon2 verified on every request, as typical
#                   axum code does
# and, not run by default, pieces of strata-classic: strata-classic-nolog (without the access log),
# strata-log (the access log alone), strata-classic-metrics (strata-classic with an [admin] listener,
# so that metrics are kept); and the rate limiter: strata-ratelimit-memory and
# strata-ratelimit-redis (a rate_limit layer keyed on the client address, limits high enough to
# admit everything, memory store or a redis-server the script starts on a free loopback port), to
# compare with strata-empty (no limiter):
#   CONTENDERS="strata-empty strata-ratelimit-memory strata-ratelimit-redis" bash bench/load.sh
#
# Usage: bash bench/load.sh
#   DURATION=8      seconds measured per round
#   ROUNDS=2        rounds per contender
#   CONNECTIONS=32  concurrent keep-alive connections
#   THREADS=1       load-generator threads (the client shares the machine's cores with the server)
#   WARMUP=2        seconds of unmeasured load before each round
#   CONTENDERS="strata-empty bare-hyper strata-classic axum-classic axum-classic-nocache"   which to run
#   SKIP_BUILD=1    use the binaries already built (target/release, bench/hyper-peers/target/release,
#                   bench/axum-classic/target/release)
#   CSV=FILE        every measured round is appended to FILE, with the CPU time the contender's
#                   process spent per request (default target/bench/load.csv; bench/plot.py draws it)
#
# Adding a contender: write a `contender_NAME` function (dashes in NAME become underscores) that
# starts the server with `start_contender NAME PORT COMMAND...`, then add NAME to CONTENDERS below.
# The servers are stopped on exit, whatever the outcome.
set -euo pipefail

DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-2}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-1}
WARMUP=${WARMUP:-2}
URL_PATH=/status/200
# The contender every ratio is taken against.
BASELINE=bare-hyper
read -r -a CONTENDERS <<<"${CONTENDERS:-strata-empty bare-hyper strata-classic axum-classic axum-classic-nocache}"
# The classic stacks' user, and a request header set every contender gets: credentials for
# basic_auth and an origin cors allows (examples/classic.toml's). Same bytes for everyone, so a ratio
# prices what a server does with them, not how many bytes it parsed.
AUTH_USER=alice
AUTH_PASSWORD=wonderland
REQUEST_HEADERS=(
    "Authorization: Basic $(printf '%s:%s' "$AUTH_USER" "$AUTH_PASSWORD" | base64)"
    "Origin: http://localhost:5173"
)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
# The axum contender is its own cargo project with its own target directory, whatever
# CARGO_TARGET_DIR says, so its binary is always found at the same place.
AXUM_DIR=$ROOT/bench/axum-classic
AXUM_TARGET=$AXUM_DIR/target
# bare-hyper is its own crate, outside the workspace, with its own target directory.
PEERS_DIR=$ROOT/bench/hyper-peers
PEERS_TARGET=$PEERS_DIR/target
WORK=$(mktemp -d "${TMPDIR:-/tmp}/strata-load.XXXXXX")
# die, free_port, wait_for_port, stop_servers, to_ms, median, classic_config, cpu_ticks, csv_row.
source "$ROOT/bench/lib.sh"

declare -a SERVER_PIDS=()
declare -A URL=()     # contender -> URL under load
declare -A RPS=()     # contender -> space-separated req/s, one per round
declare -A P99=()     # contender -> space-separated p99 in ms, one per round
declare -A SENT=()    # contender -> requests completed in all its runs, warm-ups included
declare -A ACCESS_LOG=()  # contender -> its access log file, for the lines-vs-requests check
declare -A PIDS_OF=()  # contender -> its pid, for the CPU time it spends (cpu_ticks)
ALICE_HASH=""         # the argon2id hash of AUTH_PASSWORD, made once by `strata hash-password`
CLK_TCK=$(getconf CLK_TCK)

cleanup() {
    stop_servers
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- helpers -------------------------------------------------------------------------------------

# start_contender NAME PORT COMMAND... : lib.sh's start_server (COMMAND in the background, its log in
# $WORK/NAME.log, waits until PORT accepts connections), then checks that the load URL answers 200.
start_contender() {
    local name=$1 port=$2 status
    start_server "$@"
    status=$(http_status "$port" "$URL_PATH")
    [[ $status == 200 ]] || die "$name answered GET $URL_PATH with '$status' instead of 200"
    URL[$name]="http://127.0.0.1:$port$URL_PATH"
    echo "$name answers 200 on ${URL[$name]}"
}

# http_status PORT PATH : the status code of one GET carrying REQUEST_HEADERS, with bash's
# /dev/tcp so that no HTTP client needs to be installed.
http_status() {
    local line header
    exec 3<>"/dev/tcp/127.0.0.1/$1"
    {
        printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n' "$2"
        for header in "${REQUEST_HEADERS[@]}"; do printf '%s\r\n' "$header"; done
        printf '\r\n'
    } >&3
    read -r -t 5 line <&3 || true
    exec 3<&-
    line=${line%$'\r'}
    echo "${line#* }" | cut -d' ' -f1
}

# --- load tool -----------------------------------------------------------------------------------

# oha if installed, else wrk; wrk is installed from Debian when neither is present and we are root
# (oha would need a several-minute `cargo install oha --locked`).
pick_tool() {
    if command -v oha >/dev/null; then
        TOOL=oha
    elif command -v wrk >/dev/null; then
        TOOL=wrk
    elif [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        echo "installing wrk (apt-get install -y wrk)"
        apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
        TOOL=wrk
    else
        die "no load tool: install wrk (apt-get install wrk) or oha (cargo install oha --locked)"
    fi
}

# load URL SECONDS : runs the load tool and prints "REQ_PER_SEC P99_MS REQUESTS" (P99 "-" if
# unknown), REQUESTS being the number of responses received. Non-2xx answers or socket errors mean
# the numbers are not comparable: warned about on stderr.
load() {
    local url=$1 seconds=$2 out=$WORK/load.out header
    local -a header_args=()
    for header in "${REQUEST_HEADERS[@]}"; do header_args+=(-H "$header"); done
    case $TOOL in
        wrk)
            # A 10 s timeout rather than wrk's 2 s: a contender that verifies a password hash per
            # request answers slowly under 32 connections, and its slow answers must count as
            # answers, not vanish as timeouts.
            wrk -t "$THREADS" -c "$CONNECTIONS" -d "${seconds}s" --timeout 10s --latency "${header_args[@]}" "$url" \
                >"$out" 2>&1 || {
                cat "$out" >&2
                die "wrk failed against $url"
            }
            if grep -qE 'Non-2xx|Socket errors' "$out"; then
                echo "warning: $url: $(grep -E 'Non-2xx|Socket errors' "$out" | tr -s ' ' | paste -sd';')" >&2
            fi
            local rps p99 requests
            rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
            # wrk prints e.g. "     99%    1.23ms"; split the number from its unit.
            p99=$(awk '$1 == "99%" { print $2 }' "$out" | sed -E 's/^([0-9.]+)([a-zµ]+)$/\1 \2/')
            requests=$(awk '$2 == "requests" && $3 == "in" { print $1 }' "$out")
            # $p99 is "VALUE UNIT": two arguments to to_ms.
            # shellcheck disable=SC2086
            echo "${rps:-0} $(if [[ -n $p99 ]]; then to_ms $p99; else echo -; fi) ${requests:-0}"
            ;;
        oha)
            # oha has no thread option; it uses a small tokio runtime of its own.
            oha --no-tui -z "${seconds}s" -c "$CONNECTIONS" "${header_args[@]}" "$url" 2>&1 |
                sed -E 's/\x1b\[[0-9;]*m//g' >"$out" || {
                cat "$out" >&2
                die "oha failed against $url"
            }
            local rps p99 requests
            rps=$(awk -F'\t' '/Requests\/sec:/ { gsub(/ /, "", $2); print $2 }' "$out")
            p99=$(awk '$1 == "99.00%" && $2 == "in" { print $3, $4 }' "$out" | head -n1)
            # The status code distribution: "  [200] 12345 responses".
            requests=$(awk '$1 ~ /^\[[0-9]+\]$/ && $3 == "responses" { n += $2 } END { print n + 0 }' "$out")
            # $p99 is "VALUE UNIT": two arguments to to_ms.
            # shellcheck disable=SC2086
            echo "${rps:-0} $(if [[ -n $p99 ]]; then to_ms $p99; else echo -; fi) ${requests:-0}"
            ;;
    esac
}

# --- contenders ----------------------------------------------------------------------------------

# The gateway with an empty stack: what strata costs before any middleware (router, the onion's
# panic boundaries, connection info) over the same app as bare-hyper.
contender_strata_empty() {
    local port config=$WORK/strata-empty.toml
    port=$(free_port)
    printf '[server]\nlisten = "127.0.0.1:%s"\nstack = []\n\n[[route]]\nprefix = "/"\nstack = []\napp = "echo"\n' \
        "$port" >"$config"
    start_contender strata-empty "$port" "$TARGET/release/strata" serve --config "$config"
}

# hyper + hyper-util serving the same echo endpoint with the same connection settings: the floor.
contender_bare_hyper() {
    local port
    port=$(free_port)
    start_contender bare-hyper "$port" "$PEERS_TARGET/release/bare_hyper" "127.0.0.1:$port"
}

# alice_hash : sets ALICE_HASH to an argon2id hash of AUTH_PASSWORD, made once by the gateway's own
# `strata hash-password` at its full default cost (the cost a real config would carry).
alice_hash() {
    if [[ -z $ALICE_HASH ]]; then
        ALICE_HASH=$(printf '%s\n' "$AUTH_PASSWORD" | "$TARGET/release/strata" hash-password)
        # shellcheck disable=SC2016 # a literal prefix
        [[ $ALICE_HASH == '$argon2id$'* ]] || die "strata hash-password printed '$ALICE_HASH'"
    fi
}

# start_strata_stack NAME STACK : the gateway over the echo app with the server stack STACK (a TOML
# array body such as '"timing", "log"'), every middleware of examples/classic.toml defined, the
# access log (when used) writing JSON to a file in $WORK.
start_strata_stack() {
    local name=$1 stack=$2 port config=$WORK/$1.toml log=$WORK/$1-access.log
    port=$(free_port)
    alice_hash
    classic_config "$port" "$stack" "$log" "$AUTH_USER" "$ALICE_HASH" >"$config"
    if [[ $stack == *'"log"'* ]]; then ACCESS_LOG[$name]=$log; fi
    start_contender "$name" "$port" "$TARGET/release/strata" serve --config "$config"
}

# The gateway with the classic stack of examples/classic.toml (timing → request_id → access_log →
# cors → basic_auth), over the echo app instead of tasks so that it serves the same handler as the
# others. The access log is JSON in a file, as a production server would keep it.
contender_strata_classic() {
    start_strata_stack strata-classic '"timing", "request_id", "log", "cors", "auth"'
}

# Not in the default list; they say where strata-classic's time goes (docs/benchmarks.md).
# The classic stack without its access log:
contender_strata_classic_nolog() {
    start_strata_stack strata-classic-nolog '"timing", "request_id", "cors", "auth"'
}

# The classic stack with metrics on: an `[admin]` listener (on another free port) makes the gateway
# count every request per route and layer. Compare with strata-classic (metrics off):
#   CONTENDERS="strata-classic strata-classic-metrics" bash bench/load.sh
contender_strata_classic_metrics() {
    local port config=$WORK/strata-classic-metrics.toml log=$WORK/strata-classic-metrics-access.log
    port=$(free_port)
    alice_hash
    classic_config "$port" '"timing", "request_id", "log", "cors", "auth"' "$log" "$AUTH_USER" "$ALICE_HASH" >"$config"
    printf '\n[admin]\nlisten = "127.0.0.1:%s"\n' "$(free_port)" >>"$config"
    ACCESS_LOG[strata-classic-metrics]=$log
    start_contender strata-classic-metrics "$port" "$TARGET/release/strata" serve --config "$config"
}

# The same with every request traced (sample_ratio 1) to a local OTLP/HTTP sink that reads each
# export and answers 200 (a Python stand-in for a collector, on its own free port):
#   CONTENDERS="strata-classic-metrics strata-classic-traced" bash bench/load.sh
contender_strata_classic_traced() {
    local port sink config=$WORK/strata-classic-traced.toml log=$WORK/strata-classic-traced-access.log
    port=$(free_port)
    sink=$(free_port)
    python3 -c '
import http.server, sys
class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *args): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
' "$sink" >"$WORK/otlp-sink.log" 2>&1 &
    SERVER_PIDS+=("$!")
    alice_hash
    classic_config "$port" '"timing", "request_id", "log", "cors", "auth"' "$log" "$AUTH_USER" "$ALICE_HASH" >"$config"
    printf '\n[admin]\nlisten = "127.0.0.1:%s"\n\n[tracing]\notlp_endpoint = "http://127.0.0.1:%s"\nsample_ratio = 1.0\n' \
        "$(free_port)" "$sink" >>"$config"
    ACCESS_LOG[strata-classic-traced]=$log
    start_contender strata-classic-traced "$port" "$TARGET/release/strata" serve --config "$config"
}

# The access log alone:
contender_strata_log() {
    start_strata_stack strata-log '"log"'
}

# start_redis : starts one redis-server for the run (no persistence) on a free loopback port and
# sets REDIS_PORT; stopped on exit with the servers.
REDIS_PORT=""
start_redis() {
    [[ -z $REDIS_PORT ]] || return 0
    command -v redis-server >/dev/null || die "redis-server is needed: apt-get install redis-server"
    REDIS_PORT=$(free_port)
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$WORK/redis.log" 2>&1 &
    SERVER_PIDS+=("$!")
    local deadline=$((SECONDS + 10))
    until (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null; do
        ((SECONDS < deadline)) || die "redis-server did not listen on port $REDIS_PORT"
        sleep 0.1
    done
    echo "started redis-server on 127.0.0.1:$REDIS_PORT"
}

# start_strata_ratelimit NAME STORE : the gateway over the echo app with one rate_limit layer on
# STORE, keyed on the client address, 1 000 000 requests per second admitted (every request).
start_strata_ratelimit() {
    local name=$1 store=$2 port config=$WORK/$1.toml
    port=$(free_port)
    cat >"$config" <<EOF
[server]
listen = "127.0.0.1:$port"
stack = ["limit"]

[middleware.limit]
kind = "rate_limit"
rate = "1000000/s"
store = "$store"
on_store_error = "deny"
store_timeout = "500ms"

[[route]]
prefix = "/"
stack = []
app = "echo"
EOF
    start_contender "$name" "$port" "$TARGET/release/strata" serve --config "$config"
}

contender_strata_ratelimit_memory() {
    start_strata_ratelimit strata-ratelimit-memory memory
}

# on_store_error = "deny" (with a 500 ms timeout, so a busy machine's hiccup is not a failure): a
# Redis failure during the run shows up as non-2xx answers, never as a silently faster contender.
contender_strata_ratelimit_redis() {
    start_redis
    start_strata_ratelimit strata-ratelimit-redis "redis://127.0.0.1:$REDIS_PORT"
}

# axum + tower-http with the equivalent stack (bench/axum-classic/src/main.rs), same hash, same
# echo endpoint, its JSON access log in a file too.
contender_axum_classic() {
    local port log=$WORK/axum-classic-access.log
    port=$(free_port)
    alice_hash
    ACCESS_LOG[axum-classic]=$log
    start_contender axum-classic "$port" "$AXUM_TARGET/release/axum-classic" "127.0.0.1:$port" "$log" \
        "$AUTH_USER:$ALICE_HASH"
}

# The same program without its credential cache: argon2 on every request.
contender_axum_classic_nocache() {
    local port log=$WORK/axum-classic-nocache-access.log
    port=$(free_port)
    alice_hash
    ACCESS_LOG[axum-classic-nocache]=$log
    start_contender axum-classic-nocache "$port" "$AXUM_TARGET/release/axum-classic" --no-cache "127.0.0.1:$port" \
        "$log" "$AUTH_USER:$ALICE_HASH"
}

# run_contender NAME ROUND : one round against NAME: a warm-up, then a measured run whose req/s and
# p99 are appended to NAME's results, and with the CPU time NAME's process spent per request, to the
# CSV file.
run_contender() {
    local name=$1 round=$2 result rps p99 requests
    # Assigned apart from `local` so that a failed run stops the script (set -e).
    result=$(load "${URL[$name]}" "$WARMUP")
    read -r _ _ requests <<<"$result"
    SENT[$name]=$((${SENT[$name]:-0} + requests))
    local before after cpu
    before=$(cpu_ticks "$name")
    result=$(load "${URL[$name]}" "$DURATION")
    after=$(cpu_ticks "$name")
    read -r rps p99 requests <<<"$result"
    SENT[$name]=$((${SENT[$name]:-0} + requests))
    RPS[$name]+="$rps "
    P99[$name]+="$p99 "
    cpu=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v n="$requests" 'BEGIN { printf "%.1f", (n > 0) ? t * 1e6 / hz / n : 0 }')
    csv_row "$name" "$round" "$DURATION" "$CONNECTIONS" "$rps" "$p99" "$cpu"
    printf '  round %d  %-22s %12.0f req/s   p99 %s ms\n' "$round" "$name" "$rps" "$p99"
}

# --- main ----------------------------------------------------------------------------------------

cd "$ROOT"
if [[ -z ${SKIP_BUILD:-} ]]; then
    # The binary alone, as in proxy-load.sh: built in one invocation with an example or a test, it
    # would get the dev-dependencies' features (tokio's `test-util` clock and `process` reaping).
    # bare-hyper is its own crate for the same reason.
    echo "building: cargo build --release --bin strata"
    cargo build --release --bin strata
    if [[ " ${CONTENDERS[*]} " == *" bare-hyper "* ]]; then
        echo "building: cargo build --release --manifest-path bench/hyper-peers/Cargo.toml"
        CARGO_TARGET_DIR=$PEERS_TARGET cargo build --release --manifest-path "$PEERS_DIR/Cargo.toml" --bin bare_hyper
    fi
    if [[ " ${CONTENDERS[*]} " == *" axum-classic"* ]]; then
        # Outside the workspace, so `cargo test --workspace` never builds axum; the first build takes
        # a few minutes, later ones are no-ops.
        echo "building: cargo build --release --manifest-path bench/axum-classic/Cargo.toml"
        CARGO_TARGET_DIR=$AXUM_TARGET cargo build --release --manifest-path "$AXUM_DIR/Cargo.toml"
    fi
fi
pick_tool
for name in "${CONTENDERS[@]}"; do
    declare -F "contender_${name//-/_}" >/dev/null || die "unknown contender '$name'"
    "contender_${name//-/_}"
done

echo
echo "load: $TOOL, $CONNECTIONS connections, $THREADS client thread(s), ${WARMUP}s warm-up + ${DURATION}s per round," \
    "$ROUNDS round(s), GET $URL_PATH, loopback"
echo "every request carries: $(printf '%s; ' "${REQUEST_HEADERS[@]}" | sed 's/; $//')"
# The run's own threads push the load average up as it goes (load generator, server workers, and
# axum-classic's blocking pool of up to one argon2 thread per connection): the start is the
# figure that says how busy the machine was.
echo "load average (1, 5, 15 min) at the start: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)"
# Even rounds run the contenders in reverse (A B, B A, A B ...): a machine that gets busier or
# quieter during the run then favours nobody, where A B A B would always give A the earlier slot.
for round in $(seq "$ROUNDS"); do
    order=("${CONTENDERS[@]}")
    if ((round % 2 == 0)); then
        order=()
        for ((i = ${#CONTENDERS[@]} - 1; i >= 0; i--)); do order+=("${CONTENDERS[i]}"); done
    fi
    for name in "${order[@]}"; do
        run_contender "$name" "$round"
    done
done

declare -A MEDIAN=()
for name in "${CONTENDERS[@]}"; do
    MEDIAN[$name]=$(tr ' ' '\n' <<<"${RPS[$name]}" | grep . | median)
done

echo
printf '%-22s %14s %14s %16s\n' contender "median req/s" "median p99 ms" "vs $BASELINE"
for name in "${CONTENDERS[@]}"; do
    p99=$(tr ' ' '\n' <<<"${P99[$name]}" | grep -E '^[0-9.]+$' | median)
    if [[ -n ${MEDIAN[$BASELINE]:-} ]]; then
        ratio=$(awk -v a="${MEDIAN[$name]}" -v b="${MEDIAN[$BASELINE]}" 'BEGIN { printf "%.3f", a / b }')
    else
        ratio=-
    fi
    printf '%-22s %14.0f %14s %16s\n' "$name" "${MEDIAN[$name]}" "$p99" "$ratio"
done

# ratio A B TARGET : "A / B = R (target >= T) ok|BELOW", when both ran.
ratio() {
    local a=$1 b=$2 target=$3
    [[ -n ${MEDIAN[$a]:-} && -n ${MEDIAN[$b]:-} ]] || return 0
    awk -v a="${MEDIAN[$a]}" -v b="${MEDIAN[$b]}" -v t="$target" -v an="$a" -v bn="$b" 'BEGIN {
        r = (b > 0) ? a / b : 0
        printf "  %-32s %8.3f   target >= %s  %s\n", an " / " bn, r, t, (r >= t) ? "ok" : "BELOW"
    }'
}
echo
echo "ratios of median req/s (from this run only; absolute req/s depend on the machine's load):"
ratio strata-empty "$BASELINE" 0.97
ratio strata-classic "$BASELINE" 0.93
ratio strata-classic axum-classic 1.15
ratio strata-ratelimit-memory strata-empty 0.9
ratio strata-ratelimit-redis strata-ratelimit-memory 0.7
ratio strata-classic axum-classic-nocache 1.15

# A log line dropped under load would be work a contender skipped: compare lines with responses.
# Lines are written after the response, so give the writers a moment to drain.
if ((${#ACCESS_LOG[@]} > 0)); then
    sleep 1
    echo
    echo "access logs (every response should have its line; +1 for the start-up check):"
    for name in "${CONTENDERS[@]}"; do
        [[ -n ${ACCESS_LOG[$name]:-} ]] || continue
        lines=$(wc -l <"${ACCESS_LOG[$name]}" 2>/dev/null || echo 0)
        printf '  %-22s %10s lines for %10s responses\n' "$name" "$lines" "$((${SENT[$name]:-0} + 1))"
        if grep -qi 'dropped' "$WORK/$name.log"; then
            echo "  warning: $name reported dropped log lines: $(grep -i dropped "$WORK/$name.log" | tail -n1)" >&2
        fi
    done
fi
echo "load average (1, 5, 15 min) at the end: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)"
