#!/usr/bin/env bash
# Fault soak: the gateway's classic stack under steady load while its dependencies fail and its
# config is reloaded, then a verdict on what the clients saw, the access log and the process.
#
# What runs, all on free loopback ports, all stopped on exit (also on Ctrl-C or failure):
#   strata      target/release/strata serve, with the classic stack (timing → request_id → JSON
#               access_log to a file → cors → errors) and a Redis-backed rate_limit (limits far
#               above the load, `on_store_error = "local"`), routes `/a` → upstream A and `/b` →
#               upstream B (both `strip_prefix`), `/` → the built-in echo app
#   redis       redis-server --save "" --appendonly no
#   A, B        gunicorn (2 gthread workers × 8 threads) serving
#               crates/strata-gateway/tests/upstream/tasks_app.py, each with its own SQLite file
#   wrk         -c32, GETs spread round-robin over /a/tasks, /b/tasks and /status/200 (echo), by a
#               Lua script that also counts the requests it sent
#
# Timeline: DURATION seconds of load during which, once a second:
#   - strata gets SIGHUP, alternately with a valid config (the same one, cors `max_age` toggled
#     between "600s" and "601s") and an invalid one (a typo: `strip_prefx`), each written and renamed
#     into place first: the running config must keep serving through the rejected ones;
#   - every 30 s (at 10 s, 40 s, …) upstream A's whole process group gets SIGKILL, and A is started
#     again on the same port 5 s later;
#   - every 60 s (at 25 s, 85 s, …) redis-server gets SIGKILL and is started again on the same port
#     5 s later;
# no fault is started less than 15 s before the end, so everything is back up when the load stops.
# strata's RSS and open fds are sampled under load after WARMUP seconds (the warm-up includes
# faults and reloads, so that what a fault or a reload allocates once is in the baseline), every
# 30 s, and at the last second of load; then once more idle, 3 s after the load, for information.
# The fds are split into upstream sockets (the two routes' keep-alive pools) and the rest: a pool
# holds up to one connection per concurrent request, so its size follows the load's concurrency,
# not time, and is checked against that bound (routes × CONNECTIONS, plus CONNECTIONS for
# requests still finishing on a replaced config's pools); the rest must stay flat.
#
# Verdicts (the exit status is 1 when any fails):
#   - wrk's socket errors (connect, read, write, timeout) = 0, except read errors up to the number
#     of responses strata logged as cut mid-body by a kill of A (`upstream response body failed
#     mid-stream`: the head had gone out, so strata can only close the connection);
#   - unexpected 5xx = 0: a 5xx on /b or the echo route, a 500 anywhere, or a 502/503/504 on /a
#     that arrived outside the windows in which A was down (from its kill − 2 s to 2 s after it
#     accepted connections again). 5xx on /a inside them are the documented fail mode, counted as
#     "expected: upstream down";
#   - 4xx other than 499 = 0 (every request is valid and under the limits; 499s are requests in
#     flight when wrk stopped);
#   - access-log lines between the requests wrk completed and those it sent (+ the script's own 3):
#     every answered request has its line; the ones wrk sent and never saw answered were in flight
#     when it stopped (logged as 499, or never read by strata before wrk closed the connection).
#     The table says whether the count was exact, and the per-route table compares each route's
#     lines with what wrk sent to it;
#   - strata's RSS and its fds other than upstream sockets at the end at most 10% above the
#     post-warm-up sample; upstream sockets (CLOSE-WAIT ones shown apart) within the bound above;
#   - reloads: as many "config reloaded" lines as valid SIGHUPs and "config rejected" lines as
#     invalid ones, the last valid config in force (a preflight's max-age), strata alive, no panic
#     in its log.
#
# Usage: bash bench/soak.sh
#   DURATION=300    seconds of load with faults (at most 540: the whole run stays under 10 min)
#   WARMUP=60       seconds of the soak before the baseline sample (DURATION/3 when that is less)
#   THREADS=2       wrk threads
#   CONNECTIONS=32  wrk connections
#   REPORT=FILE     also write the report there (default: stdout only)
#   SKIP_BUILD=1    use target/release/strata as it is (default: cargo build --release -p strata-gateway)
#   KEEP=1          keep the work directory (configs, logs) and print its path
set -euo pipefail

