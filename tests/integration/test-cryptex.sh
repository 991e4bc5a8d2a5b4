#!/usr/bin/env bash
# rsr cryptex build/verify/info on a corpus pair: reproducibility, the
# veritysetup cross-check, every tamper case, and a kernel mount in place.
. "$(dirname "$0")/libtest.sh"

pair=$(corpus_pair libssl3)
"$RSR" key generate -o "$T/key" >/dev/null 2>&1
"$RSR" key generate -o "$T/other" >/dev/null 2>&1
build() { # SRC OUT [extra args]
	local src=$1 out=$2
	shift 2
	expect 0 cryptex build "$src" -o "$out" --name libssl3 --version 3.0.22-1~deb12u2 \
		--base debian-12 --base debian-12-gold --key "$T/key" "$@"
}

build "$pair/new" "$T/new.cptx"
build "$pair/old" "$T/old.cptx"
ok "build both trees of the libssl3 pair"

expect 0 cryptex verify "$T/new.cptx" "$T/old.cptx" --pubkey "$T/key.pub"
assert_grep "new.cptx: OK" "$T/out"
assert_grep "old.cptx: OK" "$T/out"
ok "verify accepts both"

# Reproducible: a copy of the tree made in another order, with other
# mtimes and another umask, gives the same bytes.
mkdir "$T/copy"
(cd "$pair/new" && find . ! -type d | sort -r | tar cf - --no-recursion -T -) | (cd "$T/copy" && tar xf -)
(cd "$pair/new" && find . -type d) | while read -r d; do chmod --reference="$pair/new/$d" "$T/copy/$d"; done
find "$T/copy" -exec touch -h -d '2001-02-03 04:05:06' {} +
(umask 077 && build "$T/copy" "$T/copy.cptx")
cmp "$T/new.cptx" "$T/copy.cptx" || fail "same tree and arguments gave different bytes"
SOURCE_DATE_EPOCH=1700000000 build "$pair/new" "$T/sde.cptx"
cmp -s "$T/new.cptx" "$T/sde.cptx" && fail "SOURCE_DATE_EPOCH did not change the image"
expect 0 cryptex info --json "$T/sde.cptx"
assert_grep '"timestamp": 1700000000' "$T/out"
ok "reproducible: byte-identical from a reordered copy; SOURCE_DATE_EPOCH honoured"

expect 0 cryptex info "$T/new.cptx"
for field in "Name: *libssl3" "Version: *3.0.22-1~deb12u2" "Base builds: *debian-12, debian-12-gold" \
	"Covers: */usr" "Root hash: *[0-9a-f]\{64\}" "Salt: *[0-9a-f]\{64\}" "Signing key: *$(cut -c1-64 <<<"$("$RSR" key id "$T/key.pub")")" \
	"Files: *9 files"; do
	assert_grep "$field" "$T/out"
done
expect 0 cryptex info --json "$T/new.cptx"
python3 - "$T/out" <<'PY'
import json, sys
i = json.load(open(sys.argv[1]))
assert i["name"] == "libssl3" and i["base_builds"] == ["debian-12", "debian-12-gold"], i
assert i["paths"] == ["usr"] and i["files"] == 9 and i["image_offset"] == 4096, i
assert i["file_size"] > i["image_size"] + i["hash_tree_size"], i
PY
ok "info shows name, version, bases, root hash, salt, sizes, files, key id (text and JSON)"

# The root hash is the one veritysetup computes for the same image and salt.
read -r isz salt root < <(python3 -c 'import json,sys; i=json.load(open(sys.argv[1])); print(i["image_size"], i["salt"], i["root_hash"])' "$T/out")
dd if="$T/new.cptx" of="$T/image.erofs" bs=4096 skip=1 count=$((isz / 4096)) status=none
command -v veritysetup >/dev/null || fail "veritysetup (cryptsetup-bin) is not installed"
vroot=$(veritysetup format --no-superblock --salt="$salt" --hash=sha256 --data-block-size=4096 \
	--hash-block-size=4096 --format=1 "$T/image.erofs" "$T/hash.tree" | awk '/Root hash/ {print $3}')
[ "$vroot" = "$root" ] || fail "root hash $root, veritysetup says $vroot"
tail -c +$((4096 + isz + 1)) "$T/new.cptx" | head -c "$(stat -c %s "$T/hash.tree")" | cmp - "$T/hash.tree" ||
	fail "hash tree differs from veritysetup's"
veritysetup verify --no-superblock --salt="$salt" "$T/image.erofs" "$T/hash.tree" "$root" ||
	fail "veritysetup does not accept our tree"
