#!/usr/bin/env bash
# rsr graft/ungraft/status on a scratch root whose base is the old libssl3
# tree: the new tree grafted over it shows the new files, unshadowed base
# files stay, whiteouts hide base files, a swap keeps mappers of the old
# image listed, and ungraft goes back to the bare base. Runs in a private
# mount namespace; the host's mounts are never touched.
. "$(dirname "$0")/libtest.sh"
need_root
if [ "${RSR_IN_NS:-}" != 1 ]; then
	grep -qw erofs /proc/filesystems || modprobe erofs 2>/dev/null || skip_all "no EROFS in this kernel"
	grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || skip_all "no overlayfs in this kernel"
	[ -e /dev/loop-control ] || skip_all "no /dev/loop-control"
	unshare -m --propagation private true || skip_all "cannot make a private mount namespace"
	pair=$(corpus_pair libssl3)
	RSR_IN_NS=1 RSR_NS_DIR=$T RSR_PAIR=$pair unshare -m --propagation private "$0"
	exit
fi
W=$RSR_NS_DIR
pair=$RSR_PAIR
R=$W/root
lib=usr/lib/x86_64-linux-gnu

# Mounts of the root, as "target fstype" lines (none of the host's).
mounts_of_root() { findmnt -rn -o TARGET,FSTYPE | awk -v r="$R" 'index($1, r) == 1' | sort; }

"$RSR" key generate -o "$W/key" >/dev/null 2>&1
mkdir -p "$R/etc/rsr/keys.d" "$R/usr/share/base-only"
cp "$W/key.pub" "$R/etc/rsr/keys.d/vendor.pub"
cp -a "$pair/old/usr/." "$R/usr/"
echo "base only" >"$R/usr/share/base-only/file"
echo "to be hidden" >"$R/usr/share/base-only/hidden"
printf 'PRETTY_NAME="rsr test base"\nVERSION_ID=1\nBUILD_ID=test-1\n' >"$R/etc/os-release"
(cd "$R/usr" && find . -type f | sort | xargs sha256sum) >"$W/base.sums"

# The new tree, plus a file only the cryptex has and a whiteout for a base file.
mkdir -p "$W/src"
cp -a "$pair/new/usr" "$W/src/"
mkdir -p "$W/src/usr/share/base-only" "$W/src/usr/share/cryptex-only"
echo "from the cryptex" >"$W/src/usr/share/cryptex-only/file"
whiteout=0
if mknod "$W/src/usr/share/base-only/hidden" c 0 0 2>/dev/null; then whiteout=1; fi
"$RSR" -q cryptex build "$W/src" -o "$W/new.cptx" --name libssl3 --version 3.0.22-1~deb12u2 --base test-1 \
	--key "$W/key" || fail "cryptex build with a whiteout failed"
"$RSR" -q cryptex build "$pair/old" -o "$W/old.cptx" --name libssl3 --version 3.0.20-1~deb12u2 --base test-1 \
	--key "$W/key"

expect 0 graft --root "$R" --add "$W/new.cptx"
assert_grep "installed in slot 'libssl3'" "$T/err"
for f in $(cd "$pair/new" && find . -type f); do
	cmp -s "$R/$f" "$pair/new/$f" || fail "$f seen through the graft is not the new tree's"
done
[ "$(cat "$R/usr/share/base-only/file")" = "base only" ] || fail "unshadowed base file is gone"
[ "$(cat "$R/usr/share/cryptex-only/file")" = "from the cryptex" ] || fail "file only in the cryptex is missing"
if [ $whiteout = 1 ]; then
	[ ! -e "$R/usr/share/base-only/hidden" ] || fail "the cryptex's whiteout did not hide the base file"
fi
ok "grafted: the new tree's hashes, unshadowed base files, files only in the cryptex$([ $whiteout = 1 ] && echo ', whiteouts')"

mounts_of_root >"$W/mounts"
assert_grep "^$R/usr overlay$" "$W/mounts"
assert_grep "^$R/run/rsr/images/libssl3-[0-9a-f]* erofs$" "$W/mounts"
assert_grep "^$R/run/rsr/base/usr " "$W/mounts"
findmnt -rn -o OPTIONS "$R/run/rsr/images/"libssl3-* | grep -q 'ro,nosuid,nodev' || fail "image is not mounted ro,nosuid,nodev"
touch "$R/usr/share/x" 2>/dev/null && fail "the grafted /usr is writable"
ls "$R/var/lib/rsr/cryptexes/libssl3" >"$W/ls"
assert_grep '^current$' "$W/ls"
[ "$(readlink "$R/var/lib/rsr/cryptexes/libssl3/current")" = "$(grep -v current "$W/ls")" ] || fail "current symlink"
ok "mount stack: read-only overlay on /usr, image ro,nosuid,nodev under run/rsr, base bind; current symlink"

