/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * dm-verity hash trees: layout, parallel construction and verification.
 * Each hash is SHA-256(salt || block) (format version 1); each hash block
 * holds 128 hashes, zero-padded; levels are stored top level first.
 */
#include <pthread.h>

#include <openssl/evp.h>

#include "internal.h"
#include "verity.h"

#define HASHES_PER_BLOCK (RSR_VERITY_BLOCK / RSR_VERITY_DIGEST)
#define HASH_SHIFT 7 /* log2(HASHES_PER_BLOCK) */
/* Data blocks per work item: one window of the file (lib/common/view.c). */
#define BATCH_BLOCKS (RSR_VIEW_WINDOW / RSR_VERITY_BLOCK)

int rsr_verity_layout(uint64_t data_blocks, struct rsr_verity_layout *ret)
{
	struct rsr_verity_layout l = {.data_blocks = data_blocks};
	uint64_t pos = 0;

	if (data_blocks == 0 || data_blocks > (UINT64_C(1) << 40))
		return -EINVAL;
	/* As veritysetup: as many levels as it takes to reach one block. */
	while (HASH_SHIFT * l.levels < 64 && (data_blocks - 1) >> (HASH_SHIFT * l.levels))
		l.levels++;
	if (l.levels > RSR_VERITY_MAX_LEVELS)
		return -EINVAL;
	for (int i = (int)l.levels - 1; i >= 0; i--) {
		unsigned shift = (unsigned)(i + 1) * HASH_SHIFT;
		l.level_offset[i] = pos;
		l.level_blocks[i] = (data_blocks + (UINT64_C(1) << shift) - 1) >> shift;
		pos += l.level_blocks[i];
	}
	l.tree_blocks = pos;
	*ret = l;
	return 0;
}

struct hasher {
	EVP_MD_CTX *work;
	const uint8_t *salt;
	size_t salt_len;
};

static int hasher_init(struct hasher *h, const uint8_t *salt, size_t salt_len)
{
	h->work = EVP_MD_CTX_new();
	h->salt = salt;
	h->salt_len = salt_len;
	if (!h->work)
		return -ENOMEM;
	if (EVP_DigestInit_ex(h->work, EVP_sha256(), NULL) != 1)
		return -EIO;
	return 0;
}

static void hasher_free(struct hasher *h)
{
	EVP_MD_CTX_free(h->work);
}

/*
 * Returns -ENOMEM when OpenSSL fails: re-initialising may allocate a new
 * provider context, and a context left without one must not be used.
 */
static int hash_block(struct hasher *h, const uint8_t *block, uint8_t out[32])
{
	unsigned int n = 32;

	/* Re-initialising with the digest already fetched costs less than copying a salted context. */
	if (EVP_DigestInit_ex(h->work, NULL, NULL) != 1 || EVP_DigestUpdate(h->work, h->salt, h->salt_len) != 1 ||
	    EVP_DigestUpdate(h->work, block, RSR_VERITY_BLOCK) != 1 || EVP_DigestFinal_ex(h->work, out, &n) != 1)
		return -ENOMEM;
	return 0;
}

/* One parallel pass: hash data blocks into `leaves` (build) or compare with them (verify). */
struct pass {
	struct rsr_ctx *ctx;
	int fd;
	uint64_t data_off, data_blocks;
	uint8_t *leaves; /* level 0, as stored (data_blocks hashes, then padding) */
	bool verify;
	const uint8_t *salt;
	size_t salt_len;
	const char *what;  /* names the file in messages */
	const char *label; /* of the progress */
	struct hasher *hashers;
	uint8_t **bufs;
	struct rsr_view view;
	uint64_t head_blocks; /* blocks before the first window boundary of the file */
	pthread_mutex_t lock;
	uint64_t done;
	uint64_t in_place;  /* work items hashed from the view, and done */
	uint64_t bad_block; /* lowest mismatching data block, UINT64_MAX if none */
	int err;
};

/*
 * Work items follow the file's 2 MiB windows, so that each can be hashed in
 * place when the page cache holds it in one huge folio: the first item runs
 * from the data's start to the first window boundary, the others are whole
 * windows (the last may be short).
 */
static size_t pass_items(const struct pass *p)
{
	uint64_t rest = p->data_blocks - RSR_MIN(p->head_blocks, p->data_blocks);

	return (size_t)((p->head_blocks ? 1 : 0) + (rest + BATCH_BLOCKS - 1) / BATCH_BLOCKS);
}

