#!/usr/bin/env bash
# Instructions per request through the classic stack and each of its layers, under callgrind.
#
# Instruction counts do not move with the machine's load, so before/after comparisons made with
# this script hold on a busy machine where timings do not. For each variant of
# crates/strata/examples/classic_cost.rs it runs N1 and N2 requests and prints
# (Ir(N2) - Ir(N1)) / (N2 - N1): the cost of one request, start-up (and the first, argon2-verified,
# request) excluded. "layer" is that figure minus the empty stack's.
#
#   bash bench/instructions.sh                      # every variant
#   VARIANTS="empty classic" bash bench/instructions.sh
#   SKIP_BUILD=1 N1=1000 N2=5000 bash bench/instructions.sh
set -euo pipefail
cd "$(dirname "$0")/.."

N1=${N1:-1000}
N2=${N2:-6000}
VARIANTS=${VARIANTS:-"empty timing request_id access_log cors basic_auth classic-nolog classic"}

command -v valgrind >/dev/null || { echo "valgrind is needed: apt-get install -y valgrind" >&2; exit 1; }
if [[ -z "${SKIP_BUILD:-}" ]]; then
  cargo build --release -q -p strata-http --example classic_cost
fi
bin=${CARGO_TARGET_DIR:-target}/release/examples/classic_cost
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

instructions() { # VARIANT N -> total instructions of the run
  valgrind --tool=callgrind --callgrind-out-file="$out/cg" "$bin" "$1" "$2" 2>&1 |
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}

printf '%-14s %12s %12s\n' variant "Ir/request" "vs empty"
empty=""
for v in $VARIANTS; do
  a=$(instructions "$v" "$N1")
  b=$(instructions "$v" "$N2")
  per=$(( (b - a) / (N2 - N1) ))
  [[ $v == empty ]] && empty=$per
  if [[ -n $empty && $v != empty ]]; then
    printf '%-14s %12d %12d\n' "$v" "$per" $(( per - empty ))
  else
    printf '%-14s %12d %12s\n' "$v" "$per" -
  fi
done
