#!/usr/bin/env bash
# In the lab's guest, on the kernel flavour given as $1: rsr's Debian
# packages (built here with dpkg-buildpackage) installed with dpkg on a
# Debian 12 that has no rsr, the device enrolled with rsr enroll, the base
# images grafted, and grafted again at boot by the packaged units.
. "$RSR_SRCDIR/tests/integration/libtest.sh"
. "$RSR_SRCDIR/tests/vm/lab.sh"
. "$RSR_SRCDIR/tests/package/libdeb.sh"
need_root
for t in dpkg-buildpackage dh; do
	command -v $t >/dev/null || fail "no $t (scripts/install-deps installs the packaging tools)"
done
lab_setup "${1:-stock}"
lab_vendor
lab_repo
# The unit tests ran in the package test; here only the packages are needed.
DEB_BUILD_OPTIONS=nocheck deb_build "$T/deb"
mkdir -p "$LAB_SHARE/data/debs"
cp "$T"/deb/librsr0_"$deb_version"_*.deb "$T"/deb/rsr_"$deb_version"_*.deb "$LAB_SHARE/data/debs/"
ok "dpkg-buildpackage built rsr and librsr0 $deb_version"
LAB_INSTALL=none lab_disk "$T/disk.img"
for step in step_deb_install step_deb_boot; do
	lab_boot "$T/disk.img" "$step"
	cat "$LAB_STEP_OUT"
	ok "$step"
done
echo "1..$TESTS_RUN"
