# The lab: a Debian 12 guest booted under qemu, with rsr installed, for what
# the host cannot show (dm-verity, systemd, boot, real power cuts). Sourced by
# the tests/vm/test-*.sh drivers after tests/integration/libtest.sh.
#
#   lab_setup FLAVOUR    the root file system (cached), the kernel FLAVOUR
#                        (stock: Debian 12's own; backports: bookworm-backports)
#   lab_disk DISK        a fresh disk: the root file system with rsr installed
#   lab_boot DISK STEP   boots it; the guest runs STEP (a shell function of
#                        tests/vm/guest/*.sh) and powers off; fails if the step
#                        failed, printing its output
#   lab_cut DISK STEP    the same, but the step ends by freezing rsr at a chosen
#                        point; then qemu is killed (a power cut)
#
# Everything the guest needs beyond its disk comes over 9p from $LAB_SHARE
# (the scripts, test data, and the step to run); what it reports goes back
# there. No network: servers the tests need run inside the guest.
command -v qemu-system-x86_64 >/dev/null || fail "qemu-system-x86_64 is not installed (scripts/install-deps installs it)"
command -v mmdebstrap >/dev/null || fail "mmdebstrap is not installed (scripts/install-deps installs it)"
command -v mkfs.ext4 >/dev/null || fail "mkfs.ext4 is not installed"
: "${RSR_BUILDDIR:?RSR_BUILDDIR must name the build to install into the guest}"

LAB_SRC=$RSR_SRCDIR/tests/vm
LAB_CACHE=${RSR_LAB_CACHE:-/var/cache/rsr-lab}
# One boot under software emulation takes about 25 s; a step gets this long.
LAB_TIMEOUT=${RSR_LAB_TIMEOUT:-600}
LAB_SHARE=$T/share
LAB_BOOTS=0
# More qemu arguments for every boot (e.g. further disks).
LAB_QEMU_EXTRA=()
mkdir -p "$LAB_SHARE/out"

# What the guest has: the stock kernel and bookworm-backports' (both, one
# chosen per boot), systemd, what rsr links and runs, and the tools the
# tests use. No package of rsr's own: rsr is installed from the build under test.
LAB_PACKAGES=linux-image-amd64,systemd,systemd-sysv,udev,dbus,kmod,initramfs-tools,e2fsprogs,procps,psmisc
LAB_PACKAGES+=,dmsetup,cryptsetup-bin,erofs-utils,util-linux,strace,nginx-light,openssl,curl,jq,man-db
LAB_PACKAGES+=,libssl3,libjansson4,libzstd1,libdivsufsort3,libcurl4
# Bumped when the recipe below changes in a way the package list does not show.
LAB_RECIPE=1

# The machine's own Debian sources for its release (no mirror host written
# into the tree), plus that release's backports on the same mirror.
lab_sources() {
	python3 - "$1" <<'PY'
import glob, re, sys
codename = sys.argv[1]
wanted = {codename, codename + "-updates", codename + "-security"}
entries = []
def add(types, uris, suites, comps, signed):
    suites = [s for s in suites if s in wanted]
    if "deb" in types and uris and suites:
        entries.append((uris, suites, comps or ["main"], signed))
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in re.split(r"\n\s*\n", open(path).read()):
        f, key = {}, None
        for line in stanza.splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            if line[0] in " \t" and key:
                f[key] += " " + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            f[key] = value.strip()
        if f.get("enabled", "yes").lower() != "no":
            add(f.get("types", "").split(), f.get("uris", "").split(), f.get("suites", "").split(),
                f.get("components", "").split(), f.get("signed-by"))
for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
    try:
        lines = open(path).read().splitlines()
    except OSError:
        continue
    for line in lines:
        m = re.match(r"deb\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)\s*(.*)", line.split("#")[0].strip())
        if m:
            opts = dict(o.split("=", 1) for o in (m.group(1) or "").split() if "=" in o)
            add(["deb"], [m.group(2)], [m.group(3)], m.group(4).split(), opts.get("signed-by"))
main = [e for e in entries if codename in e[1]]
if not main:
    sys.exit("lab: no Debian '%s' source is configured in /etc/apt" % codename)
uris, _, comps, signed = main[0]
entries.append((uris, [codename + "-backports"], comps, signed))
for uris, suites, comps, signed in entries:
    print("Types: deb\nURIs: %s\nSuites: %s\nComponents: %s" % (" ".join(uris), " ".join(suites), " ".join(comps)))
    if signed:
        print("Signed-By: %s" % signed)
    print()
PY
}

