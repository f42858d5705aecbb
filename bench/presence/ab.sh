#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Alternating rounds of bench/presence/run.sh for two builds, each round side by side with
# Kamailio, so that both builds see the same machine load (other jobs come and go):
#
#   AB_BASE="/path/old/huddle /path/old/libhuddle_plugin_presence.so" \
#   AB_NEW="target/release/huddle target/release/libhuddle_plugin_presence.so" \
#   AB_ROUNDS=3 bench/presence/ab.sh
#
# Every PRES_* variable is passed on to run.sh. Prints each round's result lines (prefixed
# with the round and build) and keeps them in $AB_OUT (default: a file under /tmp, printed at
# the end); the medians are for the reader to take from those lines.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
rounds=${AB_ROUNDS:-2}
read -r base_bin base_lib <<<"${AB_BASE:?AB_BASE=\"HUDDLE_BIN PRESENCE_LIB\" of the old build}"
read -r new_bin new_lib <<<"${AB_NEW:?AB_NEW=\"HUDDLE_BIN PRESENCE_LIB\" of the new build}"
out=${AB_OUT:-$(mktemp "${TMPDIR:-/tmp}/huddle-bench-presence-ab.XXXXXX")}

for ((r = 1; r <= rounds; r++)); do
	for build in base new; do
		if [[ $build == base ]]; then bin=$base_bin lib=$base_lib; else bin=$new_bin lib=$new_lib; fi
		load=$(cut -d' ' -f1 /proc/loadavg)
		HUDDLE_BIN=$(realpath "$bin") PRESENCE_LIB=$(realpath "$lib") "$here/run.sh" 2>&1 |
			grep -E '^(huddle|kamailio) |^Huddle/Kamailio' |
			sed "s/^/round $r $build (load $load): /" | tee -a "$out"
	done
done
echo "results: $out"