expect 0 status --root "$R"
assert_grep "Base: *rsr test base 1 (build test-1)" "$T/out"
assert_grep "Version: *3.0.22-1~deb12u2" "$T/out"
assert_grep "State: *grafted" "$T/out"
assert_grep "Mounted: *$R/run/rsr/images/libssl3-.* from /dev/loop[0-9]* (no dm-verity\|Mounted: .*(dm-verity" "$T/out"
assert_grep "Grafted: *$R/usr" "$T/out"
assert_grep "no process runs code from superseded images" "$T/out"
if [ ! -e /dev/mapper/control ]; then assert_grep "Verity: *not available in this kernel" "$T/out"; fi
expect 0 status --root "$R" --json
python3 - "$T/out" "$R" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); r = sys.argv[2]
assert s["base"] == {"name": "rsr test base", "version": "1", "build": "test-1"}, s["base"]
[sl] = s["slots"]
assert sl["slot"] == "libssl3" and sl["grafted"] and not sl["pending"] and sl["covers"] == ["usr"], sl
assert len(sl["root_hash"]) == 64 and sl["mount"].startswith(r + "/run/rsr/images/"), sl
assert s["grafted_paths"] == [r + "/usr"] and s["stale_processes"] == [], s
[ov] = s["overlays"]
assert ov["path"] == r + "/usr" and ov["layers_option"] in ("lowerdir+", "lowerdir") and ov["stacked"] == 0, ov
PY
ok "status shows base, slot, version, root hash, mount, verity, grafted paths (text and JSON)"

expect 0 graft --root "$R"
assert_grep "nothing to change" "$T/err"
ok "graft again with nothing new changes nothing"

# A process that maps the grafted library, then a swap to the old tree.
python3 -c 'import mmap, sys, time
f = open(sys.argv[1], "rb"); m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
open(sys.argv[2], "w").write("ready"); time.sleep(600)' "$R/$lib/libssl.so.3" "$W/ready" &
holder=$!
cleanup_hooks+=("kill $holder 2>/dev/null")
for _ in $(seq 100); do [ -e "$W/ready" ] && break; sleep 0.1; done
expect 0 graft --root "$R" --add "$W/old.cptx"
cmp "$R/$lib/libssl.so.3" "$pair/old/$lib/libssl.so.3" || fail "swap did not show the old tree"
held=$(awk '/libssl.so.3/ {print $1; exit}' "/proc/$holder/maps")
cmp "/proc/$holder/map_files/$held" "$pair/new/$lib/libssl.so.3" || fail "the running process lost its mapping"
expect 0 status --root "$R"
assert_grep "Version: *3.0.20-1~deb12u2" "$T/out"
assert_grep "^ *$holder python3 .*libssl.so.3 (from the graft of /usr (libssl3 3.0.22-1~deb12u2, swapped out))" "$T/out"
[ "$(mounts_of_root | grep -c erofs)" = 1 ] || fail "the old image is still attached under run/rsr"
ls "$R/var/lib/rsr/cryptexes/libssl3" | grep -c cptx >"$W/n"
[ "$(cat "$W/n")" = 1 ] || fail "expected only the grafted current image: the swapped-out one goes once the swap is done"
ok "swap: new stack visible, the old mapping intact, the process listed as running superseded code, the old image file gone"

expect 0 graft --root "$R" --add "$W/old.cptx"
[ "$(ls "$R/var/lib/rsr/cryptexes/libssl3" | grep -c cptx)" = 1 ] || fail "superseded image files not removed"
ok "installing again keeps only the current image file"