# Builds the guest's root file system once per package list and machine
# sources: 1-3 minutes, then cached in $LAB_CACHE. Sets LAB_ROOTFS.
lab_rootfs() {
	local codename key dir
	codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
	[ -n "$codename" ] || fail "lab: /etc/os-release names no VERSION_CODENAME"
	mkdir -p "$LAB_CACHE"
	lab_sources "$codename" >"$T/lab.sources" || fail "lab: cannot derive the guest's apt sources"
	key=$( { echo "$LAB_RECIPE $LAB_PACKAGES"; cat "$T/lab.sources"; } | sha256sum | cut -c1-16)
	dir=$LAB_CACHE/rootfs-$key
	LAB_ROOTFS=$dir
	exec {lockfd}>"$LAB_CACHE/lock"
	flock "$lockfd"
	if [ ! -f "$dir/.lab-complete" ]; then
		echo "# lab: building the guest's root file system ($codename, cached as $dir)"
		rm -rf "$dir" "$dir.tmp"
		local start=$SECONDS
		# Before any package is installed: a small initrd with just what
		# mounts the root disk.
		local setup='mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/usr/share/initramfs-tools/modules.d"
printf "MODULES=list\nCOMPRESS=zstd\n" >"$1/etc/initramfs-tools/conf.d/rsr-lab.conf"
printf "virtio_pci\nvirtio_blk\next4\n" >"$1/usr/share/initramfs-tools/modules.d/rsr-lab"'
		# The stock kernel comes with the release; the backports one is
		# installed beside it. Which is which is written down for lab_kernel.
		local customize='set -e
ls "$1/boot" | sed -n "s/^vmlinuz-//p" >"$1/.lab-stock"
chroot "$1" apt-get install -y -q -t '"$codename"'-backports linux-image-amd64
ls "$1/boot" | sed -n "s/^vmlinuz-//p" | grep -vxF -f "$1/.lab-stock" >"$1/.lab-backports"'
		mmdebstrap --variant=minbase --include="$LAB_PACKAGES" --setup-hook="$setup" \
			--customize-hook="$customize" "$codename" "$dir.tmp" "$T/lab.sources" >"$T/mmdebstrap.log" 2>&1 ||
			{ tail -40 "$T/mmdebstrap.log" >&2; fail "lab: mmdebstrap failed (log above)"; }
		[ "$(wc -l <"$dir.tmp/.lab-stock")" = 1 ] && [ "$(wc -l <"$dir.tmp/.lab-backports")" = 1 ] ||
			fail "lab: expected one stock and one backports kernel, got: $(ls "$dir.tmp/boot")"
		touch "$dir.tmp/.lab-complete"
		mv "$dir.tmp" "$dir"
		echo "# lab: root file system built in $((SECONDS - start)) s"
		# Older recipes' trees are of no further use.
		local old
		for old in "$LAB_CACHE"/rootfs-*; do
			[ "$old" = "$dir" ] || rm -rf --one-file-system "$old"
		done
	fi
	exec {lockfd}>&-
}

# Sets LAB_KREL, LAB_VMLINUZ and LAB_INITRD for a flavour.
lab_kernel() {
	case $1 in
	stock | backports) LAB_KREL=$(cat "$LAB_ROOTFS/.lab-$1") ;;
	*) fail "lab: unknown kernel flavour '$1' (stock or backports)" ;;
	esac
	LAB_FLAVOUR=$1
	LAB_VMLINUZ=$LAB_ROOTFS/boot/vmlinuz-$LAB_KREL
	LAB_INITRD=$LAB_ROOTFS/boot/initrd.img-$LAB_KREL
	[ -r "$LAB_VMLINUZ" ] && [ -r "$LAB_INITRD" ] || fail "lab: no kernel or initrd for $LAB_KREL"
}

