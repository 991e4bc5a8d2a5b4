#!/usr/bin/env bash
# I/O faults: every write, fallocate, fsync, rename, copy_file_range, symlinkat and mkdir of each
# state-changing command fails in turn with EIO and with ENOSPC, in rsr and
# in the programs it runs (strace -f -e inject). Each run must end with exit
# status 0 and the right result, or exit status 1 with a message and the
# output absent or the previous complete file; never a partial file, never a
# temporary file left behind. The first and last two calls of each fail, and
# between them every fourth (offset by one) under the sanitizers, where the
# default run (scripts/test) walks, or every second in a normal build run by
# hand; scripts/test --full (RSR_FULL=1) fails every call in both builds.
. "$(dirname "$0")/libtest.sh"
. "$RSR_SRCDIR/tests/fault/libfault.sh"
command -v strace >/dev/null || fail "strace is not installed (scripts/install-deps installs it)"
strace -f -qq -o /dev/null -e trace=write -e inject=write:error=EIO:when=1000 true 2>/dev/null ||
	skip_all "strace cannot trace here (no ptrace permission in this container?)"

SYSCALLS="write pwrite64 fallocate fsync fdatasync rename renameat renameat2 copy_file_range symlinkat linkat mkdir mkdirat"
ERRNOS="EIO ENOSPC"
if [ -z "${RSR_IO_STRIDE:-}" ] && [ "${RSR_FULL:-0}" != 1 ]; then
	if [ -n "${RSR_SANITIZE:-}" ] && [ "$RSR_SANITIZE" != none ]; then
		RSR_IO_STRIDE=4 RSR_IO_PHASE=1
	else
		RSR_IO_STRIDE=2 RSR_IO_PHASE=0
	fi
fi

mkdir -p "$T/src/usr/lib/x86_64-linux-gnu" "$T/src/usr/share/doc/fault"
head -c 200000 /dev/urandom >"$T/src/usr/lib/x86_64-linux-gnu/libfault.so.1.0"
ln -s libfault.so.1.0 "$T/src/usr/lib/x86_64-linux-gnu/libfault.so.1"
echo "fault injection" >"$T/src/usr/share/doc/fault/README"
"$RSR" key generate -o "$T/key" >/dev/null 2>&1
bargs=(--name fault --version 2 --base debian-12 --key "$T/key" --timestamp 1)
"$RSR" cryptex build "$T/src" -o "$T/ref.cptx" "${bargs[@]}" >/dev/null
"$RSR" cryptex build "$T/src" -o "$T/prev.cptx" --name fault --version 1 --base debian-12 --key "$T/key" \
	--timestamp 1 >/dev/null
mkdir "$T/o"

empty_o() { rm -rf "$T/o" && mkdir "$T/o"; }

# An mkfs.erofs that loses a write without saying so (as mkfs.erofs 1.5 does
# when writing the tail of a file fails): the build must refuse to sign it.
cat >"$T/lossy-mkfs" <<'SH'
#!/usr/bin/env bash
mkfs.erofs "$@" || exit
python3 - "${@: -2:1}" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
i = b.find(b"fault injection")
assert i >= 0, "README not found in the image"
b[i:i + 5] = b"FAULT"
open(p, "wb").write(b)
PY
SH
chmod +x "$T/lossy-mkfs"
expect 1 cryptex build "$T/src" -o "$T/o/x.cptx" "${bargs[@]}" --mkfs "$T/lossy-mkfs"
assert_grep "mkfs.erofs made an image that does not hold" "$T/err"
assert_grep "/usr/share/doc/fault/README: the content differs" "$T/err"
[ -z "$(dir_listing "$T/o")" ] || fail "a refused build left: $(dir_listing "$T/o" | tr '\n' ' ')"
ok "an image that lost a write in mkfs.erofs is refused before it is signed"
prev_o() { empty_o && cp "$T/prev.cptx" "$T/o/x.cptx"; }

# After a failure the output is what was there before, or (when only the
# directory fsync after the rename failed) the complete new file; after
# success it is the reproducible result. Nothing else is left in the directory.
check_output() { # RC PREVIOUS-OR-EMPTY
	local rc=$1 prev=$2
	if [ "$rc" = 0 ]; then
		cmp -s "$T/o/x.cptx" "$T/ref.cptx" || fail "a run that reported success wrote other bytes"
		[ "$(dir_listing "$T/o")" = x.cptx ] || fail "left behind: $(dir_listing "$T/o" | tr '\n' ' ')"
		return 0
	fi
	if [ -z "$prev" ] && [ -z "$(dir_listing "$T/o")" ]; then
		return 0
	fi
	[ "$(dir_listing "$T/o")" = x.cptx ] || fail "a failed run left: $(dir_listing "$T/o" | tr '\n' ' ')"
	cmp -s "$T/o/x.cptx" "$T/ref.cptx" && return 0
	[ -n "$prev" ] && cmp -s "$T/o/x.cptx" "$prev" && return 0
	fail "a failed run left a partial or foreign $T/o/x.cptx"
}
check_new() { check_output "$1" ""; }
check_replace() { check_output "$1" "$T/prev.cptx"; }

