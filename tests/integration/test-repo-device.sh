#!/usr/bin/env bash
# What rsr check and rsr update decide from the device's side, over nginx on
# 127.0.0.1: a response the device cannot install (an image its patch does not
# accept, no trusted key) is not offered and nothing is fetched for it; a
# response a person removed is installed again only with --reinstall, never by
# the timer, and a newer one installs as usual; files the device holds already
# (a reverse patch carried on unchanged) are not fetched again.
. "$(dirname "$0")/libtest.sh"
. "$(dirname "$0")/libresponse.sh"
. "$(dirname "$0")/librepo.sh"

vendor_setup
repo_setup
nginx_start "$R"
targets_fetched() { grep -c '^GET /targets/' "$T/nginx/access.log" || true; }

# The signed custom metadata names the manifest's signers and the inputs of each forward patch.
python3 - "$R" "$("$RSR" key id "$V/key.pub" | cut -d" " -f1)" "$(sha "$V/ssl-base.cptx")" "$(sha "$V/ssl-a.cptx")" <<'PY' || fail "custom metadata: keyids and inputs"
import glob, json, sys
repo, kid, base, a = sys.argv[1:]
t = json.load(open(max(glob.glob(repo + "/metadata/*.targets.json"), key=lambda p: int(p.split("/")[-1].split(".")[0]))))
c = t["signed"]["targets"]["test-1/b/response.json"]["custom"]["rsr"]
assert c["keyids"] == [kid], c["keyids"]
ssl = [i for i in c["images"] if i["slot"] == "libssl3"][0]
assert sorted(ssl["forward"]["inputs"]) == sorted([base, a]), ssl
PY
ok "custom metadata: the manifest's signer key ids and each forward patch's inputs"

# A device whose libssl3 image is one neither patch accepts: nothing is offered, nothing fetched.
"$RSR" -q cryptex build "$(corpus_pair libssl3)/new" -o "$V/ssl-odd.cptx" --name libssl3 --version 3.0.21-local \
	--base test-1 --key "$V/key"
D1=$T/dev1
repo_device "$D1"
"$RSR" -q graft --root "$D1" --add "$V/ssl-odd.cptx" --no-mount
odd=$(slot_sha "$D1" libssl3)
expect 0 check --root "$D1" --json
python3 - "$T/out" "$odd" <<'PY' || fail "check --json on an image no patch accepts"
import json, sys
o, odd = json.load(open(sys.argv[1])), sys.argv[2]
assert o["action"] == "none" and o["available"] is None, o
assert [(b["letter"], b["sequence"]) for b in o["blocked"]] == [("b", 2), ("a", 1)], o["blocked"]
assert o["blocked"][0]["reason"] == "slot 'libssl3': this device's image (%s…) is none of the 2 images response (b) patches from" % odd[:16], o["blocked"][0]
assert o["blocked"][1]["reason"] == "slot 'libssl3': this device's image (%s…) is none of the 1 image response (a) patches from" % odd[:16], o["blocked"][1]
PY
expect 0 check --root "$D1"
assert_grep "Cannot install response (b), sequence 2: slot 'libssl3': this device's image (${odd:0:16}…) is none of the 2 images response (b) patches from." "$T/out"
assert_grep "Not up to date: test-1, and no newer response can install on this device." "$T/out"
assert_no_grep "Available:" "$T/out"
: >"$T/nginx/access.log"
expect 0 update --root "$D1" --no-graft --auto
[ "$(targets_fetched)" = 0 ] || { cat "$T/nginx/access.log"; fail "targets fetched for a response that cannot install"; }
[ "$(slot_sha "$D1" libssl3)" = "$odd" ] || fail "device changed"
[ ! -e "$D1/var/lib/rsr/response/state.json" ] || fail "state written"
ok "an image no patch accepts: (b) and (a) blocked with the reason, update fetches nothing"

# Only the newer response is blocked: the newest one that installs is offered.
D2=$T/dev2
repo_device "$D2"
"$RSR" -q cryptex build "$(corpus_pair libxml2)/new" -o "$V/xml-odd.cptx" --name libxml2 --version 2.9.14-local \
	--base test-1 --key "$V/key"
"$RSR" -q graft --root "$D2" --add "$V/xml-odd.cptx" --no-mount
expect 0 check --root "$D2" --json
python3 - "$T/out" <<'PY' || fail "check --json: (b) blocked, (a) offered"
import json, sys
o = json.load(open(sys.argv[1]))
assert o["action"] == "install" and o["available"]["letter"] == "a", o
assert [b["letter"] for b in o["blocked"]] == ["b"] and "slot 'libxml2'" in o["blocked"][0]["reason"], o["blocked"]
PY
expect 0 update --root "$D2" --no-graft
assert_grep "Installed response (a)" "$T/out"
[ "$(slot_sha "$D2" libssl3)" = "$(sha "$V/ssl-a.cptx")" ] || fail "(a) not installed"
ok "(b) blocked by the libxml2 image, (a) offered and installed"

