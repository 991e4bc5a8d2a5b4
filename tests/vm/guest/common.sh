# Shared by the lab's guest steps (sourced by the boot hook under set -euo
# pipefail). The host's test data are in $D (on 9p: copied to the guest's
# disk before rsr or veritysetup open them); results go to /lab/out.
D=/lab/data
W=/var/tmp/lab
O=/lab/out
mkdir -p "$W"

gfail() {
	echo "FAIL: $*"
	exit 1
}
gok() { echo "ok - $*"; }

# Copies data files to the guest's disk: stage NAME... (into $W).
stage() {
	local f
	for f in "$@"; do
		[ -e "$W/$f" ] || cp -a "$D/$f" "$W/$f"
	done
}

# The vendor's key, trusted by this device.
trust_vendor() {
	mkdir -p /etc/rsr/keys.d
	cp "$D/key.pub" /etc/rsr/keys.d/vendor.pub
}

# Runs rsr expecting exit status $1; output in $W/out and $W/err (also shown).
expect() {
	local want=$1 got=0
	shift
	rsr "$@" >"$W/out" 2>"$W/err" || got=$?
	cat "$W/out" "$W/err"
	[ "$got" = "$want" ] || gfail "rsr $*: exit $got, expected $want"
}

# JSON checks with jq: json FILE FILTER (must give true).
json() {
	jq -e "$2" "$1" >/dev/null || { echo "--- $1:"; cat "$1"; gfail "$1: $2 is not true"; }
}

# The rsr dm-verity devices and loop devices that exist now.
rsr_devices() {
	dmsetup ls --target verity 2>/dev/null | grep '^rsr-' || true
	losetup -l -n -O NAME,BACK-FILE 2>/dev/null | grep '/var/lib/rsr/' || true
}

drop_caches() {
	sync
	echo 3 >/proc/sys/vm/drop_caches
}

# True if the running kernel is MAJOR.MINOR or later.
kernel_at_least() { # MAJOR MINOR
	local v maj min
	v=$(uname -r)
	maj=${v%%.*}
	min=${v#*.}
	min=${min%%[!0-9]*}
	[ "$maj" -gt "$1" ] || { [ "$maj" = "$1" ] && [ "$min" -ge "$2" ]; }
}

# nginx serves the lab's repository ($D/repo) at http://127.0.0.1:8080.
serve_repo() {
	mkdir -p /srv/rsr
	cp -a "$D/repo/." /srv/rsr/
	cat >/etc/nginx/sites-enabled/rsr <<'CONF'
server {
	listen 127.0.0.1:8080;
	root /srv/rsr;
	location /metadata/ { add_header Cache-Control "no-cache"; }
}
CONF
	if systemctl is-active -q nginx.service; then
		systemctl reload nginx.service
	else
		rm -f /etc/systemd/system/nginx.service
		systemctl daemon-reload
		systemctl enable --now nginx.service
	fi
	curl -fsS -o /dev/null http://127.0.0.1:8080/metadata/timestamp.json || gfail "nginx does not serve the repository"
}
