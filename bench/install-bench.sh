#!/usr/bin/env bash
# Device-side install and remove of a response for the webkit2gtk pair (a
# 122 MiB cryptex), on a scratch device root (nothing is mounted): wall time
# of `rsr install` and `rsr remove` with --no-graft, that is staging,
# patching, verification and the journaled switch with its fsyncs, not the
# overlay mount.
#   bench/install-bench.sh [ROUNDS] [RSR]   (needs a build in build/)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
rsr=$(realpath "${2:-build/cmd/rsr}")
[ -x "$rsr" ] || { echo "build first: meson setup build && ninja -C build" >&2; exit 1; }
corpus=${RSR_CORPUS:-$(cd .. && pwd)/shared/corpus}
work=$(mktemp -d /var/tmp/rsr-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
bash "$corpus/unpack.sh" "$work/c" webkit2gtk >/dev/null
cd "$work"
"$rsr" -q key generate -o k
"$rsr" -q cryptex build c/webkit2gtk/old -o base.cptx --name webkit2gtk --version 1 --base bench-1 --key k
"$rsr" -q cryptex build c/webkit2gtk/new -o fixed.cptx --name webkit2gtk --version 2 --base bench-1 --key k
echo '{"advisories": [{"id": "BENCH-1", "title": "WebKitGTK", "severity": "high", "summary": "bench",
  "cves": [], "affected_files": []}]}' >adv.json
"$rsr" -q response create -o resp --base-build bench-1 --letter a --key k \
	--slot webkit2gtk=base.cptx:fixed.cptx --advisories adv.json
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "image $(stat -c %s fixed.cptx) bytes, forward patch $(stat -c %s resp/patches/*.forward.rsrp) bytes; device root on $(df --output=fstype . | tail -1)"

# $EPOCHREALTIME (microseconds), not $(date): no process of its own inside the interval.
ms() { echo $(( ($2 - $1) / 1000 )); }
ins=() rem=()
for i in $(seq "$rounds"); do
	rm -rf dev && mkdir -p dev/etc/rsr/keys.d dev/usr
	printf 'ID=bench\nVERSION_ID=1\nBUILD_ID=bench-1\n' >dev/etc/os-release
	cp k.pub dev/etc/rsr/keys.d/
	"$rsr" -q graft --root dev --add base.cptx --no-mount
	sync
	s=${EPOCHREALTIME/./}; "$rsr" -q install resp --root dev --no-graft; e=${EPOCHREALTIME/./}
	ins+=("$(ms "$s" "$e")")
	sync
	s=${EPOCHREALTIME/./}; "$rsr" -q remove --root dev --no-graft; e=${EPOCHREALTIME/./}
	rem+=("$(ms "$s" "$e")")
done
stats() { sort -n | awk '{ v[NR] = $1 } END { printf "best %d ms, median %d ms", v[1], v[int((NR + 1) / 2)] }'; }
echo "rsr install (base -> fixed): $(printf '%s\n' "${ins[@]}" | stats) over $rounds"
echo "rsr remove  (fixed -> base): $(printf '%s\n' "${rem[@]}" | stats) over $rounds"
