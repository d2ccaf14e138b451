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
target=x86_64-unknown-linux-gnu

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

if [ -z "$agent" ]; then
    target_dir=${CARGO_TARGET_DIR:-$repo/target}
    # libseccomp must be linked statically too (libseccomp-sys links it dynamically unless told).
    seccomp_dir=${LIBSECCOMP_LIB_PATH:-$(pkg-config --variable=libdir libseccomp 2>/dev/null || echo /usr/lib/x86_64-linux-gnu)}
    [ -f "$seccomp_dir/libseccomp.a" ] ||
        { echo "build-initramfs.sh: $seccomp_dir/libseccomp.a not found (apt-get install libseccomp-dev)" >&2; exit 1; }
    # --target keeps RUSTFLAGS away from build scripts and proc macros (they must stay dynamic).
    (cd "$repo" && LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH="$seccomp_dir" \
        RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
        cargo build --release --locked -p rust-vm-agent --target "$target" >&2)
    agent=$target_dir/$target/release/rust-vm-agent
fi
[ -x "$agent" ] || { echo "build-initramfs.sh: agent binary $agent not found or not executable" >&2; exit 1; }
# /init runs before any library exists in the guest: refuse an agent with an interpreter or any
# needed shared library (a static-pie binary with a NEEDED entry starts and then jumps to 0).
if readelf -l "$agent" 2>/dev/null | grep -q 'Requesting program interpreter' ||
    readelf -d "$agent" 2>/dev/null | grep -q '(NEEDED)'; then
    echo "build-initramfs.sh: $agent is not fully static ($(readelf -d "$agent" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | tr '\n' ' ')); build it with LIBSECCOMP_LINK_TYPE=static RUSTFLAGS=\"-C target-feature=+crt-static\" --target $target" >&2
    exit 1
fi

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
