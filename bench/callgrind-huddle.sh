#!/usr/bin/env bash
# Huddle under callgrind with instrumentation off until bench/profile-hook.sh turns it on for a
# measured run: HUDDLE_BIN=bench/callgrind-huddle.sh BENCH_HOOK=bench/profile-hook.sh bench/run.sh
# (low rates: callgrind runs the server ~50x slower). Output: CALLGRIND_OUT (default
# /tmp/callgrind.out.%p), one file per dump; read with callgrind_annotate.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec valgrind --tool=callgrind --instr-atstart=no \
	--callgrind-out-file="${CALLGRIND_OUT:-/tmp/callgrind.out.%p}" \
	"${CALLGRIND_HUDDLE:-$here/../target/release/huddle}" "$@"
