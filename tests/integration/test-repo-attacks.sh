#!/usr/bin/env bash
# The attacks TUF defends against, each served by nginx on 127.0.0.1 to a
# device on (a) with (b) on offer: every one is refused with a message
# saying what is wrong, and the device stays on (a) with nothing left behind.
# Also: root rotations the device follows, and one it must refuse.
. "$(dirname "$0")/libtest.sh"
. "$(dirname "$0")/libresponse.sh"
. "$(dirname "$0")/librepo.sh"

vendor_setup
repo_setup
S=$T/served # what nginx serves: a copy of $R the attacker tampers with
cp -a "$R" "$S"
nginx_start "$S"

D=$T/dev
repo_device "$D"
expect 0 install "$V/a" --root "$D" --no-graft
# The device has seen the current metadata once.
expect 0 check --root "$D"
assert_grep "Available: response (b)" "$T/out"

reset_served() { rm -rf "$S" && cp -a "$R" "$S"; }
# refused PATTERN: rsr update fails with PATTERN in its message; the device is still on (a).
# The device forgets the ETag of its trusted timestamp.json first: the files here are
# put in place by hand (cp -a keeps times), and nginx's ETag is the modification
# time in seconds and the size, so a served file could carry the tag of the one the
# device holds and be answered 304, unseen (test-repo-conditional covers 304s).
refused() { # PATTERN
	rm -f "$D/var/lib/rsr/tuf/timestamp.etag.json"
	expect 1 update --root "$D" --no-graft
	assert_grep "$1" "$T/err"
	device_is "$D" a
	# Complete downloads are only ever files that matched their signed hash.
	if [ -d "$D/var/lib/rsr/tuf/downloads/test-1-b" ]; then
		find "$D/var/lib/rsr/tuf/downloads/test-1-b" -type f ! -name '*.part' | while read -r f; do
			grep -q "$(sha "$f")" "$S/metadata/"*.targets.json || fail "unverified file $f kept"
		done
	fi
	rm -rf "$D/var/lib/rsr/tuf/downloads"
	reset_served
}
ts_version() { json_get "$1/metadata/timestamp.json" 'd["signed"]["version"]'; }

# Rollback: the vendor refreshes; the device sees it; the attacker serves the older timestamp.
cp "$R/metadata/timestamp.json" "$T/old-timestamp.json"
"$RSR" -q repo refresh "$R" --key "$K/snapshot" --key "$K/timestamp"
reset_served
expect 0 check --root "$D"
cp "$T/old-timestamp.json" "$S/metadata/timestamp.json"
refused "timestamp.json: version 3 is older than the trusted version 4 (rollback attack)"
ok "rollback: an older timestamp is refused"

# Rollback of the snapshot behind a new timestamp: a replayed older snapshot with a fresh timestamp
# naming it can only be made with the timestamp key; the version check still catches it.
old_sn=$(ls "$R/metadata/" | grep -E '^[0-9]+\.snapshot\.json$' | sort -n | head -1)
python3 - "$S/metadata/timestamp.json" <<'PY'
import json, sys
p = sys.argv[1]; d = json.load(open(p))
d["signed"]["meta"]["snapshot.json"]["version"] = 1
json.dump(d, open(p, "w"))
PY
refused "timestamp.json: 0 valid signatures by timestamp keys"
ok "rollback: a timestamp edited to name snapshot 1 no longer verifies"

# Freeze: the repository serves metadata that has expired (signed long ago, never refreshed).
# Three days back the timestamp is not within its margin yet: --expires renews it all the same.
SOURCE_DATE_EPOCH=$(( $(date +%s) - 3 * 86400 )) "$RSR" -q repo refresh "$S" --key "$K/snapshot" --key "$K/timestamp" \
	--expires timestamp=1d
# Its version is newer, so only the expiry stops it.
refused "timestamp.json expired at .*freeze attack"
# The same metadata from a server whose clock reads four days ago, when it had not expired:
# then the device's clock is what is wrong, and the message says so.
SOURCE_DATE_EPOCH=$(( $(date +%s) - 3 * 86400 )) "$RSR" -q repo refresh "$S" --key "$K/snapshot" --key "$K/timestamp" \
	--expires timestamp=1d
echo 0 >"$T/drops"
SERVER_CLOCK_OFFSET=$((-4 * 86400)) python3 "$RSR_SRCDIR/tests/integration/drop-server.py" "$S" "-" "$T/drops" \
	"$T/drop-log" >"$T/drop-port" &