ok "root hash and hash tree equal veritysetup's; veritysetup verify accepts them"

# Tampering: each case fails with exit 1 and a message naming the fault.
size=$(stat -c %s "$T/new.cptx")
flip_at() { # OFFSET -> $T/bad.cptx
	cp "$T/new.cptx" "$T/bad.cptx"
	python3 - "$T/bad.cptx" "$1" <<'PY'
import sys
p, off = sys.argv[1], int(sys.argv[2])
with open(p, "r+b") as f:
    f.seek(off); b = f.read(1); f.seek(off); f.write(bytes([b[0] ^ 0x04]))
PY
}
tamper() { # DESCRIPTION EXPECTED-MESSAGE
	expect 1 cryptex verify "$T/bad.cptx" --pubkey "$T/key.pub"
	assert_grep "$2" "$T/err"
	ok "refused: $1"
}
flip_at $((4096 + 300 * 4096 + 5)); tamper "bit flip in data block 300" "data block 300 of"
flip_at $((4096 + isz - 1)); tamper "bit flip in the last data block" "data block $((isz / 4096 - 1)) of"
flip_at $((4096 + isz + 4096 + 7)); tamper "bit flip in the hash tree" "hash tree level"
flip_at $((size - 20)); tamper "bit flip in the manifest" "signature .* does not verify"
flip_at 120; tamper "bit flip in the signature" "does not verify"
flip_at 80; tamper "bit flip in the key id" "not among the 1 trusted key"
flip_at 33; tamper "bit flip in the header's image size" "image size\|hash tree at\|file is"
flip_at 0; tamper "bad magic" "not a cryptex"
cp "$T/new.cptx" "$T/bad.cptx"; truncate -s -1 "$T/bad.cptx"; tamper "truncated by one byte" "truncated"
cp "$T/new.cptx" "$T/bad.cptx"; head -c 3000 "$T/new.cptx" >"$T/bad.cptx"; tamper "truncated inside the header" "too short"
cp "$T/new.cptx" "$T/bad.cptx"; echo junk >>"$T/bad.cptx"; tamper "junk appended" "data appended"
# Another image's manifest and header (validly signed) over this image's data
# and tree: the same tree as another version has the same layout.
expect 0 cryptex build "$pair/new" -o "$T/other.cptx" --name libssl3 --version 3.0.22-1~deb12u9 \
	--base debian-12 --base debian-12-gold --key "$T/key"
python3 - "$T/other.cptx" "$T/new.cptx" "$T/bad.cptx" <<'PY'
import sys
old = open(sys.argv[1], "rb").read(); new = open(sys.argv[2], "rb").read()
mo = int.from_bytes(old[56:64], "little"); mn = int.from_bytes(new[56:64], "little")
if mo != mn:
    sys.exit("the two images differ in layout; this case needs equal layouts")
open(sys.argv[3], "wb").write(old[:4096] + new[4096:mn] + old[mo:])
PY
tamper "manifest of another image" "does not match"
cp "$T/new.cptx" "$T/bad.cptx"
expect 1 cryptex verify "$T/bad.cptx" --pubkey "$T/other.pub"
assert_grep "not among the 1 trusted key" "$T/err"
ok "refused: wrong key"

# Usage errors.
expect 2 cryptex build "$pair/new" -o "$T/x.cptx"
expect 2 cryptex verify "$T/new.cptx"
expect 2 cryptex frob
expect 0 cryptex build --help
expect 1 cryptex build "$pair/new" -o "$T/x.cptx" --name "bad name" --version 1 --base b --key "$T/key"
assert_grep "name 'bad name' is not valid" "$T/err"
# The name is the slot: build refuses what graft would (one rule for both).
for name in "lib+x" "a~b" "c:d" "-x"; do
	expect 1 cryptex build "$pair/new" -o "$T/x.cptx" --name "$name" --version 1 --base b --key "$T/key"
	assert_grep "cryptex name '$name' is not valid (it names the slot): 1 to 64 of A-Z a-z 0-9 . _ -, not starting with . or -" "$T/err"
	[ ! -e "$T/x.cptx" ] || fail "a refused name left an output"
done
expect 1 cryptex build "$pair/new" -o "$T/x.cptx" --name x --version 1 --base b --key "$T/key.pub"
assert_grep "not a PEM private key" "$T/err"
mkdir -p "$T/flat" && echo x >"$T/flat/file"
expect 1 cryptex build "$T/flat" -o "$T/x.cptx" --name x --version 1 --base b --key "$T/key"
assert_grep "must be a directory" "$T/err"
[ ! -e "$T/x.cptx" ] || fail "a failed build left its output"
ls -A "$T" | grep -q rsr-build && fail "a failed build left its staging area"
ok "usage errors exit 2; bad names, keys and trees exit 1 and leave nothing"