# No trusted key, or only keys that did not sign the response: nothing offered.
D3=$T/dev3
repo_device "$D3"
rm "$D3/etc/rsr/keys.d/vendor.pub"
expect 0 check --root "$D3" --json
python3 - "$T/out" "$D3" <<'PY' || fail "check --json without keys"
import json, sys
o, d = json.load(open(sys.argv[1])), sys.argv[2]
assert o["action"] == "none", o
assert o["blocked"][0]["reason"] == "no trusted keys in %s/etc/rsr/keys.d to verify it" % d, o["blocked"]
PY
cp "$V/other.pub" "$D3/etc/rsr/keys.d/other.pub"
kid=$("$RSR" key id "$V/key.pub" | cut -d" " -f1)
expect 0 check --root "$D3" --json
python3 - "$T/out" "$D3" "$kid" <<'PY' || fail "check --json with another key"
import json, sys
o, d, kid = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
assert o["action"] == "none", o
assert o["blocked"][0]["reason"] == "it is signed by key %s…, not by any of the 1 key in %s/etc/rsr/keys.d" % (kid[:16], d), o["blocked"]
PY
: >"$T/nginx/access.log"
expect 0 update --root "$D3" --no-graft
[ "$(targets_fetched)" = 0 ] || { cat "$T/nginx/access.log"; fail "targets fetched without a trusted key"; }
ok "keys.d empty or without the signer: nothing offered, nothing fetched"

# Removed by a person: check and status say so; the timer and a plain update leave it; --reinstall installs it.
D=$T/dev
repo_device "$D"
expect 0 update --root "$D" --no-graft
device_is "$D" b
expect 0 remove --root "$D" --no-graft
device_is "$D" base
python3 - "$D/var/lib/rsr/response/state.json" <<'PY' || fail "removal recorded"
import json, sys
s = json.load(open(sys.argv[1]))
assert s["installed"] is None and s["high_water"] == 2, s
assert s["removed"]["letter"] == "b" and s["removed"]["sequence"] == 2 and s["removed"]["at"] > 0, s
PY
at=$(json_get "$D/var/lib/rsr/response/state.json" 'd["removed"]["at"]')
when=$(date -u -d "@$at" '+%Y-%m-%d %H:%M UTC')
iso=$(date -u -d "@$at" '+%Y-%m-%dT%H:%M:%SZ')
expect 0 check --root "$D"
assert_grep "Response (b) was removed on $when; 'rsr update --reinstall' installs it again." "$T/out"
assert_no_grep "Up to date" "$T/out"
expect 0 check --root "$D" --json
python3 - "$T/out" "$iso" <<'PY' || fail "check --json after remove"
import json, sys
o, iso = json.load(open(sys.argv[1])), sys.argv[2]
assert o["action"] == "none" and o["available"] is None, o
assert o["removed"] == {"letter": "b", "sequence": 2, "at": iso, "reinstall_available": True}, o["removed"]
PY
expect 0 status --root "$D"
assert_grep "Removed:   response (b) was removed on $when; 'rsr update --reinstall' installs it again" "$T/out"
expect 0 status --root "$D" --json
[ "$(json_get "$T/out" 'd["response"]["removed"]')" = "{'letter': 'b', 'sequence': 2, 'at': '$iso'}" ] || fail "status --json removed: $(cat "$T/out")"
: >"$T/nginx/access.log"
expect 0 update --root "$D" --no-graft --auto
expect 0 update --root "$D" --no-graft
device_is "$D" base
[ "$(targets_fetched)" = 0 ] || { cat "$T/nginx/access.log"; fail "the timer fetched a removed response"; }
expect 1 install "$V/b" --root "$D" --no-graft
assert_grep "response (b) was removed from this device on $when; --reinstall installs it again" "$T/err"
expect 1 install "$V/a" --root "$D" --no-graft --reinstall
assert_grep "not newer than the highest this device has installed (2); only the response removed last may be installed again" "$T/err"
device_is "$D" base
expect 0 check --root "$D" --json --reinstall
[ "$(json_get "$T/out" 'd["action"]')" = install ] && [ "$(json_get "$T/out" 'd["available"]["reinstall"]')" = True ] ||
	fail "check --reinstall: $(cat "$T/out")"
expect 0 update --root "$D" --no-graft --reinstall
assert_grep "Installed response (b) again" "$T/out"
device_is "$D" b
[ "$(json_get "$D/var/lib/rsr/response/state.json" 'd["removed"]')" = None ] || fail "removal record kept after reinstall"
# rsr install --reinstall does the same from a directory.
D4=$T/dev4
repo_device "$D4"
expect 0 install "$V/a" --root "$D4" --no-graft
expect 0 remove --root "$D4" --no-graft
expect 0 install "$V/a" --root "$D4" --no-graft --reinstall
device_is "$D4" a
ok "removed (b): check and status say when and how to reinstall; the timer and update leave it; --reinstall installs it"

