#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Run the SIPp scenarios of this folder against a SIP registrar/proxy for domain example.test.
#
#   tests/sipp/run.sh SERVER_HOST:PORT [TRANSPORT]      TRANSPORT: u1|udp (default) or t1|tcp
#
# Order: register_auth (alice registers and unregisters); then bob's UA (uas_bob.xml with
# uas_bob_calls.xml as out-of-call scenario) registers in the background and the callers run in
# the foreground: uac_invite, uac_cancel, message; bob's UA then checks it served all three and
# unregisters. Every SIPp run is bounded (-m, -timeout, and a wall-clock limit).
# Exit status 0 when everything passed; otherwise 1, with the reason of each failure printed.
#
# Environment: SIPP_LOCAL_IP (default 127.0.0.1 for a loopback server, else SIPp's choice),
#   SIPP_TIMEOUT (seconds per caller scenario, default 15), SIPP_LOG_DIR (keep logs there;
#   default: a temporary folder, removed when everything passed).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../../bench/lib.sh
. "$here/../../bench/lib.sh"

usage() {
	echo "usage: $0 SERVER_HOST:PORT [u1|t1|udp|tcp]" >&2
	exit 2
}

[[ $# -ge 1 && $# -le 2 ]] || usage
target=$1
[[ $target == *:* ]] || usage
host=${target%:*}
port=${target##*:}
[[ $port =~ ^[0-9]+$ ]] || usage
case ${2:-u1} in
u1 | udp) transport=u1 ;;
t1 | tcp) transport=t1 ;;
*) usage ;;
esac
command -v sipp >/dev/null || die "sipp not installed (run: scripts/install-deps.sh --test)"
command -v ss >/dev/null || die "ss (iproute2) not installed"

timeout_s=${SIPP_TIMEOUT:-15}
local_ip=${SIPP_LOCAL_IP:-}
if [[ -z $local_ip && $host == 127.* ]]; then
	local_ip=127.0.0.1
fi
if [[ -n ${SIPP_LOG_DIR:-} ]]; then
	logdir=$SIPP_LOG_DIR
	mkdir -p "$logdir"
	keep_logs=1
else
	logdir=$(mktemp -d "${TMPDIR:-/tmp}/huddle-sipp.XXXXXX")
	keep_logs=0
fi
logdir=$(cd "$logdir" && pwd)

uas_pid=""
cleanup() {
	if [[ -n $uas_pid ]] && kill -0 "$uas_pid" 2>/dev/null; then
		kill -TERM "$uas_pid" 2>/dev/null || true
		wait_pids_gone 5 "$uas_pid" || kill -KILL "$uas_pid" 2>/dev/null || true
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Ports for our UAs: free now, and distinct from each other. The search starts at an offset
# from our PID: two runs at once (the test suite runs SIPp tests in parallel) would otherwise
# both find the same port free and race to bind it.
uas_port=$(free_port $((15060 + ($$ % 1000) * 4)))
uac_port=$(free_port $((uas_port + 1)))

# sipp_args NAME: options common to every run; logs go to $logdir/NAME.*.
sipp_args() {
	local name=$1
	common=("$host:$port" -t "$transport" -nostdin -trace_err -error_file "$logdir/$name.errors.log"
		-trace_msg -message_file "$logdir/$name.messages.log" -trace_screen
		-screen_file "$logdir/$name.screen.log")
	if [[ -n $local_ip ]]; then
		common+=(-i "$local_ip")
	fi
}

# explain RC: what a SIPp exit status means.
explain() {
	case $1 in
	0) echo "all calls succeeded" ;;
	1) echo "at least one call failed" ;;
	97) echo "exit on internal command" ;;
	99) echo "no call was processed" ;;
	124) echo "killed after the wall-clock limit" ;;
	254) echo "could not bind its local port" ;;
	255) echo "fatal error (e.g. -timeout reached, bad scenario)" ;;
	*) echo "exit status $1" ;;
	esac
}

# why NAME: print the end of a run's error log and its result lines.
why() {
	local name=$1
	if [[ -s $logdir/$name.errors.log ]]; then
		echo "    $name errors ($logdir/$name.errors.log):"
		# SIPp writes events without newlines, each starting with a date and a tab.
		sed -E 's/([0-9]{4}-[0-9]{2}-[0-9]{2}\t)/\n\1/g' "$logdir/$name.errors.log" |
			grep -E '^[0-9]{4}-' | grep -v 'Received out-of-call' | cut -f3- | sed -E 's/^[0-9.]+: //' |
			tail -n 8 | cut -c1-300 | sed 's/^/      /'
	fi
	echo "    messages: $logdir/$name.messages.log"
}

