#!/usr/bin/env bash
# OCI runtime validation: runs our validation suite (tests/runtime-tools/src/rvvalidate, built
# offline on Debian's golang-github-opencontainers-runtime-tools-dev) against runc and against
# rust-vm (namespaces back-end), and prints both results side by side.
#
# Usage: tests/runtime-tools/run.sh [--report-only] [-run REGEXP]
#   --report-only  exit 0 even when rust-vm fails a case that runc passes
# Environment: RUST_VM, RUST_VM_AGENT (binaries; default: built with cargo), RUNC (default runc),
#              CARGO_TARGET_DIR. Needs root.
# Exit status: 0 when rust-vm passes every case runc passes, except those listed with a reason in
# known-differences.txt; 1 otherwise; 2 on set-up errors.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
report_only=0
filter=()
while [ $# -gt 0 ]; do
    case "$1" in
        --report-only) report_only=1; shift ;;
        -run) filter=(-run "${2:?-run needs a regexp}"); shift 2 ;;
        -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

[ "$(id -u)" = 0 ] || { echo "run.sh: needs root (containers)" >&2; exit 2; }
for tool in go "${RUNC:-runc}" /bin/busybox; do
    command -v "$tool" >/dev/null || { echo "run.sh: $tool not found (apt-get install golang-go runc busybox-static)" >&2; exit 2; }
done
[ -d /usr/share/gocode/src/github.com/opencontainers/runtime-tools/generate ] ||
    { echo "run.sh: apt-get install golang-github-opencontainers-runtime-tools-dev" >&2; exit 2; }

target=${CARGO_TARGET_DIR:-$repo/target}
if [ -z "${RUST_VM:-}" ] || [ -z "${RUST_VM_AGENT:-}" ]; then
    (cd "$repo" && cargo build -q -p rust-vm-cli -p rust-vm-agent >&2)
fi
rust_vm=${RUST_VM:-$target/debug/rust-vm}
agent=${RUST_VM_AGENT:-$target/debug/rust-vm-agent}

work=$(mktemp -d /tmp/rust-vm-validation.XXXXXX)
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT

# GOPATH mode: the suite's imports resolve to Debian's /usr/share/gocode, offline.
(cd "$here" && GO111MODULE=off GOPATH="$here:/usr/share/gocode" GOCACHE="$work/gocache" \
    GOFLAGS= go build -o "$work/rvvalidate" rvvalidate)

run_suite() { # name, runtime command
    "$work/rvvalidate" -runtime "$2" -busybox /bin/busybox -work "$work/$1" "${filter[@]}" \
        > "$work/$1.tap" 2>&1 || true
}
mkdir -p "$work/runc" "$work/rust-vm"
run_suite runc "${RUNC:-runc} --root $work/runc-state"
run_suite rust-vm "$rust_vm --root $work/rust-vm-state --backend namespaces --config /dev/null --agent $agent"

results() { # "case pass|FAIL" per line
    sed -n -E -e 's/^ok [0-9]+ - ([^ ]+).*/\1 pass/p' -e 's/^not ok [0-9]+ - ([^ ]+).*/\1 FAIL/p' "$work/$1.tap"
}
join -a1 -a2 -e missing -o 0,1.2,2.2 <(results runc | sort) <(results rust-vm | sort) > "$work/both"

known() { grep -v '^#' "$here/known-differences.txt" | awk -v c="$1" '$1 == c { $1 = ""; sub(/^ /, ""); print; found = 1 } END { exit !found }'; }
printf '%-40s %-8s %-8s\n' CASE runc rust-vm
regressions=()
expected=()
while read -r name a b; do
    note=""
    if [ "$a" = pass ] && [ "$b" != pass ]; then
        if reason=$(known "$name"); then
            expected+=("$name: $reason")
            note="(known difference)"
        else
            regressions+=("$name")
            note="<-- regression"
        fi
    fi
    printf '%-40s %-8s %-8s %s\n' "$name" "$a" "$b" "$note"
done < "$work/both"
total=$(results runc | wc -l)
printf '\npassed: runc %d/%d, rust-vm %d/%d\n' \
    "$(results runc | grep -c ' pass$' || true)" "$total" \
    "$(results rust-vm | grep -c ' pass$' || true)" "$(results rust-vm | wc -l)"
if [ ${#expected[@]} -gt 0 ]; then
    echo "known differences (tests/runtime-tools/known-differences.txt):"
    printf '  %s\n' "${expected[@]}"
fi
if [ ${#regressions[@]} -gt 0 ]; then
    echo
    echo "rust-vm fails ${#regressions[@]} case(s) that runc passes: ${regressions[*]}"
    echo "its TAP output:"
    grep -A6 '^not ok' "$work/rust-vm.tap" || true
    [ "$report_only" = 1 ] || exit 1
fi
