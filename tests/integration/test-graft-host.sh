#!/usr/bin/env bash
# Grafting over the machine's own /usr, inside a private mount namespace:
# the scratch root's /usr is a read-only bind of the host's /usr (with
# bin, lib, lib64 links as on a merged-/usr system) and programs run in it
# with chroot. A cryptex of the libssl3 tree whose OpenSSL differs from the
# host's makes `openssl version` report that library; a swap to the other
# tree leaves a running process on its old library, listed by rsr status;
# a cryptex adding a new soname makes it loadable only while grafted.
. "$(dirname "$0")/libtest.sh"
need_root
if [ "${RSR_IN_NS:-}" != 1 ]; then
	grep -qw erofs /proc/filesystems || modprobe erofs 2>/dev/null || skip_all "no EROFS in this kernel"
	grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || skip_all "no overlayfs in this kernel"
	[ -e /dev/loop-control ] || skip_all "no /dev/loop-control"
	command -v openssl >/dev/null || skip_all "no openssl program on the host"
	[ -L /lib ] || skip_all "the host's /lib is not a link into /usr (not merged-/usr)"
	unshare -m --propagation private true || skip_all "cannot make a private mount namespace"
	pair=$(corpus_pair libssl3)
	RSR_IN_NS=1 RSR_NS_DIR=$T RSR_PAIR=$pair unshare -m --propagation private "$0"
	exit
fi
W=$RSR_NS_DIR
pair=$RSR_PAIR
R=$W/root
multiarch=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
lib=usr/lib/$multiarch
[ -e "/$lib/libcrypto.so.3" ] || skip_all "the host has no /$lib/libcrypto.so.3"

mkdir -p "$R/usr" "$R/etc/rsr/keys.d" "$R/tmp"
mount --bind -o ro /usr "$R/usr"
for l in bin sbin lib lib64; do [ -L "/$l" ] && ln -s "$(readlink "/$l")" "$R/$l"; done
cp -L /etc/os-release "$R/etc/os-release"
"$RSR" key generate -o "$W/key" >/dev/null 2>&1
cp "$W/key.pub" "$R/etc/rsr/keys.d/"
build=$(. "$R/etc/os-release" && echo "${BUILD_ID:-${IMAGE_VERSION:-$VERSION_ID}}")
[ -n "$build" ] || skip_all "the host's os-release names no build"

libver() { grep -aoE -m1 'OpenSSL 3\.[0-9]+\.[0-9]+' "$1" | head -1; }
host=$(libver "/$lib/libcrypto.so.3")
old=$(libver "$pair/old/$lib/libcrypto.so.3")
new=$(libver "$pair/new/$lib/libcrypto.so.3")
if [ "$host" != "$old" ]; then first=old second=new; else first=new second=old; fi
firstver=$(libver "$pair/$first/$lib/libcrypto.so.3")
secondver=$(libver "$pair/$second/$lib/libcrypto.so.3")
[ "$firstver" != "$host" ] || skip_all "both corpus trees have the host's $host"
echo "# host library $host; grafting the $first tree ($firstver), then the $second tree ($secondver)"
for t in old new; do
	"$RSR" -q cryptex build "$pair/$t" -o "$W/$t.cptx" --name libssl3 --version "$(libver "$pair/$t/$lib/libcrypto.so.3" | cut -d' ' -f2)" \
		--base "$build" --key "$W/key"
done

run() { chroot "$R" "$@"; }
# Starts `openssl dgst` in the root reading a pipe held open on fd $2; sets $holder.
start_holder() {
	local fifo=$W/fifo.$1
	mkfifo "$fifo"
	chroot "$R" /usr/bin/openssl dgst -sha256 <"$fifo" >/dev/null &
	local pid=$!
	eval "exec $2>\"$fifo\""
	for _ in $(seq 100); do grep -q libcrypto "/proc/$pid/maps" 2>/dev/null && break; sleep 0.05; done
	grep -q libcrypto "/proc/$pid/maps" || fail "holder $1 did not load libcrypto"
	holder=$pid
}

run openssl version | grep -q "Library: $host\|^$host" || fail "before the graft openssl does not report $host"
start_holder 0 7
h0=$holder
cleanup_hooks+=("kill $h0 2>/dev/null")
expect 0 graft --root "$R" --add "$W/$first.cptx"
run openssl version >"$W/v1"
assert_grep "Library: $firstver" "$W/v1"
ok "grafted over the host's /usr: openssl version says Library: $firstver"

