#!/usr/bin/env bash
# A BENCH_HOOK for bench/conference/run.sh that counts what the server does in a steady room:
# DELAY seconds after the hook's start (default 5: every leg has joined), for WIN seconds
# (default 8), `perf stat` of the server into DIR/stat.csv (CSV, `perf stat -x,`): task-clock,
# context switches, the socket and wake-up system calls, and every uprobe already defined on the
# server's binary. Divide by the canvas frames of the window (the receivers' frame rate × WIN)
# to compare builds whose runs got different frame rates on a busy machine.
#
#   B=/path/to/release/huddle
#   perf probe -x $B --add "hin=$(nm $B | awk '/ _ZN5str0m3Rtc12handle_input17h/ {print $3}')"
#   perf probe -x $B --add "spr=$(nm $B | awk '/ _ZN6huddle5media6driver15send_plugin_rtp17h/ {print $3}')"
#   perf probe -x $B --add "apply=$(nm $B | awk '/ _ZN6huddle5media6driver6Driver5apply17h/ {print $3}')"
#   BENCH_HOOK=bench/conference/count-hook.sh BENCH_HOOK_DIR=/tmp/x BENCH_CONF_AUDIO=no \
#     BENCH_CONF_SIZES=16 BENCH_CONF_DELAY_N=0 BENCH_CONF_VIDEO_DELAY_N=0 bench/conference/run.sh
#   perf probe -d 'probe_huddle:*'      # afterwards
#
# COUNT_EVENTS=ev1,ev2 adds events of other objects, e.g. uprobes on GStreamer's libraries
# (`perf probe -x /usr/lib/x86_64-linux-gnu/libgstapp-1.0.so.0 --add 'push=gst_app_src_push_buffer'`
# counts the packets pushed into the tiles' `appsrc`s, `gst_video_decoder_finish_frame` in
# libgstvideo the frames the tiles decoded).
#
# `hin`: passes of the legs' `Rtc`s (receives and timer passes); `spr`: packets a plugin wrote
# into a leg; `apply`: commands the media engine applied. Uprobes cost a few µs a hit: CPU
# figures of a counted run are not comparable with uncounted ones.
set -euo pipefail

action=$1 pid=$2 dir=$3
delay=${DELAY:-5} win=${WIN:-8}

case $action in
start)
	exe=$(readlink -f "/proc/$pid/exe")
	probes=$(perf probe -l 2>/dev/null | grep -F "in $exe)" | awk '{print $1}' | paste -sd, - || true)
	[[ -n ${COUNT_EVENTS:-} ]] && probes+="${probes:+,}$COUNT_EVENTS"
	(
		sleep "$delay"
		perf stat -x, -e task-clock,context-switches \
			-e syscalls:sys_enter_recvmmsg,syscalls:sys_enter_sendmmsg \
			-e syscalls:sys_enter_epoll_wait,syscalls:sys_enter_futex${probes:+,$probes} \
			-p "$pid" -o "$dir/stat.csv" -- sleep "$win" 2>/dev/null || true
	) &
	echo $! >"$dir/.count-hook.pid"
	;;
stop)
	# The load client may end before the window does: wait, bounded.
	hook=$(cat "$dir/.count-hook.pid")
	rm -f "$dir/.count-hook.pid"
	for _ in $(seq $(((delay + win + 5) * 10))); do
		kill -0 "$hook" 2>/dev/null || break
		sleep 0.1
	done
	;;
*)
	echo "count-hook.sh: unknown action $action" >&2
	exit 1
	;;
esac
