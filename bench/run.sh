#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Side-by-side SIP benchmark: Kamailio (bench/kamailio) and, when built, Huddle, in the same run.
#
#   bench/run.sh                    # both servers (Huddle skipped with a message if not built)
#   BENCH_SERVERS=kamailio bench/run.sh
#
# For each server, one after the other on fresh free ports, with SIPp (-r rate, -m count):
#   register  authenticated REGISTER (401 round + 200), users u0000..u9999
#   message   MESSAGE with 407 round, relayed to bob, registered by a SIPp UA that answers 200
#   call      INVITE with 407 round, 180/200, ACK, BYE through the Record-Routing proxy to bob
# then, with bench/wsload (SIPml5-shaped WebSocket clients, one user and connection each):
#   ws        "WS REGISTER refresh": REGISTER refreshes with pre-emptive digest (nc+1), and
#             "WS MESSAGE relay": MESSAGE from user i to user i+1, both on WebSockets, answered
#             200 by the receiving client (the sender took its 407 round before the run)
# and reports per workload: achieved ops/s, failure %, p50/p99 response time (SIPp -trace_rtt,
# whole milliseconds; register/message: first request -> 200; call: first INVITE -> 200), server
# CPU (user+sys of the server's processes and their children, from /proc, before/after) as
# CPU ms per 1,000 operations (one SIPp call) and per 1,000 server transactions (requests with a
# final response: register 2, message 2, call 3; ACKs not counted; ws 1), then Huddle/Kamailio
# ratios. ws response times are wsload's (microseconds, shown in ms): send -> final response.
#
# Environment (defaults): BENCH_SERVERS="kamailio huddle" BENCH_WORKLOADS="register message call ws"
#   BENCH_DURATION=10 (measured s per workload) BENCH_WARMUP=2 (s of the same load before, unmeasured)
#   BENCH_REG_RATE=2000 BENCH_MSG_RATE=2000 BENCH_CALL_RATE=300 (ops/s, all SIPp processes)
#   BENCH_TRANSPORT=u1 (or t1) BENCH_TX_PER_SIPP=6000 (transactions/s per SIPp UAC
#   process before the load is split over several) HUDDLE_BIN=target/release/huddle
#   HUDDLE_BASE_BIN= (another Huddle build, measured as server "huddle-base" when BENCH_SERVERS
#   names it, e.g. "kamailio huddle-base huddle": before/after figures from the same run)
#   BENCH_KEEP=0 (1: keep the work folder with all SIPp and server logs)
#   BENCH_WS_CONNECTIONS=2000 BENCH_WS_REG_RATE=1000 BENCH_WS_MSG_RATE=1000 (ops/s)
#   WSLOAD_BIN=target/release/wsload (build: cargo build --release -p huddle-wsload)
#   BENCH_ORDER=servers (each server runs every workload, then the next server) or interleaved
#   (per workload group — register; message + call; ws — every server in turn, the order
#   rotated per group: compared runs close in time, no build always first; more server starts)
#   BENCH_NICE=-10 (priority of everything started here, servers and load alike; 0: unchanged)
#   BENCH_START_SECONDS=20 (how long Huddle may take to answer OPTIONS; more under valgrind)
#   BENCH_HOOK= (a command run as `HOOK start PID DIR` just before and `HOOK stop PID DIR` just
#   after each measured run, PID the server's main process, DIR the workload's folder: e.g.
#   bench/profile-hook.sh, which turns callgrind's instrumentation on and off or runs perf/strace)
# Bounded: every process runs under timeout(1), the whole run stays under 10 minutes with the
# defaults (BENCH_MAX_SECONDS=480 stops starting new workloads), and everything started here is
# stopped on exit.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

