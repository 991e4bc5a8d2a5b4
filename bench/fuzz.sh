#!/usr/bin/env bash
# Runs every libFuzzer target for SECONDS each (default 60) on a copy of its
# seed corpus, and reports executions, coverage and crashes. New crashes are
# left in tests/fuzz/crashes/NAME/; copy each into tests/fuzz/corpus/NAME/
# once fixed, so the normal test suite replays it.
#   bench/fuzz.sh [SECONDS] [TARGET...]
# With RSR_FUZZ_WORK=DIR the working corpus of each target is kept in DIR/NAME
# and grows across runs, so a long campaign can be run in pieces; each run's
# libFuzzer log is appended to DIR/NAME.log.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
if [ -f build-fuzz/build.ninja ]; then
	meson setup --reconfigure build-fuzz -Dfuzzers=true >/dev/null
else
	CC=clang meson setup build-fuzz -Dfuzzers=true -Db_lundef=false -Db_sanitize=address,undefined >/dev/null
fi
ninja -C build-fuzz >/dev/null
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
	for f in build-fuzz/tests/fuzz/fuzz-*; do
		case $f in *-regress|*.p) continue ;; esac
		[ -x "$f" ] && targets+=("$(basename "$f" | sed 's/^fuzz-//')")
	done
fi
for t in "${targets[@]}"; do
	if [ -n "${RSR_FUZZ_WORK:-}" ]; then
		work=$RSR_FUZZ_WORK/$t
		[ -d "$work" ] || { mkdir -p "$work" && cp -r "tests/fuzz/corpus/$t/." "$work/"; }
	else
		work=$(mktemp -d /var/tmp/rsr-fuzz.XXXXXX)
		cp -r "tests/fuzz/corpus/$t/." "$work/"
	fi
	mkdir -p "tests/fuzz/crashes/$t"
	log=$(mktemp /var/tmp/rsr-fuzz-log.XXXXXX)
	set +e
	"build-fuzz/tests/fuzz/fuzz-$t" -max_total_time="$secs" -print_final_stats=1 \
		-artifact_prefix="tests/fuzz/crashes/$t/" "$work" >"$log" 2>&1
	rc=$?
	set -e
	execs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log")
	cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
	ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
	crashes=$(find "tests/fuzz/crashes/$t" -type f | wc -l)
	echo "fuzz-$t: ${secs}s, ${execs:-0} executions, coverage ${cov:-0} edges, ${ft:-0} features, corpus $(ls "$work" | wc -l) inputs, exit $rc, crash files $crashes"
	if [ -n "${RSR_FUZZ_WORK:-}" ]; then
		cat "$log" >>"$RSR_FUZZ_WORK/$t.log"
		rm -f "$log"
	else
		rm -rf "$work" "$log"
	fi
done
