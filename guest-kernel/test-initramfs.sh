#!/usr/bin/env bash
# Build the tiny test initramfs used by boot experiments: /init is a static binary that prints
# RUST-VM-INIT-REACHED on the console and reboots. Output: gzip cpio at $1
# (default ${RUST_VM_CACHE:-/var/cache/rust-vm}/test-initramfs.cpio.gz).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${1:-${RUST_VM_CACHE:-/var/cache/rust-vm}/test-initramfs.cpio.gz}
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/dev" "$root/proc" "$(dirname "$out")"
gcc -static -Os -s -o "$root/init" "$here/test-init/init.c"
mknod "$root/dev/console" c 5 1
(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -9 > "$out.tmp"
mv "$out.tmp" "$out"
echo "$out"
