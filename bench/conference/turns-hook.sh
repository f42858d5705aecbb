#!/usr/bin/env bash
# A BENCH_HOOK for bench/conference/run.sh (or bench/media/run.sh) that counts the media
# driver's turns by what woke them, in a steady window: DELAY seconds after the hook's start
# (default 5), for WIN seconds (default 8).
#
#   BENCH_HOOK=bench/conference/turns-hook.sh BENCH_HOOK_DIR=/tmp/x BENCH_CONF_AUDIO=no \
#     BENCH_CONF_SIZES=4 BENCH_CONF_DELAY_N=0 BENCH_CONF_VIDEO_DELAY_N=0 bench/conference/run.sh
#
# It puts uprobes on the server's binary (group `mwturns`, removed again at stop) at three
# functions of media/driver.rs — `Driver::fire_deadlines` (once per turn, after the turn's reads
# or commands), `Driver::read_batch` (a turn woken by the socket) and `Driver::apply` (each
# command applied) — records them with `perf record` and classifies each turn, in time order
# (the driver is one task, on whatever thread runs it): `read` (the socket), `command` (no read,
# a command applied: a plugin's packets or a set-up), `deadline` (neither: a leg's deadline woke
# it, or the socket became writable). Output in DIR/turns.txt, per second of the window. The
# probes cost a few µs a hit: CPU figures of such a run are not comparable with uncounted ones
# (bench/conference/steady-hook.sh STEADY=stat for those). Only out-of-line calls are counted:
# the hook stops when a symbol is missing, but not when some of a function's call sites were
# inlined (check with `perf probe -x BINARY -L` or the disassembly after a compiler change).
set -euo pipefail

action=$1 pid=$2 dir=$3
delay=${DELAY:-5} win=${WIN:-8}

probe() {
	local exe=$1 name=$2 pattern=$3 sym
	# The whole listing read (no early exit: nm's SIGPIPE would fail the pipeline).
	sym=$(nm "$exe" | awk -v p="$pattern" '$0 ~ p && s == "" { s = $3 } END { print s }')
	[[ -n $sym ]] || {
		echo "turns-hook.sh: no symbol matching $pattern in $exe" >&2
		return 1
	}
	perf probe -q -x "$exe" --add "mwturns:$name=$sym" >/dev/null
}

case $action in
start)
	exe=$(readlink -f "/proc/$pid/exe")
	perf probe -q -d 'mwturns:*' >/dev/null 2>&1 || true
	probe "$exe" turn ' _ZN6huddle5media6driver6Driver14fire_deadlines17h'
	probe "$exe" read ' _ZN6huddle5media6driver6Driver10read_batch17h'
	probe "$exe" apply ' _ZN6huddle5media6driver6Driver5apply17h'
	(
		sleep "$delay"
		perf record -q -e 'mwturns:*' -p "$pid" -o "$dir/turns.data" -- sleep "$win" 2>/dev/null || true
	) &
	echo $! >"$dir/.turns-hook.pid"
	;;
stop)
	# The probes go whatever happens below (`set -e`: no turns.data, perf script failing).
	trap "perf probe -q -d 'mwturns:*' >/dev/null 2>&1 || true" EXIT
	hook=$(cat "$dir/.turns-hook.pid")
	rm -f "$dir/.turns-hook.pid"
	for _ in $(seq $(((delay + win + 5) * 10))); do
		kill -0 "$hook" 2>/dev/null || break
		sleep 0.1
	done
	perf script -i "$dir/turns.data" -F tid,event 2>/dev/null |
		awk -v win="$win" '
			{ ev = $2; sub(/^mwturns:/, "", ev); sub(/:$/, "", ev); tids[$1] = 1 }
			ev == "read" { read = 1 }
			ev == "apply" { applied = 1 }
			ev == "turn" {
				if (read) r++; else if (applied) c++; else d++
				read = 0; applied = 0
			}
			END {
				t = r + c + d; n = 0; for (x in tids) n++
				printf "turns %d (%.1f/s): read %d (%.1f/s), command %d (%.1f/s), deadline %d (%.1f/s); threads %d\n",
					t, t / win, r, r / win, c, c / win, d, d / win, n
			}' >"$dir/turns.txt"
	cat "$dir/turns.txt" >&2
	;;
*)
	echo "turns-hook.sh: unknown action $action" >&2
	exit 1
	;;
esac
