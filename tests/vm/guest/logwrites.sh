# Group 5b: the state file system on a dm-log-writes target, so that the
# host can replay every prefix of what reached the disk (tests/vm/
# replay-log-writes.py). /dev/vdb is the data disk, /dev/vdc the log.
# Nothing is grafted: the test is about what reaches the state file system,
# and grafted images would keep it busy until every process mapping them
# were restarted.

step_logwrites() {
	trust_vendor
	stage ssl-base.cptx lab-base.cptx a b
	modprobe dm-log-writes
	dmsetup create rsr-lw --table "0 $(blockdev --getsz /dev/vdb) log-writes /dev/vdb /dev/vdc"
	# No discards: what the replay starts from is the zeroed data disk.
	mkfs.ext4 -q -E nodiscard /dev/mapper/rsr-lw
	mkdir -p /var/lib/rsr
	mount /dev/mapper/rsr-lw /var/lib/rsr
	expect 0 graft --add "$W/ssl-base.cptx" --add "$W/lab-base.cptx" --no-mount
	expect 0 install "$W/a" --no-graft
	sync
	dmsetup message rsr-lw 0 mark install-start
	expect 0 install "$W/b" --no-graft
	dmsetup message rsr-lw 0 mark install-end
	expect 0 remove --no-graft
	dmsetup message rsr-lw 0 mark remove-end
	umount /var/lib/rsr
	dmsetup remove rsr-lw
	gok "install (a) -> (b) and remove logged on dm-log-writes"
}
