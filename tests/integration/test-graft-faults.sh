#!/usr/bin/env bash
# Fault injection with strace: a mount call failing in the middle of a
# first graft or of a swap leaves the root exactly as it was (nothing
# mounted, or the previous graft still serving), and the next graft works.
. "$(dirname "$0")/libtest.sh"
need_root
if [ "${RSR_IN_NS:-}" != 1 ]; then
	command -v strace >/dev/null || skip_all "strace is not installed"
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
mkdir -p "$R/etc/rsr/keys.d" "$R/usr/share/t" "$R/opt/t"
cp "$W/key.pub" "$R/etc/rsr/keys.d/"
printf 'NAME=base\nBUILD_ID=f1\n' >"$R/etc/os-release"
echo base >"$R/usr/share/t/file"
echo base >"$R/opt/t/file"
for v in A B; do
	mkdir -p "$W/$v/usr/share/t" "$W/$v/opt/t"
	echo "$v" >"$W/$v/usr/share/t/file"
	echo "$v" >"$W/$v/opt/t/file"
	"$RSR" -q cryptex build "$W/$v" -o "$W/$v.cptx" --name os --version "$v" --base f1 --key "$W/key"
done

mounts() { findmnt -rn -o TARGET,FSTYPE,SOURCE | awk -v r="$R" 'index($1, r) == 1' | sort; }
# Runs rsr graft with the N-th call of SYSCALL failing with EIO; expects exit 1.
graft_failing() { # SYSCALL N
	set +e
	strace_nolsan -f -o /dev/null -e inject="$1":error=EIO:when="$2" "$RSR" graft --root "$R" >"$T/out" 2>"$T/err"
	local rc=$?
	set -e
	[ $rc = 1 ] || { cat "$T/err"; fail "graft with $1 #$2 failing: exit $rc, expected 1"; }
}
view() { echo "$(cat "$R/usr/share/t/file") $(cat "$R/opt/t/file")"; }

# First graft of two directories (usr, opt). move_mount calls: 1 the image,
# 2 and 3 the base bind and overlay of /opt, 4 and 5 those of /usr.
expect 0 graft --root "$R" --add "$W/A.cptx" --no-mount
for n in 1 2 3 4 5; do
	graft_failing move_mount $n
	assert_grep "Input/output error" "$T/err"
	sed "s/^/# first graft, move_mount #$n failing: /" "$T/err"
	[ -z "$(mounts)" ] || { mounts; fail "move_mount #$n failing left mounts"; }
	[ "$(view)" = "base base" ] || fail "move_mount #$n failing: base not intact"
	[ ! -e "$R/run/rsr/graft.json" ] || [ "$(losetup -l -n -O BACK-FILE | grep -c "$R")" = 0 ] ||
		fail "move_mount #$n failing left a loop device"
done
for n in 1 2; do
	graft_failing fsconfig $n
	[ -z "$(mounts)" ] || fail "fsconfig #$n failing left mounts"
done
ok "a failing mount call in a first graft leaves nothing mounted"

expect 0 graft --root "$R"
[ "$(view)" = "A A" ] || fail "graft after the failures"
mounts >"$W/mounts.A"
ok "the next graft works"

# graft --add that installs B and then fails to mount it: the slot's
# current image is A again, grafted, and status says nothing is pending.
before=$(readlink "$R/var/lib/rsr/cryptexes/os/current")
set +e
strace_nolsan -f -o /dev/null -e inject=move_mount:error=EIO:when=1 "$RSR" graft --root "$R" --add "$W/B.cptx" \
	>"$T/out" 2>"$T/err"
rc=$?
set -e
[ $rc = 1 ] || { cat "$T/err"; fail "graft --add with move_mount failing: exit $rc, expected 1"; }
assert_grep "nothing changed: every slot has its previous image again" "$T/err"
[ "$(readlink "$R/var/lib/rsr/cryptexes/os/current")" = "$before" ] || fail "a failed graft --add left B current"
[ "$(view)" = "A A" ] || fail "a failed graft --add: not A everywhere but '$(view)'"
expect 0 status --root "$R" --json
python3 -c 'import json, sys
[sl] = json.load(open(sys.argv[1]))["slots"]
assert sl["grafted"] and not sl["pending"] and sl["version"] == "A", sl' "$T/out" || fail "status after a failed graft --add"
ok "graft --add whose mount fails leaves the previous image current and grafted"

# Swap: 1 the new image, 2 the overlay of /opt beneath, 3 that of /usr
# beneath (after /opt was switched: /opt is switched back).
expect 0 graft --root "$R" --add "$W/B.cptx" --no-mount
for n in 1 2 3; do
	graft_failing move_mount $n
	sed "s/^/# swap, move_mount #$n failing: /" "$T/err"
	[ "$(view)" = "A A" ] || fail "move_mount #$n failing in a swap: not A everywhere but '$(view)'"
	mounts | sed 's/ [^ ]*$//' | sort >"$W/now"
	sed 's/ [^ ]*$//' "$W/mounts.A" | sort | diff - "$W/now" || fail "move_mount #$n failing in a swap changed the mounts"
done
for n in 1 2; do
	graft_failing umount2 $n
	sed "s/^/# swap, umount2 #$n failing: /" "$T/err"
	# The old stack still serves; the new one may stay hidden beneath it until ungraft.
	[ "$(view)" = "A A" ] || fail "umount2 #$n failing in a swap: not A everywhere but '$(view)'"
done
ok "a failing mount call in a swap leaves the previous graft serving (switched directories are switched back)"

expect 0 graft --root "$R"
[ "$(view)" = "B B" ] || fail "swap after the failures"
expect 0 status --root "$R" --json
python3 - "$T/out" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
[sl] = s["slots"]
assert sl["grafted"] and sl["grafted_version"] == "B", sl
assert len(s["grafted_paths"]) == 2, s
PY
ok "the next swap works and status agrees"

expect 0 ungraft --root "$R"
[ -z "$(mounts)" ] || fail "mounts left after ungraft"
echo "1..$TESTS_RUN"
