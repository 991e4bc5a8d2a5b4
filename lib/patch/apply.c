/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The patcher: runs the chunks on several threads into a temporary file,
 * computes the piece digests of its input and of its output in the same
 * pass, and renames the result into place only when both match the patch.
 * Memory is bounded by the threads times the chunk size (plus one piece
 * each), plus the mapped input.
 *
 * When the input's size singles out one accepted input, the task that makes
 * a chunk also hashes the input pieces that start in its range. Each input
 * piece is first copied into the worker's own buffer and hashed there; an
 * output piece that is byte for byte equal to that copy (an unchanged
 * region at an unchanged offset, most of a security fix) takes its digest,
 * so it is hashed once for both checks, and every digest still describes
 * exactly the bytes compared and written. Such a piece is then shared with
 * the input where the filesystem can (FICLONERANGE on XFS or btrfs: no byte
 * is written), or written from that buffer. Other output pieces are hashed
 * from the buffer that is written; a piece cut by a chunk boundary is read
 * back and hashed by whichever of its chunks is written last.
 *
 * If the input turns out not to be the accepted one, the temporary file is
 * removed and the error names both digests, exactly as if the digest had
 * been checked first: nothing but that temporary file is written before the
 * input is known to be right. When several accepted inputs have the input's
 * size, the input's digest is computed first to choose among them.
 */
#include <fcntl.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "format.h"

#define MAX_WORKERS 256