DURATION=${DURATION:-300}
WARMUP=${WARMUP:-$((DURATION >= 180 ? 60 : DURATION / 3))}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-32}
REPORT=${REPORT:-}
A_EVERY=30 A_FIRST=10 REDIS_EVERY=60 REDIS_FIRST=25 DOWN_FOR=5
# No fault starts this close to the end, so every dependency is back when the load stops.
QUIET_END=15
# Slack around a down window of A for the 5xx it explains: a request that arrived just before the
# kill, or on a pooled connection to the old process just after the restart.
SLACK_MS=2000

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
STRATA=$TARGET/release/strata
APP_DIR=$ROOT/crates/strata-gateway/tests/upstream
WORK=$(mktemp -d "${TMPDIR:-/tmp}/strata-soak.XXXXXX")
# die, free_port, wait_for_port, stop_servers.
source "$ROOT/bench/lib.sh"

[[ $DURATION =~ ^[0-9]+$ && $DURATION -ge 30 && $DURATION -le 540 ]] || die "DURATION must be 30–540 seconds, not '$DURATION'"
[[ $WARMUP =~ ^[0-9]+$ && $WARMUP -ge 5 && $WARMUP -le $((DURATION - 10)) ]] || die "WARMUP must be 5–$((DURATION - 10)) seconds, not '$WARMUP'"

declare -a SERVER_PIDS=()
A_PID="" B_PID="" REDIS_PID="" STRATA_PID=""

cleanup() {
    # The upstreams run in their own process groups (so that a kill reaches their workers too).
    local pid
    for pid in "$A_PID" "$B_PID"; do [[ -n $pid ]] && kill -TERM -- "-$pid" 2>/dev/null || true; done
    [[ -n $REDIS_PID ]] && kill "$REDIS_PID" 2>/dev/null || true
    stop_servers
    for pid in "$A_PID" "$B_PID" "$REDIS_PID"; do [[ -n $pid ]] && wait "$pid" 2>/dev/null || true; done
    if [[ -n ${KEEP:-} ]]; then echo "work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

need() {
    command -v "$1" >/dev/null && return 0
    [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null || die "$1 is missing: $2"
    echo "installing: $2"
    eval "$2" >/dev/null 2>&1 || { apt-get update >/dev/null && eval "$2" >/dev/null; }
}

# now_ms : wall-clock milliseconds since the epoch (the access log's clock).
now_ms() {
    local t=${EPOCHREALTIME/./}
    echo $((t / 1000))
}

# accepts PORT : whether PORT accepts a connection now.
accepts() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# start_upstream NAME PORT DB : gunicorn with the tasks app in a process group of its own (a kill
# of the group takes its workers too); sets STARTED to its pid, the group's id. Does not wait for
# the port. (Not run in $(...): the server must be this shell's child, for `wait`.)
start_upstream() {
    TASKS_DB=$3 PYTHONDONTWRITEBYTECODE=1 setsid gunicorn -w 2 -k gthread --threads 8 --graceful-timeout 2 \
        --log-level warning -b "127.0.0.1:$2" --chdir "$APP_DIR" tasks_app:app </dev/null >>"$WORK/$1.log" 2>&1 &
    STARTED=$!
}

# start_redis : redis-server on REDIS_PORT, nothing saved; sets STARTED to its pid.
start_redis() {
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no </dev/null >>"$WORK/redis.log" 2>&1 &
    STARTED=$!
}

# write_config VARIANT : writes strata's config (VARIANT "valid-600", "valid-601" or "invalid") to
# a temporary file and renames it into place, so strata never reads a half-written file.
write_config() {
    local max_age=600 strip=strip_prefix
    case $1 in
        valid-601) max_age=601 ;;
        invalid) strip=strip_prefx ;;
    esac
    cat >"$CONFIG.tmp" <<EOF
[server]
listen = "127.0.0.1:$STRATA_PORT"
# Clients connect directly: the rate limit keys on their own address.
behind_proxy = false
stack = ["timing", "request_id", "log", "cors", "errors", "limit"]

[middleware.timing]
kind = "timing"

[middleware.request_id]
kind = "request_id"

[middleware.log]
kind = "access_log"
format = "json"
output = "$ACCESS_LOG"

[middleware.cors]
kind = "cors"
allow_origins = ["http://localhost:5173", "https://*.example.com"]
allow_methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
allow_headers = ["content-type", "authorization"]
expose_headers = ["x-request-id", "x-response-time"]
allow_credentials = true
max_age = "${max_age}s"

[middleware.errors]
kind = "errors"

# Far above what two shared cores serve, so that every request is admitted: the soak is about
# Redis failing, not about rejecting. While Redis is down each instance limits alone.
[middleware.limit]
kind = "rate_limit"
rate = "200000/s"
burst = 200000
store = "redis://127.0.0.1:$REDIS_PORT"
on_store_error = "local"
store_timeout = "50ms"
store_retry = "1s"

[[route]]
prefix = "/a"
upstream = "http://127.0.0.1:$A_PORT"
strip_prefix = true
connect_timeout = "1s"
timeout = "10s"
idle_timeout = "1s"

[[route]]
prefix = "/b"
upstream = "http://127.0.0.1:$B_PORT"
$strip = true
connect_timeout = "1s"
timeout = "10s"
idle_timeout = "1s"

[[route]]
prefix = "/"
app = "echo"
EOF
    mv "$CONFIG.tmp" "$CONFIG"
}

