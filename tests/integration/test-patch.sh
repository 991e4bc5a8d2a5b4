#!/bin/bash
# rsr patch: round trips of every corpus pair in both directions on EROFS
# images, two-input and full-replacement patches, and the refusals: wrong
# input, damaged patch, bad usage. Nothing may be left behind on failure.
. "$(dirname "$0")/libtest.sh"

command -v mkfs.erofs >/dev/null || skip_all "mkfs.erofs not installed"
UUID=6a1c3f9e-3b0b-4d2e-9a51-2f7c1d9e8b01

# The filesystem images of a pair, made like cryptex images are.
make_images() {
	local pair=$1 dir
	dir=$(corpus_pair "$pair")
	for v in old new; do
		mkfs.erofs --quiet -T0 --all-root -E noinline_data -U $UUID "$T/$pair.$v.img" "$dir/$v" >/dev/null
	done
	rm -rf "$T/corpus/$pair"
}

# The piece digest of a file, written from docs/formats/patch.md.
piece_digest() {
	python3 - "$1" <<'PY'
import hashlib, struct, sys
data = open(sys.argv[1], "rb").read()
P = 1 << 20
h = hashlib.sha256(b"RSR-PIECES-V1\0" + struct.pack("<QI", len(data), P))
for off in range(0, len(data), P):
    h.update(hashlib.sha256(data[off:off + P]).digest())
print(h.hexdigest())
PY
}

no_leftovers() {
	if ls -A "$T/o" | grep -q .; then
		echo "left behind in $T/o:" >&2
		ls -la "$T/o" >&2
		exit 1
	fi
}

mkdir -p "$T/o"
PAIRS=${RSR_TEST_PAIRS:-"libarchive13 libxml2 tzdata libssl3 openssh-client systemd webkit2gtk"}
for pair in $PAIRS; do
	make_images "$pair"
	old=$T/$pair.old.img new=$T/$pair.new.img
	expect 0 -q patch create "$old" "$new" -o "$T/$pair.fwd" --reverse "$T/$pair.rev"
	expect 0 -q patch apply "$old" "$T/$pair.fwd" -o "$T/o/new"
	cmp "$T/o/new" "$new" || fail "$pair: forward patch gives a different image"
	expect 0 -q patch apply "$new" "$T/$pair.rev" -o "$T/o/old"
	cmp "$T/o/old" "$old" || fail "$pair: reverse patch gives a different image"
	rm -f "$T/o/new" "$T/o/old"
	ok "$pair: round trip both ways ($(stat -c %s "$T/$pair.fwd") and $(stat -c %s "$T/$pair.rev") bytes)"
	[ "$pair" = libarchive13 ] || [ "$pair" = tzdata ] || rm -f "$old" "$new" "$T/$pair.fwd" "$T/$pair.rev"
done

# Cryptex images: the patcher recomputes the changed dm-verity tree entries.
if [ -f "$T/libarchive13.old.img" ] || [ -z "${RSR_TEST_PAIRS:-}" ]; then
	dir=$(corpus_pair libarchive13)
	expect 0 key generate -o "$T/key"
	for v in old new; do
		expect 0 -q cryptex build "$dir/$v" -o "$T/la.$v.cptx" --name os --version "$v" --base test-1 \
			--key "$T/key" --timestamp 1700000000
	done
	rm -rf "$T/corpus/libarchive13"
	expect 0 -q patch create "$T/la.old.cptx" "$T/la.new.cptx" -o "$T/la.cptx.fwd" --reverse "$T/la.cptx.rev"
	expect 0 -q patch apply "$T/la.old.cptx" "$T/la.cptx.fwd" -o "$T/o/new.cptx"
	cmp "$T/o/new.cptx" "$T/la.new.cptx" || fail "cryptex: forward patch gives a different image"
	expect 0 cryptex verify "$T/o/new.cptx" --pubkey "$T/key.pub"
	expect 0 -q patch apply "$T/la.new.cptx" "$T/la.cptx.rev" -o "$T/o/old.cptx"
	cmp "$T/o/old.cptx" "$T/la.old.cptx" || fail "cryptex: reverse patch gives a different image"
	expect 0 patch info "$T/la.cptx.fwd"
	grep -q "hash  *[1-9]" "$T/out" || fail "cryptex: no hash-tree entries recomputed"
	rm -f "$T/o/new.cptx" "$T/o/old.cptx"
	ok "cryptex images: round trip both ways, hash tree entries recomputed ($(stat -c %s "$T/la.cptx.fwd") bytes)"
