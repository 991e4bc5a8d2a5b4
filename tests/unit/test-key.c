/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Unit tests of Ed25519 keys: generation, loading, ids, signatures, keyrings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <sys/stat.h>

#include "internal.h"
#include "rsr/key.h"

/* RFC 8032 section 7.1, test 1: public key and the key id we derive from it. */
static const char *rfc8032_pub = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
static const char *rfc8032_sig = "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
				 "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b";

static void test_rfc8032_vector(void **state)
{
	struct rsr_ctx *ctx;
	struct rsr_key *key;
	uint8_t raw[32], sig[64], id[32], want_id[32];

	assert_int_equal(rsr_ctx_new(&ctx), 0);
	assert_true(rsr_hex_decode(rfc8032_pub, raw, 32));
	assert_true(rsr_hex_decode(rfc8032_sig, sig, 64));
	assert_int_equal(rsr_key_from_raw_public(ctx, raw, &key), 0);
	assert_int_equal(rsr_key_verify(key, "", 0, sig), 0);
	sig[10] ^= 1;
	assert_int_equal(rsr_key_verify(key, "", 0, sig), RSR_E_SIGNATURE);
	rsr_key_id(key, id);
	rsr_sha256(raw, 32, want_id);
	assert_memory_equal(id, want_id, 32);
	assert_false(rsr_key_is_private(key));
	assert_int_equal(rsr_key_sign(ctx, key, "x", 1, sig), RSR_E_KEY);
	rsr_key_free(key);
	rsr_ctx_free(ctx);
}

static void test_generate_sign_verify(void **state)
{
	struct rsr_ctx *ctx;
	struct rsr_key *priv, *pub, *again;
	struct rsr_keyring *ring;
	char dir[] = "/tmp/rsr-key-XXXXXX", path[64], pubpath[80];
	uint8_t sig[64], id[32];
	struct stat st;

	assert_int_equal(rsr_ctx_new(&ctx), 0);
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/k", dir);
	snprintf(pubpath, sizeof(pubpath), "%s/k.pub", dir);
	assert_int_equal(rsr_key_generate(ctx, path, &priv), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(rsr_key_generate(ctx, path, NULL), -EEXIST);
	assert_int_equal(rsr_key_load_public(ctx, pubpath, &pub), 0);
	assert_string_equal(rsr_key_id_hex(priv), rsr_key_id_hex(pub));
	assert_int_equal(rsr_key_load_private(ctx, path, &again), 0);
	assert_int_equal(rsr_key_load_private(ctx, pubpath, &again), RSR_E_KEY);
	assert_int_equal(rsr_key_sign(ctx, priv, "message", 7, sig), 0);
	assert_int_equal(rsr_key_verify(pub, "message", 7, sig), 0);
	assert_int_equal(rsr_key_verify(pub, "messagf", 7, sig), RSR_E_SIGNATURE);

	assert_int_equal(rsr_keyring_new(&ring), 0);
	assert_int_equal(rsr_keyring_add_dir(ctx, ring, dir), 0);
	assert_int_equal(rsr_keyring_count(ring), 1);
	rsr_key_id(pub, id);
	assert_non_null(rsr_keyring_find(ring, id));
	id[0] ^= 1;
	assert_null(rsr_keyring_find(ring, id));
	assert_int_equal(rsr_keyring_add_dir(ctx, ring, "/nonexistent-rsr"), 0);
	rsr_keyring_free(ring);

	rsr_key_free(again);
	rsr_key_free(pub);
	rsr_key_free(priv);
	unlink(path);
	unlink(pubpath);
	rmdir(dir);
	rsr_ctx_free(ctx);
}

static void test_not_a_key(void **state)
{
	struct rsr_ctx *ctx;
	struct rsr_key *key;
	char path[] = "/tmp/rsr-notkey-XXXXXX";
	int fd;

	assert_int_equal(rsr_ctx_new(&ctx), 0);
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "-----BEGIN PUBLIC KEY-----\ngarbage\n", 35), 35);
	close(fd);
	assert_int_equal(rsr_key_load_public(ctx, path, &key), RSR_E_KEY);
	assert_non_null(strstr(rsr_ctx_error(ctx), path));
	unlink(path);
	rsr_ctx_free(ctx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_rfc8032_vector),
	    cmocka_unit_test(test_generate_sign_verify),
	    cmocka_unit_test(test_not_a_key),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