# wrk_lua : the load script. Round-robin over the three routes, per connection; counts requests
# sent and responses by status class per thread, summed in done().
wrk_lua() {
    cat <<'EOF'
local paths = { "/a/tasks", "/b/tasks", "/status/200" }
local threads = {}
local next_id = 0

function setup(thread)
    thread:set("id", next_id)
    next_id = next_id + 1
    table.insert(threads, thread)
end

function init(args)
    sent, s2, s3, s4, s5 = 0, 0, 0, 0, 0
    per_path = { 0, 0, 0 }
    turn = id or 0
    wrk.headers["Origin"] = "http://localhost:5173"
end

function request()
    turn = turn % #paths + 1
    sent = sent + 1
    per_path[turn] = per_path[turn] + 1
    sent_a, sent_b, sent_echo = per_path[1], per_path[2], per_path[3]
    return wrk.format("GET", paths[turn])
end

function response(status, headers, body)
    if status < 300 then s2 = s2 + 1
    elseif status < 400 then s3 = s3 + 1
    elseif status < 500 then s4 = s4 + 1
    else s5 = s5 + 1 end
end

function done(summary, latency, requests)
    local t = { sent = 0, sent_a = 0, sent_b = 0, sent_echo = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0 }
    for _, thread in ipairs(threads) do
        for k in pairs(t) do t[k] = t[k] + (thread:get(k) or 0) end
    end
    local e = summary.errors
    io.write(string.format("soak: sent=%d completed=%d sent_a=%d sent_b=%d sent_echo=%d s2=%d s3=%d s4=%d s5=%d connect=%d read=%d write=%d timeout=%d\n",
        t.sent, summary.requests, t.sent_a, t.sent_b, t.sent_echo, t.s2, t.s3, t.s4, t.s5, e.connect, e.read, e.write, e.timeout))
end
EOF
}

# run_wrk SECONDS OUT : wrk in the background; sets WRK_PID.
run_wrk() {
    wrk -t "$THREADS" -c "$CONNECTIONS" -d "${1}s" --timeout 5s -s "$WORK/soak.lua" \
        "http://127.0.0.1:$STRATA_PORT" >"$2" 2>&1 &
    WRK_PID=$!
}

# wrk_field OUT NAME : one counter of the soak line wrk's done() printed.
wrk_field() {
    sed -nE "s/^soak: .*\\b$2=([0-9]+).*/\\1/p" "$1" | head -n1
}

