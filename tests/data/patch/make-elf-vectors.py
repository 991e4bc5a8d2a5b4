#!/usr/bin/env python3
# Makes the ELF images of the version 3 test vectors (deterministic): an
# x86-64 shared object written out by hand, before and after a "fix" that
# adds code to one function, so that the code, data, relocations, symbols
# and unwind tables after it move. The patch is made with `rsr patch create`
# (see README.md).
import random, struct, sys, os

out = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
N_FUNCS, N_PTRS = 300, 200

def functions(fixed):
    """Each function: a list of instructions, ('raw', bytes) or (opcode bytes, target)."""
    rng = random.Random(7)
    fs = []
    for i in range(N_FUNCS):
        body = [('raw', b'\x55\x48\x89\xe5')]          # push rbp; mov rbp, rsp
        for _ in range(rng.randint(6, 30)):
            k = rng.random()
            if k < 0.3:
                body.append((b'\xe8', ('func', rng.randrange(N_FUNCS))))       # call
            elif k < 0.45:
                body.append((b'\x48\x8d\x05', ('ptr', rng.randrange(N_PTRS))))  # lea rax, [rip+x]
            elif k < 0.55:
                body.append((b'\x0f\x84', ('func', i)))                          # je (to its own start)
            else:
                body.append(('raw', bytes([0x48, 0x89, rng.choice([0xc7, 0xd6, 0xc1])]) +
                             bytes(rng.randrange(0x40, 0x60) for _ in range(rng.randint(1, 6)))))
        if fixed and i == 40:                            # the fix: a bounds check
            body.insert(3, ('raw', b'\x48\x83\xff\x40\x0f\x87\x00\x00\x00\x00' * 3))
        body.append(('raw', b'\x5d\xc3'))                # pop rbp; ret
        fs.append(body)
    return fs

def size_of(ins):
    return len(ins[1]) if ins[0] == 'raw' else len(ins[0]) + 4

def build(fixed):
    fs = functions(fixed)
    base = 0x1000                                        # .text address == file offset
    addr, faddr = base, []
    for f in fs:
        faddr.append(addr)
        addr += sum(size_of(x) for x in f)
        addr += -addr % 16
    text_end = addr
    rodata = text_end + (-text_end % 64)
    ptrs = rodata                                        # .data.rel.ro: pointers to functions
    ptr_end = ptrs + 8 * N_PTRS
    rng = random.Random(9)
    ptr_targets = [rng.randrange(N_FUNCS) for _ in range(N_PTRS)]

    def target(t):
        return faddr[t[1]] if t[0] == 'func' else ptrs + 8 * t[1]

    text = bytearray()
    for i, f in enumerate(fs):
        text += bytes(faddr[i] - base - len(text))
        for x in f:
            if x[0] == 'raw':
                text += x[1]
            else:
                at = base + len(text) + len(x[0]) + 4
                text += x[0] + struct.pack('<i', target(x[1]) - at)
    text += bytes(text_end - base - len(text))
    data = b''.join(struct.pack('<Q', faddr[t]) for t in ptr_targets)
    # .eh_frame: a CIE, then an FDE per function (pc_begin pc-relative sdata4)
    eh = ptr_end + (-ptr_end % 8)
    cie = struct.pack('<II', 20, 0) + b'\x01zR\x00\x01\x78\x10\x01\x1b\x0c\x07\x08\x90\x01\x00\x00'
    ehf = bytearray(cie)
    fde_at = []
    for i in range(N_FUNCS):
        off = len(ehf)
        fde_at.append(eh + off)
        pc = eh + off + 8
        ln = sum(size_of(x) for x in fs[i])
        ehf += struct.pack('<IIiI', 20, off + 4, faddr[i] - pc, ln) + b'\x00\x00\x00\x00\x00\x00\x00\x00'
    ehf += struct.pack('<I', 0)
    hdr = eh + len(ehf)
    hdr += -hdr % 4
    ehh = bytearray(b'\x01\x1b\x03\x3b' + struct.pack('<iI', eh - (hdr + 4), N_FUNCS))
    for i in range(N_FUNCS):
        ehh += struct.pack('<ii', faddr[i] - hdr, fde_at[i] - hdr)
    rela = hdr + len(ehh)
    rela += -rela % 8
    rl = b''.join(struct.pack('<QQq', ptrs + 8 * k, 8, faddr[t]) for k, t in enumerate(ptr_targets))
    dynsym = rela + len(rl)
    ds = bytes(24) + b''.join(struct.pack('<IBBHQQ', 1 + 4 * i, 0x12, 0, 1, faddr[i], 16) for i in range(N_FUNCS))
    end = dynsym + len(ds)
    names = b'\x00.text\x00.data.rel.ro\x00.eh_frame\x00.eh_frame_hdr\x00.rela.dyn\x00.dynsym\x00.shstrtab\x00'
    def nm(s):
        return names.index(s.encode() + b'\x00')
    shstr = end
    shoff = shstr + len(names)
    shoff += -shoff % 8
    secs = [(0, 0, 0, 0, 0, 0, 0),
            (nm('.text'), 1, 6, base, base, text_end - base, 0),
            (nm('.data.rel.ro'), 1, 3, ptrs, ptrs, ptr_end - ptrs, 0),
            (nm('.eh_frame'), 1, 2, eh, eh, len(ehf), 0),
            (nm('.eh_frame_hdr'), 1, 2, hdr, hdr, len(ehh), 0),
            (nm('.rela.dyn'), 4, 2, rela, rela, len(rl), 24),
            (nm('.dynsym'), 11, 2, dynsym, dynsym, len(ds), 24),
            (nm('.shstrtab'), 3, 0, 0, shstr, len(names), 0)]
    img = bytearray(shoff + 64 * len(secs))
    img[0:64] = (b'\x7fELF\x02\x01\x01' + bytes(9) + struct.pack('<HHIQQQIHHHHHH', 3, 62, 1, 0, 0, shoff, 0,
                                                                  64, 0, 0, 64, len(secs), len(secs) - 1))
    for at, b in ((base, text), (ptrs, data), (eh, ehf), (hdr, ehh), (rela, rl), (dynsym, ds), (shstr, names)):
        img[at:at + len(b)] = b
    for i, (n, t, fl, a, o, sz, es) in enumerate(secs):
        img[shoff + 64 * i:shoff + 64 * (i + 1)] = struct.pack('<IIQQQQIIQQ', n, t, fl, a, o, sz, 0, 0, 8, es)
    img += bytes(-len(img) % 4096)
    # Then a block of other data, as the next file of an image.
    img += random.Random(11).randbytes(4096)
    return bytes(img)

for name, fixed in (("elf-old.img", False), ("elf-new.img", True)):
    with open(os.path.join(out, name), "wb") as f:
        f.write(build(fixed))
