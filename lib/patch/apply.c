/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The patcher: checks the input's digest, runs the chunks on several threads
 * into a temporary file while hashing the output in order, and renames the
 * result into place only when the output digest matches. Memory is bounded
 * by the threads times the chunk size, plus the mapped input.
 *
 * When the input's size singles out one accepted input and there are two or
 * more threads, its digest is computed on one thread while the others
 * already produce the output into the temporary file; the output is renamed
 * into place only if the digest matches, and on a mismatch the temporary
 * file is removed and the error names both digests, exactly as when the
 * digest is checked first. Nothing but that temporary file is written
 * before the input is known to be right.
 */
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "format.h"

#define HASH_STEP (4u << 20) /* input bytes hashed between progress reports */

struct apply {
	struct rsr_ctx *ctx;
	const struct rsr_patch *p;
	uint32_t set;
	const uint8_t *in;
	uint64_t in_size;
	int out_fd;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	uint32_t next_hash; /* chunks are hashed in order */
	bool failed;
	EVP_MD_CTX *md;
	uint64_t done, total; /* progress: input bytes hashed here plus output bytes */
	uint32_t fail_chunk;
	const char *why;
	int err;
	/* Speculative mode: task 0 hashes the input. */
	bool hash_input;
	uint8_t in_sha256[32];
	int in_err;
	/* Per worker: the output buffer, kept across chunks (fresh pages cost page faults). */
	uint8_t *bufs[256];
	size_t buf_caps[256];
};

static int fail(struct apply *a, uint32_t chunk, int err, const char *why)
{
	pthread_mutex_lock(&a->lock);
	if (!a->failed || chunk < a->fail_chunk) {
		a->fail_chunk = chunk;
		a->why = why;
		a->err = err;
	}
	a->failed = true;
	pthread_cond_broadcast(&a->cond);
	pthread_mutex_unlock(&a->lock);
	return err;
}

/* Adds to the progress under the lock (the callback is never called from two threads at once). */
static int progress_add(struct apply *a, uint64_t n)
{
	int r;

	pthread_mutex_lock(&a->lock);
	a->done += n;
	r = rsr_progress(a->ctx, "applying patch", a->done, a->total);
	if (r < 0 && !a->failed) {
		a->failed = true;
		a->err = r;
		a->why = "canceled";
		pthread_cond_broadcast(&a->cond);
	}
	pthread_mutex_unlock(&a->lock);
	return r;
}

static int hash_input(struct apply *a)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned int dlen = 32;
	int r = 0;

	if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
		a->in_err = -ENOMEM;
		EVP_MD_CTX_free(md);
		return 0; /* reported after the chunks, as the input's error */
	}
	for (uint64_t off = 0; off < a->in_size && r == 0; off += HASH_STEP) {
		size_t n = (size_t)RSR_MIN(HASH_STEP, a->in_size - off);
		EVP_DigestUpdate(md, a->in + off, n);
		r = progress_add(a, n);
	}
	EVP_DigestFinal_ex(md, a->in_sha256, &dlen);
	EVP_MD_CTX_free(md);
	return r;
}

struct prior {
	struct apply *a;
	uint32_t chunk;
	bool ready;
};

/* Output before the chunk: once every earlier chunk is written (they are hashed in order after writing). */
static int read_prior(void *arg, uint64_t off, void *buf, size_t len)
{
	struct prior *pr = arg;
	struct apply *a = pr->a;
	int r;

	if (!pr->ready) {
		pthread_mutex_lock(&a->lock);
		while (a->next_hash != pr->chunk && !a->failed)
			pthread_cond_wait(&a->cond, &a->lock);
		r = a->failed ? RSR_E_CANCELED : 0;
		pthread_mutex_unlock(&a->lock);
		if (r < 0)
			return r;
		pr->ready = true;
	}
	return rsr_pread_all(a->out_fd, buf, len, off);
}

