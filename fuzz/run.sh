#!/bin/sh
# Runs one fuzz target the way the counts in README.md were taken:
#   fuzz/run.sh <target> [runs]        (default 10000000 runs; from any directory)
# One process at low priority, AddressSanitizer, optimised with debug assertions and overflow
# checks on (-O -a). New inputs go to fuzz/corpus/<target>/ (not committed), seeded from
# fuzz/seeds/<target>/; a crash is written to fuzz/artifacts/<target>/. Extra arguments after the
# run count go to `cargo fuzz run` (e.g. `-s none` to run without a sanitizer). libFuzzer's output
# (with -jobs it writes to a log file) is in fuzz/fuzz-0.log.
set -eu
cd "$(dirname "$0")"
target=$1
runs=${2:-10000000}
[ $# -ge 2 ] && shift 2 || shift $#
mkdir -p "corpus/$target"
start=$(date +%s)
nice -n 19 cargo +nightly fuzz run "$target" -O -a "$@" "corpus/$target" "seeds/$target" -- \
    -runs="$runs" -max_len=4096 -timeout=30 -dict=json.dict -print_final_stats=1 \
    -jobs=1 -workers=1 || status=$?
echo "$target: exit ${status:-0} after $(( $(date +%s) - start )) s"
grep -E '^#[0-9]+.*DONE|stat::number_of_executed_units|stat::average_exec_per_sec|SUMMARY|panicked' fuzz-0.log || true
exit "${status:-0}"
