#!/usr/bin/env bash
# In the lab's guest, on the kernel flavour given as $1: real power cuts.
# qemu is killed with SIGKILL while `rsr install` (a) -> (b) and `rsr
# remove` (b) -> base run, each frozen just after one of its fsync, rename,
# link or unlink calls, at RSR_LAB_CUTS points spread evenly over each
# operation (4 by default, as scripts/test runs it; --full: 20); the guest
# writes nothing back but what is synced. After each cut the guest boots,
# rsr-graft.service recovers, and
# the device must be on the old or the new response, every image verifying
# and grafted; after the last, install and remove work again.
. "$RSR_SRCDIR/tests/integration/libtest.sh"
. "$RSR_SRCDIR/tests/vm/lab.sh"
need_root
CUTS=${RSR_LAB_CUTS:-4}
lab_setup "${1:-stock}"
# s1, s2 for counting; s3..s(2N+2) for the install cuts (from s(2i+1) to
# s(2i+2)); s(2N+3)..s(3N+2) to remove at the remove cuts; one more after.
lab_series $((3 * CUTS + 3))
lab_disk "$T/disk.img"
lab_boot "$T/disk.img" step_cut_setup
cat "$LAB_STEP_OUT"
O=$LAB_SHARE/out

# Points spread evenly over each operation's calls, first and last included.
pick_points() { # FILE COUNT
	python3 - "$1" "$2" <<'PY'
import sys
pts = open(sys.argv[1]).read().split("\n")
pts = [p for p in pts if p.strip()]
k = int(sys.argv[2])
if len(pts) <= k:
    sel = pts
else:
    sel = [pts[round(i * (len(pts) - 1) / (k - 1))] for i in range(k)]
print("\n".join(sel))
PY
}
prev_from=- prev_to=- cuts=0 old=0 new=0
tally() { # the result of the cut before this boot
	local r=$O/cut-$LAB_BOOTS.result
	[ -f "$r" ] || return 0
	if [ "$(cat "$r")" = "$prev_from" ]; then old=$((old + 1)); else new=$((new + 1)); fi
}
i=0
while read -r sc n; do
	i=$((i + 1))
	from=s$((2 * i + 1)) to=s$((2 * i + 2))
	lab_cut "$T/disk.img" step_cut "$prev_from" "$prev_to" install "$from" "$to" "$sc" "$n"
	tally
	prev_from=$from prev_to=$to cuts=$((cuts + 1))
done < <(pick_points "$O/points-install.txt" "$CUTS")
j=0
while read -r sc n; do
	j=$((j + 1))
	from=s$((2 * CUTS + 2 + j))
	lab_cut "$T/disk.img" step_cut "$prev_from" "$prev_to" remove "$from" base "$sc" "$n"
	tally
	prev_from=$from prev_to=base cuts=$((cuts + 1))
done < <(pick_points "$O/points-remove.txt" "$CUTS")
lab_boot "$T/disk.img" step_cut_final "$prev_from" "$prev_to" s$((3 * CUTS + 3))
cat "$LAB_STEP_OUT"
tally
echo "# power cuts: $cuts ($old recovered to the old state, $new to the new one)"
[ "$cuts" -ge $((2 * CUTS)) ] || fail "only $cuts cut points"
ok "$cuts power cuts during install and remove: each recovered to the old or the new response"
echo "1..$TESTS_RUN"
