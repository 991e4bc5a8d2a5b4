/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * SHA-256 of buffers and file ranges, on OpenSSL's EVP interface.
 */
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "internal.h"

int rsr_crypto_init(void)
{
	if (OPENSSL_init_crypto(0, NULL) != 1 || !OSSL_LIB_CTX_get0_global_default())
		return -ENOMEM;
	return 0;
}

int rsr_sha256(const void *buf, size_t len, uint8_t out[32])
{
	unsigned int n = 32;

	/* OpenSSL allocates a context here; a failure must not leave `out` undefined. */
	if (EVP_Digest(buf, len, out, &n, EVP_sha256(), NULL) != 1) {
		memset(out, 0, 32);
		return -ENOMEM;
	}
	return 0;
}

int rsr_sha256_fd(struct rsr_ctx *ctx, int fd, uint64_t off, uint64_t len, const char *what, uint8_t out[32])
{
	const size_t bufsz = 1u << 20;
	_cleanup_free_ uint8_t *buf = rsr_alloc_large(bufsz);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	char label[RSR_PROGRESS_LABEL_MAX];
	uint64_t done = 0;
	unsigned int n = 32;
	int r = 0;

	if (!buf || !md) {
		r = rsr_error(ctx, -ENOMEM, "%s: out of memory", what);
		goto out;
	}
	if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
		r = rsr_error(ctx, -EIO, "%s: SHA-256 unavailable", what);
		goto out;
	}
	while (done < len) {
		size_t chunk = (size_t)RSR_MIN(len - done, bufsz);
		r = rsr_pread_all(fd, buf, chunk, off + done);
		if (r == -ENODATA) {
			r = rsr_error(ctx, RSR_E_FORMAT, "%s: ends at %llu bytes, expected %llu", what,
				      (unsigned long long)(off + done), (unsigned long long)(off + len));
			goto out;
		}
		if (r < 0) {
			r = rsr_error_errno(ctx, r, "%s: read", what);
			goto out;
		}
		if (EVP_DigestUpdate(md, buf, chunk) != 1) {
			r = rsr_error(ctx, -ENOMEM, "%s: SHA-256 failed: out of memory", what);
			goto out;
		}
		done += chunk;
		r = rsr_progress(ctx, rsr_progress_label(label, sizeof(label), "hashing", what), done, len);
		if (r < 0)
			goto out;
	}
	if (EVP_DigestFinal_ex(md, out, &n) != 1)
		r = rsr_error(ctx, -ENOMEM, "%s: SHA-256 failed: out of memory", what);
out:
	EVP_MD_CTX_free(md);
	return r;
}