# sample LABEL : "RSS_KB FDS UPSTREAM_SOCKETS CLOSE_WAIT OTHER" of strata now: its TCP sockets to
# A or B, how many of those the upstream has closed, and every other fd (files, pipes, event fds,
# client and Redis sockets). OTHER is counted from the same listings (not FDS − UPSTREAM: the two
# are read at different instants while upstream connections come and go). The fd and socket
# lists go to $WORK/fds-LABEL.txt.
sample() {
    local rss fds sockets
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$STRATA_PID/status")
    local listing
    listing=$(ls -l "/proc/$STRATA_PID/fd" 2>/dev/null || true)
    fds=$(grep -c -- '->' <<<"$listing" || true)
    sockets=$(ss -tanp 2>/dev/null | grep "pid=$STRATA_PID," || true)
    { echo "$listing"; echo "$sockets"; } >"$WORK/fds-$1.txt"
    awk -v rss="$rss" -v fds="$fds" -v files="$(grep -- '->' <<<"$listing" | grep -vc 'socket:' || true)" \
        -v a=":$A_PORT" -v b=":$B_PORT" '
        NF < 5 { next }
        { peer = $5; sub(/^.*:/, ":", peer) }
        peer == a || peer == b { n++; if ($1 == "CLOSE-WAIT") cw++; next }
        { other++ }
        END { print rss, fds, n + 0, cw + 0, files + other }' <<<"$sockets"
}

# log_lines : the access log's line count once it stops growing (the writer flushes within
# milliseconds; at most 10 s).
log_lines() {
    local before=-1 now
    for _ in $(seq 20); do
        sleep 0.5
        now=$(wc -l <"$ACCESS_LOG")
        [[ $now == "$before" ]] && break
        before=$now
    done
    echo "$now"
}

# get PATH : one request through strata (an Origin, as the load sends); prints the status.
get() {
    curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H 'Origin: http://localhost:5173' "http://127.0.0.1:$STRATA_PORT$1"
}

# --- setup ---------------------------------------------------------------------------------------

cd "$ROOT"
need wrk "apt-get install -y wrk"
need redis-server "apt-get install -y redis-server"
need gunicorn "pip install gunicorn"
need curl "apt-get install -y curl"
need setsid "apt-get install -y util-linux"
if [[ -z ${SKIP_BUILD:-} ]]; then
    echo "building: cargo build --release -p strata-gateway"
    cargo build --release -p strata-gateway
fi
[[ -x $STRATA ]] || die "$STRATA is missing: build it (cargo build --release -p strata-gateway)"
START=$SECONDS

REDIS_PORT=$(free_port) A_PORT=$(free_port) B_PORT=$(free_port) STRATA_PORT=$(free_port)
CONFIG=$WORK/strata.toml ACCESS_LOG=$WORK/access.log
wrk_lua >"$WORK/soak.lua"

start_redis
REDIS_PID=$STARTED
wait_for_port redis "$REDIS_PORT" "$REDIS_PID"
start_upstream upstream-a "$A_PORT" "$WORK/a.db"
A_PID=$STARTED
start_upstream upstream-b "$B_PORT" "$WORK/b.db"
B_PID=$STARTED
wait_for_port upstream-a "$A_PORT" "$A_PID"
wait_for_port upstream-b "$B_PORT" "$B_PID"
write_config valid-600
"$STRATA" check --config "$CONFIG" >"$WORK/check.log" 2>&1 || { cat "$WORK/check.log" >&2; die "strata check rejected the soak config"; }
"$STRATA" serve --config "$CONFIG" >"$WORK/strata.log" 2>&1 &
STRATA_PID=$!
SERVER_PIDS+=("$STRATA_PID")
wait_for_port strata "$STRATA_PORT" "$STRATA_PID"
# The script's own requests through strata, each logged: counted against the access log.
OWN_REQUESTS=0
for path in /a/tasks /b/tasks /status/200; do
    code=$(get "$path")
    OWN_REQUESTS=$((OWN_REQUESTS + 1))
    [[ $code == 200 ]] || die "GET $path through strata answered '$code', not 200"
done
echo "started: redis :$REDIS_PORT (pid $REDIS_PID), A :$A_PORT (pgid $A_PID), B :$B_PORT (pgid $B_PID)," \
    "strata :$STRATA_PORT (pid $STRATA_PID); work directory $WORK"

# --- warm-up -------------------------------------------------------------------------------------


# --- the soak ------------------------------------------------------------------------------------