# A process working in the grafted /usr keeps that graft alive without running its code.
(cd "$R/usr/share" && exec sleep 600) &
sitter=$!
cleanup_hooks+=("kill $sitter 2>/dev/null")
# One in a mount namespace of its own where the graft stays attached (as a
# service's ProtectSystem= namespace keeps it): it names whole paths.
rm -f "$W/ns-ready"
unshare -m --propagation slave sh -c 'mount --bind "$1/usr" "$1/usr" && exec python3 -c "import mmap, sys, time
f = open(sys.argv[1], \"rb\"); m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
open(sys.argv[2], \"w\").write(\"ready\"); time.sleep(600)" "$1/$2/libssl.so.3" "$3"' sh "$R" "$lib" "$W/ns-ready" &
nsholder=$!
cleanup_hooks+=("kill $nsholder 2>/dev/null")
for _ in $(seq 100); do [ -e "$W/ns-ready" ] && break; sleep 0.1; done
[ -e "$W/ns-ready" ] || fail "the process in its own mount namespace did not start"
expect 0 ungraft --root "$R"
[ -z "$(mounts_of_root)" ] || { mounts_of_root; fail "mounts left after ungraft"; }
(cd "$R/usr" && find . -type f | sort | xargs sha256sum) | cmp - "$W/base.sums" || fail "base differs after ungraft"
[ ! -e "$R/usr/share/cryptex-only" ] || fail "cryptex file visible after ungraft"
cmp "/proc/$holder/map_files/$held" "$pair/new/$lib/libssl.so.3" || fail "the running process lost its mapping"
expect 0 status --root "$R" --json
python3 - "$T/out" "$holder" "$sitter" "$R" "$nsholder" "$lib" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
holder, sitter, root, nsholder, lib = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), sys.argv[6]
assert s["grafted_paths"] == [] and not s["slots"][0]["grafted"], s
stale = {p["pid"]: p["file"] for p in s["stale_processes"]}
assert set(stale) == {holder, nsholder}, s["stale_processes"]
assert stale[nsholder] == f"{root}/{lib}/libssl.so.3", stale
how = {h["pid"]: (h["how"], h["file"]) for h in s["holders"]}
assert how.get(holder, ("",))[0] == "mapping", s["holders"]
assert how.get(nsholder) == ("mapping", f"{root}/{lib}/libssl.so.3"), s["holders"]
assert how.get(sitter) == ("working directory", root + "/usr/share"), s["holders"]
held = s["held_devices"]
assert held and all(h["device"].startswith("/dev/loop") and h["name"] is None for h in held), held
assert all(h["image"].startswith(root + "/var/lib/rsr/cryptexes/libssl3/") for h in held), held
PY
expect 0 status --root "$R"
assert_grep "^Held: .* device.* of retired grafts" "$T/out"
assert_grep "^ *$sitter sleep.*: working directory $R/usr/share\$" "$T/out"
expect 0 ungraft --root "$R"
assert_grep "nothing was grafted" "$T/err"
ok "ungraft: bare base, nothing mounted; processes keep their files, stay listed, and the devices they hold are named"

kill $holder $sitter $nsholder
wait $holder $sitter $nsholder 2>/dev/null || true
for _ in $(seq 50); do losetup -l -n -O BACK-FILE | grep -q "$R" || break; sleep 0.1; done
losetup -l -n -O BACK-FILE | grep -q "$R" && fail "loop devices remain after the last user went"
expect 0 status --root "$R"
assert_grep "no process runs code" "$T/out"
assert_no_grep "^Held:\|^Holders:" "$T/out"
ok "loop devices go with their last user, and status lists none held"

expect 0 graft --root "$R" --remove libssl3 --no-mount
[ ! -e "$R/var/lib/rsr/cryptexes/libssl3/current" ] || fail "--remove left the current image"
expect 0 graft --root "$R"
[ -z "$(mounts_of_root)" ] || fail "a removed slot was grafted"
expect 1 graft --root "$R" --remove libssl3
assert_grep "no current image" "$T/err"
ok "--remove drops a slot's current image"

# One cryptex covering two directories; one covering a directory the base lacks.
mkdir -p "$R/opt/vendor" "$W/multi/opt/vendor" "$W/multi/usr/share/multi" "$W/srv/srv/x"
echo base >"$R/opt/vendor/file"
echo multi >"$W/multi/opt/vendor/file"
echo multi >"$W/multi/usr/share/multi/file"
echo x >"$W/srv/srv/x/file"
"$RSR" -q cryptex build "$W/multi" -o "$W/multi.cptx" --name multi --version 1 --base test-1 --key "$W/key"
"$RSR" -q cryptex build "$W/srv" -o "$W/srv.cptx" --name srv --version 1 --base test-1 --key "$W/key"
expect 0 graft --root "$R" --add "$W/multi.cptx"
[ "$(cat "$R/opt/vendor/file")" = multi ] && [ "$(cat "$R/usr/share/multi/file")" = multi ] ||
	fail "a cryptex covering /opt and /usr is not visible in both"
[ "$(mounts_of_root | grep -c overlay)" = 2 ] || fail "expected one overlay on /opt and one on /usr"
# Covered directories are an allow-list: /usr and /opt, others by the device's own graft.conf.
expect 1 graft --root "$R" --add "$W/srv.cptx"
assert_grep "covers /srv, which this device does not allow to be grafted over (allowed: /usr, /opt); a line 'cover = /srv' in $R/etc/rsr/graft.conf allows it" "$T/err"
[ ! -e "$R/var/lib/rsr/cryptexes/srv" ] || fail "a refused image was installed"
printf '# rsr graft.conf\ncover = /srv\n' >"$R/etc/rsr/graft.conf"
expect 1 graft --root "$R" --add "$W/srv.cptx"
assert_grep "covers /srv, which is not a directory of the base" "$T/err"
assert_grep "nothing changed: every slot has its previous image again" "$T/err"
[ ! -e "$R/var/lib/rsr/cryptexes/srv/current" ] || fail "a graft that failed left its image current"
printf 'cover = /etc\n' >"$R/etc/rsr/graft.conf"
expect 1 graft --root "$R" --add "$W/srv.cptx"
assert_grep "$R/etc/rsr/graft.conf:1: not 'cover = /DIR'" "$T/err"
rm "$R/etc/rsr/graft.conf"
# One command is one change: a later --add that fails puts back the slot an
# earlier one switched, keeps the grafted image current and its file.
mkdir -p "$W/multi2/usr/share/multi" && echo 2 >"$W/multi2/usr/share/multi/file"
"$RSR" -q cryptex build "$W/multi2" -o "$W/multi2.cptx" --name multi --version 2 --base test-1 --key "$W/key"
before=$(readlink "$R/var/lib/rsr/cryptexes/multi/current")
expect 1 graft --root "$R" --add "$W/multi2.cptx" --add "$W/srv.cptx"
assert_grep "multi2.cptx installed in slot 'multi'" "$T/err"
assert_grep "nothing changed: every slot has its previous image again" "$T/err"
[ "$(readlink "$R/var/lib/rsr/cryptexes/multi/current")" = "$before" ] || fail "a failed graft left the slot switched"
[ -f "$R/var/lib/rsr/cryptexes/multi/$before" ] || fail "a failed graft removed the grafted image"
[ "$(ls "$R/var/lib/rsr/cryptexes/multi" | grep -c cptx)" = 1 ] || fail "a failed graft left its image in the slot"
[ "$(cat "$R/usr/share/multi/file")" = multi ] || fail "a failed graft changed what is grafted"
expect 0 status --root "$R" --json
python3 -c 'import json, sys
s = {x["slot"]: x for x in json.load(open(sys.argv[1]))["slots"]}
assert "srv" not in s and s["multi"]["grafted"] and s["multi"]["version"] == "1", s' "$T/out"
expect 0 ungraft --root "$R"
[ "$(cat "$R/opt/vendor/file")" = base ] || fail "/opt not back to base"
[ -z "$(mounts_of_root)" ] || fail "mounts left after ungraft"
expect 0 graft --root "$R" --remove multi --no-mount
ok "a cryptex covering two directories grafts both; /srv only where graft.conf allows it; one covering a directory the base lacks is refused and leaves every slot as it was"

expect 2 graft --root "$R" extra
assert_grep "^rsr: see 'rsr graft --help'$" "$T/err"
expect 2 status --bogus
assert_grep "^rsr status: unrecognized option '--bogus'$" "$T/err"
assert_grep "^rsr: see 'rsr status --help'$" "$T/err"
expect 2 cryptex info --bogus
assert_grep "^rsr cryptex info: unrecognized option '--bogus'$" "$T/err"
[ "$(grep -c "see 'rsr" "$T/err")" = 1 ] || fail "one hint, naming the verb: $(cat "$T/err")"
assert_grep "^rsr: see 'rsr cryptex info --help'$" "$T/err"
expect 2 graft --wait=soon
assert_grep "a number of seconds" "$T/err"
expect 0 graft --help
expect 0 status --help
expect 0 ungraft --help
expect 0 restart-services --help
ok "usage errors exit 2 and say which --help to read; --help exits 0"
echo "1..$TESTS_RUN"