static int pass_item(void *arg, size_t index, unsigned worker)
{
	struct pass *p = arg;
	uint64_t first = 0, n = p->head_blocks, off;
	const uint8_t *buf;
	uint8_t digest[32];
	bool in_place;
	int r = 0;

	if (!p->head_blocks || index > 0) {
		first = p->head_blocks + (uint64_t)(index - (p->head_blocks ? 1 : 0)) * BATCH_BLOCKS;
		n = BATCH_BLOCKS;
	}
	n = RSR_MIN(n, p->data_blocks - first);
	off = p->data_off + first * RSR_VERITY_BLOCK;
	buf = rsr_view_window(&p->view, off, (size_t)n * RSR_VERITY_BLOCK);
	in_place = buf != NULL;
	if (!in_place) {
		buf = p->bufs[worker];
		r = rsr_pread_all(p->fd, p->bufs[worker], (size_t)n * RSR_VERITY_BLOCK, off);
	}
	if (r < 0) {
		pthread_mutex_lock(&p->lock);
		if (!p->err)
			p->err = r == -ENODATA ? rsr_error(p->ctx, RSR_E_FORMAT, "%s: image ends before block %llu",
							   p->what, (unsigned long long)(first + n))
					       : rsr_error_errno(p->ctx, r, "%s: read", p->what);
		pthread_mutex_unlock(&p->lock);
		return r;
	}
	for (uint64_t i = 0; i < n; i++) {
		uint8_t *slot = p->leaves + (first + i) * RSR_VERITY_DIGEST;
		if (hash_block(&p->hashers[worker], buf + i * RSR_VERITY_BLOCK, digest) < 0) {
			pthread_mutex_lock(&p->lock);
			if (!p->err)
				p->err = rsr_error(p->ctx, -ENOMEM, "%s: SHA-256 failed: out of memory", p->what);
			pthread_mutex_unlock(&p->lock);
			return -ENOMEM;
		}
		if (!p->verify) {
			memcpy(slot, digest, RSR_VERITY_DIGEST);
		} else if (memcmp(slot, digest, RSR_VERITY_DIGEST) != 0) {
			pthread_mutex_lock(&p->lock);
			if (first + i < p->bad_block)
				p->bad_block = first + i;
			pthread_mutex_unlock(&p->lock);
			return RSR_E_DIGEST;
		}
	}
	pthread_mutex_lock(&p->lock);
	p->done += n;
	p->in_place += in_place;
	r = p->err ? 0 : rsr_progress(p->ctx, p->label, p->done * RSR_VERITY_BLOCK, p->data_blocks * RSR_VERITY_BLOCK);
	if (r < 0)
		p->err = r;
	pthread_mutex_unlock(&p->lock);
	return r;
}

static int run_pass(struct pass *p)
{
	unsigned threads;
	size_t items;
	int r = 0;

	/* Blocks that do not start on a page boundary are never read in place. */
	if (p->data_off % RSR_VERITY_BLOCK == 0) {
		p->head_blocks = (RSR_VIEW_WINDOW - p->data_off % RSR_VIEW_WINDOW) % RSR_VIEW_WINDOW / RSR_VERITY_BLOCK;
		rsr_view_open(&p->view, p->fd, p->data_off + p->data_blocks * RSR_VERITY_BLOCK);
	} else {
		p->view = (struct rsr_view){.pagemap_fd = -1};
	}
	items = pass_items(p);
	threads = rsr_threads_for(p->ctx, items);

	p->hashers = calloc(threads, sizeof(*p->hashers));
	p->bufs = calloc(threads, sizeof(*p->bufs));
	p->bad_block = UINT64_MAX;
	pthread_mutex_init(&p->lock, NULL);
	if (!p->hashers || !p->bufs) {
		r = rsr_error(p->ctx, -ENOMEM, "%s: out of memory", p->what);
		goto out;
	}
	for (unsigned t = 0; t < threads; t++) {
		p->bufs[t] = rsr_alloc_large((size_t)BATCH_BLOCKS * RSR_VERITY_BLOCK);
		if (!p->bufs[t] || hasher_init(&p->hashers[t], p->salt, p->salt_len) < 0) {
			r = rsr_error(p->ctx, -ENOMEM, "%s: out of memory", p->what);
			goto out;
		}
	}
	/*
	 * A window the page cache holds in one huge folio is hashed where it
	 * lies; any other is read into the worker's buffer and hashed there.
	 * Hashing in place from 4 KiB pages would pay a page fault per page,
	 * which costs more than the copy wherever page tables are expensive to
	 * fill (under a hypervisor: 1.7 times slower than pread, bench/RESULTS.md).
	 */
	r = rsr_parallel_for(threads, items, pass_item, p);
	rsr_debug(p->ctx, "%s: %llu of %zu windows hashed in place", p->what, (unsigned long long)p->in_place, items);
	if (p->err)
		r = p->err;
	else if (p->bad_block != UINT64_MAX)
		r = rsr_error(p->ctx, RSR_E_DIGEST,
			      "%s: data block %llu of %llu (image offset %llu) does not match the hash tree", p->what,
			      (unsigned long long)p->bad_block, (unsigned long long)p->data_blocks,
			      (unsigned long long)(p->bad_block * RSR_VERITY_BLOCK));
out:
	if (p->hashers)
		for (unsigned t = 0; t < threads; t++)
			hasher_free(&p->hashers[t]);
	if (p->bufs)
		for (unsigned t = 0; t < threads; t++)
			free(p->bufs[t]);
	free(p->hashers);
	free(p->bufs);
	rsr_view_close(&p->view);
	pthread_mutex_destroy(&p->lock);
	return r;
}