echo "soak: ${DURATION}s of load; SIGHUP every 1 s (valid/invalid), A killed every ${A_EVERY} s, redis every ${REDIS_EVERY} s, each back after ${DOWN_FOR} s"
SOAK_START_MS=$(now_ms)
run_wrk "$DURATION" "$WORK/wrk-soak.out"
RSS0=0 FDS0=0 UP0=0 CW0=0 OTHER0=0 RSS1=0 FDS1=0 UP1=0 CW1=0 OTHER1=0
HUP_VALID=0 HUP_INVALID=0 LAST_VALID=valid-600 A_KILLS=0 A_RESTARTS=0 REDIS_KILLS=0 REDIS_RESTARTS=0
A_DOWN_SINCE="" A_RESTART_AT="" A_RESTART_AT_DONE="" REDIS_RESTART_AT=""
A_WINDOWS=() SERIES=() CHAOS_ERRORS=()
for ((tick = 1; tick <= DURATION; tick++)); do
    # Sleep until this tick's second, watching for a restarted A to accept connections (its down
    # window ends then), in 100 ms steps; bounded by the tick's deadline.
    deadline=$((SOAK_START_MS + tick * 1000))
    while (($(now_ms) < deadline)); do
        if [[ -n $A_RESTART_AT_DONE ]] && accepts "$A_PORT"; then
            A_WINDOWS+=("$A_DOWN_SINCE $(now_ms)")
            A_DOWN_SINCE="" A_RESTART_AT="" A_RESTART_AT_DONE=""
            A_RESTARTS=$((A_RESTARTS + 1))
        fi
        sleep 0.1
    done
    kill -0 "$STRATA_PID" 2>/dev/null || break
    late=$((tick > DURATION - QUIET_END))

    # Config reload, alternately valid and invalid.
    if ((tick % 2)); then
        write_config invalid
        HUP_INVALID=$((HUP_INVALID + 1))
    else
        LAST_VALID=$([[ $LAST_VALID == valid-600 ]] && echo valid-601 || echo valid-600)
        write_config "$LAST_VALID"
        HUP_VALID=$((HUP_VALID + 1))
    fi
    kill -HUP "$STRATA_PID"

    # Upstream A: killed with its workers, back DOWN_FOR seconds later on the same port.
    if ((tick % A_EVERY == A_FIRST % A_EVERY && !late)) && [[ -z $A_DOWN_SINCE ]]; then
        A_DOWN_SINCE=$(now_ms)
        kill -KILL -- "-$A_PID" 2>/dev/null || CHAOS_ERRORS+=("t=${tick}s: A (pgid $A_PID) was not running")
        wait "$A_PID" 2>/dev/null || true
        A_KILLS=$((A_KILLS + 1))
        A_RESTART_AT=$((tick + DOWN_FOR))
        A_RESTART_AT_DONE=""
    fi
    if [[ -n $A_RESTART_AT && $tick -eq $A_RESTART_AT && -z $A_RESTART_AT_DONE ]]; then
        start_upstream upstream-a "$A_PORT" "$WORK/a.db"
        A_PID=$STARTED
        A_RESTART_AT_DONE=1
    fi

    # Redis: killed, back DOWN_FOR seconds later on the same port (empty: nothing is saved).
    if ((tick % REDIS_EVERY == REDIS_FIRST % REDIS_EVERY && !late)) && [[ -z $REDIS_RESTART_AT ]]; then
        kill -KILL "$REDIS_PID" 2>/dev/null || CHAOS_ERRORS+=("t=${tick}s: redis (pid $REDIS_PID) was not running")
        wait "$REDIS_PID" 2>/dev/null || true
        REDIS_KILLS=$((REDIS_KILLS + 1))
        REDIS_RESTART_AT=$((tick + DOWN_FOR))
    fi
    if [[ -n $REDIS_RESTART_AT && $tick -eq $REDIS_RESTART_AT ]]; then
        start_redis
        REDIS_PID=$STARTED
        REDIS_RESTART_AT=""
        REDIS_RESTARTS=$((REDIS_RESTARTS + 1))
    fi

    if ((tick == WARMUP)); then
        read -r RSS0 FDS0 UP0 CW0 OTHER0 <<<"$(sample warmup)"
        echo "after ${WARMUP}s: RSS ${RSS0} kB, ${FDS0} open fds of which ${UP0} upstream sockets"
    fi
    if ((tick == DURATION - 1)); then read -r RSS1 FDS1 UP1 CW1 OTHER1 <<<"$(sample end)"; fi
    if ((tick % 30 == 0)); then SERIES+=("${tick}s: $(sample "$tick" | awk '{ printf "%d kB %d fds (%d upstream)", $1, $2, $3 }')"); fi
