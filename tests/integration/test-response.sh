#!/usr/bin/env bash
# Responses end to end on scratch roots: create, info, notes; install, stack,
# remove; every refusal leaves the device unchanged; disk full; the lock;
# grafting in a private mount namespace.
. "$(dirname "$0")/libtest.sh"
. "$(dirname "$0")/libresponse.sh"

vendor_setup
ok "vendor: responses (a) and (b) created"

expect 0 response info "$V/b" --pubkey "$V/key.pub"
assert_grep "Response:   (b), sequence 2" "$T/out"
assert_grep "Signature:  verified" "$T/out"
assert_grep "libssl3/x86_64: .*forward .* from 2 inputs" "$T/out"
assert_grep "DSA-9002-1  medium" "$T/out"
expect 0 response info --json "$V/b"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["letter"]=="b" and r["sequence"]==2 and len(r["images"])==2 and r["restart"]=="services", r' "$T/out"
expect 0 response notes "$V/b" --os-name "Test OS 12"
assert_grep "^# About the security content of Test OS 12 (b)" "$T/out"
assert_grep "CVE-2026-0003" "$T/out"
expect 1 response info "$V/b" --pubkey "$V/other.pub"
assert_grep "no valid signature by a trusted key" "$T/err"
ok "response info (text, JSON, signature check) and notes"

D=$T/dev
device_root "$D"
device_is "$D" base
expect 0 status --root "$D"
assert_grep "Version:   Test OS 12 (no response installed)" "$T/out"
expect 0 install "$V/a" --root "$D" --no-graft
device_is "$D" a
assert_grep "Version:   Test OS 12 (a)" "$T/out"
grep -q '^RSR_VERSION_SUFFIX="(a)"$' "$D/run/rsr/response" || fail "run/rsr/response lacks the letter"
grep -q '(a)' "$D/etc/os-release" && fail "os-release was changed"
expect 0 status --root "$D" --json
python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["response"]; assert r["letter"]=="a" and r["version_suffix"]=="(a)" and r["advisories"][0]["id"]=="DSA-9001-1", r' "$T/out"
ok "install (a): slots and state switched, letter in status and run/rsr/response, os-release untouched"

expect 0 install "$V/b" --root "$D" --no-graft
device_is "$D" b
ok "install (b) straight from (a)"

expect 0 install "$V/b" --root "$D" --no-graft
assert_grep "already installed" "$T/out"
expect 1 install "$V/a" --root "$D" --no-graft
assert_grep "not newer than the highest" "$T/err"
device_is "$D" b
ok "reinstalling (b) is a no-op; (a) is refused as older"

expect 0 remove --root "$D" --no-graft
device_is "$D" base
expect 1 install "$V/a" --root "$D" --no-graft
assert_grep "not newer than the highest this device has installed (2)" "$T/err"
device_is "$D" base
expect 0 remove --root "$D" --no-graft
assert_grep "nothing to remove" "$T/out"
ok "remove goes back to the base images; the high-water mark survives removal"

# run/rsr/response is for tools to source: every value is quoted and escaped as os-release(5)
# says. A base build may hold shell syntax (';', '>', '&' are valid in a build name), and
# os-release quotes it; the run file must too, so that it reads back as text and runs nothing.
hb="t1;>$T/ran1&>$T/ran2|(:)"
H=$T/hostile
mkdir -p "$H/old/usr/share/hx" "$H/new/usr/share/hx"
echo old >"$H/old/usr/share/hx/f"
echo new >"$H/new/usr/share/hx/f"
"$RSR" -q cryptex build "$H/old" -o "$H/old.cptx" --name hx --version 1 --base "$hb" --key "$V/key"
"$RSR" -q cryptex build "$H/new" -o "$H/new.cptx" --name hx --version 2 --base "$hb" --key "$V/key"
"$RSR" -q response create -o "$H/a" --base-build "$hb" --letter a --key "$V/key" --slot hx="$H/old.cptx:$H/new.cptx" \
	--advisories "$V/adv-a.json"
DR=$T/dev-run
mkdir -p "$DR/etc/rsr/keys.d" "$DR/usr/share"
cp "$V/key.pub" "$DR/etc/rsr/keys.d/vendor.pub"
python3 - "$DR/etc/os-release" "$hb" <<'PY'
import sys
open(sys.argv[1], "w").write('NAME="Test OS"\nVERSION_ID=12\nBUILD_ID="%s"\n' % sys.argv[2])
PY
"$RSR" -q graft --root "$DR" --add "$H/old.cptx" --no-mount
expect 0 install "$H/a" --root "$DR" --no-graft
got=$(cd "$T" && bash -c '. "$1" && printf %s "$RSR_BASE_BUILD"' sh "$DR/run/rsr/response") ||
	fail "run/rsr/response does not source"
