#!/usr/bin/env bash
# A BENCH_HOOK for bench/run.sh: profiles the server during each measured run only (never the
# warm-up or the set-up). Called as `profile-hook.sh start|stop PID DIR`.
#
#   PROFILE=callgrind (default): the server must run under callgrind with instrumentation off,
#     e.g. HUDDLE_BIN=bench/callgrind-huddle.sh; start zeroes the counters and turns it on, stop
#     turns it off and dumps (callgrind.out.PID.N in the server's folder, or CALLGRIND_OUT's).
#   PROFILE=perf: `perf stat` of the server's threads (context switches, CPU migrations, cycles
#     and instructions, user and kernel cycles, system calls by kind) into DIR/perf-stat.txt.
#   PROFILE=record: `perf record -g` of the server (DIR/perf.data; read it with perf report).
#   Both follow every process of the server's tree, as of the start: Kamailio's workers are
#   processes of their own, which the main pid alone would leave out.
#   PROFILE=strace: `strace -c -f` of the server and every process under it (system calls
#     counted, DIR/strace.txt).
#
#   HUDDLE_BIN=bench/callgrind-huddle.sh BENCH_RATE... BENCH_HOOK=bench/profile-hook.sh bench/run.sh
set -euo pipefail

action=$1 pid=$2 dir=$3
profile=${PROFILE:-callgrind}
state=$dir/.profile-hook.pid
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Per-thread CPU (utime+stime ticks by thread name) at start and stop, whatever the profile:
# DIR/threads.txt gets the difference (where the server's CPU went: SIP thread, store writer...).
thread_ticks() {
	local f stat rest
	local -a v
	for f in /proc/"$pid"/task/*/stat; do
		stat=$(cat "$f" 2>/dev/null) || continue
		rest=${stat##*) }
		read -r -a v <<<"$rest"
		name=${stat#*(}
		echo "${name%%)*} $((v[11] + v[12]))"
	done | awk '{ t[$1] += $2 } END { for (n in t) print n, t[n] }' | sort
}
if [[ $action == start ]]; then
	thread_ticks >"$dir/.threads.start"
else
	thread_ticks | join -a 1 - "$dir/.threads.start" |
		awk '{ printf "%-20s %6d ticks\n", $1, $2 - $3 }' >"$dir/threads.txt" || true
fi

case $profile:$action in
callgrind:start)
	callgrind_control -z "$pid" >/dev/null
	callgrind_control -i on "$pid" >/dev/null
	;;
callgrind:stop)
	callgrind_control -i off "$pid" >/dev/null
	callgrind_control -d "measured run $(basename "$dir")" "$pid" >/dev/null
	;;
perf:start)
	perf stat -e task-clock,context-switches,cpu-migrations,page-faults,cycles,instructions \
		-e cycles:u,cycles:k,raw_syscalls:sys_enter,syscalls:sys_enter_recvfrom \
		-e syscalls:sys_enter_sendto,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_futex \
		-e syscalls:sys_enter_recvmmsg,syscalls:sys_enter_sendmmsg,syscalls:sys_enter_write \
		-e syscalls:sys_enter_read,syscalls:sys_enter_pwrite64,syscalls:sys_enter_fsync \
		-e syscalls:sys_enter_fdatasync,syscalls:sys_enter_madvise,syscalls:sys_enter_mmap,syscalls:sys_enter_munmap,syscalls:sys_enter_mprotect,syscalls:sys_enter_brk \
		-p "$(proc_tree "$pid" | paste -sd,)" -o "$dir/perf-stat.txt" &
	echo $! >"$state"
	;;
record:start)
	perf record -q -g -p "$(proc_tree "$pid" | paste -sd,)" -o "$dir/perf.data" 2>/dev/null &
	echo $! >"$state"
	;;
strace:start)
	# Every process of the server's tree (Kamailio's workers are processes, not threads: -f
	# alone follows only the threads and the children started after the attach).
	attach=()
	for p in $(proc_tree "$pid"); do attach+=(-p "$p"); done
	strace -c -f "${attach[@]}" -o "$dir/strace.txt" 2>/dev/null &
	echo $! >"$state"
	;;
perf:stop | record:stop | strace:stop)
	[[ -f $state ]] || exit 0
	tool=$(cat "$state")
	rm -f "$state"
	kill -INT "$tool" 2>/dev/null || true
	# perf and strace write their summary on SIGINT; wait for them (bounded).
	for _ in $(seq 50); do
		kill -0 "$tool" 2>/dev/null || break
		sleep 0.1
	done
	;;
*)
	echo "profile-hook.sh: unknown PROFILE=$profile or action $action" >&2
	exit 1
	;;
esac
