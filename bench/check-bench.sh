#!/usr/bin/env bash
# What a background check costs, over nginx on 127.0.0.1, with the test
# suite's vendor and repository (two responses for libssl3 and libxml2):
# wall time of `rsr check` answered 304 and unconditionally, the bytes and
# requests of each, the bytes of a release, and from them what a fleet's
# checks ask of the repository (or its CDN) at the timer's cadence.
#   bench/check-bench.sh [ROUNDS] [DEVICES]   (needs a build in build/)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-20}
devices=${2:-1000000}
export RSR=${RSR:-$PWD/build/cmd/rsr} RSR_SRCDIR=$PWD LD_LIBRARY_PATH=$PWD/build/lib
[ -x "$RSR" ] || { echo "build first: meson setup build && ninja -C build" >&2; exit 1; }
. tests/integration/libtest.sh
. tests/integration/libresponse.sh
. tests/integration/librepo.sh
vendor_setup
repo_setup
nginx_start "$R"
D=$T/dev
repo_device "$D"
log=$T/nginx/access.log
E=$D/var/lib/rsr/tuf/timestamp.etag.json
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"

# The device installs (b), so that a check then finds nothing new: the steady state.
"$RSR" -q update --root "$D" --no-graft
ms() { echo $((($2 - $1) / 1000)); }
mean() { local s=0; for v in "$@"; do s=$((s + v)); done; echo $((s / $#)); }
cond=() uncond=()
for i in $(seq "$rounds"); do
	s=${EPOCHREALTIME/./}; "$RSR" -q check --root "$D" >/dev/null; e=${EPOCHREALTIME/./}
	cond+=("$(ms "$s" "$e")")
	cp "$E" "$T/etag"
	rm "$E"
	s=${EPOCHREALTIME/./}; "$RSR" -q check --root "$D" >/dev/null; e=${EPOCHREALTIME/./}
	uncond+=("$(ms "$s" "$e")")
done
echo "rsr check, nothing new: $(mean "${cond[@]}") ms answered 304, $(mean "${uncond[@]}") ms unconditional (mean of $rounds)"

# On the wire: requests and bytes of each kind of check (headers as curl sees them).
etag=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["etag"])' "$E")
url=http://127.0.0.1:$PORT/metadata/timestamp.json
resp304=$(curl -s -o /dev/null -D - -H "If-None-Match: $etag" "$url" | wc -c)
req304=$(curl -s -o /dev/null -w '%{size_request}' -H "If-None-Match: $etag" "$url")
: >"$log"
"$RSR" -q check --root "$D" >/dev/null
n304=$(grep -c . "$log")
: >"$log"
rm "$E"
"$RSR" -q check --root "$D" >/dev/null
nfull=$(grep -c . "$log")
full_body=$(awk '{s += $4} END {print s}' "$log")
full_hdr=$(curl -s -o /dev/null -w '%{size_header}' "$url")
echo "304 check: $n304 request, $req304 bytes up, $resp304 bytes of headers down, no body"
echo "unconditional check: $nfull requests, $full_body body bytes (+ about $full_hdr bytes of headers each)"

# A release: what a device on the base fetches for (b).
D2=$T/dev2
repo_device "$D2"
"$RSR" -q check --root "$D2" >/dev/null
: >"$log"
"$RSR" -q update --root "$D2" --no-graft
rel_req=$(grep -c . "$log")
rel_bytes=$(awk '{s += $4} END {print s}' "$log")
echo "release: a device on the base fetched $rel_bytes body bytes in $rel_req requests (metadata and patches)"

# A fleet at the timer's cadence: OnUnitActiveSec=15min, RandomizedDelaySec=5min (mean period 17.5 min).
python3 - "$devices" "$req304" "$resp304" "$rel_bytes" <<'PY'
import sys
n, up, down, rel = (int(x) for x in sys.argv[1:])
period = 17.5 * 60
rps = n / period
print(f"fleet of {n:,} devices, a check every 15-20 min: {rps:,.0f} requests/s while idle, "
      f"{rps * down * 8 / 1e6:,.1f} Mbit/s down and {rps * up * 8 / 1e6:,.1f} Mbit/s up, "
      f"{n * 86400 / period * down / 1e9:,.1f} GB of 304 headers a day")
print(f"a release to all of them within one 20 min window: {n * rel / 1e9:,.0f} GB, "
      f"{n * rel * 8 / 1200 / 1e9:,.1f} Gbit/s on average over the window")
print("time to protection: at most 20 min after publication plus the update itself (mean about 9 min), against up to 7 h at the old 6 h + 1 h cadence")
PY
