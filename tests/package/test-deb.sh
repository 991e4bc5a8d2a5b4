#!/usr/bin/env bash
# The Debian packages: dpkg-buildpackage -us -uc -b in a copy of the tree
# under the scratch directory (the source tree stays clean), lintian with
# no errors, and what each package holds: rsr (command, units, manual
# pages, completion; depends on libcurl4, which it loads with dlopen),
# librsr0 (the shared library), librsr-dev (headers, static library,
# pkg-config file); maintainer scripts that enable the units but never
# start or stop them (starting rsr-graft.service grafts) and never mount.
. "$(dirname "$0")/../integration/libtest.sh"
for t in dpkg-buildpackage dh lintian; do
	command -v $t >/dev/null || skip_all "no $t (scripts/install-deps installs the packaging tools)"
done
. "$RSR_SRCDIR/tests/package/libdeb.sh"
deb_build "$T"
version=$deb_version
for p in rsr librsr0 librsr-dev; do
	[ -f "$T/${p}_${version}_amd64.deb" ] || [ -n "$(ls "$T/${p}_${version}_"*.deb 2>/dev/null)" ] || fail "no $p package"
done
ok "dpkg-buildpackage -us -uc -b built rsr, librsr0 and librsr-dev $version"

lintian --info "$T"/rsr_"$version"_*.changes >"$T/lintian" 2>&1 || true
if grep -q '^E: ' "$T/lintian"; then
	cat "$T/lintian"
	fail "lintian reports errors"
fi
grep -E '^(W|I): ' "$T/lintian" | sed 's/^/# lintian: /' || true
ok "lintian reports no errors"

deb() { ls "$T/${1}_${version}_"*.deb; }
dpkg-deb -f "$(deb rsr)" Depends | tr ',' '\n' | sed 's/^ *//' | grep -qx libcurl4 || fail "rsr does not depend on libcurl4"
dpkg-deb -f "$(deb rsr)" Depends | grep -q "librsr0 (>= $version)" || fail "rsr does not depend on librsr0"
dpkg-deb -c "$(deb rsr)" | awk '{ print $6 }' >"$T/rsr.list"
for f in ./usr/bin/rsr ./lib/systemd/system/rsr-graft.service ./lib/systemd/system/rsr-update.service \
	./lib/systemd/system/rsr-update.timer ./usr/share/man/man1/rsr-install.1.gz ./usr/share/man/man1/rsr-remove.1.gz \
	./usr/share/bash-completion/completions/rsr; do
	grep -qx "$f" "$T/rsr.list" || fail "rsr lacks $f"
done
dpkg-deb -c "$(deb librsr0)" | grep -q '/usr/lib/x86_64-linux-gnu/librsr.so.0 -> librsr.so.0\.' || fail "librsr0 lacks librsr.so.0"
dpkg-deb -c "$(deb librsr-dev)" | awk '{ print $6 }' >"$T/dev.list"
for f in ./usr/include/rsr/cryptex.h ./usr/lib/x86_64-linux-gnu/librsr.so ./usr/lib/x86_64-linux-gnu/librsr.a \
	./usr/lib/x86_64-linux-gnu/pkgconfig/librsr.pc; do
	grep -qx "$f" "$T/dev.list" || fail "librsr-dev lacks $f"
done
ok "rsr depends on libcurl4; each package holds its files"

mkdir -p "$T/ctrl"
dpkg-deb -e "$(deb rsr)" "$T/ctrl"
cat "$T"/ctrl/{preinst,postinst,prerm,postrm} 2>/dev/null >"$T/scripts" || true
grep -q "deb-systemd-helper enable 'rsr-graft.service'" "$T/scripts" || fail "rsr-graft.service is not enabled"
grep -q "deb-systemd-helper enable 'rsr-update.timer'" "$T/scripts" || fail "rsr-update.timer is not enabled"
if grep -nE 'deb-systemd-invoke|systemctl .*(start|stop|restart)|\brsr\b +(graft|ungraft|install|remove|update)|\bmount\b' "$T/scripts"; then
	fail "a maintainer script starts or stops a unit, runs rsr or mounts"
fi
ok "maintainer scripts enable the units and never start or stop them, run rsr or mount"

# The packaged library builds a program with pkg-config, the packaged rsr runs.
mkdir -p "$T/root"
for p in rsr librsr0 librsr-dev; do dpkg-deb -x "$(deb $p)" "$T/root"; done
export PKG_CONFIG_PATH=$T/root/usr/lib/x86_64-linux-gnu/pkgconfig PKG_CONFIG_SYSROOT_DIR=$T/root
(cd "$T" && ${CC:-cc} $(pkg-config --cflags librsr) -o user "$RSR_SRCDIR/tests/package/librsr-user.c" $(pkg-config --libs librsr)) ||
	fail "building against the packaged librsr"
LD_LIBRARY_PATH=$T/root/usr/lib/x86_64-linux-gnu "$T/root/usr/bin/rsr" --version | grep -qx "rsr $version" ||
	fail "the packaged rsr does not run"
ok "the packaged rsr runs and the packaged librsr-dev builds a program"
echo "1..$TESTS_RUN"
