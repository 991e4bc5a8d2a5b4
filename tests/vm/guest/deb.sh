# rsr as Debian packages on a clean Debian 12: the guest's disk has no rsr
# until the packages built on the host (in $D/debs) are installed with dpkg.

# Boot 1: install the packages; the maintainer scripts enable the units but
# start nothing and mount nothing; enroll in the repository nginx serves;
# install and graft the base images.
step_deb_install() {
	! command -v rsr >/dev/null || gfail "rsr is on the disk before its packages are installed"
	mkdir -p "$W/debs"
	cp "$D"/debs/*.deb "$W/debs/"
	dpkg -i "$W"/debs/librsr0_*.deb "$W"/debs/rsr_*.deb >"$O/dpkg.log" 2>&1 || { cat "$O/dpkg.log"; gfail "dpkg -i"; }
	rsr --version
	[ "$(systemctl is-enabled rsr-graft.service)" = enabled ] || gfail "rsr-graft.service is not enabled"
	[ "$(systemctl is-enabled rsr-update.timer)" = enabled ] || gfail "rsr-update.timer is not enabled"
	[ "$(systemctl is-active rsr-graft.service)" != active ] || gfail "installing the package started rsr-graft.service"
	[ "$(systemctl is-active rsr-update.timer)" != active ] || gfail "installing the package started rsr-update.timer"
	if findmnt -n -t overlay /usr >/dev/null; then gfail "installing the package grafted"; fi
	man -w rsr-enroll >/dev/null || gfail "the packaged manual pages are not installed"
	gok "dpkg -i librsr0 rsr: the units are enabled, nothing started, nothing mounted"

	serve_repo
	expect 0 enroll --mirror http://127.0.0.1:8080 --repository-root "$D/repo/metadata/1.root.json" --key "$D/key.pub"
	[ -f /etc/rsr/rsr.conf ] && [ -f /etc/rsr/repository-root.json ] && [ -n "$(ls /etc/rsr/keys.d/)" ] ||
		gfail "rsr enroll did not write its files"
	stage ssl-base.cptx lab-base.cptx
	expect 0 graft --add "$W/ssl-base.cptx" --add "$W/lab-base.cptx"
	[ "$(cat /usr/share/rsr-lab/marker)" = base ] || gfail "the base image is not grafted"
	gok "rsr enroll checked the repository; the base images are grafted"
}

# Boot 2: the packaged rsr-graft.service grafted them at boot; the packaged
# timer is active; once ungrafted, the packages can be removed.
step_deb_boot() {
	[ "$(systemctl is-active rsr-graft.service)" = active ] || gfail "rsr-graft.service did not run at boot"
	[ "$(cat /usr/share/rsr-lab/marker 2>/dev/null)" = base ] || gfail "the base images are not grafted at boot"
	rsr status --json >"$O/deb-status.json"
	json "$O/deb-status.json" '[.slots[] | .grafted and .verity] | all and length == 2'
	[ "$(systemctl is-active rsr-update.timer)" = active ] || gfail "rsr-update.timer is not active at boot"
	expect 0 check
	gok "the packaged rsr-graft.service grafted at boot through dm-verity; the timer runs; rsr check works"
	# A grafted /usr is a read-only overlay: dpkg cannot change files under it
	# (it fails with EROFS and leaves the package half-removed) until ungraft.
	expect 0 ungraft
	dpkg -r rsr librsr0 >"$O/dpkg-r.log" 2>&1 || { cat "$O/dpkg-r.log"; gfail "dpkg -r"; }
	[ ! -e /usr/bin/rsr ] && [ "$(dpkg-query -W -f='${db:Status-Status}' rsr 2>/dev/null)" != installed ] || gfail "rsr is still installed"
	[ ! -e /usr/share/rsr-lab/marker ] || gfail "the lab's files are visible after ungraft"
	gok "after rsr ungraft, dpkg -r rsr librsr0 removes them"
}
