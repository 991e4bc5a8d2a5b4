#!/usr/bin/env bash
# rsr cryptex export --ddi: the cryptex as a Discoverable Disk Image.
# systemd-dissect (systemd-container) lists its root, root-verity and
# root-verity-sig partitions with the partition UUIDs the root hash gives,
# as a signed verity image, and as a system extension when the image holds
# an extension-release file; an independent reader checks the GPT (CRCs,
# types, offsets), veritysetup verifies the data partition against the
# verity partition and the root hash rsr reports, and openssl verifies the
# PKCS#7 signature of the root hash with the certificate.
. "$(dirname "$0")/libtest.sh"
need_root
command -v systemd-dissect >/dev/null || skip_all "no systemd-dissect (package systemd-container)"
command -v veritysetup >/dev/null || skip_all "no veritysetup"
[ -e /dev/loop-control ] || skip_all "no /dev/loop-control"
W=$T
"$RSR" key generate -o "$W/key" >/dev/null 2>&1
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$W/verity.key" -out "$W/verity.crt" -subj /CN=rsr-test-verity \
	-days 30 2>/dev/null
mkdir -p "$W/src/usr/share/ddi" "$W/src/usr/lib/extension-release.d"
head -c 300000 /dev/urandom >"$W/src/usr/share/ddi/blob"
echo hello >"$W/src/usr/share/ddi/hello"
printf 'ID=_any\n' >"$W/src/usr/lib/extension-release.d/extension-release.ddi"
"$RSR" -q cryptex build "$W/src" -o "$W/ddi.cptx" --name ddi --version 1 --base 12 --key "$W/key"
hash=$("$RSR" cryptex info --json "$W/ddi.cptx" | python3 -c 'import json,sys; print(json.load(sys.stdin)["root_hash"])')

expect 0 cryptex export --ddi "$W/ddi.cptx" -o "$W/ddi.raw" --key "$W/verity.key" --cert "$W/verity.crt" --pubkey "$W/key.pub"
assert_grep "root hash $hash" "$T/out"
ok "export writes the image"

systemd-dissect --json=short "$W/ddi.raw" >"$W/dissect.json" 2>"$W/dissect.err" || fail "systemd-dissect: $(cat "$W/dissect.err")"
python3 - "$W/dissect.json" "$hash" <<'PY' || fail "systemd-dissect's view"
import json, sys
d, h = json.load(open(sys.argv[1])), sys.argv[2]
m = {x["designator"]: x for x in d["mounts"]}
assert set(m) == {"root", "root-verity", "root-verity-sig"}, m
u = lambda s: s.replace("-", "")
assert u(m["root"]["partition_uuid"]) == h[:32], (m["root"]["partition_uuid"], h)
assert u(m["root-verity"]["partition_uuid"]) == h[32:], (m["root-verity"]["partition_uuid"], h)
assert m["root"]["fstype"] == "erofs" and m["root"]["verity"] == "signed", m["root"]
assert m["root-verity"]["fstype"] == "DM_verity_hash", m["root-verity"]
assert m["root-verity-sig"]["fstype"] == "verity_hash_signature", m["root-verity-sig"]
assert m["root"]["architecture"] == "x86-64", m["root"]
assert d["useSystemExtension"] is True, d
PY
ok "systemd-dissect: root, verity and signature partitions, signed, UUIDs from root hash $hash, a system extension"

# An independent reader of the GPT; the partitions cut out for veritysetup and openssl.
python3 - "$W/ddi.raw" "$W" <<'PY' || fail "the GPT"
import json, struct, sys, uuid, zlib, base64
raw, out = open(sys.argv[1], "rb").read(), sys.argv[2]
assert raw[510:512] == b"\x55\xaa" and raw[446 + 4] == 0xEE, "protective MBR"
def header(lba):
    h = raw[lba * 512:lba * 512 + 92]
    assert h[:8] == b"EFI PART", "signature at LBA %d" % lba
    crc = struct.unpack_from("<I", h, 16)[0]
    assert zlib.crc32(h[:16] + b"\0\0\0\0" + h[20:]) == crc, "header CRC at LBA %d" % lba
    my, alt, first, last = struct.unpack_from("<QQQQ", h, 24)
    elba, n, esz, ecrc = struct.unpack_from("<QIII", h, 72)
    table = raw[elba * 512:elba * 512 + n * esz]
    assert zlib.crc32(table) == ecrc, "entries CRC"
    return my, alt, table