lab_setup() { # FLAVOUR
	lab_rootfs
	lab_kernel "$1"
	mkdir -p "$LAB_SHARE/guest"
	cp "$LAB_SRC"/guest/*.sh "$LAB_SHARE/guest/"
	echo "# lab: kernel $LAB_KREL ($LAB_FLAVOUR)"
}

# The guest's disk: the cached root file system seen through an overlay,
# with rsr installed from the build under test (meson install, units
# included) and the lab's boot hook, written out by mkfs.ext4 -d. About 5 s.
lab_disk() { # DISK (LAB_INSTALL=none: without rsr, for a test that installs its packages)
	local disk=$1 w=$T/lab-assemble
	rm -rf "$w" && mkdir -p "$w/upper" "$w/work" "$w/merged"
	RSR_LAB_DISK=$disk RSR_LAB_W=$w RSR_LAB_ROOTFS=$LAB_ROOTFS RSR_LAB_SRC=$LAB_SRC RSR_LAB_INSTALL=${LAB_INSTALL:-meson} \
		unshare -m --propagation private bash -euo pipefail -c '
mount -t overlay lab -o "lowerdir=$RSR_LAB_ROOTFS,upperdir=$RSR_LAB_W/upper,workdir=$RSR_LAB_W/work" "$RSR_LAB_W/merged"
m=$RSR_LAB_W/merged
if [ "$RSR_LAB_INSTALL" = meson ]; then
	meson install -C "$RSR_BUILDDIR" --no-rebuild --quiet --destdir "$m" >/dev/null
	ldconfig -r "$m"
fi
install -D -m 0755 "$RSR_LAB_SRC/guest-boot-hook" "$m/usr/local/lib/rsr-lab/step"
install -D -m 0644 "$RSR_LAB_SRC/rsr-lab.service" "$m/etc/systemd/system/rsr-lab.service"
mkdir -p "$m/etc/systemd/system/multi-user.target.wants"
ln -sf ../rsr-lab.service "$m/etc/systemd/system/multi-user.target.wants/rsr-lab.service"
# Nothing that waits for a console, a clock or a network, and no
# service the tests do not start themselves.
for u in getty@tty1.service serial-getty@ttyS0.service systemd-timesyncd.service e2scrub_all.timer \
	e2scrub_reap.service fstrim.timer apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer \
	nginx.service; do
	ln -sf /dev/null "$m/etc/systemd/system/$u"
done
echo "/dev/vda / ext4 rw,errors=remount-ro 0 1" >"$m/etc/fstab"
echo lab >"$m/etc/hostname"
rm -f "$RSR_LAB_DISK"
truncate -s 4G "$RSR_LAB_DISK"
mkfs.ext4 -q -F -L lab -d "$m" "$RSR_LAB_DISK"
' || fail "lab: cannot assemble the guest's disk"
	rm -rf "$w"
}

# Runs qemu on DISK in the background; its console goes to $LAB_SHARE/console.log.
lab_qemu() { # DISK [extra qemu args...]
	local disk=$1
	shift
	qemu-system-x86_64 -accel tcg -smp 1 -cpu max -m 2048 -nographic -no-reboot -nic none \
		-kernel "$LAB_VMLINUZ" -initrd "$LAB_INITRD" \
		-append "root=/dev/vda rw console=ttyS0 quiet loglevel=4 systemd.show_status=0 panic=-1" \
		-drive "file=$disk,if=virtio,format=raw,cache=writeback" \
		-virtfs "local,path=$LAB_SHARE,mount_tag=lab,security_model=none,id=lab" \
		"${LAB_QEMU_EXTRA[@]}" "$@" </dev/null >>"$LAB_SHARE/console.log" 2>&1 &
	LAB_QEMU=$!
}

# Writes the step the guest runs at its next boot.
lab_step() { # STEP [args...]
	LAB_BOOTS=$((LAB_BOOTS + 1))
	LAB_STEP_OUT=$LAB_SHARE/out/$LAB_BOOTS-$1.log
	rm -f "$LAB_SHARE/rc" "$LAB_SHARE/cut"
	{
		printf 'LAB_BOOT=%d\nLAB_FLAVOUR=%s\n' "$LAB_BOOTS" "$LAB_FLAVOUR"
		printf 'LAB_OUT=/lab/out/%s\n' "${LAB_STEP_OUT##*/}"
		printf '%q ' "$@"
		echo
	} >"$LAB_SHARE/step"
	echo "--- boot $LAB_BOOTS: $*" >>"$LAB_SHARE/console.log"
}

lab_step_failed() {
	echo "--- guest output of step '$1' (boot $LAB_BOOTS, $LAB_KREL):" >&2
	cat "$LAB_STEP_OUT" >&2 2>/dev/null || echo "(none)" >&2
	echo "--- end of the guest console:" >&2
	tail -30 "$LAB_SHARE/console.log" >&2
	fail "lab: $2"
}

