#!/usr/bin/env bash
# Runs every fuzz target (or the ones named as arguments) one after the other, each for a bounded
# time, growing fuzz/corpus/<target>/. Exits non-zero when any target found a crash; the
# reproducers are in fuzz/artifacts/<target>/.
#
#   fuzz/run.sh                              # every target, 600 s each
#   SECONDS_PER_TARGET=60 fuzz/run.sh config # one target, one minute
#
# Settings (environment):
#   SECONDS_PER_TARGET  libFuzzer's -max_total_time per target (default 600)
#   RSS_LIMIT_MB        libFuzzer's -rss_limit_mb (default 2048)
#   TIMEOUT_SECONDS     libFuzzer's -timeout: one input slower than this is a crash (default 10)
#   SANITIZER           cargo fuzz --sanitizer (default address)
#   TOOLCHAIN           the nightly toolchain to use (default nightly; stable works with
#                       RUSTC_BOOTSTRAP=1 and TOOLCHAIN=stable)
#   MINIMIZE=1          after each run, shrink the grown corpus to what adds coverage (the
#                       hand-written `seed-*` files are always kept)
set -uo pipefail

cd "$(dirname "$0")"
seconds=${SECONDS_PER_TARGET:-600}
rss=${RSS_LIMIT_MB:-2048}
timeout=${TIMEOUT_SECONDS:-10}
sanitizer=${SANITIZER:-address}
toolchain=${TOOLCHAIN:-nightly}

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo "+$toolchain" fuzz list)
fi

# Overflow checks and debug assertions on: an overflowing size or index is a bug worth a crash.
if ! cargo "+$toolchain" fuzz build --debug-assertions --sanitizer "$sanitizer"; then
    echo "run.sh: the fuzz targets did not build" >&2
    exit 2
fi

# Shrinks what the fuzzer added to corpus/<target>/ to the inputs that add coverage beyond the
# hand-written seeds (`seed-*`, always kept), as `cargo fuzz cmin` does, without dropping a seed.
# Edges only (`-use_counters=0`): counting hits per edge kept thousands of config files, edges
# alone a few hundred, and the fuzzer finds the counts again from them in seconds.
minimize() {
    local target=$1 grown
    grown=$(mktemp -d)
    find "corpus/$target" -maxdepth 1 -type f ! -name 'seed-*' -exec mv -t "$grown" {} +
    if ! cargo "+$toolchain" fuzz run --debug-assertions --sanitizer "$sanitizer" "$target" "corpus/$target" "$grown" \
        -- -merge=1 -use_counters=0 -rss_limit_mb="$rss" -timeout="$timeout" >/dev/null 2>&1; then
        echo "!! $target: minimising failed, the grown corpus is back as it was"
        find "$grown" -maxdepth 1 -type f -exec mv -n -t "corpus/$target" {} +
    fi
    rm -rf "$grown"
    echo "   $target: corpus now $(find "corpus/$target" -type f | wc -l) files"
}

failed=()
summary=()
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "artifacts/$target"
    log=$(mktemp)
    echo "== $target: ${seconds}s"
    # Built again outside the timed run: sources changed since the first build would otherwise be
    # compiled inside the backstop below and eat into the fuzzing time.
    if ! cargo "+$toolchain" fuzz build --debug-assertions --sanitizer "$sanitizer" "$target" >/dev/null 2>&1; then
        failed+=("$target")
        summary+=("$target: did not build")
        continue
    fi
    # The whole run is bounded by -max_total_time; `timeout` is a backstop in case libFuzzer hangs
    # (one input stuck longer than its own -timeout is reported, not waited for).
    timeout --kill-after=30 $((seconds + 120)) \
        cargo "+$toolchain" fuzz run --debug-assertions --sanitizer "$sanitizer" "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb="$rss" -timeout="$timeout" -print_final_stats=1 \
        -artifact_prefix="artifacts/$target/" 2>&1 | tee "$log" | grep -E '^(#[0-9]+[[:space:]]+(INITED|DONE)|==|stat::number_of_executed_units|SUMMARY|Done)'
    status=${PIPESTATUS[0]}
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    if [ "$status" -ne 0 ]; then
        failed+=("$target")
        echo "!! $target: exit $status; reproducer(s) in fuzz/artifacts/$target/, log kept in $log"
        if [ "$status" -eq 124 ]; then
            summary+=("$target: stopped by the backstop timeout (exit 124) after ${execs:-?} executions")
        else
            summary+=("$target: CRASH (exit $status) after ${execs:-?} executions")
        fi
    else
        summary+=("$target: ok, ${execs:-?} executions in ${seconds}s")
        rm -f "$log"
    fi
    if [ "${MINIMIZE:-0}" = 1 ] && [ "$status" -eq 0 ]; then
        minimize "$target"
    fi
done

echo
echo "== summary"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "crashed: ${failed[*]}" >&2
    exit 1
fi
