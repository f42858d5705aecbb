#!/usr/bin/env bash
# A BENCH_HOOK for bench/messaging/run.sh (or bench/run.sh): where the server's CPU goes during
# each measured run, per thread name, split into user and kernel time. Called as
# `tasks-hook.sh start|stop PID DIR`; writes DIR/tasks.txt:
#
#   name  user_ms  sys_ms  run_ms  voluntary_cs  involuntary_cs
#
# summed over every thread of every process under PID (Kamailio's workers are processes, all
# named "kamailio"; Huddle's threads have their own names). user/sys are /proc's utime and
# stime (clock ticks, 10 ms: read them over a whole run, not per message); run_ms is the
# scheduler's own count (schedstat, nanoseconds), which includes both and is exact. Rows come
# by run_ms, largest first. Only threads alive at both ends are counted: one that started or
# ended during the run is left out (the process total in run.sh keeps its time; "left out" says
# how many). With TASKS_HOOK_NEXT set, that hook is run too (e.g. bench/profile-hook.sh).
#
#   BENCH_HOOK=bench/messaging/tasks-hook.sh BENCH_SERVERS=huddle bench/messaging/run.sh
set -euo pipefail

action=$1 pid=$2 dir=$3
# shellcheck source=../lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

# One line per task: tid name utime stime run_ns voluntary involuntary
snapshot() {
	local p t stat rest name run vol invol
	local -a v
	for p in $(proc_tree "$pid"); do
		for t in /proc/"$p"/task/*; do
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
	done
}

if [[ $action == start ]]; then
	snapshot >"$dir/.tasks.start"
else
	hz=$(getconf CLK_TCK)
	snapshot | awk -v hz="$hz" -v start="$dir/.tasks.start" '
		BEGIN { while ((getline l < start) > 0) { split(l, f, " "); s[f[1]] = l } }
		{
			if (!($1 in s)) { missed++; next }
			seen[$1] = 1
			split(s[$1], f, " ")
			n = $2
			u[n] += ($3 - f[3]) * 1000 / hz; k[n] += ($4 - f[4]) * 1000 / hz
			r[n] += ($5 - f[5]) / 1e6; vc[n] += $6 - f[6]; ic[n] += $7 - f[7]
		}
		END {
			for (t in s) if (!(t in seen)) missed++
			printf "%-22s %8s %8s %8s %8s %8s\n", "name", "user_ms", "sys_ms", "run_ms", "vol_cs", "invol_cs"
			for (n in u) if (r[n] > 0) {
				printf "%-22s %8.0f %8.0f %8.1f %8d %8d\n", n, u[n], k[n], r[n], vc[n], ic[n] | "sort -k4,4 -rn"
				tu += u[n]; tk += k[n]; tr += r[n]; tv += vc[n]; ti += ic[n]
			}
			close("sort -k4,4 -rn")
			printf "%-22s %8.0f %8.0f %8.1f %8d %8d\n", "TOTAL", tu, tk, tr, tv, ti
			if (missed) printf "(left out: %d threads started or ended during the run)\n", missed
		}' >"$dir/tasks.txt"
	rm -f "$dir/.tasks.start"
fi
if [[ -n ${TASKS_HOOK_NEXT:-} ]]; then
	"$TASKS_HOOK_NEXT" "$action" "$pid" "$dir"
fi
