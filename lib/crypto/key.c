/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Ed25519 keys on OpenSSL's EVP interface: generation, PEM loading, key ids,
 * signing and verification, and keyrings of trusted public keys.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "internal.h"
#include "rsr/key.h"

struct rsr_key {
	EVP_PKEY *pkey;
	bool private;
	uint8_t raw[32];
	uint8_t id[RSR_KEY_ID_SIZE];
	char id_hex[RSR_KEY_ID_HEX_SIZE];
};

struct rsr_keyring {
	struct rsr_key **keys;
	size_t n, cap;
};

static int key_wrap(struct rsr_ctx *ctx, EVP_PKEY *pkey, bool private, const char *what, struct rsr_key **ret)
{
	struct rsr_key *key;
	size_t rawlen = sizeof(key->raw);

	if (EVP_PKEY_get_base_id(pkey) != EVP_PKEY_ED25519) {
		EVP_PKEY_free(pkey);
		return rsr_error(ctx, RSR_E_KEY, "%s: not an Ed25519 key", what);
	}
	key = calloc(1, sizeof(*key));
	if (!key) {
		EVP_PKEY_free(pkey);
		return rsr_error(ctx, -ENOMEM, "%s: out of memory", what);
	}
	key->pkey = pkey;
	key->private = private;
	if (EVP_PKEY_get_raw_public_key(pkey, key->raw, &rawlen) != 1 || rawlen != 32) {
		rsr_key_free(key);
		return rsr_error(ctx, RSR_E_KEY, "%s: cannot read the public key", what);
	}
	if (rsr_sha256(key->raw, sizeof(key->raw), key->id) < 0) {
		rsr_key_free(key);
		return rsr_error(ctx, -ENOMEM, "%s: out of memory", what);
	}
	rsr_hex_encode(key->id, sizeof(key->id), key->id_hex);
	*ret = key;
	return 0;
}

void rsr_key_free(struct rsr_key *key)
{
	if (!key)
		return;
	EVP_PKEY_free(key->pkey);
	free(key);
}

static int write_pem(struct rsr_ctx *ctx, const char *path, EVP_PKEY *pkey, bool private)
{
	_cleanup_close_ int fd = -1;
	FILE *f;
	int ok;

	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, private ? 0600 : 0644);
	if (fd < 0)
		return rsr_error_errno(ctx, -errno, "%s", path);
	f = fdopen(fd, "w");
	if (!f) {
		unlink(path);
		return rsr_error_errno(ctx, -errno, "%s", path);
	}
	TAKE_FD(fd);
	ok = private ? PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL) : PEM_write_PUBKEY(f, pkey);
	if (ok != 1 || fflush(f) != 0 || fsync(fileno(f)) < 0) {
		fclose(f);
		unlink(path);
		return rsr_error(ctx, -EIO, "%s: cannot write the key", path);
	}
	if (fclose(f) != 0) {
		unlink(path);
		return rsr_error_errno(ctx, -errno, "%s", path);
	}
	return 0;
}

int rsr_key_generate(struct rsr_ctx *ctx, const char *path, struct rsr_key **ret_key)
{
	EVP_PKEY *pkey = NULL;
	struct rsr_key *key = NULL;
	_cleanup_free_ char *pub = NULL;
	int r;

	if (asprintf(&pub, "%s.pub", path) < 0) {
		pub = NULL;
		return rsr_error(ctx, -ENOMEM, "out of memory");
	}
	if (access(path, F_OK) == 0 || access(pub, F_OK) == 0)
		return rsr_error(ctx, -EEXIST, "%s: refusing to overwrite an existing key",
				 access(path, F_OK) == 0 ? path : pub);
	pkey = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	if (!pkey)
		return rsr_error(ctx, RSR_E_KEY, "cannot generate an Ed25519 key");
	r = key_wrap(ctx, pkey, true, path, &key);
	if (r < 0)
		return r;
	r = write_pem(ctx, path, key->pkey, true);
	if (r < 0)
		goto fail;
	r = write_pem(ctx, pub, key->pkey, false);
	if (r < 0) {
		unlink(path);
		goto fail;
	}
	/* Both names must be durable, or neither key is reported as made. */
	r = rsr_fsync_dir_of(path);
	if (r < 0) {
		rsr_error_errno(ctx, r, "%s: fsync of its directory", path);
		unlink(pub);
		unlink(path);
		goto fail;
	}
	if (ret_key)
		*ret_key = key;
	else
		rsr_key_free(key);
	return 0;
fail:
	rsr_key_free(key);
	return r;
}