failures=0
pass() { printf '  PASS  %s\n' "$1"; }
fail() {
	printf '  FAIL  %s: %s\n' "$1" "$2"
	failures=$((failures + 1))
	why "$1"
}

# csv_field CSV N: field N (from 0) of the first data line of an injection file.
csv_field() {
	grep -v -e '^#' -e '^SEQUENTIAL' -e '^RANDOM' -e '^USER' "$here/$1" | head -n 1 | cut -d';' -f$(($2 + 1))
}

# run_uac NAME SCENARIO CSV AUTH_URI: one call of a caller scenario in the foreground.
# AUTH_URI: the scenario's Request-URI without "sip:". SIPp 3.6 would otherwise put
# "sip:<server ip:port>" in the digest uri, which a server checking it against the Request-URI
# (RFC 2617 3.2.2.5) rejects.
run_uac() {
	local name=$1 scenario=$2 csv=$3 auth_uri=$4 rc=0
	local -a common
	sipp_args "$name"
	timeout -k 5 $((timeout_s + 10)) sipp "${common[@]}" -sf "$here/$scenario" -inf "$here/$csv" \
		-auth_uri "$auth_uri" -p "$uac_port" -m 1 -timeout "${timeout_s}s" -timeout_error \
		>"$logdir/$name.out" 2>&1 || rc=$?
	if ((rc == 0)); then
		pass "$name"
	else
		fail "$name" "$(explain "$rc")"
	fi
}

echo "SIPp scenarios against $host:$port over ${transport/u1/UDP}" | sed 's/over t1/over TCP/'

domain=$(csv_field alice.csv 1)
callee=$(csv_field alice.csv 3)
[[ -n $domain && -n $callee ]] || die "alice.csv: no domain/callee in its first line"
[[ $(csv_field bob.csv 0) == "$callee" ]] || die "bob.csv must register the callee of alice.csv ($callee)"

run_uac register_auth register_auth.xml alice.csv "$domain"

# bob's UA: registers, serves 3 out-of-call requests, unregisters. -nd: a failure must not make
# SIPp send its own BYE/CANCEL. wait_ms bounds how long it waits for the callers.
uas_wait_ms=$(((timeout_s * 3 + 10) * 1000))
(
	common=()
	sipp_args uas_bob
	exec timeout -k 5 $((uas_wait_ms / 1000 + 30)) sipp "${common[@]}" -sf "$here/uas_bob.xml" \
		-oocsf "$here/uas_bob_calls.xml" -inf "$here/bob.csv" -auth_uri "$domain" -p "$uas_port" -m 1 -nd \
		-set expect 3 -set wait_ms "$uas_wait_ms" -trace_logs -log_file "$logdir/uas_bob.log" \
		>"$logdir/uas_bob.out" 2>&1
) &
uas_pid=$!

registered=0
for _ in $(seq 100); do
	if grep -q '^registered' "$logdir/uas_bob.log" 2>/dev/null; then
		registered=1
		break
	fi
	kill -0 "$uas_pid" 2>/dev/null || break
	sleep 0.1
done

if ((registered)); then
	run_uac uac_invite uac_invite.xml alice.csv "$callee@$domain"
	run_uac uac_cancel uac_cancel.xml alice.csv "$callee@$domain"
	run_uac message message.xml alice.csv "$callee@$domain"
	# It unregisters as soon as it has served all three; a caller that failed leaves it waiting.
	uas_rc=0
	if wait_pids_gone 10 "$uas_pid"; then
		wait "$uas_pid" || uas_rc=$?
	else
		kill -TERM "$uas_pid" 2>/dev/null || true
		wait "$uas_pid" 2>/dev/null || true
		uas_rc=124
	fi
	uas_pid=""
	served=$(grep -c -E '^(call|message) ' "$logdir/uas_bob.log" || true)
	if ((uas_rc == 0)); then
		pass "uas_bob (served $served of 3, unregistered)"
	else
		fail uas_bob "served $served of 3 requests; $(explain "$uas_rc")"
		sed 's/^/    uas_bob: /' "$logdir/uas_bob.log"
	fi
else
	fail uas_bob "bob did not register within 10 s"
	for name in uac_invite uac_cancel message; do
		printf '  SKIP  %s: needs bob registered\n' "$name"
		failures=$((failures + 1))
	done
fi

if ((failures)); then
	echo "$failures failure(s); logs in $logdir"
	exit 1
fi
if ((keep_logs)); then
	echo "all passed; logs in $logdir"
else
	rm -rf "$logdir"
	echo "all passed"
fi
