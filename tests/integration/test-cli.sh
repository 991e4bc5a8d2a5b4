#!/usr/bin/env bash
# The rsr command's own messages and output (issue 19): -j/--threads takes 1
# to 256 on every verb that has it and refuses anything else as a usage error
# that says which --help to read.
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
echo "1..$TESTS_RUN"
