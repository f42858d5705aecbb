#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Messaging benchmark: Huddle with plugins/messaging next to Kamailio with msilo
# (bench/messaging/kamailio-msilo.cfg), in the same run, one server after the other on fresh
# free ports. Kamailio runs twice by default: msilo on db_text (the table in memory, no fsync:
# its 202 comes before the message is on disk) and msilo on db_sqlite (SQLite's defaults:
# rollback journal, synchronous=FULL, so the message is on disk before the 202, as Huddle's).
#
#   bench/messaging/run.sh
#   BENCH_SERVERS=huddle BENCH_RATES_OFFLINE="500 1000" bench/messaging/run.sh
#   BENCH_KAMAILIO_DB=sqlite BENCH_WORKLOADS=offline bench/messaging/run.sh
#
# Workloads (SIPp, bench/messaging/sipp/; the sender is foreign, so neither server challenges it):
#   online   MESSAGE to bob, registered by a SIPp UA (tests/sipp/uas_bob.xml) that answers 200;
#            the sender expects 200
#   offline  MESSAGE to u0000..u9999, none registered: stored, the sender expects 202
# Each workload runs at every rate of its ladder (BENCH_RATES_ONLINE, BENCH_RATES_OFFLINE) for
# BENCH_DURATION seconds after BENCH_WARMUP seconds of unmeasured load at the same rate. A rate
# passes when no call failed and the achieved rate is at least 95 % of it. Reported per run:
# achieved messages/s, failed %, p50/p99 response time (SIPp, whole ms), server CPU (user+sys of
# the server's processes and children from /proc, before/after) and CPU ms per 1,000 messages;
# then the Huddle/Kamailio ratios of CPU per 1,000 messages (at each rate both passed) and of the
# highest rate passed, against each Kamailio variant. Packages: scripts/install-deps.sh --bench
# (run from here when db_sqlite or sqlite3 is missing and the sqlite variant is asked for).
#
# Environment (defaults): BENCH_SERVERS="kamailio huddle" BENCH_WORKLOADS="online offline"
#   BENCH_KAMAILIO_DB=both (text: msilo on db_text, result label "kamailio"; sqlite: on db_sqlite,
#   label "kamailio-sqlite"; both: one after the other; ratios are printed against each; with
#   BENCH_KAMAILIO_MEM other than tlsf the label ends in it: "kamailio-qm")
#   BENCH_KAMAILIO_SQLITE_JOURNAL=WAL (or DELETE, SQLite's own default: four fdatasyncs and a
#   journal file created and unlinked per stored message, about 30/s here; WAL: one fdatasync)
#   BENCH_KAMAILIO_MEM=tlsf (Kamailio's memory manager, -x: for shared memory, and for private
#   memory too since no -X is given; tlsf, or qm, Kamailio's own default, which in this build
#   (DBG_SR_MEMORY) cost 20-35 % more CPU per message here, or fm; bench/NOTES.md, branch
#   msg202; the ratio lines name it)
#   BENCH_KAMAILIO_SQLITE_CHILDREN=1 (UDP and TCP workers of the db_sqlite Kamailio; 4, as the
#   db_text one, makes concurrent INSERTs fail with "database is locked": no busy timeout)
#   BENCH_RATES_ONLINE="1000 2000 4000" BENCH_RATES_OFFLINE="100 250 500 1000 2000" (msilo on
#   db_sqlite, one durable INSERT at a time, passes 100/s and 150/s but not 250/s here)
#   BENCH_DURATION=8 BENCH_WARMUP=2 BENCH_TRANSPORT=u1 (or t1) BENCH_KEEP=0 (1: keep the work folder)
#   HUDDLE_BIN=target/release/huddle MESSAGING_LIB=target/release/libhuddle_plugin_messaging.so
#   BENCH_STORE_WRITERS, BENCH_BATCH_WINDOW_MS, BENCH_HISTORY_FLUSH_MS (unset: the plugin's defaults)
#   BENCH_HOOK= (a command run as `HOOK start PID DIR` just before and `HOOK stop PID DIR` just
#   after each measured run, as in bench/run.sh: e.g. PROFILE=record BENCH_HOOK=bench/profile-hook.sh)
#   (build: cargo build --release -p huddle -p huddle-plugin-messaging)
# Bounded: every process runs under timeout(1); everything started here is stopped on exit.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=../lib.sh
. "$repo/bench/lib.sh"

