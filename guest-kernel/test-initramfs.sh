#!/usr/bin/env bash
# Build the tiny test initramfs used by boot tests and experiments: /init is a static binary that
# prints RUST-VM-INIT-REACHED on the console, then the guest's uptime, and reboots.
#   guest-kernel/test-initramfs.sh [OUT] [--gzip]
# OUT defaults to ${RUST_VM_CACHE:-/var/cache/rust-vm}/test-initramfs.cpio. The archive is left
# uncompressed by default: on a host that emulates guest ring 0 (docs/pvm-host-boot.md) the
# kernel's gzip inflate costs ~10 s, the plain copy ~3 s. --gzip writes a gzip cpio instead.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out="" gzip=0
for arg in "$@"; do
    case "$arg" in
        --gzip) gzip=1 ;;
        -*) echo "usage: $0 [OUT] [--gzip]" >&2; exit 2 ;;
        *) out=$arg ;;
    esac
done
out=${out:-${RUST_VM_CACHE:-/var/cache/rust-vm}/test-initramfs.cpio}
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/dev" "$root/proc" "$(dirname "$out")"
gcc -static -Os -s -o "$root/init" "$here/test-init/init.c"
mknod "$root/dev/console" c 5 1
(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) > "$out.tmp"
if [ "$gzip" = 1 ]; then gzip -9 -c "$out.tmp" > "$out.tmp.gz" && mv "$out.tmp.gz" "$out.tmp"; fi
mv "$out.tmp" "$out"
echo "$out"
