#!/usr/bin/env bash
# Allocation failure: every command is run with its 1st, 2nd, 3rd ...
# allocation failing (tests/fault/failmalloc.c), until a run gets through.
# Each failed run must exit 1 with a message, leak nothing (LeakSanitizer in
# the sanitized build), leave no output or temporary file behind, and a run
# that survives its failure must give exactly the unfaulted result.
# Every allocation among the first and last 100 of each command is failed
# (the command's own setup and its output), and every K-th between (mostly
# OpenSSL initialising itself). The default run (scripts/test) walks once,
# under the sanitizers, with K = 604 (the budget of the whole run allows no
# more); run by itself in a normal build the walk takes K = 151.
# scripts/test --full walks both builds at 61 and 122, half-way between, so
# that together they fail one allocation in 41 of the middle stretch.
# RSR_FAULT_STRIDE=1 tries every one. Each run still finds every
# leak and memory error its own points reach.
. "$(dirname "$0")/libtest.sh"
. "$RSR_SRCDIR/tests/fault/libfault.sh"
# install and remove make some 28000 allocations and take 0.2 s each: a
# stride about eight times as long between the dense ends.
sanitized=
if [ -n "${RSR_SANITIZE:-}" ] && [ "$RSR_SANITIZE" != none ]; then sanitized=1; fi
if [ -n "${RSR_FAULT_STRIDE:-}" ]; then
	SLOW_STRIDE=$RSR_FAULT_STRIDE SLOW_PHASE=${RSR_FAULT_PHASE:-$RSR_FAULT_STRIDE}
elif [ "${RSR_FULL:-0}" = 1 ]; then
	if [ -n "$sanitized" ]; then
		SLOW_STRIDE=1018 SLOW_PHASE=254 RSR_FAULT_STRIDE=122 RSR_FAULT_PHASE=30
	else
		SLOW_STRIDE=509 SLOW_PHASE=509 RSR_FAULT_STRIDE=61 RSR_FAULT_PHASE=61
	fi
elif [ -n "$sanitized" ]; then
	SLOW_STRIDE=3777 SLOW_PHASE=944 RSR_FAULT_STRIDE=604 RSR_FAULT_PHASE=151
else
	SLOW_STRIDE=1259 SLOW_PHASE=1259 RSR_FAULT_STRIDE=151 RSR_FAULT_PHASE=151
fi
export RSR_FAULT_PHASE

# A small tree keeps each of the thousands of runs short.
mkdir -p "$T/src/usr/lib/x86_64-linux-gnu" "$T/src/usr/share/doc/fault"
head -c 200000 /dev/urandom >"$T/src/usr/lib/x86_64-linux-gnu/libfault.so.1.0"
ln -s libfault.so.1.0 "$T/src/usr/lib/x86_64-linux-gnu/libfault.so.1"
echo "fault injection" >"$T/src/usr/share/doc/fault/README"
"$RSR" key generate -o "$T/key" >/dev/null 2>&1
bargs=(--name fault --version 2 --base debian-12 --key "$T/key" --timestamp 1)
"$RSR" cryptex build "$T/src" -o "$T/ref.cptx" "${bargs[@]}" >/dev/null
"$RSR" cryptex build "$T/src" -o "$T/prev.cptx" --name fault --version 1 --base debian-12 --key "$T/key" \
	--timestamp 1 >/dev/null
"$RSR" cryptex verify "$T/ref.cptx" --pubkey "$T/key.pub" >"$T/verify.ref"
"$RSR" cryptex info "$T/ref.cptx" >"$T/info.ref"
"$RSR" cryptex info --json "$T/ref.cptx" "$T/prev.cptx" >"$T/info-json.ref"
mkdir "$T/o"

# Read-only commands: on success the output is exactly the unfaulted one.
same_stdout() { # REF RC
	[ "$2" != 0 ] || cmp -s "$1" "$T/out" || { diff "$1" "$T/out" >&2; fail "output differs from the unfaulted run"; }
}
nothing() { :; }
check_verify() { same_stdout "$T/verify.ref" "$1"; }
check_info() { same_stdout "$T/info.ref" "$1"; }
check_info_json() { same_stdout "$T/info-json.ref" "$1"; }
fault_alloc_walk "cryptex info" nothing check_info -- cryptex info "$T/ref.cptx"
fault_alloc_walk "cryptex info --json" nothing check_info_json -- cryptex info --json "$T/ref.cptx" "$T/prev.cptx"
fault_alloc_walk "cryptex verify" nothing check_verify -- cryptex verify "$T/ref.cptx" --pubkey "$T/key.pub"

# Memory gone for good: every allocation from the N-th on fails.
FAULT_PERSIST=1 fault_alloc_walk "cryptex verify (persistent)" nothing check_verify -- \
	cryptex verify "$T/ref.cptx" --pubkey "$T/key.pub"