fault_io_walk "cryptex build (new output)" empty_o check_new "$SYSCALLS" "$ERRNOS" -- \
	cryptex build "$T/src" -o "$T/o/x.cptx" "${bargs[@]}"
fault_io_walk "cryptex build (replacing a previous build)" prev_o check_replace "$SYSCALLS" "$ERRNOS" -- \
	cryptex build "$T/src" -o "$T/o/x.cptx" "${bargs[@]}"

check_keygen() {
	if [ "$1" = 0 ]; then
		[ "$(dir_listing "$T/o")" = "$(printf 'k\nk.pub')" ] || fail "keys: $(dir_listing "$T/o" | tr '\n' ' ')"
		[ "$("$RSR" key id "$T/o/k" | cut -c1-64)" = "$("$RSR" key id "$T/o/k.pub" | cut -c1-64)" ] ||
			fail "the public key does not belong to the private key"
	elif grep -q "cannot write to standard output" "$T/err"; then
		# Only printing the key id failed: the keys are made and complete.
		check_keygen 0
	else
		[ -z "$(dir_listing "$T/o")" ] || fail "a failed key generation left: $(dir_listing "$T/o" | tr '\n' ' ')"
	fi
}
fault_io_walk "key generate" empty_o check_keygen "$SYSCALLS" "$ERRNOS" -- key generate -o "$T/o/k"

if "$RSR" patch --help >/dev/null 2>&1; then
	"$RSR" patch create "$T/prev.cptx" "$T/ref.cptx" -o "$T/fwd.rsrp" >/dev/null 2>&1 ||
		fail "rsr patch create failed without faults"
	fault_io_walk "patch apply (new output)" empty_o check_new "$SYSCALLS" "$ERRNOS" -- \
		patch apply "$T/prev.cptx" "$T/fwd.rsrp" -o "$T/o/x.cptx"
	# In place: the old image is the input and the output.
	fault_io_walk "patch apply (in place)" prev_o check_replace "$SYSCALLS" "$ERRNOS" -- \
		patch apply "$T/o/x.cptx" "$T/fwd.rsrp" -o "$T/o/x.cptx"
	# Create, forward and reverse: after a failure, nothing, the forward
	# patch alone (it is finished before the reverse one is begun) or, when
	# only the last directory fsync failed, both; never a partial patch.
	"$RSR" patch create "$T/ref.cptx" "$T/prev.cptx" -o "$T/rev.rsrp" >/dev/null 2>&1 ||
		fail "rsr patch create (reverse) failed without faults"
	check_create() {
		local l
		l=$(dir_listing "$T/o" | tr '\n' ' ')
		if [ "$1" = 0 ]; then
			[ "$l" = "f.rsrp r.rsrp " ] || fail "left behind: $l"
		else
			case $l in
			"" | "f.rsrp " | "f.rsrp r.rsrp ") ;;
			*) fail "a failed patch create left: $l" ;;
			esac
		fi
		[ ! -e "$T/o/f.rsrp" ] || cmp -s "$T/o/f.rsrp" "$T/fwd.rsrp" || fail "a partial or foreign forward patch"
		[ ! -e "$T/o/r.rsrp" ] || cmp -s "$T/o/r.rsrp" "$T/rev.rsrp" || fail "a partial or foreign reverse patch"
	}
	fault_io_walk "patch create" empty_o check_create "$SYSCALLS" "$ERRNOS" -- \
		patch create "$T/prev.cptx" "$T/ref.cptx" -o "$T/o/f.rsrp" --reverse "$T/o/r.rsrp"
fi

# Install and remove on a device root (rsr graft --no-mount): the slot's
# current image is the old one or the new one, complete, and nothing else is
# left in the slot directory.
fault_make_root "$T/key"
check_install() { if [ "$1" = 0 ]; then check_slot "$T/os2.cptx"; else check_slot "$T/os1.cptx" "$T/os2.cptx"; fi; }
check_remove() { if [ "$1" = 0 ]; then check_slot none; else check_slot none "$T/os1.cptx"; fi; }
fault_io_walk "graft --add (install)" fault_root_reset check_install "$SYSCALLS" "$ERRNOS" -- graft --root "$T/root" --add "$T/os2.cptx" --no-mount
fault_io_walk "graft --remove" fault_root_reset check_remove "$SYSCALLS" "$ERRNOS" -- graft --root "$T/root" --remove os --no-mount

# Install and remove a response (no grafting): the device is on the base or
# on (a), completely, after the failure and the recovery any rsr command does.
if [ -d "$RSR_CORPUS/debs" ]; then
	fault_response_setup
	fault_io_walk "install" fault_dev_base check_install_a "$SYSCALLS" "$ERRNOS" -- install "$V/a" --root "$T/dev" --no-graft
	fault_io_walk "remove" fault_dev_a check_remove_a "$SYSCALLS" "$ERRNOS" -- remove --root "$T/dev" --no-graft
else
	echo "# SKIP install and remove: the corpus is not at $RSR_CORPUS"
fi

echo "# $FAULT_POINTS I/O faults in all"
echo "1..$TESTS_RUN"
