#!/usr/bin/env bash
# rsr key: generate, ids, and interoperability with openssl-made keys.
. "$(dirname "$0")/libtest.sh"

expect 0 key generate -o "$T/k"
id=$(cat "$T/out")
[ ${#id} = 64 ] || fail "key id is not 64 hex characters: $id"
[ "$(stat -c %a "$T/k")" = 600 ] || fail "private key is not mode 0600"
grep -q 'BEGIN PRIVATE KEY' "$T/k" && grep -q 'BEGIN PUBLIC KEY' "$T/k.pub" || fail "keys are not PEM"
ok "generate writes a PEM pair, private mode 0600"

expect 0 key id "$T/k.pub" "$T/k"
[ "$(awk '{print $1}' "$T/out" | sort -u)" = "$id" ] || fail "public and private key ids differ"
want=$(openssl pkey -pubin -in "$T/k.pub" -outform DER | tail -c 32 | sha256sum | cut -d' ' -f1)
[ "$want" = "$id" ] || fail "key id $id is not SHA-256 of the raw public key ($want)"
ok "key id is SHA-256 of the raw public key"

expect 1 key generate -o "$T/k"
assert_grep "refusing to overwrite" "$T/err"
ok "generate refuses to overwrite"

openssl genpkey -algorithm ed25519 -out "$T/o.pem" 2>/dev/null
expect 0 key id "$T/o.pem"
openssl genpkey -algorithm rsa -pkeyopt rsa_keygen_bits:1024 -out "$T/rsa.pem" 2>/dev/null
expect 1 key id "$T/rsa.pem"
assert_grep "not an Ed25519 key" "$T/err"
ok "openssl keys: Ed25519 accepted, RSA refused"

expect 2 key frobnicate
expect 0 key --help
expect 0 key generate --help
expect 2 --threads x key id
ok "usage errors exit 2, --help exits 0"
echo "1..$TESTS_RUN"
