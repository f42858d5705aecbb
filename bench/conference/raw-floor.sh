#!/usr/bin/env bash
# The raw GStreamer floor of an MCU room, measured on this machine: what decoding N 360p30 VP8
# inputs, compositing them, and encoding the composite once per output profile (720p30 and
# 360p15, shared by every receiver) costs in a bare gst-launch-1.0 pipeline, in real time.
# This is the denominator of issue 7's "our cost ÷ raw cost" (goal ≤ 1.15).
#
#   bench/conference/raw-floor.sh [N ...]      default: 2 4 9 16 25
#   SECS=10 (clip length, real time per run)
#   CLIP=file.webm   use this VP8 clip (bench/conference/run.sh passes the one its load client
#                    sends) instead of encoding one
#   PROFILES="1280x720@30:1500 640x360@15:500"   output profiles, WxH@fps:kbit/s; the first is
#                    the canvas, each is encoded once
#
# Output, per N: CPU seconds (user+sys of gst-launch) over the run, cores used, and cores per
# participant. The input clip is encoded once (not measured) to a temporary WebM file.
set -euo pipefail

secs=${SECS:-10}
sizes=("$@")
((${#sizes[@]})) || sizes=(2 4 9 16 25)
command -v gst-launch-1.0 >/dev/null || {
	echo "gst-launch-1.0 not found: run scripts/install-deps.sh" >&2
	exit 1
}
read -r -a profiles <<<"${PROFILES:-1280x720@30:1500 640x360@15:500}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
clip=${CLIP:-}
if [[ -z $clip ]]; then
	clip=$tmp/in360p30.webm
	frames=$((secs * 30))
	# The input: 360p30 VP8 at ~500 kbit/s, what a browser sends for a small tile.
	gst-launch-1.0 -q videotestsrc num-buffers="$frames" pattern=ball \
		! video/x-raw,width=640,height=360,framerate=30/1 \
		! vp8enc deadline=1 cpu-used=-8 target-bitrate=500000 end-usage=cbr keyframe-max-dist=300 \
		! webmmux ! filesink location="$clip"
fi
# One branch per output profile off the composite's tee: scaled and rate-limited when it is
# not the canvas, encoded once (what every receiver of that profile shares).
parse_profile() { # WxH@fps:kbps → "W H FPS KBPS"
	local p=$1
	echo "${p%%x*} $(tmp=${p#*x} && echo "${tmp%%@*}") $(tmp=${p#*@} && echo "${tmp%%:*}") ${p##*:}"
}
read -r canvas_w canvas_h canvas_fps _ <<<"$(parse_profile "${profiles[0]}")"
outputs=""
for p in "${profiles[@]}"; do
	read -r w h fps kbps <<<"$(parse_profile "$p")"
	scale=""
	if [[ $p != "${profiles[0]}" ]]; then
		scale="videorate ! videoscale ! video/x-raw,width=$w,height=$h,framerate=$fps/1 !"
	fi
	outputs+=" t. ! queue ! $scale vp8enc deadline=1 cpu-used=-8 target-bitrate=$((kbps * 1000)) end-usage=cbr lag-in-frames=0 threads=1 ! rtpvp8pay mtu=1150 ! fakesink sync=true"
done

hz=$(getconf CLK_TCK)
children_ticks() { awk '{print $16 + $17}' /proc/$$/stat; }
last=$(children_ticks)
printf '%4s %8s %8s %8s %14s %9s\n' N wall_s cpu_s cores cores/partic. realtime
for n in "${sizes[@]}"; do
	cols=1
	while ((cols * cols < n)); do cols=$((cols + 1)); done
	w=$((canvas_w / cols / 2 * 2))
	h=$((canvas_h / cols / 2 * 2))
	inputs=""
	for ((i = 0; i < n; i++)); do
		x=$(((i % cols) * w))
		y=$(((i / cols) * h))
		inputs+=" filesrc location=$clip ! matroskademux ! vp8dec ! queue max-size-buffers=3 ! c.sink_$i"
		pads+=" sink_$i::xpos=$x sink_$i::ypos=$y sink_$i::width=$w sink_$i::height=$h"
	done
	# One composite, two output profiles, each encoded once (what every receiver shares).
	# shellcheck disable=SC2086
	start=$(date +%s.%N)
	gst-launch-1.0 -q compositor name=c background=black $pads \
		! video/x-raw,width="$canvas_w",height="$canvas_h",framerate="$canvas_fps"/1 ! tee name=t \
		$outputs \
		$inputs &
	pid=$!
	wait "$pid" || {
		echo "gst-launch failed for N=$n" >&2
		exit 1
	}
	# Children's CPU ticks so far (utime+stime of reaped children), before and after.
	end=$(date +%s.%N)
	total=$(children_ticks)
	used=$((total - last))
	last=$total
	pads=""
	# Real time: at most 10% longer than the clip, plus 1.5 s of pipeline start-up.
	awk -v n="$n" -v t="$used" -v hz="$hz" -v s="$secs" -v a="$start" -v b="$end" \
		'BEGIN { c = t / hz; w = b - a; printf "%4d %8.2f %8.2f %8.3f %14.4f %9s\n", n, w, c, c / w, c / w / n, (w <= s * 1.1 + 1.5 ? "yes" : "no") }'
done
