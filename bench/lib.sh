# shellcheck shell=bash
# Helpers shared by the load scripts (load.sh, proxy-load.sh, static-load.sh,
# server_instructions.sh); sourced, not run. Each script keeps its own configuration, contenders and
# reporting.

# die MESSAGE... : prints the message, prefixed with the script's name, and exits 1.
die() {
    echo "${0##*/}: $*" >&2
    exit 1
}

# Prints a loopback port nobody is listening on. The kernel picks it when python3 is around;
# otherwise random ports are probed. Either way another process could take it before the server
# binds; the server then fails with its own message.
free_port() {
    if command -v python3 >/dev/null; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
        return
    fi
    local port
    for _ in $(seq 50); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    die "no free loopback port found"
}

# wait_for_port NAME PORT PID : waits (at most 20 s) until PORT accepts connections; dies with the
# server's log ($WORK/NAME.log) when PID exits first or the time runs out.
wait_for_port() {
    local name=$1 port=$2 pid=$3 deadline=$((SECONDS + 20))
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null; then
            cat "$WORK/$name.log" >&2
            die "$name exited before listening on port $port"
        fi
        if ((SECONDS >= deadline)); then
            cat "$WORK/$name.log" >&2
            die "$name did not listen on port $port within 20 s"
        fi
        sleep 0.1
    done
}

# stop_servers : stops every process in SERVER_PIDS and waits for them.
stop_servers() {
    local pid
    for pid in "${SERVER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${SERVER_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}

# to_ms VALUE UNIT : a latency in milliseconds.
to_ms() {
    awk -v v="$1" -v u="$2" 'BEGIN {
        f = 1
        if (u ~ /^(s|sec|secs)$/) f = 1000
        else if (u ~ /^(us|µs)$/) f = 0.001
        else if (u == "ns") f = 0.000001
        printf "%.3f", v * f
    }'
}

# median of the numbers on stdin (one per line); the mean of the middle two for an even count.
median() {
    sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "nan"; exit }
        if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2
    }'
}

# classic_config PORT STACK LOG USER HASH : a gateway config over the echo app on PORT, with the server
# stack STACK (a TOML array body such as '"timing", "log"') and every middleware of
# examples/classic.toml defined: the access log writes JSON to LOG, basic_auth knows USER by HASH.
classic_config() {
    cat <<CONFIG
[server]
listen = "127.0.0.1:$1"
stack = [$2]

[middleware.timing]
kind = "timing"

[middleware.request_id]
kind = "request_id"

[middleware.log]
kind = "access_log"
format = "json"
output = "$3"

[middleware.cors]
kind = "cors"
allow_origins = ["http://localhost:5173", "https://*.example.com"]
allow_methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
allow_headers = ["content-type", "authorization"]
expose_headers = ["x-request-id", "x-response-time"]
allow_credentials = true
max_age = "10m"

[middleware.auth]
kind = "basic_auth"
realm = "tasks"
users = { $4 = "$5" }

[[route]]
prefix = "/"
stack = []
app = "echo"
CONFIG
}

# need COMMAND PACKAGE: installs PACKAGE from Debian when COMMAND is missing and we are root.
need() {
    command -v "$1" >/dev/null && return 0
    if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then die "$1 is missing: apt-get install $2"; fi
    echo "installing $2"
    apt-get install -y "$2" >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y "$2" >/dev/null; }
}

# start_server NAME PORT COMMAND... : runs COMMAND in the background (log in $WORK/NAME.log), waits
# up to 20 s for PORT to accept connections, and records its pid in SERVER_PIDS and PIDS_OF[NAME]
# (an associative array the caller declares).
start_server() {
    local name=$1 port=$2
    shift 2
    "$@" >"$WORK/$name.log" 2>&1 &
    local pid=$!
    SERVER_PIDS+=("$pid")
    wait_for_port "$name" "$port" "$pid"
    # (An associative array: the key is a name, not arithmetic.)
    # shellcheck disable=SC2004
    PIDS_OF[$name]=$pid
    echo "started $name (pid $pid) on port $port"
}

# cpu_ticks NAME : user + system CPU ticks used so far by NAME's processes (for names starting with
# nginx: its workers). /proc/PID/stat counts every thread of PID, so a threaded server (strata,
# HAProxy with nbthread, Caddy's Go runtime) is priced whole by its one pid.
cpu_ticks() {
    local pid total=0 pids=${PIDS_OF[$1]}
    if [[ $1 == nginx* ]]; then pids=$(pgrep -P "${PIDS_OF[$1]}" | tr '\n' ' '); fi
    for pid in $pids; do
        total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat")))
    done
    echo "$total"
}

# csv_row CONTENDER ROUND DURATION_S CONNECTIONS REQ_PER_S P99_MS CPU_US_PER_REQ : appends one measured
# round to the CSV file $CSV (default target/bench/SCRIPT.csv under the repository, SCRIPT being the
# running script's name without .sh), writing the header first when the file is new or empty. The
# date is UTC, loadavg the 1-minute load average as the round ends; an unknown figure is left empty.
# bench/plot.py draws these files.
csv_row() {
    local script=${0##*/}
    script=${script%.sh}
    local file=${CSV:-${ROOT:?}/target/bench/$script.csv} p99=$6 cpu=${7:-}
    [[ $p99 =~ ^[0-9.]+$ ]] || p99=""
    [[ $cpu =~ ^[0-9.]+$ ]] || cpu=""
    mkdir -p "$(dirname "$file")"
    if [[ ! -s $file ]]; then
        echo "date,script,contender,round,duration_s,connections,req_per_s,p99_ms,cpu_us_per_req,loadavg" >"$file"
    fi
    printf '%s,%s,%s,%s,%s,%s,%s,%s,%s,%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$script" "$1" "$2" "$3" "$4" \
        "$5" "$p99" "$cpu" "$(cut -d' ' -f1 /proc/loadavg 2>/dev/null)" >>"$file"
}

# nginx_conf DIR BODY [WORKER_CONNECTIONS] : writes DIR/nginx.conf, a self-contained nginx config
# (its own pid, logs and temp paths under DIR; run it with `nginx -p DIR -c DIR/nginx.conf -g
# 'daemon off;'`) whose `http` block holds BODY (server blocks, extra settings) after the settings
# every bench shares: no access log, no limit on requests per keep-alive connection. Workers get
# 4096 connections unless told otherwise (and then a descriptor limit to match).
nginx_conf() {
    local dir=$1 body=$2 connections=${3:-} user="" limit=""
    mkdir -p "$dir/logs" "$dir/tmp"
    chmod -R a+rwX "$dir"
    [[ $(id -u) == 0 ]] && user="user nobody nogroup;"
    [[ -n $connections ]] && limit="worker_rlimit_nofile $((connections + 1000));"
    cat >"$dir/nginx.conf" <<EOF
$user
worker_processes auto;
$limit
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections ${connections:-4096}; }
http {
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    access_log off;
    keepalive_requests 1000000;
    $body
}
EOF
}
