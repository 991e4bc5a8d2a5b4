# Fault-injection harness, sourced after libtest.sh by the test-fault-*.sh
# tests. Each walk runs one rsr command line over and over, failing one more
# thing each time, and calls back into the test to check the state after
# every run:
#   fault_alloc_walk LABEL PREPARE CHECK -- ARGS...
#       fails allocation N = 1, 2, ... (tests/fault/failmalloc.c) until a run
#       no longer reaches allocation N. With RSR_FAULT_STRIDE=K > 1 it tries
#       every allocation among the first and the last RSR_FAULT_DENSE (100)
#       (the command's own setup and its output) and every K-th between
#       (mostly OpenSSL initialising itself); RSR_FAULT_PHASE=P makes the
#       first of those P after the dense head instead of K. With FAULT_PERSIST=1 every
#       allocation from the N-th on fails (memory exhausted for good).
#   fault_io_walk LABEL PREPARE CHECK SYSCALLS ERRNOS -- ARGS...
#       for each syscall and errno, fails call N = 1, 2, ... of that syscall
#       in every traced process (strace -f -e inject) until no process makes
#       an N-th call. With RSR_IO_STRIDE=K > 1, the first and last two calls
#       and every K-th between (starting at RSR_IO_PHASE, default 0).
# PREPARE is run before every run, CHECK after it as `CHECK RC`, with stdout
# and stderr of the run in $T/out and $T/err; both are shell commands (names
# of functions). CHECK must fail (exit) on a bad state. Adding an operation is
# one line: a walk with its command line and a state check.
#
# Every run must end in exit status 0 or 1 (never a signal, a sanitizer
# report or a hang), and status 1 must come with an "rsr: ..." message.
# Under AddressSanitizer, LeakSanitizer makes a leak a failing exit status.

FAULT_TIMEOUT=${FAULT_TIMEOUT:-120}
# Totals for the final report line of each test.
FAULT_POINTS=0

# Environment for runs under the allocation shim. In a sanitized build the
# shim is loaded ahead of the sanitizer runtime, which then must not insist
# on being first; leaks end the run with status 23.
# Later options win, so these come after any inherited ones.
fault_asan_env() {
	ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0:detect_leaks=1:abort_on_error=0:exitcode=86:allocator_may_return_null=1 \
	LSAN_OPTIONS=${LSAN_OPTIONS:+$LSAN_OPTIONS:}exitcode=23 \
	UBSAN_OPTIONS=${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}halt_on_error=1:print_stacktrace=1:exitcode=87 \
		"$@"
}

# Under strace, LeakSanitizer cannot stop the world (it uses ptrace itself)
# and aborts; leaks are the allocation walk's business.
fault_strace_env() {
	ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0:abort_on_error=0:exitcode=86 \
	UBSAN_OPTIONS=${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}halt_on_error=1:print_stacktrace=1:exitcode=87 \
		"$@"
}

# Judges the exit status and messages of one faulted run; $1 says what was
# faulted, $2 is the status, $3 is "nomsg" when the fault hit the write of
# the message itself.
fault_judge() {
	local what=$1 rc=$2 msg=${3:-}
	case $rc in
	0) ;;
	1)
		if [ "$msg" != nomsg ] && ! grep -q '^rsr: ' "$T/err"; then
			echo "--- stderr" >&2; cat "$T/err" >&2
			fail "$what: exit status 1 without an 'rsr: ' message"
		fi
		;;
	124) fail "$what: hung (killed after ${FAULT_TIMEOUT}s)" ;;
	23)
		cat "$T/err" >&2
		fail "$what: memory leaked on the error path (LeakSanitizer)"
		;;
	*)
		echo "--- stderr" >&2; cat "$T/err" >&2
		fail "$what: exit status $rc (a crash, a sanitizer report or a usage error)"
		;;
	esac
}

