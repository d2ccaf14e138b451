#!/usr/bin/env bash
# One set-up command for a fresh Debian 12 machine (run as root from anywhere):
#   scripts/setup.sh                 # everything, then the main job
#   scripts/setup.sh --prepare-only  # what the tests need (scripts/test.sh uses this)
# Installs the Debian packages in scripts/debian-packages.txt, builds the guest kernel
# (cached; see guest-kernel/build.sh), builds the Rust workspace (release), virtiofsd, the
# guest's read-only root image and its initramfs fallback, then runs the main job.
# --prepare-only leaves out the release build and the main job: the tests build and use the
# debug profile, and a release build of the whole workspace is minutes of CI on 2 cores.
# Safe to run again: every step is skipped or cheap when its result is already there.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

step() { echo "==> $*" >&2; }

install_packages() {
    local wanted missing=()
    wanted=$(sed -e 's/#.*//' -e 's/[[:space:]]//g' scripts/debian-packages.txt | grep -v '^$')
    for pkg in $wanted; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        step "Debian packages: all installed"
        return
    fi
    step "Debian packages: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
}

build_guest_kernel() {
    step "guest kernel"
    guest-kernel/build.sh
}

build_rust() {
    step "Rust workspace (release)"
    command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust (rustup) first" >&2; exit 1; }
    cargo build --release --workspace
}

# virtiofsd, the virtio-fs project's vhost-user file server, one per pod (docs/virtio-fs.md).
# Pinned; installed from crates.io with its lock file. Skipped when that version is installed.
VIRTIOFSD_VERSION=1.14.0
VIRTIOFSD_ROOT=/usr/local/lib/rust-vm
build_virtiofsd() {
    local bin=$VIRTIOFSD_ROOT/bin/virtiofsd
    if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -qF "$VIRTIOFSD_VERSION"; then
        step "virtiofsd $VIRTIOFSD_VERSION: installed ($bin)"
        return
    fi
    step "virtiofsd $VIRTIOFSD_VERSION: building from crates.io into $VIRTIOFSD_ROOT"
    cargo install --locked --quiet --root "$VIRTIOFSD_ROOT" --version "$VIRTIOFSD_VERSION" virtiofsd
}

build_guest_root() {
    step "guest root image and fallback initramfs (the static agent as /init; cached by the agent's hash)"
    rootfs/build-guest-image.sh >/dev/null
    rootfs/build-initramfs.sh >/dev/null
}

run_main_job() {
    step "main job: a busybox container in its own microVM (scripts/hello-microvm.sh)"
    scripts/hello-microvm.sh
}

prepare_only=false
case "${1:-}" in
    --prepare-only) prepare_only=true ;;
    "") ;;
    *) echo "usage: scripts/setup.sh [--prepare-only]" >&2; exit 2 ;;
esac

install_packages
build_guest_kernel
$prepare_only || build_rust
build_virtiofsd
build_guest_root
step "set-up done"
if ! $prepare_only; then
    run_main_job
fi
