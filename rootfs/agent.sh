# Sourced by the guest root builders (build-initramfs.sh, build-guest-image.sh): the static agent
# they put at /init. Needs $repo (the workspace root).

agent_target=x86_64-unknown-linux-gnu

# Builds this tree's agent statically and prints its path: the `guest` profile (the release one
# optimized for size) and a static executable that is not position-independent, so nothing is
# relocated at start (docs/guest-image.md, "The agent's size").
build_static_agent() {
    local target_dir=${CARGO_TARGET_DIR:-$repo/target} seccomp_dir
    # libseccomp must be linked statically too (libseccomp-sys links it dynamically unless told).
    seccomp_dir=${LIBSECCOMP_LIB_PATH:-$(pkg-config --variable=libdir libseccomp 2>/dev/null || echo /usr/lib/x86_64-linux-gnu)}
    [ -f "$seccomp_dir/libseccomp.a" ] ||
        { echo "$(basename "$0"): $seccomp_dir/libseccomp.a not found (apt-get install libseccomp-dev)" >&2; exit 1; }
    # --target keeps RUSTFLAGS away from build scripts and proc macros (they must stay dynamic).
    (cd "$repo" && LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH="$seccomp_dir" \
        RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static -C relocation-model=static" \
        cargo build --profile guest --locked -p rust-vm-agent --target "$agent_target" >&2)
    echo "$target_dir/$agent_target/guest/rust-vm-agent"
}

# Fails unless $1 is an executable with no interpreter and no shared library: /init runs before
# any library exists in the guest (a static-pie binary with a NEEDED entry starts and then jumps
# to 0).
require_static_agent() {
    local agent=$1
    [ -x "$agent" ] || { echo "$(basename "$0"): agent binary $agent not found or not executable" >&2; exit 1; }
    if readelf -l "$agent" 2>/dev/null | grep -q 'Requesting program interpreter' ||
        readelf -d "$agent" 2>/dev/null | grep -q '(NEEDED)'; then
        echo "$(basename "$0"): $agent is not fully static ($(readelf -d "$agent" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | tr '\n' ' ')); build it with LIBSECCOMP_LINK_TYPE=static RUSTFLAGS=\"-C target-feature=+crt-static\" --target $agent_target" >&2
        exit 1
    fi
}