# Boots DISK, runs STEP in the guest and waits until it has powered off.
lab_boot() { # DISK STEP [args...]
	local disk=$1 start=$SECONDS
	shift
	lab_step "$@"
	lab_qemu "$disk"
	local rc=0
	timeout_wait "$LAB_QEMU" "$LAB_TIMEOUT" || rc=$?
	[ "$rc" != 124 ] || lab_step_failed "$1" "step '$1' did not finish within ${LAB_TIMEOUT}s"
	[ -f "$LAB_SHARE/rc" ] || lab_step_failed "$1" "the guest never ran step '$1' (qemu status $rc)"
	[ "$(cat "$LAB_SHARE/rc")" = 0 ] || lab_step_failed "$1" "step '$1' failed in the guest (status $(cat "$LAB_SHARE/rc"))"
	echo "# lab: boot $LAB_BOOTS ($1) took $((SECONDS - start)) s"
}

# Boots DISK and runs STEP, which ends by freezing an rsr operation at a
# chosen point and writing /lab/cut; qemu is then killed with SIGKILL, with
# whatever the guest had not written to its disk lost, as in a power cut.
lab_cut() { # DISK STEP [args...]
	local disk=$1 start=$SECONDS
	shift
	lab_step "$@"
	lab_qemu "$disk"
	local waited=0
	while [ ! -f "$LAB_SHARE/cut" ]; do
		if ! kill -0 "$LAB_QEMU" 2>/dev/null; then
			wait "$LAB_QEMU" || true
			lab_step_failed "$1" "the guest stopped before the cut point of step '$1'"
		fi
		[ $waited -lt $((LAB_TIMEOUT * 10)) ] || { kill -9 "$LAB_QEMU"; lab_step_failed "$1" "no cut point reached within ${LAB_TIMEOUT}s"; }
		sleep 0.1
		waited=$((waited + 1))
	done
	kill -9 "$LAB_QEMU"
	wait "$LAB_QEMU" 2>/dev/null || true
	echo "# lab: boot $LAB_BOOTS ($1) cut after $((SECONDS - start)) s: $(cat "$LAB_SHARE/cut")"
}

# Waits for PID for at most SECONDS; status 124 (and the process killed) on timeout.
timeout_wait() { # PID SECONDS
	local pid=$1 limit=$(($2 * 10)) n=0
	while kill -0 "$pid" 2>/dev/null; do
		if [ $n -ge $limit ]; then
			kill -9 "$pid" 2>/dev/null || true
			wait "$pid" 2>/dev/null || true
			return 124
		fi
		sleep 0.1
		n=$((n + 1))
	done
	wait "$pid"
}

# The vendor's side, built on the host with the rsr under test into
# $LAB_SHARE/data: a key, two slots' images for Debian 12 (build "12"):
#   libssl3  the corpus's OpenSSL 3.0.20 libraries (base), 3.0.22 (a and b)
#   lab      a marker file, a blob the tamper test damages, files the swap
#            readers read (base, a, b differ in each)
# and responses (a) (both slots from the base) and (b) (lab only, from the
# base or from (a)).
lab_vendor() {
	local v=$LAB_SHARE/data ssl
	[ -f "$v/.complete" ] && return 0
	mkdir -p "$v"
	ssl=$(corpus_pair libssl3)
	"$RSR" key generate -o "$v/key" >/dev/null 2>&1
	local l
	for l in base a b; do
		local t=$T/lab-tree-$l
		mkdir -p "$t/usr/share/rsr-lab" "$t/usr/lib/rsr-lab"
		echo "$l" >"$t/usr/share/rsr-lab/marker"
		echo "$l" >"$t/usr/share/rsr-lab/swap"
		# A tag at the start of a 4 KiB-aligned block lets the guest find
		# the blob's first block inside the image.
		{ printf 'RSR-LAB-TAMPER-%s' "$l"; head -c 1048560 /dev/urandom; } >"$t/usr/share/rsr-lab/blob"
		sha256sum <"$t/usr/share/rsr-lab/blob" | cut -d' ' -f1 >"$v/blob-$l.sha256"
		{ head -c 524288 /dev/urandom; echo "$l"; } >"$t/usr/lib/rsr-lab/big"
		sha256sum <"$t/usr/lib/rsr-lab/big" | cut -d' ' -f1 >"$v/big-$l.sha256"
		"$RSR" -q cryptex build "$t" -o "$v/lab-$l.cptx" --name lab --version "1.$l" --base 12 --key "$v/key"
	done
	"$RSR" -q cryptex build "$ssl/old" -o "$v/ssl-base.cptx" --name libssl3 --version 3.0.20 --base 12 --key "$v/key"
	"$RSR" -q cryptex build "$ssl/new" -o "$v/ssl-a.cptx" --name libssl3 --version 3.0.22 --base 12 --key "$v/key"
	cat >"$v/adv-a.json" <<'JSON'
{"advisories": [{"id": "DSA-9001-1", "title": "OpenSSL", "severity": "high",
  "summary": "A crafted certificate could crash TLS clients.",
  "cves": ["CVE-2026-0001"], "affected_files": ["/usr/lib/x86_64-linux-gnu/libssl.so.3"]}]}
JSON
	cat >"$v/adv-b.json" <<'JSON'
{"advisories": [{"id": "DSA-9003-1", "title": "lab", "severity": "low",
  "summary": "The lab's marker said the wrong thing.", "cves": ["CVE-2026-0003"],
  "affected_files": ["/usr/share/rsr-lab/marker"]}]}
JSON
	"$RSR" -q response create -o "$v/a" --base-build 12 --letter a --key "$v/key" --restart services \
		--slot libssl3="$v/ssl-base.cptx:$v/ssl-a.cptx" --slot lab="$v/lab-base.cptx:$v/lab-a.cptx" \
		--advisories "$v/adv-a.json"
	"$RSR" -q response create -o "$v/b" --base-build 12 --letter b --key "$v/key" \
		--slot libssl3="$v/ssl-base.cptx:$v/ssl-a.cptx" --slot lab="$v/lab-base.cptx:$v/lab-b.cptx" \
		--previous "$v/a" --advisories "$v/adv-b.json"
	touch "$v/.complete"
}

