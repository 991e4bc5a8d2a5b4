#!/usr/bin/env bash
# Downloads that the server drops half way resume with an HTTP Range request
# for the remainder only: within one rsr update, and across runs (the
# partial file survives a failed run). Mirrors are tried in turn: a dead one
# and one that never answers (timeout) are skipped for a working one.
. "$(dirname "$0")/libtest.sh"
. "$(dirname "$0")/libresponse.sh"
. "$(dirname "$0")/librepo.sh"

vendor_setup
repo_setup

CTL=$T/drops
LOG=$T/drop.log
echo 0 >"$CTL"
: >"$LOG"
python3 "$RSR_SRCDIR/tests/integration/drop-server.py" "$R" ".libssl3-" "$CTL" "$LOG" >"$T/port" &
SRV=$!
cleanup_hooks+=("kill $SRV")
for _ in $(seq 50); do [ -s "$T/port" ] && break; sleep 0.1; done
PORT=$(cat "$T/port")
[ -n "$PORT" ] || fail "drop server did not start"

fwd=$(cd "$R/targets" && ls test-1/b/patches/*.libssl3-*.forward.rsrp)
len=$(stat -c %s "$R/targets/$fwd")

# bytes_for FILE: body bytes the server sent for FILE, and the Range headers it was asked for.
bytes_for() { awk -v f="$1" '$1 == f {s += $3} END {print s + 0}' "$LOG"; }
ranges_for() { awk -v f="$1" '$1 == f {print $2}' "$LOG" | tr '\n' ' '; }

# 1. One drop: the same run resumes at the byte where the connection broke.
D=$T/dev
repo_device "$D"
echo 1 >"$CTL"
expect 0 update --root "$D" --no-graft
device_is "$D" b
assert_grep "resuming" "$T/err"
half=$((len / 2))
[ "$(ranges_for "targets/$fwd")" = "- bytes=$half- " ] || fail "expected a full GET then Range $half-: $(ranges_for "targets/$fwd")"
[ "$(bytes_for "targets/$fwd")" = "$len" ] || fail "sent $(bytes_for "targets/$fwd") bytes of a $len-byte patch"
ok "dropped at byte $half of $len: resumed in the same run with Range: bytes=$half-, $((len - half)) more bytes"

# 2. The server keeps dropping: the run gives up with the partial file kept; the next run fetches the rest.
D2=$T/dev2
repo_device "$D2"
: >"$LOG"
echo 100 >"$CTL"
expect 1 update --root "$D2" --no-graft
device_is "$D2" base
part=$(find "$D2/var/lib/rsr/tuf/downloads" -name '*.libssl3-*.forward.rsrp.part' -o -name 'libssl3-*.forward.rsrp.part' | head -1)
[ -n "$part" ] || fail "partial download not kept"
have=$(stat -c %s "$part")
[ "$have" -gt 0 ] && [ "$have" -lt "$len" ] || fail "partial file holds $have of $len bytes"
first=$(bytes_for "targets/$fwd")
[ "$first" = "$have" ] || fail "the partial file ($have) is not what was received ($first)"
echo 0 >"$CTL"
: >"$LOG"
expect 0 update --root "$D2" --no-graft
device_is "$D2" b
[ "$(ranges_for "targets/$fwd")" = "bytes=$have- " ] || fail "second run did not resume at $have: $(ranges_for "targets/$fwd")"
[ "$(bytes_for "targets/$fwd")" = "$((len - have))" ] || fail "second run fetched $(bytes_for "targets/$fwd"), expected $((len - have))"
[ ! -e "$D2/var/lib/rsr/tuf/downloads/test-1-b" ] || fail "downloads left behind"
ok "kept dropping: failed run kept $have of $len bytes; the next run fetched only the other $((len - have))"

# 3. Mirrors in turn: a closed port, a server that accepts and never answers (timeout), then a working one.
dead=$(free_port)
python3 -c '
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(16)
print(s.getsockname()[1], flush=True)
time.sleep(3600)' >"$T/hang-port" &
HANG=$!
cleanup_hooks+=("kill $HANG")
for _ in $(seq 50); do [ -s "$T/hang-port" ] && break; sleep 0.1; done
D3=$T/dev3
repo_device "$D3"
printf 'mirror = http://127.0.0.1:%s\nmirror = http://127.0.0.1:%s/\nmirror = http://127.0.0.1:%s\ntimeout = 2\n' \
	"$dead" "$(cat "$T/hang-port")" "$PORT" >"$D3/etc/rsr/rsr.conf"
start=$(date +%s)
expect 0 update --root "$D3" --no-graft
device_is "$D3" b
assert_grep "trying the next mirror" "$T/err"
assert_grep "Connection refused\|Couldn't connect\|Failed to connect" "$T/err"
assert_grep "Operation too slow\|timed out\|Timeout" "$T/err"
ok "mirrors in turn: refused and stalled (timed out after 2 s) mirrors skipped, in $(( $(date +%s) - start )) s"
echo "1..$TESTS_RUN"
