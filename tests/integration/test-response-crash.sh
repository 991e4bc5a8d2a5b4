#!/usr/bin/env bash
# Crash harness: `rsr install` (a) -> (b), `rsr remove` (b) -> base and
# `rsr install` base -> (b) are
# killed with SIGKILL at every write, fsync, rename, link and unlink they make
# (strace -e inject=SYSCALL:signal=KILL:when=N, one point per run). After each
# kill, any rsr command recovers; the device is then on exactly the old or
# exactly the new response, every image verifies, and the operation run again
# succeeds. Prints the number of points tried. Under the sanitizers, where
# the default run (scripts/test) runs it, it kills at every fourth point
# (offset by one); in a normal build run by hand at every third;
# scripts/test --full (RSR_FULL=1), or RSR_CRASH_STRIDE=1, at every one.
. "$(dirname "$0")/libtest.sh"
. "$(dirname "$0")/libresponse.sh"
need_root
command -v strace >/dev/null || fail "strace is not installed"

vendor_setup
if [ -n "${RSR_CRASH_STRIDE:-}" ]; then
	STRIDE=$RSR_CRASH_STRIDE PHASE=${RSR_CRASH_PHASE:-0}
elif [ "${RSR_FULL:-0}" = 1 ]; then
	STRIDE=1 PHASE=0
elif [ -n "${RSR_SANITIZE:-}" ] && [ "$RSR_SANITIZE" != none ]; then
	STRIDE=4 PHASE=1
else
	STRIDE=3 PHASE=0
fi
syscalls="write pwrite64 fsync fdatasync rename renameat renameat2 linkat symlinkat unlink unlinkat mkdir mkdirat copy_file_range ftruncate"
P=$T/pristine
D=$T/dev

verify_images() {
	local f
	for f in "$D"/var/lib/rsr/cryptexes/*/current; do
		"$RSR" -q cryptex verify "$f" --pubkey "$V/key.pub" || { echo "image $f does not verify" >&2; return 1; }
	done
}

# crash_op NAME FROM TO -- rsr ARGS...: kills the operation at each point.
crash_op() {
	local name=$1 from=$2 to=$3
	shift 4
	rm -rf "$D" && cp -a "$P/$from" "$D"
	# Count each system call of the set in one clean run.
	strace_nolsan -f -qq -c -U name,calls -e trace="${syscalls// /,}" -o "$T/count" "$RSR" -q "$@" >/dev/null 2>&1 ||
		fail "$name: the clean run failed"
	device_is "$D" "$to" || fail "$name: the clean run did not reach $to"
	local points=0 old=0 new=0 sc n calls
	while read -r sc calls; do
		case $sc in ''|syscall|-*|total) continue ;; esac
		[[ $calls =~ ^[0-9]+$ ]] || continue
		for n in $(seq 1 "$calls"); do
			SEEN=$((SEEN + 1))
			[ $(((SEEN - PHASE) % STRIDE)) = 0 ] || continue
			rm -rf "$D" && cp -a "$P/$from" "$D"
			set +e
			strace_nolsan -f -qq -o /dev/null -e trace="$sc" -e inject="$sc":signal=KILL:when="$n" "$RSR" -q "$@" >/dev/null 2>&1
			set -e
			# Any rsr command first finishes or rolls back.
			"$RSR" -q status --root "$D" >/dev/null 2>"$T/rec.err" || { cat "$T/rec.err"; fail "$name: recovery failed after $sc #$n"; }
			if device_is "$D" "$from" 2>/dev/null; then
				old=$((old + 1))
			elif device_is "$D" "$to" 2>"$T/why"; then
				new=$((new + 1))
			else
				cat "$T/why" >&2
				fail "$name: after a kill at $sc #$n the device is neither on '$from' nor on '$to'"
			fi
			verify_images || fail "$name: an image does not verify after a kill at $sc #$n"
			"$RSR" -q "$@" >/dev/null 2>"$T/again.err" || { cat "$T/again.err"; fail "$name: running it again after a kill at $sc #$n failed"; }
			device_is "$D" "$to" || fail "$name: running it again after a kill at $sc #$n did not reach '$to'"
			points=$((points + 1))
		done
	done <"$T/count"
	echo "$name: $points kill points ($old recovered to '$from', $new to '$to')"
	TOTAL=$((TOTAL + points))
}

mkdir -p "$P"
device_root "$P/base"
cp -a "$P/base" "$P/a"
"$RSR" -q install "$V/a" --root "$P/a" --no-graft
cp -a "$P/base" "$P/b"
"$RSR" -q install "$V/b" --root "$P/b" --no-graft
TOTAL=0 SEEN=0
crash_op "install (a) -> (b)" a b -- install "$V/b" --root "$D" --no-graft
ok "install killed at every point recovers to exactly (a) or (b)"
crash_op "remove (b) -> base" b base -- remove --root "$D" --no-graft
ok "remove killed at every point recovers to exactly (b) or base"
crash_op "install base -> (b)" base b -- install "$V/b" --root "$D" --no-graft
ok "install straight from the base killed at every point recovers to exactly base or (b)"
echo "crash points tried: $TOTAL of $SEEN (one in $STRIDE)"
[ "$SEEN" -ge 200 ] || fail "only $SEEN crash points; at least 200 are expected"
[ "$TOTAL" -ge $((SEEN / STRIDE)) ] || fail "only $TOTAL of the $SEEN crash points were tried"
ok "$TOTAL of $SEEN distinct crash points tried"
echo "1..$TESTS_RUN"
