#!/usr/bin/env bash
# rsr check asks for timestamp.json with If-None-Match, when the device holds
# a whole unexpired chain of trusted metadata and the tag the same mirror gave
# for it: a 304 ends the check at that one request, with the same answer. A
# tag bound to other bytes, a changed repository and an expired chain each
# make the request unconditional again; an expired timestamp is never
# accepted through a 304.
. "$(dirname "$0")/libtest.sh"
. "$(dirname "$0")/libresponse.sh"
. "$(dirname "$0")/librepo.sh"

vendor_setup
repo_setup
nginx_start "$R"
D=$T/dev
repo_device "$D"
log=$T/nginx/access.log
requests() { grep -v '^$' "$log" | sed 's/ "[^"]*"$//'; }
E=$D/var/lib/rsr/tuf/timestamp.etag.json

expect 0 check --root "$D" --json
cp "$T/out" "$T/first.json"
[ -f "$E" ] || fail "no ETag recorded after a check"
python3 - "$E" "$D/var/lib/rsr/tuf/timestamp.json" "$PORT" <<'PY' || fail "timestamp.etag.json"
import hashlib, json, sys
e = json.load(open(sys.argv[1]))
assert set(e) == {"mirror", "etag", "sha256"}, e
assert e["mirror"] == "http://127.0.0.1:" + sys.argv[3], e
assert e["etag"].startswith('"') and e["etag"].endswith('"'), e
assert e["sha256"] == hashlib.sha256(open(sys.argv[2], "rb").read()).hexdigest(), e
PY
ok "a check records the mirror's ETag for the timestamp.json it trusted, bound to its digest"

# Nothing changed: one conditional request, answered 304, and the same answer.
: >"$log"
expect 0 check --root "$D" --json
[ "$(requests)" = "GET /metadata/timestamp.json 304 0" ] || { cat "$log"; fail "an unchanged repository took more than one 304"; }
cmp -s "$T/out" "$T/first.json" || { diff "$T/first.json" "$T/out"; fail "the 304 check answered differently"; }
expect 0 check --root "$D"
assert_grep "Available: response (b)" "$T/out"
ok "unchanged repository: one request, 304 Not Modified, the same offer"

# The update after a 304 check installs from the trusted metadata.
: >"$log"
expect 0 update --root "$D" --no-graft
assert_grep "GET /metadata/timestamp.json 304" "$log"
device_is "$D" b || fail "update after a 304 did not install (b)"
ok "update after a 304 installs (b)"

# A tag bound to other bytes is not used.
python3 - "$E" <<'PY'
import json, sys
e = json.load(open(sys.argv[1])); e["sha256"] = "0" * 64
json.dump(e, open(sys.argv[1], "w"))
PY
: >"$log"
expect 0 check --root "$D"
assert_grep "GET /metadata/timestamp.json 200" "$log"
assert_no_grep " 304 " "$log"
ok "a tag whose digest is not the trusted timestamp's: unconditional request"

# A changed repository: the tag no longer matches, the new metadata is fetched.
"$RSR" -q repo withdraw "$R" test-1 b $SIGN
: >"$log"
expect 0 check --root "$D" --json
assert_grep "GET /metadata/timestamp.json 200" "$log"
assert_grep "snapshot.json 200" "$log"
assert_grep "targets.json 200" "$log"
[ "$(json_get "$T/out" 'd["installed_withdrawn"]')" = True ] || { cat "$T/out"; fail "the withdrawal was not seen"; }
ok "a new timestamp: 200 and the new snapshot and targets, the withdrawal seen"

# Two timestamps written within one second: the second's modification time is a
# second later, so nginx's ETag (time in seconds and size) differs and a device
# holding the first is not told 304 about the second.
m0=$(stat -c %Y "$R/metadata/timestamp.json")
"$RSR" -q repo rollout "$R" test-1 a 50 $SIGN
m1=$(stat -c %Y "$R/metadata/timestamp.json")
expect 0 check --root "$D"
"$RSR" -q repo rollout "$R" test-1 a 60 $SIGN
m2=$(stat -c %Y "$R/metadata/timestamp.json")
[ "$m0" -lt "$m1" ] && [ "$m1" -lt "$m2" ] || fail "timestamp.json modification times $m0 $m1 $m2 do not increase"
: >"$log"
expect 0 check --root "$D"
assert_grep "GET /metadata/timestamp.json 200" "$log"
ok "timestamp.json's modification time increases with every write, by a second at least"

# An expired chain is never ended by a 304: the request is unconditional, and the expired timestamp refused.
"$RSR" -q repo refresh "$R" --expires timestamp=6 $SIGN
expect 0 check --root "$D"
: >"$log"
sleep 7
expect 1 check --root "$D"
assert_grep "timestamp.json expired" "$T/err"
assert_grep "GET /metadata/timestamp.json 200" "$log"
assert_no_grep " 304 " "$log"
ok "an expired trusted timestamp: unconditional request, the expired metadata refused"
echo "1..$TESTS_RUN"
