#!/usr/bin/env bash
# Every refusal of rsr graft, at install and at graft time: bad signature,
# bad block, unknown key, base build not allowed, forbidden covered path,
# device nodes and setuid, setgid or file-capability files the signed
# manifest does not list (in images made behind the build's back).
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
	mkdir -p "$W/src/usr/share/t" "$W/src/usr/bin"
	echo "$v" >"$W/src/usr/share/t/file"
	head -c 200000 /dev/urandom >"$W/src/usr/share/t/blob"
	cp /usr/bin/id "$W/src/usr/bin/tool"
	[ -z "${MK_SETUP:-}" ] || (cd "$W/src" && eval "$MK_SETUP")
	"$RSR" -q cryptex build "$W/src" -o "$W/$name.cptx" --name os --version "$v" "$@"
}
mk good 1 --base 7.1 --key "$W/key"
mk good2 2 --base 7.1 --key "$W/key"
mk stranger 1 --base 7.1 --key "$W/stranger"
mk otherbase 1 --base 7.0 --base 8.0 --key "$W/key"
flip() { # FILE OFFSET: inverts the byte there (writing a fixed byte into random data may change nothing)
	python3 -c 'import sys; f = open(sys.argv[1], "r+b"); o = int(sys.argv[2]); f.seek(o); b = f.read(1)[0]; f.seek(o); f.write(bytes([b ^ 0xff]))' "$1" "$2"
}
cp "$W/good.cptx" "$W/badblock.cptx"
flip "$W/badblock.cptx" $((4096 + 3 * 4096 + 100))
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

# Images a build would refuse, made as a hand-made image would be: an
# mkfs.erofs that changes the staged tree after the build checked it (and
# signed what it found), keeping the number of entries the manifest counts.
cat >"$W/forge-mkfs" <<SH
#!/bin/bash
set -e
(cd "\${!#}" && . "$W/forge.sh")
exec mkfs.erofs "\$@"
SH
chmod +x "$W/forge-mkfs"
forge() { # NAME COMMANDS-RUN-IN-THE-STAGED-TREE
	printf '%s\n' "$2" >"$W/forge.sh"
	mk "$1" 3 --base 7.1 --key "$W/key" --mkfs "$W/forge-mkfs"
}
forge chardev 'rm usr/share/t/blob && mknod usr/share/t/blob c 1 5 && chmod 0666 usr/share/t/blob'
forge blockdev 'rm usr/share/t/blob && mknod usr/share/t/blob b 7 0'
forge fifo 'rm usr/share/t/blob && mkfifo usr/share/t/blob'
forge setuid 'chmod 4755 usr/bin/tool'
forge setgid 'chmod 2755 usr/bin/tool'
forge setcap 'setcap cap_net_raw+ep usr/bin/tool'
MK_SETUP='chmod 4755 usr/bin/tool' forge othermode 'chmod 4711 usr/bin/tool'
MK_SETUP='chmod 4755 usr/bin/tool' forge gaincaps 'setcap cap_net_raw+ep usr/bin/tool'
MK_SETUP='chmod 4755 usr/bin/tool' forge unlisted 'chmod 0755 usr/bin/tool'

