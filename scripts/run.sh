#!/usr/bin/env bash
# Start Huddle with the default configuration (config/huddle.toml) and the embedded store,
# installing what is missing and building a release binary first. Ctrl-C stops it.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
bash scripts/install-deps.sh
command -v cargo >/dev/null || { echo "run.sh: cargo is missing: install Rust (rustup) first" >&2; exit 1; }
cargo build --release --bin huddle
mkdir -p .huddle
exec target/release/huddle run --config config/huddle.toml "$@"
