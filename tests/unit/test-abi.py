#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""
librsr's boundary (docs/abi.md): the functions declared in include/rsr/*.h,
the names in the version script lib/librsr.map and the symbols librsr.so
exports (nm -D --defined-only) must be the same set; every declaration
carries RSR_EXPORT and every exported symbol has the version node the
script gives it. Also checks that these checks catch a leaked and a missing
symbol. Output is TAP.

    test-abi.py INCLUDE_DIR MAP_FILE LIBRSR_SO [NM]
    test-abi.py --declared INCLUDE_DIR    prints the declared names
"""
import os
import re
import subprocess
import sys

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def blank(text, start, end):
    """Replaces text[start:end] by spaces, keeping newlines (and so offsets)."""
    return text[:start] + re.sub(r"[^\n]", " ", text[start:end]) + text[end:]


def strip_header(text):
    """The header's C with comments, strings, preprocessor lines and the
    __cplusplus wrapper blanked out; offsets stay those of the original."""
    for m in list(re.finditer(r"/\*.*?\*/|//[^\n]*|\"(?:\\.|[^\"\\\n])*\"", text, re.S)):
        text = blank(text, m.start(), m.end())
    for m in list(re.finditer(r"^[ \t]*#[ \t]*ifdef[ \t]+__cplusplus\b.*?^[ \t]*#[ \t]*endif[^\n]*", text, re.S | re.M)):
        text = blank(text, m.start(), m.end())
    for m in list(re.finditer(r"^[ \t]*#(?:[^\n]*\\\n)*[^\n]*", text, re.M)):
        text = blank(text, m.start(), m.end())
    return text


def declarations(text):
    """Top-level declarations of a header: (offset of the first token, C
    text with brace bodies removed), one per statement ending in ';'."""
    code = strip_header(text)
    out = []
    depth = 0
    start = None
    flat = []
    for i, c in enumerate(code):
        if start is None and not c.isspace():
            start = i
        if c == "{":
            depth += 1
            continue
        if c == "}":
            depth -= 1
            if depth < 0:
                raise ValueError("unbalanced '}' at offset %d" % i)
            continue
        if depth:
            continue
        if c == ";":
            if start is not None:
                out.append((start, " ".join("".join(flat).split())))
            start = None
            flat = []
            continue
        if start is not None:
            flat.append(c)
    if depth:
        raise ValueError("unbalanced '{'")
    return out


def functions(text):
    """(name, exported, offset) of each function declared at the top level
    of a header: a statement with a parameter list that is not a typedef."""
    out = []
    for off, decl in declarations(text):
        words = IDENT.findall(decl)
        if not words or words[0] == "typedef" or "(" not in decl:
            continue
        head = decl[: decl.index("(")].rstrip()
        m = re.search(r"([A-Za-z_][A-Za-z0-9_]*)$", head)
        if not m:
            raise ValueError("cannot read the name of: %s" % decl)
        out.append((m.group(1), words[0] == "RSR_EXPORT", off))
    return out


def header_files(include_dir):
    return sorted(os.path.join(include_dir, f) for f in os.listdir(include_dir) if f.endswith(".h"))


def declared(include_dir):
    """{name: header} of the public functions, plus a list of problems."""
    names, problems = {}, []
    for path in header_files(include_dir):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for name, exported, _ in functions(text):
            base = os.path.basename(path)
            if not exported:
                problems.append("%s: %s is declared without RSR_EXPORT" % (base, name))
            if not name.startswith("rsr_"):
                problems.append("%s: %s does not start with rsr_" % (base, name))
            if name in names and names[name] != base:
                problems.append("%s: %s is declared in %s too" % (base, name, names[name]))
            names[name] = base
        code = strip_header(text)
        for m in re.finditer(r"\bRSR_EXPORT\b", code):
            if not any(off == m.start() for _, _, off in functions(text)):
                problems.append("%s: RSR_EXPORT on something that is not a function declaration" % os.path.basename(path))
    return names, problems


def version_script(path):
    """{name: version node} of the global names, plus a list of problems."""
    with open(path, encoding="utf-8") as f:
        text = re.sub(r"/\*.*?\*/|#[^\n]*", " ", f.read(), flags=re.S)
    names, problems, nodes = {}, [], []
    for m in re.finditer(r"([A-Za-z_][A-Za-z0-9_.]*)\s*\{(.*?)\}\s*([A-Za-z0-9_.]*)\s*;", text, re.S):
        node, body = m.group(1), m.group(2)
        nodes.append(node)
        section = None
        for item in (s.strip() for s in body.split(";")):
            if not item:
                continue
            sm = re.match(r"(global|local)\s*:\s*(.*)$", item, re.S)
            if sm:
                section, item = sm.group(1), sm.group(2).strip()
                if not item:
                    continue
            if section == "local":
                if item != "*" or node != nodes[0]:
                    problems.append("%s: local: must be '*' and only in the first node (%s)" % (node, item))
                continue
            if section != "global" or not IDENT.fullmatch(item):
                problems.append("%s: not a plain global name: %r" % (node, item))
                continue
            if item in names:
                problems.append("%s: %s is listed in %s too" % (node, item, names[item]))
            names[item] = node
    if not nodes:
        problems.append("no version node")
    elif "local" not in text:
        problems.append("no 'local: *;': everything else would be exported")
    return names, problems


def exported(lib, nm="nm"):
    """{name: (nm's type letter, version)} of the symbols a shared object
    defines and exports; the version is '' when the symbol has none."""
    out = subprocess.run([nm, "-D", "--defined-only", "--with-symbol-versions", lib], check=True,
                         capture_output=True, text=True).stdout
    syms = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 2:
            continue
        kind, sym = fields[-2], fields[-1]
        name, _, version = sym.partition("@")
        syms[name] = (kind, version.lstrip("@"))
    return syms


def compare(decl, script, syms):
    """The problems of the boundary, given the three sets; none when they agree."""
    problems = []
    nodes = set(script.values())
    for name in sorted(syms):
        kind, version = syms[name]
        if kind == "A" and name in nodes and version in ("", name):
            continue  # the version node's own symbol
        if name not in decl:
            problems.append("%s is exported by librsr.so but declared in no public header" % name)
        elif name not in script:
            problems.append("%s is exported but not listed in the version script" % name)
        elif version != script[name]:
            problems.append("%s has version '%s', the script says %s" % (name, version, script[name]))
        elif kind not in "TW":
            problems.append("%s is exported as a '%s' symbol, not a function" % (name, kind))
    for name in sorted(decl):
        if name not in syms:
            problems.append("%s is declared in %s but librsr.so does not export it" % (name, decl[name]))
        if name not in script:
            problems.append("%s is declared in %s but not listed in the version script" % (name, decl[name]))
    for name in sorted(script):
        if name not in decl:
            problems.append("%s is listed in the version script but declared in no public header" % name)
    return problems


class Tap:
    def __init__(self):
        self.n = 0
        self.failed = 0

    def check(self, problems, what):
        self.n += 1
        for p in problems:
            print("# " + p)
        if problems:
            self.failed += 1
        print("%s %d - %s" % ("not ok" if problems else "ok", self.n, what))


def main(argv):
    if len(argv) == 3 and argv[1] == "--declared":
        names, problems = declared(argv[2])
        for p in problems:
            print(p, file=sys.stderr)
        print("\n".join(sorted(names)))
        return 1 if problems else 0
    if len(argv) not in (4, 5):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    include_dir, map_file, lib = argv[1:4]
    nm = argv[4] if len(argv) == 5 else "nm"
    tap = Tap()

    decl, problems = declared(include_dir)
    if len(decl) < 100:
        problems.append("only %d functions found in %s: the parser lost some" % (len(decl), include_dir))
    tap.check(problems, "%d functions declared in include/rsr/*.h, each with RSR_EXPORT" % len(decl))
    script, problems = version_script(map_file)
    tap.check(problems, "the version script lists %d names and hides everything else" % len(script))
    syms = exported(lib, nm)
    tap.check(compare(decl, script, syms),
              "librsr.so exports exactly the declared functions, at the script's versions")

    # The comparison itself must notice a leaked or a lost symbol.
    leaked = dict(syms, rsr_hex_encode=("T", next(iter(script.values()), "")))
    lost = dict(syms)
    lost.pop("rsr_ctx_new", None)
    bad = []
    if not any("rsr_hex_encode" in p for p in compare(decl, script, leaked)):
        bad.append("an exported internal function went unnoticed")
    if not any("rsr_ctx_new" in p for p in compare(decl, script, lost)):
        bad.append("a declared function missing from the library went unnoticed")
    unmarked = "int rsr_a(void);\nRSR_EXPORT int rsr_b(void);\nRSR_EXPORT struct rsr_x { int (*f)(void); };\n"
    found = [(n, e) for n, e, _ in functions(unmarked)]
    if found != [("rsr_a", False), ("rsr_b", True)]:
        bad.append("the header parser read %s" % found)
    tap.check(bad, "a leaked, a missing and an unmarked symbol would fail this test")

    print("1..%d" % tap.n)
    return 1 if tap.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
