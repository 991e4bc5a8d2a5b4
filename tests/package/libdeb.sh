# Builds the Debian packages of the tree at $RSR_SRCDIR: deb_build OUTDIR
# [dpkg-buildpackage options...] runs dpkg-buildpackage -us -uc -b in a
# copy of the tree under OUTDIR (the source tree stays clean), so the .deb
# files land in OUTDIR. Sets deb_version. Sourced after libtest.sh.
deb_build() { # OUTDIR [options...]
	local out=$1 src before after
	shift
	deb_version=$(sed -n '1s/^rsr (\([^)]*\)).*/\1/p' "$RSR_SRCDIR/debian/changelog")
	[ -n "$deb_version" ] || fail "no version in debian/changelog"
	src=$out/rsr-$deb_version
	mkdir -p "$src"
	if git -C "$RSR_SRCDIR" rev-parse --git-dir >/dev/null 2>&1; then
		(cd "$RSR_SRCDIR" && git ls-files -z --cached --others --exclude-standard | xargs -0 tar -cf - --no-recursion) |
			tar -xf - -C "$src"
	else
		tar -C "$RSR_SRCDIR" --exclude='./build*' --exclude=./.git -cf - . | tar -xf - -C "$src"
	fi
	before=$(cd "$RSR_SRCDIR" && git status --porcelain 2>/dev/null || true)
	(cd "$src" && dpkg-buildpackage -us -uc -b "$@") >"$out/build.log" 2>&1 || {
		tail -40 "$out/build.log"
		fail "dpkg-buildpackage -us -uc -b"
	}
	after=$(cd "$RSR_SRCDIR" && git status --porcelain 2>/dev/null || true)
	[ "$before" = "$after" ] || fail "the source tree changed: $after"
}
