#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Start/stop the baseline Kamailio (bench/kamailio/kamailio.cfg) as a managed background process.
#
#   bench/kamailio/run.sh start    # returns once it answers SIP OPTIONS on TCP (bounded)
#   bench/kamailio/run.sh stop     # returns once the main process and all its children are gone
#   bench/kamailio/run.sh status   # exit 0 when running; prints pid and ports
#   bench/kamailio/run.sh pid      # main PID (for CPU accounting: sum it and its children)
#
# Environment (defaults): KAM_IP=127.0.0.1 KAM_SIP_PORT=5070 (UDP+TCP) KAM_WS_PORT=8070
#   KAM_DOMAIN=example.test KAM_DIR=${TMPDIR:-/tmp}/huddle-kamailio-$KAM_SIP_PORT (pid file, log)
#   KAM_SHM_MB=512 KAM_PKG_MB=16 KAM_START_TIMEOUT=20 KAM_STOP_TIMEOUT=30 (seconds)
#   KAM_MEM=tlsf (memory manager, `-x`: tlsf, qm or fm). Debian's Kamailio defaults to q_malloc
#   built with DBG_SR_MEMORY, 20-35 % dearer per transaction here than TLSF (bench/NOTES.md,
#   "Kamailio's allocator (fairness)"): the baseline is the best-configured Kamailio.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../lib.sh
. "$here/../lib.sh"

KAM_IP=${KAM_IP:-127.0.0.1}
KAM_SIP_PORT=${KAM_SIP_PORT:-5070}
KAM_WS_PORT=${KAM_WS_PORT:-8070}
KAM_DOMAIN=${KAM_DOMAIN:-example.test}
KAM_DIR=${KAM_DIR:-${TMPDIR:-/tmp}/huddle-kamailio-$KAM_SIP_PORT}
KAM_SHM_MB=${KAM_SHM_MB:-512}
KAM_PKG_MB=${KAM_PKG_MB:-16}
KAM_MEM=${KAM_MEM:-tlsf}
KAM_START_TIMEOUT=${KAM_START_TIMEOUT:-20}
KAM_STOP_TIMEOUT=${KAM_STOP_TIMEOUT:-30}
pidfile=$KAM_DIR/kamailio.pid
logfile=$KAM_DIR/kamailio.log

# running_pid: print the PID from the pid file if that process is a live Kamailio.
running_pid() {
	local pid comm
	[[ -r $pidfile ]] || return 1
	pid=$(<"$pidfile")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
	[[ $comm == kamailio ]] || return 1
	grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null && return 1
	echo "$pid"
}

start() {
	local pid deadline
	command -v kamailio >/dev/null || die "kamailio not installed (run: scripts/install-deps.sh --bench)"
	mkdir -p "$KAM_DIR"
	if pid=$(running_pid); then
		if sip_probe "$KAM_IP" "$KAM_SIP_PORT"; then
			note "already running (pid $pid) on $KAM_IP:$KAM_SIP_PORT"
			return 0
		fi
		die "a Kamailio (pid $pid) from $pidfile runs but does not answer on $KAM_IP:$KAM_SIP_PORT; run '$0 stop'"
	fi
	if tcp_listening "$KAM_IP" "$KAM_SIP_PORT" || tcp_listening "$KAM_IP" "$KAM_WS_PORT"; then
		die "port $KAM_SIP_PORT or $KAM_WS_PORT on $KAM_IP is already in use by another process"
	fi
	# -DD: no daemon fork, so $! is Kamailio's main process and we own its lifetime (no -P: an
	# old instance exiting slowly would delete the new one's pid file). -E: log to the log file.
	# setsid: keep terminal signals (Ctrl-C on the caller) away from it; stop is explicit.
	setsid kamailio -DD -E -f "$here/kamailio.cfg" \
		-A "SIP_IP=$KAM_IP" -A "SIP_PORT=$KAM_SIP_PORT" -A "WS_PORT=$KAM_WS_PORT" \
		-A "DOMAIN=\"$KAM_DOMAIN\"" \
		-m "$KAM_SHM_MB" -M "$KAM_PKG_MB" -x "$KAM_MEM" -Y "$KAM_DIR" -w "$KAM_DIR" \
		</dev/null >"$logfile" 2>&1 &
	pid=$!
	echo "$pid" >"$pidfile"
	deadline=$((SECONDS + KAM_START_TIMEOUT))
	until sip_probe "$KAM_IP" "$KAM_SIP_PORT"; do
		if ! kill -0 "$pid" 2>/dev/null; then
			rm -f "$pidfile"
			tail -n 20 "$logfile" >&2 || true
			die "kamailio exited during start-up (log above, full log: $logfile)"
		fi
		if ((SECONDS >= deadline)); then
			tail -n 20 "$logfile" >&2 || true
			stop >/dev/null 2>&1 || true
			die "kamailio did not answer OPTIONS on $KAM_IP:$KAM_SIP_PORT within ${KAM_START_TIMEOUT}s"
		fi
		sleep 0.2
	done
	tcp_listening "$KAM_IP" "$KAM_WS_PORT" || die "kamailio answers SIP but not on WS port $KAM_WS_PORT"
	note "started pid $pid: sip udp/tcp $KAM_IP:$KAM_SIP_PORT, ws $KAM_IP:$KAM_WS_PORT, log $logfile"
}

stop() {
	local pid
	local -a tree
	if ! pid=$(running_pid); then
		rm -f "$pidfile"
		note "not running"
		return 0
	fi
	mapfile -t tree < <(proc_tree "$pid")
	kill -TERM "$pid" 2>/dev/null || true
	if ! wait_pids_gone "$KAM_STOP_TIMEOUT" "${tree[@]}"; then
		note "still running after ${KAM_STOP_TIMEOUT}s; sending SIGKILL"
		kill -KILL "${tree[@]}" 2>/dev/null || true
		wait_pids_gone 5 "${tree[@]}" || die "could not stop kamailio processes: ${tree[*]}"
	fi
	rm -f "$pidfile"
	note "stopped (pid $pid)"
}

case ${1:-} in
start) start ;;
stop) stop ;;
status)
	if pid=$(running_pid); then
		echo "running pid $pid sip $KAM_IP:$KAM_SIP_PORT ws $KAM_IP:$KAM_WS_PORT dir $KAM_DIR"
	else
		echo "not running"
		exit 1
	fi
	;;
pid) running_pid || exit 1 ;;
*)
	echo "usage: $0 start|stop|status|pid   (env: KAM_IP KAM_SIP_PORT KAM_WS_PORT KAM_DIR ...)" >&2
	exit 2
	;;
esac
