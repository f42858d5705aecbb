#!/usr/bin/env bash
# bench/conference/run.sh — what an MCU room costs in Huddle, next to the raw GStreamer floor.
#
# For each room size N it measures, in the same run and on the same input:
#   raw   `raw-floor.sh N`: gst-launch-1.0 decoding N 360p30 VP8 inputs from a file, compositing
#         them and encoding the composite once per output profile (the denominator);
#   video Huddle with the conference plugin, N str0m legs (`medialoader --video-clip`) sending
#         that same VP8 clip as RTP over DTLS-SRTP into one public room and receiving the
#         composite: server CPU (user+sys of the huddle process from /proc) over the window;
#   av    the same with Opus audio too (`--audio-clip`): N decodes, N−1 mixes, N encodes.
# and prints cores, cores per participant, ours ÷ raw, the composite frame rate each leg
# received (real time: the canvas rate) and the loss.
#
#   cargo build --release -p huddle -p huddle-plugin-conference -p huddle-medialoader
#   bench/conference/run.sh                       # N = 2 4 9 16, then 25
#   BENCH_CONF_SIZES="2 4" BENCH_CONF_SECS=10 bench/conference/run.sh
#   BENCH_CONF_PROFILES="1280x720@30:1500 640x360@15:500"   # output profiles, WxH@fps:kbit/s
#   BENCH_CONF_DELAY_N=4                          # room size of the delay run (0: no delay run)
#   BENCH_CONF_VIDEO_DELAY_N=4                    # room size of the video delay run (0: none)
#   BENCH_CONF_AUDIO="no yes"                     # video-only run, with-audio run, or one of them
#   BENCH_HOOK=bench/profile-hook.sh PROFILE=perf # run as `HOOK start|stop PID DIR` around each
#                                                 # measured load run, DIR under BENCH_HOOK_DIR
#   BENCH_CONF_FAST_INGRESS=true|false            # `[media] fast_ingress` (inbound SRTP RTP opened
#                                                 # by the media driver, not str0m); unset: the
#                                                 # server's default, and the key is not written
#   BENCH_CONF_FAST_EGRESS=true|false             # `[media] fast_egress`, the same way
#   BENCH_VERBOSE=1                               # the load client's log and result lines too
#
# The delay run: N legs send silence (Opus of digital silence) and video; the first leg sends a
# 200 ms burst of the tone every second, and every other leg times how long after the burst's
# first packet left the first loud packet of its N−1 mix comes back (`medialoader
# --probe-clip`): the audio delay the mixer adds (decode, its jitter margin, mix, encode),
# as p50/p90/max over every burst heard.
#
# The video delay run (glass to glass through the mixer): N legs send the clip above, except
# the first, which sends 360p30 VP8 that is black and white half a second each
# (`videotestsrc pattern=blink`; `medialoader --video-probe-clip` finds the frames where it
# turns white by decoding it). Every other leg decodes the composite it receives (GStreamer
# vp8dec in the load client) and times when the first leg's tile — the brightest cell of the
# room's grid for N — turns bright (mean luma of the cell's centre above 128), from
# when the first packet of the white frame left: decode, the compositor's wait, the encode
# and the packetization of the mixer, as p50/p90/max over every change seen.
#
# With BENCH_PIN=1 the server and gst-launch run on core BENCH_SERVER_CPU (0) and the load
# client on BENCH_CLIENT_CPU (1) (taskset); by default nothing is pinned, since a 25-person room
# needs more than one core. The cores are shared with whatever else runs: the load average
# before and after is printed with the results.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"

sizes=${BENCH_CONF_SIZES:-"2 4 9 16 25"}
secs=${BENCH_CONF_SECS:-10}
# The issue's shape: a 720p30 canvas and a 360p15 lower profile.
profiles=${BENCH_CONF_PROFILES:-"1280x720@30:1500 640x360@15:500"}
server_cpu=${BENCH_SERVER_CPU:-0}
client_cpu=${BENCH_CLIENT_CPU:-1}
target="${CARGO_TARGET_DIR:-$root/target}/release"

for bin in huddle medialoader libhuddle_plugin_conference.so; do
	[[ -e $target/$bin ]] || die "$target/$bin is missing: cargo build --release -p huddle -p huddle-plugin-conference -p huddle-medialoader"
done
command -v gst-launch-1.0 >/dev/null || die "gst-launch-1.0 not found: run scripts/install-deps.sh"

pin_server=() pin_client=()
if [[ ${BENCH_PIN:-0} == 1 ]] && command -v taskset >/dev/null 2>&1 && (($(nproc) > 1)); then
	pin_server=(taskset -c "$server_cpu")
	pin_client=(taskset -c "$client_cpu")
fi

