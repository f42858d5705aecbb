#!/usr/bin/env bash
# bench/screenshare/run.sh — viewers per core of the screen-share relay for a 1.5 Mbit/s
# 1080p-sized presentation, side by side with the echo fast path as a baseline.
#
# Starts a release Huddle with the screenshare plugin (presenter role for alice, viewers =
# "anyone") on free loopback ports, pinned to one core (taskset, BENCH_SERVER_CPU, default 0)
# when taskset exists, then for each viewer count in BENCH_SHARE_VIEWERS runs `screenshareload`
# (bench/screenshare: one str0m presenter sending BENCH_SHARE_KBPS (1500) kbit/s at 30 fps with a
# key frame every 3 s, N str0m viewers receiving it relayed) on the other core. Prints loss and
# the server's CPU over the measured window: % of one core, ms CPU per second per viewer, and the
# projected viewers per core. With BENCH_SHARE_BASELINE=1 (default) it then runs
# bench/media/run.sh's medialoader against the echo plugin with as many legs as the largest viewer
# count at the same bitrate, in the same server, for the CPU per forwarded stream of the plain
# fast path.
#
#   cargo build --release -p huddle -p huddle-plugin-screenshare -p huddle-plugin-echo \
#       -p huddle-screenshareload -p huddle-medialoader
#   bench/screenshare/run.sh
#   BENCH_SHARE_VIEWERS="50 100 200" BENCH_SHARE_SECS=20 bench/screenshare/run.sh
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"

viewers_list=${BENCH_SHARE_VIEWERS:-"25 50 100"}
kbps=${BENCH_SHARE_KBPS:-1500}
secs=${BENCH_SHARE_SECS:-20}
baseline=${BENCH_SHARE_BASELINE:-1}
server_cpu=${BENCH_SERVER_CPU:-0}
client_cpu=${BENCH_CLIENT_CPU:-1}
target="${CARGO_TARGET_DIR:-$root/target}/release"

for bin in huddle screenshareload; do
	[[ -x $target/$bin ]] || die "$target/$bin is missing: cargo build --release -p huddle -p huddle-plugin-screenshare -p huddle-screenshareload"
done
share_lib=$target/libhuddle_plugin_screenshare.so
[[ -f $share_lib ]] || die "$share_lib is missing: cargo build --release -p huddle-plugin-screenshare"
echo_lib=$target/libhuddle_plugin_echo.so
if [[ $baseline == 1 ]] && { [[ ! -f $echo_lib ]] || [[ ! -x $target/medialoader ]]; }; then
	die "the baseline needs $echo_lib and $target/medialoader: cargo build --release -p huddle-plugin-echo -p huddle-medialoader (or BENCH_SHARE_BASELINE=0)"
fi

pin_server=() pin_client=()
if command -v taskset >/dev/null 2>&1 && (($(nproc) > 1)); then
	pin_server=(taskset -c "$server_cpu")
	pin_client=(taskset -c "$client_cpu")
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

sip_port=$(free_port 26060)
media_port=$(free_port 31000)
echo_entry=
if [[ $baseline == 1 ]]; then
	echo_entry="[[plugins]]
path = \"$echo_lib\"
queue_len = 65536"
fi
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
[store]
path = "$work/huddle.redb"
[log]
level = "warn"
[[plugins]]
path = "$share_lib"
queue_len = 65536
[plugins.config]
presenters = ["alice"]
viewers = "anyone"
$echo_entry
TOML

"$target/huddle" user add alice --password alice-pw --config "$work/huddle.toml" >/dev/null
note "starting huddle (SIP udp:$sip_port, media udp:$media_port) ${pin_server[*]}"
"${pin_server[@]}" "$target/huddle" run --config "$work/huddle.toml" >"$work/huddle.log" 2>&1 &
server_pid=$!
for _ in $(seq 50); do
	sip_probe 127.0.0.1 "$sip_port" && break
	sleep 0.2
done
sip_probe 127.0.0.1 "$sip_port" || { cat "$work/huddle.log" >&2; die "huddle did not start"; }

max=0
for viewers in $viewers_list; do
	((viewers > max)) && max=$viewers
	note "relay: 1 presenter at $kbps kbit/s, $viewers viewers, $secs s"
	"${pin_client[@]}" "$target/screenshareload" --sip "127.0.0.1:$sip_port" --viewers "$viewers" \
		--kbps "$kbps" --secs "$secs" --server-pid "$server_pid" --rate 50
	# Let every BYE land before the next run.
	sleep 2
done

if [[ $baseline == 1 ]]; then
	note "baseline: echo fast path, $max legs at $kbps kbit/s, $secs s (one leg = one stream in + one out)"
	"${pin_client[@]}" "$target/medialoader" --sip "127.0.0.1:$sip_port" --legs "$max" --kbps "$kbps" \
		--secs "$secs" --server-pid "$server_pid" --rate 50
fi
