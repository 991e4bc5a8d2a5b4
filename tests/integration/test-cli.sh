#!/usr/bin/env bash
# The rsr command's own messages and output (issue 19): -j/--threads takes 1
# to 256 on every verb that has it and refuses anything else as a usage error
# that says which --help to read; "Usage:" is spelled one way, in --help and
# in usage errors.
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
echo "1..$TESTS_RUN"
