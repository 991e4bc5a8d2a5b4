#!/usr/bin/env bash
# Every refusal of rsr graft, at install and at graft time: bad signature,
# bad block, unknown key, base build not allowed, forbidden covered path.
# A manifest is authenticated before it is parsed: a damaged or untrusted
# one is refused for its signature, never reported as bad JSON.
# Each exits 1 with a message naming the fault, and leaves nothing mounted
# and nothing changed (installed images, current symlinks, run-time state).
. "$(dirname "$0")/libtest.sh"
need_root
if [ "${RSR_IN_NS:-}" != 1 ]; then
	grep -qw erofs /proc/filesystems || modprobe erofs 2>/dev/null || skip_all "no EROFS in this kernel"
	grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || skip_all "no overlayfs in this kernel"
	[ -e /dev/loop-control ] || skip_all "no /dev/loop-control"
	unshare -m --propagation private true || skip_all "cannot make a private mount namespace"
	RSR_IN_NS=1 RSR_NS_DIR=$T unshare -m --propagation private "$0"
	exit
fi
W=$RSR_NS_DIR
R=$W/root

"$RSR" key generate -o "$W/key" >/dev/null 2>&1
"$RSR" key generate -o "$W/stranger" >/dev/null 2>&1
mkdir -p "$R/etc/rsr/keys.d" "$R/usr/share/t" "$R/opt"
cp "$W/key.pub" "$R/etc/rsr/keys.d/"
printf 'NAME=base\nVERSION_ID=7\nBUILD_ID=7.1\n' >"$R/etc/os-release"
echo base >"$R/usr/share/t/file"
mk() { # NAME VERSION SRC-CONTENT [build args...]
	local name=$1 v=$2
	shift 2
	rm -rf "$W/src"
	mkdir -p "$W/src/usr/share/t"
	echo "$v" >"$W/src/usr/share/t/file"
	head -c 200000 /dev/urandom >"$W/src/usr/share/t/blob"
	"$RSR" -q cryptex build "$W/src" -o "$W/$name.cptx" --name os --version "$v" "$@"
}
mk good 1 --base 7.1 --key "$W/key"
mk good2 2 --base 7.1 --key "$W/key"
mk stranger 1 --base 7.1 --key "$W/stranger"
mk otherbase 1 --base 7.0 --base 8.0 --key "$W/key"
cp "$W/good.cptx" "$W/badblock.cptx"
printf 'X' | dd of="$W/badblock.cptx" bs=1 seek=$((4096 + 3 * 4096 + 100)) conv=notrunc status=none
cp "$W/good.cptx" "$W/badsig.cptx"
printf 'X' | dd of="$W/badsig.cptx" bs=1 seek=120 conv=notrunc status=none
# Manifests altered after signing (header: manifest_offset at 56, key_id at 72, signature at 104).
manifest_offset() { od -An -t u8 -j 56 -N 8 "$1" | tr -d ' '; }
poke() { # FILE OFFSET BYTES
	printf '%s' "$3" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}
cp "$W/good.cptx" "$W/badjson.cptx"
poke "$W/badjson.cptx" "$(manifest_offset "$W/good.cptx")" X
cp "$W/good.cptx" "$W/badname.cptx"
at=$(grep -obUaF '"name":"os"' "$W/good.cptx" | cut -d: -f1)
[ -n "$at" ] || fail "no slot name in the manifest of good.cptx"
poke "$W/badname.cptx" $((at + 8)) ..
cp "$W/good.cptx" "$W/unsigned.cptx"
dd if=/dev/zero of="$W/unsigned.cptx" bs=1 seek=72 count=96 conv=notrunc status=none
cp "$W/stranger.cptx" "$W/strangerjson.cptx"
poke "$W/strangerjson.cptx" "$(manifest_offset "$W/stranger.cptx")" X
mkdir -p "$W/etcsrc/etc/x" && echo x >"$W/etcsrc/etc/x/y"
"$RSR" -q cryptex build "$W/etcsrc" -o "$W/etc.cptx" --name os --version 1 --base 7.1 --key "$W/key"