# RSR_FAULT_ONLY, an extended regular expression, limits the walks to those
# whose label it matches (default: all).
fault_selected() { # LABEL
	[[ $1 =~ ${RSR_FAULT_ONLY:-.} ]] && return 0
	echo "# skipped (RSR_FAULT_ONLY): $1"
	return 1
}

fault_alloc_walk() {
	local label=$1 prepare=$2 check=$3
	shift 3
	[ "$1" = -- ] && shift
	fault_selected "$label" || return 0
	[ -n "${RSR_FAILMALLOC_SO:-}" ] && [ -f "$RSR_FAILMALLOC_SO" ] ||
		fail "RSR_FAILMALLOC_SO does not name the allocation-failure shim"
	local rep=$T/failmalloc.report stride=${RSR_FAULT_STRIDE:-1} n=0 rc total failed=0 survived=0 runs=0 suppressed=0
	local phase=${RSR_FAULT_PHASE:-${RSR_FAULT_STRIDE:-1}}
	local head=${RSR_FAULT_DENSE:-100} tail count
	# An unfaulted run counts the allocations.
	$prepare
	rm -f "$rep"
	fault_asan_env env LD_PRELOAD="$RSR_FAILMALLOC_SO" RSR_FAILMALLOC_REPORT="$rep" "$RSR" "$@" >"$T/out" 2>"$T/err" ||
		{ cat "$T/err" >&2; fail "$label: failed without any fault"; }
	$check 0
	count=$(awk '/^allocations/ {print $2}' "$rep")
	tail=$((count - head))
	while :; do
		# Every allocation of the first and last $head, every $stride-th between.
		if [ "$n" -lt "$head" ] || [ "$n" -ge "$tail" ]; then
			n=$((n + 1))
		elif [ "$n" -eq "$head" ]; then
			n=$((n + phase))
			[ "$n" -le "$tail" ] || n=$tail
		else
			n=$((n + stride))
			[ "$n" -le "$tail" ] || n=$tail
		fi
		$prepare
		rm -f "$rep"
		set +e
		# env, not the shell, sets LD_PRELOAD: timeout must not count or fail.
		fault_asan_env timeout -k 5 "$FAULT_TIMEOUT" env LD_PRELOAD="$RSR_FAILMALLOC_SO" RSR_FAILMALLOC=$n RSR_FAILMALLOC_PERSIST="${FAULT_PERSIST:-0}" \
			RSR_FAILMALLOC_REPORT="$rep" "$RSR" "$@" >"$T/out" 2>"$T/err"
		rc=$?
		set -e
		if ! grep -q "^failed $n\$" "$rep" 2>/dev/null; then
			# The operation made fewer than n allocations: it ran unfaulted.
			[ "$rc" = 0 ] || { cat "$T/err" >&2; fail "$label: exit $rc without any fault"; }
			$check "$rc"
			total=$(awk '/^allocations/ {print $2}' "$rep" 2>/dev/null | tail -1)
			break
		fi
		if [ "$rc" = 23 ]; then
			# A leak: is it one of OpenSSL's own? Judge again with full
			# stacks (slow, so only here) and tests/fault/lsan-openssl.supp.
			cp "$T/err" "$T/err.leak"
			$prepare
			set +e
			LSAN_OPTIONS=suppressions=$RSR_SRCDIR/tests/fault/lsan-openssl.supp \
				ASAN_OPTIONS=fast_unwind_on_malloc=0 fault_asan_env timeout -k 5 "$FAULT_TIMEOUT" \
				env LD_PRELOAD="$RSR_FAILMALLOC_SO" RSR_FAILMALLOC=$n RSR_FAILMALLOC_PERSIST="${FAULT_PERSIST:-0}" RSR_FAILMALLOC_REPORT="$rep" \
				"$RSR" "$@" >"$T/out" 2>"$T/err"
			rc=$?
			set -e
			[ "$rc" = 23 ] || suppressed=$((suppressed + 1))
		fi
		fault_judge "$label: allocation $n failed" "$rc"
		( $check "$rc" ) || fail "$label: allocation $n failed: bad state"
		if [ "$rc" = 0 ]; then survived=$((survived + 1)); else failed=$((failed + 1)); fi
		runs=$((runs + 1))
	done
	FAULT_POINTS=$((FAULT_POINTS + runs))
	local note=
	[ "$suppressed" = 0 ] || note=", $suppressed leaks inside OpenSSL suppressed"
	ok "$label: $runs allocation failures ($failed refused cleanly, $survived tolerated), unfaulted run makes ${total:-?} allocations$note"
}