static int apply_task(void *arg, size_t index, unsigned worker)
{
	struct apply *a = arg;
	uint32_t c;
	struct patch_chunk_view v;
	const char *why = NULL;
	uint8_t *out;
	int r;

	if (a->hash_input) {
		if (index == 0)
			return hash_input(a);
		index--;
	}
	c = (uint32_t)index;
	patch_chunk_get(a->p, a->set, c, &v);
	if (a->buf_caps[worker] < v.out_size) {
		free(a->bufs[worker]);
		a->bufs[worker] = malloc(v.out_size);
		a->buf_caps[worker] = a->bufs[worker] ? v.out_size : 0;
		if (!a->bufs[worker])
			return fail(a, c, -ENOMEM, "out of memory");
	}
	out = a->bufs[worker];
	{
		struct prior pr = {.a = a, .chunk = c};
		r = patch_run_chunk(a->p, a->set, c, a->in, a->in_size, out, read_prior, &pr, NULL, &why);
	}
	if (r == RSR_E_CANCELED)
		return r;
	if (r < 0)
		return fail(a, c, r, r == RSR_E_FORMAT ? why : r == -ENOMEM ? "out of memory" : "read back");
	r = rsr_pwrite_all(a->out_fd, out, v.out_size, v.out_offset);
	if (r < 0)
		return fail(a, c, r, "write");
	pthread_mutex_lock(&a->lock);
	while (a->next_hash != c && !a->failed)
		pthread_cond_wait(&a->cond, &a->lock);
	if (a->failed) {
		pthread_mutex_unlock(&a->lock);
		return RSR_E_CANCELED;
	}
	pthread_mutex_unlock(&a->lock);
	/* Only the owner of next_hash gets here, so hashing needs no lock. */
	EVP_DigestUpdate(a->md, out, v.out_size);
	pthread_mutex_lock(&a->lock);
	a->next_hash++;
	pthread_cond_broadcast(&a->cond);
	pthread_mutex_unlock(&a->lock);
	return progress_add(a, v.out_size);
}

static void hex(const uint8_t *d, char out[65])
{
	rsr_hex_encode(d, 32, out);
}

/* The error for an input whose size and digest match no accepted input. */
static int mismatch(struct rsr_ctx *ctx, const struct rsr_patch *p, const char *patch_path, const char *old_path,
		    const uint8_t d[32], uint64_t size)
{
	char have[65], want[65];
	char list[RSR_ERRMSG_MAX / 2] = "";
	size_t n = 0;

	hex(d, have);
	hex(rsr_patch_input_digest(p, 0), want);
	if (p->n_inputs == 1)
		return rsr_error(
		    ctx, RSR_E_MISMATCH,
		    "patch '%s': input '%s' has digest %s (%llu bytes), the patch accepts only %s (%llu bytes)",
		    patch_path, old_path, have, (unsigned long long)size, want,
		    (unsigned long long)rsr_patch_input_size(p, 0));
	for (uint32_t i = 0; i < p->n_inputs && n < sizeof(list); i++) {
		hex(rsr_patch_input_digest(p, i), want);
		n += (size_t)snprintf(list + n, sizeof(list) - n, "%s%s", i ? ", " : "", want);
	}
	return rsr_error(ctx, RSR_E_MISMATCH,
			 "patch '%s': input '%s' has digest %s, which matches none of the %u accepted inputs (%s)",
			 patch_path, old_path, have, p->n_inputs, list);
}

static bool input_is(const struct rsr_patch *p, uint32_t i, const uint8_t d[32], uint64_t size)
{
	return rsr_patch_input_size(p, i) == size && !memcmp(rsr_patch_input_digest(p, i), d, 32);
}

/* True if `path` already holds exactly the output. */
static int already_done(struct rsr_ctx *ctx, const struct rsr_patch *p, const char *path)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	uint8_t d[32];

	if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size != p->output_size)
		return 0;
	if (rsr_sha256_fd(ctx, fd, 0, p->output_size, "checking output", d) < 0) {
		rsr_ctx_clear_error(ctx);
		return 0;
	}
	return memcmp(d, p->output_sha256, 32) == 0;
}

