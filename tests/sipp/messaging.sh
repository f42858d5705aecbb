#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# SIPp against a Huddle that loads the messaging plugin (plugins/messaging), domain example.test:
# alice leaves carol (not registered) three MESSAGEs, each answered 202 (messaging_store.xml);
# then carol registers (uas_bob.xml with messaging_carol.csv) and her out-of-call scenario
# (messaging_recv.xml) receives all three, in order, from alice, each with a Date, and answers 200.
#
#   tests/sipp/messaging.sh SERVER_HOST:PORT [u1|t1|udp|tcp]
#
# Exit status 0 when everything passed; otherwise 1 with the reason printed. Every SIPp run is
# bounded (-m, -timeout, wall-clock limit). Environment as run.sh (SIPP_TIMEOUT, SIPP_LOG_DIR).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../../bench/lib.sh
. "$here/../../bench/lib.sh"

[[ $# -ge 1 && $# -le 2 && $1 == *:* ]] || {
	echo "usage: $0 SERVER_HOST:PORT [u1|t1|udp|tcp]" >&2
	exit 2
}
target=$1
case ${2:-u1} in
u1 | udp) transport=u1 ;;
t1 | tcp) transport=t1 ;;
*)
	echo "unknown transport $2" >&2
	exit 2
	;;
esac
command -v sipp >/dev/null || die "sipp not installed (run: scripts/install-deps.sh --test)"
timeout_s=${SIPP_TIMEOUT:-15}
logdir=${SIPP_LOG_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/huddle-sipp-msg.XXXXXX")}
mkdir -p "$logdir"
port=$(free_port $((20060 + ($$ % 1000) * 2))) # PID offset: parallel runs pick apart
common=("$target" -t "$transport" -i 127.0.0.1 -nostdin -trace_err -error_file "$logdir/err.log"
	-trace_msg -message_file "$logdir/messages.log")

echo "SIPp messaging scenarios against $target over ${transport/u1/UDP}" | sed 's/over t1/over TCP/'
rc=0
timeout -k 5 $((timeout_s * 3 + 10)) sipp "${common[@]}" -sf "$here/messaging_store.xml" \
	-inf "$here/messaging_alice.csv" -auth_uri carol@example.test -p "$port" -m 3 -l 1 \
	-timeout "$((timeout_s * 3))s" -timeout_error >"$logdir/store.out" 2>&1 || rc=$?
if ((rc != 0)); then
	echo "  FAIL  messaging_store: SIPp exit status $rc; logs in $logdir"
	exit 1
fi
echo "  PASS  messaging_store (3 MESSAGEs answered 202)"

rc=0
timeout -k 5 $((timeout_s + 30)) sipp "${common[@]}" -sf "$here/uas_bob.xml" \
	-oocsf "$here/messaging_recv.xml" -inf "$here/messaging_carol.csv" -auth_uri example.test \
	-p "$port" -m 1 -nd -set expect 3 -set wait_ms $((timeout_s * 1000)) -trace_logs \
	-log_file "$logdir/recv.log" >"$logdir/recv.out" 2>&1 || rc=$?
got=$(grep -o '^delivered stored [0-9]*' "$logdir/recv.log" | sed 's/^delivered //' | tr '\n' ',' || true)
if ((rc != 0)); then
	echo "  FAIL  messaging_recv: SIPp exit status $rc, delivered: $got; logs in $logdir"
	exit 1
fi
if [[ $got != "stored 1,stored 2,stored 3," ]]; then
	echo "  FAIL  messaging_recv: delivered $got, expected stored 1..3 in order; logs in $logdir"
	exit 1
fi
if grep '^delivered' "$logdir/recv.log" | grep -v -q 'from sip:alice@example.test date .'; then
	echo "  FAIL  messaging_recv: a delivery lost its From or Date; logs in $logdir"
	exit 1
fi
echo "  PASS  messaging_recv (carol registered and received all three in order, from alice, dated)"
[[ -n ${SIPP_LOG_DIR:-} ]] || rm -rf "$logdir"
