#!/usr/bin/env bash
# A BENCH_HOOK for bench/conference/run.sh that looks at the server only once the room is
# running: DELAY seconds after the hook's start (default 4: every leg has joined), for WIN
# seconds (default 8), so it sees neither the set-up nor the legs hanging up.
#
# Why not bench/profile-hook.sh: it starts `perf record -p` as the server starts, which is when
# the public room's pipeline spawns its threads; threads born while perf attaches are not
# followed, and one such run had no sample at all from the compositor, its convert pool or the
# encoders. Per-thread counts from /proc at stop are racy too: the legs' tiles (and their
# threads) are gone once the load client has hung up.
#
#   BENCH_HOOK=bench/conference/steady-hook.sh STEADY=threads|record bench/conference/run.sh
#
# On a loaded machine the 16 legs may take longer than DELAY to connect, and the load client
# sends video only once all have: such a window sees the canvas going out but little or no
# video coming in (the tiles' `appsrcN:src` threads near idle). Use DELAY=8 (and
# BENCH_CONF_SECS ≥ DELAY + WIN + 2) there, and check the tiles' CPU before reading a window.
#
#   STEADY=threads (default): CPU ticks and voluntary context switches (the thread went to
#     sleep: a wake-up follows) per thread group (appsrcN:src = a tile's depayload, decode and
#     label; queueN:src = the encoders and the tiles' queues; pool-huddle = the compositor's
#     scaling and blending workers; huddle-media = the host's media engine, tokio-rt-worker = the
#     host's shared runtime) over the window,
#     into DIR/groups.txt.
#   STEADY=record: also `perf record -F 499 -g` of the server over the window (DIR/perf.data;
#     FREQ=4999 for more samples of a thread that runs little, e.g. the media thread at N = 4);
#     cores by library and thread: perf report -i DIR/perf.data --sort comm,dso -g none.
#   STEADY=stat: instead of sleeping, `perf stat --per-thread` over the window (DIR/stat.csv):
#     task-clock, context switches, datagrams the server put on the wire (`net:net_dev_queue`)
#     and its socket, epoll and futex system calls, summed per thread group into
#     DIR/stat-groups.txt. Counts compare builds where CPU is too noisy to (the media thread's
#     `epoll_wait`s per `recvmmsg`, context switches per datagram sent).
set -euo pipefail

action=$1 pid=$2 dir=$3
delay=${DELAY:-4} win=${WIN:-8}

# One line per thread: tid, name with its number folded (appsrc7:src -> appsrcN:src),
# voluntary context switches, utime+stime ticks.
snapshot() {
	local t name stat rest
	local -a v
	for t in /proc/"$pid"/task/*; do
		name=$(cat "$t/comm" 2>/dev/null) || continue
		stat=$(cat "$t/stat" 2>/dev/null) || continue
		rest=${stat##*) }
		read -r -a v <<<"$rest"
		echo "${t##*/} $(sed -E 's/[0-9]+(:|$)/N\1/' <<<"$name") \
$(awk '/^voluntary_ctxt_switches/ { print $2 }' "$t/status" 2>/dev/null || echo 0) $((v[11] + v[12]))"
	done
}

case $action in
start)
	(
		sleep "$delay"
		snapshot >"$dir/threads.start"
		if [[ ${STEADY:-threads} == record ]]; then
			timeout -s INT "$win" perf record -q -F "${FREQ:-499}" -g -p "$pid" -o "$dir/perf.data" 2>/dev/null || true
		elif [[ ${STEADY:-threads} == stat ]]; then
			perf stat --per-thread -x, -e task-clock,context-switches,net:net_dev_queue \
				-e syscalls:sys_enter_recvmmsg,syscalls:sys_enter_sendmmsg \
				-e syscalls:sys_enter_epoll_wait,syscalls:sys_enter_futex \
				-p "$pid" -o "$dir/stat.csv" -- sleep "$win" 2>/dev/null || true
			# "name-tid,value,unit,event,…" -> per group (numbers folded as above) and event.
			awk -F, 'NF > 3 && $1 !~ /^#/ {
					n = $1; sub(/-[0-9]+$/, "", n); gsub(/[0-9]+(:|$)/, "N&", n); gsub(/N[0-9]+/, "N", n)
					v[n " " $4] += $2
				}
				END { for (k in v) { split(k, a, " "); printf "%-18s %-34s %12.0f\n", a[1], a[2], v[k] } }' \
				"$dir/stat.csv" | sort >"$dir/stat-groups.txt"
		else
			sleep "$win"
		fi
		snapshot >"$dir/threads.stop"
		# Threads alive over the whole window only.
		awk 'NR == FNR { v[$1] = $3; k[$1] = $4; next }
			($1 in v) { w[$2] += $3 - v[$1]; t[$2] += $4 - k[$1] }
			END { for (g in w) printf "%-18s wakeups %7d ticks %5d\n", g, w[g], t[g] }' \
			"$dir/threads.start" "$dir/threads.stop" | sort >"$dir/groups.txt"
	) &
	echo $! >"$dir/.steady-hook.pid"
	;;
stop)
	# The load client may end before the window does (a short BENCH_CONF_SECS): wait, bounded.
	hook=$(cat "$dir/.steady-hook.pid")
	rm -f "$dir/.steady-hook.pid"
	for _ in $(seq $(((delay + win + 5) * 10))); do
		kill -0 "$hook" 2>/dev/null || break
		sleep 0.1
	done
	;;
*)
	echo "steady-hook.sh: unknown action $action" >&2
	exit 1
	;;
esac
