#!/usr/bin/env bash
# Cryptex build and verify speed on the webkit2gtk new tree (about 120 MB),
# against the machine's SHA-256 limit (`openssl speed -evp sha256 -bytes 4096`).
#   bench/cryptex-bench.sh [ROUNDS]      (needs a build in build/)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-10}
rsr=build/cmd/rsr
[ -x "$rsr" ] || { echo "build first: meson setup build && ninja -C build" >&2; exit 1; }
corpus=${RSR_CORPUS:-$(cd .. && pwd)/shared/corpus}
work=$(mktemp -d /var/tmp/rsr-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
bash "$corpus/unpack.sh" "$work/c" webkit2gtk >/dev/null
"$rsr" key generate -o "$work/k" >/dev/null 2>&1

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
# The SHA-256 limit, on one core and per core with both busy (-multi 2), in bytes/s.
ossl_speed() { openssl speed "$@" -evp sha256 -bytes 4096 -seconds 3 2>/dev/null | awk '/^sha256 / { v = $2 } END { sub("k", "", v); printf "%.0f\n", v * 1000 }'; }
ossl=$(ossl_speed)
ossl_multi=$(echo "$(ossl_speed -multi "$(nproc)") / $(nproc)" | bc -l)
printf 'openssl speed -evp sha256 -bytes 4096: %.0f MB/s on one core, %.0f MB/s per core with -multi %d\n' \
	"$(echo "$ossl / 1000000" | bc -l)" "$(echo "$ossl_multi / 1000000" | bc -l)" "$(nproc)"

best_build=999999
for i in 1 2 3; do
	rm -f "$work/wk.cptx"
	/usr/bin/time -f "%e %M" -o "$work/time" "$rsr" -q cryptex build "$work/c/webkit2gtk/new" -o "$work/wk.cptx" \
		--name webkit2gtk --version 2.50.6-1~deb12u2 --base debian-12 --key "$work/k"
	read -r secs kb <"$work/time"
	if (( $(echo "$secs < $best_build" | bc) )); then best_build=$secs; best_kb=$kb; fi
done
size=$("$rsr" cryptex info --json "$work/wk.cptx" | python3 -c 'import json,sys; print(json.load(sys.stdin)["image_size"])')
echo "cryptex build (webkit2gtk new, $(du -sm "$work/c/webkit2gtk/new" | cut -f1) MB tree, image $((size / 1000000)) MB): best of 3 ${best_build}s, peak RSS ${best_kb} KB (largest of rsr, cp and mkfs.erofs)"

# The page cache holds the image as `cryptex build` wrote it: in 2 MiB windows,
# which the kernel keeps in huge folios where the filesystem has large folios.
"$rsr" -v cryptex verify "$work/wk.cptx" --pubkey "$work/k.pub" 2>&1 | sed -n 's/^rsr: [^:]*: \(.* in place\)$/verify: \1/p'

# Best whole-command time of `rsr -jN cryptex verify FILE`, in ns.
verify_best() {
	local best=999999999999 s e t
	for i in $(seq "$rounds"); do
		# $EPOCHREALTIME, not $(date): no process of its own inside the interval.
		s=${EPOCHREALTIME/./}
		"$rsr" -q -j"$1" cryptex verify "$2" --pubkey "$work/k.pub"
		e=${EPOCHREALTIME/./}
		t=$(( (e - s) * 1000 ))
		[ "$t" -lt "$best" ] && best=$t
	done
	echo "$best"
}
# What a verification costs whatever the image's size (process start, OpenSSL
# set-up, key, signature): the same command on a cryptex of one small file.
mkdir -p "$work/tiny/usr/share/doc/tiny"
echo tiny >"$work/tiny/usr/share/doc/tiny/README"
"$rsr" -q cryptex build "$work/tiny" -o "$work/tiny.cptx" --name tiny --version 1 --base debian-12 --key "$work/k"
for threads in 1 2; do
	best=$(verify_best "$threads" "$work/wk.cptx")
	fixed=$(verify_best "$threads" "$work/tiny.cptx")
	rate=$(echo "$size / ($best / 1000000000)" | bc -l)
	pass=$(echo "$size / (($best - $fixed) / 1000000000)" | bc -l)
	limit=$ossl
	[ "$threads" -gt 1 ] && limit=$ossl_multi
	printf 'rsr cryptex verify -j%d: best of %d %.4fs (whole command), %.0f MB/s, %.0f MB/s per core = %.0f%% of openssl speed per core\n' \
		"$threads" "$rounds" "$(echo "$best / 1000000000" | bc -l)" "$(echo "$rate / 1000000" | bc -l)" \
		"$(echo "$rate / $threads / 1000000" | bc -l)" "$(echo "100 * $rate / $threads / $limit" | bc -l)"
	printf '  less the %.1f ms the command takes on a one-file cryptex: %.0f MB/s per core = %.0f%% of openssl speed per core\n' \
		"$(echo "$fixed / 1000000" | bc -l)" "$(echo "$pass / $threads / 1000000" | bc -l)" \
		"$(echo "100 * $pass / $threads / $limit" | bc -l)"
done
echo "in-library hashing (build/bench/verity-bench, best of $rounds; per core against the same number of busy cores):"
build/bench/verity-bench "$work/wk.cptx" 2 "$rounds" | while read -r line; do
	t=$(sed -n 's/.*threads=\([0-9]*\).*/\1/p' <<<"$line")
	mbs=$(sed -n 's/.*rate=\([0-9]*\) MB\/s.*/\1/p' <<<"$line")
	limit=$ossl
	[ "$t" -gt 1 ] && limit=$ossl_multi
	printf '%s = %.0f%% of openssl speed per core\n' "$line" "$(echo "100 * $mbs * 1000000 / $t / $limit" | bc -l)"
done
