#!/usr/bin/env bash
# bench/media/run.sh — how many echo legs one Huddle forwards, and at what CPU per leg.
#
# Starts a release Huddle with the echo plugin (host fast path) on free loopback ports, pinned to
# one core (taskset, BENCH_SERVER_CPU, default 0) when taskset exists, then runs `medialoader`
# (str0m peers, no browser, on the other core) for each leg count in BENCH_MEDIA_LEGS: every leg
# sends BENCH_MEDIA_KBPS (1000) kbit/s of video-sized RTP for BENCH_MEDIA_SECS (20) seconds and
# counts what comes back. Prints, per run, loss and the server's CPU (user+sys from /proc) over
# the measured window: % of one core, ms of CPU per second per leg, and the projected legs per
# core at that load.
#
#   cargo build --release -p huddle -p huddle-plugin-echo -p huddle-medialoader
#   bench/media/run.sh
#   BENCH_MEDIA_LEGS="50 100 200" BENCH_MEDIA_KBPS=1000 bench/media/run.sh
#
# Each echoed leg is two forwarded streams' worth of work in the server (one received and
# decrypted, one encrypted and sent); see bench/media/README.md for how to read the numbers.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"

legs_list=${BENCH_MEDIA_LEGS:-"25 50 100"}
kbps=${BENCH_MEDIA_KBPS:-1000}
secs=${BENCH_MEDIA_SECS:-20}
server_cpu=${BENCH_SERVER_CPU:-0}
client_cpu=${BENCH_CLIENT_CPU:-1}
target="${CARGO_TARGET_DIR:-$root/target}/release"
# The load client; another build's (BENCH_MEDIALOADER) keeps the client the same when two
# servers are compared (bench/media/ab.sh).
loader=${BENCH_MEDIALOADER:-$target/medialoader}

for bin in "$target/huddle" "$loader"; do
	[[ -x $bin ]] || die "$bin is missing: cargo build --release -p huddle -p huddle-plugin-echo -p huddle-medialoader"
done
echo_lib=$target/libhuddle_plugin_echo.so
[[ -f $echo_lib ]] || die "$echo_lib is missing: cargo build --release -p huddle-plugin-echo"

# BENCH_MEDIA_BULK=1: the load client's bulk mode (`medialoader --bulk`: str0m does ICE and DTLS,
# one thread seals, sends and counts every leg's RTP), which drives several hundred legs from
# one core where the default mode (a str0m Rtc and a task per leg) saturates at ~100–150.
bulk_flag=()
[[ ${BENCH_MEDIA_BULK:-0} == 1 ]] && bulk_flag=(--bulk)
pin_server=() pin_client=() client_threads=0
if command -v taskset >/dev/null 2>&1 && (($(nproc) > 1)); then
	pin_server=(taskset -c "$server_cpu")
	pin_client=(taskset -c "$client_cpu")
	client_threads=1
fi

work=$(mktemp -d)
server_pid=
cleanup() {
	if [[ -n $server_pid ]]; then
		kill "$server_pid" 2>/dev/null || true
		wait_pids_gone 10 "$server_pid" || kill -9 "$server_pid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT

# BENCH_MEDIA_FAST_EGRESS=true|false sets `[media] fast_egress` (builds from branch fastegress
# on); unset, the key is not written, so builds without it start too.
fast_egress_line=
[[ -n ${BENCH_MEDIA_FAST_EGRESS:-} ]] && fast_egress_line="fast_egress = $BENCH_MEDIA_FAST_EGRESS"
# BENCH_MEDIA_FAST_INGRESS=true|false sets `[media] fast_ingress` (builds from branch ingress on),
# the same way.
fast_ingress_line=
[[ -n ${BENCH_MEDIA_FAST_INGRESS:-} ]] && fast_ingress_line="fast_ingress = $BENCH_MEDIA_FAST_INGRESS"
# BENCH_MEDIA_UDP_GSO=true|false sets `[media] udp_gso` (builds from branch medgso on), the same
# way.
udp_gso_line=
[[ -n ${BENCH_MEDIA_UDP_GSO:-} ]] && udp_gso_line="udp_gso = $BENCH_MEDIA_UDP_GSO"
# BENCH_MEDIA_UDP_RECV_BUFFER=<bytes> sets `[media] udp_recv_buffer` (builds from branch medload
# on; 0 = the kernel's default), the same way.
udp_recv_buffer_line=
[[ -n ${BENCH_MEDIA_UDP_RECV_BUFFER:-} ]] && udp_recv_buffer_line="udp_recv_buffer = $BENCH_MEDIA_UDP_RECV_BUFFER"
sip_port=$(free_port 25060)
media_port=$(free_port 30000)
cat >"$work/huddle.toml" <<TOML
[sip]
domain = "example.test"
listen = ["udp:127.0.0.1:$sip_port", "tcp:127.0.0.1:$sip_port"]
[limits]
requests_per_second_per_ip = 100000
request_burst_per_ip = 100000
[media]
listen = "127.0.0.1:$media_port"
connect_timeout_secs = 30
max_sessions = 100000
${fast_egress_line}
${fast_ingress_line}
${udp_gso_line}
${udp_recv_buffer_line}
[store]
path = "$work/huddle.redb"
[log]
level = "warn"
[[plugins]]
path = "$echo_lib"
queue_len = 65536
TOML

note "starting huddle (SIP udp:$sip_port, media udp:$media_port) ${pin_server[*]}"
"${pin_server[@]}" "$target/huddle" run --config "$work/huddle.toml" >"$work/huddle.log" 2>&1 &
server_pid=$!
for _ in $(seq 50); do
	sip_probe 127.0.0.1 "$sip_port" && break
	sleep 0.2
done
sip_probe 127.0.0.1 "$sip_port" || { cat "$work/huddle.log" >&2; die "huddle did not start"; }
# BENCH_MEDIA_SETTLE (s): a server under valgrind answers the probe well before it keeps up
# with the loader's INVITEs (callgrind runs, bench/NOTES.md).
sleep "${BENCH_MEDIA_SETTLE:-0}"

for legs in $legs_list; do
	note "run: $legs legs at $kbps kbit/s for $secs s"
	steal0=$(steal_ticks)
	"${pin_client[@]}" "$loader" --sip "127.0.0.1:$sip_port" --legs "$legs" --kbps "$kbps" \
		--secs "$secs" --server-pid "$server_pid" --rate 50 --threads "$client_threads" "${bulk_flag[@]}"
	# CPU the hypervisor gave other guests meanwhile (all cores, the whole run): see measure_hook.
	echo "host_steal_ms=$((($(steal_ticks) - steal0) * 1000 / $(getconf CLK_TCK)))"
	# Let every BYE land before the next run.
	sleep 2
done
