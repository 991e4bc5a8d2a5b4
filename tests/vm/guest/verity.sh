# Group 1: grafting through dm-verity on a real kernel with device-mapper.

# The image offset of the first block of the lab slot's blob (its tag).
blob_offset() { # IMAGE LETTER
	grep -obUaF "RSR-LAB-TAMPER-$2" "$1" | head -1 | cut -d: -f1
}

step_verity() {
	trust_vendor
	stage lab-base.cptx lab-a.cptx lab-b.cptx
	expect 0 graft --add "$W/lab-base.cptx"
	[ "$(cat /usr/share/rsr-lab/marker)" = base ] || gfail "the grafted marker is not visible"
	rsr status --json >"$O/verity-status.json"
	rsr status >"$O/verity-status.txt"
	rsr cryptex info --json "$W/lab-base.cptx" >"$O/verity-info.json"
	dmsetup table >"$O/verity-table.txt"
	dmsetup status >"$O/verity-dmstatus.txt"
	# The mount stack as it runs, for docs/architecture.md.
	{
		echo "\$ uname -r"
		uname -r
		echo "\$ dmsetup table"
		dmsetup table
		echo "\$ losetup -l -O NAME,OFFSET,SIZELIMIT,DIO,BACK-FILE"
		losetup -l -O NAME,OFFSET,SIZELIMIT,DIO,BACK-FILE
		echo "\$ findmnt -o TARGET,SOURCE,FSTYPE,OPTIONS /run/rsr/images/lab-* /run/rsr/base/usr /usr"
		findmnt -o TARGET,SOURCE,FSTYPE,OPTIONS /run/rsr/images/lab-* /run/rsr/base/usr /usr
		echo "\$ rsr status | grep -E '^(Verity|  Mounted|Grafted):'"
		rsr status | grep -E '^(Verity|  Mounted|Grafted):'
	} >"$O/verity-stack.txt" 2>&1 || true
	json "$O/verity-status.json" '.slots[] | select(.slot == "lab") | .verity == true and .corrupted == false'
	grep -q "dm-verity" "$O/verity-status.txt" || gfail "status does not say dm-verity"
	gok "lab grafted through dm-verity"

	# A byte of the installed image changed under the graft: once the page
	# cache is dropped, reading the file fails with EIO.
	local img off
	img=$(readlink -f /var/lib/rsr/cryptexes/lab/current)
	off=$(blob_offset "$img" base)
	[ -n "$off" ] || gfail "the blob's tag is not in $img"
	printf 'X' | dd of="$img" bs=1 seek=$((off + 100)) conv=notrunc status=none
	drop_caches
	if cat /usr/share/rsr-lab/blob >/dev/null 2>"$W/eio.err"; then
		gfail "reading a damaged block succeeded"
	fi
	cat "$W/eio.err"
	grep -q "Input/output error" "$W/eio.err" || gfail "the damaged block did not give EIO"
	rsr status --json >"$O/verity-corrupt.json"
	rsr status >"$O/verity-corrupt.txt"
	dmsetup status >>"$O/verity-dmstatus.txt"
	json "$O/verity-corrupt.json" '.slots[] | select(.slot == "lab") | .corrupted == true'
	grep -q "CORRUPTED" "$O/verity-corrupt.txt" || gfail "rsr status does not say the slot is corrupted"
	gok "a damaged block reads as EIO, and rsr status says the slot is corrupted"
	# Repaired, the file reads again (the tree never changed).
	printf 'T' | dd of="$img" bs=1 seek=$((off + 100)) conv=notrunc status=none 2>/dev/null || true
}

# Readers for the swap test: the lab slot's small files through bash
# builtins, and its large file through sha256sum. Each counts rounds and
# failures into $W/NAME.out until $W/stop exists.
swap_small_reader() {
	local n=0 bad=0 a b
	while [ ! -e "$W/stop" ]; do
		a=ERR b=ERR
		read -r a </usr/share/rsr-lab/swap || true
		read -r b </usr/lib/os-release || true
		if [[ $a != [ab] || $b != PRETTY_NAME=* ]]; then
			bad=$((bad + 1))
			echo "read '$a' '$b'" >>"$W/bad.log"
		fi
		n=$((n + 1))
	done
	echo "$n $bad" >"$W/small.out"
}
swap_big_reader() {
	local n=0 bad=0 h
	while [ ! -e "$W/stop" ]; do
		h=$(sha256sum </usr/lib/rsr-lab/big 2>>"$W/bad.log" | cut -d' ' -f1)
		if [ "$h" != "$(cat "$D/big-a.sha256")" ] && [ "$h" != "$(cat "$D/big-b.sha256")" ]; then
			bad=$((bad + 1))
			echo "big: '$h'" >>"$W/bad.log"
		fi
		n=$((n + 1))
	done
	echo "$n $bad" >"$W/big.out"
}