done
# A restart still waiting for its port (a late one, or strata died): give it 20 s more.
if [[ -n $A_DOWN_SINCE ]]; then
    for _ in $(seq 200); do accepts "$A_PORT" && break; sleep 0.1; done
    accepts "$A_PORT" && A_RESTARTS=$((A_RESTARTS + 1))
    A_WINDOWS+=("$A_DOWN_SINCE $(now_ms)")
fi
accepts "$REDIS_PORT" || CHAOS_ERRORS+=("redis did not accept connections at the end")
accepts "$A_PORT" || CHAOS_ERRORS+=("upstream A did not accept connections at the end")
WRK_OK=1
wait "$WRK_PID" || WRK_OK=0
STRATA_ALIVE=1
kill -0 "$STRATA_PID" 2>/dev/null || STRATA_ALIVE=0

# --- measurements --------------------------------------------------------------------------------

sleep 3 # idle pooled connections expire (idle_timeout 1s) and the upstreams close theirs (2 s)
IDLE_SAMPLE="-"
((STRATA_ALIVE)) && IDLE_SAMPLE=$(sample idle | awk '{ printf "%d kB, %d fds, %d upstream sockets of which %d in CLOSE-WAIT", $1, $2, $3, $4 }')
LINES=$(log_lines)
SENT=0 COMPLETED=0 SOCKET_ERRORS=0 SENT_A=1 SENT_B=1 SENT_ECHO=1 # + the start-up request of each
for out in "$WORK/wrk-soak.out"; do
    grep -q '^soak: ' "$out" || { cat "$out" >&2; die "wrk printed no counts ($out)"; }
    SENT=$((SENT + $(wrk_field "$out" sent)))
    SENT_A=$((SENT_A + $(wrk_field "$out" sent_a)))
    SENT_B=$((SENT_B + $(wrk_field "$out" sent_b)))
    SENT_ECHO=$((SENT_ECHO + $(wrk_field "$out" sent_echo)))
    COMPLETED=$((COMPLETED + $(wrk_field "$out" completed)))
done
SOAK_OUT=$WORK/wrk-soak.out
read -r E_CONNECT E_READ E_WRITE E_TIMEOUT <<<"$(for f in connect read write timeout; do wrk_field "$SOAK_OUT" "$f"; done | paste -sd' ')"
SOCKET_ERRORS=$((SOCKET_ERRORS + E_CONNECT + E_READ + E_WRITE + E_TIMEOUT))
SOAK_RPS=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$SOAK_OUT")
RELOADED=$(grep -c 'config reloaded' "$WORK/strata.log" || true)
REJECTED=$(grep -c 'config rejected' "$WORK/strata.log" || true)
PANICS=$(grep -c 'panicked' "$WORK/strata.log" || true)
# A kill of A while it streams a body cuts that response: strata logs it and closes the client's
# connection (the head has gone out), which wrk counts as a read error. Those are A's fail mode too.
CUT=$(grep -c 'upstream response body failed mid-stream' "$WORK/strata.log" || true)
# The last valid config must be the one serving: its cors max_age, on a preflight (not counted in
# the access-log comparison, which is already taken).
MAX_AGE=$(curl -s -o /dev/null -D - --max-time 5 -X OPTIONS -H 'Origin: http://localhost:5173' \
    -H 'Access-Control-Request-Method: GET' "http://127.0.0.1:$STRATA_PORT/status/200" |
    tr -d '\r' | awk -F': ' 'tolower($1) == "access-control-max-age" { print $2 }')

# Responses by route and status class from the access log; 5xx on /a split by A's down windows.
printf '%s\n' "${A_WINDOWS[@]}" >"$WORK/a-windows.txt"
python3 - "$ACCESS_LOG" "$WORK/a-windows.txt" "$SLACK_MS" >"$WORK/log-summary.txt" <<'EOF'
import json, sys
from datetime import datetime