# json_get FILE EXPR: EXPR (Python, over the document d) of a JSON file the guest wrote.
json_get() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {"d": d}))' "$@"; }

# A repository with (a) and (b) published, in $LAB_SHARE/data/repo, for
# nginx in the guest to serve (its keys stay on the host).
lab_repo() {
	local v=$LAB_SHARE/data k=$T/lab-repo-keys r
	[ -d "$v/repo" ] && return 0
	mkdir -p "$k"
	for r in root targets snapshot timestamp; do
		"$RSR" key generate -o "$k/$r" >/dev/null 2>&1
	done
	"$RSR" -q repo init "$v/repo" --root-key "$k/root" --targets-key "$k/targets" \
		--snapshot-key "$k/snapshot" --timestamp-key "$k/timestamp"
	for r in a b; do
		"$RSR" -q repo add "$v/repo" "$v/$r" --key "$k/targets" --key "$k/snapshot" --key "$k/timestamp"
	done
}

# A series of COUNT responses for the power-cut tests, in $LAB_SHARE/data/sK
# (K = 1..COUNT): sequence K, each from the base or from response K-1 (so
# that K installs over K-1, and over the base), both slots changed by each
# (the lab slot's marker says "sK"; libssl3 alternates between two builds).
lab_series() { # COUNT
	local v=$LAB_SHARE/data count=$1 k ssl prev=""
	lab_vendor
	[ -f "$v/series-$count.complete" ] && return 0
	ssl=$(corpus_pair libssl3)
	"$RSR" -q cryptex build "$ssl/new" -o "$v/ssl-b.cptx" --name libssl3 --version 3.0.22+b --base 12 --key "$v/key"
	for k in $(seq "$count"); do
		local t=$T/lab-series-$k letter
		mkdir -p "$t/usr/share/rsr-lab"
		echo "s$k" >"$t/usr/share/rsr-lab/marker"
		head -c 65536 /dev/urandom >"$t/usr/share/rsr-lab/blob"
		"$RSR" -q cryptex build "$t" -o "$v/lab-s$k.cptx" --name lab --version "2.$k" --base 12 --key "$v/key"
		letter=$(printf "\\$(printf '%03o' $((97 + (k - 1) % 26)))")
		"$RSR" -q response create -o "$v/s$k" --base-build 12 --letter "$letter" --sequence "$k" --key "$v/key" \
			--slot libssl3="$v/ssl-base.cptx:$v/ssl-$([ $((k % 2)) = 1 ] && echo a || echo b).cptx" \
			--slot lab="$v/lab-base.cptx:$v/lab-s$k.cptx" ${prev:+--previous "$prev"} --advisories "$v/adv-a.json"
		prev=$v/s$k
		rm -rf "$t"
	done
	touch "$v/series-$count.complete"
}
