#!/usr/bin/env bash
# The bash completion (data/completion/rsr), driven as bash drives it:
# COMP_WORDS and COMP_CWORD set, _rsr called, COMPREPLY checked. Groups,
# verbs and options come from rsr's --help, slot names from the device's
# store; and no option a verb's parser takes is missing from the --help
# texts the completion reads.
. "$(dirname "$0")/../integration/libtest.sh"
[ -f /usr/share/bash-completion/bash_completion ] && . /usr/share/bash-completion/bash_completion
set +e
. "$RSR_SRCDIR/data/completion/rsr"
set -e
complete_line() { # WORDS...: the last word is the one being completed
	COMP_WORDS=("$RSR" "$@")
	COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
	COMP_LINE="${COMP_WORDS[*]}"
	COMP_POINT=${#COMP_LINE}
	COMPREPLY=()
	_rsr "$RSR" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
	printf '%s\n' "${COMPREPLY[@]}" | sort
}
expect_words() { # WANT WORDS...
	local want=$1 got
	shift
	got=$(complete_line "$@" | tr '\n' ' ')
	[ "$got" = "$want" ] || fail "completing '$*': got '$got', want '$want'"
}
has_word() { # WORD WORDS...
	local w=$1
	shift
	complete_line "$@" | grep -qx -- "$w" || fail "completing '$*': no '$w' in: $(complete_line "$@" | tr '\n' ' ')"
}

expect_words "cryptex " cr
expect_words "restart-services " rest
all=$(complete_line "" | tr '\n' ' ')
for g in key cryptex graft ungraft status restart-services patch response install remove repo check update enroll; do
	[[ " $all" == *" $g "* ]] || fail "group $g not offered: $all"
done
ok "groups"
expect_words "--help build export info verify " cryptex ""
expect_words "rotate-key " repo rot
expect_words "--help generate id " -q key ""
ok "verbs, also after global options"
has_word --threads -
has_word --quiet --q
has_word --no-merged-usr cryptex build --no
has_word --deb cryptex build --d
has_word --json status --
has_word --root status --
has_word --add graft --a
has_word --keep-base install --k
has_word --also-from patch create --a
has_word --repository-root enroll --rep
has_word --margin repo refresh --m
has_word --json repo status --
ok "options of the verb (from its --help)"

R=$T/root
mkdir -p "$R/var/lib/rsr/cryptexes/libssl3" "$R/var/lib/rsr/cryptexes/webkit2gtk" "$R/var/lib/rsr/cryptexes/os"
expect_words "libssl3 " graft --root "$R" --remove li
expect_words "libssl3 os webkit2gtk " graft --root "$R" --remove ""
expect_words "libssl3 os webkit2gtk " -q graft --root="$R" --remove ""
ok "slot names from the store under --root"
mkdir -p "$T/files"
touch "$T/files/a.cptx" "$T/files/b.deb"
expect_words "$T/files/a.cptx " graft --add "$T/files/a"
ok "files as arguments"

# Drift: every long option in a group's parsers is named (as --long or as
# its short letter) in the --help of that group or one of its verbs.
python3 - "$RSR_SRCDIR" "$RSR" <<'PY' || fail "an option is missing from --help"
import re, subprocess, sys, glob
src, rsr = sys.argv[1], sys.argv[2]
groups = re.findall(r'\{"([a-z-]+)", (cmd_\w+), "', open(src + "/cmd/rsr.c").read())
files = {}
for path in glob.glob(src + "/cmd/*.c"):
    text = open(path).read()
    for g, fn in groups:
        if re.search(r"^int %s\(" % fn, text, re.M):
            files.setdefault(path, []).append(g)
bad = []
for path, gs in files.items():
    text = open(path).read()
    opts = set(re.findall(r'\{"([a-z0-9-]+)", (?:no|required|optional)_argument, NULL, \'(.)\'\}', text))
    helps = ""
    for g in gs:
        out = subprocess.run([rsr, g, "--help"], capture_output=True, text=True).stdout
        helps += out
        if "\nVerbs:\n" in out:
            for v in re.findall(r"^  ([a-z-]+) ", out.split("\nVerbs:\n")[1], re.M):
                helps += subprocess.run([rsr, g, v, "--help"], capture_output=True, text=True).stdout
    for name, short in sorted(opts):
        if name == "help":
            continue
        if not re.search(r"(?<![\w-])--%s(?![\w-])" % re.escape(name), helps) and \
           not re.search(r"(?<![\w-])-%s(?![\w-])" % re.escape(short), helps):
            bad.append(f"{path.rsplit('/', 1)[1]}: --{name}")
if bad:
    print("options no --help names:", ", ".join(bad))
    sys.exit(1)
PY
ok "every option a parser takes is in a --help the completion reads"
echo "1..$TESTS_RUN"