servers=${BENCH_SERVERS:-kamailio huddle}
kamailio_db=${BENCH_KAMAILIO_DB:-both}
kamailio_sqlite_children=${BENCH_KAMAILIO_SQLITE_CHILDREN:-1}
kamailio_sqlite_journal=${BENCH_KAMAILIO_SQLITE_JOURNAL:-WAL}
kamailio_mem=${BENCH_KAMAILIO_MEM:-tlsf}
workloads=${BENCH_WORKLOADS:-online offline}
rates_online=${BENCH_RATES_ONLINE:-1000 2000 4000}
rates_offline=${BENCH_RATES_OFFLINE:-100 250 500 1000 2000}
duration=${BENCH_DURATION:-8}
warmup=${BENCH_WARMUP:-2}
transport=${BENCH_TRANSPORT:-u1}
huddle_bin=${HUDDLE_BIN:-$repo/target/release/huddle}
messaging_lib=${MESSAGING_LIB:-$repo/target/release/libhuddle_plugin_messaging.so}
domain=example.test
ip=127.0.0.1
sock_buf=4194304

for v in duration warmup; do
	[[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number, got '${!v}'"
done
((duration > 0)) || die "BENCH_DURATION must be positive"
for r in $rates_online $rates_offline; do
	[[ $r =~ ^[1-9][0-9]*$ ]] || die "rates must be positive integers, got '$r'"
done
case $transport in u1 | t1) ;; *) die "BENCH_TRANSPORT must be u1 or t1" ;; esac
case $kamailio_db in
text | sqlite) kamailio_dbs=$kamailio_db ;;
both) kamailio_dbs="text sqlite" ;;
*) die "BENCH_KAMAILIO_DB must be text, sqlite or both, got '$kamailio_db'" ;;
esac
case $kamailio_sqlite_children in 1 | 4) ;; *) die "BENCH_KAMAILIO_SQLITE_CHILDREN must be 1 or 4" ;; esac
case $kamailio_sqlite_journal in WAL | DELETE) ;; *) die "BENCH_KAMAILIO_SQLITE_JOURNAL must be WAL or DELETE" ;; esac
case $kamailio_mem in qm | fm | tlsf) ;; *) die "BENCH_KAMAILIO_MEM must be tlsf, qm or fm" ;; esac
# Result label of each Kamailio variant (db_text keeps the label of earlier runs).
kamailio_label() {
	local label
	case $1 in text) label=kamailio ;; sqlite) label=kamailio-sqlite ;; esac
	# A manager other than the default is in the label, so its rows are not mistaken for them.
	[[ $kamailio_mem == tlsf ]] || label+=-$kamailio_mem
	echo "$label"
}
if [[ " $servers " == *" kamailio "* && " $kamailio_dbs " == *" sqlite "* ]] &&
	! { [[ -f /usr/share/kamailio/db_sqlite/msilo-create.sql ]] && command -v sqlite3 >/dev/null; }; then
	# db_sqlite (kamailio-sqlite-modules) and the sqlite3 shell: installed like every bench package.
	note "kamailio-sqlite-modules or sqlite3 missing: running scripts/install-deps.sh --bench"
	"$repo/scripts/install-deps.sh" --bench >&2 || die "scripts/install-deps.sh --bench failed"
fi
for tool in sipp ss pgrep getconf timeout awk kamailio; do
	command -v "$tool" >/dev/null || die "$tool not found (run: scripts/install-deps.sh --bench)"
done
clk_tck=$(getconf CLK_TCK)

work=$(mktemp -d "${TMPDIR:-/tmp}/huddle-bench-msg.XXXXXX")
results=$work/results.tsv
: >"$results"