/* Hashes the blocks of level `lvl - 1` into level `lvl` of `tree` (both in memory). */
static int hash_level(struct hasher *h, uint8_t *tree, const struct rsr_verity_layout *l, unsigned lvl)
{
	const uint8_t *in = tree + l->level_offset[lvl - 1] * RSR_VERITY_BLOCK;
	uint8_t *out = tree + l->level_offset[lvl] * RSR_VERITY_BLOCK;

	for (uint64_t b = 0; b < l->level_blocks[lvl - 1]; b++)
		if (hash_block(h, in + b * RSR_VERITY_BLOCK, out + b * RSR_VERITY_DIGEST) < 0)
			return -ENOMEM;
	return 0;
}

int rsr_verity_build(struct rsr_ctx *ctx, int fd, uint64_t data_off, uint64_t data_blocks, const uint8_t *salt,
		     size_t salt_len, uint8_t **ret_tree, uint8_t ret_root[32])
{
	struct rsr_verity_layout l;
	struct pass p = {.ctx = ctx,
			 .fd = fd,
			 .data_off = data_off,
			 .data_blocks = data_blocks,
			 .salt = salt,
			 .salt_len = salt_len,
			 .what = "hashing",
			 .label = "hashing"};
	struct hasher h = {0};
	_cleanup_free_ uint8_t *tree = NULL;
	int r;

	if (rsr_verity_layout(data_blocks, &l) < 0)
		return rsr_error(ctx, -EINVAL, "hash tree: unsupported size of %llu blocks",
				 (unsigned long long)data_blocks);
	tree = rsr_calloc_large(RSR_MAX(l.tree_blocks, 1), RSR_VERITY_BLOCK);
	if (!tree)
		return rsr_error(ctx, -ENOMEM, "hash tree: out of memory");
	if (l.levels == 0) {
		/* One data block: the root is its hash, the tree is empty. */
		uint8_t block[RSR_VERITY_BLOCK];
		r = rsr_pread_all(fd, block, sizeof(block), data_off);
		if (r < 0)
			return rsr_error_errno(ctx, r, "hash tree: read");
		if (hasher_init(&h, salt, salt_len) < 0 || hash_block(&h, block, ret_root) < 0) {
			r = rsr_error(ctx, -ENOMEM, "hash tree: SHA-256 failed: out of memory");
			goto out;
		}
		*ret_tree = TAKE_PTR(tree);
		r = 0;
		goto out;
	}
	p.leaves = tree + l.level_offset[0] * RSR_VERITY_BLOCK;
	r = run_pass(&p);
	if (r < 0)
		goto out;
	if ((r = hasher_init(&h, salt, salt_len)) < 0) {
		r = rsr_error(ctx, r, "hash tree: SHA-256 unavailable");
		goto out;
	}
	for (unsigned lvl = 1; lvl < l.levels && r == 0; lvl++)
		r = hash_level(&h, tree, &l, lvl);
	if (r < 0 || hash_block(&h, tree + l.level_offset[l.levels - 1] * RSR_VERITY_BLOCK, ret_root) < 0) {
		r = rsr_error(ctx, -ENOMEM, "hash tree: SHA-256 failed: out of memory");
		goto out;
	}
	*ret_tree = TAKE_PTR(tree);
out:
	hasher_free(&h);
	return r;
}

