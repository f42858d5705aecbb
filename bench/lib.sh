# shellcheck shell=bash
# Helpers shared by bench/run.sh, bench/kamailio/run.sh, bench/presence/run.sh,
# bench/messaging/run.sh and tests/sipp/run.sh (sourced, not run).

# die MESSAGE...: print to stderr and exit 1.
die() {
	printf '%s: error: %s\n' "${0##*/}" "$*" >&2
	exit 1
}

# note MESSAGE...: progress line on stderr (stdout stays for results).
note() {
	printf '%s: %s\n' "${0##*/}" "$*" >&2
}

# _sip_probe_conn HOST PORT TAG: one OPTIONS over a fresh TCP connection; true on a 2xx-6xx reply.
_sip_probe_conn() {
	local host=$1 port=$2 tag=$3 status line
	exec 3<>"/dev/tcp/$host/$port" || return 1
	printf 'OPTIONS sip:%s:%s SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK-probe-%s\r\nFrom: <sip:probe@127.0.0.1>;tag=%s\r\nTo: <sip:%s:%s>\r\nCall-ID: probe-%s@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n' \
		"$host" "$port" "$tag" "$tag" "$host" "$port" "$tag" >&3
	IFS= read -r -t 2 status <&3 || return 1
	# Drain the headers (Content-Length 0) so closing is clean, not a reset the server logs.
	while IFS= read -r -t 1 line <&3 && [[ -n ${line%$'\r'} ]]; do :; done
	[[ $status == "SIP/2.0 "[2-6]* ]]
}

# sip_probe HOST PORT: true when a SIP server answers an OPTIONS over TCP with any final response.
# Plain bash (/dev/tcp); the connect has no timeout of its own, so it runs under timeout(1).
sip_probe() {
	timeout 3 bash -c "$(declare -f _sip_probe_conn)"'; _sip_probe_conn "$@"' sip_probe \
		"$1" "$2" "$RANDOM$RANDOM" 2>/dev/null
}

# tcp_listening HOST PORT: true when something accepts TCP connections there.
tcp_listening() {
	# shellcheck disable=SC2016 # expanded by the inner bash
	timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' tcp_listening "$1" "$2" 2>/dev/null
}

# proc_tree PID: PID and all its descendants, one per line.
proc_tree() {
	local pid=$1 child
	[[ -d /proc/$pid ]] || return 0
	echo "$pid"
	for child in $(pgrep -P "$pid" 2>/dev/null || true); do
		proc_tree "$child"
	done
}

# cpu_ticks PID...: sum of utime+stime (clock ticks) of the given processes and their descendants.
# Fields 14 and 15 of /proc/PID/stat; the command name (field 2) may contain spaces, so cut after ')'.
cpu_ticks() {
	local total=0 pid rest stat
	local -a f
	for pid in $(for p in "$@"; do proc_tree "$p"; done | sort -u); do
		stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
		rest=${stat##*) }
		read -r -a f <<<"$rest"
		# After ')' field 3 is index 0, so utime (14) is index 11 and stime (15) index 12.
		total=$((total + f[11] + f[12]))
	done
	echo "$total"
}

# sched_wait PID...: one "TID NS" line per thread of the given processes and their descendants:
# the nanoseconds it has spent runnable but waiting for a core (field 2 of schedstat).
# sched_wait_delta BEFORE AFTER: "TOTAL_MS MAX_MS" between two such listings (MAX: the single
# thread that waited longest). Diagnoses latency from preemption: a server whose one busy thread
# waits in the run queue answers late however little CPU it uses.
sched_wait() {
	local pid f tid wait
	for pid in $(for p in "$@"; do proc_tree "$p"; done | sort -u); do
		for f in /proc/"$pid"/task/*/schedstat; do
			tid=${f%/schedstat}
			tid=${tid##*/}
			read -r _ wait _ <"$f" 2>/dev/null || continue
			echo "$tid $wait"
		done
	done
}