# What a tree may hold: device nodes other than overlay whiteouts (0:0),
# FIFOs and sockets are refused, naming the path; setuid, setgid and
# file-capability files go into the signed manifest, and info shows them.
expect 0 cryptex info "$T/new.cptx"
assert_grep "Privileged: *none" "$T/out"
expect 0 cryptex info --json "$T/new.cptx"
assert_grep '"privileged": \[\]' "$T/out"
grep -q '"privileged"' "$T/new.cptx" && fail "a manifest without privileged files names the field"
if [ "$(id -u)" = 0 ]; then
	mkdir -p "$T/special/usr/bin" "$T/special/usr/share"
	echo x >"$T/special/usr/bin/x"
	for kind in "c 1 5:a character device 1:5" "b 7 0:a block device 7:0" "p:a FIFO" "s:a socket"; do
		rm -f "$T/special/usr/share/node"
		case ${kind%%:*} in
		p) mkfifo "$T/special/usr/share/node" ;;
		s) python3 -c 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$T/special/usr/share/node" ;;
		*) mknod "$T/special/usr/share/node" ${kind%%:*} ;;
		esac
		expect 1 cryptex build "$T/special" -o "$T/x.cptx" --name x --version 1 --base b --key "$T/key"
		assert_grep "$T/special: refused: /usr/share/node is ${kind#*:}" "$T/err"
		[ ! -e "$T/x.cptx" ] || fail "a refused tree left an output"
	done
	rm -f "$T/special/usr/share/node"
	mknod "$T/special/usr/share/node" c 0 0
	cp /usr/bin/id "$T/special/usr/bin/sudo" && chmod 4755 "$T/special/usr/bin/sudo"
	cp /usr/bin/id "$T/special/usr/bin/ping" && setcap cap_net_raw+ep "$T/special/usr/bin/ping"
	cp /usr/bin/id "$T/special/usr/bin/wall" && chmod 2755 "$T/special/usr/bin/wall"
	expect 0 cryptex build "$T/special" -o "$T/special.cptx" --name x --version 1 --base b --key "$T/key"
	expect 0 cryptex info "$T/special.cptx"
	assert_grep "Privileged: */usr/bin/ping 0755 capabilities" "$T/out"
	assert_grep "^ */usr/bin/sudo 4755 setuid$" "$T/out"
	assert_grep "^ */usr/bin/wall 2755 setgid$" "$T/out"
	expect 0 cryptex info --json "$T/special.cptx"
	python3 - "$T/out" <<'PY'
import json, sys
i = json.load(open(sys.argv[1]))
assert i["privileged"] == [{"path": "/usr/bin/ping", "mode": "0755", "caps": True},
	{"path": "/usr/bin/sudo", "mode": "4755", "caps": False},
	{"path": "/usr/bin/wall", "mode": "2755", "caps": False}], i["privileged"]
PY
	ok "build refuses device nodes, FIFOs and sockets naming the path, keeps whiteouts, lists privileged files"
fi

# The kernel mounts the image in place (loop device with offset and size limit).
if [ "$(id -u)" = 0 ] && grep -qw erofs /proc/filesystems; then
	mkdir -p "$T/mnt"
	unshare -m bash -c "
		set -e
		mount --make-rprivate /
		mount -t erofs -o ro,loop,offset=4096,sizelimit=$isz '$T/new.cptx' '$T/mnt'
		cmp '$T/mnt/usr/lib/x86_64-linux-gnu/libssl.so.3' '$pair/new/usr/lib/x86_64-linux-gnu/libssl.so.3'
		grep -q '^CRYPTEX_NAME=libssl3$' '$T/mnt/cryptex-release'
		grep -q '^CRYPTEX_BASE_BUILDS=\"debian-12 debian-12-gold\"$' '$T/mnt/cryptex-release'
		[ \"\$(stat -c %u:%g:%Y '$T/mnt/usr/lib/x86_64-linux-gnu/libssl.so.3')\" = 0:0:0 ]
		diff -r '$T/mnt/usr' '$pair/new/usr'
	" || fail "kernel mount of the image failed or showed other content"
	ok "kernel mounts the image in place, read-only, with the tree's content and the release file"
else
	echo "SKIP: mounting needs root and EROFS in the kernel" >&2
	skip_all "cannot mount here (not root or no EROFS)"
fi
echo "1..$TESTS_RUN"
