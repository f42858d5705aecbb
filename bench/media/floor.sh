#!/usr/bin/env bash
# bench/media/floor.sh — the kernel floor under the echo figures of bench/media/run.sh.
#
# Runs `udpfloor reflect` (blocking recv_from/send_to, nothing else; and, for each other size in
# BENCH_FLOOR_BATCH, default "1 32", recvmmsg/sendmmsg of up to that many datagrams) pinned like
# the server (BENCH_SERVER_CPU, default 0) and `udpfloor blast` on the other core with the echo bench's
# load shape (BENCH_MEDIA_LEGS streams × BENCH_MEDIA_KBPS kbit/s of 1000-byte payloads, 1 ms
# bursts) for BENCH_MEDIA_SECS seconds, and prints the reflector's CPU per echoed packet, user
# and system. With BENCH_FLOOR_ECHO=1 it then runs bench/media/run.sh for the same leg count and
# prints Huddle's µs per echoed packet over the lowest floor's, side by side in the same run.
#
#   cargo build --release -p huddle -p huddle-plugin-echo -p huddle-medialoader
#   BENCH_MEDIA_LEGS="50" BENCH_FLOOR_ECHO=1 bench/media/floor.sh
#
# What the floor means for the issue's goal (1000 echo legs per core = 8 µs of server CPU per
# echoed packet at 125 packets/s a leg): see bench/media/README.md.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"

legs_list=${BENCH_MEDIA_LEGS:-"50"}
kbps=${BENCH_MEDIA_KBPS:-1000}
secs=${BENCH_MEDIA_SECS:-15}
batches=${BENCH_FLOOR_BATCH:-1 32}
server_cpu=${BENCH_SERVER_CPU:-0}
client_cpu=${BENCH_CLIENT_CPU:-1}
target="${CARGO_TARGET_DIR:-$root/target}/release"
floor_bin=$target/udpfloor
[[ -x $floor_bin ]] || die "$floor_bin is missing: cargo build --release -p huddle-medialoader"

pin_server=() pin_client=()
if command -v taskset >/dev/null 2>&1 && (($(nproc) > 1)); then
	pin_server=(taskset -c "$server_cpu")
	pin_client=(taskset -c "$client_cpu")
fi

reflector_pid=
cleanup() {
	[[ -z $reflector_pid ]] || kill "$reflector_pid" 2>/dev/null || true
}
trap cleanup EXIT

for legs in $legs_list; do
	floor_us=
	for batch in $batches; do
		port=$(free_port 39000)
		"${pin_server[@]}" "$floor_bin" reflect --bind "127.0.0.1:$port" --batch "$batch" &
		reflector_pid=$!
		note "floor: $legs streams at $kbps kbit/s for $secs s, batch $batch (reflector pid $reflector_pid, udp:$port)"
		steal0=$(steal_ticks)
		floor=$("${pin_client[@]}" "$floor_bin" blast --to "127.0.0.1:$port" --streams "$legs" \
			--kbps "$kbps" --secs "$secs" --reflector-pid "$reflector_pid")
		echo "$floor batch=$batch host_steal_ms=$((($(steal_ticks) - steal0) * 1000 / $(getconf CLK_TCK)))"
		kill "$reflector_pid" 2>/dev/null || true
		wait "$reflector_pid" 2>/dev/null || true
		reflector_pid=
		us=$(sed -n 's/.*us_per_echoed_packet=\([0-9.]*\).*/\1/p' <<<"$floor")
		if [[ -z $floor_us ]] || awk -v a="$us" -v b="$floor_us" 'BEGIN { exit !(a < b) }'; then
			floor_us=$us
		fi
	done
	if [[ ${BENCH_FLOOR_ECHO:-0} == 1 ]]; then
		echo_out=$(BENCH_MEDIA_LEGS=$legs BENCH_MEDIA_SECS=$secs "$here/run.sh" 2>/dev/null)
		echo "$echo_out" | grep -E '^(legs|server_cpu|echoed_packets|host_steal_ms)='
		huddle_us=$(sed -n 's/.*server_us_per_echoed_packet=\([0-9.]*\).*/\1/p' <<<"$echo_out")
		awk -v h="$huddle_us" -v f="$floor_us" -v n="$legs" 'BEGIN {
			printf "legs=%d huddle_us_per_echoed_packet=%s floor_us_per_echoed_packet=%s huddle/floor=%.2f\n", n, h, f, h / f }'
	fi
done
