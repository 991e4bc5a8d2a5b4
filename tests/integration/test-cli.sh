#!/usr/bin/env bash
# The rsr command's own messages and output (issue 19): -j/--threads takes 1
# to 256 on every verb that has it and refuses anything else as a usage error
# that says which --help to read; "Usage:" is spelled one way, in --help and
# in usage errors; a progress bar is labelled with the operation and the
# file's name, never a path inside a device root or /proc/self/fd; a verb
# given --json that fails prints one JSON error object on stdout.
. "$(dirname "$0")/libtest.sh"

# The global option and each verb's own: 0, negative, not a number, too large.
for n in 0 -1 x 257 99999999999999999999; do
	for form in "-j $n" "--threads=$n"; do
		# shellcheck disable=SC2086 # "-j N" splits into the option and its value
		expect 2 $form key id "$T/none"
		assert_grep "^rsr: --threads $n: not a number of worker threads from 1 to 256" "$T/err"
		assert_grep "^rsr: see 'rsr --help'$" "$T/err"
		for verb in "patch create $T/a $T/b -o $T/p" "patch apply $T/a $T/p -o $T/c"; do
			# shellcheck disable=SC2086
			expect 2 $verb $form
			assert_grep "^rsr: --threads $n: not a number of worker threads from 1 to 256" "$T/err"
			assert_grep "^rsr: see 'rsr ${verb% "$T"/a*} --help'$" "$T/err"
		done
	done
done
expect 2 --threads= key id "$T/none"
assert_grep "^rsr: --threads : not a number of worker threads" "$T/err"
[ ! -e "$T/p" ] && [ ! -e "$T/c" ] || fail "a refused --threads wrote a file"
ok "-j and --threads refuse 0, negative, non-numeric and too large counts, globally and on patch create and apply"

"$RSR" key generate -o "$T/k" >/dev/null
expect 0 -j 1 key id "$T/k.pub"
expect 0 --threads 256 key id "$T/k.pub"
printf 'old image\n' >"$T/a"
printf 'new image\n' >"$T/b"
expect 0 -q patch create "$T/a" "$T/b" -o "$T/p" -j 1
expect 0 -q patch apply "$T/a" "$T/p" -o "$T/c" --threads 256
cmp "$T/b" "$T/c" || fail "patch made with -j 1 and applied with --threads 256 is wrong"
ok "-j 1 and --threads 256 are accepted"

# Every group and verb: --help starts with "Usage: rsr GROUP VERB", and no
# help or usage error spells it another way.
groups=$("$RSR" --help | awk '/^Groups:$/ { on = 1; next } /^$/ { on = 0 } on { print $1 }')
[ -n "$groups" ] || fail "rsr --help lists no groups"
for g in $groups; do
	verbs=$("$RSR" "$g" --help 2>/dev/null | awk '/^Verbs:$/ { on = 1; next } /^$/ { on = 0 } on { print $1 }')
	for v in ${verbs:-""}; do
		cmd="$g${v:+ $v}"
		# shellcheck disable=SC2086 # "GROUP VERB" is two words
		expect 0 $cmd --help
		head -1 "$T/out" | grep -q "^Usage: rsr $cmd " || fail "rsr $cmd --help starts with $(head -1 "$T/out")"
		assert_no_grep "usage:" "$T/out"
	done
done
ok "every verb's --help starts with 'Usage: rsr GROUP VERB'"

