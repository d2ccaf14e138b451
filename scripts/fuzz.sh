#!/usr/bin/env bash
# Coverage-guided fuzzing of rust-vm's guest- and peer-facing parsers with AFL++ (cargo-afl,
# stable toolchain). Builds the targets in fuzz/afl, runs each for a fixed number of
# executions, one after the other, and prints one line per target.
#
#   scripts/fuzz.sh [--execs N] [--max-seconds S] [target...]
#
# --execs N        executions per target (default 10000000)
# --max-seconds S  stop a target after S seconds even if it has not reached N (default: none)
# targets          blk vsock mmio net agent_frame agent_dispatch oci_spec (default: all)
#
# Exits non-zero if a target crashed, hung, or stopped short of N executions. Findings and
# queues are under $CARGO_TARGET_DIR/fuzz-out/<target>/ (default target/fuzz-out/).
set -euo pipefail

CARGO_AFL_VERSION=0.18.2
ALL_TARGETS=(blk vsock mmio net agent_frame agent_dispatch oci_spec)

root=$(cd "$(dirname "$0")/.." && pwd)
execs=10000000
max_seconds=
targets=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --execs) execs=$2; shift 2 ;;
        --max-seconds) max_seconds=$2; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
[[ ${#targets[@]} -gt 0 ]] || targets=("${ALL_TARGETS[@]}")
for t in "${targets[@]}"; do
    [[ " ${ALL_TARGETS[*]} " == *" $t "* ]] || { echo "unknown target $t" >&2; exit 2; }
done

if ! cargo afl --version 2>/dev/null | grep -q "$CARGO_AFL_VERSION"; then
    cargo install --locked cargo-afl --version "$CARGO_AFL_VERSION"
fi
# Builds AFL++ for this rustc once; "already built" is fine.
cargo afl config --build >/dev/null 2>&1 || true

target_dir=${CARGO_TARGET_DIR:-$root/target}
out_root=$target_dir/fuzz-out
mkdir -p "$out_root"
(cd "$root/fuzz/afl" && CARGO_TARGET_DIR=$target_dir/afl cargo afl build --release)
bin_dir=$target_dir/afl/release

echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "execs per target: $execs${max_seconds:+ (at most ${max_seconds}s each)}"

stat() { sed -n "s/^$1 *: *//p" "$2"; }

failed=0
summary=()
for t in "${targets[@]}"; do
    out=$out_root/$t
    rm -rf "$out"
    args=(-i "$root/fuzz/corpus/$t" -o "$out" -E "$execs")
    [[ -z $max_seconds ]] || args+=(-V "$max_seconds")
    start=$(date +%s)
    AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 \
        AFL_NO_AFFINITY=1 \
        cargo afl fuzz "${args[@]}" "$bin_dir/$t" >"$out_root/$t.log" 2>&1 || true
    wall=$(( $(date +%s) - start ))
    stats=$out/default/fuzzer_stats
    if [[ ! -f $stats ]]; then
        echo "$t: afl-fuzz did not start, see $out_root/$t.log" >&2
        tail -20 "$out_root/$t.log" >&2
        failed=1
        continue
    fi
    done_execs=$(stat execs_done "$stats")
    # Crashes and hangs are counted from the files, which the stats write only periodically.
    crashes=$(find "$out/default/crashes" -type f -name 'id:*' 2>/dev/null | wc -l)
    hangs=$(find "$out/default/hangs" -type f -name 'id:*' 2>/dev/null | wc -l)
    corpus=$(find "$out/default/queue" -maxdepth 1 -type f -name 'id:*' | wc -l)
    rate=$(awk -v e="$done_execs" -v s="$wall" 'BEGIN { printf "%.0f", (s > 0 ? e / s : e) }')
    line=$(printf '%-15s execs=%-10s execs/s=%-7s wall=%ss crashes=%s hangs=%s corpus=%s' \
        "$t" "$done_execs" "$rate" "$wall" "$crashes" "$hangs" "$corpus")
    if (( crashes > 0 || hangs > 0 )) || (( done_execs < execs )); then
        line+="  FAIL"
        failed=1
    fi
    echo "$line"
    summary+=("$line")
done

echo "== summary (cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'))"
printf '%s\n' "${summary[@]}"
exit $failed