servers=${BENCH_SERVERS:-kamailio huddle}
workloads=" ${BENCH_WORKLOADS:-register message call ws} "
duration=${BENCH_DURATION:-10}
warmup=${BENCH_WARMUP:-2}
reg_rate=${BENCH_REG_RATE:-2000}
msg_rate=${BENCH_MSG_RATE:-2000}
call_rate=${BENCH_CALL_RATE:-300}
transport=${BENCH_TRANSPORT:-u1}
tx_per_sipp=${BENCH_TX_PER_SIPP:-6000}
huddle_bin=${HUDDLE_BIN:-$repo/target/release/huddle}
huddle_base_bin=${HUDDLE_BASE_BIN:-}
wsload_bin=${WSLOAD_BIN:-$repo/target/release/wsload}
ws_conns=${BENCH_WS_CONNECTIONS:-2000}
ws_reg_rate=${BENCH_WS_REG_RATE:-1000}
ws_msg_rate=${BENCH_WS_MSG_RATE:-1000}
max_seconds=${BENCH_MAX_SECONDS:-480}
bench_nice=${BENCH_NICE:--10}
domain=example.test
ip=127.0.0.1
# SIPp's default 64 KB socket buffers overflow in bursts on a busy machine; the resulting
# retransmissions would be charged to the server. The kernel caps this at net.core.rmem_max.
sock_buf=4194304

[[ $warmup =~ ^[0-9]+$ ]] || die "BENCH_WARMUP must be a whole number of seconds"
[[ $bench_nice =~ ^-?[0-9]+$ ]] || die "BENCH_NICE must be a whole number (-20..19)"
for v in duration reg_rate msg_rate call_rate tx_per_sipp max_seconds ws_conns ws_reg_rate ws_msg_rate; do
	[[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, got '${!v}'"
done
case $transport in u1 | t1) ;; *) die "BENCH_TRANSPORT must be u1 or t1" ;; esac
for tool in sipp ss pgrep getconf timeout awk; do
	command -v "$tool" >/dev/null || die "$tool not found (run: scripts/install-deps.sh --bench)"
done
clk_tck=$(getconf CLK_TCK)
rmem_max=$(cat /proc/sys/net/core/rmem_max 2>/dev/null || echo 0)
if ((rmem_max < 1048576)); then
	note "warning: net.core.rmem_max is $rmem_max; UDP bursts may be dropped and retransmitted" \
		"(raise it: sysctl -w net.core.rmem_max=$sock_buf)"
fi
# Everything this script starts (servers, SIPp, wsload) inherits its priority. Above the
# machine's other work (builds, editors), the servers and the load compete only with each other,
# as on a quiet machine: on a busy 2-core machine, preemption by unrelated processes otherwise
# decides the p99 (both servers, all load processes: the same priority). Each server is in a
# session of its own and gets the same (prioritize in lib.sh).
if ((bench_nice != 0)); then
	if prioritize "$bench_nice" $$; then
		note "running at nice $bench_nice (BENCH_NICE; servers and load generators alike)"
	else
		note "warning: could not set nice $bench_nice (BENCH_NICE; needs CAP_SYS_NICE); running at nice $(nice)"
	fi
fi
if [[ $workloads == *" ws "* ]]; then
	if [[ ! -x $wsload_bin ]]; then
		note "wsload: $wsload_bin not found - skipping the ws workload (build it: cargo build --release -p huddle-wsload)"
		workloads=${workloads/ ws / }
	else
		# wsload and the server each hold one descriptor per connection; both inherit this limit.
		nofile_need=$((ws_conns + 4096))
		if (($(ulimit -Sn) < nofile_need)); then
			nofile_hard=$(ulimit -Hn)
			[[ $nofile_hard == unlimited ]] || ((nofile_hard >= nofile_need)) || nofile_need=$nofile_hard
			ulimit -Sn "$nofile_need" || note "warning: could not raise the open files limit to $nofile_need"
		fi
		# Kamailio's tcp_max_connections defaults to 2048 (kamailio.cfg does not change it).
		((ws_conns <= 2000)) || note "warning: Kamailio accepts at most 2048 TCP connections; $ws_conns WebSockets will fail there"
	fi
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/huddle-bench.XXXXXX")
results=$work/results.tsv
: >"$results"

