#!/usr/bin/env bash
# Run the presence SIPp scenario (presence_udp.xml) against a server that loads the presence
# plugin for domain example.test, over UDP.
#
#   tests/sipp/presence.sh SERVER_HOST:PORT
#
# Bounded: one call (-m 1), -timeout, and SIPp's own retransmission limits. Exit status 0 when the
# scenario passed; otherwise SIPp's, with its error log printed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[[ $# -eq 1 && $1 == *:* ]] || {
	echo "usage: $0 SERVER_HOST:PORT" >&2
	exit 2
}
command -v sipp >/dev/null || {
	echo "sipp not installed (run: scripts/install-deps.sh --test)" >&2
	exit 1
}
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
cd "$logs"
status=0
sipp "$1" -sf "$here/presence_udp.xml" -inf "$here/alice.csv" -t u1 -m 1 \
	-i 127.0.0.1 -timeout "${SIPP_TIMEOUT:-20}" -timeout_error -trace_err \
	-nostdin 2>&1 >/dev/null || status=$?
if [[ $status -ne 0 ]]; then
	echo "presence_udp.xml failed (sipp exit $status):" >&2
	cat ./*errors.log >&2 2>/dev/null || true
fi
exit "$status"