expect 0 status --root "$R"
assert_grep "^ *$h0 openssl .*libcrypto.so.3 (base file shadowed by the graft on $R/usr" "$T/out"
ok "a process started before the graft is listed as running the shadowed base library"

start_holder 1 8
h1=$holder
cleanup_hooks+=("kill $h1 2>/dev/null")
expect 0 graft --root "$R" --add "$W/$second.cptx"
run openssl version >"$W/v2"
assert_grep "Library: $secondver" "$W/v2"
range=$(awk '/libcrypto.so.3/ {print $1; exit}' "/proc/$h1/maps")
cmp "/proc/$h1/map_files/$range" "$pair/$first/$lib/libcrypto.so.3" || fail "the running process lost its old library"
expect 0 status --root "$R" --json
python3 - "$T/out" "$h0" "$h1" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
stale = {p["pid"]: p for p in s["stale_processes"]}
h0, h1 = int(sys.argv[2]), int(sys.argv[3])
assert h0 in stale and h1 in stale, s["stale_processes"]
assert stale[h1]["command"] == "openssl" and "swapped out" in stale[h1]["reason"], stale[h1]
assert "libcrypto.so.3" in stale[h1]["file"] or "libssl.so.3" in stale[h1]["file"], stale[h1]
assert "unit" in stale[h1] and stale[h1]["files"] >= 2, stale[h1]
PY
ok "after a swap: openssl says $secondver; a process started before keeps $firstver and is listed"

if [ -e /run/systemd/system ]; then
	expect 0 restart-services --root "$R"
	assert_grep "restart by hand: $h1" "$T/out"
else
	expect 1 restart-services --root "$R"
	assert_grep "systemd is not running" "$T/err"
	assert_grep "^ *$h1 openssl" "$T/err"
fi
expect 0 restart-services --root "$R" --dry-run
assert_grep "^ *$h1 openssl" "$T/out"
ok "restart-services says which processes need restarting and why it cannot restart them"

exec 7>&- 8>&-
wait "$h0" "$h1" 2>/dev/null || true
expect 0 status --root "$R"
assert_grep "no process runs code from superseded images" "$T/out"
ok "once they exit, nothing is listed"

# A new soname, in a second slot above the first: loadable only while grafted.
if command -v cc >/dev/null; then
	mkdir -p "$W/so/$lib" "$W/so-src"
	printf 'const char *rsr_hello(void) { return "hello from the cryptex"; }\n' >"$W/so-src/lib.c"
	printf '#include <stdio.h>\nconst char *rsr_hello(void);\nint main(void) { puts(rsr_hello()); return 0; }\n' >"$W/so-src/main.c"
	cc -shared -fPIC -Wl,-soname,librsrgrafttest.so.1 -o "$W/so/$lib/librsrgrafttest.so.1" "$W/so-src/lib.c"
	cc -o "$R/hello" "$W/so-src/main.c" "$W/so/$lib/librsrgrafttest.so.1"
	"$RSR" -q cryptex build "$W/so" -o "$W/so.cptx" --name zz-extra --version 1 --base "$build" --key "$W/key"
	run /hello >/dev/null 2>&1 && fail "the new library is found before the graft"
	expect 0 graft --root "$R" --add "$W/so.cptx"
	[ "$(run /hello)" = "hello from the cryptex" ] || fail "the grafted library is not found by the loader"
	run openssl version | grep -q "Library: $secondver" || fail "the lower slot is not visible under the new one"
	ok "a cryptex adding a new soname makes it loadable while grafted"
fi

expect 0 ungraft --root "$R"
run openssl version | grep -q "Library: $host\|^$host" || fail "after ungraft openssl does not report $host"
if [ -e "$R/hello" ]; then
	run /hello >/dev/null 2>&1 && fail "the new library is still found after ungraft"
	[ ! -e "/$lib/librsrgrafttest.so.1" ] || fail "the host's /usr was written to"
fi
ok "ungraft: the host's library again$([ -e "$R/hello" ] && echo ', the new soname gone')"
echo "1..$TESTS_RUN"