work=$(mktemp -d)
server_pid=
stop_server() {
	if [[ -n $server_pid ]]; then
		kill "$server_pid" 2>/dev/null || true
		wait_pids_gone 10 "$server_pid" || kill -9 "$server_pid" 2>/dev/null || true
		server_pid=
	fi
}
trap 'stop_server; rm -rf "$work"' EXIT

# The inputs, made once: 360p30 VP8 (~500 kbit/s, a key frame every 2 s so a newcomer's tile
# starts soon without PLI answers) as WebM for gst-launch and as RTP for the load client, from
# the same encode; 20 ms Opus frames of a tone.
note "encoding the input clips"
clip_frames=$((secs * 30 + 60))
gst-launch-1.0 -q videotestsrc num-buffers="$clip_frames" pattern=ball \
	! video/x-raw,width=640,height=360,framerate=30/1 \
	! vp8enc deadline=1 cpu-used=-8 target-bitrate=500000 end-usage=cbr keyframe-max-dist=60 lag-in-frames=0 \
	! webmmux ! filesink location="$work/in.webm"
gst-launch-1.0 -q filesrc location="$work/in.webm" ! matroskademux ! rtpvp8pay mtu=1150 pt=96 \
	picture-id-mode=15-bit ! rtpstreampay ! filesink location="$work/video.rtp"
gst-launch-1.0 -q audiotestsrc num-buffers=$((secs * 50 + 100)) wave=sine freq=440 samplesperbuffer=960 \
	! audio/x-raw,rate=48000,channels=1 ! opusenc bitrate=32000 frame-size=20 ! rtpopuspay pt=111 \
	! rtpstreampay ! filesink location="$work/audio.rtp"
# The video delay run's first leg: black and white, half a second each (blink at 2 fps,
# repeated to 30 fps), same encoder settings as the clip above.
gst-launch-1.0 -q videotestsrc pattern=blink num-buffers=9 \
	! video/x-raw,width=640,height=360,framerate=2/1 ! videorate ! video/x-raw,framerate=30/1 \
	! vp8enc deadline=1 cpu-used=-8 target-bitrate=500000 end-usage=cbr keyframe-max-dist=60 lag-in-frames=0 \
	! rtpvp8pay mtu=1150 pt=96 picture-id-mode=15-bit ! rtpstreampay ! filesink location="$work/blink.rtp"
# Digital silence for the delay run (the tone above is its loud burst; white noise would do too,
# but rtpstreampay here sometimes writes a wrong length before a noise packet).
gst-launch-1.0 -q audiotestsrc num-buffers=$((secs * 50 + 100)) wave=silence samplesperbuffer=960 \
	! audio/x-raw,rate=48000,channels=1 ! opusenc bitrate=32000 frame-size=20 ! rtpopuspay pt=111 \
	! rtpstreampay ! filesink location="$work/silence.rtp"

# The plugin's room, shaped like the raw pipeline: the first profile is the canvas.
parse() { sed -E 's/^([0-9]+)x([0-9]+)@([0-9]+):([0-9]+)$/width = \1, height = \2, fps = \3, bitrate_kbps = \4/' <<<"$1"; }
read -r -a plist <<<"$profiles"
room_video="video = { $(parse "${plist[0]}") }"
lower=""
for p in "${plist[@]:1}"; do
	lower+="${lower:+, }{ $(parse "$p") }"
done
[[ -n $lower ]] && room_video+=$'\n'"lower_profiles = [$lower]"

# Written into `[media]` only when set, so builds that do not know a key still start.
media_knobs=
[[ -n ${BENCH_CONF_FAST_INGRESS:-} ]] && media_knobs+="fast_ingress = $BENCH_CONF_FAST_INGRESS"$'\n'
[[ -n ${BENCH_CONF_FAST_EGRESS:-} ]] && media_knobs+="fast_egress = $BENCH_CONF_FAST_EGRESS"$'\n'

start_server() {
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
max_sessions = 1000
${media_knobs}[store]
path = "$work/huddle.redb"
[log]
level = "warn"
[[plugins]]
path = "$target/libhuddle_plugin_conference.so"
[plugins.config]
on_demand_prefix = ""
[[plugins.config.rooms]]
name = "bench"
public = true
max_participants = 64
$room_video
TOML
	rm -f "$work/huddle.redb"
	"${pin_server[@]}" "$target/huddle" run --config "$work/huddle.toml" >"$work/huddle.log" 2>&1 &
	server_pid=$!
	for _ in $(seq 50); do
		sip_probe 127.0.0.1 "$sip_port" && return 0
		sleep 0.2
	done
	cat "$work/huddle.log" >&2
	die "huddle did not start"
}

