#!/usr/bin/env bash
# rsr cryptex build --deb: cryptexes from Debian packages (the corpus's and
# packages made here). The files are the packages' own, placed as dpkg places
# them on a merged-/usr system; the packages are named in the release file,
# the manifest and cryptex info; an image that keeps /lib apart is refused on
# a merged base with a message that says how to rebuild; packages with
# entries outside their tree, device nodes or clashing files are refused.
. "$(dirname "$0")/libtest.sh"
need_root
command -v dpkg-deb >/dev/null || skip_all "no dpkg-deb"
[ -d "$RSR_CORPUS/debs" ] || skip_all "corpus not found at $RSR_CORPUS"
if [ "${RSR_IN_NS:-}" != 1 ]; then
	grep -qw erofs /proc/filesystems || modprobe erofs 2>/dev/null || skip_all "no EROFS in this kernel"
	grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || skip_all "no overlayfs in this kernel"
	[ -e /dev/loop-control ] || skip_all "no /dev/loop-control"
	RSR_IN_NS=1 RSR_NS_DIR=$T unshare -m --propagation private "$0"
	exit
fi
W=$RSR_NS_DIR
D=$RSR_CORPUS/debs
"$RSR" key generate -o "$W/key" >/dev/null 2>&1
common=(--base 12 --key "$W/key")

# The image's files, extracted (the image starts at 4096).
extract() { # CPTX DIR
	local size
	size=$("$RSR" cryptex info --json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["image_size"])')
	dd if="$1" of="$W/img.erofs" bs=4096 skip=1 count=$((size / 4096)) status=none
	rm -rf "$2"
	fsck.erofs --extract="$2" "$W/img.erofs" >/dev/null
}

# systemd ships /bin, /lib, /etc and /var besides /usr.
sd=$D/systemd_252.39-1~deb12u2_amd64.deb
expect 0 cryptex build --deb "$sd" -o "$W/sd.cptx" --name systemd --version 252.39 "${common[@]}"
assert_grep "its /etc is left out" "$T/err"
assert_grep "its /var is left out" "$T/err"
extract "$W/sd.cptx" "$W/sd"
[ "$(ls "$W/sd")" = "$(printf 'cryptex-release\nusr')" ] || fail "top level of the merged image: $(ls "$W/sd")"
dpkg-deb -x "$sd" "$W/sd-deb"
for f in lib/systemd/systemd lib/systemd/system/systemd-journald.service bin/systemctl usr/bin/busctl; do
	cmp "$W/sd-deb/$f" "$W/sd/usr/${f#usr/}" || fail "/$f is not the package's at /usr/${f#usr/}"
done
# Every file of the package (but /etc and /var) is in the image, at its merged path.
(cd "$W/sd-deb" && find . ! -type d ! -path './etc/*' ! -path './var/*' | sed -e 's|^\./||' -e 's#^\(bin\|sbin\|lib\|lib64\)/#usr/\1/#' | sort) >"$W/want"
(cd "$W/sd" && find . ! -type d ! -name cryptex-release | sed 's|^\./||' | sort) >"$W/got"
diff "$W/want" "$W/got" || fail "the image does not hold the package's files"
ok "a package's /bin and /lib go under /usr; /etc and /var are left out with a warning"

assert_grep '^CRYPTEX_PACKAGES="systemd:amd64=252.39-1~deb12u2"$' "$W/sd/cryptex-release"
expect 0 cryptex info "$W/sd.cptx"
assert_grep "^Packages: *systemd:amd64 252.39-1~deb12u2$" "$T/out"
expect 0 cryptex info --json "$W/sd.cptx"
python3 - "$T/out" <<'PY' || fail "cryptex info --json packages"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["packages"] == [{"name": "systemd", "version": "252.39-1~deb12u2", "architecture": "amd64"}], d["packages"]
PY
ok "the package is named in the release file, cryptex info and --json"

# Two packages and a tree of the vendor's own, in one image; the same inputs give the same bytes.
mkdir -p "$W/own/usr/share/vendor" "$W/own/lib/vendor"
echo note >"$W/own/usr/share/vendor/note"
echo lib >"$W/own/lib/vendor/x"
w1=$D/libwebkit2gtk-4.1-0_2.50.6-1~deb12u2_amd64.deb
ssl=$D/libssl3_3.0.22-1~deb12u2_amd64.deb
arch=$D/libarchive13_3.6.2-1+deb12u5_amd64.deb
expect 0 cryptex build "$W/own" --deb "$ssl" --deb "$arch" -o "$W/two.cptx" --name libs --version 1 "${common[@]}"
expect 0 cryptex info --json "$W/two.cptx"
python3 - "$T/out" <<'PY' || fail "two packages"
import json, sys
d = json.load(open(sys.argv[1]))
assert [(p["name"], p["version"]) for p in d["packages"]] == [("libssl3", "3.0.22-1~deb12u2"), ("libarchive13", "3.6.2-1+deb12u5")], d
assert d["paths"] == ["usr"], d["paths"]
PY
extract "$W/two.cptx" "$W/two"
[ -f "$W/two/usr/lib/x86_64-linux-gnu/libssl.so.3" ] && [ -f "$W/two/usr/lib/x86_64-linux-gnu/libarchive.so.13" ] ||
	fail "the packages' libraries are not in the image"
