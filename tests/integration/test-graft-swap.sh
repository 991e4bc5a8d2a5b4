#!/usr/bin/env bash
# Zero-gap swap: while a slot is swapped 100 times between two images,
# readers in other processes resolve and read shadowed, unshadowed and
# cryptex-only files in a tight loop and must never fail nor read anything
# but the old or the new contents. Also two slots stacking in name order.
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
SWAPS=${RSR_SWAPS:-100}

"$RSR" key generate -o "$W/key" >/dev/null 2>&1
mkdir -p "$R/etc/rsr/keys.d" "$R/usr/share/swap" "$R/usr/lib/swap"
cp "$W/key.pub" "$R/etc/rsr/keys.d/"
printf 'NAME=base\nVERSION_ID=7\n' >"$R/etc/os-release"
echo base >"$R/usr/share/swap/shadowed"
echo base >"$R/usr/share/swap/unshadowed"
head -c 1048576 /dev/urandom >"$R/usr/lib/swap/big"
for v in A B; do
	mkdir -p "$W/$v/usr/share/swap" "$W/$v/usr/share/only-$v" "$W/$v/usr/lib/swap" "$W/$v/usr/share/both"
	echo "$v" >"$W/$v/usr/share/swap/shadowed"
	echo "$v" >"$W/$v/usr/share/both/file"
	echo "$v" >"$W/$v/usr/share/only-$v/file"
	{ head -c 1048576 /dev/urandom; echo "$v"; } >"$W/$v/usr/lib/swap/big"
	sha256sum <"$W/$v/usr/lib/swap/big" | cut -d' ' -f1 >"$W/big.$v"
	"$RSR" -q cryptex build "$W/$v" -o "$W/$v.cptx" --name os --version "$v" --base 7 --key "$W/key"
done
sha256sum <"$R/usr/lib/swap/big" | cut -d' ' -f1 >"$W/big.base"

# Base build from VERSION_ID when there is no BUILD_ID.
expect 0 graft --root "$R" --add "$W/A.cptx"
[ "$(cat "$R/usr/share/swap/shadowed")" = A ] || fail "first graft"
ok "graft A (base build from VERSION_ID)"

# Small files through bash builtins (no fork, tens of thousands of reads a
# second); the large file through sha256sum in a second reader.
small_reader() {
	local n=0 bad=0 a b c
	while [ ! -e "$W/stop" ]; do
		a=ERR b=ERR c=ERR
		read -r a <"$R/usr/share/swap/shadowed" || true
		read -r b <"$R/usr/share/swap/unshadowed" || true
		read -r c <"$R/usr/share/both/file" || true
		if [[ $a != [AB] || $b != base || $c != [AB] ]]; then
			bad=$((bad + 1))
			echo "read '$a' '$b' '$c'" >>"$W/bad.log"
		fi
		n=$((n + 1))
	done
	echo "$n $bad" >"$W/small.out"
}
big_reader() {
	local n=0 bad=0 h
	while [ ! -e "$W/stop" ]; do
		h=$(sha256sum <"$R/usr/lib/swap/big" 2>>"$W/bad.log" | cut -d' ' -f1)
		if [ "$h" != "$(cat "$W/big.A")" ] && [ "$h" != "$(cat "$W/big.B")" ]; then
			bad=$((bad + 1))
			echo "big: '$h'" >>"$W/bad.log"
		fi
		n=$((n + 1))
	done
	echo "$n $bad" >"$W/big.out"
}
small_reader &
sr=$!
big_reader &
br=$!
cleanup_hooks+=("touch '$W/stop'; kill $sr $br 2>/dev/null")
sleep 0.2

start=$(date +%s%N)
for i in $(seq "$SWAPS"); do
	if [ $((i % 2)) = 1 ]; then v=B; else v=A; fi
	"$RSR" -q graft --root "$R" --add "$W/$v.cptx" || fail "swap $i to $v failed"
	[ "$(cat "$R/usr/share/swap/shadowed")" = "$v" ] || fail "swap $i: not $v"
