#!/usr/bin/env bash
# Run every real-client test (JsSIP and SIP.js in Node, calls in headless Chromium) against one server.
#
#   tests/clients/run-all.sh               # target from HUDDLE_WS_URL / HUDDLE_DOMAIN / HUDDLE_USERS
#   tests/clients/run-all.sh --kamailio    # start bench/kamailio on its own ports, run, stop it
#   tests/clients/run-all.sh [--kamailio] FILE...   # only these test files
#
# Environment: HUDDLE_CLIENT_TESTS_TIMEOUT (whole run, seconds, default 600), HUDDLE_TEST_TIMEOUT_MS
# (each SIP wait, default 10000), HUDDLE_MEDIA_TIMEOUT_MS (media to flow, default 30000),
# HUDDLE_TRACE_SIP=1 (log every SIP frame the browser pages send/receive), CHROMIUM_PATH.
# With --kamailio: KAM_SIP_PORT (default 5170) and KAM_WS_PORT (default 8170).
# Exit status: non-zero if any test failed or the run timed out.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"

kamailio=0
if [[ ${1:-} == --kamailio ]]; then
	kamailio=1
	shift
fi
files=("$@")
if ((${#files[@]} == 0)); then
	files=(node/jssip.test.mjs node/sipjs.test.mjs browser/call.test.mjs)
fi

# Never download a browser (playwright-core does not, but be explicit); Debian's chromium is used.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

if [[ ! -d node_modules/jssip || ! -d node_modules/sip.js || ! -d node_modules/playwright-core || ! -d node_modules/ws ]]; then
	echo "run-all.sh: installing node modules (npm ci)" >&2
	npm ci --ignore-scripts --no-audit --no-fund >&2
fi

if ((kamailio)); then
	export KAM_SIP_PORT=${KAM_SIP_PORT:-5170} KAM_WS_PORT=${KAM_WS_PORT:-8170}
	kam=$here/../../bench/kamailio/run.sh
	[[ -x $kam ]] || { echo "run-all.sh: $kam not found" >&2; exit 2; }
	"$kam" start
	trap '"$kam" stop >/dev/null 2>&1 || true' EXIT
	export HUDDLE_WS_URL="ws://127.0.0.1:$KAM_WS_PORT" HUDDLE_DOMAIN=${HUDDLE_DOMAIN:-example.test}
fi

if [[ -z ${HUDDLE_WS_URL:-} ]]; then
	echo "run-all.sh: set HUDDLE_WS_URL (e.g. ws://127.0.0.1:8080) or pass --kamailio" >&2
	exit 2
fi
echo "run-all.sh: target ${HUDDLE_WS_URL} domain ${HUDDLE_DOMAIN:-example.test}" >&2

status=0
timeout --kill-after=15 "${HUDDLE_CLIENT_TESTS_TIMEOUT:-600}" \
	node --test --test-concurrency=1 --test-timeout=180000 "${files[@]}" || status=$?
if ((status == 124 || status == 137)); then
	echo "run-all.sh: the run exceeded ${HUDDLE_CLIENT_TESTS_TIMEOUT:-600}s and was stopped" >&2
fi
exit "$status"
