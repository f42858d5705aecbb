#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Presence benchmark: Huddle's presence plugin next to Kamailio's presence + presence_xml
# (bench/presence/kamailio-presence.cfg) in the same run, over UDP with SIPp.
#
#   cargo build --release -p huddle -p huddle-plugin-presence && bench/presence/run.sh
#   PRES_SERVERS=kamailio bench/presence/run.sh
#
# For each server, alone on a fresh free port:
#   1. cpu     PRES_WATCHERS (10) SIPp watchers (u0000.., each SUBSCRIBE with a 407 round) of bob;
#              then publish cycles at PRES_RATE/s for PRES_DURATION s: a new publication (407
#              round, 200) and its removal (SIP-If-Match, Expires 0, 407 round, 200), each
#              changing bob's document, so every watcher gets 2 NOTIFYs per cycle. Server CPU
#              (user+sys of the server's processes, /proc, before and after) per 1,000 accepted
#              PUBLISH (each with PRES_WATCHERS NOTIFYs) and per 1,000 transactions (PUBLISH
#              incl. 407s, and NOTIFYs).
#   2. rate    the same load at each of PRES_STEPS cycles/s for PRES_STEP_DURATION s: the highest
#              rate passed (every call succeeded, >= 95 % of the rate achieved; NOTIFYs counted
#              and reported), stopping at the first failure.
#   3. fanout  PRES_FANOUT_WATCHERS (1000) watchers of bob; PRES_FANOUT_ROUNDS (5) single
#              publications one after the other; for each, the time from the authorized PUBLISH
#              leaving SIPp to the last watcher receiving its NOTIFY (SIPp [timestamp] logs of the
#              publisher and the watchers; one SIPp process answers all watchers, the same for
#              both servers). Also CPU per 1,000 NOTIFYs over the rounds.
# Results: a table on stdout and in $work/results.txt, then Huddle/Kamailio ratios.
#
# Environment (defaults): PRES_SERVERS="kamailio huddle" PRES_WATCHERS=10 PRES_RATE=200
#   PRES_DURATION=10 PRES_STEPS="200 400 800 1600 3200" PRES_STEP_DURATION=5
#   PRES_FANOUT_WATCHERS=1000 PRES_FANOUT_ROUNDS=5 HUDDLE_BIN=target/release/huddle
#   PRESENCE_LIB=target/release/libhuddle_plugin_presence.so PRES_KEEP=0 (1: keep the work folder)
#   BENCH_HOOK= (a command run as `HOOK start PID DIR` just before and `HOOK stop PID DIR` just
#   after the measured part of steps 1 and 3, DIR its folder (cpu, fan), as in bench/run.sh: e.g.
#   PROFILE=record BENCH_HOOK=bench/profile-hook.sh)
# Bounded: every SIPp run has -timeout, waits are bounded, everything started here is stopped on
# exit.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=../lib.sh
. "$here/../lib.sh"

servers=${PRES_SERVERS:-kamailio huddle}
watchers=${PRES_WATCHERS:-10}
rate=${PRES_RATE:-200}
duration=${PRES_DURATION:-10}
steps=${PRES_STEPS:-200 400 800 1600 3200}
step_duration=${PRES_STEP_DURATION:-5}
fan_watchers=${PRES_FANOUT_WATCHERS:-1000}
fan_rounds=${PRES_FANOUT_ROUNDS:-5}
huddle_bin=${HUDDLE_BIN:-$repo/target/release/huddle}
plugin_lib=${PRESENCE_LIB:-$repo/target/release/libhuddle_plugin_presence.so}
domain=example.test
ip=127.0.0.1
hz=$(getconf CLK_TCK)
sock_buf=4194304

