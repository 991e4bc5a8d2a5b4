#!/usr/bin/env bash
# In the lab's guest (tests/vm/lab.sh), on the kernel flavour given as $1:
# grafting through dm-verity, a damaged image read as EIO and reported,
# a swap under dm-verity with no gap, and an ungraft that leaves no device.
. "$RSR_SRCDIR/tests/integration/libtest.sh"
. "$RSR_SRCDIR/tests/vm/lab.sh"
need_root
lab_setup "${1:-stock}"
lab_vendor
lab_disk "$T/disk.img"
lab_boot "$T/disk.img" step_verity
cat "$LAB_STEP_OUT"
O=$LAB_SHARE/out
# The mount stack as the guest had it, for the log (docs/architecture.md shows one).
sed 's/^/# /' "$O/verity-stack.txt"
# dmsetup's table has the verity target with the root hash and salt the
# cryptex was signed with.
root=$(json_get "$O/verity-info.json" 'd["root_hash"] if isinstance(d, dict) else d[0]["root_hash"]')
salt=$(json_get "$O/verity-info.json" 'd["salt"] if isinstance(d, dict) else d[0]["salt"]')
grep -E "^rsr-lab-[0-9a-f]{16}: 0 [0-9]+ verity 1 [0-9:]+ [0-9:]+ 4096 4096 [0-9]+ [0-9]+ sha256 $root $salt\$" \
	"$O/verity-table.txt" >/dev/null || { cat "$O/verity-table.txt"; fail "no dm-verity table with root $root and salt $salt"; }
ok "dmsetup table: verity target with the cryptex's root hash and salt"
grep -q "verity C" "$O/verity-dmstatus.txt" || fail "dm-verity did not mark the damaged device corrupted"
ok "a changed byte of the image gives EIO once the page cache is dropped"
lab_boot "$T/disk.img" step_swap "${RSR_LAB_SWAPS:-20}"
cat "$LAB_STEP_OUT"
ok "swaps under dm-verity have no gap; ungraft leaves no device, or status lists what stays held"
echo "1..$TESTS_RUN"
