/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The piece digest that names a patch's inputs and output (docs/formats/
 * patch.md): SHA-256 over the SHA-256 of every 1 MiB piece. Unlike one
 * SHA-256 over the whole image, the pieces are hashed on every core, and
 * the patcher computes the digests of its input and its output in the same
 * pass as the output itself.
 */
#include <openssl/evp.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>

#include "format.h"

int pieces_combine(const uint8_t (*h)[32], uint64_t size, uint8_t out[32])
{
	uint64_t n = pieces_count(size);
	uint8_t head[sizeof(PIECES_DOMAIN) + 12];
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned int dlen = 32;
	int r = -ENOMEM;

	memcpy(head, PIECES_DOMAIN, sizeof(PIECES_DOMAIN));
	rsr_put_le64(head + sizeof(PIECES_DOMAIN), size);
	rsr_put_le32(head + sizeof(PIECES_DOMAIN) + 8, PIECE_SIZE);
	if (md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 && EVP_DigestUpdate(md, head, sizeof(head)) == 1 &&
	    (n == 0 || EVP_DigestUpdate(md, h, (size_t)n * 32) == 1) && EVP_DigestFinal_ex(md, out, &dlen) == 1)
		r = 0;
	else
		memset(out, 0, 32); /* never left undefined: a zero digest fails every comparison */
	EVP_MD_CTX_free(md);
	return r;
}

struct pieces_job {
	struct rsr_ctx *ctx;
	const uint8_t *mem; /* or: */
	int fd;
	uint64_t size;
	uint8_t (*h)[32];
	uint8_t *bufs[64];
	const char *what;
	pthread_mutex_t lock;
	uint64_t done;
	int err; /* of the first failing piece, reported after the run */
	uint64_t err_piece;
};

static int piece_task(void *arg, size_t i, unsigned worker)
{
	struct pieces_job *j = arg;
	uint64_t off = (uint64_t)i * PIECE_SIZE;
	size_t len = (size_t)RSR_MIN(PIECE_SIZE, j->size - off);
	const uint8_t *p = j->mem ? j->mem + off : NULL;
	int r;

	if (!p) {
		if (!j->bufs[worker] && !(j->bufs[worker] = rsr_alloc_large(PIECE_SIZE)))
			r = -ENOMEM;
		else
			r = rsr_pread_all(j->fd, j->bufs[worker], len, off);
		p = j->bufs[worker];
	} else
		r = 0;
	if (r == 0)
		r = rsr_sha256(p, len, j->h[i]);
	pthread_mutex_lock(&j->lock);
	if (r < 0 && (!j->err || i < j->err_piece)) {
		j->err = r;
		j->err_piece = i;
	}
	j->done += len;
	if (r == 0 && j->ctx)
		r = rsr_progress(j->ctx, j->what, j->done, j->size);
	pthread_mutex_unlock(&j->lock);
	return r;
}

static int pieces_run(struct rsr_ctx *ctx, struct pieces_job *j, unsigned threads, uint8_t out[32])
{
	uint64_t n = pieces_count(j->size);
	int r;

	if (n > SIZE_MAX / 32)
		return ctx ? rsr_error(ctx, RSR_E_LIMIT, "%s: too large", j->what) : RSR_E_LIMIT;
	j->h = malloc(n ? (size_t)n * 32 : 1);
	if (!j->h)
		return ctx ? rsr_error(ctx, -ENOMEM, "%s: out of memory", j->what) : -ENOMEM;
	pthread_mutex_init(&j->lock, NULL);
	threads = RSR_MIN(RSR_MIN(threads, ARRAY_SIZE(j->bufs)), (unsigned)RSR_MAX(n, 1));
	r = rsr_parallel_for(threads, (size_t)n, piece_task, j);
	pthread_mutex_destroy(&j->lock);
	for (size_t w = 0; w < ARRAY_SIZE(j->bufs); w++)
		free(j->bufs[w]);
	if (r == 0 && pieces_combine((const uint8_t(*)[32])j->h, j->size, out) < 0)
		r = j->err = -ENOMEM;
	free(j->h);
	if (r < 0 && ctx && j->err == -ENODATA)
		return rsr_error(ctx, RSR_E_FORMAT, "%s: shorter than %llu bytes", j->what,
				 (unsigned long long)j->size);
	if (r < 0 && ctx && j->err == -ENOMEM)
		return rsr_error(ctx, -ENOMEM, "%s: out of memory", j->what);
	if (r < 0 && ctx && j->err)
		return rsr_error_errno(ctx, j->err, "%s: cannot read piece %llu", j->what,
				       (unsigned long long)j->err_piece);
	return r; /* or the progress callback's cancellation, already recorded */
}

int pieces_digest_mem(const uint8_t *p, uint64_t size, unsigned threads, uint8_t out[32])
{
	struct pieces_job j = {.mem = p, .fd = -1, .size = size, .what = "image"};

	return pieces_run(NULL, &j, threads, out);
}

int pieces_digest_fd(struct rsr_ctx *ctx, int fd, uint64_t size, const char *what, uint8_t out[32])
{
	struct pieces_job j = {.ctx = ctx, .fd = fd, .size = size, .what = what};

	return pieces_run(ctx, &j, rsr_threads_for(ctx, pieces_count(size)), out);
}

int rsr_patch_digest_file(struct rsr_ctx *ctx, const char *path, uint8_t out[32])
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;

	if (fd < 0 || fstat(fd, &st) < 0)
		return rsr_error_errno(ctx, -errno, "%s", path);
	if (!S_ISREG(st.st_mode))
		return rsr_error(ctx, -EINVAL, "%s: not a regular file", path);
	return pieces_digest_fd(ctx, fd, (uint64_t)st.st_size, path, out);
}