[ "$(cat "$W/two/usr/share/vendor/note")" = note ] && [ "$(cat "$W/two/usr/lib/vendor/x")" = lib ] ||
	fail "the tree's own files (its /lib under /usr) are not in the image"
mkdir -p "$W/again"
expect 0 cryptex build "$W/own" --deb "$ssl" --deb "$arch" -o "$W/again/two.cptx" --name libs --version 1 "${common[@]}"
cmp "$W/two.cptx" "$W/again/two.cptx" || fail "not reproducible"
ok "a tree and two packages in one image, reproducibly"

# Without merged /usr, /lib stays; such an image is refused on a merged base, saying how to rebuild.
expect 0 cryptex build --deb "$sd" --no-merged-usr -o "$W/sd-split.cptx" --name systemd --version 252.39 "${common[@]}"
expect 0 cryptex info --json "$W/sd-split.cptx"
python3 -c 'import json,sys; p = json.load(open(sys.argv[1]))["paths"]; assert p == ["bin", "lib", "usr"], p' "$T/out" ||
	fail "paths of the unmerged image"
# Grafting needs openat2, which scripts/valgrind-suite's valgrind lacks (it says so in RSR_NO_OPENAT2).
if [ -n "${RSR_NO_OPENAT2:-}" ]; then
	echo "# the graft checks are left out: $RSR_NO_OPENAT2"
else
	R=$W/root
	mkdir -p "$R/usr/lib/systemd" "$R/usr/bin" "$R/etc/rsr/keys.d"
	ln -s usr/lib "$R/lib"
	ln -s usr/bin "$R/bin"
	cp "$W/key.pub" "$R/etc/rsr/keys.d/"
	printf 'ID=debian\nVERSION_ID=12\n' >"$R/etc/os-release"
	expect 1 graft --root "$R" --add "$W/sd-split.cptx"
	assert_grep "covers /bin, which is a link into /usr on the base .* (merged /usr); rebuild the cryptex with 'rsr cryptex build' without --no-merged-usr" "$T/err"
	if ls "$R/var/lib/rsr/cryptexes/systemd/"*.cptx >/dev/null 2>&1; then fail "the refused image was installed"; fi
	ok "an unmerged image is refused on a merged base, with how to rebuild"
	expect 0 graft --root "$R" --add "$W/sd.cptx"
	expect 0 status --root "$R"
	assert_grep "^  Packages:  systemd:amd64 252.39-1~deb12u2$" "$T/out"
	expect 0 status --root "$R" --json
	python3 -c 'import json, sys
s = json.load(open(sys.argv[1]))["slots"]
assert [x["packages"] for x in s] == [["systemd:amd64 252.39-1~deb12u2"]], s' "$T/out" || fail "status --json packages"
	cmp "$W/sd-deb/lib/systemd/systemd" "$R/lib/systemd/systemd" || fail "/lib/systemd/systemd through the base's /lib link"
	cmp "$W/sd-deb/bin/systemctl" "$R/bin/systemctl" || fail "/bin/systemctl through the base's /bin link"
	expect 0 ungraft --root "$R"
	ok "the merged image grafts on the merged base; /lib/... and /bin/... reach its files; status names its package"
fi

# Packages made here: a good one, and each kind that must be refused.
mkdeb() { # OUT ENTRY... where ENTRY is dir:NAME, file:NAME, sym:NAME:TARGET, hard:NAME:TARGET, chr:NAME, fifo:NAME
	python3 - "$@" <<'PY'
import io, sys, tarfile
def tar(entries):
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w:gz", format=tarfile.GNU_FORMAT) as t:
        for e in entries:
            kind, name, *rest = e.split(":", 2)
            ti = tarfile.TarInfo(name)
            data = b""
            if kind == "dir": ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            elif kind == "sym": ti.type, ti.linkname = tarfile.SYMTYPE, rest[0]
            elif kind == "hard": ti.type, ti.linkname = tarfile.LNKTYPE, rest[0]
            elif kind == "chr": ti.type, ti.devmajor, ti.devminor = tarfile.CHRTYPE, 1, 3
            elif kind == "fifo": ti.type = tarfile.FIFOTYPE
            else: data = (name + "\n").encode(); ti.size, ti.mode = len(data), 0o644
            t.addfile(ti, io.BytesIO(data) if data else None)
    return b.getvalue()
def ar(members):
    out = b"!<arch>\n"
    for name, data in members:
        out += b"%-16s%-12d%-6d%-6d%-8o%-10d`\n" % (name.encode(), 0, 0, 0, 0o644, len(data))
        out += data + (b"\n" if len(data) % 2 else b"")
    return out
out, entries = sys.argv[1], sys.argv[2:]
pkg = out.rsplit("/", 1)[-1].split("_")[0]
ctl = ("Package: %s\nVersion: 1.0-1\nArchitecture: amd64\nMaintainer: t <t@example.org>\nDescription: t\n" % pkg).encode()
b = io.BytesIO()
with tarfile.open(fileobj=b, mode="w:gz", format=tarfile.GNU_FORMAT) as t:
    ti = tarfile.TarInfo("./"); ti.type, ti.mode = tarfile.DIRTYPE, 0o755; t.addfile(ti)
    ti = tarfile.TarInfo("./control"); ti.size = len(ctl); t.addfile(ti, io.BytesIO(ctl))
open(out, "wb").write(ar([("debian-binary", b"2.0\n"), ("control.tar.gz", b.getvalue()), ("data.tar.gz", tar(["dir:./"] + entries))]))
PY
}
mkdir -p "$W/debs"
mkdeb "$W/debs/good_1.0-1_amd64.deb" dir:./usr/ dir:./usr/share/ dir:./usr/share/good/ file:./usr/share/good/a \
	sym:./usr/share/good/link:/etc/passwd dir:./lib/ dir:./lib/good/ file:./lib/good/b
