#!/usr/bin/env bash
# Regenerates include/huddle_plugin.h from src/abi.rs with cbindgen, so the C header and the
# Rust ABI module cannot drift apart. Run it after every change to src/abi.rs and commit the
# header; tests/header_up_to_date.rs fails when the checked-in header is stale.
#
#   sdk/generate-header.sh            writes sdk/include/huddle_plugin.h
#   sdk/generate-header.sh OUTPUT     writes OUTPUT instead (the test uses this)
#
# Needs cbindgen: `apt-get install -y cbindgen` (Debian 12 ships 0.24.3, the version the
# checked-in header was generated with; other versions may format it differently).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/include/huddle_plugin.h}"
expected_version="0.24.3"

if ! command -v cbindgen >/dev/null 2>&1; then
    echo "generate-header.sh: cbindgen is not installed; install it with: apt-get install -y cbindgen" >&2
    exit 127
fi
version="$(cbindgen --version | awk '{print $2}')"
if [ "$version" != "$expected_version" ]; then
    echo "generate-header.sh: warning: cbindgen $version, the header was made with $expected_version" >&2
fi

tmp="$(mktemp)"
trap 'rm -f "$tmp"' EXIT
# Only src/abi.rs is parsed: it is self-contained, and the rest of the crate is no business of C.
cbindgen --quiet --config "$here/cbindgen.toml" --lang c --output "$tmp" "$here/src/abi.rs"
# cbindgen writes negative constants bare (`#define X -1`); parenthesise them so that
# `a-HUDDLE_ERR_INTERNAL` cannot turn into `a--1`.
sed -E 's/^(#define [A-Z0-9_]+) (-[0-9]+)$/\1 (\2)/' "$tmp" >"$out"