cleanup_hooks+=("kill $!")
for _ in $(seq 50); do [ -s "$T/drop-port" ] && break; sleep 0.1; done
[ -s "$T/drop-port" ] || fail "the server did not start"
cp "$D/etc/rsr/rsr.conf" "$T/rsr.conf"
sed -i "s|^mirror = .*|mirror = http://127.0.0.1:$(cat "$T/drop-port")|" "$D/etc/rsr/rsr.conf"
refused "timestamp.json expired at .* by this device's clock, which reads .*, 4 days ahead of the server's .*set the clock"
cp "$T/rsr.conf" "$D/etc/rsr/rsr.conf"
ok "freeze: an expired timestamp is refused; a device clock far ahead of the server's is named"

# Mix-and-match: the vendor publishes new metadata; the snapshot the new timestamp names is
# replaced by an older snapshot.
"$RSR" -q repo rollout "$R" test-1 b 100 $SIGN
reset_served
cur=$(json_get "$S/metadata/timestamp.json" 'd["signed"]["meta"]["snapshot.json"]["version"]')
cp "$S/metadata/1.snapshot.json" "$S/metadata/$cur.snapshot.json"
refused "$cur.snapshot.json: digest differs from the one the timestamp names (mix-and-match"
# ... or the targets the snapshot names.
tv=$(json_get "$S/metadata/$cur.snapshot.json" 'd["signed"]["meta"]["targets.json"]["version"]')
cp "$S/metadata/2.targets.json" "$S/metadata/$tv.targets.json"
refused "$tv.targets.json: digest differs from the one the snapshot names (mix-and-match"
ok "mix-and-match: a snapshot or targets file that is not the one named is refused"

