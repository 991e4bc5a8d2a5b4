#!/usr/bin/env python3
# Makes the small images of the patch test vectors (deterministic). The
# patches themselves are made with `rsr patch create` (see README.md).
# Layout of each image: 4 KiB blocks like an EROFS image: random "code"
# blocks, a block of text, a gzip member (made with gzip -9n) of a
# changelog, pointer tables, zero blocks.
import random, struct, subprocess, sys, os

out = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
B = 4096
words = ("fix buffer overflow in parser when handling crafted input upstream release security "
         "update backport patch regression memory leak certificate verification timeout "
         "handshake error message compiler warning documentation build tests").split()

def changelog(rng, n):
    s = []
    for e in range(n):
        s.append(f"pkg (1.{n - e}-1) stable-security; urgency=medium\n\n")
        for _ in range(rng.randint(1, 4)):
            s.append("  * " + " ".join(rng.choice(words) for _ in range(rng.randint(5, 12))) + "\n")
        s.append(f"\n -- Maintainer <m@example.org>  Mon, {e % 28 + 1:02d} Jan 2024 10:00:00 +0000\n\n")
    return "".join(s).encode()

def gz(data):
    return subprocess.run(["gzip", "-9n"], input=data, capture_output=True, check=True).stdout

def pad(b):
    return b + bytes(-len(b) % B)

def image(version):
    rng = random.Random(1)
    code = bytearray(rng.randbytes(4 * B))
    text = changelog(random.Random(2), 30)
    ptrs = bytearray()
    for i in range(2 * B // 8):
        ptrs += struct.pack("<Q", 0x400000 + i * 24)
    if version >= 1:
        code[5000:5004] = b"\x90\x90\x90\x90"           # a changed instruction
        code[9000:9000] = b"\xcc" * 12                  # an insertion that shifts the rest
        del code[-12:]
        text = changelog(random.Random(3), 1).replace(b"pkg (1.1-1)", b"pkg (1.31-1)") + text
        ptrs = bytearray()
        for i in range(2 * B // 8):
            ptrs += struct.pack("<Q", 0x400000 + i * 24 + (16 if i > 100 else 0))
    if version == 2:
        code[100:110] = b"0123456789"
    img = pad(bytes(code)) + pad(text[:3000]) + pad(gz(text)) + pad(bytes(ptrs)) + bytes(2 * B)
    return img

for name, v in (("old.img", 0), ("new.img", 1), ("old2.img", 2)):
    with open(os.path.join(out, name), "wb") as f:
        f.write(image(v))
