#!/usr/bin/env bash
# A program outside the tree builds against the installed library with
# pkg-config --cflags --libs librsr and runs: meson install into a DESTDIR
# under the scratch directory, PKG_CONFIG_PATH and PKG_CONFIG_SYSROOT_DIR
# pointing there, the compiler run outside the build tree.
. "$(dirname "$0")/../integration/libtest.sh"
: "${RSR_BUILDDIR:?}"
command -v pkg-config >/dev/null || skip_all "no pkg-config"
meson install -C "$RSR_BUILDDIR" --no-rebuild --destdir "$T/dest" >"$T/install.log" 2>&1 || {
	cat "$T/install.log"
	fail "meson install"
}
pc=$(find "$T/dest" -name librsr.pc | head -1)
[ -n "$pc" ] || fail "no librsr.pc installed"
export PKG_CONFIG_PATH=${pc%/librsr.pc} PKG_CONFIG_SYSROOT_DIR=$T/dest
cflags=$(pkg-config --cflags librsr)
libs=$(pkg-config --libs librsr)
[[ $libs == *-lrsr* ]] || fail "pkg-config --libs librsr: $libs"
# A sanitized build's library needs its runtime first: the program is built sanitized too.
san=
so=$(find "$T/dest" -name 'librsr.so.0' | head -1)
ldd "$so" >"$T/ldd-so"
if grep -q libasan "$T/ldd-so"; then san="-fsanitize=address,undefined"; fi
mkdir -p "$T/user"
cp "$RSR_SRCDIR/tests/package/librsr-user.c" "$T/user/"
(cd "$T/user" && ${CC:-cc} -Wall -Werror $san $cflags -o librsr-user librsr-user.c $libs) ||
	fail "building against the installed librsr ($cflags $libs)"
ok "a program builds with pkg-config --cflags --libs librsr ($cflags $libs)"
libdir=$(pkg-config --variable=libdir librsr) # with the sysroot in front
# The installed rsr makes a cryptex; the program checks and reads it through the installed library.
rsr_bin=$(find "$T/dest" -path '*/bin/rsr' | head -1)
[ -n "$rsr_bin" ] || fail "no rsr installed"
mkdir -p "$T/src/usr/share/t"
echo hello >"$T/src/usr/share/t/f"
LD_LIBRARY_PATH=$libdir "$rsr_bin" -q key generate -o "$T/key" >/dev/null 2>&1
LD_LIBRARY_PATH=$libdir "$rsr_bin" -q cryptex build "$T/src" -o "$T/t.cptx" --name t --version 1 --base 1 --key "$T/key"
hash=$(LD_LIBRARY_PATH=$libdir "$rsr_bin" cryptex info --json "$T/t.cptx" | python3 -c 'import json,sys; print(json.load(sys.stdin)["root_hash"])')
LD_LIBRARY_PATH=$libdir "$T/user/librsr-user" "$T/t.cptx" "$T/key.pub" >"$T/out"
# Through a file: grep -q may exit before ldd has written, and pipefail would count that.
LD_LIBRARY_PATH=$libdir ldd "$T/user/librsr-user" >"$T/ldd"
grep -q "librsr.so.0 => $T/dest" "$T/ldd" || { cat "$T/ldd"; fail "not linked to the installed librsr.so.0"; }
grep -qx "t 1 $hash" "$T/out" || fail "the program's output: $(cat "$T/out")"
grep -q "^librsr [0-9]" "$T/out" || fail "no version"
ok "it runs against the installed librsr.so.0 and reads a cryptex the installed rsr made"
echo "1..$TESTS_RUN"
