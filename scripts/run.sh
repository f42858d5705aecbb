#!/usr/bin/env bash
# Start Huddle with the default configuration (config/huddle.toml) and the embedded store,
# installing what is missing and building release binaries first: the server and the plugins
# the demo page uses (presence, messaging, conference). Ctrl-C stops it.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
bash scripts/install-deps.sh
command -v cargo >/dev/null || { echo "run.sh: cargo is missing: install Rust (rustup) first" >&2; exit 1; }
cargo build --release -p huddle --bin huddle
cargo build --release -p huddle-plugin-presence -p huddle-plugin-messaging -p huddle-plugin-conference
mkdir -p .huddle
# The demo page's address: [web] listen from the config.
web=$(sed -n '/^\[web\]/,/^\[/{s/^listen *= *"\(.*\)".*/\1/p}' config/huddle.toml | head -n 1)
if [[ -n $web ]]; then
	echo "run.sh: demo page: open http://$web/ in two browser tabs (users alice/alice-pw, bob/bob-pw, carol/carol-pw)"
fi
exec target/release/huddle run --config config/huddle.toml "$@"