# Everything rsr can change: mounts under the root, files and links it keeps.
snapshot() {
	{
		findmnt -rn -o TARGET,FSTYPE,SOURCE | awk -v r="$R" 'index($1, r) == 1' | sort
		(cd "$R" && find etc var run -printf '%p %y %l\n' 2>/dev/null || true) | sort
		(cd "$R" && find var run -type f -exec sha256sum {} + 2>/dev/null || true) | sort
		cat "$R/usr/share/t/file"
		(losetup -l -n -O BACK-FILE | grep "$R" || true) | sort
	} >"$1"
}
refuse() { # FILE MESSAGE DESCRIPTION
	snapshot "$W/before"
	expect 1 graft --root "$R" --add "$W/$1"
	assert_grep "$2" "$T/err"
	snapshot "$W/after"
	diff "$W/before" "$W/after" || fail "$3: something changed"
	ok "refused with nothing changed ($4): $3"
}

for phase in "nothing grafted" "version 1 grafted"; do
	refuse stranger.cptx "stranger.cptx.*not among the 1 trusted key" "unknown key" "$phase"
	refuse badsig.cptx "badsig.cptx: .*does not verify" "bad signature" "$phase"
	refuse badjson.cptx "badjson.cptx: refused: the signature by key .* does not verify" \
		"manifest no longer JSON" "$phase"
	assert_no_grep "JSON" "$T/err"
	refuse badname.cptx "badname.cptx: refused: the signature by key .* does not verify" \
		"manifest naming slot '..'" "$phase"
	assert_no_grep "manifest 'name'\\|slot name" "$T/err"
	refuse unsigned.cptx "unsigned.cptx: refused: signed by key 0\{64\}, which is not among the 1 trusted key" \
		"no signature" "$phase"
	refuse strangerjson.cptx "strangerjson.cptx: refused: .*not among the 1 trusted key" \
		"unknown key and a manifest no longer JSON" "$phase"
	assert_no_grep "JSON" "$T/err"
	refuse badblock.cptx "badblock.cptx.*data block 3 of" "bad block" "$phase"
	refuse otherbase.cptx "made for base build '7.0', '8.0', this base is '7.1'" "base build not allowed" "$phase"
	refuse etc.cptx "may not cover /etc" "covers /etc" "$phase"
	expect 0 graft --root "$R" --add "$W/good.cptx"
	[ "$(cat "$R/usr/share/t/file")" = 1 ] || fail "good image not grafted"
done

# An installed image damaged in place is refused at graft time; the grafted one stays.
expect 0 graft --root "$R" --add "$W/good2.cptx" --no-mount
img=$R/var/lib/rsr/cryptexes/os/$(readlink "$R/var/lib/rsr/cryptexes/os/current")
printf 'X' | dd of="$img" bs=1 seek=$((4096 + 2 * 4096 + 1)) conv=notrunc status=none
snapshot "$W/before"
expect 1 graft --root "$R"
assert_grep "data block 2 of" "$T/err"
snapshot "$W/after"
diff "$W/before" "$W/after" || fail "something changed"
[ "$(cat "$R/usr/share/t/file")" = 1 ] || fail "the grafted image changed"
ok "an installed image damaged in place is refused at graft time; the grafted one stays"

# So is one whose manifest is damaged in place: for its signature, before its JSON is read.
expect 0 graft --root "$R" --add "$W/good2.cptx" --no-mount
img=$R/var/lib/rsr/cryptexes/os/$(readlink "$R/var/lib/rsr/cryptexes/os/current")
poke "$img" "$(manifest_offset "$img")" X
snapshot "$W/before"
expect 1 graft --root "$R"
assert_grep "slot 'os': $img: refused: the signature by key .* does not verify" "$T/err"
assert_no_grep "JSON" "$T/err"
snapshot "$W/after"
diff "$W/before" "$W/after" || fail "something changed"
[ "$(cat "$R/usr/share/t/file")" = 1 ] || fail "the grafted image changed"
ok "an installed image whose manifest is damaged in place is refused for its signature; the grafted one stays"
expect 0 status --root "$R"
assert_grep "$img: refused: the signature by key .* does not verify" "$T/err"
ok "status warns about it"

# A base without any build identity refuses everything.
expect 0 ungraft --root "$R"
printf 'NAME=base\n' >"$R/etc/os-release"
refuse good.cptx "base build is unknown" "no base build in os-release" "after ungraft"

# Keys: a root with no keys.d trusts nothing.
printf 'NAME=base\nBUILD_ID=7.1\n' >"$R/etc/os-release"
mv "$R/etc/rsr/keys.d" "$R/etc/rsr/keys.off"
refuse good.cptx "not among the 0 trusted key" "no trusted keys" "after ungraft"
echo "1..$TESTS_RUN"