# VERB|ARGUMENTS: a verb and a command line of the wrong shape for it.
for c in "key id|" "status|extra" "repo add|$T/r" "enroll|extra" "install|" "patch digest|" "cryptex info|" \
	"response info|" "check|extra"; do
	cmd=${c%|*}
	# shellcheck disable=SC2086
	expect 2 $cmd ${c#*|}
	assert_grep "^Usage: rsr $cmd " "$T/err"
	assert_grep "^rsr: see 'rsr $cmd --help'$" "$T/err"
	assert_no_grep "usage:" "$T/err"
done
expect 2
assert_grep "^Usage: rsr " "$T/err"
expect 2 patch
assert_grep "^Usage: rsr patch VERB" "$T/err"
ok "a command line of the wrong shape prints the same 'Usage: rsr ...' line as --help, then which --help to read"

# json_error NAME: $T/out, the stdout of a verb given --json that failed, is
# one JSON document: the error object, named NAME, with stderr's message.
json_error() {
	python3 -c 'import json,sys; json.load(sys.stdin)' <"$T/out" || fail "stdout is not JSON: $(cat "$T/out")"
	python3 - "$T/out" "$T/err" "$1" <<'PY' || fail "not the error object: $(cat "$T/out")"
import json, sys
out, err, name = sys.argv[1:]
d = json.load(open(out))
assert list(d) == ["error"], d
e = d["error"]
assert sorted(e) == ["code", "message", "name"], e
assert e["name"] == name and isinstance(e["code"], int) and e["code"] < 0, e
assert open(err).read().splitlines()[0] == "rsr: " + e["message"], e
PY
}
# json_ok: $T/out is one JSON document and not an error object.
json_ok() {
	python3 -c 'import json,sys; d = json.load(sys.stdin); assert not (isinstance(d, dict) and "error" in d), d' \
		<"$T/out" || fail "stdout is not the verb's JSON: $(cat "$T/out")"
}
expect 1 patch digest --json "$T/a" "$T/none"
json_error ENOENT
expect 0 patch digest --json "$T/a" "$T/b"
json_ok
expect 1 cryptex info --json "$T/a"
json_error format
expect 1 status --json --root "$T/none"
json_error ENOENT
mkdir "$T/empty"
expect 1 repo status --json "$T/empty"
json_error ENOENT
expect 2 cryptex info --json
[ ! -s "$T/out" ] || fail "a usage error printed on stdout: $(cat "$T/out")"
ok "a verb given --json that fails prints one error object on stdout, its message the one on stderr"

# What follows works on responses made of the corpus' images.
if [ ! -d "$RSR_CORPUS/debs" ]; then
	echo "ok $((TESTS_RUN + 1)) # SKIP progress labels: corpus not found at $RSR_CORPUS"
	echo "1..$((TESTS_RUN + 1))"
	exit 0
fi
. "$(dirname "$0")/libresponse.sh"
. "$(dirname "$0")/librepo.sh"
vendor_setup

expect 0 cryptex info --json "$V/ssl-a.cptx" "$V/ssl-b.cptx"
json_ok
expect 1 cryptex info --json "$V/ssl-a.cptx" "$T/none" "$V/ssl-b.cptx"
json_error ENOENT
expect 1 response info --json "$V/a" --pubkey "$V/other.pub"
json_error signature
ok "cryptex info --json of several files, one missing, prints only the error object; response info: a bad signature"

# on_tty ARGS...: runs rsr ARGS with a terminal on stderr, which shows the
# progress bar, expecting exit status 0; the labels it drew in $T/labels.
on_tty() {
	script -qec "$(printf '%q ' "$RSR" "$@")" /dev/null >"$T/tty" </dev/null ||
		fail "rsr $* on a terminal: exit $?: $(tr '\r' '\n' <"$T/tty")"
	tr '\r' '\n' <"$T/tty" | sed -n 's/^\(.*[^ ]\) *\[[#.]*\] .*/\1/p' | sort -u >"$T/labels"
	[ -s "$T/labels" ] || fail "rsr $* on a terminal drew no progress bar: $(cat "$T/tty")"
	assert_no_grep "/" "$T/labels"
}
cd "$T" || fail "cannot enter $T"
D=dev
device_root "$D"
on_tty graft --root "$D" --add "$V/ssl-a.cptx" --no-mount
assert_grep "^verifying ssl-a.cptx$" "$T/labels"
on_tty cryptex verify "$V/ssl-b.cptx" --pubkey "$V/key.pub"
assert_grep "^verifying ssl-b.cptx$" "$T/labels"
device_root "$D"
on_tty install "$V/a" --root "$D" --no-graft
assert_grep "^applying patch$" "$T/labels"
assert_grep "^hashing libssl3-x86_64.forward.rsrp$" "$T/labels"
assert_grep "^verifying libssl3.cptx$" "$T/labels"
ok "progress labels name the operation and the file: graft (which verifies through /proc/self/fd), verify, install"

repo_setup
nginx_start "$R"
repo_device "$D"
on_tty update --root "$D" --no-graft
assert_grep "^downloading response.json$" "$T/labels"
assert_grep "^downloading libssl3-x86_64.forward.rsrp$" "$T/labels"
assert_grep "^verifying libssl3.cptx$" "$T/labels"
ok "update's progress labels name the downloads and images, not the device's download directory"

expect 0 check --json --root "$D"
json_ok
# Another check holds the repository client's lock: this shell, through fd 9.
exec 9>>"$D/var/lib/rsr/tuf/lock"
flock 9
expect 1 check --json --root "$D"
exec 9>&-
json_error busy
assert_grep '"code": -1011' "$T/out"
nginx_stop
expect 1 check --json --root "$D"
python3 -c 'import json,sys; json.load(sys.stdin)["error"]["message"]' <"$T/out" || fail "check --json with no mirror"
ok "check --json: the newest response as before; busy, and no mirror to reach, as error objects"
echo "1..$TESTS_RUN"