# (c) carries (b)'s libssl3 image on unchanged and fixes libxml2 again: a device on (b) fetches
# the manifest and libxml2's patches, never libssl3's reverse patch, which it holds.
"$RSR" -q cryptex build "$(corpus_pair libxml2)/new" -o "$V/xml-c.cptx" --name libxml2 --version 2.9.14-u7 \
	--base test-1 --key "$V/key"
"$RSR" -q response create -o "$V/c" --base-build test-1 --letter c --key "$V/key" \
	--slot libssl3="$V/ssl-base.cptx:$V/ssl-b.cptx" --slot libxml2="$V/xml-base.cptx:$V/xml-c.cptx" \
	--previous "$V/b" --advisories "$V/adv-b.json"
rev=patches/libssl3-x86_64.reverse.rsrp
[ "$(sha "$V/c/$rev")" = "$(sha "$V/b/$rev")" ] || fail "test premise: (c)'s libssl3 reverse patch is (b)'s"
"$RSR" -q repo add "$R" "$V/c" $SIGN
want=$(( $(stat -c %s "$V/c/response.json") + $(stat -c %s "$V/c/patches/libxml2-x86_64.forward.rsrp") +
	$(stat -c %s "$V/c/patches/libxml2-x86_64.reverse.rsrp") ))
expect 0 check --root "$D" --json
python3 - "$T/out" "$want" "$(stat -c %s "$V/c/$rev")" <<'PY' || fail "check --json: bytes to fetch"
import json, sys
o, want, held = json.load(open(sys.argv[1])), int(sys.argv[2]), int(sys.argv[3])
a = o["available"]
assert o["action"] == "install" and a["letter"] == "c", o
assert a["download_bytes"] == want and a["files"] == 3, (a, want)
assert a["reused_bytes"] == held and a["reused_files"] == 1, (a, held)
PY
expect 0 check --root "$D"
assert_grep "in 3 files (.* in 1 file already on this device)" "$T/out"
: >"$T/nginx/access.log"
expect 0 update --root "$D" --no-graft --auto
assert_grep "Installed response (c)" "$T/out"
assert_no_grep "libssl3-x86_64.reverse.rsrp" "$T/nginx/access.log"
[ "$(targets_fetched)" = 3 ] || { cat "$T/nginx/access.log"; fail "expected 3 target fetches"; }
fetched=$(awk '$2 ~ /^\/targets\// {s += $4} END {print s}' "$T/nginx/access.log")
[ "$fetched" = "$want" ] || fail "fetched $fetched target bytes, check said $want"
[ "$(slot_sha "$D" libxml2)" = "$(sha "$V/xml-c.cptx")" ] && [ "$(slot_sha "$D" libssl3)" = "$(sha "$V/ssl-b.cptx")" ] ||
	fail "device is not on (c)"
[ "$(sha "$D/var/lib/rsr/response/current/$rev")" = "$(sha "$V/c/$rev")" ] || fail "kept reverse patch"
[ "$(json_get "$D/var/lib/rsr/response/state.json" 'd["installed"]["letter"]')" = c ] || fail "state is not (c)"
# A kept copy that no longer matches its digest is fetched instead.
printf 'X' | dd of="$D/var/lib/rsr/response/current/$rev" bs=1 seek=100 conv=notrunc status=none
"$RSR" -q response create -o "$V/d" --base-build test-1 --letter d --key "$V/key" \
	--slot libssl3="$V/ssl-base.cptx:$V/ssl-b.cptx" --slot libxml2="$V/xml-base.cptx:$V/xml-c.cptx" \
	--previous "$V/c" --advisories "$V/adv-b.json"
"$RSR" -q repo add "$R" "$V/d" $SIGN
: >"$T/nginx/access.log"
expect 0 update --root "$D" --no-graft
assert_grep "Installed response (d)" "$T/out"
assert_grep "/targets/test-1/d/patches/.*libssl3-x86_64.reverse.rsrp" "$T/nginx/access.log"
[ "$(sha "$D/var/lib/rsr/response/current/$rev")" = "$(sha "$V/d/$rev")" ] || fail "damaged copy used"
ok "(b) -> (c): $fetched bytes fetched as check said; the libssl3 reverse patch the device holds is not; a damaged copy is"

# After a removal, a newer response installs as usual, by the timer too.
D5=$T/dev5
repo_device "$D5"
expect 0 install "$V/b" --root "$D5" --no-graft
expect 0 remove --root "$D5" --no-graft
expect 0 update --root "$D5" --no-graft --auto
assert_grep "Installed response (d)" "$T/out"
[ "$(json_get "$D5/var/lib/rsr/response/state.json" 'd["installed"]["letter"]')" = d ] || fail "(d) not installed"
[ "$(json_get "$D5/var/lib/rsr/response/state.json" 'd["removed"]')" = None ] || fail "removal record kept"
ok "removed (b), newer (d) published: the timer installs (d)"
echo "1..$TESTS_RUN"