int rsr_verity_verify(struct rsr_ctx *ctx, int fd, uint64_t data_off, uint64_t data_blocks, uint64_t tree_off,
		      const uint8_t *salt, size_t salt_len, const uint8_t root[32], const char *what, const char *name)
{
	char label[RSR_PROGRESS_LABEL_MAX];
	struct rsr_verity_layout l;
	struct pass p = {.ctx = ctx,
			 .fd = fd,
			 .data_off = data_off,
			 .data_blocks = data_blocks,
			 .salt = salt,
			 .salt_len = salt_len,
			 .verify = true,
			 .what = what,
			 .label = rsr_progress_label(label, sizeof(label), "verifying", name)};
	struct hasher h = {0};
	_cleanup_free_ uint8_t *tree = NULL;
	uint8_t digest[32];
	int r;

	if (rsr_verity_layout(data_blocks, &l) < 0)
		return rsr_error(ctx, RSR_E_FORMAT, "%s: unsupported size of %llu blocks", what,
				 (unsigned long long)data_blocks);
	if ((r = hasher_init(&h, salt, salt_len)) < 0) {
		r = rsr_error(ctx, r, "%s: SHA-256 unavailable", what);
		goto out;
	}
	if (l.levels == 0) {
		uint8_t block[RSR_VERITY_BLOCK];
		r = rsr_pread_all(fd, block, sizeof(block), data_off);
		if (r < 0) {
			r = rsr_error_errno(ctx, r, "%s: read", what);
			goto out;
		}
		if (hash_block(&h, block, digest) < 0) {
			r = rsr_error(ctx, -ENOMEM, "%s: SHA-256 failed: out of memory", what);
			goto out;
		}
		if (memcmp(digest, root, 32) != 0)
			r = rsr_error(ctx, RSR_E_DIGEST, "%s: data block 0 of 1 does not match the signed root hash",
				      what);
		goto out;
	}
	/* The tree is ~1/128 of the data: read it whole and check it top-down. */
	tree = rsr_alloc_large(l.tree_blocks * RSR_VERITY_BLOCK);
	if (!tree) {
		r = rsr_error(ctx, -ENOMEM, "%s: out of memory", what);
		goto out;
	}
	r = rsr_pread_all(fd, tree, l.tree_blocks * RSR_VERITY_BLOCK, tree_off);
	if (r < 0) {
		r = r == -ENODATA ? rsr_error(ctx, RSR_E_FORMAT, "%s: hash tree is truncated", what)
				  : rsr_error_errno(ctx, r, "%s: read of the hash tree", what);
		goto out;
	}
	if (hash_block(&h, tree + l.level_offset[l.levels - 1] * RSR_VERITY_BLOCK, digest) < 0) {
		r = rsr_error(ctx, -ENOMEM, "%s: SHA-256 failed: out of memory", what);
		goto out;
	}
	if (memcmp(digest, root, 32) != 0) {
		r = rsr_error(ctx, RSR_E_DIGEST, "%s: hash tree level %u does not match the signed root hash", what,
			      l.levels - 1);
		goto out;
	}
	for (unsigned lvl = l.levels - 1; lvl >= 1; lvl--) {
		const uint8_t *parent = tree + l.level_offset[lvl] * RSR_VERITY_BLOCK;
		const uint8_t *child = tree + l.level_offset[lvl - 1] * RSR_VERITY_BLOCK;
		uint64_t n = l.level_blocks[lvl - 1];

		for (uint64_t b = 0; b < n; b++) {
			if (hash_block(&h, child + b * RSR_VERITY_BLOCK, digest) < 0) {
				r = rsr_error(ctx, -ENOMEM, "%s: SHA-256 failed: out of memory", what);
				goto out;
			}
			if (memcmp(digest, parent + b * RSR_VERITY_DIGEST, 32) != 0) {
				r = rsr_error(ctx, RSR_E_DIGEST,
					      "%s: hash tree level %u block %llu does not match its parent", what,
					      lvl - 1, (unsigned long long)b);
				goto out;
			}
		}
		/* Unused slots of the last parent block must be zero, as veritysetup writes them. */
		for (uint64_t s = n * RSR_VERITY_DIGEST; s < l.level_blocks[lvl] * RSR_VERITY_BLOCK; s++)
			if (parent[s]) {
				r = rsr_error(ctx, RSR_E_DIGEST, "%s: hash tree level %u has non-zero padding", what,
					      lvl);
				goto out;
			}
	}
	for (uint64_t s = data_blocks * RSR_VERITY_DIGEST; s < l.level_blocks[0] * RSR_VERITY_BLOCK; s++)
		if (tree[l.level_offset[0] * RSR_VERITY_BLOCK + s]) {
			r = rsr_error(ctx, RSR_E_DIGEST, "%s: hash tree level 0 has non-zero padding", what);
			goto out;
		}
	p.leaves = tree + l.level_offset[0] * RSR_VERITY_BLOCK;
	r = run_pass(&p);
out:
	hasher_free(&h);
	return r;
}