for f in ran1 ran2; do [ ! -e "$T/$f" ] || fail "sourcing run/rsr/response ran shell syntax ($f)"; done
[ "$got" = "$hb" ] || fail "RSR_BASE_BUILD reads back as '$got', not '$hb'"
grep -q '^RSR_VERSION_SUFFIX="(a)"$' "$DR/run/rsr/response" || fail "run/rsr/response: no suffix"
# A control character cannot be carried on one line: the file is not written, nor left stale.
# Install and remove refuse such a base build; recovery does not look at it, so the test
# kills an install once its journal is written, and recovery finishes it on the new os-release.
if command -v strace >/dev/null; then
	DR=$T/dev-run2
	device_root "$DR"
	expect 0 install "$V/a" --root "$DR" --no-graft
	[ -f "$DR/run/rsr/response" ] || fail "no run/rsr/response after install"
	# The renameat after the journal's, counted on a copy of the device.
	cp -a "$DR" "$DR.copy"
	strace_nolsan -f -o "$T/renames" -e trace=renameat "$RSR" -q install "$V/b" --root "$DR.copy" --no-graft >/dev/null
	n=$(($(grep 'renameat(' "$T/renames" | grep -n '"journal.json"' | cut -d: -f1) + 1))
	rm -rf "$DR.copy"
	set +e
	(strace_nolsan -f -o /dev/null -e trace=renameat -e inject=renameat:signal=KILL:when=$n \
		"$RSR" -q install "$V/b" --root "$DR" --no-graft || true) >/dev/null 2>&1
	set -e
	[ -f "$DR/var/lib/rsr/response/journal.json" ] || fail "the install was not killed after its journal"
	printf 'NAME="Test OS"\nBUILD_ID="test-1\033]0;owned\007"\n' >"$DR/etc/os-release"
	expect 0 status --root "$DR"
	assert_grep "run/rsr/response not written: the base build from os-release holds control character 0x1b at byte 6" "$T/err"
	[ ! -e "$DR/run/rsr/response" ] || fail "run/rsr/response kept with the old state"
	grep -q "$(printf '\033')" "$T/err" && fail "the control character reached the terminal"
fi
ok "run/rsr/response: values quoted and escaped as os-release(5) says; control characters refused"

# Huge counts within the 4 MiB bound: 1.4 million empty arrays took 325 MB as JSON values
# before the manifest was even looked at. They are counted first, and refused.
HR=$T/huge
mkdir -p "$HR"
huge_manifest() { # ELEMENT
	python3 - "$HR/response.json" "$1" <<'PY'
import sys
k = sys.argv[2]
n = (4 * 1024 * 1024 - 100) // (len(k) + 1)
open(sys.argv[1], "w").write('{"signed": {"_type": "rsr-response", "x": [' + ",".join([k] * n) + ']}, "signatures": []}')
PY
}
huge_manifest "[]"
expect 1 response info "$HR"
assert_grep "response manifest: more than 65536 JSON objects and arrays" "$T/err"
huge_manifest "0"
expect 1 response info "$HR"
assert_grep "response manifest: more than 1048576 JSON strings, numbers and literals" "$T/err"
DR=$T/dev-huge
device_root "$DR"
expect 1 install "$HR" --root "$DR" --no-graft
assert_grep "more than 1048576 JSON strings" "$T/err"
device_is "$DR" base
ok "a response manifest with huge counts is refused before it is parsed"

device_root "$D"
expect 0 install "$V/b" --root "$D" --no-graft --keep-base
device_is "$D" b
[ -f "$D/var/lib/rsr/response/base/libssl3.cptx" ] || fail "base copy not kept"
expect 0 --verbose remove --root "$D" --no-graft
assert_grep "using the kept base image" "$T/err"
device_is "$D" base
ok "base -> (b) straight from the base; --keep-base keeps and uses the base copies"