# Arbitrary target: a patch replaced by other bytes of the same length.
fwd=$(ls "$S"/targets/test-1/b/patches/*.libssl3-*.forward.rsrp)
python3 -c 'import sys,os; n=os.path.getsize(sys.argv[1]); open(sys.argv[1],"wb").write(os.urandom(n))' "$fwd"
refused "does not match the digest in the signed targets metadata"
ok "arbitrary target: a patch with the wrong hash is refused"

# Endless data: the server sends more than the signed length; the client stops at the length.
fwd=$(ls "$S"/targets/test-1/b/patches/*.libssl3-*.forward.rsrp)
len=$(stat -c %s "$fwd")
head -c $((8 * 1024 * 1024)) /dev/zero >>"$fwd"
: >"$T/nginx/access.log"
refused "the server sent more than the $len bytes the metadata allows"
ok "endless data: a server sending more than the signed length is cut off"

# Endless metadata: a timestamp.json far larger than any timestamp may be.
python3 -c 'import sys; open(sys.argv[1],"w").write("{\"signed\": \"" + "x" * 200000 + "\"}")' "$S/metadata/timestamp.json"
refused "sent more than the 65536 bytes the metadata allows"
ok "endless data: oversized metadata is cut off at its bound"

# A stolen timestamp key: the signed length of snapshot.json can only lower the client's own
# bound (4 MiB), never raise it. Lengths of 1 GiB and 2^53 were taken as the bound and the
# buffer allocated from them before a byte arrived (2^53 failed the allocation).
# Each case gets a snapshot version the device has not seen yet, so that it is fetched.
for big in $((1 << 30)) $((1 << 53)); do
	"$RSR" -q repo refresh "$R" --key "$K/snapshot" --key "$K/timestamp"
	reset_served
	tuf_edit "$S/metadata/timestamp.json" "$K/timestamp" "s['meta']['snapshot.json']['length'] = $big"
	expect 0 check --root "$D"
	assert_grep "Available: response (b)" "$T/out"
	reset_served
done
# ... and a snapshot padded past 4 MiB, whose length and hash a timestamp signs, is cut off at 4 MiB.
"$RSR" -q repo refresh "$R" --key "$K/snapshot" --key "$K/timestamp"
reset_served
cur=$(json_get "$S/metadata/timestamp.json" 'd["signed"]["meta"]["snapshot.json"]["version"]')
python3 -c 'import sys; open(sys.argv[1], "a").write(" " * (5 << 20))' "$S/metadata/$cur.snapshot.json"
tuf_edit "$S/metadata/timestamp.json" "$K/timestamp" "
import hashlib
b = open('$S/metadata/$cur.snapshot.json', 'rb').read()
s['meta']['snapshot.json'].update(length=1 << 30, hashes={'sha256': hashlib.sha256(b).hexdigest()})"
refused "$cur.snapshot.json: the server sent more than the 4194304 bytes the metadata allows"
ok "stolen timestamp key: a signed snapshot length of 1 GiB or 2^53 does not raise the 4 MiB bound"

# Wrong keys: metadata signed by keys the root does not name (another repository's).
R2=$T/evil-repo
"$RSR" -q repo init "$R2" --root-key "$K/evil"
"$RSR" -q repo add "$R2" "$V/b" --key "$K/evil"
for i in $(seq 10); do "$RSR" -q repo refresh "$R2" --key "$K/evil"; done
cp "$R2/metadata/timestamp.json" "$S/metadata/timestamp.json"
refused "timestamp.json: 0 valid signatures by timestamp keys of root version 1, threshold is 1"
# The same with a root of its own as the next root version: not signed by the trusted root keys.
"$RSR" -q repo rotate-key "$R2" --role root --new "$K/root2" --key "$K/evil"
cp "$R2/metadata/2.root.json" "$S/metadata/2.root.json"
refused "root rotation refused: 2.root.json: 0 valid signatures by root keys of root version 1"
ok "wrong keys: metadata and a new root signed by untrusted keys are refused"

# Under threshold: the timestamp role needs 2 of 2 keys; a timestamp with one signature is refused.
"$RSR" -q repo rotate-key "$R" --role timestamp --new "$K/timestamp" --new "$K/timestamp2" --threshold 2 --key "$K/root" \
	--key "$K/snapshot"
[ "$(json_get "$R/metadata/timestamp.json" 'len(d["signatures"])')" = 2 ] || fail "timestamp not signed by both keys"
reset_served
python3 - "$S/metadata/timestamp.json" <<'PY'
import json, sys
p = sys.argv[1]; d = json.load(open(p))
d["signatures"] = d["signatures"][:1]
json.dump(d, open(p, "w"))
PY
refused "timestamp.json: 1 valid signature by timestamp keys of root version 2, threshold is 2"
# Two signatures by the same key under two ids count once.
python3 - "$R/metadata/timestamp.json" "$S/metadata/timestamp.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
d["signatures"] = [d["signatures"][0], dict(d["signatures"][0])]
json.dump(d, open(sys.argv[2], "w"))
PY
refused "1 valid signature by timestamp keys of root version 2, threshold is 2"
ok "under threshold: one of two required timestamp signatures (or one twice) is refused"

# With both signatures, the device follows the rotation (root version 2) and updates.
expect 0 check --root "$D"
[ "$(json_get "$D/var/lib/rsr/tuf/root.json" 'd["signed"]["version"]')" = 2 ] || fail "root 2 not followed"
ok "root rotation followed: timestamp keys rotated, the device trusts root version 2"

# Root key rotation: root 3 is signed by the old and new root keys; the device follows it, and then
# accepts only metadata the new root allows.
"$RSR" -q repo rotate-key "$R" --role root --new "$K/root2" --key "$K/root" --key "$K/snapshot" \
	--key "$K/timestamp" --key "$K/timestamp2"
reset_served
# A root 3 signed by the new key alone is refused: the old root's threshold is not met.
python3 - "$S/metadata/3.root.json" <<'PY'
import json, sys
p = sys.argv[1]; d = json.load(open(p))
new = d["signed"]["roles"]["root"]["keyids"]
d["signatures"] = [s for s in d["signatures"] if s["keyid"] in new]
json.dump(d, open(p, "w"))
PY
refused "root rotation refused: 3.root.json: 0 valid signatures by root keys of root version 2"
expect 0 update --root "$D" --no-graft
device_is "$D" b
[ "$(json_get "$D/var/lib/rsr/tuf/root.json" 'd["signed"]["version"]')" = 3 ] || fail "root 3 not followed"
ok "root key rotation: root 3 signed by old and new keys followed (not with the new key alone); device updated to (b)"

# A replayed root version: 4.root.json that says it is version 3.
"$RSR" -q repo rotate-key "$R" --role root --new "$K/root" --key "$K/root2" --key "$K/snapshot" \
	--key "$K/timestamp" --key "$K/timestamp2"
reset_served
cp "$S/metadata/3.root.json" "$S/metadata/4.root.json"
expect 1 check --root "$D"
assert_grep "root rotation refused: 4.root.json: 0 valid signatures by root keys of root version 3\|4.root.json: says version 3" "$T/err"
reset_served
expect 0 check --root "$D"
[ "$(json_get "$D/var/lib/rsr/tuf/root.json" 'd["signed"]["version"]')" = 4 ] || fail "root 4 not followed"
ok "root replay: a 4.root.json that is root 3 is refused; the real root 4 is followed"
echo "1..$TESTS_RUN"
