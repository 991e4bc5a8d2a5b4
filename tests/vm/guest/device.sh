# Groups 2-4: grafting at boot, services restarted through systemd, and
# background updates from a repository nginx serves inside the guest.

# What lab-probe.service saw at this boot: "MARKER RSR_GRAFT_DONE" where the
# second word says whether rsr-graft.service had finished before it started.
probe_saw() { cat /var/lib/lab-probe/seen; }

# The inode of the libssl.so.3 that process PID maps, and the one the path
# shows now, as "DEV:INODE" pairs.
mapped_libssl() { # PID
	local pid=$1 f
	f=$(awk '$6 ~ /libssl\.so\.3$/ { print $6; exit }' "/proc/$pid/maps")
	[ -n "$f" ] || return 1
	stat -L -c '%d:%i' "/proc/$pid/map_files/$(awk '$6 ~ /libssl\.so\.3$/ { print $1; exit }' "/proc/$pid/maps")"
}
current_libssl() { stat -L -c '%d:%i' /usr/lib/x86_64-linux-gnu/libssl.so.3; }
nginx_pid() { systemctl show -p MainPID --value nginx.service; }

# Boot 1: the base images installed and grafted on the real root, rsr-graft
# and a probe service enabled, nginx (which links libssl3) enabled.
step_boot_setup() {
	trust_vendor
	stage ssl-base.cptx lab-base.cptx a b
	expect 0 graft --add "$W/ssl-base.cptx" --add "$W/lab-base.cptx"
	[ "$(cat /usr/share/rsr-lab/marker)" = base ] || gfail "the base image is not grafted"
	systemctl enable rsr-graft.service
	mkdir -p /var/lib/lab-probe
	cat >/etc/systemd/system/lab-probe.service <<'UNIT'
[Unit]
Description=rsr lab: what an ordinary service sees at boot
After=basic.target
[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo "$(cat /usr/share/rsr-lab/marker 2>/dev/null || echo none) $(systemctl is-active rsr-graft.service)" >/var/lib/lab-probe/seen'
[Install]
WantedBy=multi-user.target
UNIT
	systemctl enable lab-probe.service
	rm -f /etc/systemd/system/nginx.service
	systemctl daemon-reload
	systemctl enable nginx.service
	gok "base images installed, rsr-graft.service and lab-probe.service enabled"

	# The units' Documentation= pages are installed, and systemd finds nothing to say.
	local u units=()
	for u in rsr-graft.service rsr-update.service rsr-update.timer; do
		units+=("$(systemctl show -p FragmentPath --value "$u")")
	done
	man -w rsr-graft rsr-update >/dev/null || gfail "the manual pages the units name are not installed"
	systemd-analyze verify "${units[@]}" >"$O/analyze-verify.txt" 2>&1 || { cat "$O/analyze-verify.txt"; gfail "systemd-analyze verify failed"; }
	if grep -i "rsr" "$O/analyze-verify.txt"; then gfail "systemd-analyze verify complains about rsr's units"; fi
	gok "systemd-analyze verify: rsr's units and the manual pages they name are fine"
}

# Boot 2: grafted at boot before ordinary services; then (a) installed and
# nginx, which still maps the base image's libssl3, restarted through systemd.
step_boot_base() {
	[ "$(probe_saw)" = "base active" ] || gfail "lab-probe saw '$(probe_saw)', not the base graft"
	journalctl -b -u rsr-graft.service --no-pager >"$O/boot-base-journal.txt"
	systemctl is-active rsr-graft.service
	rsr status --json >"$O/boot-base-status.json"
	json "$O/boot-base-status.json" '[.slots[] | .grafted and .verity] | all and length == 2'
	gok "rsr-graft.service grafted the base images before ordinary services started"

	systemctl is-active nginx.service || gfail "nginx is not running"
	local pid
	pid=$(nginx_pid)
	[ "$(mapped_libssl "$pid")" = "$(current_libssl)" ] || gfail "nginx does not map the grafted libssl3"
	expect 0 install "$W/a"
	rsr status --json >"$O/restart-before.json"
	json "$O/restart-before.json" '[.stale_processes[] | select(.unit == "nginx.service")] | length > 0'
	gok "after (a), rsr status names nginx.service as running superseded code"
	expect 0 restart-services
	grep -q "^Restarted .*nginx.service" "$W/out" || gfail "restart-services did not name nginx.service"
	for _ in $(seq 50); do
		[ "$(systemctl is-active nginx.service)" = active ] && [ "$(nginx_pid)" != "$pid" ] && break
		sleep 0.2
	done
	[ "$(nginx_pid)" != "$pid" ] || gfail "nginx was not restarted"
	local npid
	npid=$(nginx_pid)
	[ "$(mapped_libssl "$npid")" = "$(current_libssl)" ] || gfail "the new nginx does not map the new libssl3"
	rsr status --json >"$O/restart-after.json"
	json "$O/restart-after.json" '[.stale_processes[] | select(.unit == "nginx.service")] | length == 0'
	gok "rsr restart-services restarted nginx.service, whose new processes map the new libssl3"
}

# Boot 3: (a) is still active after a reboot; then removed.
step_boot_a() {
	[ "$(probe_saw)" = "a active" ] || gfail "lab-probe saw '$(probe_saw)', not (a)"
	rsr status --json >"$O/boot-a-status.json"
	json "$O/boot-a-status.json" '.response.letter == "a"'
	json "$O/boot-a-status.json" '[.slots[] | .grafted and .verity] | all'
	gok "(a) is active after a reboot"
	expect 0 remove
	[ "$(cat /usr/share/rsr-lab/marker)" = base ] || gfail "remove did not bring the base back"
}

# Boot 4: the base is back after a reboot.
step_boot_removed() {
	[ "$(probe_saw)" = "base active" ] || gfail "lab-probe saw '$(probe_saw)', not the base"
	rsr status --json >"$O/boot-removed-status.json"
	json "$O/boot-removed-status.json" '(.response.letter // null) == null'
	gok "the base is active after remove and a reboot"

	# Stopping rsr-graft ungrafts; nginx, started while grafted, keeps the
	# old stack (and its dm-verity devices) alive, and status says so.
	local pid
	pid=$(nginx_pid)
	systemctl stop rsr-graft.service
	[ "$(cat /usr/share/rsr-lab/marker 2>/dev/null || echo none)" = none ] || gfail "stopping rsr-graft did not ungraft"
	rsr status >"$O/stopped-status.txt"
	rsr status --json >"$O/stopped-status.json"
	cat "$O/stopped-status.txt"
	json "$O/stopped-status.json" '[.held_devices[] | select(.name // "" | startswith("rsr-libssl3-"))] | length >= 1'
	json "$O/stopped-status.json" "[.holders[] | select(.pid == $pid and .unit == \"nginx.service\")] | length == 1"
	grep -q "^Held: " "$O/stopped-status.txt" || gfail "status text does not list the held devices"
	# A service's own mount namespace (systemd-logind's) keeps the graft attached and names whole paths.
	json "$O/stopped-status.json" '[.stale_processes[].file, .holders[].file | select(. != null and startswith("/usr/usr/"))] | length == 0'
	grep -q "^ *$pid nginx (nginx.service): " "$O/stopped-status.txt" || gfail "status text does not name nginx as a holder"
	gok "after systemctl stop rsr-graft, status lists the dm-verity devices nginx still holds, and nginx"
	systemctl restart nginx.service
	rsr status --json >"$O/restarted-status.json"
	json "$O/restarted-status.json" '[.holders[] | select(.unit == "nginx.service")] | length == 0'
	gok "once nginx restarted, it is no longer listed as holding them"
	systemctl start rsr-graft.service
	[ "$(cat /usr/share/rsr-lab/marker)" = base ] || gfail "starting rsr-graft again did not graft"
}

# Boot 5: nginx serves the repository; rsr-update.timer, its delay shortened
# by a drop-in, installs the newest response without a command and restarts
# nginx (restart = services).
step_update_timer() {
	serve_repo
	cp "$D/repo/metadata/1.root.json" /etc/rsr/repository-root.json
	printf 'mirror = http://127.0.0.1:8080\nauto_install = yes\nrestart = services\n' >/etc/rsr/rsr.conf
	mkdir -p /etc/systemd/system/rsr-update.timer.d
	printf '[Timer]\nOnBootSec=\nOnActiveSec=3s\nRandomizedDelaySec=0\nAccuracySec=1s\n' \
		>/etc/systemd/system/rsr-update.timer.d/lab.conf
	systemctl daemon-reload
	local pid
	pid=$(nginx_pid)
	systemctl start rsr-update.timer
	local i
	for i in $(seq 300); do
		[ "$(systemctl show -p Result --value rsr-update.service)" = success ] &&
			[ -n "$(systemctl show -p ExecMainExitTimestampMonotonic --value rsr-update.service | grep -v '^0$')" ] && break
		sleep 0.5
	done
	journalctl -u rsr-update.service --no-pager >"$O/update-journal.txt"
	cat "$O/update-journal.txt"
	systemctl show -p Result -p ExecMainStatus rsr-update.service
	rsr status --json >"$O/update-status.json"
	json "$O/update-status.json" '.response.letter == "b"'
	[ "$(cat /usr/share/rsr-lab/marker)" = b ] || gfail "the timer's install is not grafted"
	grep -q "(b)" "$O/update-journal.txt" || gfail "the journal of rsr-update does not say what it installed"
	gok "rsr-update.timer installed (b) by itself; journalctl -u rsr-update says so"
	for _ in $(seq 50); do
		[ "$(nginx_pid)" != "$pid" ] && [ "$(systemctl is-active nginx.service)" = active ] && break
		sleep 0.2
	done
	[ "$(nginx_pid)" != "$pid" ] || gfail "rsr update did not restart nginx (restart = services)"
	[ "$(mapped_libssl "$(nginx_pid)")" = "$(current_libssl)" ] || gfail "nginx does not map the current libssl3"
	gok "with restart = services, rsr update restarted nginx.service itself"
}
