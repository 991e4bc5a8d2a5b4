#!/bin/bash
# Benchmarks rsr patch against bsdiff, xdelta3 -9 -S djw and
# zstd --patch-from -19 --long on the images of the corpus pairs: patch
# sizes, create time and peak memory, apply throughput and memory.
#
# Usage: bench/patch-bench.sh [-r RSR] [-c CORPUS] [-w WORKDIR] [--no-peers] [--hdiff DIR] [PAIR...]
# CORPUS is a directory laid out like ../shared/corpus (debs/, pairs.tsv,
# unpack.sh, SHA256SUMS); with no PAIR, every pair of its pairs.tsv is run.
# --hdiff DIR runs HDiffPatch's hdiffz and hpatchz from DIR as one more peer
# (it is not packaged in Debian; see bench/RESULTS.md for how it was built).
# "best" is the smallest peer patch measured (or, for the corpus pairs, the
# smallest recorded in issue 3 when that is smaller).
# Images are raw EROFS images made exactly like cryptex images
# (mkfs.erofs --quiet -T0 --all-root -E noinline_data -U <uuid>); with
# --cptx, `rsr cryptex build` images are used instead (needs a signing key).
# Prints a Markdown table. Apply output goes to WORKDIR (use a tmpfs to
# measure the patcher rather than the disk).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
RSR=${RSR:-$here/../build/cmd/rsr}
CORPUS=$(cd "$here/../.." && pwd)/shared/corpus
WORK=/dev/shm/rsr-bench
PEERS=1
HDIFF=
CPTX=0
THREADS=2
while [ $# -gt 0 ]; do
	case $1 in
	-r) RSR=$2; shift 2 ;;
	-c) CORPUS=$2; shift 2 ;;
	-w) WORK=$2; shift 2 ;;
	-j) THREADS=$2; shift 2 ;;
	--no-peers) PEERS=0; shift ;;
	--cptx) CPTX=1; shift ;;
	--hdiff) HDIFF=$2; shift 2 ;;
	*) break ;;
	esac
done
PAIRS=${*:-$(grep -v '^#' "$CORPUS/pairs.tsv" | cut -f1)}
declare -A BEST=([libssl3]=480505 [libarchive13]=16091 [libxml2]=62677 [openssh-client]=85809
	[systemd]=120852 [tzdata]=105822 [webkit2gtk]=15364)
UUID=6a1c3f9e-3b0b-4d2e-9a51-2f7c1d9e8b01
mkdir -p "$WORK"

# Runs a command RUNS times; sets SECS (the fastest run: the machine may be
# shared) and KB (the largest peak RSS). `pre` runs before each run.
RUNS=${RUNS:-3}
pre=true
measure() {
	local t0 t1 s k i
	SECS=999999 KB=0
	for i in $(seq "$RUNS"); do
		$pre
		t0=$(date +%s.%N)
		/usr/bin/time -f %M -o "$WORK/mem" "$@" >/dev/null 2>"$WORK/err" || { cat "$WORK/err" >&2; return 1; }
		t1=$(date +%s.%N)
		s=$(echo "$t1 - $t0" | bc)
		k=$(tail -1 "$WORK/mem")
		[ "$(echo "$s < $SECS" | bc)" = 1 ] && SECS=$s
		[ "$k" -gt "$KB" ] && KB=$k
	done
	return 0
}

image() { # pair version
	local img=$WORK/$1.$2.img
	[ $CPTX = 1 ] && img=$WORK/$1.$2.cptx
	[ -f "$img" ] && { echo "$img"; return; }
	if [ ! -d "$WORK/tree/$1" ]; then
		bash "$CORPUS/unpack.sh" "$WORK/tree" "$1" >/dev/null
	fi
	if [ $CPTX = 1 ]; then
		[ -f "$WORK/key" ] || "$RSR" key generate -o "$WORK/key" >/dev/null 2>&1
		"$RSR" -q cryptex build "$WORK/tree/$1/$2" -o "$img" --name os --version "$2" --base bench-1 \
			--key "$WORK/key" --timestamp 1700000000 >/dev/null
	else
		mkfs.erofs --quiet -T0 --all-root -E noinline_data -U $UUID "$img" "$WORK/tree/$1/$2"
	fi
	echo "$img"
}

