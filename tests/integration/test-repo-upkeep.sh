#!/usr/bin/env bash
# A repository kept alive for months: published 100 days ago (signing time
# from SOURCE_DATE_EPOCH), its targets.json (90 days) has expired. The cron
# refresh with the online keys renews snapshot and timestamp, names targets
# as not renewed and fails; devices refuse the repository until the targets
# key holder's refresh renews it. rsr repo status shows every role and
# response. Root renews as its next version, which devices follow.
. "$(dirname "$0")/libtest.sh"
. "$(dirname "$0")/libresponse.sh"
. "$(dirname "$0")/librepo.sh"

now=$(date +%s)
vendor_setup
SOURCE_DATE_EPOCH=$((now - 100 * 86400)) repo_setup
nginx_start "$R"
D=$T/dev
repo_device "$D"
texp=$(json_get "$R/metadata/3.targets.json" 'd["signed"]["expires"]')

expect 0 repo status "$R" --json
python3 - "$T/out" <<'PY' || fail "status --json after 100 days"
import json, sys
o = json.load(open(sys.argv[1]))
r = o["roles"]
assert r["targets"]["version"] == 3 and r["targets"]["expired"] is True and r["targets"]["expires_in"] < -9 * 86400, r
assert r["timestamp"]["expired"] is True and r["root"]["expired"] is False and r["root"]["version"] == 1, r
assert [(x["base_build"], x["letter"], x["sequence"], x["rollout"], x["withdrawn"]) for x in o["responses"]] == \
    [("test-1", "a", 1, 100, False), ("test-1", "b", 2, 100, False)], o["responses"]
b = o["responses"][1]
assert b["target"] == "test-1/b/response.json" and b["images"] == 2 and b["patch_bytes"] > 0, b
PY
expect 0 repo status "$R"
assert_grep "^targets    version 3    expires $texp (expired 10 days ago)" "$T/out"
assert_grep "^test-1 (b)  sequence 2  rollout 100%" "$T/out"
ok "repo status: each role's version and expiry (targets expired 10 days ago), each response with its rollout"

# The documented cron line (online keys only).
expect 1 -q repo refresh "$R" --key "$K/snapshot" --key "$K/timestamp"
assert_grep "targets.json (version 3) expired at $texp and is not renewed: the targets role needs signatures by 1" "$T/err"
assert_grep "devices refuse the repository until it is renewed" "$T/err"
[ "$(json_get "$R/metadata/timestamp.json" 'd["signed"]["version"]')" = 4 ] || fail "timestamp not renewed"
[ ! -e "$R/metadata/4.targets.json" ] || fail "targets renewed without its key"
expect 1 check --root "$D"
assert_grep "targets.json expired at $texp" "$T/err"
ok "cron refresh without the targets key: snapshot and timestamp renewed, targets named with its expiry, exit 1; devices still refuse"

# The targets key holder's refresh.
expect 0 repo refresh "$R" $SIGN
assert_grep "^targets    version 4    expires .* (in \(89\|90\) days): renewed" "$T/out"
assert_grep "^root       version 1    expires .* (in 26[45] days)$" "$T/out"
expect 0 check --root "$D"
assert_grep "Available: response (b) for test-1" "$T/out"
# Nothing due: the next cron run renews snapshot and timestamp only and succeeds.
expect 0 repo refresh "$R" --key "$K/snapshot" --key "$K/timestamp"
assert_grep "^targets    version 4    expires .* (in \(89\|90\) days)$" "$T/out"
assert_grep "^timestamp  version 6 .*: renewed" "$T/out"
ok "refresh with the targets key renews targets (version 4, 90 days); devices accept the repository again"

# --expires asks for a role whatever its margin; without its key that is an error and nothing changes.
expect 1 repo refresh "$R" --key "$K/snapshot" --key "$K/timestamp" --expires targets=120d
assert_grep "targets.json cannot be renewed: the targets role needs" "$T/err"
[ "$(json_get "$R/metadata/timestamp.json" 'd["signed"]["version"]')" = 6 ] || fail "a failed refresh wrote a timestamp"
expect 2 repo refresh "$R" $SIGN --margin targets=soon
assert_grep "\-\-margin takes ROLE=DURATION" "$T/err"
expect 0 repo refresh "$R" $SIGN --expires targets=120d
assert_grep "^targets    version 5    expires .* (in 1[12][09] days): renewed" "$T/out"
ok "refresh --expires ROLE renews it or fails writing nothing; bad --margin refused"

# Root: renewed as version 2 by its key when within the margin; devices follow it.
expect 1 repo refresh "$R" --key "$K/snapshot" --key "$K/timestamp" --margin root=300d
assert_grep "root.json (version 1) expires at .* and is not renewed: the root role needs" "$T/err"
expect 0 repo refresh "$R" --key "$K/root" --key "$K/snapshot" --key "$K/timestamp" --margin root=300d
assert_grep "^root       version 2    expires .* (in 36[45] days): renewed" "$T/out"
[ -f "$R/metadata/2.root.json" ] || fail "2.root.json"
expect 0 -v check --root "$D"
assert_grep "following the repository's root to version 2" "$T/err"
[ "$(json_get "$D/var/lib/rsr/tuf/root.json" 'd["signed"]["version"]')" = 2 ] || fail "device did not take root 2"
ok "root renewed within --margin root=300d as version 2, followed by devices"
echo "1..$TESTS_RUN"
