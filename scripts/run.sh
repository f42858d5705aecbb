#!/usr/bin/env bash
# Start Huddle with the default configuration (config/huddle.toml) and the embedded store,
# installing what is missing and building release binaries first: the server and the plugins
# the demo page uses (presence, messaging, conference, screenshare). Ctrl-C stops it.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
bash scripts/install-deps.sh
command -v cargo >/dev/null || { echo "run.sh: cargo is missing: install Rust (rustup) first" >&2; exit 1; }
cargo build --release -p huddle --bin huddle
cargo build --release -p huddle-plugin-presence -p huddle-plugin-messaging -p huddle-plugin-conference \
  -p huddle-plugin-screenshare
mkdir -p .huddle
# Huddle prints the WebSocket URL, the demo users and the demo page's URL ([web] listen):
#   Demo page: open http://127.0.0.1:8000/ in two browser tabs
exec target/release/huddle run --config config/huddle.toml "$@"