struct apply {
	struct rsr_ctx *ctx;
	const struct rsr_patch *p;
	uint32_t set;
	const uint8_t *in;
	uint64_t in_size;
	int in_fd, out_fd;
	bool fused;	      /* input pieces hashed by the chunk tasks */
	bool clone;	      /* unchanged pieces are shared with the input (until a clone fails) */
	uint64_t in_pieces;   /* of the input */
	uint64_t out_pieces;  /* of the output */
	uint64_t first_tail;  /* first input piece that starts at or after the output's end */
	size_t tail_tasks;    /* tasks for those, before the chunk tasks */
	uint8_t (*in_h)[32];  /* fused: SHA-256 of each input piece */
	uint8_t (*out_h)[32]; /* SHA-256 of each output piece */
	uint32_t *covered;    /* output bytes written of each piece, for pieces cut by chunks */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool *written;		 /* per chunk */
	uint32_t written_prefix; /* chunks [0, prefix) are all written */
	bool failed;
	uint64_t done, total; /* progress: input bytes hashed plus output bytes */
	uint64_t in_hashed;   /* fused: input bytes hashed, all of them unless a task gave up */
	uint32_t fail_chunk;
	const char *why;
	int err;
	/* Per worker, kept across chunks (fresh pages cost page faults). */
	uint8_t *bufs[MAX_WORKERS];
	size_t buf_caps[MAX_WORKERS];
	uint8_t *piece_bufs[MAX_WORKERS];
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

static bool failed(struct apply *a)
{
	bool f;

	pthread_mutex_lock(&a->lock);
	f = a->failed;
	pthread_mutex_unlock(&a->lock);
	return f;
}

/* Adds to the progress under the lock (the callback is never called from two threads at once). */
static int progress_add(struct apply *a, uint64_t in_bytes, uint64_t out_bytes)
{
	int r;

	pthread_mutex_lock(&a->lock);
	a->in_hashed += in_bytes;
	a->done += in_bytes + out_bytes;
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

static size_t piece_len(uint64_t size, uint64_t i)
{
	return (size_t)RSR_MIN(PIECE_SIZE, size - i * PIECE_SIZE);
}

static uint8_t *piece_buf(struct apply *a, unsigned worker)
{
	if (!a->piece_bufs[worker])
		a->piece_bufs[worker] = rsr_alloc_large(PIECE_SIZE);
	return a->piece_bufs[worker];
}

/* Reads input piece i into the worker's piece buffer and hashes that copy. */
static int hash_input_piece(struct apply *a, uint64_t i, unsigned worker)
{
	uint8_t *pb = piece_buf(a, worker);
	size_t len = piece_len(a->in_size, i);
	int r;

	if (!pb)
		return -ENOMEM;
	r = rsr_pread_all(a->in_fd, pb, len, i * PIECE_SIZE);
	return r < 0 ? r : rsr_sha256(pb, len, a->in_h[i]);
}

/*
 * Makes output piece i share the blocks of input piece i, which the worker
 * has just read and hashed. False where the filesystem cannot (ext4, tmpfs:
 * then no later piece tries) and for a short last piece; the caller then
 * writes the buffer. rsr_patch_apply() refuses the output if the input
 * changed while it ran, so the shared blocks are the bytes hashed.
 */
static bool clone_piece(struct apply *a, uint64_t i, size_t len)
{
	struct file_clone_range fcr = {
	    .src_fd = a->in_fd, .src_offset = i * PIECE_SIZE, .src_length = len, .dest_offset = i * PIECE_SIZE};

	if (len != PIECE_SIZE || !__atomic_load_n(&a->clone, __ATOMIC_RELAXED))
		return false;
	if (ioctl(a->out_fd, FICLONERANGE, &fcr) < 0) {
		__atomic_store_n(&a->clone, false, __ATOMIC_RELAXED);
		return false;
	}
	return true;
}

struct prior {
	struct apply *a;
	uint32_t chunk;
	bool ready;
};

/* Output before the chunk: once every earlier chunk is written. */
static int read_prior(void *arg, uint64_t off, void *buf, size_t len)
{
	struct prior *pr = arg;
	struct apply *a = pr->a;
	int r;

	if (!pr->ready) {
		pthread_mutex_lock(&a->lock);
		while (a->written_prefix < pr->chunk && !a->failed)
			pthread_cond_wait(&a->cond, &a->lock);
		r = a->failed ? RSR_E_CANCELED : 0;
		pthread_mutex_unlock(&a->lock);
		if (r < 0)
			return r;
		pr->ready = true;
	}
	return rsr_pread_all(a->out_fd, buf, len, off);
}

static void mark_written(struct apply *a, uint32_t c)
{
	pthread_mutex_lock(&a->lock);
	a->written[c] = true;
	while (a->written_prefix < a->p->n_chunks && a->written[a->written_prefix])
		a->written_prefix++;
	pthread_cond_broadcast(&a->cond);
	pthread_mutex_unlock(&a->lock);
}

/*
 * Counts n more written bytes of output piece i, which a chunk boundary cuts;
 * the chunk that completes it reads it back and hashes it.
 */
static int cover(struct apply *a, uint64_t i, uint64_t n, unsigned worker)
{
	size_t len = piece_len(a->p->output_size, i);
	uint8_t *pb;
	int r;

	if (__atomic_add_fetch(&a->covered[i], (uint32_t)n, __ATOMIC_ACQ_REL) != len)
		return 0;
	if (!(pb = piece_buf(a, worker)))
		return -ENOMEM;
	r = rsr_pread_all(a->out_fd, pb, len, i * PIECE_SIZE);
	return r < 0 ? r : rsr_sha256(pb, len, a->out_h[i]);
}

/* Input pieces that start at or after the output's end: only hashed. */
static int tail_task(struct apply *a, size_t index, unsigned worker)
{
	uint64_t first = a->first_tail + (uint64_t)index * 16, end = RSR_MIN(first + 16, a->in_pieces), bytes = 0;

	for (uint64_t i = first; i < end; i++) {
		int r = hash_input_piece(a, i, worker);
		if (r < 0)
			return fail(a, 0, r, r == -ENOMEM ? "out of memory" : "reading the input");
		bytes += piece_len(a->in_size, i);
	}
	return progress_add(a, bytes, 0);
}

/* What a chunk task knows of the pieces that start in its chunk, [i0, i1). */
struct fill {
	struct apply *a;
	unsigned worker;
	uint64_t o, e, i0, i1;
	uint8_t *out;
	bool hashed;					   /* the input pieces are hashed */
	uint64_t in_bytes;				   /* input bytes hashed */
	bool reuse[PATCH_MAX_CHUNK_OUT / PIECE_SIZE + 2];  /* output piece i0 + k is input piece i0 + k */
	bool direct[PATCH_MAX_CHUNK_OUT / PIECE_SIZE + 2]; /* ... and was written from the piece buffer */
	const char *why;				   /* of a failing fill */
};

/*
 * The fill function of a chunk (see patch_run_chunk_fill): reads each input
 * piece that starts in the chunk into the worker's buffer, hashes it there,
 * and copies the identity ranges it holds from there into the output. A
 * piece that is one identity copy is shared with the input or written
 * straight from that buffer instead, unless the chunk's hash operations
 * read its output. The identity bytes before the chunk's first piece (that
 * piece is read by the chunk before) come from the mapping.
 */
static int fill_chunk(void *arg, const struct patch_range *ranges, size_t n, bool out_read)
{
	struct fill *f = arg;
	struct apply *a = f->a;
	uint64_t head_end = RSR_MIN(f->e, f->i0 * PIECE_SIZE);
	size_t k = 0;
	uint8_t *pb;
	int r;

	for (size_t j = 0; j < n; j++) {
		uint64_t s = f->o + ranges[j].off, t = RSR_MIN(s + ranges[j].len, head_end);
		if (s >= head_end)
			break;
		memcpy(f->out + ranges[j].off, a->in + s, (size_t)(t - s));
	}
	for (uint64_t i = f->i0; i < f->i1 && i * PIECE_SIZE < a->in_size; i++) {
		uint64_t ps = i * PIECE_SIZE, in_len = piece_len(a->in_size, i), pe = ps + in_len;
		uint64_t out_len = piece_len(a->p->output_size, i);

		if ((r = hash_input_piece(a, i, f->worker)) < 0) {
			f->why = r == -ENOMEM ? "out of memory" : "reading the input";
			return r;
		}
		pb = a->piece_bufs[f->worker];
		f->in_bytes += in_len;
		/* Ranges that end before this piece are done. */
		while (k < n && f->o + ranges[k].off + ranges[k].len <= ps)
			k++;
		if (k < n && f->o + ranges[k].off <= ps && f->o + ranges[k].off + ranges[k].len >= ps + out_len &&
		    in_len == out_len && ps + out_len <= f->e) {
			f->reuse[i - f->i0] = true;
			if (!out_read) {
				if (!clone_piece(a, i, out_len) &&
				    (r = rsr_pwrite_all(a->out_fd, pb, out_len, ps)) < 0) {
					f->why = "write";
					return r;
				}
				f->direct[i - f->i0] = true;
				continue;
			}
		}
		for (size_t j = k; j < n && f->o + ranges[j].off < pe; j++) {
			uint64_t s = RSR_MAX(f->o + ranges[j].off, ps);
			uint64_t t = RSR_MIN(RSR_MIN(f->o + ranges[j].off + ranges[j].len, pe), f->e);
			if (s < t)
				memcpy(f->out + (s - f->o), pb + (s - ps), (size_t)(t - s));
		}
	}
	f->hashed = true;
	return 0;
}

static int chunk_task(struct apply *a, uint32_t c, unsigned worker)
{
	struct patch_chunk_view v;
	const char *why = NULL;
	uint64_t out_size = a->p->output_size;
	struct fill f = {.a = a, .worker = worker};
	bool skip = failed(a); /* after a failure only the input is still hashed, for the right error */
	int r;

	patch_chunk_get(a->p, a->set, c, &v);
	f.o = v.out_offset;
	f.e = f.o + v.out_size;
	f.i0 = f.o / PIECE_SIZE + (f.o % PIECE_SIZE != 0);
	f.i1 = f.e / PIECE_SIZE + (f.e % PIECE_SIZE != 0);
	if (!piece_buf(a, worker))
		return fail(a, c, -ENOMEM, "out of memory");
	/*
	 * The chunk's blocks before any of its bytes: a full disk fails here,
	 * not in the middle of a write. Each chunk allocates its own range, so
	 * the allocation (on tmpfs, every page of the output) is spread over
	 * the threads instead of made on one before they start.
	 */
	if (!skip && v.out_size > 0 && fallocate(a->out_fd, 0, (off_t)f.o, (off_t)v.out_size) < 0 &&
	    errno != EOPNOTSUPP && errno != ENOSYS) {
		fail(a, c, -errno, "cannot allocate its space");
		skip = true;
	}
	if (!skip) {
		if (a->buf_caps[worker] < v.out_size) {
			free(a->bufs[worker]);
			a->bufs[worker] = rsr_alloc_large(v.out_size);
			a->buf_caps[worker] = a->bufs[worker] ? v.out_size : 0;
		}
		f.out = a->bufs[worker];
		if (!f.out) {
			fail(a, c, -ENOMEM, "out of memory");
			skip = true;
		}
	}
	if (!skip) {
		struct prior pr = {.a = a, .chunk = c};
		r = patch_run_chunk_fill(a->p, a->set, c, a->in, a->in_size, f.out, read_prior, &pr,
					 a->fused ? fill_chunk : NULL, &f, &why);
		if (r == RSR_E_CANCELED)
			skip = true; /* another chunk failed or the run was canceled */
		else if (r < 0) {
			fail(a, c, r,
			     r == RSR_E_FORMAT ? why
			     : r == -ENOMEM    ? "out of memory"
					       : "reading the input or output");
			skip = true;
		}
	}
	if (a->fused && !f.hashed) {
		/* The chunk did not get to its fill, or it failed: hash its input pieces anyway. */
		f.in_bytes = 0;
		for (uint64_t i = f.i0; i < f.i1 && i * PIECE_SIZE < a->in_size; i++) {
			if ((r = hash_input_piece(a, i, worker)) < 0)
				return fail(a, c, r, r == -ENOMEM ? "out of memory" : "reading the input");
			f.in_bytes += piece_len(a->in_size, i);
		}
	}
	if (skip)
		return progress_add(a, f.in_bytes, 0);

	/* Output pieces inside the chunk: an unchanged one has its input piece's digest. */
	for (uint64_t i = f.i0; i < f.i1; i++) {
		uint64_t off = i * PIECE_SIZE;
		size_t len = piece_len(out_size, i);

		if (off + len > f.e)
			continue;
		if (f.reuse[i - f.i0])
			memcpy(a->out_h[i], a->in_h[i], 32); /* the same bytes, hashed once */
		else if (rsr_sha256(f.out + (off - f.o), len, a->out_h[i]) < 0)
			return fail(a, c, -ENOMEM, "out of memory");
	}
	/* The chunk, but for the pieces already written from the piece buffer. */
	r = 0;
	{
		uint64_t from = f.o;

		for (uint64_t i = f.i0; i <= f.i1 && r >= 0; i++) {
			uint64_t to = i < f.i1 ? i * PIECE_SIZE : f.e;

			if (i < f.i1 && !f.direct[i - f.i0])
				continue;
			if (to > from)
				r = rsr_pwrite_all(a->out_fd, f.out + (from - f.o), (size_t)(to - from), from);
			if (i < f.i1)
				from = to + piece_len(out_size, i);
		}
		if (r < 0)
			return fail(a, c, r, "write");
	}
	/*
	 * Start writing the chunk to disk now, so that the fsync before the
	 * rename waits for the last chunks only (errors are the fsync's).
	 */
	sync_file_range(a->out_fd, (off_t)f.o, (off_t)v.out_size, SYNC_FILE_RANGE_WRITE);
	mark_written(a, c);
	{
		/* The pieces that a boundary of the chunk cuts. */
		uint64_t ps = f.o / PIECE_SIZE, pe = (f.e - 1) / PIECE_SIZE;
		uint64_t ps_end = ps * PIECE_SIZE + piece_len(out_size, ps);
		uint64_t pe_end = pe * PIECE_SIZE + piece_len(out_size, pe);

		r = 0;
		if (ps * PIECE_SIZE < f.o)
			r = cover(a, ps, RSR_MIN(f.e, ps_end) - f.o, worker);
		if (r == 0 && pe_end > f.e && !(pe == ps && ps * PIECE_SIZE < f.o))
			r = cover(a, pe, f.e - RSR_MAX(f.o, pe * PIECE_SIZE), worker);
		if (r < 0)
			return fail(a, c, r, r == -ENOMEM ? "out of memory" : "read back");
	}
	return progress_add(a, f.in_bytes, v.out_size);
}

static int apply_task(void *arg, size_t index, unsigned worker)
{
	struct apply *a = arg;

	if (index < a->tail_tasks)
		return tail_task(a, index, worker);
	return chunk_task(a, (uint32_t)(index - a->tail_tasks), worker);
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
	if (pieces_digest_fd(ctx, fd, p->output_size, "checking output", d) < 0) {
		rsr_ctx_clear_error(ctx);
		return 0;
	}
	return memcmp(d, p->output_digest, 32) == 0;
}

int rsr_patch_apply(struct rsr_ctx *ctx, const char *old_path, const char *patch_path, const char *out_path)
{
	struct rsr_patch *p = NULL;
	struct apply a = {.ctx = ctx};
	_cleanup_close_ int in_fd = -1;
	struct rsr_atomic_file *af = NULL;
	struct stat in_st = {0};
	void *map = NULL;
	uint64_t in_size = 0;
	uint8_t d[32];
	char have[65], want[65];
	size_t tasks;
	bool locks = false;
	int r;

	r = rsr_patch_open(ctx, patch_path, &p);
	if (r < 0)
		return r;
	a.p = p;
	a.total = p->output_size;
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
		in_st = st;
		for (uint32_t i = 0; i < p->n_inputs; i++)
			if (rsr_patch_input_size(p, i) == in_size) {
				a.set = i;
				by_size++;
			}
		if (by_size == 1) {
			/* The size singles out the input: its digest is computed along with the output. */
			a.fused = true;
			a.total += in_size;
		} else {
			r = pieces_digest_fd(ctx, in_fd, in_size, "checking input", d);
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
	a.out_pieces = pieces_count(p->output_size);
	a.in_pieces = a.fused ? pieces_count(in_size) : 0;
	a.first_tail = RSR_MIN(a.out_pieces, a.in_pieces);
	a.tail_tasks = (size_t)((a.in_pieces - a.first_tail + 15) / 16);
	a.out_h = malloc(a.out_pieces ? (size_t)a.out_pieces * 32 : 1);
	a.in_h = malloc(a.in_pieces ? (size_t)a.in_pieces * 32 : 1);
	a.covered = calloc(a.out_pieces ? (size_t)a.out_pieces : 1, sizeof(*a.covered));
	a.written = calloc(p->n_chunks ? p->n_chunks : 1, sizeof(*a.written));
	if (!a.out_h || !a.in_h || !a.covered || !a.written) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	r = rsr_atomic_open(ctx, out_path, 0644, &af);
	if (r < 0)
		goto out;
	{
		/*
		 * A declared size the filesystem cannot hold fails before a byte is
		 * written (root may use the blocks reserved for it).
		 */
		struct statvfs vfs;
		uint64_t avail = 0;
		if (fstatvfs(af->fd, &vfs) == 0)
			avail = geteuid() == 0 ? (uint64_t)vfs.f_bfree : (uint64_t)vfs.f_bavail;
		if (avail > 0 && vfs.f_frsize > 0 && p->output_size / vfs.f_frsize > avail) {
			r = rsr_error_errno(
			    ctx, -ENOSPC,
			    "patch '%s': its output of %llu bytes does not fit in the %llu bytes free for '%s'",
			    patch_path, (unsigned long long)p->output_size, (unsigned long long)(avail * vfs.f_frsize),
			    out_path);
			goto out;
		}
	}
	if (ftruncate(af->fd, (off_t)p->output_size) < 0) {
		r = rsr_error_errno(ctx, -errno, "%s: cannot size the output", out_path);
		goto out;
	}
	a.out_fd = af->fd;
	a.in_fd = in_fd;
	a.clone = in_fd >= 0;
	pthread_mutex_init(&a.lock, NULL);
	pthread_cond_init(&a.cond, NULL);
	locks = true;
	tasks = a.tail_tasks + p->n_chunks;
	r = rsr_parallel_for(RSR_MIN(rsr_threads_for(ctx, tasks), MAX_WORKERS), tasks, apply_task, &a);
	if (a.fused && a.in_hashed == in_size) {
		/* A wrong input is the error, whatever the chunks made of it. */
		if (pieces_combine((const uint8_t(*)[32])a.in_h, in_size, d) < 0) {
			r = rsr_error(ctx, -ENOMEM, "out of memory");
			goto out;
		}
		if (!input_is(p, a.set, d, in_size)) {
			r = mismatch(ctx, p, patch_path, old_path, d, in_size);
			goto out;
		}
	}
	if (in_fd >= 0) {
		/*
		 * Shared pieces are the bytes hashed only if nothing wrote the
		 * input in between; a write changes its ctime.
		 */
		struct stat now;
		if (fstat(in_fd, &now) < 0 || now.st_size != in_st.st_size ||
		    now.st_ctim.tv_sec != in_st.st_ctim.tv_sec || now.st_ctim.tv_nsec != in_st.st_ctim.tv_nsec) {
			r = rsr_error(ctx, RSR_E_MISMATCH, "input '%s' changed while the patch was applied", old_path);
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
	if (pieces_combine((const uint8_t(*)[32])a.out_h, p->output_size, d) < 0) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	if (memcmp(d, p->output_digest, 32) != 0) {
		hex(d, have);
		hex(p->output_digest, want);
		r = rsr_error(ctx, RSR_E_DIGEST, "patch '%s': output digest %s does not match the expected %s",
			      patch_path, have, want);
		goto out;
	}
	r = rsr_atomic_commit(ctx, af);
	af = NULL;
	if (r >= 0)
		r = RSR_PATCH_APPLIED;
out:
	for (size_t w = 0; w < MAX_WORKERS; w++) {
		free(a.bufs[w]);
		free(a.piece_bufs[w]);
	}
	if (locks) {
		pthread_cond_destroy(&a.cond);
		pthread_mutex_destroy(&a.lock);
	}
	if (af)
		rsr_atomic_abort(af);
	free(a.out_h);
	free(a.in_h);
	free(a.covered);
	free(a.written);
	if (map)
		munmap(map, (size_t)in_size);
	rsr_patch_free(p);
	return r;
}
