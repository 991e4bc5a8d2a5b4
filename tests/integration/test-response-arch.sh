#!/usr/bin/env bash
# A response carrying images for two architectures: the device applies only
# those for its own (uname -m), and a response with none for it is refused.
. "$(dirname "$0")/libtest.sh"
. "$(dirname "$0")/libresponse.sh"

vendor_setup
arch=$(uname -m)
other=$([ "$arch" = aarch64 ] && echo x86_64 || echo aarch64)
# The other architecture's images: here the same trees under another label, so
# that applying them by mistake would be detected by the slot's content.
"$RSR" -q response create -o "$T/multi" --base-build test-1 --letter a --key "$V/key" \
	--slot "libssl3@$arch=$V/ssl-base.cptx:$V/ssl-a.cptx" \
	--slot "libxml2@$other=$V/xml-base.cptx:$V/xml-b.cptx" --advisories "$V/adv-a.json"
expect 0 response info --json "$T/multi"
python3 - "$T/out" "$arch" "$other" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
got = sorted((i["slot"], i["arch"]) for i in r["images"])
assert got == sorted([("libssl3", sys.argv[2]), ("libxml2", sys.argv[3])]), got
PY
[ -f "$T/multi/patches/libxml2-$other.forward.rsrp" ] || fail "no patch for $other"
ok "a response carries patches for $arch and $other"

D=$T/dev
device_root "$D"
expect 0 install "$T/multi" --root "$D" --no-graft
[ "$(slot_sha "$D" libssl3)" = "$(sha "$V/ssl-a.cptx")" ] || fail "the $arch image was not applied"
[ "$(slot_sha "$D" libxml2)" = "$(sha "$V/xml-base.cptx")" ] || fail "the $other image was applied on $arch"
[ ! -e "$D/var/lib/rsr/response/current/patches/libxml2-$other.reverse.rsrp" ] || fail "kept a patch of another architecture"
ok "the device applies only its own architecture's images"

"$RSR" -q response create -o "$T/foreign" --base-build test-1 --letter b --key "$V/key" \
	--slot "libxml2@$other=$V/xml-base.cptx:$V/xml-b.cptx" --advisories "$V/adv-b.json"
expect 1 install "$T/foreign" --root "$D" --no-graft
assert_grep "carries no images for this machine's architecture ($arch)" "$T/err"
[ "$(slot_sha "$D" libssl3)" = "$(sha "$V/ssl-a.cptx")" ] || fail "the refusal changed the device"
ok "a response with no images for this architecture is refused, device unchanged"
echo "1..$TESTS_RUN"