my, alt, table = header(1)
assert my == 1 and alt == len(raw) // 512 - 1
my2, alt2, table2 = header(alt)
assert table2 == table and alt2 == 1
types = ["4f68bce3-e8cd-4db1-96e7-fbcaf984b709", "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5", "41092b05-9fc8-4523-994f-2def0408b176"]
for i, name in enumerate(["data", "hash", "sig"]):
    e = table[i * 128:(i + 1) * 128]
    assert str(uuid.UUID(bytes_le=e[:16])) == types[i], (i, uuid.UUID(bytes_le=e[:16]))
    first, last, attrs = struct.unpack_from("<QQQ", e, 32)
    assert attrs & (1 << 60), "read-only flag"
    open("%s/%s.part" % (out, name), "wb").write(raw[first * 512:(last + 1) * 512])
assert table[3 * 128:] == bytes(len(table) - 3 * 128), "only three partitions"
sig = open(out + "/sig.part", "rb").read()
assert len(sig) % 4096 == 0
j = json.loads(sig.rstrip(b"\0"))
open(out + "/roothash.txt", "w").write(j["rootHash"])
open(out + "/sig.der", "wb").write(base64.b64decode(j["signature"]))
open(out + "/fingerprint", "w").write(j["certificateFingerprint"])
PY
cmp <(dd if="$W/ddi.cptx" bs=4096 skip=1 count=$(($(stat -c %s "$W/data.part") / 4096)) status=none) "$W/data.part" ||
	fail "the root partition is not the cryptex's EROFS image"
[ "$(cat "$W/roothash.txt")" = "$hash" ] || fail "rootHash $(cat "$W/roothash.txt") is not $hash"
veritysetup verify "$W/data.part" "$W/hash.part" "$hash" || fail "veritysetup verify with the superblock"
ok "GPT (both headers, CRCs, types, read-only), the same EROFS image, veritysetup verifies it against $hash"

openssl smime -verify -binary -inform DER -in "$W/sig.der" -content "$W/roothash.txt" -certfile "$W/verity.crt" \
	-CAfile "$W/verity.crt" -purpose any -out /dev/null 2>"$W/smime" || fail "PKCS#7: $(cat "$W/smime")"
fp=$(openssl x509 -in "$W/verity.crt" -outform DER | sha256sum | cut -d' ' -f1)
[ "$(cat "$W/fingerprint")" = "$fp" ] || fail "certificateFingerprint"
printf '%s' 0000000000000000000000000000000000000000000000000000000000000000 >"$W/other.txt"
if openssl smime -verify -binary -inform DER -in "$W/sig.der" -content "$W/other.txt" -CAfile "$W/verity.crt" \
	-purpose any -out /dev/null 2>/dev/null; then fail "the signature verifies another root hash"; fi
ok "the PKCS#7 signature of the root hash verifies with the certificate (and not for another hash)"

mkdir -p "$W/again"
expect 0 cryptex export --ddi "$W/ddi.cptx" -o "$W/again/ddi.raw" --key "$W/verity.key" --cert "$W/verity.crt"
cmp "$W/ddi.raw" "$W/again/ddi.raw" || fail "not reproducible with an RSA key"
ok "the same cryptex and key give the same image"

# Refusals: a damaged image, a certificate of another key, a key that is not one, an unknown architecture.
cp "$W/ddi.cptx" "$W/bad.cptx"
printf 'X' | dd of="$W/bad.cptx" bs=1 seek=$((4096 + 2 * 4096 + 5)) conv=notrunc status=none
expect 1 cryptex export --ddi "$W/bad.cptx" -o "$W/bad.raw" --key "$W/verity.key" --cert "$W/verity.crt"
assert_grep "data block 2 of" "$T/err"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$W/other.key" -out "$W/other.crt" -subj /CN=other -days 30 2>/dev/null
expect 1 cryptex export --ddi "$W/ddi.cptx" -o "$W/bad.raw" --key "$W/verity.key" --cert "$W/other.crt"
assert_grep "the certificate is not for the key" "$T/err"
expect 1 cryptex export --ddi "$W/ddi.cptx" -o "$W/bad.raw" --key "$W/key.pub" --cert "$W/verity.crt"
assert_grep "not a private key in PEM form" "$T/err"
expect 1 cryptex export --ddi "$W/ddi.cptx" -o "$W/bad.raw" --key "$W/verity.key" --cert "$W/verity.crt" --architecture sparc
assert_grep "architecture 'sparc' is not one a DDI can be made for" "$T/err"
"$RSR" key generate -o "$W/stranger" >/dev/null 2>&1
expect 1 cryptex export --ddi "$W/ddi.cptx" -o "$W/bad.raw" --key "$W/verity.key" --cert "$W/verity.crt" --pubkey "$W/stranger.pub"
assert_grep "not among the 1 trusted key" "$T/err"
[ ! -e "$W/bad.raw" ] || fail "a refused export wrote an image"
ls -A "$W" | grep -q '^\.bad\.raw' && fail "a temporary file was left"
ok "refused: a damaged block, a certificate of another key, no private key, an unknown architecture, an untrusted cryptex"
echo "1..$TESTS_RUN"
