# Shared by the response tests: a vendor with a key, cryptexes of corpus
# pairs, responses (a) and (b), and scratch device roots. Source after libtest.sh.

# vendor_setup: key, base and fixed images of libssl3 and libxml2, responses.
#   (a) fixes libssl3; (b) fixes libssl3 again (another build) and libxml2,
#   and accepts both the base image and (a)'s as inputs for libssl3.
vendor_setup() {
	local ssl xml
	ssl=$(corpus_pair libssl3)
	xml=$(corpus_pair libxml2)
	V=$T/vendor
	mkdir -p "$V"
	"$RSR" key generate -o "$V/key" >/dev/null 2>&1
	"$RSR" key generate -o "$V/other" >/dev/null 2>&1
	local b="--base test-1 --key $V/key"
	"$RSR" -q cryptex build "$ssl/old" -o "$V/ssl-base.cptx" --name libssl3 --version 3.0.20 $b
	"$RSR" -q cryptex build "$ssl/new" -o "$V/ssl-a.cptx" --name libssl3 --version 3.0.22 $b
	"$RSR" -q cryptex build "$ssl/new" -o "$V/ssl-b.cptx" --name libssl3 --version 3.0.22+b $b
	"$RSR" -q cryptex build "$xml/old" -o "$V/xml-base.cptx" --name libxml2 --version 2.9.14-u4 $b
	"$RSR" -q cryptex build "$xml/new" -o "$V/xml-b.cptx" --name libxml2 --version 2.9.14-u6 $b
	cat >"$V/adv-a.json" <<'JSON'
{"advisories": [{"id": "DSA-9001-1", "title": "OpenSSL", "severity": "high",
  "summary": "A crafted certificate could crash TLS clients.",
  "cves": ["CVE-2026-0001"], "affected_files": ["/usr/lib/x86_64-linux-gnu/libssl.so.3"]}]}
JSON
	cat >"$V/adv-b.json" <<'JSON'
{"advisories": [{"id": "DSA-9001-1", "title": "OpenSSL", "severity": "high",
  "summary": "A crafted certificate could crash TLS clients.", "cves": ["CVE-2026-0001"], "affected_files": []},
 {"id": "DSA-9002-1", "title": "libxml2", "severity": "medium", "summary": "Use after free when parsing XML.",
  "cves": ["CVE-2026-0003"], "affected_files": ["/usr/lib/x86_64-linux-gnu/libxml2.so.2"]}]}
JSON
	"$RSR" -q response create -o "$V/a" --base-build test-1 --letter a --key "$V/key" \
		--slot libssl3="$V/ssl-base.cptx:$V/ssl-a.cptx" --advisories "$V/adv-a.json"
	"$RSR" -q response create -o "$V/b" --base-build test-1 --letter b --key "$V/key" \
		--slot libssl3="$V/ssl-base.cptx:$V/ssl-b.cptx" --slot libxml2="$V/xml-base.cptx:$V/xml-b.cptx" \
		--previous "$V/a" --advisories "$V/adv-b.json"
}

# device_root DIR: a device on build test-1 whose slots hold the base images.
device_root() {
	local d=$1
	rm -rf "$d"
	mkdir -p "$d/etc/rsr/keys.d" "$d/usr"
	cp "$V/key.pub" "$d/etc/rsr/keys.d/vendor.pub"
	printf 'NAME="Test OS"\nPRETTY_NAME="Test OS 12"\nVERSION_ID=12\nBUILD_ID=test-1\n' >"$d/etc/os-release"
	"$RSR" -q graft --root "$d" --add "$V/ssl-base.cptx" --add "$V/xml-base.cptx" --no-mount
}

sha() { sha256sum "$1" | cut -d' ' -f1; }
slot_sha() { sha "$1/var/lib/rsr/cryptexes/$2/current"; }

# device_is DIR STATE: STATE is base, a or b; checks every slot and the state.
device_is() {
	local d=$1 want=$2 ssl xml letter
	case $want in
	base) ssl=ssl-base xml=xml-base letter=null ;;
	a) ssl=ssl-a xml=xml-base letter='"a"' ;;
	b) ssl=ssl-b xml=xml-b letter='"b"' ;;
	esac
	[ "$(slot_sha "$d" libssl3)" = "$(sha "$V/$ssl.cptx")" ] || { echo "libssl3 is not $ssl" >&2; return 1; }
	[ "$(slot_sha "$d" libxml2)" = "$(sha "$V/$xml.cptx")" ] || { echo "libxml2 is not $xml" >&2; return 1; }
	python3 - "$d/var/lib/rsr/response/state.json" "$letter" <<'PY' || return 1
import json, sys
p, want = sys.argv[1], json.loads(sys.argv[2])
try:
    st = json.load(open(p))
except FileNotFoundError:
    st = {"installed": None}
got = st["installed"]["letter"] if st.get("installed") else None
if got != want:
    sys.exit(f"state says {got}, expected {want}")
# The kept response (its manifest and reverse patches) is the installed one.
kept = p.replace("state.json", "current/response.json")
try:
    letter = json.load(open(kept))["signed"]["letter"]
except FileNotFoundError:
    letter = None
if letter != want:
    sys.exit(f"state says {got}, but the kept response is {letter}")
PY
	[ ! -e "$d/var/lib/rsr/response/journal.json" ] && [ ! -e "$d/var/lib/rsr/response/incoming" ] ||
		{ echo "journal or incoming left behind" >&2; return 1; }
	# Only the current image of each slot is kept.
	[ "$(ls "$d/var/lib/rsr/cryptexes/libssl3" | wc -l)" = 2 ] || { echo "stale images kept" >&2; ls "$d/var/lib/rsr/cryptexes/libssl3" >&2; return 1; }
}
