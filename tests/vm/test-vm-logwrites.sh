#!/usr/bin/env bash
# In the lab's guest, on the kernel flavour given as $1: the device's state
# file system (/var/lib/rsr) on a dm-log-writes target during one install
# (a) -> (b) and one remove. On the host, every prefix of the log that ends
# at a flush or a FUA write is replayed onto a copy of the state disk
# (tests/vm/replay-log-writes.py), which is what a power cut at that moment
# can leave; rsr then recovers each one: the device is on exactly the old or
# the new response, every image verifies, and the operation runs again.
# Unlike killing a process, this catches a missing fsync.
. "$RSR_SRCDIR/tests/integration/libtest.sh"
need_root
if [ "${RSR_IN_NS:-}" != 1 ]; then
	RSR_IN_NS=1 RSR_NS_DIR=$T unshare -m --propagation private "$0" "$@"
	exit
fi
T=$RSR_NS_DIR
. "$RSR_SRCDIR/tests/vm/lab.sh"
lab_setup "${1:-stock}"
lab_vendor
lab_disk "$T/disk.img"
truncate -s 128M "$T/data.img"
truncate -s 1G "$T/log.img"
LAB_QEMU_EXTRA=(-drive "file=$T/data.img,if=virtio,format=raw,cache=writeback"
	-drive "file=$T/log.img,if=virtio,format=raw,cache=writeback")
lab_boot "$T/disk.img" step_logwrites
cat "$LAB_STEP_OUT"
python3 "$LAB_SRC/replay-log-writes.py" "$T/log.img" --list
V=$LAB_SHARE/data

# A device root on this host whose var/lib/rsr is a replayed copy.
R=$T/lw-root
mkdir -p "$R/etc/rsr/keys.d" "$R/usr" "$R/var/lib/rsr"
cp "$V/key.pub" "$R/etc/rsr/keys.d/vendor.pub"
printf 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\n' >"$R/etc/os-release"
sha() { sha256sum "$1" | cut -d' ' -f1; }
cat >"$T/check.sh" <<CHECK
#!/usr/bin/env bash
# One replayed prefix: recover, then old or new state, completely.
set -euo pipefail
RSR=$RSR R=$R V=$V T=$T
ALLOWED="\$1" NEXT="\$2"
copy=/dev/shm/rsr-lw-\$\$.img
cp --sparse=always "$T/data.img" "\$copy"
trap 'umount "\$R/var/lib/rsr" 2>/dev/null || true; rm -f "\$copy"' EXIT
mount -o loop "\$copy" "\$R/var/lib/rsr"
"\$RSR" -q status --root "\$R" >/dev/null || { echo "entry \$RSR_LW_ENTRY: recovery failed"; exit 1; }
state=\$("\$RSR" status --root "\$R" --json | python3 -c 'import json,sys; r=json.load(sys.stdin)["response"]; print(r["letter"] or "base")')
case " \$ALLOWED " in *" \$state "*) ;; *) echo "entry \$RSR_LW_ENTRY: the device is on \$state, not one of \$ALLOWED"; exit 1 ;; esac
case \$state in
base) want_ssl=$(sha "$V/ssl-base.cptx") want_lab=$(sha "$V/lab-base.cptx") ;;
a) want_ssl=$(sha "$V/ssl-a.cptx") want_lab=$(sha "$V/lab-a.cptx") ;;
b) want_ssl=$(sha "$V/ssl-a.cptx") want_lab=$(sha "$V/lab-b.cptx") ;;
esac
c=\$R/var/lib/rsr/cryptexes
[ "\$(sha256sum <"\$c/libssl3/current" | cut -d' ' -f1)" = "\$want_ssl" ] || { echo "entry \$RSR_LW_ENTRY: libssl3 is not \$state's"; exit 1; }
[ "\$(sha256sum <"\$c/lab/current" | cut -d' ' -f1)" = "\$want_lab" ] || { echo "entry \$RSR_LW_ENTRY: lab is not \$state's"; exit 1; }
for s in libssl3 lab; do
	"\$RSR" -q cryptex verify "\$c/\$s/current" --pubkey "\$V/key.pub" || { echo "entry \$RSR_LW_ENTRY: \$s does not verify"; exit 1; }
	[ "\$(ls "\$c/\$s" | wc -l)" = 2 ] || { echo "entry \$RSR_LW_ENTRY: slot \$s keeps more than its current image"; ls -la "\$c/\$s"; exit 1; }
done
[ ! -e "\$R/var/lib/rsr/response/journal.json" ] && [ ! -e "\$R/var/lib/rsr/response/incoming" ] ||
	{ echo "entry \$RSR_LW_ENTRY: a journal or incoming area is left after recovery"; exit 1; }
echo "\$state" >>"\$T/lw-states"
# The operation runs again from where the cut left the device.
if [ "\$state" != "\$NEXT" ]; then
	if [ "\$NEXT" = b ]; then "\$RSR" -q install "\$V/b" --root "\$R" --no-graft; else "\$RSR" -q remove --root "\$R" --no-graft; fi ||
		{ echo "entry \$RSR_LW_ENTRY: running the operation again failed"; exit 1; }
fi
CHECK
chmod +x "$T/check.sh"
total=0
replay() { # START END ALLOWED NEXT
	: >"$T/lw-states"
	cp --sparse=always "$T/data.img" "$T/data.orig"
	# The data disk as the guest left it is the end state; the replay starts from zeros.
	rm -f "$T/data.img" && truncate -s 128M "$T/data.img"
	python3 "$LAB_SRC/replay-log-writes.py" "$T/log.img" "$T/data.img" --start "$1" --end "$2" \
		--check "$T/check.sh '$3' '$4'" | tee "$T/replay.out" || fail "a replayed prefix of $1..$2 did not recover"
	local n
	n=$(awk '/prefixes checked/ {print $1}' "$T/replay.out")
	total=$((total + n))
	echo "# $1..$2: $n prefixes: $(sort "$T/lw-states" | uniq -c | tr '\n' ' ')"
	[ "$(sort -u "$T/lw-states" | wc -l)" = 2 ] || fail "the prefixes of $1..$2 did not show both the old and the new state"
	mv "$T/data.orig" "$T/data.img"
}
replay install-start install-end "a b" b
ok "install (a) -> (b): every flushed prefix recovers to (a) or (b)"
replay install-end remove-end "b base" base
ok "remove (b) -> base: every flushed prefix recovers to (b) or the base"
echo "# dm-log-writes: $total prefixes replayed and recovered"
echo "1..$TESTS_RUN"