fi

A=$T/libarchive13 Z=$T/tzdata
if [ -f "$A.old.img" ] && [ -f "$Z.old.img" ]; then
	# Info, in both forms.
	expect 0 patch info "$A.fwd"
	assert_grep "deflate" "$T/out"
	expect 0 patch info --json "$A.fwd"
	python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["output"]["size"] > 0 and len(d["inputs"]) == 1' "$T/out" ||
		fail "info --json is not the expected JSON"
	# The digests it names are the documented piece digests of the images.
	want_in=$(piece_digest "$A.old.img") want_out=$(piece_digest "$A.new.img")
	python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["inputs"][0]["digest"] == sys.argv[2] and d["output"]["digest"] == sys.argv[3], d' \
		"$T/out" "$want_in" "$want_out" || fail "info: digests are not the documented piece digests"
	expect 0 patch digest "$A.old.img" "$A.new.img"
	[ "$(cut -c1-64 "$T/out" | tr '\n' ' ')" = "$want_in $want_out " ] || fail "patch digest: $(cat "$T/out")"
	ok "info, digests as documented"

	# Already up to date: left alone.
	cp "$A.new.img" "$T/o/new"
	touch -d @1000000000 "$T/o/new"
	expect 0 patch apply "$A.old.img" "$A.fwd" -o "$T/o/new"
	assert_grep "already up to date" "$T/err"
	[ "$(stat -c %Y "$T/o/new")" = 1000000000 ] || fail "an up-to-date output was rewritten"
	rm -f "$T/o/new"
	ok "up-to-date output left alone"

	# Wrong input: both digests named, nothing written.
	expect 1 patch apply "$Z.old.img" "$A.fwd" -o "$T/o/new"
	assert_grep "$(piece_digest "$Z.old.img")" "$T/err"
	assert_grep "$(piece_digest "$A.old.img")" "$T/err"
	no_leftovers
	ok "wrong input refused"

	# Damaged patches: a flipped byte in header, tables and data, and truncation.
	size=$(stat -c %s "$A.fwd")
	for off in 3 40 120 $((size / 2)) $((size - 1)); do
		cp "$A.fwd" "$T/bad"
		printf '\xa5' | dd of="$T/bad" bs=1 seek=$off conv=notrunc status=none
		expect 1 patch apply "$A.old.img" "$T/bad" -o "$T/o/new"
		assert_grep "patch" "$T/err"
		no_leftovers
	done
	head -c $((size - 100)) "$A.fwd" >"$T/bad"
	expect 1 patch apply "$A.old.img" "$T/bad" -o "$T/o/new"
	assert_grep "truncated" "$T/err"
	no_leftovers
	ok "damaged patches refused"

	# Two inputs: the tzdata and libarchive13 images both lead to the new libarchive13 image.
	expect 0 -q patch create "$A.old.img" "$A.new.img" --also-from "$Z.old.img" -o "$T/two" --threads 2
	for from in "$A.old.img" "$Z.old.img"; do
		expect 0 -q patch apply "$from" "$T/two" -o "$T/o/new" --threads 1
		cmp "$T/o/new" "$A.new.img" || fail "two-input patch from $from"
		rm -f "$T/o/new"
	done
	expect 1 patch apply "$Z.new.img" "$T/two" -o "$T/o/new"
	assert_grep "none of the 2 accepted inputs" "$T/err"
	no_leftovers
	ok "two-input patch from each input"

	# Full replacement.
	expect 0 -q patch create --full "$Z.new.img" -o "$T/full"
	expect 0 -q patch apply "$T/full" -o "$T/o/new"
	cmp "$T/o/new" "$Z.new.img" || fail "full replacement"
	rm -f "$T/o/new"
	expect 1 patch apply "$Z.old.img" "$T/full" -o "$T/o/new"
	assert_grep "takes no input" "$T/err"
	no_leftovers
	ok "full replacement"

	# Usage errors.
	expect 2 patch create "$A.old.img" -o "$T/x"
	expect 2 patch apply "$A.fwd"
	expect 2 patch create --level 99 "$A.old.img" "$A.new.img" -o "$T/x"
	expect 2 patch frobnicate
	ok "usage errors"
fi
echo "1..$TESTS_RUN"
