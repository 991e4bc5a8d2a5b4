#!/usr/bin/env bash
# A server that trickles (TUF's slow-retrieval attack): it sends a byte now
# and then, never slow enough for the stall timeout, so only a deadline ends
# the transfer. Each file has timeout + length / min_rate seconds, all the
# transfers of one run max_run_time; rsr then fails with a message saying
# which, the lock is free again, and a later run completes the download.
. "$(dirname "$0")/libtest.sh"
. "$(dirname "$0")/libresponse.sh"
. "$(dirname "$0")/librepo.sh"

vendor_setup
repo_setup

CTL=$T/slow # the path pattern the server trickles; empty: none
: >"$CTL"
echo 0 >"$T/drops"
python3 "$RSR_SRCDIR/tests/integration/drop-server.py" "$R" "-" "$T/drops" "$T/log" "$CTL" 0.3 >"$T/port" &
SRV=$!
cleanup_hooks+=("kill $SRV")
for _ in $(seq 50); do [ -s "$T/port" ] && break; sleep 0.1; done
PORT=$(cat "$T/port")
[ -n "$PORT" ] || fail "the server did not start"

# bounded RUN-ARGS...: rsr, killed after 300 s should it not stop by itself; status in $rc.
bounded() {
	set +e
	timeout 300 "$RSR" "$@" >"$T/out" 2>"$T/err"
	rc=$?
	set -e
	[ "$rc" != 124 ] || fail "rsr $* was still running after 300 s"
}

# 1. timestamp.json has no signed length: its bound (64 KiB) at min_rate, plus the timeout.
D=$T/dev
repo_device "$D" "timeout = 2" "min_rate = 65536"
echo timestamp.json >"$CTL"
bounded check --root "$D"
[ "$rc" = 1 ] || fail "check exited with $rc, expected 1"
assert_grep "metadata/timestamp.json: not complete after 3 s, the time 65536 bytes may take at 65536 bytes/s (min_rate) plus the 2 s timeout" "$T/err"
assert_grep "slow-retrieval attack" "$T/err"
[ ! -e "$D/var/lib/rsr/tuf/timestamp.json" ] || fail "a partial timestamp was kept"
: >"$CTL"
expect 0 check --root "$D"
assert_grep "Available: response (b)" "$T/out"
ok "a trickled timestamp.json is cut off at its deadline; the next check works"

# 2. The run's ceiling, whatever the files' own deadlines.
repo_device "$D" "timeout = 2" "min_rate = 1" "max_run_time = 4"
rm -rf "$D/var/lib/rsr/tuf"
echo timestamp.json >"$CTL"
bounded check --root "$D"
[ "$rc" = 1 ] || fail "check exited with $rc, expected 1"
assert_grep "metadata/timestamp.json: stopped at the ceiling of 4 s for all transfers of one run (max_run_time)" "$T/err"
ok "max_run_time ends a run that each file's deadline would let go on"

# 3. A patch: its signed length at min_rate. The partial file stays for the next run.
fwd=$(cd "$R/targets" && ls test-1/b/patches/*.libssl3-*.forward.rsrp)
len=$(stat -c %s "$R/targets/$fwd")
repo_device "$D" "timeout = 2" "min_rate = 1073741824"
rm -rf "$D/var/lib/rsr/tuf"
echo ".libssl3-" >"$CTL"
bounded update --root "$D" --no-graft
[ "$rc" = 1 ] || fail "update exited with $rc, expected 1"
assert_grep "forward.rsrp: not complete after 2 s, the time $len bytes may take at 1073741824 bytes/s" "$T/err"
part=$(find "$D/var/lib/rsr/tuf/downloads" -name 'libssl3-*.forward.rsrp.part')
[ -s "$part" ] || fail "no partial download kept"
: >"$CTL"
expect 0 update --root "$D" --no-graft
device_is "$D" b
ok "a trickled patch is cut off at its deadline; the next update completes it"
