#!/usr/bin/env bash
# bench/media/profile.sh — profiles the server during one echo run (bench/media/run.sh).
#
#   bench/media/profile.sh TARGET_DIR LEGS OUT [SECS]
#
# Starts bench/media/run.sh with TARGET_DIR's release build (CARGO_TARGET_DIR) and LEGS legs,
# waits until every leg is connected and sending, then, for SECS (10) seconds of the run:
#   PROFILE=record (default): `perf record -F 999` of the server with the software cpu-clock
#     (VMs without hardware counters) and call graphs (PERF_CALL_GRAPH, default `dwarf,8192`;
#     `fp` is cheaper but Rust release code keeps no frame pointers) into OUT;
#   PROFILE=count: `perf stat` of the server into OUT: task-clock, context switches, the socket
#     system calls (per datagram and batched) and the wake-ups, and every uprobe already
#     defined on TARGET_DIR's huddle
#     (e.g. `perf probe -x TARGET_DIR/release/huddle --add <mangled str0m::Rtc::poll_output>`:
#     calls into str0m per echoed packet).
#   PROFILE=threads: per thread of the server, over SECS: user and kernel CPU (/proc utime and
#     stime), run time (schedstat), voluntary and involuntary context switches, and (`perf stat
#     --per-thread`) every system call it entered (`raw_syscalls:sys_enter`) and the socket,
#     wake-up and timer calls by name, into OUT (OUT.perf has perf's own table).
# Then prints run.sh's result lines (echoed packets, CPU per echoed packet, steal). OUT.log keeps
# run.sh's whole output. BENCH_MEDIALOADER and the other run.sh variables pass through.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
target=${1:?target dir} legs=${2:?legs} out=${3:?output file} secs=${4:-10}
log=$out.log
CARGO_TARGET_DIR=$target BENCH_MEDIALOADER=${BENCH_MEDIALOADER:-$target/release/medialoader} \
	BENCH_MEDIA_LEGS=$legs BENCH_MEDIA_SECS=$((secs + 6)) "$here/run.sh" >"$log" 2>&1 &
run=$!
for _ in $(seq 200); do
	grep -q "legs connected" "$log" && break
	sleep 0.3
done
server=$(pgrep -P "$run" -x huddle || true)
[[ -n $server ]] || { cat "$log" >&2; echo "profile.sh: no server found" >&2; exit 1; }
# Past the load client's warm-up second.
sleep 3
case ${PROFILE:-record} in
record)
	perf record -q -F 999 -e cpu-clock --call-graph "${PERF_CALL_GRAPH:-dwarf,8192}" \
		-p "$server" -o "$out" -- sleep "$secs" 2>/dev/null
	;;
count)
	probes=$(perf probe -l 2>/dev/null | grep -F "in $target/release/huddle" | awk '{print $1}' | paste -sd, - || true)
	perf stat -e task-clock,context-switches,syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto \
		-e syscalls:sys_enter_recvmmsg,syscalls:sys_enter_sendmmsg \
		-e syscalls:sys_enter_epoll_wait,syscalls:sys_enter_futex${probes:+,$probes} \
		-p "$server" -o "$out" -- sleep "$secs"
	;;
threads)
	snapshot() {
		local t stat rest name run vol invol
		local -a v
		for t in /proc/"$server"/task/*; do
			stat=$(cat "$t/stat" 2>/dev/null) || continue
			rest=${stat##*) }
			read -r -a v <<<"$rest"
			name=${stat#*(}
			name=${name%)*}
			run=$(cut -d' ' -f1 "$t/schedstat" 2>/dev/null) || run=0
			vol=$(awk '/^voluntary_ctxt_switches/ { print $2 }' "$t/status" 2>/dev/null) || vol=0
			invol=$(awk '/^nonvoluntary_ctxt_switches/ { print $2 }' "$t/status" 2>/dev/null) || invol=0
			echo "${t##*/} ${name// /_} ${v[11]} ${v[12]} $run $vol $invol"
		done
	}
	snapshot >"$out.start"
	perf stat --per-thread -x, -e task-clock,context-switches,raw_syscalls:sys_enter \
		-e syscalls:sys_enter_recvmmsg,syscalls:sys_enter_sendmmsg,syscalls:sys_enter_sendmsg \
		-e syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto \
		-e syscalls:sys_enter_epoll_wait,syscalls:sys_enter_futex \
		-p "$server" -o "$out.perf" -- sleep "$secs"
	snapshot | awk -v hz="$(getconf CLK_TCK)" -v start="$out.start" '
		BEGIN { while ((getline l < start) > 0) { split(l, f, " "); s[f[1]] = l } }
		($1 in s) {
			split(s[$1], f, " ")
			n = $2 "/" $1
			printf "%-28s user_ms=%.0f sys_ms=%.0f run_ms=%.1f vol_cs=%d invol_cs=%d\n", n,
				($3 - f[3]) * 1000 / hz, ($4 - f[4]) * 1000 / hz, ($5 - f[5]) / 1e6, $6 - f[6], $7 - f[7]
		}' | sort -t= -k4 -rn >"$out"
	;;
*) echo "profile.sh: PROFILE is record, count or threads" >&2; exit 1 ;;
esac
wait "$run"
grep -E "legs=|echoed|steal|server_cpu" "$log"