static int load_pem(struct rsr_ctx *ctx, const char *path, bool want_private, struct rsr_key **ret_key)
{
	_cleanup_free_ char *buf = NULL;
	EVP_PKEY *pkey = NULL;
	size_t len;
	BIO *bio;
	int r;

	r = rsr_read_file(ctx, path, 64 * 1024, &buf, &len);
	if (r < 0)
		return r;
	bio = BIO_new_mem_buf(buf, (int)len);
	if (!bio)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
	if (!pkey && want_private) {
		BIO_free(bio);
		return rsr_error(ctx, RSR_E_KEY, "%s: not a PEM private key", path);
	}
	if (!pkey) {
		BIO_reset(bio);
		pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
	}
	BIO_free(bio);
	OPENSSL_cleanse(buf, len);
	if (!pkey)
		return rsr_error(ctx, RSR_E_KEY, "%s: not a PEM public or private key", path);
	return key_wrap(ctx, pkey, want_private, path, ret_key);
}

int rsr_key_load_private(struct rsr_ctx *ctx, const char *path, struct rsr_key **ret_key)
{
	return load_pem(ctx, path, true, ret_key);
}

int rsr_key_load_public(struct rsr_ctx *ctx, const char *path, struct rsr_key **ret_key)
{
	return load_pem(ctx, path, false, ret_key);
}

int rsr_key_from_raw_public(struct rsr_ctx *ctx, const uint8_t raw[32], struct rsr_key **ret_key)
{
	EVP_PKEY *pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, raw, 32);

	if (!pkey)
		return rsr_error(ctx, RSR_E_KEY, "invalid Ed25519 public key");
	return key_wrap(ctx, pkey, false, "public key", ret_key);
}

void rsr_key_id(const struct rsr_key *key, uint8_t ret_id[RSR_KEY_ID_SIZE])
{
	memcpy(ret_id, key->id, RSR_KEY_ID_SIZE);
}

const char *rsr_key_id_hex(const struct rsr_key *key)
{
	return key->id_hex;
}

void rsr_key_public_raw(const struct rsr_key *key, uint8_t ret_raw[32])
{
	memcpy(ret_raw, key->raw, 32);
}

bool rsr_key_is_private(const struct rsr_key *key)
{
	return key->private;
}

int rsr_key_sign(struct rsr_ctx *ctx, const struct rsr_key *key, const void *msg, size_t len,
		 uint8_t ret_sig[RSR_SIGNATURE_SIZE])
{
	EVP_MD_CTX *md;
	size_t siglen = RSR_SIGNATURE_SIZE;
	int ok;

	if (!key->private)
		return rsr_error(ctx, RSR_E_KEY, "key %.16s… is a public key; signing needs the private key",
				 key->id_hex);
	md = EVP_MD_CTX_new();
	if (!md)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	ok = EVP_DigestSignInit(md, NULL, NULL, NULL, key->pkey) == 1 &&
	     EVP_DigestSign(md, ret_sig, &siglen, msg, len) == 1 && siglen == RSR_SIGNATURE_SIZE;
	EVP_MD_CTX_free(md);
	if (!ok)
		return rsr_error(ctx, RSR_E_KEY, "signing with key %.16s… failed", key->id_hex);
	return 0;
}