log, windows_file, slack = sys.argv[1], sys.argv[2], int(sys.argv[3])
windows = [tuple(map(int, l.split())) for l in open(windows_file) if l.strip()]
routes = ("/a", "/b", "echo")
classes = ("2xx", "3xx", "4xx", "499", "5xx")
counts = {r: dict.fromkeys(classes, 0) for r in routes}
expected = unexpected = status500 = other4xx = bad_lines = 0
first_unexpected = []
for line in open(log, errors="replace"):
    try:
        entry = json.loads(line)
        status, path = int(entry["status"]), entry["path"]
    except (ValueError, KeyError, TypeError):
        bad_lines += 1
        continue
    route = "/a" if path == "/a" or path.startswith("/a/") else "/b" if path == "/b" or path.startswith("/b/") else "echo"
    cls = "499" if status == 499 else f"{status // 100}xx"
    counts[route][cls] = counts[route].get(cls, 0) + 1
    if 400 <= status < 500 and status != 499:
        other4xx += 1
    if status >= 500:
        at = int(datetime.fromisoformat(entry["time"].replace("Z", "+00:00")).timestamp() * 1000)
        down = any(start - slack <= at <= end + slack for start, end in windows)
        if route == "/a" and status in (502, 503, 504) and down:
            expected += 1
        else:
            unexpected += 1
            status500 += status == 500
            if len(first_unexpected) < 5:
                first_unexpected.append(line.strip())
print("route " + " ".join(classes) + " lines")
for r in routes:
    print(r + " " + " ".join(str(counts[r][c]) for c in classes) + " " + str(sum(counts[r].values())))
print(f"expected {expected}")
print(f"unexpected {unexpected}")
print(f"status500 {status500}")
print(f"other4xx {other4xx}")
print(f"bad_lines {bad_lines}")
for l in first_unexpected:
    print(f"sample {l}")
EOF
summary() { awk -v k="$1" '$1 == k { print $2 }' "$WORK/log-summary.txt"; }
EXPECTED_5XX=$(summary expected) UNEXPECTED_5XX=$(summary unexpected) OTHER_4XX=$(summary other4xx)
BAD_LINES=$(summary bad_lines)

# --- report --------------------------------------------------------------------------------------

FAILED=0
# row CHECK FIGURE OK : one line of the table; OK is 1 (ok), 0 (FAIL, counted) or - (a figure).
row() {
    local word=-
    case $3 in
        1) word=ok ;;
        0) word=FAIL FAILED=$((FAILED + 1)) ;;
    esac
    printf '| %-46s | %-40s | %-7s |\n' "$1" "$2" "$word"
}
growth() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.1f%%", (a > 0) ? (b - a) * 100 / a : 0 }'; }
flat() { awk -v a="$1" -v b="$2" 'BEGIN { print (a > 0 && b > 0 && b <= a * 1.10) ? 1 : 0 }'; }
WANT_LINES=$((SENT + OWN_REQUESTS))
LOG_OK=0
if ((LINES == WANT_LINES)); then
    LOG_OK=1 LOG_NOTE="exact: every request wrk sent, and the script's $OWN_REQUESTS, has its line"
elif ((LINES >= COMPLETED + OWN_REQUESTS && LINES <= WANT_LINES)); then
    LOG_OK=1 LOG_NOTE="$((WANT_LINES - LINES)) requests wrk sent have no line (at most the $((SENT - COMPLETED)) in flight at the end)"
else
    LOG_NOTE="outside [completed, sent]: lines lost or invented"
fi