sched_wait_delta() {
	awk 'NR == FNR { b[$1] = $2; next }
		{ d = $2 - b[$1]; t += d; if (d > m) m = d }
		END { printf "%.0f %.0f\n", t / 1e6, m / 1e6 }' <(echo "$1") <(echo "$2")
}

# udp_drops PORT: "ALL SERVER" datagrams dropped so far for want of receive buffer room: all of
# the machine's UDP sockets (RcvbufErrors in /proc/net/snmp; SIPp's included, and anything else
# running) and the sockets bound to local PORT (the drops column of /proc/net/udp and udp6). A
# dropped request or response costs SIPp a retransmission 500 ms later (T1): a p99 spike.
udp_drops() {
	local all server
	all=$(awk '$1 == "Udp:" && $2 ~ /^[0-9]+$/ { print $6 }' /proc/net/snmp)
	server=$(awk -v port="$(printf ':%04X' "$1")" 'FNR > 1 && substr($2, length($2) - 4) == port { d += $NF }
		END { print d + 0 }' /proc/net/udp /proc/net/udp6 2>/dev/null)
	echo "${all:-0} ${server:-0}"
}

# prioritize NICE PID: sets PID's nice and, where the kernel groups processes by session
# (sched_autogroup_enabled, the default on desktop and many server kernels), its session's
# group nice: there a process's own nice only ranks it within its session, and each session
# (a server started with setsid, each developer's shell) gets an equal share of the cores.
# Needs CAP_SYS_NICE for a negative NICE; false when either could not be set.
prioritize() {
	local ok=0
	renice -n "$1" -p "$2" >/dev/null 2>&1 || ok=1
	if [[ -w /proc/$2/autogroup ]]; then
		echo "$1" 2>/dev/null >"/proc/$2/autogroup" || ok=1
	fi
	return $ok
}

# wait_pids_gone SECONDS PID...: true when all PIDs have exited within SECONDS.
wait_pids_gone() {
	local limit=$1 deadline pid alive
	shift
	deadline=$((SECONDS + limit))
	while :; do
		alive=0
		for pid in "$@"; do
			if kill -0 "$pid" 2>/dev/null && ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null; then
				alive=1
			fi
		done
		((alive)) || return 0
		((SECONDS < deadline)) || return 1
		sleep 0.2
	done
}

# free_port START: first port >= START where neither UDP nor TCP is bound on any address.
free_port() {
	local port=$1 used
	used=$(ss -Hlntu 2>/dev/null | awk '{print $5}' | sed 's/.*://' | sort -un)
	while grep -qx "$port" <<<"$used"; do
		port=$((port + 1))
	done
	echo "$port"
}

# --- Shared by the plugin benchmarks (bench/presence/run.sh, bench/messaging/run.sh); the same
# --- shapes as bench/run.sh's own copies, which may move here.

# stop_pid PID [SECONDS]: TERM PID and its descendants, wait up to SECONDS (10), then KILL them.
stop_pid() {
	local pid=$1 limit=${2:-10}
	local -a tree
	[[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
	mapfile -t tree < <(proc_tree "$pid")
	kill -TERM "$pid" 2>/dev/null || true
	wait_pids_gone "$limit" "${tree[@]}" || kill -KILL "${tree[@]}" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

# stat_col FILE COLUMN: value of a column (by header name) in the last line of a SIPp stat file.
stat_col() {
	awk -F';' -v col="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == col) c = i; next }
		{ last = $c } END { print (last == "" ? 0 : last) + 0 }' "$1"
}

# rtt_percentiles FILE...: "P50 P99" (nearest rank, whole ms) of RTD 1 in SIPp -trace_rtt files,
# "- -" without samples.
rtt_percentiles() {
	{ cat "$@" 2>/dev/null || true; } | awk -F';' '$3 == 1 { print $2 }' | sort -n |
		awk '{ v[NR] = $1 } END {
			if (NR == 0) { print "- -"; exit }
			i50 = int(NR * 0.50); if (i50 < NR * 0.50) i50++; if (i50 < 1) i50 = 1
			i99 = int(NR * 0.99); if (i99 < NR * 0.99) i99++; if (i99 < 1) i99 = 1
			print v[i50], v[i99] }'
}

# huddle_base_config DOMAIN STORE LISTEN...: the [sip], [store], [limits] and [log] tables of a
# benchmark Huddle: all load comes from 127.0.0.1, so the per-IP request limit is lifted; no
# per-request logging (like Kamailio's debug=1). LISTEN: "udp:127.0.0.1:5060" and the like.
huddle_base_config() {
	local domain=$1 store=$2 listen
	shift 2
	listen=$(printf '"%s", ' "$@")
	printf '[sip]\ndomain = "%s"\nlisten = [%s]\n' "$domain" "${listen%, }"
	printf '[store]\npath = "%s"\n' "$store"
	printf '[limits]\nrequests_per_second_per_ip = 1000000\nrequest_burst_per_ip = 1000000\n'
	printf '[log]\nlevel = "warn"\n'
}

# huddle_users N: [[users]] tables for alice, bob, carol (password NAME-pw) and u0000..u(N-1).
huddle_users() {
	local i u
	for u in alice bob carol; do
		printf '\n[[users]]\nname = "%s"\npassword = "%s-pw"\n' "$u" "$u"
	done
	for ((i = 0; i < $1; i++)); do
		printf -v u 'u%04d' "$i"
		printf '\n[[users]]\nname = "%s"\npassword = "%s-pw"\n' "$u" "$u"
	done
}

# start_uas DIR HOST PORT TRANSPORT SECONDS REPO: bob's SIPp UA (tests/sipp/uas_bob.xml and
# uas_bob_calls.xml): registers bob, answers MESSAGE and INVITE/BYE for SECONDS at most; sets
# uas_pid. False (UA stopped) when it did not register within 10 s.
start_uas() {
	local dir=$1 host=$2 server_port=$3 transport=$4 secs=$5 repo=$6 port i
	mkdir -p "$dir"
	port=$(free_port 35160)
	(
		cd "$dir" || exit
		exec timeout -k 5 "$secs" sipp "$host:$server_port" -t "$transport" -i "$host" -p "$port" \
			-sf "$repo/tests/sipp/uas_bob.xml" -oocsf "$repo/tests/sipp/uas_bob_calls.xml" \
			-inf "$repo/tests/sipp/bob.csv" -auth_uri "${domain:-example.test}" -m 1 -nd -nostdin \
			-set expect 1000000000 -set wait_ms $(((secs - 10) * 1000)) -trace_logs \
			-log_file "$dir/uas.log" -buff_size 4194304 -max_recv_loops 10000 \
			-max_sched_loops 10000 >"$dir/uas.out" 2>&1
	) &
	uas_pid=$!
	for ((i = 0; i < 100; i++)); do
		grep -q '^registered' "$dir/uas.log" 2>/dev/null && return 0
		kill -0 "$uas_pid" 2>/dev/null || break
		sleep 0.1
	done
	note "bob's UA did not register (see $dir)"
	stop_pid "$uas_pid"
	uas_pid=""
	return 1
}

# steal_ticks: CPU time (clock ticks, all cores) the hypervisor has given to other guests so far.
steal_ticks() {
	awk '$1 == "cpu" { print $9; exit }' /proc/stat
}

# measure_hook start|stop DIR PID: around each measured run. Notes the host's steal time over the
# run: on a shared VM it slows every thread, and a run with much of it measures more CPU per
# operation for the same work (compare runs with little of it). With BENCH_HOOK set, also runs
# `$BENCH_HOOK start|stop PID DIR` (e.g. bench/profile-hook.sh).
measure_hook() {
	local action=$1 dir=$2 pid=$3
	if [[ $action == start ]]; then
		_measure_steal_start=$(steal_ticks)
	else
		note "host steal during the measured run: $((($(steal_ticks) - ${_measure_steal_start:-0}) * 1000 / $(getconf CLK_TCK))) ms (all cores)"
	fi
	[[ -n ${BENCH_HOOK:-} ]] || return 0
	"$BENCH_HOOK" "$action" "$pid" "$dir" || note "BENCH_HOOK $action failed"
}
