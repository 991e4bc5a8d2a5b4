#!/usr/bin/env python3
"""Replays a dm-log-writes log onto a copy of the logged device, prefix by prefix.

The kernel's log-writes target (Documentation/admin-guide/device-mapper/
log-writes.rst, drivers/md/dm-log-writes.c) records every write to a device
on a second, log device, in the order the writes were flushed, with FLUSH
and FUA writes marked and user marks ("dmsetup message DEV 0 mark NAME")
between them. Its format, all little-endian:

  sector 0            super: u64 magic 0x6a736677736872, u64 version 1,
                      u64 nr_entries, u32 sectorsize (the logged device's
                      logical block size; sector numbers below count in it)
  from sector 1, nr_entries times:
    one sector        entry: u64 sector, u64 nr_sectors, u64 flags,
                      u64 data_len; a mark's name (data_len bytes) follows
                      the entry in the same sector
    nr_sectors        the data written (none for a discard, a flush or a mark)

flags: 1 FLUSH, 2 FUA, 4 DISCARD, 8 MARK, 16 METADATA.

Debian packages no replayer, so this is the lab's own. It replays every
entry onto DATA (which must hold what the device held when logging began:
zeros, for a device made afresh) and, from the entry after mark START to
mark END, after each entry that is a FLUSH or a FUA write, runs CHECK with
DATA in the state a power cut at that moment could have left on the disk.

  replay-log-writes.py LOG DATA --start START --end END --check CMD
  replay-log-writes.py LOG --list

CHECK runs through the shell with RSR_LW_ENTRY set to the entry's index; it
must not change DATA (it checks a copy). Prints how many prefixes were
checked; exits 1 at the first CHECK that fails, 2 on a malformed log.
"""
import argparse
import os
import struct
import subprocess
import sys

MAGIC = 0x6A736677736872
FLUSH, FUA, DISCARD, MARK, METADATA = 1, 2, 4, 8, 16
SUPER = struct.Struct("<QQQI")
ENTRY = struct.Struct("<QQQQ")


def bad(msg):
    print("replay-log-writes: %s" % msg, file=sys.stderr)
    sys.exit(2)


def entries(log):
    """Yields (index, sector, nr_sectors, flags, mark, data offset in the log)."""
    size = os.fstat(log.fileno()).st_size
    head = os.pread(log.fileno(), SUPER.size, 0)
    if len(head) < SUPER.size:
        bad("the log is shorter than its super block")
    magic, version, count, ssize = SUPER.unpack(head)
    if magic != MAGIC or version != 1:
        bad("not a dm-log-writes log (magic %#x, version %d)" % (magic, version))
    if ssize < ENTRY.size or ssize > 65536 or ssize & (ssize - 1):
        bad("sector size %d is not a power of two from %d to 65536" % (ssize, ENTRY.size))
    pos = ssize
    for i in range(count):
        if pos + ssize > size:
            bad("entry %d of %d lies beyond the log's end" % (i, count))
        blk = os.pread(log.fileno(), ssize, pos)
        sector, nr, flags, dlen = ENTRY.unpack_from(blk)
        mark = None
        if flags & MARK:
            if dlen > ssize - ENTRY.size:
                bad("entry %d: a mark of %d bytes does not fit its sector" % (i, dlen))
            mark = blk[ENTRY.size:ENTRY.size + dlen].decode("utf-8", "replace")
        pos += ssize
        data = pos
        if not flags & DISCARD:
            if nr > (size - pos) // ssize:
                bad("entry %d: %d sectors of data lie beyond the log's end" % (i, nr))
            pos += nr * ssize
        yield i, sector, nr, flags, mark, data, ssize


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("log")
    ap.add_argument("data", nargs="?")
    ap.add_argument("--list", action="store_true", help="list the marks and count the entries")
    ap.add_argument("--start", help="check from the entry after this mark")
    ap.add_argument("--end", help="check up to this mark")
    ap.add_argument("--check", help="shell command run at each FLUSH or FUA entry in the range")
    a = ap.parse_args()
    with open(a.log, "rb") as log:
        if a.list:
            n = flushes = 0
            for i, sector, nr, flags, mark, _, _ in entries(log):
                n += 1
                flushes += bool(flags & (FLUSH | FUA))
                if mark is not None:
                    print("%d mark %s" % (i, mark))
            print("%d entries, %d flush or FUA" % (n, flushes))
            return 0
        if not (a.data and a.start and a.end and a.check):
            ap.error("DATA, --start, --end and --check are needed unless --list")
        dev = os.open(a.data, os.O_RDWR)
        devsize = os.fstat(dev).st_size
        inside = done = False
        checked = 0
        for i, sector, nr, flags, mark, data, ssize in entries(log):
            if mark is not None:
                if mark == a.start:
                    inside = True
                elif mark == a.end and inside:
                    done = True
                    break
                continue
            if nr:
                if (sector + nr) * ssize > devsize:
                    bad("entry %d writes sectors %d-%d, beyond the device's %d bytes"
                        % (i, sector, sector + nr - 1, devsize))
                if flags & DISCARD:
                    os.pwrite(dev, bytes(nr * ssize), sector * ssize)
                else:
                    os.pwrite(dev, os.pread(log.fileno(), nr * ssize, data), sector * ssize)
            if inside and flags & (FLUSH | FUA):
                os.fsync(dev)
                env = dict(os.environ, RSR_LW_ENTRY=str(i))
                if subprocess.run(a.check, shell=True, env=env).returncode != 0:
                    print("replay-log-writes: the check failed at entry %d (%d prefixes checked before)"
                          % (i, checked), file=sys.stderr)
                    return 1
                checked += 1
        os.close(dev)
        if not inside:
            bad("no mark '%s' in the log" % a.start)
        if not done:
            bad("no mark '%s' after '%s' in the log" % (a.end, a.start))
        print("%d prefixes checked between '%s' and '%s'" % (checked, a.start, a.end))
    return 0


if __name__ == "__main__":
    sys.exit(main())
