#!/usr/bin/env bash
# Install what building, testing and benchmarking Huddle needs on Debian 12, and nothing else.
#
#   scripts/install-deps.sh            build deps: pkg-config gcc g++ libc6-dev cmake clang
#                                      + GStreamer 1.22 (conference plugin: dev headers, run-time elements)
#                                      (+ libssl-dev when Cargo.lock pulls openssl-sys)
#                                      + the demo page's JsSIP: nodejs/npm only when no node is on
#                                      PATH, npm ci in web/, then web/vendor/jssip.js (browser build)
#   scripts/install-deps.sh --test     + sip-tester chromium cbindgen procps iproute2
#                                      gstreamer1.0-tools, then npm ci in tests/clients
#   scripts/install-deps.sh --bench    + sip-tester procps iproute2 and kamailio
#                                      kamailio-websocket-modules kamailio-extra-modules
#                                      kamailio-presence-modules (bench/presence)
#                                      kamailio-sqlite-modules sqlite3 (bench/messaging)
#   (--test --bench: both)
#
# Idempotent: checks dpkg and PATH first, runs apt-get update/install only for what is missing,
# and skips npm when tests/clients/node_modules is newer than its package files, so a second
# run takes about a second. Runs as root (CI) or through sudo. The Rust toolchain is not
# installed here (rustup); a warning says when cargo is missing.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
me=${0##*/}
want_test=0
want_bench=0

die() {
	printf '%s: error: %s\n' "$me" "$*" >&2
	exit 1
}
say() { printf '%s: %s\n' "$me" "$*"; }

for arg in "$@"; do
	case $arg in
	--test) want_test=1 ;;
	--bench) want_bench=1 ;;
	-h | --help)
		sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*) die "unknown option '$arg' (use --test, --bench or nothing)" ;;
	esac
done

[[ -r /etc/debian_version ]] || die "this script installs Debian packages; /etc/debian_version not found"
command -v dpkg-query >/dev/null || die "dpkg-query not found"

packages=(pkg-config gcc g++ libc6-dev cmake clang)
# The conference plugin (MCU): GStreamer 1.22 headers to build gstreamer-rs, and at run time the
# elements its pipelines use (VP8/Opus/G.711, RTP (de)payloaders, compositor, textrender (names) in -x,
# avdec_h264 in -libav, and openh264enc for the H.264 composite in -bad, which pulls libopenh264).
packages+=(libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev)
packages+=(gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
	gstreamer1.0-libav gstreamer1.0-x)
if grep -q '^name = "openssl-sys"' "$repo/Cargo.lock" 2>/dev/null; then
	packages+=(libssl-dev)
fi
if ((want_test || want_bench)); then
	packages+=(sip-tester procps iproute2)
fi
if ((want_test)); then
	# gst-inspect-1.0: the room tests check with it that GStreamer is there before they start.
	packages+=(chromium cbindgen gstreamer1.0-tools)
fi
# The demo page (web/) loads JsSIP from npm; the client tests run in Node.
if ! command -v node >/dev/null; then
	packages+=(nodejs npm)
elif ! command -v npm >/dev/null; then
	die "node $(node -v) is on PATH but npm is not; install npm with the same source as node"
fi
if ((want_bench)); then
	packages+=(kamailio kamailio-websocket-modules kamailio-extra-modules)
	# bench/presence: Kamailio's presence + presence_xml as the baseline.
	packages+=(kamailio-presence-modules)
	# bench/messaging: msilo on db_sqlite, the durable baseline (schema loaded with sqlite3).
	packages+=(kamailio-sqlite-modules sqlite3)
	# bench/conference: the raw pipeline it measures against runs in gst-launch-1.0.
	packages+=(gstreamer1.0-tools)
fi

# One dpkg-query for all: installed packages print "name install ok installed".
mapfile -t installed < <(dpkg-query -W -f='${Package} ${Status}\n' "${packages[@]}" 2>/dev/null |
	awk '$2 == "install" && $4 == "installed" { print $1 }')
missing=()
for p in "${packages[@]}"; do
	found=0
	for q in "${installed[@]}"; do
		if [[ $p == "$q" ]]; then
			found=1
			break
		fi
	done
	((found)) || missing+=("$p")
done

if ((${#missing[@]})); then
	sudo=()
	if ((EUID != 0)); then
		command -v sudo >/dev/null || die "missing packages (${missing[*]}) and not root; run as root"
		sudo=(sudo)
	fi
	log=$(mktemp "${TMPDIR:-/tmp}/install-deps.XXXXXX.log")
	apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=900)
	say "installing: ${missing[*]}"
	if ! "${apt[@]}" update >"$log" 2>&1; then
		tail -n 20 "$log" >&2
		die "apt-get update failed (full log: $log)"
	fi
	if ! "${apt[@]}" install "${missing[@]}" >>"$log" 2>&1; then
		tail -n 20 "$log" >&2
		die "apt-get install failed for: ${missing[*]} (full log: $log)"
	fi
	rm -f "$log"
else
	say "system packages present"
fi

if ((want_test)) && [[ -f $repo/tests/clients/package.json ]]; then
	clients=$repo/tests/clients
	stamp=$clients/node_modules/.package-lock.json
	if [[ -f $stamp && ! $clients/package.json -nt $stamp &&
		! ($clients/package-lock.json -nt $stamp) ]]; then
		say "tests/clients node_modules up to date"
	else
		if [[ -f $clients/package-lock.json ]]; then
			npm_cmd=(npm ci)
		else
			npm_cmd=(npm install)
		fi
		say "tests/clients: ${npm_cmd[*]}"
		log=$(mktemp "${TMPDIR:-/tmp}/install-deps-npm.XXXXXX.log")
		# Browsers come from Debian (chromium); never let Playwright download one.
		if ! (cd "$clients" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 "${npm_cmd[@]}" \
			--no-audit --no-fund --loglevel=error >"$log" 2>&1); then
			tail -n 20 "$log" >&2
			die "${npm_cmd[*]} failed in tests/clients (full log: $log)"
		fi
		rm -f "$log"
	fi
fi

# The demo page's JsSIP: npm ci in web/ when its lock is newer than the install, then the browser
# build the page loads as /jssip.js ([web] jssip) when missing or older than the install.
web=$repo/web
if [[ -f $web/package-lock.json ]]; then
	stamp=$web/node_modules/.package-lock.json
	if [[ -f $stamp && ! $web/package.json -nt $stamp && ! ($web/package-lock.json -nt $stamp) ]]; then
		say "web node_modules up to date"
	else
		say "web: npm ci (JsSIP for the demo page)"
		log=$(mktemp "${TMPDIR:-/tmp}/install-deps-npm.XXXXXX.log")
		if ! (cd "$web" && npm ci --no-audit --no-fund --loglevel=error >"$log" 2>&1); then
			tail -n 20 "$log" >&2
			die "npm ci failed in web/ (full log: $log)"
		fi
		rm -f "$log"
	fi
	if [[ ! -f $web/vendor/jssip.js || $stamp -nt $web/vendor/jssip.js ]]; then
		node "$web/build-jssip.mjs" || die "building web/vendor/jssip.js failed"
	fi
fi

command -v cargo >/dev/null || say "warning: cargo not on PATH; install Rust with rustup (see Cargo.toml rust-version)"
exit 0
