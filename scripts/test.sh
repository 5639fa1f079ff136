#!/usr/bin/env bash
# Runs every check and test of BigFS: format, lints, unit tests and the
# integration tests (real processes on loopback ports, real FUSE mounts).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The integration tests start the real binaries: build them first.
cargo build --workspace --bins
cargo test --workspace