# Swaps the lab slot between (a) and (b) SWAPS times under dm-verity while
# the readers run: no lookup or read may fail, and only old or new contents
# may be seen. Then ungraft: no rsr dm or loop device may remain.
step_swap() { # SWAPS
	local swaps=$1 i v
	trust_vendor
	stage lab-a.cptx lab-b.cptx
	expect 0 graft --add "$W/lab-a.cptx"
	json <(rsr status --json) '.slots[] | select(.slot == "lab") | .verity == true'
	rm -f "$W/stop" "$W/bad.log"
	swap_small_reader &
	local sr=$!
	swap_big_reader &
	local br=$!
	sleep 1
	local start=$SECONDS
	for i in $(seq "$swaps"); do
		if [ $((i % 2)) = 1 ]; then v=b; else v=a; fi
		rsr -q graft --add "$W/lab-$v.cptx" || gfail "swap $i to $v failed"
		[ "$(cat /usr/share/rsr-lab/swap)" = "$v" ] || gfail "swap $i: not $v"
	done
	local took=$((SECONDS - start))
	sleep 1
	touch "$W/stop"
	wait $sr $br
	local sn sbad bn bbad
	read -r sn sbad <"$W/small.out"
	read -r bn bbad <"$W/big.out"
	echo "# $swaps swaps in $took s; $sn small-file rounds, $bn reads of the large file; failures: $sbad + $bbad"
	if [ "$sbad" != 0 ] || [ "$bbad" != 0 ]; then
		head -20 "$W/bad.log"
		gfail "readers saw failures or wrong contents during the swaps"
	fi
	[ "$sn" -gt "$swaps" ] || gfail "the small-file reader made only $sn rounds"
	gok "$swaps swaps under dm-verity: zero failed lookups or reads"
	rsr status --json >"$O/swap-status.json"
	# Which mount calls the kernel took: Linux 6.8 and later take each layer
	# as "lowerdir+" and swap beneath; before, one "lowerdir" and each swap
	# covers the last graft until ungraft.
	if kernel_at_least 6 8; then
		json "$O/swap-status.json" '.overlays == [{"path": "/usr", "layers_option": "lowerdir+", "stacked": 0}]'
	else
		json "$O/swap-status.json" ".overlays == [{\"path\": \"/usr\", \"layers_option\": \"lowerdir\", \"stacked\": $swaps}]"
	fi
	rsr status | grep '^Grafted:'
	gok "status says how the overlay was mounted on $(uname -r): $(jq -c '.overlays[0]' "$O/swap-status.json")"
	findmnt -rn -o TARGET,FSTYPE,SOURCE >"$O/swap-mounts.txt"
	rsr_devices >"$O/swap-devices.txt"

	expect 0 ungraft
	[ "$(cat /usr/share/rsr-lab/swap 2>/dev/null || echo none)" = none ] || gfail "ungraft left the lab slot visible"
	# Loop devices go with their last user, asynchronously.
	for i in $(seq 50); do
		[ -z "$(rsr_devices)" ] && break
		sleep 0.2
	done
	rsr_devices >"$O/ungraft-devices.txt"
	rsr status --json >"$O/ungraft-status.json"
	if [ -s "$O/ungraft-devices.txt" ]; then
		# A long-lived process that mapped a file through a graft (systemd-udevd
		# keeps libkmod's index of /usr/lib/modules mapped) keeps it alive:
		# status must name every device left and who holds them, and
		# restarting those services must release them.
		cat "$O/ungraft-devices.txt"
		rsr status | sed -n '/^Held:/,$p'
		local name unit
		for name in $(dmsetup ls --target verity | awk '/^rsr-/ {print $1}'); do
			json "$O/ungraft-status.json" "[.held_devices[] | select(.name == \"$name\")] | length == 1"
		done
		if [ "$(jq '.holders | length' "$O/ungraft-status.json")" = 0 ]; then
			# Linux before 6.8 (swaps stacked, one overlay over the last) has
			# kept one or two superseded EROFS superblocks alive, and their
			# dm-verity devices open, with no mount in any process's namespace
			# and no process file, map, cwd or root on them: status lists the
			# devices, and nothing in rsr can release them before a reboot.
			kernel_at_least 6 8 && gfail "devices stay held with no holder"
			echo "# Linux $(uname -r): $(jq '.held_devices | length' "$O/ungraft-status.json") device(s) of stacked grafts stay open with no holder; rsr status lists them as held"
			gok "ungraft: every device left is listed by rsr status as held"
			return
		fi
		for unit in $(jq -r '.holders[].unit // empty' "$O/ungraft-status.json" | sort -u); do
			case $unit in
			*.service) [ "$unit" = rsr-lab.service ] || systemctl restart "$unit" ;;
			esac
		done
		for i in $(seq 50); do
			[ -z "$(rsr_devices)" ] && break
			sleep 0.2
		done
		rsr_devices >"$O/ungraft-devices.txt"
		[ ! -s "$O/ungraft-devices.txt" ] || { cat "$O/ungraft-devices.txt"; gfail "devices remain after their holders restarted"; }
		echo "# ungraft: $(jq '.held_devices | length' "$O/ungraft-status.json") device(s) stayed while $(jq -r '[.holders[] | "\(.command) (\(.how) \(.file))"] | unique | join(", ")' "$O/ungraft-status.json") held them; gone once those services restarted"
		rsr status --json >"$O/ungraft-status.json"
	fi
	json "$O/ungraft-status.json" '.held_devices == [] and .holders == []'
	gok "ungraft leaves no dm-verity or loop device"
}
