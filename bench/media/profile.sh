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
*) echo "profile.sh: PROFILE is record or count" >&2; exit 1 ;;
esac
wait "$run"
grep -E "legs=|echoed|steal|server_cpu" "$log"
