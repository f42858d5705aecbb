#!/usr/bin/env bash
# bench/media/ab.sh — two Huddle release builds side by side on the echo benchmark.
#
#   bench/media/ab.sh BASE_TARGET_DIR NEW_TARGET_DIR [RUNS]
#
# Runs bench/media/run.sh RUNS (5) times per build, alternating base and new, every run with the
# same load client (NEW_TARGET_DIR's medialoader, or BENCH_MEDIALOADER) and the same
# BENCH_MEDIA_LEGS (one count, default 75) / BENCH_MEDIA_SECS (20). Prints each run's line and
# then, per build, the medians of the server's CPU per echoed packet (µs; one packet received
# and one sent) and per leg-second (ms), with and without the runs whose loss exceeded 1%
# (those are client-limited: compare them per packet only), and the ratio new/base.
# BENCH_NEW_ENV="NAME=VALUE ..." is set for the new build's runs only (e.g.
# BENCH_MEDIA_FAST_INGRESS=true, a key the base build would refuse).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
base=${1:?base target dir}
new=${2:?new target dir}
runs=${3:-5}
export BENCH_MEDIA_LEGS=${BENCH_MEDIA_LEGS:-75}
export BENCH_MEDIA_SECS=${BENCH_MEDIA_SECS:-20}
export BENCH_MEDIALOADER=${BENCH_MEDIALOADER:-$new/release/medialoader}
out=$(mktemp)
trap 'rm -f "$out"' EXIT

for i in $(seq "$runs"); do
	for which in base new; do
		dir=$base
		[[ $which == new ]] && dir=$new
		load=$(cut -d' ' -f1 /proc/loadavg)
		extra=()
		[[ $which == new ]] && read -r -a extra <<<"${BENCH_NEW_ENV:-}"
		result=$(env "${extra[@]}" CARGO_TARGET_DIR="$dir" "$here/run.sh" 2>/dev/null)
		loss=$(grep -o 'loss=[0-9.]*' <<<"$result" | cut -d= -f2)
		ms=$(grep -o '[0-9.]* ms CPU per second per leg' <<<"$result" | cut -d' ' -f1)
		us=$(grep -o 'server_us_per_echoed_packet=[0-9.]*' <<<"$result" | cut -d= -f2)
		pps=$(grep -o 'echoed_packets=[0-9]* ([0-9]*/s)' <<<"$result" | grep -o '([0-9]*' | tr -d '(')
		steal=$(grep -o 'host_steal_ms=[0-9]*' <<<"$result" | cut -d= -f2)
		printf '%s run=%s %s load=%s loss=%s%% ms_per_leg_s=%s us_per_echoed_packet=%s echoed_per_s=%s steal_ms=%s\n' \
			"$(date -u +%H:%M:%S)" "$i" "$which" "$load" "$loss" "$ms" "$us" "$pps" "$steal" | tee -a "$out"
	done
done

median() { sort -g | awk '{v[NR]=$1} END {if (NR==0) print "-"; else if (NR%2) print v[(NR+1)/2]; else printf "%.2f\n", (v[NR/2]+v[NR/2+1])/2}'; }
field() { grep -o " $1=[0-9.]*" | cut -d= -f2; }
summary() {
	local which=$1
	local all low
	all=$(grep " $which " "$out")
	low=$(awk '{split($5,a,"="); sub("%","",a[2]); if (a[2]+0 <= 1.0) print}' <<<"$all")
	printf '%s: us/echoed packet median %s (all %d runs), %s (loss<=1%%, %d runs); ms/leg-s median %s (all), %s (loss<=1%%)\n' \
		"$which" "$(field us_per_echoed_packet <<<"$all" | median)" "$(grep -c . <<<"$all")" \
		"$(field us_per_echoed_packet <<<"$low" | median)" "$(grep -c . <<<"$low" || true)" \
		"$(field ms_per_leg_s <<<"$all" | median)" "$(field ms_per_leg_s <<<"$low" | median)"
}
summary base
summary new
b=$(grep ' base ' "$out" | field us_per_echoed_packet | median)
n=$(grep ' new ' "$out" | field us_per_echoed_packet | median)
awk -v b="$b" -v n="$n" 'BEGIN { if (b > 0) printf "ratio new/base (us per echoed packet, all runs): %.2f\n", n / b }'
