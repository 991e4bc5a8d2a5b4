# Shared by the integration tests: a scratch directory, assertions, and the
# corpus location. Source it; it sets -eu and removes the scratch dir on exit.
set -euo pipefail

: "${RSR:?RSR must name the rsr binary}"
: "${RSR_SRCDIR:?}"
RSR_CORPUS=${RSR_CORPUS:-}
[ -n "$RSR_CORPUS" ] || RSR_CORPUS=$(cd "$RSR_SRCDIR/.." && pwd)/shared/corpus

T=$(mktemp -d /var/tmp/rsr-test.XXXXXX)
cleanup_hooks=()
on_exit() {
	local rc=$?
	for h in "${cleanup_hooks[@]}"; do eval "$h" || true; done
	rm -rf --one-file-system "$T"
	exit $rc
}
trap on_exit EXIT

TESTS_RUN=0
ok() { TESTS_RUN=$((TESTS_RUN + 1)); echo "ok $TESTS_RUN - $*"; }
fail() { echo "not ok - $*" >&2; exit 1; }
skip_all() { echo "1..0 # SKIP $*"; echo "SKIP: $*" >&2; exit 77; }

# Runs rsr expecting exit status $1; output in $T/out, $T/err.
expect() {
	local want=$1
	shift
	set +e
	"$RSR" "$@" >"$T/out" 2>"$T/err"
	local got=$?
	set -e
	if [ "$got" != "$want" ]; then
		echo "rsr $*: exit $got, expected $want" >&2
		echo "--- stdout"; cat "$T/out"; echo "--- stderr"; cat "$T/err"
		exit 1
	fi
}
assert_grep() { grep -q -- "$1" "$2" || { echo "expected '$1' in $2:" >&2; cat "$2" >&2; exit 1; }; }
assert_no_grep() { if grep -q -- "$1" "$2"; then echo "unexpected '$1' in $2" >&2; cat "$2" >&2; exit 1; fi; }

# Unpacks a corpus pair (old/new trees) once per test run into $T/corpus.
corpus_pair() {
	local pair=$1
	[ -d "$RSR_CORPUS/debs" ] || skip_all "corpus not found at $RSR_CORPUS"
	if [ ! -d "$T/corpus/$pair" ]; then
		bash "$RSR_CORPUS/unpack.sh" "$T/corpus" "$pair" >/dev/null
	fi
	echo "$T/corpus/$pair"
}

need_root() { [ "$(id -u)" = 0 ] || skip_all "needs root (mounts in a private namespace)"; }

# strace with LeakSanitizer off: it cannot run under ptrace (sanitizer builds).
strace_nolsan() { ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" strace "$@"; }
