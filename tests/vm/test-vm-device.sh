#!/usr/bin/env bash
# In the lab's guest, on the kernel flavour given as $1: the base images
# grafted at boot by rsr-graft.service before ordinary services; a response
# installed, kept across a reboot, removed, and the base back after the
# next; nginx (linked to libssl3) named as running old code and restarted
# through systemd; and rsr-update.timer installing a response from a
# repository nginx serves, by itself, restarting nginx as the policy says.
. "$RSR_SRCDIR/tests/integration/libtest.sh"
. "$RSR_SRCDIR/tests/vm/lab.sh"
need_root
lab_setup "${1:-stock}"
lab_vendor
lab_repo
lab_disk "$T/disk.img"
for step in step_boot_setup step_boot_base step_boot_a step_boot_removed step_update_timer; do
	lab_boot "$T/disk.img" "$step"
	cat "$LAB_STEP_OUT"
	ok "$step"
done
echo "1..$TESTS_RUN"