printf '| pair | image | rsr | best peer | rsr/best | bsdiff | xdelta3 | zstd | hdiffz | rsr create s | MiB | bsdiff create s | MiB | hdiffz create s | MiB | rsr apply s | GB/s | MiB | MiB beyond input | hpatchz apply s |\n'
printf '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n'
tot=0 totbest=0 worst=0
for p in $PAIRS; do
	old=$(image "$p" old) new=$(image "$p" new)
	size=$(stat -c %s "$new")
	measure "$RSR" -q -j "$THREADS" patch create "$old" "$new" -o "$WORK/$p.rsrp"
	cs=$SECS ckb=$KB
	pre="rm -f $WORK/$p.out"
	measure "$RSR" -q -j "$THREADS" patch apply "$old" "$WORK/$p.rsrp" -o "$WORK/$p.out"
	pre=true
	as=$SECS akb=$KB
	cmp -s "$WORK/$p.out" "$new" || { echo "$p: rsr output differs" >&2; exit 1; }
	rm -f "$WORK/$p.out"
	rs=$(stat -c %s "$WORK/$p.rsrp")
	bs=- xs=- zs=- bt=- bkb=- hs=- ht=- hkb=- hat=-
	best=${BEST[$p]:-0}
	if [ -n "$HDIFF" ]; then
		RUNS=1 measure "$HDIFF/hdiffz" -m-6 -SD -c-zstd-21-24 -p-2 -f "$old" "$new" "$WORK/$p.hdiff"
		ht=$SECS hkb=$((KB / 1024)) hs=$(stat -c %s "$WORK/$p.hdiff")
		pre="rm -f $WORK/$p.hout"
		RUNS=1 measure "$HDIFF/hpatchz" -f "$old" "$WORK/$p.hdiff" "$WORK/$p.hout"
		pre=true hat=$SECS
		cmp -s "$WORK/$p.hout" "$new" || { echo "$p: hpatchz output differs" >&2; exit 1; }
		rm -f "$WORK/$p.hout"
		[ "$best" = 0 ] || [ "$hs" -lt "$best" ] && best=$hs
	fi
	if [ $PEERS = 1 ]; then
		RUNS=1 measure bsdiff "$old" "$new" "$WORK/$p.bsdiff"
		bt=$SECS bkb=$((KB / 1024)) bs=$(stat -c %s "$WORK/$p.bsdiff")
		xdelta3 -9 -S djw -f -e -s "$old" "$new" "$WORK/$p.xd3"
		xs=$(stat -c %s "$WORK/$p.xd3")
		zstd -q -f --patch-from="$old" -19 --long=31 "$new" -o "$WORK/$p.zst" 2>/dev/null
		zs=$(stat -c %s "$WORK/$p.zst")
		for x in $bs $xs $zs; do
			[ "$best" = 0 ] || [ "$x" -lt "$best" ] && best=$x
		done
	fi
	[ "$best" = 0 ] && best=$rs # no peer measured or recorded
	tot=$((tot + rs)) totbest=$((totbest + best))
	insize=$(stat -c %s "$old")
	ratio=$(echo "$rs / $best" | bc -l)
	[ "$(echo "$ratio > $worst" | bc)" = 1 ] && worst=$ratio
	printf '| %s | %d | %d | %d | %.3f | %s | %s | %s | %s | %.2f | %d | %s | %s | %s | %s | %.3f | %.2f | %d | %d | %s |\n' \
		"$p" "$size" "$rs" "$best" "$ratio" "$bs" "$xs" "$zs" "$hs" "$cs" $((ckb / 1024)) \
		"$bt" "$bkb" "$ht" "$hkb" "$as" "$(echo "$size / $as / 1000000000" | bc -l)" $((akb / 1024)) \
		$(((akb * 1024 - insize) / 1048576)) "$hat"
done
printf '| **total** | | %d | %d | %.3f | | | | | | | | | | | | | | | |\n' $tot $totbest "$(echo "$tot / $totbest" | bc -l)"
printf '\nThe largest pair ratio: %.3f\n' "$worst"
