#!/usr/bin/env bash
# One callgrind profile of the messaging benchmark per workload: 100 MESSAGEs online and 100
# offline at 20/s after 1 s of warm-up, Huddle under callgrind with instrumentation on for the
# measured runs only (bench/profile-hook.sh). The store is seeded natively first (10,003 users,
# one durable put each: too slow under valgrind), then the same configuration is run under
# callgrind. Dumps: OUT/callgrind.out.PID.1 (online) and .2 (offline); rows per message with
# bench/messaging/callgrind-rows.py OUT [OUT...].
#
#   bench/messaging/callgrind.sh OUT [HUDDLE [MESSAGING_LIB]]
#   CG_THREADS=1 bench/messaging/callgrind.sh OUT ...   (one dump per thread; then
#   bench/messaging/callgrind-threads.py OUT [OUT...])
#
# (the branch msgcost's measurements, bench/NOTES.md; earlier branches used /tmp copies of it)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
if [[ ${1:-} == --server ]]; then
	# Called by run.sh as HUDDLE_BIN: run --config FILE
	shift
	bin=${CG_HUDDLE:?}
	cfg=$3
	port=$(grep -o 'udp:127.0.0.1:[0-9]*' "$cfg" | head -1 | cut -d: -f3)
	"$bin" run --config "$cfg" </dev/null >"$cfg.seed.log" 2>&1 &
	pid=$!
	for _ in $(seq 1 300); do
		if ss -lun | grep -q ":$port "; then break; fi
		sleep 0.2
	done
	kill -INT $pid
	wait $pid || true
	# CG_THREADS=1: one dump per thread (callgrind.out.PID.N-TID), for per-thread figures
	# (bench/messaging/callgrind-threads.py); callgrind-rows.py reads the default dumps.
	separate=no
	if [[ ${CG_THREADS:-} == 1 ]]; then separate=yes; fi
	exec valgrind --tool=callgrind --instr-atstart=no --separate-threads=$separate \
		--callgrind-out-file="${CALLGRIND_OUT:?}" "$bin" "$@"
fi
out=${1:?usage: callgrind.sh OUT [HUDDLE [MESSAGING_LIB]]}
huddle=${2:-$repo/target/release/huddle}
lib=${3:-$repo/target/release/libhuddle_plugin_messaging.so}
mkdir -p "$out"
out=$(cd "$out" && pwd)
wrapper=$(mktemp)
trap 'rm -f "$wrapper"' EXIT
printf '#!/usr/bin/env bash\nexec %q --server "$@"\n' "$here/callgrind.sh" >"$wrapper"
chmod +x "$wrapper"
CG_HUDDLE=$huddle HUDDLE_BIN=$wrapper MESSAGING_LIB=$lib \
	CALLGRIND_OUT=$out/callgrind.out.%p BENCH_SERVERS=huddle BENCH_RATES_ONLINE=20 \
	BENCH_RATES_OFFLINE=20 BENCH_DURATION=5 BENCH_WARMUP=1 PROFILE=callgrind \
	BENCH_HOOK=$repo/bench/profile-hook.sh "$here/run.sh" >"$out/run.log" 2>&1
grep -E '^huddle ' "$out/run.log"