# Build into an empty directory: afterwards it holds the reproducible
# result or nothing at all (no staging area, no temporary file).
empty_o() { rm -rf "$T/o" && mkdir "$T/o"; }
check_build_new() {
	if [ "$1" = 0 ]; then
		cmp -s "$T/o/x.cptx" "$T/ref.cptx" || fail "a build that survived a fault made other bytes"
		[ "$(dir_listing "$T/o")" = x.cptx ] || fail "left behind: $(dir_listing "$T/o")"
	else
		[ -z "$(dir_listing "$T/o")" ] || fail "a failed build left: $(dir_listing "$T/o")"
	fi
}
fault_alloc_walk "cryptex build" empty_o check_build_new -- cryptex build "$T/src" -o "$T/o/x.cptx" "${bargs[@]}"

# Key generation: both files or neither.
check_keygen() {
	if [ "$1" = 0 ]; then
		[ "$(dir_listing "$T/o")" = "$(printf 'k\nk.pub')" ] || fail "keys: $(dir_listing "$T/o")"
		[ "$("$RSR" key id "$T/o/k" | cut -c1-64)" = "$("$RSR" key id "$T/o/k.pub" | cut -c1-64)" ] ||
			fail "the public key does not belong to the private key"
	else
		[ -z "$(dir_listing "$T/o")" ] || fail "a failed key generation left: $(dir_listing "$T/o")"
	fi
}
fault_alloc_walk "key generate" empty_o check_keygen -- key generate -o "$T/o/k"

# Patch apply (where the patch module is built): the output is the new image
# or absent.
if "$RSR" patch --help >/dev/null 2>&1; then
	"$RSR" patch create "$T/prev.cptx" "$T/ref.cptx" -o "$T/fwd.rsrp" >/dev/null 2>&1 ||
		fail "rsr patch create failed without faults"
	check_patch() {
		if [ "$1" = 0 ]; then
			cmp -s "$T/o/x.cptx" "$T/ref.cptx" || fail "a patch that survived a fault made other bytes"
			[ "$(dir_listing "$T/o")" = x.cptx ] || fail "left behind: $(dir_listing "$T/o")"
		else
			[ -z "$(dir_listing "$T/o")" ] || fail "a failed patch apply left: $(dir_listing "$T/o")"
		fi
	}
	fault_alloc_walk "patch apply" empty_o check_patch -- patch apply "$T/prev.cptx" "$T/fwd.rsrp" -o "$T/o/x.cptx"
	# Patch create, forward and reverse in one run: both patches, exactly
	# the unfaulted ones, or nothing.
	"$RSR" patch create "$T/ref.cptx" "$T/prev.cptx" -o "$T/rev.rsrp" >/dev/null 2>&1 ||
		fail "rsr patch create (reverse) failed without faults"
	check_create() {
		if [ "$1" = 0 ]; then
			cmp -s "$T/o/f.rsrp" "$T/fwd.rsrp" || fail "a create that survived a fault made another patch"
			cmp -s "$T/o/r.rsrp" "$T/rev.rsrp" || fail "a create that survived a fault made another reverse patch"
			[ "$(dir_listing "$T/o")" = "$(printf 'f.rsrp\nr.rsrp')" ] || fail "left behind: $(dir_listing "$T/o")"
		else
			case $(dir_listing "$T/o") in
			"" | f.rsrp) ;; # the forward patch is complete before the reverse one is begun
			*) fail "a failed patch create left: $(dir_listing "$T/o")" ;;
			esac
			[ ! -e "$T/o/f.rsrp" ] || cmp -s "$T/o/f.rsrp" "$T/fwd.rsrp" || fail "a failed create left a bad patch"
		fi
	}
	# Two threads, except under AddressSanitizer: its thread start-up
	# (pthread_getattr_np) cannot take a failed allocation and aborts.
	cthreads=2
	if [ -n "${RSR_SANITIZE:-}" ] && [ "$RSR_SANITIZE" != none ]; then cthreads=1; fi
	fault_alloc_walk "patch create" empty_o check_create -- \
		patch create "$T/prev.cptx" "$T/ref.cptx" -o "$T/o/f.rsrp" --reverse "$T/o/r.rsrp" --threads $cthreads
fi

# Install and remove on a device root (rsr graft --no-mount): the slot's
# current image is the old one or the new one, complete, and nothing else is
# left in the slot directory.
fault_make_root "$T/key"
check_install() { if [ "$1" = 0 ]; then check_slot "$T/os2.cptx"; else check_slot "$T/os1.cptx" "$T/os2.cptx"; fi; }
check_remove() { if [ "$1" = 0 ]; then check_slot none; else check_slot none "$T/os1.cptx"; fi; }
fault_alloc_walk "graft --add (install)" fault_root_reset check_install -- graft --root "$T/root" --add "$T/os2.cptx" --no-mount
fault_alloc_walk "graft --remove" fault_root_reset check_remove -- graft --root "$T/root" --remove os --no-mount

# rsr status --json: the whole document or a failure, never a part of it.
fault_root_reset
"$RSR" status --root "$T/root" --json >"$T/status.ref" 2>/dev/null || fail "rsr status --json failed without faults"
check_status() { [ "$1" != 0 ] || diff "$T/status.ref" "$T/out" >&2 || fail "status --json printed other JSON after a fault"; }
fault_alloc_walk "status --json" nothing check_status -- status --root "$T/root" --json