server_pid=""
uas_pid=""
sip_port=""

stop_all() {
	stop_pid "$uas_pid" 15
	uas_pid=""
	stop_pid "$server_pid" 15
	server_pid=""
}

cleanup() {
	stop_all
	if [[ ${BENCH_KEEP:-0} == 1 ]]; then
		note "work folder kept: $work"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Injection files: bob only (online); u0000..u9999 in turn (offline).
printf 'SEQUENTIAL\nbob;%s\n' "$domain" >"$work/online.csv"
{
	echo SEQUENTIAL
	for ((i = 0; i < 10000; i++)); do
		printf 'u%04d;%s\n' "$i" "$domain"
	done
} >"$work/offline.csv"

wait_sip() { # wait_sip PID LOG: until the server answers OPTIONS (60 s: Huddle writes its
	# 10,003 [[users]] to a fresh store one durable put at a time before it listens).
	local pid=$1 log=$2 deadline=$((SECONDS + 60))
	until sip_probe "$ip" "$sip_port"; do
		if ! kill -0 "$pid" 2>/dev/null || ((SECONDS >= deadline)); then
			tail -n 20 "$log" >&2 || true
			return 1
		fi
		sleep 0.2
	done
}

start_kamailio() { # start_kamailio LABEL text|sqlite
	local dir=$work/$1 db=$2 url
	local -a defines=()
	mkdir -p "$dir/db"
	if [[ $db == text ]]; then
		cp /usr/share/kamailio/dbtext/kamailio/version "$dir/db/"
		# msilo 5.6 leaves callid (and status) unset on insert; the shipped db_text schema says NOT NULL.
		sed -e 's/callid(string)/callid(string,null)/' -e 's/status(int)/status(int,null)/' \
			/usr/share/kamailio/dbtext/kamailio/silo >"$dir/db/silo"
		url="text://$dir/db"
	else
		# The shipped schema (version table, silo with its index). SQLite's defaults stay:
		# journal_mode=DELETE, synchronous=FULL (see kamailio-msilo.cfg).
		cat /usr/share/kamailio/db_sqlite/standard-create.sql \
			/usr/share/kamailio/db_sqlite/msilo-create.sql | sqlite3 "$dir/db/msilo.db"
		# db_sqlite drops the first "/" of the path after "sqlite://": four in all for an absolute one.
		url="sqlite:///$dir/db/msilo.db"
		defines=(-A USE_SQLITE -A "SQLITE_JOURNAL=\"$dir/db/msilo.db=$kamailio_sqlite_journal\"")
		((kamailio_sqlite_children == 1)) && defines+=(-A ONE_WORKER)
	fi
	sip_port=$(free_port 25160)
	setsid kamailio -DD -E -f "$here/kamailio-msilo.cfg" -A "SIP_IP=$ip" -A "SIP_PORT=$sip_port" \
		-A "DB_URL=\"$url\"" "${defines[@]}" -m "${KAM_SHM_MB:-1024}" -M 16 -x "$kamailio_mem" -Y "$dir" -w "$dir" \
		</dev/null >"$dir/kamailio.log" 2>&1 &
	server_pid=$!
	wait_sip "$server_pid" "$dir/kamailio.log" || {
		note "kamailio did not start (log: $dir/kamailio.log)"
		return 1
	}
	note "kamailio+msilo ($db): pid $server_pid on $ip:$sip_port, $(proc_tree "$server_pid" | wc -l) processes"
}

start_huddle() {
	local dir=$work/huddle
	[[ -x $huddle_bin && -f $messaging_lib ]] || {
		note "huddle: $huddle_bin or $messaging_lib missing - skipping (cargo build --release -p huddle -p huddle-plugin-messaging)"
		return 1
	}
	mkdir -p "$dir"
	sip_port=$(free_port 26160)
	{
		echo "# Generated by bench/messaging/run.sh"
		huddle_base_config "$domain" "$dir/huddle.redb" "udp:$ip:$sip_port" "tcp:$ip:$sip_port"
		echo "[[plugins]]"
		echo "path = \"$messaging_lib\""
		echo "queue_len = 65536"
		echo "[plugins.config]"
		echo "history_retention_secs = 86400"
		# The plugin's own defaults unless set (a build before batched writes used 4 writers).
		[[ -z ${BENCH_STORE_WRITERS:-} ]] || echo "store_writers = $BENCH_STORE_WRITERS"
		[[ -z ${BENCH_BATCH_WINDOW_MS:-} ]] || echo "store_batch_window_ms = $BENCH_BATCH_WINDOW_MS"
		[[ -z ${BENCH_HISTORY_FLUSH_MS:-} ]] || echo "history_flush_ms = $BENCH_HISTORY_FLUSH_MS"
		huddle_users 10000
	} >"$dir/huddle.toml"
	setsid "$huddle_bin" run --config "$dir/huddle.toml" </dev/null >"$dir/huddle.log" 2>&1 &
	server_pid=$!
	wait_sip "$server_pid" "$dir/huddle.log" || {
		note "huddle did not start (log: $dir/huddle.log)"
		return 1
	}
	note "huddle+messaging: pid $server_pid on $ip:$sip_port"
}

sipp_run() { # sipp_run DIR SCENARIO CSV RATE COUNT
	local dir=$1 scenario=$2 csv=$3 rate=$4 count=$5 limit port rc=0
	mkdir -p "$dir"
	limit=$((count * 2 / rate + 15))
	port=$(free_port 40160)
	(
		cd "$dir"
		exec timeout -k 5 $((limit + 30)) sipp "$ip:$sip_port" -t "$transport" -i "$ip" -p "$port" \
			-sf "$here/sipp/$scenario" -inf "$csv" -r "$rate" -m "$count" -nostdin \
			-timeout "${limit}s" -trace_stat -stf "$dir/stat.csv" -fd 1 -trace_rtt -rtt_freq 100 \
			-trace_err -error_file "$dir/errors.log" -buff_size "$sock_buf" \
			-max_recv_loops 10000 -max_sched_loops 10000 >"$dir/sipp.out" 2>&1
	) || rc=$?
	((rc == 0 || rc == 1)) || note "SIPp exited with $rc (see $dir/sipp.out)"
}

run_rate() { # run_rate SERVER WORKLOAD RATE: warm-up, measured run, one result row.
	local server=$1 name=$2 rate=$3 dir=$work/$1/$2-$3 csv=$work/$2.csv count ok failed t0 t1 c0 c1 pct
	count=$((rate * duration))
	if ((warmup > 0)); then
		sipp_run "$dir/warmup" "message_$name.xml" "$csv" "$rate" $((rate * warmup))
	fi
	mkdir -p "$dir"
	measure_hook start "$dir" "$server_pid"
	c0=$(cpu_ticks "$server_pid")
	t0=$(date +%s%N)
	sipp_run "$dir" "message_$name.xml" "$csv" "$rate" "$count"
	t1=$(date +%s%N)
	c1=$(cpu_ticks "$server_pid")
	measure_hook stop "$dir" "$server_pid"
	ok=$(stat_col "$dir/stat.csv" 'SuccessfulCall(C)')
	failed=$(stat_col "$dir/stat.csv" 'FailedCall(C)')
	pct=$(rtt_percentiles "$dir"/*_rtt.csv)
	# Row: server workload rate ok msg/s fail% p50 p99 cpu_s cpu_ms/1000 passed
	awk -v s="$server" -v n="$name" -v r="$rate" -v ok="$ok" -v f="$failed" -v t0="$t0" -v t1="$t1" \
		-v c="$((c1 - c0))" -v hz="$clk_tck" -v pct="$pct" -v count="$count" 'BEGIN {
		split(pct, p, " "); secs = (t1 - t0) / 1e9; cpu = c / hz; got = (secs > 0 ? ok / secs : 0)
		passed = (f == 0 && ok == count && got >= 0.95 * r) ? "yes" : "no"
		printf "%s\t%s\t%d\t%d\t%.0f\t%.2f\t%s\t%s\t%.2f\t%s\t%s\n", s, n, r, ok, got,
			(ok + f > 0 ? 100 * f / (ok + f) : 100), p[1], p[2], cpu,
			(ok > 0 ? sprintf("%.1f", cpu * 1e6 / ok) : "-"), passed }' >>"$results"
	tail -n 1 "$results" | awk -F'\t' '{ printf "  %-8s %-8s %5s/s: %s ok, %s/s, %s%% failed, cpu %s ms/1000, passed %s\n",
		$1, $2, $3, $4, $5, $6, $10, $11 }' >&2
	[[ $(tail -n 1 "$results" | cut -f11) == yes ]]
}

# "kamailio" in BENCH_SERVERS runs one Kamailio per msilo store of BENCH_KAMAILIO_DB.
runs=()
for server in $servers; do
	case $server in
	kamailio)
		for db in $kamailio_dbs; do
			runs+=("$(kamailio_label "$db")")
		done
		;;
	huddle) runs+=(huddle) ;;
	*) die "unknown server $server" ;;
	esac
done

for server in "${runs[@]}"; do
	case $server in
	kamailio-sqlite*) start_kamailio "$server" sqlite || { stop_all; continue; } ;;
	kamailio*) start_kamailio "$server" text || { stop_all; continue; } ;;
	huddle) start_huddle || { stop_all; continue; } ;;
	esac
	for name in $workloads; do
		case $name in
		online)
			start_uas "$work/$server/uas" "$ip" "$sip_port" "$transport" 600 "$repo" || continue
			rates=$rates_online
			;;
		offline) rates=$rates_offline ;;
		*) die "unknown workload $name" ;;
		esac
		for rate in $rates; do
			# A ladder: stop at the first rate that fails.
			run_rate "$server" "$name" "$rate" || break
		done
		if [[ $name == online ]]; then
			stop_pid "$uas_pid" 15
			uas_pid=""
		fi
	done
	stop_all
done

echo
printf '%-15s %-8s %6s %7s %7s %6s %5s %5s %7s %9s %6s\n' server workload rate ok msg/s fail% p50ms p99ms cpu_s cpu/1000 passed
awk -F'\t' '{ printf "%-15s %-8s %6s %7s %7s %6s %5s %5s %7s %9s %6s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11 }' "$results"
echo
# Ratios against each Kamailio variant: CPU per 1,000 messages at each rate both passed; highest
# rate passed. "kamailio" is msilo on db_text (202 before the message is on disk),
# "kamailio-sqlite" msilo on db_sqlite (on disk before the 202, as Huddle), either with a
# suffix naming its memory manager when not tlsf.
awk -F'\t' -v mem="$kamailio_mem" '
	$11 == "yes" { cpu[$1, $2, $3] = $10; if ($3 + 0 > best[$1, $2] + 0) best[$1, $2] = $3; rates[$2, $3] = 1 }
	{ seen[$2] = 1; if ($1 ~ /^kamailio/) kams[$1] = 1 }
	END {
		for (kam in kams) for (w in seen) {
			what = (kam ~ /sqlite/ ? "db_sqlite, durable at 202" : "db_text, not durable at 202")
			what = what ", -x " mem
			for (k in rates) {
				split(k, kk, SUBSEP); if (kk[1] != w) continue; r = kk[2]
				if ((("huddle", w, r) in cpu) && ((kam, w, r) in cpu) && cpu[kam, w, r] > 0)
					printf "%s at %s/s: Huddle/%s (%s) CPU per 1,000 messages = %.2f (%s / %s ms)\n", w, r,
						kam, what, cpu["huddle", w, r] / cpu[kam, w, r], cpu["huddle", w, r], cpu[kam, w, r]
			}
			h = best["huddle", w] + 0; k = best[kam, w] + 0
			printf "%s: highest rate passed: Huddle %s/s, %s %s/s%s\n", w, h, kam, k,
				(k > 0 ? sprintf(" (ratio %.2f)", h / k) : "")
		}
	}' "$results" | sort