# load N [--audio-clip F]: one measured run; prints medialoader's result lines.
load() {
	local n=$1
	shift
	start_server
	local hook_dir=
	if [[ -n ${BENCH_HOOK:-} ]]; then
		mkdir -p "$hook_root"
		hook_dir=$(mktemp -d "$hook_root/n$n-XXXX")
		"$BENCH_HOOK" start "$server_pid" "$hook_dir" || note "BENCH_HOOK start failed"
	fi
	"${pin_client[@]}" "$target/medialoader" --sip "127.0.0.1:$sip_port" --user bench --legs "$n" \
		--rate 20 --secs "$secs" --server-pid "$server_pid" --video-clip "$work/video.rtp" "$@" \
		2>"$work/loader.err" || { cat "$work/loader.err" >&2; die "medialoader failed"; }
	if [[ -n $hook_dir ]]; then
		"$BENCH_HOOK" stop "$server_pid" "$hook_dir" || note "BENCH_HOOK stop failed"
		note "N=$n: profile in $hook_dir"
	fi
	[[ ${BENCH_VERBOSE:-0} == 1 ]] && cat "$work/loader.err" >&2
	stop_server
}

hook_root=${BENCH_HOOK_DIR:-/tmp/conference-bench-hook.$$}

field() { sed -nE "s/.*$1=([0-9.]+).*/\\1/p" | head -1; }

note "profiles: $profiles; ${secs} s per run${media_knobs:+; [media] $(tr '\n' ' ' <<<"$media_knobs")}; load before: $(uptime | sed 's/.*load average: //')"
printf '%4s | %8s %8s %5s | %8s %8s %6s %7s %6s | %8s %8s %6s %7s %6s\n' \
	N raw_core raw/part rt video vid/part ratio fps loss% a+v av/part ratio fps loss%
for n in $sizes; do
	raw=$(CLIP="$work/in.webm" SECS=$secs PROFILES="$profiles" "${pin_server[@]}" "$here/raw-floor.sh" "$n" | tail -1)
	read -r _ _ _ raw_cores _ raw_rt <<<"$raw"
	row=$(printf '%4d | %8.3f %8.4f %5s |' "$n" "$raw_cores" "$(awk -v c="$raw_cores" -v n="$n" 'BEGIN{print c/n}')" "$raw_rt")
	for audio in ${BENCH_CONF_AUDIO:-no yes}; do
		extra=()
		[[ $audio == yes ]] && extra=(--audio-clip "$work/audio.rtp")
		out=$(load "$n" "${extra[@]}")
		[[ ${BENCH_VERBOSE:-0} == 1 ]] && note "N=$n audio=$audio: $(tr '\n' ' ' <<<"$out")"
		cores=$(sed -nE 's/.*= ([0-9.]+)% of one core.*/\1/p' <<<"$out" | awk '{print $1/100}')
		fps=$(field video_fps_received_per_leg <<<"$out")
		loss=$(field loss <<<"$out")
		connected=$(field connected <<<"$out")
		[[ $connected == "$n" ]] || note "N=$n audio=$audio: only $connected legs connected"
		row+=$(printf ' %8.3f %8.4f %6.2f %7s %6s |' "$cores" "$(awk -v c="$cores" -v n="$n" 'BEGIN{print c/n}')" \
			"$(awk -v a="$cores" -v b="$raw_cores" 'BEGIN{print (b > 0 ? a/b : 0)}')" "$fps" "$loss")
	done
	echo "$row"
done
delay_n=${BENCH_CONF_DELAY_N:-4}
if ((delay_n > 1)); then
	out=$(load "$delay_n" --audio-clip "$work/silence.rtp" --probe-clip "$work/audio.rtp")
	note "audio delay added by the mixer, N=$delay_n: $(grep audio_delay_ms <<<"$out")"
fi
video_delay_n=${BENCH_CONF_VIDEO_DELAY_N:-4}
if ((video_delay_n > 1)); then
	# The room's grid shape for N (plugins/conference/src/layout.rs grid_shape); the first
	# leg's tile is whichever cell turns white.
	case $video_delay_n in
	2) cols=2 rows=1 ;;
	3 | 4) cols=2 rows=2 ;;
	5 | 6) cols=3 rows=2 ;;
	7 | 8 | 9) cols=3 rows=3 ;;
	*) cols=4 rows=4 ;;
	esac
	out=$(load "$video_delay_n" --video-probe-clip "$work/blink.rtp" --video-probe-grid "${cols}x${rows}")
	note "video delay added by the mixer, N=$video_delay_n: $(grep video_delay_ms <<<"$out"), composite received at $(field video_fps_received_per_leg <<<"$out") fps"
fi
note "load after: $(uptime | sed 's/.*load average: //')"
