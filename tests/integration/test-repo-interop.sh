#!/usr/bin/env bash
# Interoperability with a TUF implementation rsr did not write, tuf-js (npm,
# installed into tests/interop/node_modules by this test or scripts/test):
#  1. tuf-js' Updater refreshes our repository (following a root rotation)
#     and downloads and verifies a target from it;
#  2. rsr's client reads a repository made with tuf-js' own metadata tooling
#     (@tufjs/models; the package ships no test fixtures) and installs from it.
. "$(dirname "$0")/libtest.sh"
. "$(dirname "$0")/libresponse.sh"
. "$(dirname "$0")/librepo.sh"

command -v node >/dev/null && command -v npm >/dev/null || skip_all "node and npm are needed (scripts/install-deps installs them)"
I=$RSR_SRCDIR/tests/interop
if [ ! -d "$I/node_modules/tuf-js" ] || [ ! -d "$I/node_modules/@tufjs/models" ]; then
	(cd "$I" && npm ci --no-audit --no-fund --silent) || fail "npm ci in tests/interop failed (is the npm registry reachable?)"
fi

vendor_setup
repo_setup
# A root key rotation first, so tuf-js has to follow 1 -> 2 too.
"$RSR" -q repo rotate-key "$R" --role root --new "$K/root2" --key "$K/root" $SIGN
nginx_start "$R"

node "$I/client.js" "$R/metadata/1.root.json" "http://127.0.0.1:$PORT" test-1/b/response.json "$T/got.json" "$T/tufjs" >"$T/tufjs.out" 2>"$T/tufjs.err" ||
	{ cat "$T/tufjs.err"; fail "tuf-js refused our repository"; }
cmp "$T/got.json" "$V/b/response.json" || fail "tuf-js downloaded other bytes"
python3 - "$T/tufjs.out" <<'PY' || fail "tuf-js result"
import json, sys
o = json.loads(open(sys.argv[1]).read())
assert o["root_version"] == 2, o
assert o["custom"]["rsr"]["letter"] == "b" and o["custom"]["rsr"]["sequence"] == 2, o
PY
fwd=$(cd "$V/b" && ls patches/libssl3-*.forward.rsrp)
node "$I/client.js" "$R/metadata/1.root.json" "http://127.0.0.1:$PORT" "test-1/b/$fwd" "$T/got.rsrp" "$T/tufjs2" >/dev/null 2>"$T/tufjs.err" ||
	{ cat "$T/tufjs.err"; fail "tuf-js refused a patch target"; }
cmp "$T/got.rsrp" "$V/b/$fwd" || fail "tuf-js downloaded another patch"
ok "tuf-js follows our root rotation (1 -> 2), verifies our metadata and downloads response.json and a patch"

# tuf-js also refuses what we tamper with: proof it really verifies.
S=$T/served
cp -a "$R" "$S"
tgt=$(ls "$S"/targets/test-1/b/*.response.json)
python3 -c 'import sys; p=sys.argv[1]; b=bytearray(open(p,"rb").read()); b[10]^=1; open(p,"wb").write(b)' "$tgt"
nginx_stop
nginx_start "$S"
if node "$I/client.js" "$R/metadata/1.root.json" "http://127.0.0.1:$PORT" test-1/b/response.json "$T/bad.json" "$T/tufjs3" >/dev/null 2>"$T/tufjs.err"; then
	fail "tuf-js accepted a tampered target"
fi
assert_grep "hash\|digest\|mismatch" "$T/tufjs.err"
ok "tuf-js refuses a tampered target of our repository ($(head -c 80 "$T/tufjs.err"))"
nginx_stop

# A repository made by tuf-js tooling, holding response (b) with the custom metadata rsr chooses by.
J=$T/tufjs-repo
python3 - "$R" "$T/custom.json" <<'PY'
import glob, json, os, sys
r = sys.argv[1]
ts = json.load(open(r + "/metadata/timestamp.json"))["signed"]["meta"]["snapshot.json"]["version"]
tv = json.load(open(r + "/metadata/%d.snapshot.json" % ts))["signed"]["meta"]["targets.json"]["version"]
t = json.load(open(r + "/metadata/%d.targets.json" % tv))["signed"]["targets"]
json.dump(t["test-1/b/response.json"]["custom"], open(sys.argv[2], "w"))
PY
node "$I/make-repo.js" "$J" "$V/b" test-1/b "$T/custom.json" >/dev/null || fail "tuf-js tooling failed"
nginx_start "$J"
D=$T/dev
repo_device "$D"
cp "$J/metadata/1.root.json" "$D/etc/rsr/repository-root.json"
expect 0 check --root "$D" --json
[ "$(json_get "$T/out" 'd["available"]["letter"]')" = b ] || fail "rsr check on the tuf-js repository: $(cat "$T/out")"
expect 0 update --root "$D" --no-graft
device_is "$D" b
ok "rsr reads a repository made by tuf-js' tooling (@tufjs/models) and installs (b) from it"

# And refuses it when tuf-js' metadata is tampered with.
D2=$T/dev2
repo_device "$D2"
cp "$J/metadata/1.root.json" "$D2/etc/rsr/repository-root.json"
python3 - "$J/metadata/timestamp.json" <<'PY'
import json, sys
p = sys.argv[1]; d = json.load(open(p))
d["signed"]["version"] = 2
json.dump(d, open(p, "w"))
PY
expect 1 check --root "$D2"
assert_grep "timestamp.json: 0 valid signatures by timestamp keys" "$T/err"
ok "rsr refuses tampered tuf-js metadata"
echo "1..$TESTS_RUN"