int rsr_patch_apply(struct rsr_ctx *ctx, const char *old_path, const char *patch_path, const char *out_path)
{
	struct rsr_patch *p = NULL;
	struct apply a = {.ctx = ctx};
	_cleanup_close_ int in_fd = -1;
	struct rsr_atomic_file *af = NULL;
	void *map = NULL;
	uint64_t in_size = 0;
	uint8_t d[32];
	unsigned int dlen = 32;
	char have[65], want[65];
	unsigned threads;
	size_t tasks;
	bool locks = false;
	int r;

	r = rsr_patch_open(ctx, patch_path, &p);
	if (r < 0)
		return r;
	a.p = p;
	a.total = p->output_size;
	threads = rsr_threads_for(ctx, (uint64_t)p->n_chunks + 1);
	if (p->n_inputs == 0 && old_path) {
		r = rsr_error(ctx, -EINVAL, "patch '%s' is a full replacement and takes no input", patch_path);
		goto out;
	}
	if (p->n_inputs > 0 && !old_path) {
		r = rsr_error(ctx, RSR_E_MISMATCH, "patch '%s' needs an input image (it accepts %u)", patch_path,
			      p->n_inputs);
		goto out;
	}
	if (old_path) {
		struct stat st;
		uint32_t by_size = 0;

		in_fd = open(old_path, O_RDONLY | O_CLOEXEC);
		if (in_fd < 0 || fstat(in_fd, &st) < 0) {
			r = rsr_error_errno(ctx, -errno, "input '%s'", old_path);
			goto out;
		}
		in_size = (uint64_t)st.st_size;
		for (uint32_t i = 0; i < p->n_inputs; i++)
			if (rsr_patch_input_size(p, i) == in_size) {
				a.set = i;
				by_size++;
			}
		if (by_size == 1 && threads > 1 && in_size >= HASH_STEP) {
			/* Speculative: the size singles out the input; its digest is checked in parallel. */
			a.hash_input = true;
			a.total += in_size;
		} else {
			r = rsr_sha256_fd(ctx, in_fd, 0, in_size, "checking input", d);
			if (r < 0) {
				r = rsr_error_prefix(ctx, r, "input '%s'", old_path);
				goto out;
			}
			for (a.set = 0; a.set < p->n_inputs && !input_is(p, a.set, d, in_size); a.set++)
				;
			if (a.set == p->n_inputs) {
				r = mismatch(ctx, p, patch_path, old_path, d, in_size);
				goto out;
			}
		}
		if (in_size > 0) {
			map = mmap(NULL, (size_t)in_size, PROT_READ, MAP_PRIVATE, in_fd, 0);
			if (map == MAP_FAILED) {
				map = NULL;
				r = rsr_error_errno(ctx, -errno, "input '%s': mmap", old_path);
				goto out;
			}
		}
		a.in = map;
		a.in_size = in_size;
	}
	{
		struct stat ost;
		if (stat(out_path, &ost) == 0 && !S_ISREG(ost.st_mode)) {
			r = rsr_error(ctx, -EINVAL, "%s: exists and is not a regular file", out_path);
			goto out;
		}
	}
	if (already_done(ctx, p, out_path)) {
		r = RSR_PATCH_UP_TO_DATE;
		goto out;
	}
	r = rsr_atomic_open(ctx, out_path, 0644, &af);
	if (r < 0)
		goto out;
	if (ftruncate(af->fd, (off_t)p->output_size) < 0) {
		r = rsr_error_errno(ctx, -errno, "%s: cannot size the output", out_path);
		goto out;
	}
	a.out_fd = af->fd;
	a.md = EVP_MD_CTX_new();
	if (!a.md || EVP_DigestInit_ex(a.md, EVP_sha256(), NULL) != 1) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	pthread_mutex_init(&a.lock, NULL);
	pthread_cond_init(&a.cond, NULL);
	locks = true;
	tasks = (size_t)p->n_chunks + (a.hash_input ? 1 : 0);
	r = rsr_parallel_for(rsr_threads_for(ctx, tasks), tasks, apply_task, &a);
	if (a.hash_input) {
		/* A wrong input is the error, whatever the chunks made of it. */
		if (a.in_err < 0) {
			r = rsr_error(ctx, a.in_err, "input '%s': out of memory", old_path);
			goto out;
		}
		if (a.err != RSR_E_CANCELED && !input_is(p, a.set, a.in_sha256, in_size)) {
			r = mismatch(ctx, p, patch_path, old_path, a.in_sha256, in_size);
			goto out;
		}
	}
	if (a.failed) {
		if (a.err == RSR_E_CANCELED)
			r = RSR_E_CANCELED; /* the message is already recorded */
		else if (a.err == RSR_E_FORMAT)
			r = rsr_error(ctx, a.err, "patch '%s': not a valid rsr patch: chunk %u: %s", patch_path,
				      a.fail_chunk, a.why);
		else
			r = rsr_error_errno(ctx, a.err, "%s: chunk %u: %s", out_path, a.fail_chunk, a.why);
		goto out;
	}
	if (r < 0)
		goto out;
	EVP_DigestFinal_ex(a.md, d, &dlen);
	if (memcmp(d, p->output_sha256, 32) != 0) {
		hex(d, have);
		hex(p->output_sha256, want);
		r = rsr_error(ctx, RSR_E_DIGEST, "patch '%s': output digest %s does not match the expected %s",
			      patch_path, have, want);
		goto out;
	}
	r = rsr_atomic_commit(ctx, af);
	af = NULL;
	if (r >= 0)
		r = RSR_PATCH_APPLIED;
out:
	for (size_t w = 0; w < ARRAY_SIZE(a.bufs); w++)
		free(a.bufs[w]);
	if (locks) {
		pthread_cond_destroy(&a.cond);
		pthread_mutex_destroy(&a.lock);
	}
	if (af)
		rsr_atomic_abort(af);
	EVP_MD_CTX_free(a.md);
	if (map)
		munmap(map, (size_t)in_size);
	rsr_patch_free(p);
	return r;
}
