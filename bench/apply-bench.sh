#!/bin/bash
# Apply speed of rsr on the corpus pairs against a plain copy of the new image
# and, when its binaries are given, HDiffPatch's hpatchz, on the filesystem of
# WORKDIR (ext4, XFS, btrfs: the output is written there). The tools alternate
# in one loop, ROUNDS times; prints the best and the median of each, and the
# peak RSS and CPU time (user + system, which a busy machine inflates less than
# the elapsed time) of one more run.
#
# Usage: bench/apply-bench.sh [-r RSR] [-b RSR_BEFORE] [-c CORPUS] [-w WORKDIR]
#                             [-n ROUNDS] [--hdiffz HDIFFZ --hpatchz HPATCHZ] [PAIR...]
#
# -b runs a second rsr binary (an older build) in the same loop, for a
# before/after comparison that sees the same machine.
#
# Images are raw EROFS images made as bench/patch-bench.sh makes them. "cp" is
# `cp` of the new image; "cp+fsync" is the same followed by `sync FILE`
# (rsr's apply fsyncs its output before the rename that makes it visible,
# hpatchz does not); rsr's time includes both digest checks, the fsync and
# the rename. hpatchz runs with -p-2 on patches from
# `hdiffz -m-6 -SD -c-zstd-21-24`.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
RSR=$here/../build/cmd/rsr
RSR_B=
CORPUS=$(cd "$here/../.." && pwd)/shared/corpus
WORK=/var/tmp/rsr-apply-bench
ROUNDS=7
HDIFFZ= HPATCHZ=
while [ $# -gt 0 ]; do
	case $1 in
	-r) RSR=$2; shift 2 ;;
	-b) RSR_B=$2; shift 2 ;;
	-c) CORPUS=$2; shift 2 ;;
	-w) WORK=$2; shift 2 ;;
	-n) ROUNDS=$2; shift 2 ;;
	--hdiffz) HDIFFZ=$2; shift 2 ;;
	--hpatchz) HPATCHZ=$2; shift 2 ;;
	*) break ;;
	esac
done
PAIRS=${*:-libssl3 systemd webkit2gtk}
UUID=6a1c3f9e-3b0b-4d2e-9a51-2f7c1d9e8b01
mkdir -p "$WORK"

image() { # pair version
	local img=$WORK/$1.$2.img
	[ -f "$img" ] && { echo "$img"; return; }
	[ -d "$WORK/tree/$1" ] || bash "$CORPUS/unpack.sh" "$WORK/tree" "$1" >/dev/null
	mkfs.erofs --quiet -T0 --all-root -E noinline_data -U $UUID "$img" "$WORK/tree/$1/$2"
	echo "$img"
}

# Seconds of one run of "$@" (output removed first), into T.
run() {
	local t0 t1
	rm -f "$WORK/out"
	t0=$EPOCHREALTIME
	"$@" >/dev/null 2>"$WORK/err" || { cat "$WORK/err" >&2; exit 1; }
	t1=$EPOCHREALTIME
	T=$(echo "$t1 - $t0" | bc)
}
stats() { # times...: "best median"
	printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {printf "%.4f %.4f", a[1], a[int((NR+1)/2)]}'
}
rss() { # "peak-RSS-MiB cpu-seconds" of one run
	rm -f "$WORK/out"
	/usr/bin/time -f '%M %U %S' -o "$WORK/mem" "$@" >/dev/null 2>&1
	tail -1 "$WORK/mem" | awk '{printf "%d %.3f", $1 / 1024, $2 + $3}'
}
cp_sync() { cp "$1" "$2" && sync "$2"; }

printf '| pair | image | cp | cp+fsync | rsr before | rsr apply -j2 | rsr / cp | rsr / cp+fsync | hpatchz -p-2 | hpatchz+fsync | rsr / hpatchz | rsr RSS MiB | rsr CPU s | before CPU s | hpatchz RSS MiB | hpatchz CPU s |\n'
printf '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n'
for p in $PAIRS; do
	old=$(image "$p" old) new=$(image "$p" new)
	size=$(stat -c %s "$new")
	[ -f "$WORK/$p.rsrp" ] || "$RSR" -q -j2 patch create "$old" "$new" -o "$WORK/$p.rsrp"
	if [ -n "$HPATCHZ" ] && [ ! -f "$WORK/$p.hdp" ]; then
		"$HDIFFZ" -m-6 -SD -c-zstd-21-24 -f "$old" "$new" "$WORK/$p.hdp" >/dev/null
	fi
	cat "$old" "$new" >/dev/null # page cache warm for every tool
	c=() cs=() r=() rb_=() h=() hs=()
	for i in $(seq "$ROUNDS"); do
		run cp "$new" "$WORK/out"; c+=("$T")
		run cp_sync "$new" "$WORK/out"; cs+=("$T")
		run "$RSR" -q -j2 patch apply "$old" "$WORK/$p.rsrp" -o "$WORK/out"; r+=("$T")
		cmp -s "$WORK/out" "$new" || { echo "$p: rsr output differs" >&2; exit 1; }
		if [ -n "$RSR_B" ]; then
			run "$RSR_B" -q -j2 patch apply "$old" "$WORK/$p.rsrp" -o "$WORK/out"; rb_+=("$T")
		fi
		if [ -n "$HPATCHZ" ]; then
			run "$HPATCHZ" -p-2 -f "$old" "$WORK/$p.hdp" "$WORK/out"; h+=("$T")
			run sh -c '"$0" -p-2 -f "$1" "$2" "$3" && sync "$3"' "$HPATCHZ" "$old" "$WORK/$p.hdp" "$WORK/out"
			hs+=("$T")
		fi
	done
	read -r cb cm <<<"$(stats "${c[@]}")"
	read -r csb csm <<<"$(stats "${cs[@]}")"
	read -r rb rm_ <<<"$(stats "${r[@]}")"
	read -r rk rcpu <<<"$(rss "$RSR" -q -j2 patch apply "$old" "$WORK/$p.rsrp" -o "$WORK/out")"
	hc=- hsc=- ratio=- hk=- hcpu=- bc_=-
	bcpu=-
	if [ -n "$RSR_B" ]; then
		bc_=$(stats "${rb_[@]}" | sed 's| | / |')
		read -r _ bcpu <<<"$(rss "$RSR_B" -q -j2 patch apply "$old" "$WORK/$p.rsrp" -o "$WORK/out")"
	fi
	if [ -n "$HPATCHZ" ]; then
		read -r hb hm <<<"$(stats "${h[@]}")"
		read -r hsb hsm <<<"$(stats "${hs[@]}")"
		hc="$hb / $hm" hsc="$hsb / $hsm" ratio=$(printf '%.2f' "$(echo "$rb / $hb" | bc -l)")
		read -r hk hcpu <<<"$(rss "$HPATCHZ" -p-2 -f "$old" "$WORK/$p.hdp" "$WORK/out")"
	fi
	printf '| %s | %d | %s / %s | %s / %s | %s | %s / %s | %.2f | %.2f | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$p" "$size" \
		"$cb" "$cm" "$csb" "$csm" "$bc_" "$rb" "$rm_" "$(echo "$rb / $cb" | bc -l)" "$(echo "$rb / $csb" | bc -l)" \
		"$hc" "$hsc" "$ratio" "$rk" "$rcpu" "$bcpu" "$hk" "$hcpu"
	rm -f "$WORK/out"
done