fault_io_walk() {
	local label=$1 prepare=$2 check=$3 syscalls=$4 errnos=$5
	shift 5
	[ "$1" = -- ] && shift
	fault_selected "$label" || return 0
	command -v strace >/dev/null || fail "strace is not installed"
	local log=$T/strace.log sc e n rc max msg points=0 per
	local summary=""
	for sc in $syscalls; do
		# How many calls of sc does the busiest process make?
		$prepare
		set +e
		fault_strace_env timeout -k 5 "$FAULT_TIMEOUT" strace -f -qq -o "$log" -e trace="$sc" -e signal=none "$RSR" "$@" \
			>"$T/out" 2>"$T/err"
		rc=$?
		set -e
		[ "$rc" = 0 ] || { cat "$T/err" >&2; fail "$label: exit $rc under strace without any fault"; }
		$check 0
		# Lines are "PID sc(...", "PID <... sc resumed>": count the starts per process.
		max=$(awk -v sc="$sc" 'index($2, sc "(") == 1 {n[$1]++}
			END {m = 0; for (p in n) if (n[p] > m) m = n[p]; print m}' "$log")
		per=0
		for e in $errnos; do
			for n in $(seq 1 "$max"); do
				if [ "$n" -gt 2 ] && [ "$n" -le $((max - 2)) ] &&
					[ $(((n - ${RSR_IO_PHASE:-0}) % ${RSR_IO_STRIDE:-1})) != 0 ]; then
					continue
				fi
				$prepare
				set +e
				fault_strace_env timeout -k 5 "$FAULT_TIMEOUT" strace -f -qq -o "$log" -e trace="$sc" -e signal=none \
					-e inject="$sc:error=$e:when=$n" "$RSR" "$@" >"$T/out" 2>"$T/err"
				rc=$?
				set -e
				if ! grep -q 'INJECTED' "$log"; then
					# This run made fewer calls than the counting run: unfaulted.
					[ "$rc" = 0 ] || { cat "$T/err" >&2; fail "$label: exit $rc without any fault"; }
					$check 0
					continue
				fi
				msg=
				# A failed write of the message itself cannot show it.
				grep -q "^[0-9]* *write(2, .*(INJECTED)" "$log" && msg=nomsg
				fault_judge "$label: $sc call $n failed with $e" "$rc" "$msg"
				( $check "$rc" ) || fail "$label: $sc call $n failed with $e: bad state"
				per=$((per + 1))
			done
		done
		points=$((points + per))
		summary="$summary $sc:$max"
	done
	FAULT_POINTS=$((FAULT_POINTS + points))
	ok "$label: $points I/O faults ($errnos) at each call of$summary"
}

# The entries of a directory, one a line, for "nothing left behind" checks.
dir_listing() { ls -A "$1" | sort; }

# A device root for `rsr graft --no-mount` (install and remove without
# mounting): trusted key, os-release, a base /usr. Sets FAULT_ROOT_TEMPLATE;
# fault_root_reset copies it to $T/root. Images for slot "os": $T/os1.cptx
# (installed in the template) and $T/os2.cptx.
fault_make_root() { # KEY
	local key=$1 v
	mkdir -p "$T/root.tmpl/etc/rsr/keys.d" "$T/root.tmpl/usr/share/t"
	cp "$key.pub" "$T/root.tmpl/etc/rsr/keys.d/"
	printf 'NAME=base\nVERSION_ID=7\nBUILD_ID=7.1\n' >"$T/root.tmpl/etc/os-release"
	echo base >"$T/root.tmpl/usr/share/t/file"
	for v in 1 2; do
		rm -rf "$T/os-src" && mkdir -p "$T/os-src/usr/share/t"
		echo "$v" >"$T/os-src/usr/share/t/file"
		head -c 100000 /dev/urandom >"$T/os-src/usr/share/t/blob"
		"$RSR" -q cryptex build "$T/os-src" -o "$T/os$v.cptx" --name os --version "$v" --base 7.1 --key "$key" \
			--timestamp 1
	done
	"$RSR" -q graft --root "$T/root.tmpl" --add "$T/os1.cptx" --no-mount || fail "installing os1 without faults"
	FAULT_ROOT_TEMPLATE=$T/root.tmpl
}
fault_root_reset() { rm -rf "$T/root" && cp -a "$FAULT_ROOT_TEMPLATE" "$T/root"; }

# The slot "os" under $T/root: nothing but `current` and complete images named
# by their root hash; `current` names one of the allowed images (a path, or
# "none" for no current image).
check_slot() { # ALLOWED-IMAGE...
	local dir=$T/root/var/lib/rsr/cryptexes/os cur f ok=
	for f in $(dir_listing "$dir"); do
		case $f in
		current) ;;
		[0-9a-f]*.cptx)
			[ ${#f} = 69 ] || fail "slot os holds $f"
			"$RSR" -q cryptex verify "$dir/$f" --pubkey "$FAULT_ROOT_TEMPLATE/etc/rsr/keys.d/"*.pub >/dev/null 2>&1 ||
				fail "slot os holds an incomplete or damaged image $f"
			;;
		*) fail "slot os holds $f (a temporary file left behind?)" ;;
		esac
	done
	if [ -L "$dir/current" ]; then
		cur=$(readlink "$dir/current")
		[ -f "$dir/$cur" ] || fail "current names $cur, which does not exist"
	else
		cur=none
	fi
	for f in "$@"; do
		if [ "$f" = none ]; then
			[ "$cur" = none ] && ok=1
		elif [ "$cur" != none ] && cmp -s "$dir/$cur" "$f"; then
			ok=1
		fi
	done
	[ -n "$ok" ] || fail "slot os: current is $cur, expected one of: $*"
}

