#!/usr/bin/env bash
# The project's one test command: prepares what the tests need (idempotent and cached: Debian
# packages, guest kernel, virtiofsd, guest image and initramfs), checks formatting and lints, then
# runs every test — including the ones marked #[ignore] because they need root, /dev/kvm or a
# real containerd. Nothing is skipped silently: a missing prerequisite fails its test.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh --prepare-only

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test (all tests, root/KVM ones included)"
cargo test --workspace --no-fail-fast -- --include-ignored
