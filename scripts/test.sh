#!/usr/bin/env bash
# Run Huddle's whole test suite: formatting and lint gates, unit and sans-IO tests, the RFC 4475
# corpus over the wire, and real clients (JsSIP, SIP.js in Node, SIPp) against a real server.
# Installs the test dependencies (apt packages, npm packages) when they are missing.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
bash scripts/install-deps.sh --test
command -v cargo >/dev/null || { echo "test.sh: cargo is missing: install Rust (rustup) first" >&2; exit 1; }
# One build from scratch, as CI does it: incremental state would only cost disk (gigabytes).
export CARGO_INCREMENTAL=0
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --no-fail-fast
# The fuzz crate lives outside the workspace; its seed corpus (with every reproducer found so
# far) runs through the fuzz checks on stable Rust.
(cd fuzz && cargo fmt -- --check && cargo clippy --locked --all-targets -- -D warnings && cargo test --locked)