int rsr_key_verify(const struct rsr_key *key, const void *msg, size_t len, const uint8_t sig[RSR_SIGNATURE_SIZE])
{
	EVP_MD_CTX *md;
	int v = -1;

	/*
	 * A signature that does not match makes EVP_DigestVerify return 0 and
	 * queue no error. Anything else is OpenSSL failing inside (out of
	 * memory), which must not be reported as an altered signature. A
	 * failed allocation is queued by the function that made it in OpenSSL
	 * 3.0, and by CRYPTO_malloc itself from 3.2 on.
	 */
	ERR_clear_error();
	md = EVP_MD_CTX_new();
	if (md && EVP_DigestVerifyInit(md, NULL, NULL, NULL, key->pkey) == 1)
		v = EVP_DigestVerify(md, sig, RSR_SIGNATURE_SIZE, msg, len);
	EVP_MD_CTX_free(md);
	if (v == 1)
		return 0;
	if (v == 0 && ERR_peek_error() == 0)
		return RSR_E_SIGNATURE;
	ERR_clear_error();
	return -ENOMEM;
}

int rsr_keyring_new(struct rsr_keyring **ret_ring)
{
	struct rsr_keyring *ring = calloc(1, sizeof(*ring));

	if (!ring)
		return -ENOMEM;
	*ret_ring = ring;
	return 0;
}

void rsr_keyring_free(struct rsr_keyring *ring)
{
	if (!ring)
		return;
	for (size_t i = 0; i < ring->n; i++)
		rsr_key_free(ring->keys[i]);
	free(ring->keys);
	free(ring);
}

int rsr_keyring_add(struct rsr_keyring *ring, struct rsr_key *key)
{
	if (rsr_keyring_find(ring, key->id)) {
		rsr_key_free(key);
		return 0;
	}
	if (ring->n == ring->cap) {
		size_t cap = ring->cap ? 2 * ring->cap : 4;
		struct rsr_key **k = realloc(ring->keys, cap * sizeof(*k));
		if (!k) {
			rsr_key_free(key);
			return -ENOMEM;
		}
		ring->keys = k;
		ring->cap = cap;
	}
	ring->keys[ring->n++] = key;
	return 0;
}

int rsr_keyring_add_file(struct rsr_ctx *ctx, struct rsr_keyring *ring, const char *path)
{
	struct rsr_key *key;
	int r;

	r = rsr_key_load_public(ctx, path, &key);
	if (r < 0)
		return r;
	r = rsr_keyring_add(ring, key);
	if (r < 0)
		return rsr_error(ctx, r, "out of memory");
	return 0;
}

static bool has_suffix(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);
	return n > m && strcmp(s + n - m, suffix) == 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int rsr_keyring_add_dir(struct rsr_ctx *ctx, struct rsr_keyring *ring, const char *dir)
{
	DIR *d = opendir(dir);
	char **names = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	int r = 0;

	if (!d)
		return errno == ENOENT ? 0 : rsr_error_errno(ctx, -errno, "%s", dir);
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.' || !(has_suffix(de->d_name, ".pub") || has_suffix(de->d_name, ".pem")))
			continue;
		if (n == cap) {
			cap = cap ? 2 * cap : 8;
			char **nn = realloc(names, cap * sizeof(*nn));
			if (!nn) {
				r = rsr_error(ctx, -ENOMEM, "out of memory");
				goto out;
			}
			names = nn;
		}
		if (asprintf(&names[n], "%s/%s", dir, de->d_name) < 0) {
			r = rsr_error(ctx, -ENOMEM, "out of memory");
			goto out;
		}
		n++;
	}
	/* Sorted, so that errors and logs do not depend on directory order. */
	if (n > 0)
		qsort(names, n, sizeof(*names), cmp_str);
	for (size_t i = 0; i < n && r >= 0; i++)
		r = rsr_keyring_add_file(ctx, ring, names[i]);
out:
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	closedir(d);
	return r;
}

size_t rsr_keyring_count(const struct rsr_keyring *ring)
{
	return ring->n;
}

const struct rsr_key *rsr_keyring_find(const struct rsr_keyring *ring, const uint8_t id[RSR_KEY_ID_SIZE])
{
	for (size_t i = 0; i < ring->n; i++)
		if (memcmp(ring->keys[i]->id, id, RSR_KEY_ID_SIZE) == 0)
			return ring->keys[i];
	return NULL;
}
