#!/usr/bin/env bash
# The repository end to end over nginx on 127.0.0.1: rsr repo init/add,
# rsr check, rsr update from the base and from (a), only the needed files
# fetched; staged rollout; withdrawal (to the next response, back to the
# base, or staying, as the policy says); policy file errors; refresh.
. "$(dirname "$0")/libtest.sh"
. "$(dirname "$0")/libresponse.sh"
. "$(dirname "$0")/librepo.sh"

vendor_setup
repo_setup
[ -f "$R/metadata/1.root.json" ] && [ -f "$R/metadata/root.json" ] && [ -f "$R/metadata/timestamp.json" ] &&
	[ -f "$R/metadata/3.targets.json" ] && [ -f "$R/metadata/3.snapshot.json" ] || fail "repository layout"
ls "$R/targets/test-1/b/" | grep -Eq '^[0-9a-f]{64}\.response\.json$' || fail "consistent snapshot names"
python3 - "$R" <<'PY' || fail "targets custom metadata"
import json, sys
t = json.load(open(sys.argv[1] + "/metadata/3.targets.json"))["signed"]["targets"]
c = t["test-1/b/response.json"]["custom"]["rsr"]
assert c["letter"] == "b" and c["sequence"] == 2 and c["base_build"] == "test-1", c
assert c["rollout"] == 100 and c["withdrawn"] is False
assert [a["id"] for a in c["advisories"]] == ["DSA-9001-1", "DSA-9002-1"]
assert {i["slot"] for i in c["images"]} == {"libssl3", "libxml2"}
for i in c["images"]:
    assert i["forward"]["target"] in t and i["reverse"]["target"] in t
    assert t[i["forward"]["target"]]["length"] == i["forward"]["length"]
PY
expect 1 repo add "$R" "$V/b" $SIGN
assert_grep "already published" "$T/err"
expect 1 repo refresh "$R" --key "$K/evil" --key "$K/timestamp"
assert_grep "the snapshot role needs signatures by 1 of its 1 keys; 0 of the given keys are among them" "$T/err"
ok "repo init and add: TUF layout, consistent snapshots, custom metadata; re-adding and wrong keys refused"

nginx_start "$R"

# A device on the base goes to (b) in one step.
D=$T/dev
repo_device "$D"
expect 0 check --root "$D" --json
python3 - "$T/out" "$V/b" <<'PY' || fail "check --json"
import json, os, sys
o = json.load(open(sys.argv[1]))
b = sys.argv[2]
assert o["action"] == "install" and o["installed"] is None and o["base_build"] == "test-1", o
a = o["available"]
assert a["letter"] == "b" and a["sequence"] == 2 and a["version_suffix"] == "(b)" and a["restart"] == "services"
assert [x["id"] for x in a["advisories"]] == ["DSA-9001-1", "DSA-9002-1"]
size = os.path.getsize(b + "/response.json") + sum(os.path.getsize(b + "/patches/" + f) for f in os.listdir(b + "/patches"))
assert a["download_bytes"] == size and a["files"] == 5, (a, size)
PY
expect 0 check --root "$D"
assert_grep "Available: response (b) for test-1, sequence 2" "$T/out"
assert_grep "DSA-9002-1 medium" "$T/out"
device_is "$D" base
[ -f "$D/var/lib/rsr/tuf/timestamp.json" ] && [ -f "$D/var/lib/rsr/tuf/targets.json" ] || fail "trusted metadata kept"
ok "rsr check: (b) offered with its advisories and download size; nothing installed"

: >"$T/nginx/access.log"
expect 0 update --root "$D" --no-graft
assert_grep "Installed response (b)" "$T/out"
device_is "$D" b
[ ! -e "$D/var/lib/rsr/tuf/downloads/test-1-b" ] || fail "downloads left behind"
# Metadata was current: only the five files of (b) came over, none of (a)'s.
[ "$(grep -c '^GET /targets/' "$T/nginx/access.log")" = 5 ] || { cat "$T/nginx/access.log"; fail "expected 5 target fetches"; }
assert_no_grep "/targets/test-1/a/" "$T/nginx/access.log"
expect 0 check --root "$D"
assert_grep "Up to date: test-1 (b)" "$T/out"
expect 0 update --root "$D" --no-graft
device_is "$D" b
ok "rsr update: base -> (b), only (b)'s five files downloaded; then up to date"

