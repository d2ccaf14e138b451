#!/usr/bin/env bash
# Build the rust-vm guest kernel (x86_64 ELF vmlinux) and install it at a stable path.
#
#   guest-kernel/build.sh            build (or reuse the cached build) and install
#   guest-kernel/build.sh --print-key   print the cache key and exit
#
# Environment (all optional):
#   RUST_VM_CACHE          cache root                  (default /var/cache/rust-vm)
#   RUST_VM_KERNEL_SRC     kernel tree or tarball      (default /usr/src/linux-source-6.12.tar.xz)
#   RUST_VM_VMLINUX        where to install vmlinux    (default /var/lib/rust-vm/vmlinux)
#   RUST_VM_KERNEL_PATCHES 0 to skip guest-kernel/patches (e.g. for a PVM tree they do not fit)
#   RUST_VM_KERNEL_JOBS    make -j                     (default: number of CPUs)
#   RUST_VM_KEEP_KERNEL_TREE 1 to keep the build tree in the cache (for debugging)
#
# The build happens once per key: a hash of the config fragment, the patches, this script and
# the source version. A cache hit re-checks the config and installs in well under a second.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
fragment="$here/rust-vm.config"
patch_dir="$here/patches"
cache_root=${RUST_VM_CACHE:-/var/cache/rust-vm}
src=${RUST_VM_KERNEL_SRC:-/usr/src/linux-source-6.12.tar.xz}
install_path=${RUST_VM_VMLINUX:-/var/lib/rust-vm/vmlinux}
use_patches=${RUST_VM_KERNEL_PATCHES:-1}
jobs=${RUST_VM_KERNEL_JOBS:-$(nproc)}
# Options that only a PVM-enabled tree knows; a stock tree drops them silently.
pvm_only_options="CONFIG_PVM_GUEST CONFIG_X86_PIE"

log() { echo "guest-kernel: $*" >&2; }
die() { echo "guest-kernel: error: $*" >&2; exit 1; }

[ -r "$fragment" ] || die "config fragment $fragment not readable"
[ -e "$src" ] || die "kernel source $src does not exist (install linux-source-6.12 or set RUST_VM_KERNEL_SRC)"

patches=()
if [ "$use_patches" = 1 ] && [ -d "$patch_dir" ]; then
    while IFS= read -r p; do patches+=("$p"); done < <(find "$patch_dir" -maxdepth 1 -name '*.patch' | sort)
fi

# A stable description of the source: the Debian package version for the packaged tarball,
# a content hash for any other tarball, kernel version + git state for a directory.
source_id() {
    if [ -d "$src" ]; then
        local ver git_state=none
        ver=$(make -s -C "$src" kernelversion 2>/dev/null) || die "$src is not a kernel tree (make kernelversion failed)"
        if git -C "$src" rev-parse HEAD >/dev/null 2>&1; then
            git_state=$(git -C "$src" describe --always --dirty --abbrev=40)
        fi
        echo "dir:$(realpath "$src"):$ver:$git_state"
    else
        local pkg
        if pkg=$(dpkg-query -S "$(realpath "$src")" 2>/dev/null | cut -d: -f1); then
            echo "deb:$pkg:$(dpkg-query -W -f='${Version}' "$pkg")"
        else
            echo "tar:$(sha256sum "$src" | cut -d' ' -f1)"
        fi
    fi
}

cache_key() {
    {
        echo "source $(source_id)"
        echo "fragment $(sha256sum < "$fragment")"
        echo "script $(sha256sum < "${BASH_SOURCE[0]}")"
        for p in "${patches[@]}"; do echo "patch $(basename "$p") $(sha256sum < "$p")"; done
    } | sha256sum | cut -c1-16
}

# Every option in the fragment must have its value in the final .config; an option that
# Kconfig dropped (missing dependency, renamed symbol) fails the build here.
verify_config() {
    local config=$1 line sym want got failed=0
    while IFS= read -r line; do
        case "$line" in
            CONFIG_*=*) sym=${line%%=*}; want=$line ;;
            "# CONFIG_"*" is not set") sym=${line#\# }; sym=${sym%% *}; want=$line ;;
            *) continue ;;
        esac
        got=$(grep -E "^($sym=|# $sym is not set)" "$config" || true)
        if [ -z "$got" ] && [ "$want" = "# $sym is not set" ]; then
            continue # absent means off
        fi
        [ "$got" = "$want" ] && continue
        if [[ " $pvm_only_options " == *" $sym "* ]] && [ -z "$got" ]; then
            log "$sym: not in this tree (only a PVM-enabled tree has it; see docs/pvm.md)"
            continue
        fi
        echo "guest-kernel: error: $want did not take effect (final .config: ${got:-absent})" >&2
        failed=1
    done < "$fragment"
    [ "$failed" = 0 ] || die "config check failed for $config"
}

key=$(cache_key)
if [ "${1:-}" = "--print-key" ]; then echo "$key"; exit 0; fi

out_dir="$cache_root/kernel/$key"
mkdir -p "$cache_root/kernel"
exec 9> "$cache_root/kernel/.lock"
flock 9 # one build at a time; a second caller waits, then finds the cache filled

if [ -s "$out_dir/vmlinux" ] && [ -s "$out_dir/config" ]; then
    log "cache hit: $out_dir/vmlinux (key $key)"
else
    log "building kernel (key $key) from $src"
    start=$(date +%s)
    work="$out_dir/tree"
    rm -rf "$out_dir"
    mkdir -p "$work"
    if [ -d "$src" ]; then
        # Copy so that patches and build outputs never touch the caller's tree.
        (cd "$src" && tar --exclude=.git -cf - .) | (cd "$work" && tar -xf -)
    else
        tar -xf "$src" -C "$work" --strip-components=1
    fi
    for p in "${patches[@]}"; do
        log "applying patch $(basename "$p")"
        patch -d "$work" -p1 --forward --quiet < "$p" \
            || die "patch $(basename "$p") does not apply to $src (RUST_VM_KERNEL_PATCHES=0 skips our patches)"
    done
    export KBUILD_BUILD_USER=rust-vm KBUILD_BUILD_HOST=rust-vm
    make -C "$work" -s ARCH=x86_64 tinyconfig >/dev/null
    (cd "$work" && scripts/kconfig/merge_config.sh -m -O . .config "$fragment" >/dev/null)
    make -C "$work" -s ARCH=x86_64 olddefconfig >/dev/null
    verify_config "$work/.config"
    make -C "$work" -s ARCH=x86_64 -j"$jobs" vmlinux
    cp "$work/.config" "$out_dir/config"
    cp "$work/System.map" "$out_dir/System.map"
    cp "$work/vmlinux" "$out_dir/vmlinux.tmp"
    mv "$out_dir/vmlinux.tmp" "$out_dir/vmlinux"
    if [ "${RUST_VM_KEEP_KERNEL_TREE:-0}" != 1 ]; then rm -rf "$work"; fi
    log "built in $(( $(date +%s) - start )) s"
fi

verify_config "$out_dir/config"
file -b "$out_dir/vmlinux" | grep -q '^ELF 64-bit LSB executable, x86-64' \
    || die "$out_dir/vmlinux is not an x86-64 ELF executable"

mkdir -p "$(dirname "$install_path")"
cp "$out_dir/vmlinux" "$install_path.tmp.$$"
mv "$install_path.tmp.$$" "$install_path"
cp "$out_dir/config" "$install_path.config"
log "installed $install_path ($(stat -c %s "$install_path") bytes, key $key)"
