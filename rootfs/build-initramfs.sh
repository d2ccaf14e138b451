#!/usr/bin/env bash
# Builds the guest initramfs: a gzip-compressed newc cpio archive whose /init is the static
# rust-vm agent, plus the handful of empty directories and the /dev/console node PID 1 needs
# before it mounts devtmpfs, proc, sysfs and /run itself. Nothing else: no shell, no libc.
#
# Usage: rootfs/build-initramfs.sh [--agent PATH] [--output PATH] [--uncompressed]
#   --agent PATH     use this static agent binary instead of building one
#   --output PATH    install the archive here (default /var/lib/rust-vm/initramfs.cpio.gz,
#                    or $RUST_VM_INITRAMFS)
#   --uncompressed   a plain cpio: on a host that emulates guest ring 0 (PVM) inflating gzip
#                    in the guest costs far more than reading the larger file (pvm-host-boot.md)
#
# The archive is cached under ${RUST_VM_CACHE:-/var/cache/rust-vm}/initramfs/, keyed by the
# SHA-256 of the agent binary and of this script: a rebuild happens only when either changes.
# Prints the installed path on success.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${RUST_VM_CACHE:-/var/cache/rust-vm}/initramfs
output=${RUST_VM_INITRAMFS:-/var/lib/rust-vm/initramfs.cpio.gz}
agent=""
compress=gzip

while [ $# -gt 0 ]; do
    case "$1" in
        --agent) agent=${2:?--agent needs a path}; shift 2 ;;
        --output) output=${2:?--output needs a path}; shift 2 ;;
        --uncompressed) compress=none; shift ;;
        -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-initramfs.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

for tool in cpio gzip sha256sum; do
    command -v "$tool" >/dev/null || { echo "build-initramfs.sh: $tool not found (apt-get install cpio gzip coreutils)" >&2; exit 1; }
done

# shellcheck source=rootfs/agent.sh
. "$repo/rootfs/agent.sh"
[ -n "$agent" ] || agent=$(build_static_agent)
require_static_agent "$agent"

key=$(cat "$agent" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)
suffix=.cpio
if [ "$compress" = gzip ]; then suffix=.cpio.gz; fi
cached=$cache/initramfs-$key$suffix
if [ ! -s "$cached" ]; then
    mkdir -p "$cache"
    root=$(mktemp -d)
    trap 'rm -rf "$root"' EXIT
    install -m 0755 "$agent" "$root/init"
    mkdir -p "$root/dev" "$root/proc" "$root/sys" "$root/run" "$root/tmp" "$root/mnt"
    chmod 1777 "$root/tmp"
    # The kernel opens /dev/console for init's stdio before anything is mounted.
    mknod -m 0600 "$root/dev/console" c 5 1
    # Fixed timestamps and owners: the same agent gives the same archive.
    find "$root" -exec touch -h -d @0 {} +
    (cd "$root" && find . -mindepth 1 | LC_ALL=C sort |
        cpio --quiet -o -H newc -R 0:0 --reproducible) |
        if [ "$compress" = gzip ]; then gzip -n -9; else cat; fi > "$cached.tmp.$$"
    mv "$cached.tmp.$$" "$cached"
fi
mkdir -p "$(dirname "$output")"
install -m 0644 "$cached" "$output.tmp.$$"
mv "$output.tmp.$$" "$output"
echo "$output"