expect 0 cryptex build --deb "$W/debs/good_1.0-1_amd64.deb" -o "$W/good.cptx" --name good --version 1 "${common[@]}"
extract "$W/good.cptx" "$W/good"
[ "$(readlink "$W/good/usr/share/good/link")" = /etc/passwd ] && [ -f "$W/good/usr/lib/good/b" ] ||
	fail "the made package's files"
ok "a package made here builds; an absolute symbolic link is kept as it is"

refuse() { # MESSAGE DESCRIPTION ENTRY...
	local msg=$1 what=$2
	shift 2
	rm -f "$W/debs/bad_1.0-1_amd64.deb" "$W/bad.cptx"
	mkdeb "$W/debs/bad_1.0-1_amd64.deb" "$@"
	expect 1 cryptex build --deb "$W/debs/bad_1.0-1_amd64.deb" -o "$W/bad.cptx" --name bad --version 1 "${common[@]}"
	assert_grep "$msg" "$T/err"
	[ ! -e "$W/bad.cptx" ] || fail "$what: an image was written"
	[ -z "$(ls -A "$W" | grep '^\.rsr-build' || true)" ] || fail "$what: the staging area was left behind"
	ok "refused: $what"
}
refuse "bad_1.0-1_amd64.deb: refused: its entry './usr/../../escape' would leave the image's tree" \
	"an entry with .. that leaves the tree" dir:./usr/ file:./usr/../../escape
refuse "refused: its entry '/etc/evil' would leave the image's tree" "an absolute entry" file:/etc/evil
# tar makes the target relative to the tree, where it does not exist.
refuse "bad_1.0-1_amd64.deb: refused: dpkg-deb cannot extract it: tar: ./usr/x: Cannot hard link to 'etc/shadow'" \
	"a hard link out of the tree" \
	dir:./usr/ hard:./usr/x:../../etc/shadow
refuse "refused: /usr/null is a device node" "a device node" dir:./usr/ chr:./usr/null
refuse "refused: /usr/fifo is a FIFO or socket" "a FIFO" dir:./usr/ fifo:./usr/fifo
refuse "refused: it ships /toplevel at the top of the tree" "a file at the top" file:./toplevel
refuse "/usr/lib/x is already there from another input (with merged /usr" "/lib/x and /usr/lib/x in one package" \
	dir:./usr/ dir:./usr/lib/ file:./usr/lib/x dir:./lib/ file:./lib/x

# Files two inputs ship, the same package twice, something that is no package.
mkdeb "$W/debs/other_1.0-1_amd64.deb" dir:./usr/ dir:./usr/share/ dir:./usr/share/good/ file:./usr/share/good/a
expect 1 cryptex build --deb "$W/debs/good_1.0-1_amd64.deb" --deb "$W/debs/other_1.0-1_amd64.deb" -o "$W/bad.cptx" --name x --version 1 "${common[@]}"
assert_grep "other_1.0-1_amd64.deb: /usr/share/good/a is already there from another input" "$T/err"
expect 1 cryptex build --deb "$W/debs/good_1.0-1_amd64.deb" --deb "$W/debs/good_1.0-1_amd64.deb" -o "$W/bad.cptx" --name x --version 1 "${common[@]}"
assert_grep "package good:amd64 is given twice" "$T/err"
echo "not a package" >"$W/debs/junk.deb"
expect 1 cryptex build --deb "$W/debs/junk.deb" -o "$W/bad.cptx" --name x --version 1 "${common[@]}"
assert_grep "dpkg-deb failed with exit status 2: .*junk.deb.* is not a Debian format archive" "$T/err"
[ ! -e "$W/bad.cptx" ] || fail "an image was written"
ok "refused: a file two packages ship, a package given twice, a file that is no package"
expect 2 cryptex build -o "$W/bad.cptx" --name x --version 1 "${common[@]}"
assert_grep "^Usage: rsr cryptex build \[SRC_DIR\] \[--deb PKG.deb...\]" "$T/err"
ok "neither a directory nor a package is a usage error"
echo "1..$TESTS_RUN"