# Responses (tests/integration/libresponse.sh): a device root on the base
# images ($T/dev, reset from a template before each run) and the vendor's
# responses (a) and (b). After a failed run, any rsr command first finishes
# or rolls back an interrupted install or remove; `rsr status` does that, and
# then the device must be entirely in one of the allowed states.
fault_response_setup() {
	. "$RSR_SRCDIR/tests/integration/libresponse.sh"
	vendor_setup
	device_root "$T/dev.base"
	cp -a "$T/dev.base" "$T/dev.a"
	"$RSR" -q install "$V/a" --root "$T/dev.a" --no-graft >/dev/null || fail "installing (a) without faults"
}
fault_dev_base() { rm -rf "$T/dev" && cp -a "$T/dev.base" "$T/dev"; }
fault_dev_a() { rm -rf "$T/dev" && cp -a "$T/dev.a" "$T/dev"; }
check_device() { # RC STATE-ON-SUCCESS OTHER-STATE-ON-FAILURE
	if [ "$1" = 0 ]; then
		device_is "$T/dev" "$2" || fail "the device is not in state $2 after success"
		return 0
	fi
	"$RSR" -q status --root "$T/dev" >/dev/null 2>&1 || fail "rsr status (recovery) failed after the fault"
	device_is "$T/dev" "$3" 2>/dev/null || device_is "$T/dev" "$2" ||
		fail "after a failure and recovery the device is neither in state $3 nor in state $2"
}
check_install_a() { check_device "$1" a base; }
check_remove_a() { check_device "$1" base a; }