done
end=$(date +%s%N)
sleep 0.2
touch "$W/stop"
wait $sr $br
read -r sn sbad <"$W/small.out"
read -r bn bbad <"$W/big.out"
ms=$(((end - start) / 1000000))
echo "# $SWAPS swaps in $ms ms ($((ms / SWAPS)) ms each, verification included);" \
	"$sn small-file rounds (3 reads each), $bn reads of a 1 MiB file; failures: $sbad + $bbad"
if [ "$sbad" != 0 ] || [ "$bbad" != 0 ]; then
	head -20 "$W/bad.log"
	fail "readers saw failures or wrong contents during the swaps"
fi
[ "$sn" -gt "$SWAPS" ] || fail "the small-file reader made only $sn rounds"
ok "$SWAPS swaps: zero failed lookups or reads, only old or new contents"

n_erofs=$(findmnt -rn -o TARGET,FSTYPE | awk -v r="$R" 'index($1, r) == 1 && $2 == "erofs"' | wc -l)
n_ovl=$(findmnt -rn -o TARGET,FSTYPE | awk -v r="$R" 'index($1, r) == 1 && $2 == "overlay"' | wc -l)
[ "$n_erofs" = 1 ] && [ "$n_ovl" = 1 ] || fail "after the swaps: $n_erofs image and $n_ovl overlay mounts (want 1 and 1)"
for _ in $(seq 50); do [ "$(losetup -l -n -O BACK-FILE | grep -c "$R")" -le 1 ] && break; sleep 0.1; done
[ "$(losetup -l -n -O BACK-FILE | grep -c "$R")" = 1 ] || fail "loop devices of old images remain"
ok "no mounts or loop devices pile up"

# Two commands at once are serialised by the device lock (each waits for the other).
(for i in $(seq 10); do "$RSR" -q graft --root "$R" --add "$W/A.cptx" --wait || exit 1; done) &
c1=$!
(for i in $(seq 10); do "$RSR" -q graft --root "$R" --add "$W/B.cptx" --wait || exit 1; done) &
c2=$!
wait $c1 || fail "concurrent grafts (A) failed"
wait $c2 || fail "concurrent grafts (B) failed"
expect 0 graft --root "$R" --add "$W/$v.cptx"
[ "$(cat "$R/usr/share/swap/shadowed")" = "$v" ] || fail "after concurrent grafts"
n_mounts=$(findmnt -rn -o TARGET | awk -v r="$R" 'index($1, r) == 1' | wc -l)
[ "$n_mounts" = 3 ] || fail "after concurrent grafts: $n_mounts mounts under the root (want overlay, image, base)"
ok "concurrent grafts are serialised and leave one consistent stack"

# A second slot: "zz" is stacked above "os" (later name on top).
mkdir -p "$W/Z/usr/share/swap"
echo Z >"$W/Z/usr/share/swap/shadowed"
"$RSR" -q cryptex build "$W/Z" -o "$W/Z.cptx" --name zz --version 1 --base 7 --key "$W/key"
expect 0 graft --root "$R" --add "$W/Z.cptx"
[ "$(cat "$R/usr/share/swap/shadowed")" = Z ] || fail "slot zz is not above slot os"
[ "$(cat "$R/usr/share/both/file")" = "$v" ] || fail "slot os is not visible below zz"
[ "$(cat "$R/usr/share/swap/unshadowed")" = base ] || fail "base not visible below both"
expect 0 graft --root "$R" --remove zz
[ "$(cat "$R/usr/share/swap/shadowed")" = "$v" ] || fail "removing slot zz"
ok "two slots stack in name order; removing one leaves the other"

expect 0 ungraft --root "$R"
[ "$(cat "$R/usr/share/swap/shadowed")" = base ] || fail "ungraft"
echo "1..$TESTS_RUN"