# Everything rsr can change: mounts under the root, files and links it keeps. The device
# lock, var/lib/rsr/lock, and the directories that hold it are left out: the first
# command that would change the root creates them (the lock is empty and stays so).
snapshot() {
	{
		findmnt -rn -o TARGET,FSTYPE,SOURCE | awk -v r="$R" 'index($1, r) == 1' | sort
		(cd "$R" && find etc var run ! -path var/lib/rsr/lock -printf '%p %y %l\n' 2>/dev/null || true) |
			grep -vxE 'var(/lib(/rsr)?)? d ' | sort
		(cd "$R" && find var run -type f ! -path var/lib/rsr/lock -exec sha256sum {} + 2>/dev/null || true) | sort
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

# Refused on the image's own mount at graft time, after it was installed: the
# install is reverted and nothing else changes. On a root that never had a
# graft, rsr's own (empty) directories under run/ and var/lib/ stay.
refuse_mounted() { # FILE MESSAGE DESCRIPTION PHASE
	if [ "$4" = "nothing grafted" ]; then
		snapshot "$W/before"
		expect 1 graft --root "$R" --add "$W/$1"
		assert_grep "$2" "$T/err"
		snapshot "$W/after"
		grep -v ' d $' "$W/after" | diff <(grep -v ' d $' "$W/before") - || fail "$3: something changed"
		ok "refused with nothing changed but rsr's empty directories ($4): $3"
	else
		refuse "$@"
	fi
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
	refuse_mounted chardev.cptx "refused: /usr/share/t/blob is a character device 1:5; a cryptex holds no device nodes" \
		"a character device 1:5, mode 0666" "$phase"
	refuse_mounted blockdev.cptx "refused: /usr/share/t/blob is a block device 7:0" "a block device" "$phase"
	refuse_mounted fifo.cptx "refused: /usr/share/t/blob is a FIFO" "a FIFO" "$phase"
	refuse_mounted setuid.cptx "refused: /usr/bin/tool has mode 4755, setuid, without file capabilities, and its signed manifest does not list it" \
		"a setuid file the manifest does not list" "$phase"
	refuse_mounted setgid.cptx "refused: /usr/bin/tool has mode 2755, setgid, .*does not list it" \
		"a setgid file the manifest does not list" "$phase"
	refuse_mounted setcap.cptx "refused: /usr/bin/tool has mode 0755, with file capabilities, and its signed manifest does not list it" \
		"a file-capability file the manifest does not list" "$phase"
	refuse_mounted othermode.cptx "refused: /usr/bin/tool has mode 4711, setuid, without file capabilities in the image, its signed manifest lists it with mode 4755, setuid, without" \
		"a setuid file listed with another mode" "$phase"
	refuse_mounted gaincaps.cptx "refused: /usr/bin/tool has mode 4755, setuid, with file capabilities in the image, its signed manifest lists it with mode 4755, setuid, without" \
		"a setuid file listed without the capabilities it has" "$phase"
	refuse_mounted unlisted.cptx "refused: its signed manifest lists /usr/bin/tool as setuid, setgid or with file capabilities, and the image has no such file" \
		"a listed setuid file that is not setuid" "$phase"
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

# Setuid and file-capability files the manifest lists graft and keep working
# through the graft: the overlay is nodev but not nosuid. The image's own
# mount is nosuid, which only matters for that private mount.
MK_SETUP='chmod 4755 usr/bin/tool && cp /usr/bin/id usr/bin/capped && setcap cap_net_raw+ep usr/bin/capped' \
	mk priv 4 --base 7.1 --key "$W/key"
expect 0 cryptex info "$W/priv.cptx"
assert_grep "/usr/bin/tool 4755 setuid" "$T/out"
expect 0 graft --root "$R" --add "$W/priv.cptx"
[ "$(stat -c %a:%u "$R/usr/bin/tool")" = 4755:0 ] || fail "the setuid bit is not visible through the graft: $(stat -c %a:%u "$R/usr/bin/tool")"
getcap "$R/usr/bin/capped" | grep -q cap_net_raw || fail "the file capabilities are not visible through the graft"
opts=$(findmnt -n -o OPTIONS --mountpoint "$R/usr" | tail -1)
[[ ,$opts, == *,nodev,* ]] || fail "the grafted /usr is not nodev: $opts"
[[ ,$opts, != *,nosuid,* ]] || fail "the grafted /usr is nosuid: $opts"
chmod o+x "$W"
[ "$(setpriv --reuid=65534 --regid=65534 --clear-groups "$R/usr/bin/tool" -u)" = 0 ] ||
	fail "a listed setuid file does not run setuid through the graft"
img_mount=$(python3 -c 'import json,sys; print([s["mount"] for s in json.load(open(sys.argv[1]))["slots"] if s["slot"] == "os"][0])' "$R/run/rsr/graft.json")
[ "$(setpriv --reuid=65534 --regid=65534 --clear-groups "$img_mount/usr/bin/tool" -u)" = 65534 ] ||
	fail "the image's own mount is not nosuid"
chmod o-x "$W"
ok "listed setuid and file-capability files graft and work through the nodev (not nosuid) overlay"

# A base without any build identity refuses everything.
expect 0 ungraft --root "$R"
printf 'NAME=base\n' >"$R/etc/os-release"
refuse good.cptx "base build is unknown" "no base build in os-release" "after ungraft"

# Keys: a root with no keys.d trusts nothing.
printf 'NAME=base\nBUILD_ID=7.1\n' >"$R/etc/os-release"
mv "$R/etc/rsr/keys.d" "$R/etc/rsr/keys.off"
refuse good.cptx "not among the 0 trusted key" "no trusted keys" "after ungraft"
mv "$R/etc/rsr/keys.off" "$R/etc/rsr/keys.d"

# What is verified is what is kept: graft --add copies the file into the store first and
# verifies the copy. A source whose owner keeps changing a data byte while it is added is
# either refused or stored as an image that verifies, never stored damaged.
mkfifo "$W/pipe"
refuse pipe "pipe: not a regular file" "a named pipe" "after ungraft"
cp "$W/good2.cptx" "$W/moving.cptx"
python3 - "$W/moving.cptx" "$W/stop" <<'PY' >/dev/null 2>&1 &
import os, sys, time
off = 4096 + 2 * 4096 + 1
fd = os.open(sys.argv[1], os.O_WRONLY)
orig = os.pread(os.open(sys.argv[1], os.O_RDONLY), 1, off)
flip = bytes([orig[0] ^ 0x5A])
end = time.monotonic() + 300  # also when the test fails before it says stop
while not os.path.exists(sys.argv[2]) and time.monotonic() < end:
    os.pwrite(fd, flip, off)
    time.sleep(0.001)
    os.pwrite(fd, orig, off)
    time.sleep(0.001)
PY
flipper=$!
stored=0 refused=0
for i in $(seq 20); do
	if "$RSR" -q graft --root "$R" --add "$W/moving.cptx" --no-mount 2>"$T/race-err"; then
		stored=$((stored + 1))
		cur=$R/var/lib/rsr/cryptexes/os/$(readlink "$R/var/lib/rsr/cryptexes/os/current")
		"$RSR" -q cryptex verify "$cur" --pubkey "$W/key.pub" || fail "run $i: a damaged image was stored"
	else
		grep -q "refused" "$T/race-err" || fail "run $i: $(cat "$T/race-err")"
		refused=$((refused + 1))
	fi
done
touch "$W/stop"
wait $flipper
[ -z "$(find "$R/var/lib/rsr" -maxdepth 1 -name '.incoming*')" ] || fail "a staged copy was left behind"
ok "graft --add keeps exactly what it verified: $stored stored and verified, $refused refused, while the source kept changing"
echo "1..$TESTS_RUN"