# --- process bookkeeping and cleanup -------------------------------------------------------
bg_pids=()       # SIPp runs (each a timeout(1) wrapper) still to reap
uas_pid=""       # bob's SIPp UA for the current server
huddle_pid=""    # Huddle, when started
kam_env=()       # environment that addresses our Kamailio instance for bench/kamailio/run.sh

stop_pid() { # stop_pid PID: TERM, wait up to 10 s, then KILL.
	local pid=$1
	[[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	wait_pids_gone 10 "$pid" || kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

stop_uas() {
	stop_pid "$uas_pid"
	uas_pid=""
}

stop_server() {
	stop_uas
	if ((${#kam_env[@]})); then
		env "${kam_env[@]}" "$here/kamailio/run.sh" stop >/dev/null 2>&1 || true
		kam_env=()
	fi
	if [[ -n $huddle_pid ]]; then
		local -a tree
		mapfile -t tree < <(proc_tree "$huddle_pid")
		kill -TERM "$huddle_pid" 2>/dev/null || true
		if ! wait_pids_gone 15 "${tree[@]}"; then
			kill -KILL "${tree[@]}" 2>/dev/null || true
		fi
		wait "$huddle_pid" 2>/dev/null || true
		huddle_pid=""
	fi
}

cleanup() {
	local pid
	for pid in "${bg_pids[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	stop_server
	if [[ ${BENCH_KEEP:-0} == 1 ]]; then
		note "work folder kept: $work"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- inputs -----------------------------------------------------------------------------------
# Bench users u0000..u9999 (password = name + "-pw"), each calling/messaging bob.
{
	echo SEQUENTIAL
	for ((i = 0; i < 10000; i++)); do
		printf -v u 'u%04d' "$i"
		echo "$u;$domain;[authentication username=$u password=$u-pw];bob"
	done
} >"$work/users.csv"

# users_slice K N: the K-th of N disjoint slices of the users, as an injection file.
users_slice() {
	local k=$1 n=$2 file=$work/users.$1.of.$2.csv
	[[ -f $file ]] || awk -v k="$k" -v n="$n" 'NR == 1 || (NR - 2) % n == k' "$work/users.csv" >"$file"
	echo "$file"
}

huddle_config() { # huddle_config FILE SIP_PORT WS_PORT STORE
	local i u
	{
		echo "# Generated by bench/run.sh"
		echo "[sip]"
		echo "domain = \"$domain\""
		echo "listen = [\"udp:$ip:$2\", \"tcp:$ip:$2\", \"ws:$ip:$3\"]"
		echo
		echo "[store]"
		echo "path = \"$4\""
		echo
		echo "# All load comes from 127.0.0.1: lift the per-IP request limit (keys of config/huddle.toml)."
		echo "[limits]"
		echo "requests_per_second_per_ip = 1000000"
		echo "request_burst_per_ip = 1000000"
		echo "# ... and the per-IP connection cap (256), for the WebSocket clients of the ws workload."
		echo "max_connections = $((ws_conns + 1000 > 10000 ? ws_conns + 1000 : 10000))"
		echo "max_connections_per_ip = $((ws_conns + 1000))"
		echo
		echo "# Like Kamailio's debug=1: no per-request logging."
		echo "[log]"
		echo "level = \"warn\""
		for u in alice bob carol; do
			printf '\n[[users]]\nname = "%s"\npassword = "%s-pw"\n' "$u" "$u"
		done
		for ((i = 0; i < 10000; i++)); do
			printf -v u 'u%04d' "$i"
			printf '\n[[users]]\nname = "%s"\npassword = "%s-pw"\n' "$u" "$u"
		done
	} >"$1"
}

# --- servers ----------------------------------------------------------------------------------
# prioritize_tree PID: BENCH_NICE for a server's processes (they inherit it, except those
# started before this, as Kamailio's children) and its session's group.
prioritize_tree() {
	local pid
	for pid in $(proc_tree "$1"); do
		prioritize "$bench_nice" "$pid" || note "warning: could not set nice $bench_nice for pid $pid"
	done
}

server_pids=()
sip_port=""
ws_port=""

start_kamailio() {
	sip_port=$(free_port 25060)
	ws_port=$(free_port 28070)
	# tm keeps finished transactions for seconds: at thousands per second they need a big pool
	# (a full pool shows up as 500 replies and "out of mem" in the log).
	kam_env=(KAM_IP="$ip" KAM_SIP_PORT="$sip_port" KAM_WS_PORT="$ws_port" KAM_DIR="$work/kamailio"
		KAM_SHM_MB="${KAM_SHM_MB:-1024}")
	if ! env "${kam_env[@]}" "$here/kamailio/run.sh" start; then
		kam_env=()
		return 1
	fi
	server_pids=("$(env "${kam_env[@]}" "$here/kamailio/run.sh" pid)")
	((bench_nice == 0)) || prioritize_tree "${server_pids[0]}"
	note "kamailio: $(proc_tree "${server_pids[0]}" | wc -l) processes (main pid ${server_pids[0]})"
}

start_huddle() { # start_huddle NAME BINARY
	local name=$1 bin=$2
	if [[ ! -x $bin ]]; then
		note "$name: '$bin' not found - skipping it (build it: cargo build --release -p huddle)"
		return 1
	fi
	sip_port=$(free_port 26060)
	local deadline dir=$work/$name
	local log=$dir/huddle.log
	ws_port=$(free_port 28081)
	mkdir -p "$dir"
	# A fresh store each start (BENCH_ORDER=interleaved starts a server once per workload group).
	rm -f "$dir/huddle.redb"
	huddle_config "$dir/huddle.toml" "$sip_port" "$ws_port" "$dir/huddle.redb"
	setsid "$bin" run --config "$dir/huddle.toml" </dev/null >"$log" 2>&1 &
	huddle_pid=$!
	((bench_nice == 0)) || prioritize_tree "$huddle_pid"
	deadline=$((SECONDS + ${BENCH_START_SECONDS:-20}))
	until sip_probe "$ip" "$sip_port"; do
		if ! kill -0 "$huddle_pid" 2>/dev/null || ((SECONDS >= deadline)); then
			tail -n 15 "$log" >&2 || true
			note "$name: did not answer SIP OPTIONS on tcp $ip:$sip_port within ${BENCH_START_SECONDS:-20} s - skipping Huddle"
			stop_server
			return 1
		fi
		sleep 0.2
	done
	server_pids=("$huddle_pid")
	note "$name: pid $huddle_pid on $ip:$sip_port (ws $ws_port)"
}

# --- SIPp -------------------------------------------------------------------------------------
# start_uas DIR: bob's UA (tests/sipp/uas_bob.xml + uas_bob_calls.xml): registers bob, answers
# MESSAGE and INVITE/BYE, until stopped.
start_uas() {
	local dir=$1 port i
	mkdir -p "$dir"
	port=$(free_port 35060)
	(
		cd "$dir"
		exec timeout -k 5 $((duration * 6 + 120)) sipp "$ip:$sip_port" -t "$transport" -i "$ip" -p "$port" \
			-sf "$repo/tests/sipp/uas_bob.xml" -oocsf "$repo/tests/sipp/uas_bob_calls.xml" \
			-inf "$repo/tests/sipp/bob.csv" -auth_uri "$domain" -m 1 -nd -nostdin \
			-set expect 1000000000 -set wait_ms $(((duration * 6 + 60) * 1000)) \
			-trace_logs -log_file "$dir/uas.log" -buff_size "$sock_buf" \
			-max_recv_loops 10000 -max_sched_loops 10000 >"$dir/uas.out" 2>&1
	) &
	uas_pid=$!
	for ((i = 0; i < 100; i++)); do
		grep -q '^registered' "$dir/uas.log" 2>/dev/null && return 0
		kill -0 "$uas_pid" 2>/dev/null || break
		sleep 0.1
	done
	note "bob's UA did not register (see $dir)"
	stop_uas
	return 1
}

# stat_col FILE COLUMN: value of a column (by header name) in the last line of a SIPp stat file.
stat_col() {
	awk -F';' -v col="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == col) c = i; next }
		{ last = $c } END { print (last == "" ? 0 : last) + 0 }' "$1"
}

# sipp_load DIR SCENARIO AUTH_URI RATE COUNT PROCS: COUNT calls at RATE/s split over PROCS SIPp
# processes, each with its own slice of the users; waits for all. Stats, rtt and errors go to
# DIR. AUTH_URI: the scenario's Request-URI without "sip:" (SIPp 3.6 would put the server's
# ip:port in the digest uri, which a server checking it against the Request-URI rejects).
sipp_load() {
	local dir=$1 scenario=$2 auth_uri=$3 rate=$4 count=$5 procs=$6 k r m port rc limit
	local -a pids=()
	mkdir -p "$dir"
	# A SIPp run that falls behind stops at twice its nominal length (+15 s) and counts as failed.
	limit=$((count * 2 / rate + 15))
	for ((k = 0; k < procs; k++)); do
		# Split rate and count evenly; the first processes take the remainders.
		r=$((rate / procs + (k < rate % procs ? 1 : 0)))
		m=$((count / procs + (k < count % procs ? 1 : 0)))
		port=$(free_port $((40000 + k * 10)))
		(
			cd "$dir"
			exec timeout -k 5 $((limit + 30)) sipp "$ip:$sip_port" -t "$transport" -i "$ip" \
				-p "$port" -sf "$here/sipp/$scenario" -inf "$(users_slice "$k" "$procs")" -auth_uri "$auth_uri" \
				-r "$r" -m "$m" -nostdin -timeout "${limit}s" \
				-trace_stat -stf "$dir/stat.$k.csv" -fd 1 -trace_rtt -rtt_freq 100 \
				-trace_err -error_file "$dir/errors.$k.log" -buff_size "$sock_buf" \
				-max_recv_loops 10000 -max_sched_loops 10000 >"$dir/sipp.$k.out" 2>&1
		) &
		pids+=("$!")
		bg_pids+=("$!")
	done
	for k in "${!pids[@]}"; do
		rc=0
		wait "${pids[$k]}" || rc=$?
		((rc == 0 || rc == 1)) || note "SIPp process $k exited with $rc (see $dir/sipp.$k.out)"
	done
	bg_pids=()
}

# run_workload SERVER NAME SCENARIO AUTH_URI RATE TX_PER_OP: warm up, then one measured SIPp load;
# appends a result row. TX_PER_OP: server transactions (requests answered with a final response;
# ACKs not counted) per operation; it also sizes the number of SIPp processes.
run_workload() {
	local server=$1 name=$2 scenario=$3 auth_uri=$4 rate=$5 tx=$6
	local dir=$work/$server/$name count procs k ok=0 failed=0 t0 t1 c0 c1 pct w0 wait_ms wait_max_ms d0_all d0_server d1_all d1_server
	if ((SECONDS > max_seconds)); then
		note "$server/$name: skipped, the run has used ${SECONDS}s of its ${max_seconds}s budget"
		return 0
	fi
	count=$((rate * duration))
	procs=$(((rate * tx + tx_per_sipp - 1) / tx_per_sipp))
	if ((warmup > 0)); then
		# Not measured: first-touch memory, caches and lazily built state would otherwise be
		# charged to whichever server runs first.
		sipp_load "$dir/warmup" "$scenario" "$auth_uri" "$rate" $((rate * warmup)) "$procs"
	fi
	note "$server/$name: $count ops at $rate/s over $procs SIPp process(es)"
	measure_hook start "$dir" "${server_pids[0]}"
	c0=$(cpu_ticks "${server_pids[@]}")
	w0=$(sched_wait "${server_pids[@]}")
	read -r d0_all d0_server <<<"$(udp_drops "$sip_port")"
	t0=$(date +%s%N)
	sipp_load "$dir" "$scenario" "$auth_uri" "$rate" "$count" "$procs"
	t1=$(date +%s%N)
	c1=$(cpu_ticks "${server_pids[@]}")
	measure_hook stop "$dir" "${server_pids[0]}"
	read -r wait_ms wait_max_ms <<<"$(sched_wait_delta "$w0" "$(sched_wait "${server_pids[@]}")")"
	read -r d1_all d1_server <<<"$(udp_drops "$sip_port")"
	note "$server/$name: server threads waited ${wait_ms} ms for a core (longest one thread: ${wait_max_ms} ms);" \
		"UDP datagrams dropped, receive buffer full: $((d1_server - d0_server)) at the server, $((d1_all - d0_all)) machine-wide"
	for ((k = 0; k < procs; k++)); do
		[[ -f $dir/stat.$k.csv ]] || continue
		ok=$((ok + $(stat_col "$dir/stat.$k.csv" 'SuccessfulCall(C)')))
		failed=$((failed + $(stat_col "$dir/stat.$k.csv" 'FailedCall(C)')))
	done
	# Response times of RTD 1 from every process: nearest-rank percentiles. (SIPp writes its
	# samples in blocks of -rtt_freq, so up to 99 per process are left out.)
	pct=$({ cat "$dir"/*_rtt.csv 2>/dev/null || true; } | awk -F';' '$3 == 1 { print $2 }' | sort -n |
		awk '{ v[NR] = $1 } END {
			if (NR == 0) { print "- -"; exit }
			i50 = int(NR * 0.50); if (i50 < NR * 0.50) i50++; if (i50 < 1) i50 = 1
			i99 = int(NR * 0.99); if (i99 < NR * 0.99) i99++; if (i99 < 1) i99 = 1
			print v[i50], v[i99] }')
	# Row: server workload ops ops/s fail% p50 p99 cpu_s cpu_ms/1000ops cpu_ms/1000tx
	awk -v s="$server" -v n="$name" -v ok="$ok" -v f="$failed" -v t0="$t0" -v t1="$t1" -v tx="$tx" \
		-v c="$((c1 - c0))" -v hz="$clk_tck" -v pct="$pct" 'BEGIN {
		split(pct, p, " "); secs = (t1 - t0) / 1e9; cpu = c / hz
		printf "%s\t%s\t%d\t%.0f\t%.2f\t%s\t%s\t%.2f\t%s\t%s\n", s, n, ok,
			(secs > 0 ? ok / secs : 0), (ok + f > 0 ? 100 * f / (ok + f) : 100), p[1], p[2], cpu,
			(ok > 0 ? sprintf("%.1f", cpu * 1e6 / ok) : "-"),
			(ok > 0 ? sprintf("%.1f", cpu * 1e6 / (ok * tx)) : "-") }' >>"$results"
	if ((failed > 0)); then
		note "$server/$name: $failed failed call(s); first errors in $dir/errors.*.log"
	fi
}

# --- WebSocket load (bench/wsload) -------------------------------------------------------------
# run_ws_workload SERVER NAME PHASE RATE: one wsload run (connect, clear the user's bindings left
# by the SIPp workloads, register every connection, 407 round for message, warm-up at RATE), then
# the measured run: wsload --sync stops before and after it so the server's CPU is read around
# exactly that. One server transaction per operation.
run_ws_workload() {
	local server=$1 name=$2 phase=$3 rate=$4
	local dir=$work/$server/ws-$phase ready_limit limit pid rfd wfd line summary="" t0 t1 c0 c1 rc w0 wait_ms wait_max_ms
	if ((SECONDS > max_seconds)); then
		note "$server/$name: skipped, the run has used ${SECONDS}s of its ${max_seconds}s budget"
		return 0
	fi
	mkdir -p "$dir"
	# Set-up (bounded by --setup-timeout 60), the 407 round (a second per 1000 senders), warm-up;
	# then the run, the drain (2 x 5 s response timeout at most) and the close.
	ready_limit=$((60 + ws_conns / 1000 + 15 + warmup + 15))
	limit=$((ready_limit + duration + 60))
	note "$server/$name: $((rate * duration)) ops at $rate/s over $ws_conns WebSocket connections"
	coproc WSLOAD {
		exec timeout -k 5 "$limit" "$wsload_bin" --url "ws://$ip:$ws_port" --domain "$domain" \
			--users 10000 --connections "$ws_conns" --phase "$phase" --rate "$rate" \
			--duration "$duration" --warmup "$warmup" --setup-timeout 60 --clear-bindings --sync \
			2>"$dir/wsload.err"
	}
	pid=$WSLOAD_PID rfd=${WSLOAD[0]}
	# Coprocess descriptors are closed in subshells; a copy is not. Writes go through a subshell
	# that ignores SIGPIPE, so a wsload that died cannot take this script with it.
	exec {wfd}>&"${WSLOAD[1]}"
	bg_pids+=("$pid")
	if read -r -t "$ready_limit" -u "$rfd" line && [[ $line == "wsload ready" ]]; then
		measure_hook start "$dir" "${server_pids[0]}"
		c0=$(cpu_ticks "${server_pids[@]}")
		w0=$(sched_wait "${server_pids[@]}")
		t0=$(date +%s%N)
		(trap '' PIPE && echo go >&"$wfd") 2>/dev/null || true
		read -r -t $((duration + 30)) -u "$rfd" summary || summary=""
		read -r -t 30 -u "$rfd" line || true # "wsload done": connections still open
		t1=$(date +%s%N)
		c1=$(cpu_ticks "${server_pids[@]}")
		measure_hook stop "$dir" "${server_pids[0]}"
		read -r wait_ms wait_max_ms <<<"$(sched_wait_delta "$w0" "$(sched_wait "${server_pids[@]}")")"
		note "$server/$name: server threads waited ${wait_ms} ms for a core (longest one thread: ${wait_max_ms} ms)"
		(trap '' PIPE && echo close >&"$wfd") 2>/dev/null || true
	else
		note "$server/$name: wsload did not get ready (see $dir/wsload.err)"
		kill -TERM "$pid" 2>/dev/null || true
	fi
	exec {wfd}>&-
	rc=0
	wait "$pid" || rc=$?
	bg_pids=()
	echo "$summary" >"$dir/wsload.out"
	((rc == 0)) || note "$server/$name: wsload exited with $rc (see $dir/wsload.err)"
	[[ $summary == "wsload phase=$phase "* ]] || return 0
	# Row: as run_workload's; wsload's microseconds become milliseconds.
	awk -v s="$server" -v n="$name" -v line="$summary" -v t0="$t0" -v t1="$t1" \
		-v c="$((c1 - c0))" -v hz="$clk_tck" 'BEGIN {
		k = split(line, kv, " ")
		for (i = 1; i <= k; i++) { split(kv[i], p, "="); v[p[1]] = p[2] }
		ok = v["ok"] + 0; f = v["failed"] + 0; secs = (t1 - t0) / 1e9; cpu = c / hz
		p50 = (v["p50_us"] == "-" ? "-" : sprintf("%.2f", v["p50_us"] / 1000))
		p99 = (v["p99_us"] == "-" ? "-" : sprintf("%.2f", v["p99_us"] / 1000))
		printf "%s\t%s\t%d\t%.0f\t%.2f\t%s\t%s\t%.2f\t%s\t%s\n", s, n, ok,
			(secs > 0 ? ok / secs : 0), (ok + f > 0 ? 100 * f / (ok + f) : 100), p50, p99, cpu,
			(ok > 0 ? sprintf("%.1f", cpu * 1e6 / ok) : "-"),
			(ok > 0 ? sprintf("%.1f", cpu * 1e6 / ok) : "-") }' >>"$results"
	if [[ $summary == *" fail_"* ]]; then
		note "$server/$name: failures: $(grep -o 'fail_[^ ]*' <<<"$summary" | tr '\n' ' ')(see $dir/wsload.err)"
	fi
}

bench_server() {
	local server=$1
	case $server in
	kamailio) start_kamailio || return 0 ;;
	huddle) start_huddle huddle "$huddle_bin" || return 0 ;;
	huddle-base) start_huddle huddle-base "$huddle_base_bin" || return 0 ;;
	*) die "unknown server '$server' in BENCH_SERVERS" ;;
	esac
	if [[ $workloads == *" register "* ]]; then
		run_workload "$server" register register.xml "$domain" "$reg_rate" 2
	fi
	if [[ $workloads == *" message "* || $workloads == *" call "* ]] && start_uas "$work/$server/uas"; then
		if [[ $workloads == *" message "* ]]; then
			run_workload "$server" message message.xml "bob@$domain" "$msg_rate" 2
		fi
		if [[ $workloads == *" call "* ]]; then
			run_workload "$server" call call.xml "bob@$domain" "$call_rate" 3
		fi
	fi
	if [[ $workloads == *" ws "* ]]; then
		stop_uas
		run_ws_workload "$server" "WS REGISTER refresh" register "$ws_reg_rate"
		run_ws_workload "$server" "WS MESSAGE relay" message "$ws_msg_rate"
	fi
	stop_server
}

note "work folder $work; $duration s per workload, transport $transport, CLK_TCK $clk_tck"
if [[ ${BENCH_ORDER:-servers} == interleaved ]]; then
	# Workload groups outermost, every server once per group, the servers' order rotated by one
	# per group: runs that are compared sit minutes apart at most, and no build is always first.
	requested=$workloads
	read -r -a order <<<"$servers"
	for group in register "message call" ws; do
		workloads=" "
		for w in $group; do
			[[ $requested == *" $w "* ]] && workloads+="$w "
		done
		[[ $workloads == " " ]] && continue
		for server in "${order[@]}"; do
			bench_server "$server"
		done
		order=("${order[@]:1}" "${order[0]}")
	done
	workloads=$requested
else
	for server in $servers; do
		bench_server "$server"
	done
fi

# --- report -----------------------------------------------------------------------------------
echo
printf '%-11s %-19s %7s %6s %6s %5s %5s %6s %11s %10s\n' server workload ops ops/s fail% p50ms \
	p99ms cpu_s ms/1000ops ms/1000tx
awk -F'\t' '{ printf "%-11s %-19s %7s %6s %6s %5s %5s %6s %11s %10s\n", $1, $2, $3, $4, $5, $6, $7, $8,
	$9, $10 }' "$results"
echo "(tx = server transactions: register 2 (401, 200), message 2 (407, 200), call 3 (407, 200, BYE);"
echo " WS REGISTER refresh 1 (200), WS MESSAGE relay 1 (200 from the receiving WebSocket client))"
for huddle in huddle-base huddle; do
	if ! grep -q "^$huddle	" "$results" || ! grep -q '^kamailio' "$results"; then
		continue
	fi
	echo
	echo "$huddle / Kamailio (below 1: Huddle uses less CPU / answers faster)"
	printf '%-19s %10s %6s %6s %6s\n' workload cpu/tx p50 p99 ops/s
	awk -F'\t' -v h="$huddle" '$1 == "kamailio" { k[$2] = $0 } $1 == h { hu[$2] = $0; order[++n] = $2 }
		function ratio(a, b) { return (b + 0 > 0 && a != "-" && b != "-") ? sprintf("%.2f", a / b) : "-" }
		END { for (i = 1; i <= n; i++) { w = order[i]; if (w in k) {
			split(hu[w], H, "\t"); split(k[w], K, "\t")
			printf "%-19s %10s %6s %6s %6s\n", w, ratio(H[10], K[10]), ratio(H[6], K[6]),
				ratio(H[7], K[7]), ratio(H[4], K[4]) } } }' "$results"
done