# A device on (a) needs (b)'s patches from (a)'s images; (a)'s files are never fetched.
D2=$T/dev2
repo_device "$D2"
expect 0 install "$V/a" --root "$D2" --no-graft
device_is "$D2" a
: >"$T/nginx/access.log"
expect 0 update --root "$D2" --no-graft
device_is "$D2" b
assert_no_grep "/targets/test-1/a/" "$T/nginx/access.log"
fetched=$(awk '$2 ~ /^\/targets\// {s += $4} END {print s}' "$T/nginx/access.log")
want=$(( $(stat -c %s "$V/b/response.json") + $(cat "$V"/b/patches/* | wc -c) ))
[ "$fetched" = "$want" ] || fail "device on (a) fetched $fetched target bytes, expected $want"
ok "rsr update: (a) -> (b) with (b)'s patches only ($fetched bytes)"

# HTTPS with the nginx configuration of docs/repository.md: the server's certificate must verify.
nginx_stop
nginx_start_https "$R"
D8=$T/dev8
repo_device "$D8"
sed -i "s|^mirror = .*|mirror = https://127.0.0.1:$PORT|" "$D8/etc/rsr/rsr.conf"
expect 1 check --root "$D8"
assert_grep "SSL certificate problem\|certificate" "$T/err"
RSR_CA_FILE=$T/tls/ca.pem expect 0 update --root "$D8" --no-graft
device_is "$D8" b
ok "HTTPS with docs/repository.md's nginx configuration: untrusted certificate refused, trusted one works"
nginx_stop
nginx_start "$R"

# Grafted, in a private mount namespace: rsr update changes the files under /usr, and with
# restart = ask lists the process that still maps the old library.
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null; then
	D9=$T/dev9
	repo_device "$D9" "restart = ask"
	cp -a "$(corpus_pair libssl3)/old/usr/." "$D9/usr/"
	lib=$D9/usr/lib/x86_64-linux-gnu/libcrypto.so.3
	unshare -m bash -c "
		set -e
		mount --make-rprivate /
		'$RSR' -q graft --root '$D9'
		python3 -c 'import ctypes, time; ctypes.CDLL(\"$lib\"); time.sleep(120)' &
		holder=\$!
		sleep 1
		'$RSR' update --root '$D9' >'$T/out' 2>'$T/err' || { kill \$holder; exit 1; }
		cmp '$lib' '$(corpus_pair libssl3)/new/usr/lib/x86_64-linux-gnu/libcrypto.so.3'
		kill \$holder
		'$RSR' -q ungraft --root '$D9'
	" || { cat "$T/out" "$T/err"; fail "grafted update failed"; }
	assert_grep "Installed response (b)" "$T/out"
	assert_grep "still run.* superseded code (restart = ask)" "$T/out"
	assert_grep "python3" "$T/out"
	device_is "$D9" b
	ok "grafted update: files under /usr are (b)'s; restart = ask lists the process still on old code"
else
	echo "# SKIP grafted update: needs root and unshare"
fi

# Policy file: unknown keys and bad values are refused with the line.
D3=$T/dev3
repo_device "$D3" "auto_install = maybe"
expect 1 check --root "$D3"
assert_grep "rsr.conf:4: auto_install must be yes or no" "$T/err"
repo_device "$D3" "colour = blue"
expect 1 check --root "$D3"
assert_grep "unknown key 'colour'" "$T/err"
device_root "$D3"
expect 1 check --root "$D3"
assert_grep "no repository mirror configured" "$T/err"
# auto_install = no: the timer (--auto) only checks.
repo_device "$D3" "auto_install = no"
expect 0 update --root "$D3" --no-graft --auto
assert_grep "Automatic install is off" "$T/out"
device_is "$D3" base
# allow_remove = no: rsr remove refuses without --force.
D7=$T/dev7
repo_device "$D7" "allow_remove = no"
expect 0 install "$V/a" --root "$D7" --no-graft
expect 1 remove --root "$D7" --no-graft
assert_grep "does not allow removing responses (allow_remove = no)" "$T/err"
device_is "$D7" a
expect 0 remove --root "$D7" --no-graft --force
device_is "$D7" base
# One client at a time.
mkdir -p "$D7/var/lib/rsr/tuf"
python3 -c 'import fcntl, sys, time; f = open(sys.argv[1], "a"); fcntl.flock(f, fcntl.LOCK_EX); time.sleep(4)' \
	"$D7/var/lib/rsr/tuf/lock" &
holder=$!
for _ in $(seq 50); do flock -n "$D7/var/lib/rsr/tuf/lock" true || break; sleep 0.1; done
expect 1 check --root "$D7"
assert_grep "another rsr check or update (pid $holder: python3 -c .*) is checking the repository for $D7; try again when it ends, or wait for it with --wait" "$T/err"
expect 0 --verbose update --root "$D7" --no-graft --wait=20
assert_grep "waiting up to 20 s for another rsr check or update (pid $holder" "$T/err"
wait
expect 0 remove --root "$D7" --no-graft --force
device_is "$D7" base
ok "policy file: errors name the line; auto_install = no keeps the timer to checking; allow_remove = no; lock"

# Staged rollout: (b) to 30% of devices, chosen by a hash of the machine id and the response.
R_SAVE=$R
"$RSR" -q repo rollout "$R" test-1 b 30 $SIGN
n_in=0 n_out=0
for i in $(seq 1 12); do
	Dm=$T/devm
	repo_device "$Dm"
	mid=$(printf '%032x' "$((i * 7919))")
	echo "$mid" >"$Dm/etc/machine-id"
	bucket=$(python3 -c 'import hashlib,sys; d=hashlib.sha256(sys.argv[1].encode()).digest(); print(int.from_bytes(d[:4],"big")%100)' "$mid/test-1/b")
	expect 0 check --root "$Dm" --json
	action=$(json_get "$T/out" 'd["action"]')
	letter=$(json_get "$T/out" 'd["available"]["letter"] if d["available"] else None')
	if [ "$bucket" -lt 30 ]; then
		[ "$letter" = b ] || fail "machine $mid (bucket $bucket) should get (b), got $letter"
		n_in=$((n_in + 1))
	else
		# (a) is the newest response rolled out to it.
		[ "$letter" = a ] && [ "$(json_get "$T/out" 'd["held_back"]')" = 1 ] || fail "machine $mid (bucket $bucket) should get (a), got $letter"
		n_out=$((n_out + 1))
	fi
done
[ $n_in -gt 0 ] && [ $n_out -gt 0 ] || fail "rollout sample not mixed ($n_in in, $n_out out)"
# staged_rollout = no ignores the percentage.
repo_device "$Dm" "staged_rollout = no"
expect 0 check --root "$Dm" --json
[ "$(json_get "$T/out" 'd["available"]["letter"]')" = b ] || fail "staged_rollout = no"
"$RSR" -q repo rollout "$R" test-1 b 100 $SIGN
ok "staged rollout: $n_in of 12 machines in the 30% get (b), the others (a); policy can opt out"

# Withdrawal: devices on (a) move to (b); devices on (b) go back to the base or stay, per policy.
D4=$T/dev4
repo_device "$D4"
expect 0 install "$V/a" --root "$D4" --no-graft
"$RSR" -q repo withdraw "$R" test-1 a $SIGN
expect 0 check --root "$D4" --json
[ "$(json_get "$T/out" 'd["installed_withdrawn"]')" = True ] && [ "$(json_get "$T/out" 'd["action"]')" = install ] ||
	fail "withdrawn (a) should move on to (b): $(cat "$T/out")"
expect 0 update --root "$D4" --no-graft
device_is "$D4" b
"$RSR" -q repo withdraw "$R" test-1 b $SIGN
D5=$T/dev5
repo_device "$D5" "withdrawn = stay"
expect 0 install "$V/b" --root "$D5" --no-graft
expect 0 update --root "$D5" --no-graft
assert_grep "was withdrawn by the vendor" "$T/out"
device_is "$D5" b
expect 0 check --root "$D4" --json
[ "$(json_get "$T/out" 'd["action"]')" = remove ] || fail "withdrawn (b) with nothing newer: $(cat "$T/out")"
expect 0 update --root "$D4" --no-graft
assert_grep "Removed the withdrawn response (b)" "$T/out"
device_is "$D4" base
# A fresh device on the base is offered nothing: both are withdrawn.
D6=$T/dev6
repo_device "$D6"
expect 0 check --root "$D6" --json
[ "$(json_get "$T/out" 'd["action"]')" = none ] || fail "withdrawn responses offered"
ok "withdrawal: (a) -> (b); (b) -> base (withdrawn = base) or kept (withdrawn = stay); withdrawn never offered"

# refresh: new snapshot and timestamp versions; devices accept them.
v1=$(json_get "$R/metadata/timestamp.json" 'd["signed"]["version"]')
"$RSR" -q repo refresh "$R" --key "$K/snapshot" --key "$K/timestamp"
v2=$(json_get "$R/metadata/timestamp.json" 'd["signed"]["version"]')
[ "$v2" = $((v1 + 1)) ] || fail "refresh did not bump the timestamp"
expect 0 check --root "$D6"
[ "$(json_get "$D6/var/lib/rsr/tuf/timestamp.json" 'd["signed"]["version"]')" = "$v2" ] || fail "device did not take the new timestamp"
ok "repo refresh: timestamp $v1 -> $v2, accepted by devices"
echo "1..$TESTS_RUN"