command -v sipp >/dev/null || die "sipp not installed (scripts/install-deps.sh --bench)"
work=$(mktemp -d "${TMPDIR:-/tmp}/huddle-bench-presence.XXXXXX")
server_pid=""
watcher_pid=""
cleanup() {
	[[ -n $watcher_pid ]] && kill "$watcher_pid" 2>/dev/null || true
	[[ -n $server_pid ]] && kill -TERM "$server_pid" 2>/dev/null || true
	[[ -n $server_pid ]] && { wait_pids_gone 30 "$server_pid" || kill -KILL "$server_pid" 2>/dev/null || true; }
	if [[ ${PRES_KEEP:-0} == 1 ]]; then note "work folder kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

users=$((fan_watchers > watchers ? fan_watchers : watchers))
{
	echo "SEQUENTIAL"
	for ((i = 0; i < users; i++)); do
		printf 'u%04d;%s;[authentication username=u%04d password=u%04d-pw];bob\n' "$i" "$domain" "$i" "$i"
	done
} >"$work/watchers.csv"
printf 'SEQUENTIAL\nbob;%s;[authentication username=bob password=bob-pw]\n' "$domain" >"$work/bob.csv"

start_kamailio() { # start_kamailio PORT DIR
	command -v kamailio >/dev/null || die "kamailio not installed (scripts/install-deps.sh --bench)"
	[[ -r /usr/lib/x86_64-linux-gnu/kamailio/modules/presence.so || -n $(find /usr/lib -name presence.so -path '*kamailio*' 2>/dev/null | head -1) ]] ||
		die "kamailio-presence-modules not installed (scripts/install-deps.sh --bench)"
	mkdir -p "$2"
	cp -r /usr/share/kamailio/dbtext/kamailio "$2/db"
	setsid kamailio -DD -E -f "$here/kamailio-presence.cfg" \
		-A "SIP_IP=$ip" -A "SIP_PORT=$1" -A "DOMAIN=\"$domain\"" \
		-A "DBURL=\"text://$2/db\"" -A "SERVER_ADDRESS=\"sip:$ip:$1\"" -A "BENCH_USERS=$users" -A "PUBL_CACHE=${KAM_PUBL_CACHE:-2}" \
		-m 512 -M 16 -Y "$2" -w "$2" </dev/null >"$2/server.log" 2>&1 &
	server_pid=$!
}

start_huddle() { # start_huddle PORT DIR
	[[ -x $huddle_bin ]] || die "$huddle_bin not built (cargo build --release -p huddle)"
	[[ -r $plugin_lib ]] || die "$plugin_lib not built (cargo build --release -p huddle-plugin-presence)"
	mkdir -p "$2"
	{
		huddle_base_config "$domain" "$2/huddle.redb" "udp:$ip:$1" "tcp:$ip:$1"
		echo "[[plugins]]"
		echo "path = \"$plugin_lib\""
		echo "[plugins.config]"
		echo "domain = \"$domain\""
		echo "max_watchers_per_user = $((users + 10))"
		echo "# Concurrent publish cycles each hold a publication for a moment (Kamailio has no cap)."
		echo "max_publications_per_user = 100000"
		huddle_users "$users"
	} >"$2/huddle.toml"
	setsid "$huddle_bin" run --config "$2/huddle.toml" </dev/null >"$2/server.log" 2>&1 &
	server_pid=$!
}

wait_up() { # wait_up PORT DIR
	local deadline=$((SECONDS + 20))
	until sip_probe "$ip" "$1"; do
		kill -0 "$server_pid" 2>/dev/null || { tail -n 20 "$2/server.log" >&2; die "server exited during start-up"; }
		((SECONDS < deadline)) || { tail -n 20 "$2/server.log" >&2; die "server did not answer within 20 s"; }
		sleep 0.2
	done
}

count_lines() { # count_lines FILE WORD: lines of the watcher log starting with WORD
	local n
	n=$(grep -c "^$2 " "$1" 2>/dev/null) || true
	echo "${n:-0}"
}

wait_lines() { # wait_lines FILE WORD N SECONDS: true once FILE has N lines starting with WORD
	local deadline=$((SECONDS + $4))
	while (($(count_lines "$1" "$2") < $3)); do
		((SECONDS < deadline)) || return 1
		sleep 0.05
	done
}

start_watchers() { # start_watchers PORT DIR COUNT
	mkdir -p "$2"
	(cd "$2" && exec sipp "$ip:$1" -sf "$here/sipp/watcher.xml" -inf "$work/watchers.csv" -t u1 -i "$ip" \
		-r 500 -m "$3" -l "$3" -trace_logs -log_file "$2/watchers.log" -buff_size "$sock_buf" \
		-max_recv_loops 10000 -max_sched_loops 10000 -nostdin -timeout 3600 \
		>"$2/sipp.out" 2>&1) &
	watcher_pid=$!
	wait_lines "$2/watchers.log" init "$3" 60
}

stop_watchers() {
	kill "$watcher_pid" 2>/dev/null || true
	wait "$watcher_pid" 2>/dev/null || true
	watcher_pid=""
}

# publish_load PORT DIR RATE SECONDS: runs the publish cycles; prints "calls ok failed seconds"
publish_load() {
	local count=$(($3 * $4)) t0 t1 ok failed
	mkdir -p "$2"
	t0=$(date +%s.%N)
	(cd "$2" && timeout $(($4 * 3 + 30)) sipp "$ip:$1" -sf "$here/sipp/publish_cycle.xml" -inf "$work/bob.csv" \
		-t u1 -i "$ip" -r "$3" -m "$count" -l $(($3 * 2 + 100)) -buff_size "$sock_buf" \
		-max_recv_loops 10000 -max_sched_loops 10000 -nostdin -timeout $(($4 * 3 + 20)) \
		-trace_stat -stf "$2/stat.csv" >"$2/sipp.out" 2>&1) || true
	t1=$(date +%s.%N)
	ok=$(stat_col "$2/stat.csv" 'SuccessfulCall(C)' 2>/dev/null || echo 0)
	failed=$(stat_col "$2/stat.csv" 'FailedCall(C)' 2>/dev/null || echo 0)
	echo "$count $ok $failed $(echo "$t1 - $t0" | bc -l)"
}

stop_server() {
	stop_pid "$server_pid" 30
	server_pid=""
}

# fanout PORT DIR: sets times[], fan_med/fan_max/cpu_notify[$server]; false with $fan_error.
fanout() {
	local port=$1 dir=$2 k c0 c1 sent last sorted
	fan_error=""
	times=()
	if ! start_watchers "$port" "$dir/fan" "$fan_watchers"; then
		fan_error="only $(count_lines "$dir/fan/watchers.log" init) of $fan_watchers watchers subscribed"
		return 1
	fi
	measure_hook start "$dir/fan" "$server_pid"
	c0=$(cpu_ticks "$server_pid")
	for ((k = 1; k <= fan_rounds; k++)); do
		mkdir -p "$dir/fan/round-$k"
		if ! (cd "$dir/fan/round-$k" && timeout 30 sipp "$ip:$port" -sf "$here/sipp/publish_once.xml" -inf "$work/bob.csv" \
			-t u1 -i "$ip" -m 1 -trace_logs -log_file "$dir/fan/round-$k/publish.log" -nostdin -timeout 20 \
			>"$dir/fan/round-$k/sipp.out" 2>&1); then
			fan_error="round $k: the PUBLISH failed (see $dir/fan/round-$k)"
			return 1
		fi
		if ! wait_lines "$dir/fan/watchers.log" notify $((k * fan_watchers)) 60; then
			fan_error="round $k: only $(count_lines "$dir/fan/watchers.log" notify) of $((k * fan_watchers)) NOTIFYs arrived"
			return 1
		fi
		sent=$(awk '/^publish /{print $NF}' "$dir/fan/round-$k/publish.log" | tail -n 1)
		last=$(grep '^notify ' "$dir/fan/watchers.log" | sed -n "$(((k - 1) * fan_watchers + 1)),$((k * fan_watchers))p" | awk '{print $NF}' | sort -n | tail -n 1)
		times+=("$(echo "($last - $sent) * 1000" | bc -l)")
	done
	c1=$(cpu_ticks "$server_pid")
	measure_hook stop "$dir/fan" "$server_pid"
	cpu_notify[$server]=$(echo "($c1 - $c0) * 1000 / $hz * 1000 / ($fan_rounds * $fan_watchers)" | bc -l)
	sorted=$(printf '%s\n' "${times[@]}" | sort -n)
	fan_med[$server]=$(sed -n "$(((fan_rounds + 1) / 2))p" <<<"$sorted")
	fan_max[$server]=$(tail -n 1 <<<"$sorted")
}

results=$work/results.txt
declare -A cpu_pub cpu_tx max_rate fan_med fan_max cpu_notify
for server in $servers; do
	port=$(free_port 5480)
	dir=$work/$server
	note "$server: starting on $ip:$port"
	"start_$server" "$port" "$dir/server"
	wait_up "$port" "$dir/server"

	# 1. CPU per 1,000 PUBLISH with $watchers watchers.
	start_watchers "$port" "$dir/w10" "$watchers" || die "$server: only $(count_lines "$dir/w10/watchers.log" init) of $watchers watchers subscribed"
	n0=$(count_lines "$dir/w10/watchers.log" notify)
	mkdir -p "$dir/cpu"
	measure_hook start "$dir/cpu" "$server_pid"
	c0=$(cpu_ticks "$server_pid")
	read -r count ok failed secs < <(publish_load "$port" "$dir/cpu" "$rate" "$duration")
	wait_lines "$dir/w10/watchers.log" notify $((n0 + ok * 2 * watchers)) 30 || true
	c1=$(cpu_ticks "$server_pid")
	measure_hook stop "$dir/cpu" "$server_pid"
	n1=$(count_lines "$dir/w10/watchers.log" notify)
	ms=$(echo "($c1 - $c0) * 1000 / $hz" | bc -l)
	notifies=$((n1 - n0))
	publishes=$((ok * 2))
	tx=$((ok * 4 + notifies))
	cpu_pub[$server]=0
	cpu_tx[$server]=0
	((publishes > 0)) && cpu_pub[$server]=$(echo "$ms * 1000 / $publishes" | bc -l)
	((tx > 0)) && cpu_tx[$server]=$(echo "$ms * 1000 / $tx" | bc -l)
	printf '%s cpu: %d cycles (%d ok, %d failed) in %.1f s, %d PUBLISH, %d NOTIFY (expected %d), server CPU %.0f ms: %.1f ms per 1,000 PUBLISH (each with %d NOTIFYs), %.2f ms per 1,000 transactions\n' \
		"$server" "$count" "$ok" "$failed" "$secs" "$publishes" "$notifies" $((ok * 2 * watchers)) "$ms" "${cpu_pub[$server]}" "$watchers" "${cpu_tx[$server]}" | tee -a "$results"

	# 2. Highest rate passed.
	max_rate[$server]=0
	for r in $steps; do
		n0=$(count_lines "$dir/w10/watchers.log" notify)
		read -r count ok failed secs < <(publish_load "$port" "$dir/rate-$r" "$r" "$step_duration")
		# Every change NOTIFYs every watcher, unless the server coalesces changes while it is
		# saturated (Huddle sends the latest state when the host has room again): the count is
		# reported, not judged.
		wait_lines "$dir/w10/watchers.log" notify $((n0 + ok * 2 * watchers)) 10 || true
		n1=$(count_lines "$dir/w10/watchers.log" notify)
		achieved=$(echo "$ok / $secs" | bc -l)
		pass=0
		# The wall time includes SIPp's start and the last responses: allow one second of it.
		if ((failed == 0 && ok == count)) && (($(echo "$achieved >= 0.95 * $r * $step_duration / ($step_duration + 1)" | bc -l))); then
			pass=1
		fi
		printf '%s rate %d/s: %d of %d cycles ok, %d failed, %.0f cycles/s achieved, %d NOTIFYs for %d changes x %d watchers: %s\n' \
			"$server" "$r" "$ok" "$count" "$failed" "$achieved" $((n1 - n0)) $((ok * 2)) "$watchers" \
			"$( ((pass)) && echo pass || echo FAIL)" | tee -a "$results"
		((pass)) || break
		max_rate[$server]=$r
	done
	stop_watchers
	stop_server

	# 3. Fan-out to $fan_watchers watchers, on a fresh server (the rate search ends in overload).
	port=$(free_port 5480)
	"start_$server" "$port" "$dir/server-fan"
	wait_up "$port" "$dir/server-fan"
	fan_med[$server]=0
	fan_max[$server]=0
	cpu_notify[$server]=0
	if fanout "$port" "$dir"; then
		printf '%s fan-out to %d watchers: %s ms (median %.1f ms, max %.1f ms); server CPU %.1f ms per 1,000 NOTIFYs\n' \
			"$server" "$fan_watchers" "$(printf '%.1f ' "${times[@]}")" "${fan_med[$server]}" "${fan_max[$server]}" "${cpu_notify[$server]}" | tee -a "$results"
	else
		printf '%s fan-out to %d watchers: FAILED (%s)\n' "$server" "$fan_watchers" "$fan_error" | tee -a "$results"
	fi
	stop_watchers
	stop_server
done

if [[ " $servers " == *" kamailio "* && " $servers " == *" huddle "* ]]; then
	printf 'Huddle/Kamailio: CPU per 1,000 PUBLISH (%d watchers) %.2f; CPU per 1,000 transactions %.2f; highest rate passed %s/%s = %.2f; fan-out median %.2f; CPU per 1,000 NOTIFYs %.2f\n' \
		"$watchers" "$(echo "${cpu_pub[huddle]} / ${cpu_pub[kamailio]}" | bc -l)" \
		"$(echo "${cpu_tx[huddle]} / ${cpu_tx[kamailio]}" | bc -l)" \
		"${max_rate[huddle]}" "${max_rate[kamailio]}" \
		"$(echo "${max_rate[huddle]} / (${max_rate[kamailio]} + 0.000001)" | bc -l)" \
		"$(echo "${fan_med[huddle]} / (${fan_med[kamailio]} + 0.000001)" | bc -l)" \
		"$(echo "${cpu_notify[huddle]} / (${cpu_notify[kamailio]} + 0.000001)" | bc -l)" | tee -a "$results"
fi
