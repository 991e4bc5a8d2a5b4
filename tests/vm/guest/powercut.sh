# Group 5a: power cuts. The guest freezes rsr just after the N-th call of a
# state-changing system call (strace injects SIGSTOP there) and tells the
# host, which kills qemu: whatever the guest had not written to its disk is
# lost. At the next boot rsr-graft.service recovers; the step checks that the
# device is on the old or on the new response, completely.

CUT_SYSCALLS="fsync fdatasync rename renameat renameat2 linkat symlinkat unlink unlinkat mkdir mkdirat"

# Nothing reaches the disk but what is synced (and what ext4's journal
# commits on its own every 5 s, as on any machine).
no_writeback() {
	sysctl -q vm.dirty_writeback_centisecs=0 vm.dirty_expire_centisecs=360000
}

# The response the device is on: its sequence, or base.
device_state() {
	rsr status --json | jq -r 'if .response.letter then "s\(.response.sequence)" else "base" end'
}

# Checks that the device is completely on STATE (base or sK): the state,
# every current image verifying against the vendor's key, every slot grafted
# with its current image, and the lab slot's marker showing STATE.
device_is() { # STATE
	local want=$1 f
	[ "$(device_state)" = "$want" ] || { echo "the device is on $(device_state), not $want"; return 1; }
	# The kept response (manifest and reverse patches) is the one the state names.
	if [ "$want" = base ]; then
		[ ! -e /var/lib/rsr/response/current ] || { echo "a response is kept on the base"; return 1; }
	else
		[ "s$(jq -r .signed.sequence /var/lib/rsr/response/current/response.json)" = "$want" ] ||
			{ echo "the state says $want, the kept response is $(jq -c .signed.sequence /var/lib/rsr/response/current/response.json)"; return 1; }
	fi
	for f in /var/lib/rsr/cryptexes/*/current; do
		rsr -q cryptex verify "$f" --pubkey "$D/key.pub" || { echo "$f does not verify"; return 1; }
	done
	rsr status --json >"$W/st.json"
	jq -e '[.slots[] | .grafted and (.pending | not)] | all' "$W/st.json" >/dev/null ||
		{ echo "not every slot is grafted with its current image"; cat "$W/st.json"; return 1; }
	[ "$(cat /usr/share/rsr-lab/marker)" = "$want" ] || { echo "the marker says $(cat /usr/share/rsr-lab/marker)"; return 1; }
	[ ! -e /var/lib/rsr/response/journal.json ] && [ ! -e /var/lib/rsr/response/incoming ] ||
		{ echo "a journal or incoming area is left"; return 1; }
	# Only the current image of each slot is kept.
	for f in /var/lib/rsr/cryptexes/*/; do
		[ "$(find "$f" -maxdepth 1 -name '*.cptx' | wc -l)" = 1 ] || { echo "stale images in $f"; ls -la "$f"; return 1; }
	done
}

# Brings the device to STATE (base or sK) the ordinary way.
go_to() { # STATE
	local want=$1 cur
	cur=$(device_state)
	[ "$cur" = "$want" ] && return 0
	[ "$cur" = base ] || rsr -q remove
	if [ "$want" != base ]; then
		stage "$want"
		rsr -q install "$W/$want"
	fi
	device_is "$want"
}

op_args() { # OP TO: the rsr command line of an operation
	case $1 in
	install) echo "install $W/$2" ;;
	remove) echo "remove" ;;
	esac
}

# Boot 1: base images grafted at boot; the calls of an install (s1 -> s2)
# and of a remove (s2 -> base), in order.
step_cut_setup() {
	trust_vendor
	stage ssl-base.cptx lab-base.cptx s1 s2
	expect 0 graft --add "$W/ssl-base.cptx" --add "$W/lab-base.cptx"
	systemctl enable rsr-graft.service
	local op
	go_to s1
	strace -f -qq -o "$W/trace-install" -e trace="${CUT_SYSCALLS// /,}" rsr -q install "$W/s2"
	device_is s2
	strace -f -qq -o "$W/trace-remove" -e trace="${CUT_SYSCALLS// /,}" rsr -q remove
	device_is base
	for op in install remove; do
		# One line per call, in order: SYSCALL ORDINAL (the N-th call of that syscall).
		sed -n 's/^[0-9]* *\([a-z0-9_]*\)(.*/\1/p' "$W/trace-$op" |
			awk '{ n[$1]++; print $1, n[$1] }' >"$O/points-$op.txt"
		echo "$op: $(wc -l <"$O/points-$op.txt") calls that change state"
	done
}

# Boot k: the device recovered from the previous cut (of OP, from FROM to
# TO) is on exactly FROM or TO; then the next cut: OP2 from FROM2, frozen
# after call ORDINAL of SYSCALL.
step_cut() { # PREV_FROM PREV_TO OP FROM TO SYSCALL ORDINAL
	local pfrom=$1 pto=$2 op=$3 from=$4 to=$5 sc=$6 n=$7 got
	if [ "$pfrom" != - ]; then
		journalctl -b -u rsr-graft.service --no-pager
		got=$(device_state)
		device_is "$got" || gfail "after the cut the device is not completely on '$got'"
		[ "$got" = "$pfrom" ] || [ "$got" = "$pto" ] || gfail "after a cut of $pfrom -> $pto the device is on $got"
		echo "$got" >"$O/cut-$LAB_BOOT.result"
		gok "recovered to '$got' ($pfrom -> $pto), every image verifies and is grafted"
	fi
	[ "$op" != - ] || return 0
	go_to "$from"
	[ "$op" = remove ] || stage "$to"
	no_writeback
	# shellcheck disable=SC2046
	strace -f -qq -o /dev/null -e trace="$sc" -e inject="$sc":signal=STOP:when="$n" rsr -q $(op_args "$op" "$to") &
	local tracer=$! pid="" i
	for i in $(seq 600); do
		pid=$(pgrep -P "$tracer" -x rsr || true)
		if [ -n "$pid" ] && grep -q '^State:.*[tT]' "/proc/$pid/status"; then
			echo "$op $from: cut after $sc #$n" >/lab/cut
			sleep 3600
		fi
		kill -0 "$tracer" 2>/dev/null || gfail "$op finished before $sc #$n"
		sleep 0.1
	done
	gfail "rsr never reached $sc #$n"
}

# The last boot: recovered from the last cut, and the next operations work.
step_cut_final() { # PREV_FROM PREV_TO NEXT
	step_cut "$1" "$2" - - - - -
	go_to "$3"
	go_to base
	gok "after the last cut, install and remove succeed"
}