{
    echo
    echo "== strata fault soak: ${DURATION}s (baseline after ${WARMUP}s), wrk -t$THREADS -c$CONNECTIONS, $(date -u +%Y-%m-%dT%H:%MZ) =="
    echo "faults: A killed $A_KILLS× (restarted $A_RESTARTS×), redis killed $REDIS_KILLS× (restarted $REDIS_RESTARTS×), SIGHUP $HUP_VALID valid + $HUP_INVALID invalid"
    echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); soak throughput ${SOAK_RPS:-?} req/s"
    for note in "${CHAOS_ERRORS[@]}"; do echo "note: $note"; done
    echo
    printf '| %-46s | %-40s | %-7s |\n' check figure verdict
    printf '| %-46s | %-40s | %-7s |\n' "$(printf -- '-%.0s' {1..46})" "$(printf -- '-%.0s' {1..40})" "-------"
    row "requests completed (wrk)" "$COMPLETED of $SENT sent" -
    row "socket errors (connect/read/write/timeout)" "$SOCKET_ERRORS ($E_CONNECT/$E_READ/$E_WRITE/$E_TIMEOUT)" -
    row "  unexpected (beyond $CUT bodies cut by A's kills)" "$((E_CONNECT + E_WRITE + E_TIMEOUT + (E_READ > CUT ? E_READ - CUT : 0)))" $((E_CONNECT + E_WRITE + E_TIMEOUT == 0 && E_READ <= CUT))
    row "unexpected 5xx" "$UNEXPECTED_5XX ($(summary status500) of them 500)" $((UNEXPECTED_5XX == 0))
    row "expected 5xx: /a while A was down" "$EXPECTED_5XX" -
    row "4xx other than 499" "$OTHER_4XX" $((OTHER_4XX == 0))
    row "access-log lines vs wrk sent + $OWN_REQUESTS own" "$LINES vs $WANT_LINES (completed $COMPLETED)" $LOG_OK
    row "RSS after warm-up -> end" "$RSS0 -> $RSS1 kB ($(growth "$RSS0" "$RSS1"))" "$(flat "$RSS0" "$RSS1")"
    row "open fds, warm-up -> end" "$FDS0 -> $FDS1 ($(growth "$FDS0" "$FDS1"))" -
    row "  other than upstream sockets" "$OTHER0 -> $OTHER1 ($(growth "$OTHER0" "$OTHER1"))" "$(flat "$OTHER0" "$OTHER1")"
    row "  upstream sockets (CLOSE-WAIT), bound" "$UP0 ($CW0) -> $UP1 ($CW1), <= $((3 * CONNECTIONS))" $((UP1 <= 3 * CONNECTIONS))
    row "reloads succeeded (valid SIGHUPs sent)" "$RELOADED ($HUP_VALID)" $((RELOADED == HUP_VALID))
    row "reloads rejected (invalid SIGHUPs sent)" "$REJECTED ($HUP_INVALID)" $((REJECTED == HUP_INVALID))
    row "last valid config in force (cors max-age)" "${MAX_AGE:-none} (want ${LAST_VALID#valid-})" $((${MAX_AGE:-0} == ${LAST_VALID#valid-}))
    row "strata alive, no panic, log lines all JSON" "alive=$STRATA_ALIVE panics=$PANICS bad_lines=$BAD_LINES" $((STRATA_ALIVE == 1 && PANICS == 0 && BAD_LINES == 0 && WRK_OK == 1))
    row "faults injected and recovered" "A $A_KILLS/$A_RESTARTS, redis $REDIS_KILLS/$REDIS_RESTARTS" $((${#CHAOS_ERRORS[@]} == 0 && A_KILLS == A_RESTARTS && REDIS_KILLS == REDIS_RESTARTS))
    echo
    echo "responses by route and status class (access log; 499 = in flight when wrk stopped):"
    sed -n '1,4p' "$WORK/log-summary.txt" |
        awk -v a="$SENT_A" -v b="$SENT_B" -v e="$SENT_ECHO" '{
            sent = (NR == 1) ? "sent" : (NR == 2) ? a : (NR == 3) ? b : e
            printf "  %-6s %9s %9s %9s %9s %9s %9s %9s\n", $1, $2, $3, $4, $5, $6, $7, sent
        }'
    echo "access log: $LOG_NOTE"
    echo "under load: ${SERIES[*]:-none}"
    echo "idle, 3 s after the load: $IDLE_SAMPLE"
    grep '^sample ' "$WORK/log-summary.txt" | sed 's/^sample /unexpected: /' || true
    echo
    if ((FAILED)); then echo "soak: $FAILED verdict(s) FAILED"; else echo "soak: all verdicts ok"; fi
} >"$WORK/report.txt"
cat "$WORK/report.txt"
[[ -z $REPORT ]] || cp "$WORK/report.txt" "$REPORT"
echo "(whole run: $((SECONDS - START)) s after the build)"
((FAILED == 0))
