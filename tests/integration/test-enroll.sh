#!/usr/bin/env bash
# rsr enroll puts a device in a repository in one step: the response key in
# keys.d, the repository's root, a policy naming the mirror with the other
# settings commented; then it checks the repository once. Files already
# there with other content are refused and nothing is written; a private
# key or a file that is not a signed root is refused; enrolling again is a
# no-op. The enrolled device then updates to (b).
. "$(dirname "$0")/libtest.sh"
. "$(dirname "$0")/libresponse.sh"
. "$(dirname "$0")/librepo.sh"

vendor_setup
repo_setup
nginx_start "$R"
URL=http://127.0.0.1:$PORT
ROOTMD=$R/metadata/1.root.json

# A device on its base images that knows no repository and trusts no key yet.
bare_device() {
	device_root "$1"
	rm -f "$1/etc/rsr/keys.d/vendor.pub"
}
files_sum() { (cd "$1/etc/rsr" && find . -type f | sort | xargs sha256sum); }

D=$T/dev
bare_device "$D"
expect 0 enroll --mirror "$URL" --repository-root "$ROOTMD" --key "$V/key.pub" --root "$D"
assert_grep "Enrolled $D in $URL: 3 files written" "$T/out"
assert_grep "Available: response (b) for test-1" "$T/out"
cmp "$V/key.pub" "$D/etc/rsr/keys.d/key.pub" || fail "keys.d/key.pub"
cmp "$ROOTMD" "$D/etc/rsr/repository-root.json" || fail "repository-root.json"
grep -qx "mirror = $URL" "$D/etc/rsr/rsr.conf" || fail "mirror line"
for k in auto_install allow_remove restart staged_rollout withdrawn timeout; do
	grep -q "^#$k = " "$D/etc/rsr/rsr.conf" || fail "rsr.conf: no commented $k"
done
[ "$(grep -vc '^#\|^$\|^mirror = ' "$D/etc/rsr/rsr.conf")" = 0 ] || fail "rsr.conf sets more than the mirror"
ok "enroll writes keys.d/key.pub, repository-root.json and rsr.conf (mirror set, every other key commented), then checks"

files_sum "$D" >"$T/before"
expect 0 enroll --mirror "$URL" --repository-root "$ROOTMD" --key "$V/key.pub" --root "$D" --no-check
assert_grep "every file was already in place" "$T/out"
# Other content anywhere: refused, and nothing written (the new key's file included).
mkdir -p "$T/other"
cp "$V/other.pub" "$T/other/key.pub"
expect 1 enroll --mirror "$URL" --repository-root "$ROOTMD" --key "$T/other/key.pub" --root "$D"
assert_grep "keys.d/key.pub: exists with other content; nothing was written" "$T/err"
expect 1 enroll --mirror "$URL/other" --repository-root "$ROOTMD" --key "$V/key.pub" --key "$V/other.pub" --root "$D"
assert_grep "etc/rsr/rsr.conf: exists with other content; nothing was written" "$T/err"
files_sum "$D" >"$T/after"
cmp "$T/before" "$T/after" || fail "a refused enrolment changed files"
ok "enrolling again keeps every file; other content is refused and nothing is written"

D2=$T/dev2
bare_device "$D2"
expect 1 enroll --mirror "$URL" --repository-root "$ROOTMD" --key "$V/key" --root "$D2"
assert_grep "a private key; give the public key" "$T/err"
expect 1 enroll --mirror "$URL" --repository-root "$R/metadata/1.targets.json" --key "$V/key.pub" --root "$D2"
assert_grep "1.targets.json" "$T/err"
python3 - "$ROOTMD" "$T/forged-root.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
d["signed"]["expires"] = "2099-01-01T00:00:00Z"
json.dump(d, open(sys.argv[2], "w"))
PY
expect 1 enroll --mirror "$URL" --repository-root "$T/forged-root.json" --key "$V/key.pub" --root "$D2"
assert_grep "forged-root.json" "$T/err"
expect 1 enroll --mirror "ftp://127.0.0.1/" --repository-root "$ROOTMD" --key "$V/key.pub" --root "$D2"
[ ! -e "$D2/etc/rsr/rsr.conf" ] && [ ! -e "$D2/etc/rsr/repository-root.json" ] && [ -z "$(ls "$D2/etc/rsr/keys.d")" ] ||
	fail "a refused enrolment wrote files"
expect 2 enroll --mirror "$URL" --key "$V/key.pub" --root "$D2"
assert_grep "rsr enroll needs --repository-root FILE" "$T/err"
expect 2 enroll --bogus
assert_grep "see 'rsr enroll --help'" "$T/err"
ok "refused: a private key, a file that is not a root signed by its keys, a bad mirror URL, missing options"

# A check that fails (mirror down) leaves the enrolment in place and says why.
D3=$T/dev3
bare_device "$D3"
expect 1 enroll --mirror "http://127.0.0.1:$(free_port)" --repository-root "$ROOTMD" --key "$V/key.pub" --root "$D3"
assert_grep "3 files written" "$T/out"
[ -f "$D3/etc/rsr/rsr.conf" ] || fail "enrolment undone by a failed check"

expect 0 update --root "$D" --no-graft
device_is "$D" b
ok "the enrolled device updates to (b); a failed first check keeps the enrolment"
echo "1..$TESTS_RUN"