# Repository upkeep: refresh renews all four roles (the root key signs them all).
# After a failure the repository still loads and every role is at its old
# version or its new one; a run that survives gives the unfaulted versions.
SOURCE_DATE_EPOCH=1800000000 "$RSR" -q repo init "$T/repo.tmpl" --root-key "$T/key"
refresh_args=(repo refresh "$T/repo" --key "$T/key" --margin root=400d --margin targets=100d)
fault_repo_reset() { rm -rf "$T/repo" && cp -a "$T/repo.tmpl" "$T/repo"; }
fault_repo_reset
SOURCE_DATE_EPOCH=1800003600 "$RSR" -q "${refresh_args[@]}" || fail "repo refresh failed without faults"
SOURCE_DATE_EPOCH=1800003600 "$RSR" repo status "$T/repo" --json >"$T/refresh.ref"
versions() { python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["roles"]; print(" ".join(str(r[k]["version"]) for k in ("root","targets","snapshot","timestamp")))' "$1"; }
check_refresh() {
	SOURCE_DATE_EPOCH=1800003600 "$RSR" repo status "$T/repo" --json >"$T/status.now" 2>"$T/status.err" ||
		fail "the repository does not load after a failed refresh: $(cat "$T/status.err")"
	if [ "$1" = 0 ]; then
		cmp -s "$T/refresh.ref" "$T/status.now" || fail "a refresh that survived a fault gave other metadata"
	else
		case $(versions "$T/status.now") in
		"1 1 1 1" | "2 1 1 1") ;; # root first; the rest shows once timestamp.json, written last, names it
		"2 2 2 2") # all written, the report after it failed
			cmp -s "$T/refresh.ref" "$T/status.now" || fail "a failed refresh wrote other metadata" ;;
		*) fail "a failed refresh left roles at versions $(versions "$T/status.now")" ;;
		esac
	fi
	[ -z "$(find "$T/repo" -name '*.tmp')" ] || fail "a refresh left temporary files: $(find "$T/repo" -name '*.tmp')"
}
SOURCE_DATE_EPOCH=1800003600 fault_alloc_walk "repo refresh" fault_repo_reset check_refresh -- "${refresh_args[@]}"
fault_repo_reset
SOURCE_DATE_EPOCH=1800003600 "$RSR" -q "${refresh_args[@]}"
check_repo_status() { same_stdout "$T/refresh.ref" "$1"; }
SOURCE_DATE_EPOCH=1800003600 fault_alloc_walk "repo status --json" nothing check_repo_status -- repo status "$T/repo" --json

# Enrolment: each file is absent or complete with its content, never a temporary.
mkdir "$T/enrolled.ref"
"$RSR" -q enroll --mirror http://127.0.0.1:9 --repository-root "$T/repo.tmpl/metadata/1.root.json" \
	--key "$T/key.pub" --root "$T/enrolled.ref" --no-check || fail "enroll failed without faults"
fault_enroll_reset() { rm -rf "$T/enrolled" && mkdir "$T/enrolled"; }
check_enroll() {
	local f
	for f in etc/rsr/keys.d/key.pub etc/rsr/repository-root.json etc/rsr/rsr.conf; do
		if [ -e "$T/enrolled/$f" ]; then
			cmp -s "$T/enrolled/$f" "$T/enrolled.ref/$f" || fail "enroll wrote another $f"
		elif [ "$1" = 0 ]; then
			fail "an enrolment that survived a fault did not write $f"
		fi
	done
	[ -z "$(find "$T/enrolled" -name '*.tmp')" ] || fail "enroll left temporary files"
}
fault_alloc_walk "enroll" fault_enroll_reset check_enroll -- enroll --mirror http://127.0.0.1:9 \
	--repository-root "$T/repo.tmpl/metadata/1.root.json" --key "$T/key.pub" --root "$T/enrolled" --no-check

# Install and remove a response (no grafting): the device is on the base or
# on (a), completely, after the failure and the recovery any rsr command does.
if [ -d "$RSR_CORPUS/debs" ]; then
	fault_response_setup
	RSR_FAULT_STRIDE=$SLOW_STRIDE RSR_FAULT_PHASE=$SLOW_PHASE fault_alloc_walk "install" fault_dev_base check_install_a -- install "$V/a" --root "$T/dev" --no-graft
	RSR_FAULT_STRIDE=$SLOW_STRIDE RSR_FAULT_PHASE=$SLOW_PHASE fault_alloc_walk "remove" fault_dev_a check_remove_a -- remove --root "$T/dev" --no-graft
else
	echo "# SKIP install and remove: the corpus is not at $RSR_CORPUS"
fi

echo "# $FAULT_POINTS allocation failures in all (stride $RSR_FAULT_STRIDE, first at $RSR_FAULT_PHASE past the dense head)"
echo "1..$TESTS_RUN"
