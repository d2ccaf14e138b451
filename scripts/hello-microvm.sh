#!/usr/bin/env bash
# The main job: make a busybox bundle and run `echo` in it inside its own microVM with
# `rust-vm run`. Exits with the container's status. Uses the release binaries of this checkout.
#   RUST_VM_BACKEND=namespaces scripts/hello-microvm.sh   # the test/debug back-end, no VM
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="$repo/target/release:$PATH"

bundle=$(mktemp -d /tmp/rust-vm-hello.XXXXXX)
trap 'rm -rf "$bundle"' EXIT
mkdir -p "$bundle/rootfs/bin"
cp /bin/busybox "$bundle/rootfs/bin/busybox"
for applet in sh echo cat ls uname; do ln -s busybox "$bundle/rootfs/bin/$applet"; done
(cd "$bundle" && rust-vm spec)
jq '.process.args = ["sh", "-c", "echo hello from a microVM; uname -r"] | .process.terminal = false' \
    "$bundle/config.json" > "$bundle/config.json.new"
mv "$bundle/config.json.new" "$bundle/config.json"

rust-vm check || true   # informative: one line per requirement
echo "==> rust-vm run (back-end: ${RUST_VM_BACKEND:-from config, default vm})"
start=$(date +%s.%N)
status=0
rust-vm run --bundle "$bundle" "hello-$$" </dev/null || status=$?
end=$(date +%s.%N)
printf '==> exit status %d after %.1f s\n' "$status" "$(echo "$end - $start" | bc)"
exit "$status"