# Refusals: each leaves the device exactly as it was.
snapshot() { (cd "$D" && find . -path ./run -prune -o ! -name lock -print0 | sort -z | xargs -0 -I{} sh -c 'if [ -f "{}" ]; then sha256sum "{}"; else echo "{}"; fi'); }
device_root "$D"
expect 0 install "$V/a" --root "$D" --no-graft
before=$(snapshot)
refuse() { # DESCRIPTION RESPONSE-DIR MESSAGE
	expect 1 install "$2" --root "$D" --no-graft
	assert_grep "$3" "$T/err"
	[ "$(snapshot)" = "$before" ] || fail "$1: the device changed"
	device_is "$D" a
	ok "refused, device unchanged: $1"
}
cp -r "$V/b" "$T/b-flip-patch"
python3 - "$T/b-flip-patch/patches/libxml2-x86_64.forward.rsrp" <<'PY'
import sys
p = sys.argv[1]; b = bytearray(open(p, "rb").read()); b[len(b) // 2] ^= 1; open(p, "wb").write(b)
PY
refuse "a patch with one flipped bit" "$T/b-flip-patch" "the response signed"
cp -r "$V/b" "$T/b-flip-manifest"
sed -i 's/"letter": "b"/"letter": "c"/' "$T/b-flip-manifest/response.json"
refuse "a manifest with one changed field" "$T/b-flip-manifest" "no valid signature"
"$RSR" -q response create -o "$T/b-other-key" --base-build test-1 --letter b --key "$V/other" \
	--slot libxml2="$V/xml-base.cptx:$V/xml-b.cptx" --slot libssl3="$V/ssl-base.cptx:$V/ssl-b.cptx" \
	--advisories "$V/adv-b.json" 2>/dev/null && fail "a response with images of another key was made"
mkdir -p "$T/ok2" && "$RSR" key generate -o "$T/ok2/k" >/dev/null 2>&1
"$RSR" -q cryptex build "$(corpus_pair libxml2)/new" -o "$T/ok2/x.cptx" --name libxml2 --version x --base test-1 --key "$T/ok2/k"
"$RSR" -q cryptex build "$(corpus_pair libxml2)/old" -o "$T/ok2/xb.cptx" --name libxml2 --version xb --base test-1 --key "$T/ok2/k"
"$RSR" -q response create -o "$T/wrong-key" --base-build test-1 --letter c --key "$T/ok2/k" \
	--slot libxml2="$T/ok2/xb.cptx:$T/ok2/x.cptx" --advisories "$V/adv-b.json"
refuse "a response signed by an unknown key" "$T/wrong-key" "no valid signature by a trusted key"
"$RSR" -q cryptex build "$(corpus_pair libxml2)/new" -o "$T/xml-other-base.cptx" --name libxml2 --version 2 --base test-2 --key "$V/key"
"$RSR" -q cryptex build "$(corpus_pair libxml2)/old" -o "$T/xml-other-base0.cptx" --name libxml2 --version 1 --base test-2 --key "$V/key"
"$RSR" -q response create -o "$T/wrong-base" --base-build test-2 --letter c --key "$V/key" \
	--slot libxml2="$T/xml-other-base0.cptx:$T/xml-other-base.cptx" --advisories "$V/adv-b.json"
refuse "a response for another base build" "$T/wrong-base" "is for base build 'test-2'; this device runs 'test-1'"
# A response whose base is another libxml2 image than this device's: the patcher finds
# out in its pass (the image is not hashed whole first), and nothing is switched.
"$RSR" -q cryptex build "$(corpus_pair libxml2)/old" -o "$T/xml-other-old.cptx" --name libxml2 --version 2.9.14-u3 --base test-1 --key "$V/key"
"$RSR" -q response create -o "$T/other-input" --base-build test-1 --letter c --sequence 3 --key "$V/key" \
	--slot libxml2="$T/xml-other-old.cptx:$V/xml-b.cptx" --advisories "$V/adv-b.json"
refuse "a response that patches from another image than the device's" "$T/other-input" \
	"slot 'libxml2': this device's image (.*) is none of the 1 images response (c) patches from: patch .* has digest"
# A patch whose output is a validly signed image, but not the one the response signed.
cp -r "$V/b" "$T/b-wrong-output"
"$RSR" -q patch create "$V/xml-base.cptx" "$V/ssl-b.cptx" -o "$T/b-wrong-output/patches/libxml2-x86_64.forward.rsrp" 2>/dev/null ||
	"$RSR" -q patch create "$V/xml-base.cptx" "$V/ssl-b.cptx" -o "$T/b-wrong-output/patches/libxml2-x86_64.forward.rsrp"
python3 - "$T/b-wrong-output" "$V/key" <<'PY'
import json, sys, hashlib, subprocess
d, key = sys.argv[1], sys.argv[2]
m = json.load(open(d + "/response.json"))
p = d + "/patches/libxml2-x86_64.forward.rsrp"
data = open(p, "rb").read()
for im in m["signed"]["images"]:
    if im["slot"] == "libxml2":
        im["forward"]["sha256"] = hashlib.sha256(data).hexdigest(); im["forward"]["size"] = len(data)
canon = json.dumps(m["signed"], sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
msg = b"RSR-RESPONSE-V1\0" + canon
open(d + "/msg", "wb").write(msg)
sig = subprocess.run(["openssl", "pkeyutl", "-sign", "-inkey", key, "-rawin", "-in", d + "/msg"], capture_output=True, check=True).stdout
m["signatures"][0]["sig"] = sig.hex()
json.dump(m, open(d + "/response.json", "w"), indent=1, sort_keys=True)
PY
refuse "a patch whose output does not match the signed root hash" "$T/b-wrong-output" "the patched image has root hash"

# The lock: one device lock, var/lib/rsr/lock, for graft and install alike. A second
# operation fails at once naming the holder, waits a bounded time with --wait=SECS, or
# until the end with --wait.
L=$D/var/lib/rsr/lock
[ -f "$L" ] && [ ! -L "$L" ] && [ "$(stat -c '%a %u' "$L")" = "600 0" ] ||
	fail "the device lock is not a 0600 file owned by root: $(stat -c '%a %u %F' "$L")"
# One process holds it (flock(1) would leave its child holding it when killed).
python3 -c 'import fcntl, sys, time; f = open(sys.argv[1], "r+"); fcntl.flock(f, fcntl.LOCK_EX); time.sleep(60)' "$L" &
holder=$!
for _ in $(seq 50); do flock -n "$L" true || break; sleep 0.1; done
before=$(snapshot)
expect 1 remove --root "$D" --no-graft
assert_grep "another rsr operation (pid $holder: python3 -c import fcntl.*) is changing $D; try again when it ends, or wait for it with --wait" "$T/err"
expect 1 graft --root "$D" --add "$V/ssl-a.cptx" --no-mount
assert_grep "another rsr operation (pid $holder: python3" "$T/err"
expect 1 remove --root "$D" --no-graft --wait=1
assert_grep "is still changing $D after 1 s of waiting" "$T/err"
[ "$(snapshot)" = "$before" ] || fail "an operation that did not get the lock changed the device"
expect 2 remove --root "$D" --no-graft --wait=soon
assert_grep "a number of seconds" "$T/err"
(sleep 1; kill $holder) &
expect 0 --verbose remove --root "$D" --no-graft --wait
assert_grep "waiting for another rsr operation (pid $holder: python3" "$T/err"
wait
device_is "$D" base
ok "one device lock for graft and install: a second operation names the holder, --wait=SECS bounds the wait, --wait waits"

# Nobody else can hold it: the lock file is root's 0600, and locking the root directory
# (what blocked rsr before) blocks nothing.
if id nobody >/dev/null 2>&1 && command -v runuser >/dev/null; then
	chmod 755 "$T"
	runuser -u nobody -- flock -n "$L" true 2>"$T/nobody" && fail "an unprivileged user could take the device lock"
	grep -q "Permission denied" "$T/nobody" || fail "flock as nobody: $(cat "$T/nobody")"
	runuser -u nobody -- flock -x "$D" sleep 60 2>/dev/null &
	blocker=$!
	sleep 0.5
	timeout 20 "$RSR" -q graft --root "$D" --add "$V/ssl-base.cptx" --no-mount ||
		fail "rsr graft did not finish while an unprivileged user locked the root"
	kill $blocker 2>/dev/null || true
	wait $blocker 2>/dev/null || true
	ok "an unprivileged user can neither take the device lock nor block rsr by locking the root"
else
	fail "no user 'nobody' or no runuser: the unprivileged lock test cannot run"
fi

# graft --add and install race on one slot: they run one after the other, and the slot ends
# on the image both put there, with no staging or journal left behind.
DL=$T/dev-race
for i in 1 2 3 4 5; do
	device_root "$DL"
	"$RSR" -q graft --root "$DL" --add "$V/ssl-a.cptx" --no-mount --wait >"$T/race-g.out" 2>&1 &
	g=$!
	"$RSR" -q install "$V/a" --root "$DL" --no-graft --wait >"$T/race-i.out" 2>&1 &
	n=$!
	rg=0 ri=0
	wait $g || rg=$?
	wait $n || ri=$?
	[ $rg = 0 ] || fail "race $i: graft --add failed: $(cat "$T/race-g.out")"
	[ $ri = 0 ] || grep -q "libssl3" "$T/race-i.out" || fail "race $i: install failed unclearly: $(cat "$T/race-i.out")"
	[ "$(slot_sha "$DL" libssl3)" = "$(sha "$V/ssl-a.cptx")" ] || fail "race $i: libssl3 is not ssl-a"
	[ "$(slot_sha "$DL" libxml2)" = "$(sha "$V/xml-base.cptx")" ] || fail "race $i: libxml2 changed"
	[ ! -e "$DL/var/lib/rsr/response/incoming" ] && [ ! -e "$DL/var/lib/rsr/response/journal.json" ] ||
		fail "race $i: staging or journal left behind"
	expect 0 status --root "$DL"
done
ok "graft --add and install on one slot at once: serialised, the slot ends on the image both chose"

# Disk full: the state directory on a small filesystem.
need_root
if command -v mkfs.ext4 >/dev/null; then
	device_root "$D"
	dd if=/dev/zero of="$T/small.img" bs=1M count=40 status=none
	mkfs.ext4 -q -F "$T/small.img"
	if unshare -m bash -c "
		set -e
		mount --make-rprivate /
		mkdir -p '$T/small'
		mount -o loop '$T/small.img' '$T/small'
		cp -a '$D/var/lib/rsr/.' '$T/small/'
		mount --bind '$T/small' '$D/var/lib/rsr'
		fallocate -l \$(( \$(stat -f -c '%a*%S' '$T/small') - 2*1024*1024 )) '$T/small/filler' 2>/dev/null ||
			dd if=/dev/zero of='$T/small/filler' bs=1M count=\$(( \$(stat -f -c '%a*%S/1048576' '$T/small') - 2 )) status=none
		set +e
		'$RSR' install '$V/b' --root '$D' --no-graft >'$T/out' 2>'$T/err'
		rc=\$?
		set -e
		[ \$rc = 1 ] || { echo \"install exit \$rc\"; cat '$T/err'; exit 1; }
		grep -q 'No space left on device' '$T/err' || { cat '$T/err'; exit 1; }
		[ ! -e '$T/small/response/incoming' ] || { echo 'incoming left behind'; exit 1; }
		rm '$T/small/filler'
		cp -a '$T/small/.' '$D/var/lib/rsr.after/' 2>/dev/null || { mkdir -p '$D/var/lib/rsr.after'; cp -a '$T/small/.' '$D/var/lib/rsr.after/'; }
	"; then
		rm -rf "$D/var/lib/rsr" && mv "$D/var/lib/rsr.after" "$D/var/lib/rsr"
		device_is "$D" base
		expect 0 install "$V/b" --root "$D" --no-graft
		device_is "$D" b
		ok "disk full during install: clean failure, old state intact, incoming cleaned up, next install works"
	else
		fail "disk-full scenario failed"
	fi
else
	fail "mkfs.ext4 is missing (e2fsprogs)"
fi

# With grafting, in a private mount namespace: the files under the root's /usr change.
cp -a "$(corpus_pair libssl3)/old/usr/." "$D/usr/" 2>/dev/null || true
device_root "$D"
cp -a "$(corpus_pair libssl3)/old/usr/." "$D/usr/"
unshare -m bash -c "
	set -e
	mount --make-rprivate /
	'$RSR' -q graft --root '$D'
	lib='$D/usr/lib/x86_64-linux-gnu/libcrypto.so.3'
	cmp \"\$lib\" '$(corpus_pair libssl3)/old/usr/lib/x86_64-linux-gnu/libcrypto.so.3'
	'$RSR' -q install '$V/a' --root '$D'
	cmp \"\$lib\" '$(corpus_pair libssl3)/new/usr/lib/x86_64-linux-gnu/libcrypto.so.3'
	'$RSR' status --root '$D' | grep -q 'Version:   Test OS 12 (a)'
	'$RSR' -q install '$V/b' --root '$D'
	cmp '$D/usr/lib/x86_64-linux-gnu/libxml2.so.2' '$(corpus_pair libxml2)/new/usr/lib/x86_64-linux-gnu/libxml2.so.2'
	'$RSR' -q remove --root '$D'
	cmp \"\$lib\" '$(corpus_pair libssl3)/old/usr/lib/x86_64-linux-gnu/libcrypto.so.3'
	cmp '$D/usr/lib/x86_64-linux-gnu/libxml2.so.2' '$(corpus_pair libxml2)/old/usr/lib/x86_64-linux-gnu/libxml2.so.2'
	'$RSR' -q ungraft --root '$D'
" || fail "grafted lifecycle failed"
device_is "$D" base
ok "grafted: base -> (a) -> (b) -> remove, the files under /usr follow each step"
echo "1..$TESTS_RUN"
