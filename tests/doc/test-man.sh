#!/usr/bin/env bash
# The manual pages built from docs/man/*.md: each renders with man -l with
# no warnings from groff or from the converter and has NAME, SYNOPSIS and
# DESCRIPTION; every rsr page that the pages, the units, the README or any
# --help names exists; every group of rsr --help has a page; after meson
# install, man finds them (man rsr-install, man rsr-remove).
. "$(dirname "$0")/../integration/libtest.sh"
: "${RSR_BUILDDIR:?}"
command -v man >/dev/null || skip_all "no man (man-db)"
pages=$RSR_BUILDDIR/docs
ls "$pages"/*.1 >/dev/null 2>&1 || skip_all "manual pages not built (-Dman=disabled, or no lowdown)"
export LC_ALL=C.UTF-8 MANWIDTH=80

for p in "$pages"/*.1; do
	n=$(basename "$p" .1)
	man --warnings -l "$p" >"$T/page" 2>"$T/warn" || fail "$n: man -l failed: $(cat "$T/warn")"
	[ ! -s "$T/warn" ] || fail "$n: warnings: $(cat "$T/warn")"
	for s in NAME SYNOPSIS DESCRIPTION; do
		grep -qx "$s" "$T/page" || fail "$n: no $s section"
	done
	head -1 "$T/page" | grep -q "^$n(1) " || fail "$n: title line is $(head -1 "$T/page")"
	lowdown -s -Tman "$RSR_SRCDIR/docs/man/$n.md" >/dev/null 2>"$T/warn"
	[ ! -s "$T/warn" ] || fail "$n: lowdown warns: $(cat "$T/warn")"
done
ok "$(ls "$pages"/*.1 | wc -l) pages render with no warnings and have NAME, SYNOPSIS, DESCRIPTION"

# The names pages answer to: their file names and every name in their NAME line.
for p in "$pages"/*.1; do
	man -l "$p" 2>/dev/null | awk '/^NAME$/ { getline; sub(/ - .*/, ""); gsub(/[ ,]+/, "\n"); print }'
done | grep . | sort -u >"$T/names"
{
	grep -ohE '(man:)?rsr[a-z-]*\(1\)' "$RSR_SRCDIR"/docs/man/*.md "$RSR_SRCDIR"/data/*.in "$RSR_SRCDIR"/data/*.timer \
		"$RSR_SRCDIR"/README.md "$RSR_SRCDIR"/docs/*.md || true
	{
	"$RSR" --help
	for g in $("$RSR" --help | awk '/^Groups:$/ { on = 1; next } /^$/ { on = 0 } on { print $1 }'); do
		"$RSR" "$g" --help 2>&1
		for v in $("$RSR" "$g" --help 2>/dev/null | awk '/^Verbs:$/ { on = 1; next } /^$/ { on = 0 } on { print $1 }'); do
			"$RSR" "$g" "$v" --help 2>&1
		done
	done
	} | grep -oE 'rsr[a-z-]*\(1\)' || true
} | sed 's/^man://; s/(1)$//' | sort -u >"$T/refs"
[ -s "$T/refs" ] || fail "no references found"
missing=$(comm -23 "$T/refs" "$T/names")
[ -z "$missing" ] || fail "referenced but no page: $missing"
ok "every referenced page exists: $(tr '\n' ' ' <"$T/refs")"
for g in $("$RSR" --help | awk '/^Groups:$/ { on = 1; next } /^$/ { on = 0 } on { print $1 }'); do
	grep -qx "rsr-$g" "$T/names" || fail "group $g has no page rsr-$g(1)"
done
ok "every group has its page"

meson install -C "$RSR_BUILDDIR" --no-rebuild --destdir "$T/dest" >"$T/install.log" 2>&1 || {
	cat "$T/install.log"
	fail "meson install"
}
mandir=$(find "$T/dest" -type d -name man1 -path '*/share/man/man1' | head -1)
[ -n "$mandir" ] || fail "no man1 directory installed"
for n in rsr rsr-install rsr-remove rsr-cryptex rsr-graft; do
	man -M "${mandir%/man1}" "$n" >"$T/page" 2>"$T/warn" || fail "man $n after install: $(cat "$T/warn")"
	grep -qx NAME "$T/page" || fail "man $n: no NAME"
done
grep -q "rsr-remove" <(man -M "${mandir%/man1}" rsr-remove) || fail "man rsr-remove is not the install/remove page"
ok "after meson install, man rsr-install, man rsr-remove and the others work"
echo "1..$TESTS_RUN"
