#!/usr/bin/env bash
# Builds the guest's read-only root image: a small file system whose /init is the static rust-vm
# agent, with the empty directories it mounts on (/dev, /proc, /sys, /run) and the /dev/console
# node the kernel opens for init before anything is mounted. Nothing else: no shell, no libc.
# The VMM attaches it read-only as the first virtio-blk disk and the kernel boots with
# `root=/dev/vda ro init=/init`; every VM reads the same file, so the host's page cache holds one
# copy for all of them (docs/guest-image.md).
#
# Usage: rootfs/build-guest-image.sh [--agent PATH] [--output PATH] [--format ext4|erofs]
#   --agent PATH     use this static agent binary instead of building one
#   --output PATH    install the image here (default /var/lib/rust-vm/guest-root.img, or
#                    $RUST_VM_GUEST_IMAGE)
#   --format FORMAT  ext4 (default) or erofs (needs erofs-utils; kept to measure against ext4)
#
# The image is cached under ${RUST_VM_CACHE:-/var/cache/rust-vm}/guest-image/, keyed by the
# SHA-256 of the agent binary and of this script: a rebuild happens only when either changes.
# Prints the installed path on success.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${RUST_VM_CACHE:-/var/cache/rust-vm}/guest-image
output=${RUST_VM_GUEST_IMAGE:-/var/lib/rust-vm/guest-root.img}
agent=""
format=ext4

while [ $# -gt 0 ]; do
    case "$1" in
        --agent) agent=${2:?--agent needs a path}; shift 2 ;;
        --output) output=${2:?--output needs a path}; shift 2 ;;
        --format) format=${2:?--format needs ext4 or erofs}; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-guest-image.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

case "$format" in
    ext4) mkfs=mkfs.ext4; package=e2fsprogs ;;
    erofs) mkfs=mkfs.erofs; package=erofs-utils ;;
    *) echo "build-guest-image.sh: --format must be ext4 or erofs, not $format" >&2; exit 2 ;;
esac
for tool in "$mkfs" sha256sum; do
    command -v "$tool" >/dev/null || { echo "build-guest-image.sh: $tool not found (apt-get install $package coreutils)" >&2; exit 1; }
done

# shellcheck source=rootfs/agent.sh
. "$repo/rootfs/agent.sh"
[ -n "$agent" ] || agent=$(build_static_agent)
require_static_agent "$agent"

key=$(cat "$agent" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)
cached=$cache/guest-root-$key.$format
if [ ! -s "$cached" ]; then
    mkdir -p "$cache"
    root=$(mktemp -d)
    trap 'rm -rf "$root" "$cached.tmp.$$"' EXIT
    install -m 0755 "$agent" "$root/init"
    mkdir -p "$root/dev" "$root/proc" "$root/sys" "$root/run"
    mknod -m 0600 "$root/dev/console" c 5 1
    # Fixed timestamps, owners and identifiers: the same agent gives the same image.
    find "$root" -exec touch -h -d @0 {} +
    case "$format" in
        ext4)
            # The agent plus a quarter for metadata, in 4 KiB blocks, at least 1 MiB; no journal
            # (never written) and few inodes.
            kib=$(( $(du -sk "$root" | cut -f1) * 5 / 4 + 1024 ))
            E2FSPROGS_FAKE_TIME=0 mkfs.ext4 -q -F -b 4096 -N 32 -m 0 -L rust-vm-guest \
                -O ^has_journal,^resize_inode -U clear -E root_owner=0:0,hash_seed=00000000-0000-0000-0000-000000000000 \
                -d "$root" "$cached.tmp.$$" "${kib}k"
            ;;
        erofs)
            mkfs.erofs --quiet -T0 --all-root -U 00000000-0000-0000-0000-000000000000 \
                "$cached.tmp.$$" "$root"
            ;;
    esac
    mv "$cached.tmp.$$" "$cached"
fi
mkdir -p "$(dirname "$output")"
install -m 0444 "$cached" "$output.tmp.$$"
mv "$output.tmp.$$" "$output"
echo "$output"
