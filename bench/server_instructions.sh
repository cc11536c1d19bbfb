#!/usr/bin/env bash
# Instructions per request of whole servers under callgrind: bare hyper, the gateway with an empty
# stack, the gateway with the classic stack, and the axum + tower-http classic stack; and, when
# asked for, strata-classic-metrics (the classic stack with an [admin] listener: metrics on).
#
# Each server runs under callgrind while one keep-alive client (python3's http.client) sends the load
# run's request (GET /status/200 with alice's Basic credentials and an allowed Origin): 300 requests
# to warm up (and, for the classic stacks, to verify and cache the credential), then the counters are
# zeroed (callgrind_control -z), 2,000 more requests are sent and the counters dumped. The dump
# divided by 2,000 is one request's cost in the whole server process, every thread included (the
# access log writers too), start-up excluded. Unlike req/s, the figure does not move with the
# machine's load.
#
#   bash bench/server_instructions.sh          # after the release builds bench/load.sh makes
#   SERVERS="bare-hyper strata-classic" bash bench/server_instructions.sh
#
# Note: valgrind hides the CPU's SHA extensions, so the SHA-256 of a credential cache key (strata's
# HMAC, axum-classic's salted hash) runs the portable code and counts several thousand more
# instructions than on the real CPU.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
AXUM=$ROOT/bench/axum-classic/target/release/axum-classic
BARE_HYPER=$ROOT/bench/hyper-peers/target/release/bare_hyper
WARM=${WARM:-300}
N=${N:-2000}
read -r -a SERVERS <<<"${SERVERS:-bare-hyper strata-empty strata-classic axum-classic}"

command -v valgrind >/dev/null || { echo "valgrind is needed: apt-get install -y valgrind" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 is needed" >&2; exit 1; }
WORK=$(mktemp -d)
PID=""
cleanup() {
    if [[ -n $PID ]]; then kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# free_port, classic_config.
source "$ROOT/bench/lib.sh"

cat >"$WORK/client.py" <<'EOF'
import base64, http.client, socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
deadline = time.time() + 60
while True:
    try:
        socket.create_connection(("127.0.0.1", port), 1).close()
        break
    except OSError:
        if time.time() > deadline:
            sys.exit("the server did not start")
        time.sleep(0.2)
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
headers = {"Authorization": "Basic " + base64.b64encode(b"alice:wonderland").decode(),
           "Origin": "http://localhost:5173"}
for _ in range(n):
    conn.request("GET", "/status/200", headers=headers)
    res = conn.getresponse()
    res.read()
    if res.status != 200:
        sys.exit(f"unexpected status {res.status}")
EOF

HASH=$(printf 'wonderland\n' | "$TARGET/release/strata" hash-password)

strata_config() { # PORT STACK
    classic_config "$1" "$2" "$WORK/strata-access.log" alice "$HASH"
}

measure() { # NAME PORT COMMAND...
    local name=$1 port=$2 dump
    shift 2
    valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.$name" "$@" >"$WORK/$name.out" 2>&1 &
    PID=$!
    python3 "$WORK/client.py" "$port" "$WARM"
    callgrind_control -z "$PID" >/dev/null 2>&1
    python3 "$WORK/client.py" "$port" "$N"
    callgrind_control -d "$PID" >/dev/null 2>&1
    kill -TERM "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    PID=""
    dump=$(ls "$WORK/cg.$name".*1 2>/dev/null | head -n1)
    [[ -n $dump ]] || { echo "$name: no callgrind dump" >&2; return 1; }
    awk -v name="$name" -v n="$N" '/^(summary|totals):/ { printf "%-16s %10d\n", name, $2 / n; exit }' "$dump"
}

printf '%-16s %10s\n' server "Ir/request"
for server in "${SERVERS[@]}"; do
    port=$(free_port)
    case $server in
    bare-hyper) measure "$server" "$port" "$BARE_HYPER" "127.0.0.1:$port" ;;
    strata-empty)
        strata_config "$port" "" >"$WORK/$server.toml"
        measure "$server" "$port" "$TARGET/release/strata" serve --config "$WORK/$server.toml"
        ;;
    strata-classic)
        strata_config "$port" '"timing", "request_id", "log", "cors", "auth"' >"$WORK/$server.toml"
        measure "$server" "$port" "$TARGET/release/strata" serve --config "$WORK/$server.toml"
        ;;
    strata-classic-metrics) # the same with an [admin] listener: metrics kept for every request
        strata_config "$port" '"timing", "request_id", "log", "cors", "auth"' >"$WORK/$server.toml"
        printf '\n[admin]\nlisten = "127.0.0.1:%s"\n' "$(free_port)" >>"$WORK/$server.toml"
        measure "$server" "$port" "$TARGET/release/strata" serve --config "$WORK/$server.toml"
        ;;
    axum-classic) measure "$server" "$port" "$AXUM" "127.0.0.1:$port" "$WORK/axum-access.log" "alice:$HASH" ;;
    *) echo "unknown server '$server'" >&2; exit 2 ;;
    esac
done
