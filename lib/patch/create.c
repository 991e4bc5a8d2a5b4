/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The differ. Per input image: identical 4 KiB blocks are matched through a
 * hash table first, so that only content that really differs reaches the
 * expensive matcher (bsdiff-style approximate matching over a suffix array
 * of the old blocks no identical block used); deflate streams (gzip members)
 * are diffed in their decoded token form and re-encoded bit for bit. The
 * operations of each output chunk are compressed with zstd on their own, on
 * several threads.
 */
#include <divsufsort.h>
#include <openssl/evp.h>
#include <stddef.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <zstd.h>

#include "format.h"

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

#define BLOCK 4096u
#define MAX_AUTO_CHUNK (8u << 20)
#define MIN_AUTO_CHUNK (2u << 20) /* the smallest automatic chunk: a quarter of 8 MiB */
#define DEFAULT_LEVEL 19
#define MIN_COPY_RUN 1024
#define MAX_SALTS 64 /* candidate hash-tree salts tried */

struct image {
	const char *path;
	const uint8_t *p;
	uint64_t size;
	void *map;
	int fd; /* kept open for private, writable mappings (projections) */
	bool has_fd;
	uint8_t digest[32]; /* piece digest */
};

/* A deflate stream found in an image. */
struct member {
	uint64_t off, len; /* the raw deflate stream */
	struct buf tokens;
	uint64_t *anchors; /* sorted content-defined hashes of the tokens */
	size_t n_anchors;
	uint64_t hash; /* of the compressed bytes */
};

struct members {
	struct member *m;
	size_t n;
};

/* Finds suffixes of the old image: over `r`, the blocks no identical block used, mapped back by rmap. */
struct matcher {
	const uint8_t *old;
	uint64_t old_size;
	const uint8_t *r;
	uint64_t r_len;
	const uint64_t *rmap; /* old offset of each BLOCK of r; NULL if r is old */
	int32_t *sa;
	int32_t *bkt; /* 65537 entries: where the suffixes starting with each 2-byte value begin in sa */
};

/* What the differ decided for a range of the new image, before it is serialized. */
enum { REC_COPY, REC_ADD, REC_LIT, REC_HASH };
struct rec {
	uint8_t type;
	uint64_t new_off, len;
	uint64_t old_off; /* COPY, ADD: where in the old image; HASH: the source block in the new image */
};
struct recs {
	struct rec *r;
	size_t n, cap;
	bool oom;
};

static void rec_add(struct recs *rs, uint8_t type, uint64_t new_off, uint64_t len, uint64_t old_off)
{
	if (len == 0 || rs->oom)
		return;
	if (rs->n && type == REC_LIT && rs->r[rs->n - 1].type == REC_LIT &&
	    rs->r[rs->n - 1].new_off + rs->r[rs->n - 1].len == new_off) {
		rs->r[rs->n - 1].len += len;
		return;
	}
	if (rs->n == rs->cap) {
		size_t cap = rs->cap ? rs->cap * 2 : 64;
		struct rec *n = realloc(rs->r, cap * sizeof(*n));
		if (!n) {
			rs->oom = true;
			return;
		}
		rs->r = n;
		rs->cap = cap;
	}
	rs->r[rs->n++] = (struct rec){.type = type, .new_off = new_off, .len = len, .old_off = old_off};
}

static uint64_t hash64(const uint8_t *p, size_t n)
{
	uint64_t h = 0x9e3779b97f4a7c15ull ^ n;
	size_t i = 0;

	for (; i + 8 <= n; i += 8) {
		uint64_t v;
		memcpy(&v, p + i, 8);
		h = (h ^ v) * 0xff51afd7ed558ccdull;
		h ^= h >> 32;
	}
	for (; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	h ^= h >> 29;
	h *= 0xc4ceb9fe1a85ec53ull;
	return h ^ (h >> 32);
}

/* ---- images ---- */

static int image_open(struct rsr_ctx *ctx, const char *path, struct image *img)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;

	img->path = path;
	if (fd < 0)
		return rsr_error_errno(ctx, -errno, "%s", path);
	if (fstat(fd, &st) < 0)
		return rsr_error_errno(ctx, -errno, "%s", path);
	if (!S_ISREG(st.st_mode))
		return rsr_error(ctx, -EINVAL, "%s: not a regular file", path);
	img->size = (uint64_t)st.st_size;
	if (img->size > 0) {
		img->map = mmap(NULL, (size_t)img->size, PROT_READ, MAP_PRIVATE, fd, 0);
		if (img->map == MAP_FAILED) {
			img->map = NULL;
			return rsr_error_errno(ctx, -errno, "%s: mmap", path);
		}
		img->p = img->map;
	}
	img->fd = fd;
	img->has_fd = true;
	fd = -1;
	return 0;
}

static void image_close(struct image *img)
{
	if (img->map)
		munmap(img->map, (size_t)img->size);
	img->map = NULL;
	if (img->has_fd)
		close(img->fd);
	img->has_fd = false;
}

/* ---- deflate members ---- */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static int member_anchors(struct member *m)
{
	const uint8_t *t = m->tokens.p;
	size_t n = m->tokens.len, cap = n / 16 + 1, k = 0;

	m->anchors = malloc(cap * sizeof(uint64_t));
	if (!m->anchors)
		return -ENOMEM;
	for (size_t i = 0; i + 24 <= n && k < cap; i++) {
		uint32_t w;
		memcpy(&w, t + i, 4);
		if ((w * 2654435761u) >> 27 != 0) /* about one position in 32 */
			continue;
		m->anchors[k++] = hash64(t + i, 24);
	}
	qsort(m->anchors, k, sizeof(uint64_t), cmp_u64);
	m->n_anchors = k;
	return 0;
}

static void members_free(struct members *ms)
{
	for (size_t i = 0; i < ms->n; i++) {
		buf_free(&ms->m[i].tokens);
		free(ms->m[i].anchors);
	}
	free(ms->m);
	*ms = (struct members){0};
}

/* Finds the gzip members of an image whose deflate stream re-encodes exactly. */
static int find_members(const struct image *img, struct members *ms, bool verify)
{
	const uint8_t *p = img->p;
	uint64_t i = 0, size = img->size;
	size_t cap = 0;

	while (i + 18 <= size) {
		const uint8_t *hit = memchr(p + i, 0x1f, (size_t)(size - i - 17));
		size_t hl, used;
		struct buf tok = {0};
		uint8_t *check;
		int r;

		if (!hit)
			break;
		i = (uint64_t)(hit - p);
		hl = gzip_header_len(p + i, (size_t)RSR_MIN(size - i, 65536 + 1024));
		if (!hl) {
			i++;
			continue;
		}
		r = deflate_decode(p + i + hl, (size_t)(size - i - hl), PATCH_MAX_DEFLATE_RAW, &tok, &used);
		if (r == -ENOMEM)
			return r;
		if (r < 0 || used < 64) {
			buf_free(&tok);
			i++;
			continue;
		}
		check = verify ? malloc(used) : NULL;
		if (verify && !check) {
			buf_free(&tok);
			return -ENOMEM;
		}
		r = verify ? deflate_encode(tok.p, tok.len, check, used) : 0;
		if (r == 0 && (!verify || memcmp(check, p + i + hl, used) == 0)) {
			struct member *m;
			if (ms->n == cap) {
				size_t ncap = cap ? cap * 2 : 16;
				struct member *nm = realloc(ms->m, ncap * sizeof(*nm));
				if (!nm) {
					free(check);
					buf_free(&tok);
					return -ENOMEM;
				}
				ms->m = nm;
				cap = ncap;
			}
			m = &ms->m[ms->n++];
			*m = (struct member){
			    .off = i + hl, .len = used, .tokens = tok, .hash = hash64(p + i + hl, used)};
			if (member_anchors(m) < 0) {
				free(check);
				return -ENOMEM;
			}
			i += hl + used;
		} else {
			buf_free(&tok);
			i++;
		}
		free(check);
	}
	return 0;
}

static size_t anchor_overlap(const struct member *a, const struct member *b)
{
	size_t i = 0, j = 0, n = 0;

	while (i < a->n_anchors && j < b->n_anchors) {
		if (a->anchors[i] < b->anchors[j])
			i++;
		else if (a->anchors[i] > b->anchors[j])
			j++;
		else
			n++, i++, j++;
	}
	return n;
}

/* The old member a new one is best diffed against, or SIZE_MAX (also when an identical one exists). */
static size_t pick_reference(const struct members *olds, const struct member *m)
{
	size_t best = SIZE_MAX, best_n = 0;

	for (size_t i = 0; i < olds->n; i++)
		if (olds->m[i].hash == m->hash && olds->m[i].len == m->len)
			return SIZE_MAX;
	for (size_t i = 0; i < olds->n; i++) {
		size_t n = anchor_overlap(&olds->m[i], m);
		if (n > best_n) {
			best_n = n;
			best = i;
		}
	}
	/* Worth it only if a fair part of the content is shared. */
	if (best_n * 8 < m->n_anchors || best_n < 4)
		return SIZE_MAX;
	return best;
}

/* ---- matching ---- */

static uint64_t common_len(const uint8_t *a, const uint8_t *b, uint64_t max)
{
	uint64_t n = 0;

	while (n + 8 <= max) {
		uint64_t x, y;
		memcpy(&x, a + n, 8);
		memcpy(&y, b + n, 8);
		if (x != y)
			return n + (uint64_t)(__builtin_ctzll(x ^ y) >> 3);
		n += 8;
	}
	while (n < max && a[n] == b[n])
		n++;
	return n;
}

/* Longest match of nw[0..n) in the old image; returns its length, its old offset in *pos. */
static uint64_t search(const struct matcher *m, const uint8_t *nw, uint64_t n, uint64_t *pos)
{
	int64_t lo = 0, hi;
	uint64_t best = 0;

	*pos = 0;
	if (!m->sa || m->r_len < 2 || n == 0)
		return best;
	hi = (int64_t)m->r_len - 1;
	if (m->bkt && n >= 2) {
		/* Only the suffixes that start with the same two bytes can match more than one byte. */
		unsigned key = (unsigned)nw[0] << 8 | nw[1];
		lo = m->bkt[key];
		hi = (int64_t)m->bkt[key + 1] - 1;
		if (hi < lo)
			return 0;
	}
	while (hi - lo > 1) {
		int64_t mid = lo + (hi - lo) / 2;
		uint64_t s = (uint64_t)m->sa[mid], l = RSR_MIN(m->r_len - s, n);
		int c = memcmp(m->r + s, nw, (size_t)RSR_MIN(l, 4096));
		if (c < 0 || (c == 0 && l < n && l <= 4096))
			lo = mid;
		else
			hi = mid;
	}
	for (int k = 0; k < 2; k++) {
		uint64_t s = (uint64_t)m->sa[k ? hi : lo], o, l;
		o = m->rmap ? m->rmap[s / BLOCK] + s % BLOCK : s;
		l = common_len(m->old + o, nw, RSR_MIN(m->old_size - o, n));
		if (l > best) {
			best = l;
			*pos = o;
		}
	}
	return best;
}

static inline bool same_at(const struct matcher *m, const uint8_t *nw, int64_t ni, int64_t oi)
{
	return oi >= 0 && (uint64_t)oi < m->old_size && m->old[oi] == nw[ni];
}

/*
 * bsdiff's approximate matching over nw[gs..ge): emits adds (approximate
 * matches, extended forward and backward while at least half the bytes
 * agree) and literals. `lastpos` is where the old side is expected to
 * continue (the end of the preceding match).
 */
static void approx_diff(const struct matcher *m, const uint8_t *nw, uint64_t gs, uint64_t ge, uint64_t lastpos_in,
			struct recs *out)
{
	int64_t scan = (int64_t)gs, lastscan = (int64_t)gs, lastpos = (int64_t)lastpos_in, end = (int64_t)ge;
	int64_t lastoffset = lastpos - lastscan, len = 0;
	uint64_t pos = 0;
	int64_t osz = (int64_t)m->old_size;

	while (scan < end) {
		int64_t oldscore = 0, scsc;

		for (scsc = scan += len; scan < end; scan++) {
			len = (int64_t)search(m, nw + scan, (uint64_t)(end - scan), &pos);
			for (; scsc < scan + len; scsc++)
				if (same_at(m, nw, scsc, scsc + lastoffset))
					oldscore++;
			if ((len == oldscore && len != 0) || len > oldscore + 8)
				break;
			if (same_at(m, nw, scan, scan + lastoffset))
				oldscore--;
		}
		if (len != oldscore || scan == end) {
			int64_t s = 0, sf = 0, lenf = 0, lenb = 0;

			for (int64_t i = 0; lastscan + i < scan && lastpos + i < osz;) {
				if (lastpos + i >= 0 && m->old[lastpos + i] == nw[lastscan + i])
					s++;
				i++;
				if (s * 2 - i > sf * 2 - lenf) {
					sf = s;
					lenf = i;
				}
			}
			if (scan < end) {
				int64_t sb = 0;
				s = 0;
				for (int64_t i = 1; scan >= lastscan + i && (int64_t)pos >= i; i++) {
					if (m->old[(int64_t)pos - i] == nw[scan - i])
						s++;
					if (s * 2 - i > sb * 2 - lenb) {
						sb = s;
						lenb = i;
					}
				}
			}
			if (lastscan + lenf > scan - lenb) {
				int64_t overlap = (lastscan + lenf) - (scan - lenb), ss = 0, lens = 0;
				s = 0;
				for (int64_t i = 0; i < overlap; i++) {
					if (same_at(m, nw, lastscan + lenf - overlap + i, lastpos + lenf - overlap + i))
						s++;
					if (nw[scan - lenb + i] == m->old[(int64_t)pos - lenb + i])
						s--;
					if (s > ss) {
						ss = s;
						lens = i + 1;
					}
				}
				lenf += lens - overlap;
				lenb -= lens;
			}
			if (lenf > 0 && lastpos >= 0)
				rec_add(out, REC_ADD, (uint64_t)lastscan, (uint64_t)lenf, (uint64_t)lastpos);
			else
				lenf = 0;
			rec_add(out, REC_LIT, (uint64_t)(lastscan + lenf),
				(uint64_t)((scan - lenb) - (lastscan + lenf)), 0);
			lastscan = scan - lenb;
			lastpos = (int64_t)pos - lenb;
			lastoffset = (int64_t)pos - scan;
		}
	}
}

/* Without a suffix array (nothing to search, or 2 GiB or more of it) only identical blocks are matched. */
static int build_sa(struct matcher *m)
{
	if (m->r_len < 2 || m->r_len > INT32_MAX)
		return 0;
	m->sa = rsr_alloc_large((size_t)m->r_len * sizeof(int32_t));
	if (!m->sa)
		return -ENOMEM;
	if (divsufsort(m->r, m->sa, (int32_t)m->r_len) != 0) {
		free(m->sa);
		m->sa = NULL;
		return -ENOMEM;
	}
	/*
	 * Bucket starts by the first two bytes; the one-byte suffix at the end
	 * sorts first among those starting with its byte.
	 */
	m->bkt = calloc(65537, sizeof(int32_t));
	if (m->bkt) {
		for (uint64_t i = 0; i + 1 < m->r_len; i++)
			m->bkt[(unsigned)m->r[i] << 8 | m->r[i + 1]]++;
		m->bkt[(unsigned)m->r[m->r_len - 1] << 8]++;
		for (unsigned v = 0, sum = 0; v <= 65536; v++) {
			unsigned c = v < 65536 ? (unsigned)m->bkt[v] : 0;
			m->bkt[v] = (int32_t)sum;
			sum += c;
		}
	}
	return 0;
}

/* ---- per-input plan ---- */

struct set {
	struct image *old; /* NULL: full replacement */
	struct members old_members;
	size_t *ref_of; /* per new member: old member index or SIZE_MAX */
	int64_t *blk;	/* per new block: old offset of an identical block, or -1 */
	struct matcher m;
	uint8_t *r_buf;
	uint64_t *rmap;
	struct proj proj; /* the changed ELF files of old, projected towards the new image */
	uint8_t *pimg;	  /* old as projected (where pmask says so); NULL without regions */
	bool *pmask;	  /* per old block: projected in pimg (the others are as in old) */
	struct buf *penc; /* per region: its OP_PROJECT description */
	bool projected;	  /* a chunk announced one (set by the planning threads) */
};

/* Hashes of the new image's changed blocks, to find hash-tree entries (dm-verity style). */
struct tree {
	uint8_t salt[PATCH_MAX_SALT];
	size_t salt_len;
	struct tslot {
		uint8_t h[32];
		uint64_t off; /* block offset + 1; 0: empty */
	} * tab;
	size_t cap;
};

struct job {
	struct tree tree;
	uint32_t chunk_size;
	struct rsr_ctx *ctx;
	const struct rsr_patch_create_opts *opts;
	struct image *nw;
	struct members *new_members;
	struct set *sets;
	size_t n_sets;
	uint32_t version; /* of the patch: 3 when a chunk reads a projection */
	uint64_t *bounds; /* n_chunks + 1 */
	uint32_t n_chunks;
	struct buf *frames;	 /* n_sets * n_chunks */
	struct buf *payloads;	 /* n_sets * n_chunks: the operations, between planning and compressing */
	uint32_t *payload_sizes; /* n_sets * n_chunks */
	struct scratch *scratch; /* per worker, kept across chunks: fresh pages and contexts cost */
	pthread_mutex_t lock;
	uint64_t done;
	int err;
	char errmsg[256];
};

struct scratch {
	ZSTD_CCtx *cctx;
	uint8_t *out; /* the self-check's output */
	size_t out_cap;
};

struct hslot {
	uint64_t h;
	int64_t off;
};

/*
 * The projection of the set's old image: its changed ELF files with their
 * addresses moved as the new image has them, and each region's description.
 */
static int project_old(struct set *s, const struct image *nw, const bool *used)
{
	const struct image *old = s->old;
	int r = elf_plan(old->p, old->size, nw->p, nw->size, s->blk, used, &s->proj);
	void *map;

	if (r < 0 || !s->proj.n)
		return r;
	if (!old->has_fd || !old->size) {
		proj_free(&s->proj); /* not from a file: no projection */
		return 0;
	}
	/* A private mapping of the image: only the pages projected take memory. */
	map = mmap(NULL, (size_t)old->size, PROT_READ | PROT_WRITE, MAP_PRIVATE, old->fd, 0);
	if (map == MAP_FAILED)
		return -ENOMEM;
	s->pimg = map;
	s->pmask = rsr_calloc_large(old->size / BLOCK + 1, sizeof(bool));
	s->penc = calloc(s->proj.n, sizeof(*s->penc));
	if (!s->pmask || !s->penc)
		return -ENOMEM;
	for (size_t i = 0; i < s->proj.n; i++) {
		const struct proj_region *g = &s->proj.regions[i];
		struct proj one = {.regions = s->proj.regions + i, .n = 1};
		/* Blocks that are identical to new ones stay: copies read them as they are. */
		for (uint64_t b0 = g->start / PROJ_BLOCK * PROJ_BLOCK; b0 < g->start + g->size; b0 += PROJ_BLOCK)
			if (!used[b0 / BLOCK]) {
				proj_block(&one, old->p, old->size, b0, s->pimg + b0);
				s->pmask[b0 / BLOCK] = true;
			}
		proj_encode(&one, &s->penc[i]);
		if (s->penc[i].oom)
			return -ENOMEM;
	}
	return 0;
}

/* Matches identical blocks of the new image to blocks of the old one. */
static int match_blocks(struct set *s, const struct image *nw)
{
	const struct image *old = s->old;
	uint64_t nob = old->size / BLOCK, nnb = (nw->size + BLOCK - 1) / BLOCK, cap = 1;
	struct hslot *tab;
	bool *used;
	uint64_t r_blocks = 0;
	const uint8_t *src = old->p;
	int r;

	s->blk = rsr_alloc_large((nnb ? nnb : 1) * sizeof(int64_t));
	if (!s->blk)
		return -ENOMEM;
	while (cap < nob * 2 + 2)
		cap <<= 1;
	tab = rsr_calloc_large(cap, sizeof(*tab));
	used = rsr_calloc_large((size_t)(old->size + BLOCK - 1) / BLOCK + 1, 1);
	if (!tab || !used) {
		free(tab);
		free(used);
		return -ENOMEM;
	}
	for (uint64_t b = 0; b < nob; b++) {
		uint64_t h = hash64(old->p + b * BLOCK, BLOCK) | 1, k = h & (cap - 1);
		while (tab[k].h && tab[k].h != h)
			k = (k + 1) & (cap - 1);
		if (!tab[k].h)
			tab[k] = (struct hslot){.h = h, .off = (int64_t)(b * BLOCK)};
	}
	for (uint64_t b = 0; b < nnb; b++) {
		uint64_t h, k, off = b * BLOCK;
		int64_t prev = b ? s->blk[b - 1] : -1;
		s->blk[b] = -1;
		if (off + BLOCK > nw->size)
			continue;
		/* Prefer continuing the previous run: the same content is often at more than one place. */
		if (prev >= 0 && (uint64_t)prev + 2 * BLOCK <= old->size &&
		    memcmp(old->p + prev + BLOCK, nw->p + off, BLOCK) == 0) {
			s->blk[b] = prev + BLOCK;
		} else {
			h = hash64(nw->p + off, BLOCK) | 1;
			k = h & (cap - 1);
			while (tab[k].h && tab[k].h != h)
				k = (k + 1) & (cap - 1);
			if (tab[k].h && memcmp(old->p + tab[k].off, nw->p + off, BLOCK) == 0)
				s->blk[b] = tab[k].off;
		}
		if (s->blk[b] >= 0)
			used[s->blk[b] / BLOCK] = true;
	}
	free(tab);

	r = project_old(s, nw, used);
	if (r < 0) {
		free(used);
		return r;
	}
	if (s->pimg)
		src = s->pimg; /* the matcher searches the projected image */

	/* The old blocks nothing matched are where changed content comes from. */
	for (uint64_t b = 0; b * BLOCK < old->size; b++)
		if (!used[b])
			r_blocks++;
	s->rmap = rsr_alloc_large((r_blocks ? r_blocks : 1) * sizeof(uint64_t));
	s->r_buf = rsr_alloc_large(r_blocks ? r_blocks * BLOCK : 1);
	if (!s->rmap || !s->r_buf) {
		free(used);
		return -ENOMEM;
	}
	s->m = (struct matcher){.old = src, .old_size = old->size, .r = s->r_buf, .rmap = s->rmap};
	for (uint64_t b = 0; b * BLOCK < old->size; b++) {
		uint64_t n;
		if (used[b])
			continue;
		n = RSR_MIN(BLOCK, old->size - b * BLOCK);
		s->rmap[s->m.r_len / BLOCK] = b * BLOCK;
		memcpy(s->r_buf + s->m.r_len, src + b * BLOCK, n);
		s->m.r_len += n;
		if (n < BLOCK) /* only the last block can be partial */
			break;
	}
	free(used);
	return 0;
}

static void set_free(struct set *s)
{
	members_free(&s->old_members);
	free(s->ref_of);
	free(s->blk);
	free(s->m.sa);
	free(s->m.bkt);
	free(s->r_buf);
	free(s->rmap);
	for (size_t i = 0; s->penc && i < s->proj.n; i++)
		buf_free(&s->penc[i]);
	free(s->penc);
	if (s->pimg)
		munmap(s->pimg, (size_t)s->old->size);
	proj_free(&s->proj);
	free(s->pmask);
}

static bool is_hex(uint8_t c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

/* 0, or -ENOMEM: SHA-256 fails only when OpenSSL cannot allocate. */
static int block_hash(EVP_MD_CTX *md, const uint8_t *salt, size_t salt_len, const uint8_t *blk, uint8_t out[32])
{
	unsigned int n = 32;

	if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1 || EVP_DigestUpdate(md, salt, salt_len) != 1 ||
	    EVP_DigestUpdate(md, blk, HASH_BLOCK) != 1 || EVP_DigestFinal_ex(md, out, &n) != 1)
		return -ENOMEM;
	return 0;
}

static const struct tslot *tree_find(const struct tree *t, const uint8_t *w)
{
	uint64_t k;

	if (!t->tab)
		return NULL;
	k = hash64(w, 32);
	for (k &= t->cap - 1; t->tab[k].off; k = (k + 1) & (t->cap - 1))
		if (!memcmp(t->tab[k].h, w, 32))
			return &t->tab[k];
	return NULL;
}

static int tree_add(struct tree *t, const uint8_t h[32], uint64_t off)
{
	uint64_t k;

	k = hash64(h, 32); /* words of the image are not random like hashes */
	for (k &= t->cap - 1; t->tab[k].off; k = (k + 1) & (t->cap - 1))
		if (!memcmp(t->tab[k].h, h, 32))
			return 0;
	memcpy(t->tab[k].h, h, 32);
	t->tab[k].off = off + 1;
	return 0;
}

/* One sampled block hash under one candidate salt. */
struct sample {
	uint8_t h[32];
	uint32_t next; /* in its hash chain; UINT32_MAX ends it */
	uint8_t cand;
	bool found; /* among the changed blocks' words */
};

/*
 * Looks for a hash tree over the new image: 32-byte entries that are
 * SHA-256(salt || block) of its changed 4 KiB blocks. Candidate salts are
 * none and every 64-digit hex string in the changed blocks (where manifests
 * name them); the one whose hashes of a sample of blocks appear most often
 * among the changed blocks' 32-byte words wins. Then all changed blocks are
 * hashed with it, so that the patcher can compute those entries.
 */
static int find_tree(struct job *j)
{
	const struct image *nw = j->nw;
	const struct set *s = &j->sets[0];
	uint64_t nb = nw->size / BLOCK, n_changed = 0;
	uint8_t cands[MAX_SALTS][32];
	size_t n_cands = 1, best = SIZE_MAX, best_hits = 0;
	size_t cand_len[MAX_SALTS] = {0};
	EVP_MD_CTX *md;
	int r = 0;

	if (!s->old || !s->blk)
		return 0;
	for (uint64_t b = 0; b < nb; b++)
		if (s->blk[b] < 0)
			n_changed++;
	if (n_changed < 2)
		return 0;
	/* Candidate salts: from the end, where metadata such as a manifest usually is. */
	for (uint64_t b = (nw->size + BLOCK - 1) / BLOCK; b-- > 0 && n_cands < MAX_SALTS;) {
		uint64_t e = RSR_MIN((b + 1) * BLOCK, nw->size);
		if (b < nb && s->blk[b] >= 0)
			continue;
		for (uint64_t i = b * BLOCK; i + 64 <= e && n_cands < MAX_SALTS; i++) {
			size_t k = 0;
			if (!is_hex(nw->p[i]) || (i > 0 && is_hex(nw->p[i - 1])))
				continue;
			while (k < 65 && i + k < nw->size && is_hex(nw->p[i + k]))
				k++;
			if (k == 64) {
				char hex[65];
				memcpy(hex, nw->p + i, 64);
				hex[64] = 0;
				if (rsr_hex_decode(hex, cands[n_cands], 32)) {
					bool dup = false;
					for (size_t c = 1; c < n_cands; c++)
						dup |= !memcmp(cands[c], cands[n_cands], 32);
					if (!dup)
						cand_len[n_cands++] = 32;
				}
			}
			i += k;
		}
	}
	md = EVP_MD_CTX_new();
	if (!md)
		return -ENOMEM;
	/*
	 * A sample of block hashes per candidate salt, in a small chained table;
	 * then every 32-byte word of the changed blocks is looked up in it. (The
	 * other way round, a table of all the words, takes 40 bytes per word:
	 * megabytes, at the time the suffix array is built.)
	 */
	{
		uint64_t step = n_changed / 64 + 1;
		size_t n = 0, cap = 1, hits[MAX_SALTS] = {0};
		struct sample *smp = malloc((size_t)n_cands * 64 * sizeof(*smp));
		uint32_t *head;

		while (cap < (size_t)n_cands * 64 * 2)
			cap <<= 1;
		head = malloc(cap * sizeof(*head));
		if (!smp || !head) {
			free(smp);
			free(head);
			EVP_MD_CTX_free(md);
			return -ENOMEM;
		}
		memset(head, 0xff, cap * sizeof(*head));
		for (size_t c = 0; c < n_cands; c++) {
			size_t sampled = 0;
			uint64_t seen = 0;
			for (uint64_t b = 0; b < nb && sampled < 64; b++) {
				struct sample *x = &smp[n];
				size_t k;
				if (s->blk[b] >= 0 || seen++ % step)
					continue;
				if (block_hash(md, cands[c], cand_len[c], nw->p + b * BLOCK, x->h) < 0) {
					free(smp);
					free(head);
					EVP_MD_CTX_free(md);
					return -ENOMEM;
				}
				x->cand = (uint8_t)c;
				x->found = false;
				k = hash64(x->h, 32) & (cap - 1);
				x->next = head[k];
				head[k] = (uint32_t)n++;
				sampled++;
			}
		}
		for (uint64_t b = 0; b < nb; b++) {
			if (s->blk[b] >= 0)
				continue;
			for (uint64_t w = b * BLOCK; w < (b + 1) * BLOCK; w += 32)
				for (uint32_t i = head[hash64(nw->p + w, 32) & (cap - 1)]; i != UINT32_MAX;
				     i = smp[i].next)
					if (!smp[i].found && !memcmp(smp[i].h, nw->p + w, 32)) {
						smp[i].found = true;
						hits[smp[i].cand]++;
					}
		}
		for (size_t c = 0; c < n_cands; c++)
			if (hits[c] > best_hits) {
				best_hits = hits[c];
				best = c;
			}
		free(smp);
		free(head);
	}
	if (best_hits >= 4) {
		struct tree *t = &j->tree;
		t->cap = 64;
		while (t->cap < 2 * n_changed)
			t->cap <<= 1;
		t->tab = rsr_calloc_large(t->cap, sizeof(*t->tab));
		if (!t->tab) {
			r = -ENOMEM;
		} else {
			memcpy(t->salt, cands[best], cand_len[best]);
			t->salt_len = cand_len[best];
			for (uint64_t b = 0; b < nb && r == 0; b++) {
				uint8_t h[32];
				if (s->blk[b] >= 0)
					continue;
				r = block_hash(md, t->salt, t->salt_len, nw->p + b * BLOCK, h);
				if (r == 0)
					tree_add(t, h, b * BLOCK);
			}
		}
	}
	EVP_MD_CTX_free(md);
	return r;
}

/*
 * The non-identical region [y, ge) of chunk [cs, ce): hash-tree entries the
 * patcher can compute become hash records, the rest goes to the matcher. A
 * hash's source block must be final when the patcher computes it: before the
 * chunk, or in the chunk either after the entry (hashes are computed last
 * first) or before the chunk's first hash.
 */
static void diff_region(struct job *j, struct set *s, uint64_t y, uint64_t ge, uint64_t cs, uint64_t ce,
			uint64_t *lastpos, uint64_t *first_hash, struct recs *rs)
{
	const uint8_t *nw = j->nw->p;
	uint64_t cur = y, p = (y + 31) & ~(uint64_t)31;

	while (j->tree.tab && p + 32 <= ge) {
		const struct tslot *t = tree_find(&j->tree, nw + p);
		uint64_t k = 0;
		bool run_before = false;

		while (t && p + 32 * (k + 1) <= ge) {
			uint64_t src = t->off - 1, pos = p + 32 * k, fh = *first_hash ? *first_hash : pos;
			bool before = src + BLOCK <= cs,
			     ok = before || (src >= cs && src + BLOCK <= ce && (src >= pos + 32 || src + BLOCK <= fh));
			/* One operation's sources are all before the chunk or all in it. */
			if (!ok || (k > 0 && before != run_before))
				break;
			run_before = before;
			if (!*first_hash)
				*first_hash = pos;
			k++;
			if (p + 32 * (k + 1) > ge || src + BLOCK >= j->nw->size)
				break;
			t = tree_find(&j->tree, nw + p + 32 * k);
			if (t && t->off - 1 != src + BLOCK)
				break;
		}
		if (!k) {
			p += 32;
			continue;
		}
		if (p > cur) {
			approx_diff(&s->m, nw, cur, p, *lastpos, rs);
			if (rs->n && rs->r[rs->n - 1].type == REC_ADD)
				*lastpos = rs->r[rs->n - 1].old_off + rs->r[rs->n - 1].len;
		}
		rec_add(rs, REC_HASH, p, 32 * k, (uint64_t)(tree_find(&j->tree, nw + p)->off - 1));
		p += 32 * k;
		cur = p;
	}
	if (ge > cur) {
		approx_diff(&s->m, nw, cur, ge, *lastpos, rs);
		if (rs->n && rs->r[rs->n - 1].type == REC_ADD)
			*lastpos = rs->r[rs->n - 1].old_off + rs->r[rs->n - 1].len;
	}
}

/*
 * The byte-wise differences of a chunk, run-length coded as they are made:
 * (zeros, explicit) pairs into runs, the explicit bytes into nz. A lone zero
 * between differences stays explicit. Coding on the fly keeps no buffer of
 * the differences themselves, which are as long as the adds (megabytes).
 */
struct rle {
	struct buf runs, nz;
	uint64_t zeros, n_explicit;
	bool in_explicit, pending_zero; /* pending: a zero inside explicit bytes, kept if a non-zero follows */
};

static void rle_push(struct rle *e, uint8_t d)
{
	if (!e->in_explicit) {
		if (d == 0) {
			e->zeros++;
		} else {
			e->in_explicit = true;
			e->n_explicit = 1;
			buf_byte(&e->nz, d);
		}
	} else if (e->pending_zero) {
		e->pending_zero = false;
		if (d != 0) {
			uint8_t two[2] = {0, d};
			buf_put(&e->nz, two, 2);
			e->n_explicit += 2;
		} else {
			buf_varint(&e->runs, e->zeros);
			buf_varint(&e->runs, e->n_explicit);
			e->in_explicit = false;
			e->zeros = 2;
		}
	} else if (d != 0) {
		buf_byte(&e->nz, d);
		e->n_explicit++;
	} else {
		e->pending_zero = true;
	}
}

static void rle_finish(struct rle *e)
{
	if (e->in_explicit) {
		buf_varint(&e->runs, e->zeros);
		buf_varint(&e->runs, e->n_explicit);
		if (e->pending_zero) {
			buf_varint(&e->runs, 1);
			buf_varint(&e->runs, 0);
		}
	} else if (e->zeros) {
		buf_varint(&e->runs, e->zeros);
		buf_varint(&e->runs, 0);
	}
	e->zeros = e->n_explicit = 0;
	e->in_explicit = e->pending_zero = false;
}

/*
 * Where an add reads: the input, or (with proj) the projected input of one
 * region, which the chunk announces before its first projected operation.
 * Only the operations whose bytes the projection changes read it.
 */
struct src {
	const uint8_t *raw;
	struct set *proj;    /* NULL: the input only */
	size_t region, *cur; /* the region; the one the chunk announced last */
};

static uint8_t src_op(struct buf *ctrl, const struct src *sr, uint64_t o, uint64_t n, uint8_t op)
{
	struct set *s = sr->proj;

	if (!s || memcmp(s->pimg + o, sr->raw + o, (size_t)n) == 0)
		return op;
	if (*sr->cur != sr->region) {
		const struct buf *d = &s->penc[sr->region];
		buf_byte(ctrl, OP_PROJECT);
		buf_varint(ctrl, d->len);
		buf_put(ctrl, d->p, d->len);
		*sr->cur = sr->region;
		__atomic_store_n(&s->projected, true, __ATOMIC_RELAXED);
	}
	return op == OP_COPY ? OP_PCOPY : OP_PADD;
}

/* Emits the operations of one record range [a, b) of the new image. */
static void emit_add(struct buf *ctrl, struct rle *diff, const struct src *sr, const uint8_t *nw, uint64_t a,
		     uint64_t len, uint64_t o, int64_t *pos)
{
	const uint8_t *old = sr->proj ? sr->proj->pimg : sr->raw;
	uint64_t i = 0;

	while (i < len) {
		/* A run of equal bytes long enough is a copy; the rest is an add. */
		uint64_t j = i, run = 0, add_end;
		while (j < len) {
			if (old[o + j] == nw[a + j]) {
				run++;
				if (run >= MIN_COPY_RUN)
					break;
			} else {
				run = 0;
			}
			j++;
		}
		if (j >= len) {
			add_end = len;
		} else {
			add_end = j + 1 - run;
		}
		if (add_end > i) {
			buf_byte(ctrl, src_op(ctrl, sr, o + i, add_end - i, OP_ADD));
			buf_svarint(ctrl, (int64_t)(o + i) - *pos);
			buf_varint(ctrl, add_end - i);
			for (uint64_t k = i; k < add_end; k++)
				rle_push(diff, (uint8_t)(nw[a + k] - old[o + k]));
			*pos = (int64_t)(o + add_end);
			i = add_end;
		}
		if (i < len) {
			uint64_t e = i;
			while (e < len && old[o + e] == nw[a + e])
				e++;
			buf_byte(ctrl, src_op(ctrl, sr, o + i, e - i, OP_COPY));
			buf_svarint(ctrl, (int64_t)(o + i) - *pos);
			buf_varint(ctrl, e - i);
			*pos = (int64_t)(o + e);
			i = e;
		}
	}
}

/*
 * An add of old [o, o + len) as nw [a, a + len): the parts inside a
 * projection region read the projected input (announcing the region to the
 * patcher when it changes), the others the input.
 */
static void emit_add_proj(struct buf *ctrl, struct rle *diff, struct set *s, const uint8_t *nw, uint64_t a,
			  uint64_t len, uint64_t o, int64_t *pos, size_t *cur)
{
	while (len > 0) {
		const struct proj_region *g = NULL;
		uint64_t n = len;
		size_t gi = 0;
		for (; gi < s->proj.n; gi++) {
			const struct proj_region *x = &s->proj.regions[gi];
			if (x->start + x->size <= o)
				continue;
			if (x->start <= o) {
				/* A run of blocks that pimg projects, or one of blocks it does not. */
				uint64_t e = o / BLOCK * BLOCK + BLOCK;
				bool on = s->pmask[o / BLOCK];
				while (e < x->start + x->size && e < o + len && s->pmask[e / BLOCK] == on)
					e += BLOCK;
				g = on ? x : NULL;
				n = RSR_MIN(len, RSR_MIN(x->start + x->size, e) - o);
			} else {
				n = RSR_MIN(len, x->start - o);
			}
			break;
		}
		struct src sr = {.raw = s->old->p, .proj = g ? s : NULL, .region = gi, .cur = cur};
		emit_add(ctrl, diff, &sr, nw, a, n, o, pos);
		a += n;
		o += n;
		len -= n;
	}
}

/*
 * Serializes the records clipped to [cs, ce); returns the input position
 * after them. With a set that has a projection (s, and *cur the region the
 * chunk announced last), adds read it; otherwise they read old.
 */
static int64_t emit_recs(const struct recs *rs, const uint8_t *old, const uint8_t *nw, uint64_t cs, uint64_t ce,
			 int64_t pos, struct buf *ctrl, struct rle *diff, struct buf *lit, const struct tree *tree,
			 bool *salt_sent, struct set *s, size_t *cur)
{
	for (size_t i = 0; i < rs->n; i++) {
		const struct rec *r = &rs->r[i];
		uint64_t a = RSR_MAX(r->new_off, cs), b = RSR_MIN(r->new_off + r->len, ce), o;
		if (a >= b)
			continue;
		o = r->old_off + (a - r->new_off);
		switch (r->type) {
		case REC_COPY:
			buf_byte(ctrl, OP_COPY);
			buf_svarint(ctrl, (int64_t)o - pos);
			buf_varint(ctrl, b - a);
			pos = (int64_t)(o + (b - a));
			break;
		case REC_ADD:
			if (s && s->proj.n)
				emit_add_proj(ctrl, diff, s, nw, a, b - a, o, &pos, cur);
			else
				emit_add(ctrl, diff, &(struct src){.raw = old}, nw, a, b - a, o, &pos);
			break;
		case REC_LIT:
			buf_byte(ctrl, OP_LITERAL);
			buf_varint(ctrl, b - a);
			buf_put(lit, nw + a, b - a);
			break;
		case REC_HASH:
			if (!*salt_sent) {
				buf_byte(ctrl, OP_SALT);
				buf_varint(ctrl, tree->salt_len);
				buf_put(ctrl, tree->salt, tree->salt_len);
				*salt_sent = true;
			}
			buf_byte(ctrl, OP_HASH);
			buf_varint(ctrl, r->old_off);
			buf_varint(ctrl, r->len / 32);
			break;
		}
	}
	return pos;
}

/* Plans one chunk of one input: records for the chunk's range of the new image. */
static int plan_chunk(struct job *j, struct set *s, uint64_t cs, uint64_t ce, struct buf *ctrl, struct rle *diff,
		      struct buf *lit)
{
	const struct image *nw = j->nw;
	struct recs rs = {0};
	uint64_t x = cs, lastpos = s->old ? RSR_MIN(cs, s->old->size) : 0;
	int64_t pos = (int64_t)lastpos;
	size_t mi = 0;
	uint64_t first_hash = 0;
	bool salt_sent = false;
	size_t cur_region = SIZE_MAX; /* the projection region announced in this chunk */

	/* Deflate members that start in this chunk (chunks never cut one). */
	while (x < ce) {
		uint64_t gap_end = ce, next_x;
		const struct member *dm = NULL;
		size_t dmi = 0;

		/* The next deflate member handled in token form, if any, ends the gap. */
		for (; s->old && mi < j->new_members->n; mi++) {
			const struct member *m = &j->new_members->m[mi];
			if (m->off < x || s->ref_of[mi] == SIZE_MAX)
				continue;
			if (m->off < ce) {
				dm = m;
				dmi = mi;
				gap_end = m->off;
			}
			break;
		}
		if (!s->old) {
			rec_add(&rs, REC_LIT, x, gap_end - x, 0);
		} else {
			/* Within the gap: runs of identical blocks are copies, the rest goes to the matcher. */
			uint64_t y = x;
			while (y < gap_end) {
				uint64_t b = y / BLOCK, run_end, o;
				if (y % BLOCK == 0 && s->blk[b] >= 0 && (b + 1) * BLOCK <= gap_end) {
					o = (uint64_t)s->blk[b];
					run_end = (b + 1) * BLOCK;
					while (run_end + BLOCK <= gap_end &&
					       s->blk[run_end / BLOCK] == (int64_t)(o + run_end - y))
						run_end += BLOCK;
					rec_add(&rs, REC_COPY, y, run_end - y, o);
					lastpos = o + (run_end - y);
					y = run_end;
				} else {
					uint64_t ge = (y / BLOCK + 1) * BLOCK;
					while (ge < gap_end && !(s->blk[ge / BLOCK] >= 0 && ge + BLOCK <= gap_end))
						ge += BLOCK;
					ge = RSR_MIN(ge, gap_end);
					diff_region(j, s, y, ge, cs, ce, &lastpos, &first_hash, &rs);
					y = ge;
				}
			}
		}
		pos = emit_recs(&rs, s->old ? s->old->p : NULL, nw->p, x, gap_end, pos, ctrl, diff, lit, &j->tree,
				&salt_sent, s, &cur_region);
		if (rs.oom) {
			free(rs.r);
			return -ENOMEM;
		}
		rs.n = 0;
		next_x = gap_end;
		if (dm) {
			/* The member's deflate stream, diffed in token form against the old member's. */
			const struct member *ref = &s->old_members.m[s->ref_of[dmi]];
			struct matcher tm = {.old = ref->tokens.p,
					     .old_size = ref->tokens.len,
					     .r = ref->tokens.p,
					     .r_len = ref->tokens.len};
			int r = build_sa(&tm);
			if (r < 0) {
				free(rs.r);
				return r;
			}
			approx_diff(&tm, dm->tokens.p, 0, dm->tokens.len, 0, &rs);
			buf_byte(ctrl, OP_DEFLATE);
			buf_varint(ctrl, ref->off);
			buf_varint(ctrl, ref->len);
			buf_varint(ctrl, dm->len);
			buf_varint(ctrl, dm->tokens.len);
			emit_recs(&rs, ref->tokens.p, dm->tokens.p, 0, dm->tokens.len, 0, ctrl, diff, lit, &j->tree,
				  &salt_sent, NULL, NULL);
			buf_byte(ctrl, OP_END);
			free(tm.sa);
			free(tm.bkt);
			if (rs.oom) {
				free(rs.r);
				return -ENOMEM;
			}
			rs.n = 0;
			next_x = dm->off + dm->len;
			mi++;
		}
		x = next_x;
	}
	free(rs.r);
	return 0;
}

/* The patcher reads earlier output; when checking a chunk, that is the new image itself. */
static int read_new(void *arg, uint64_t off, void *buf, size_t len)
{
	const struct image *nw = arg;

	if (off > nw->size || len > nw->size - off)
		return RSR_E_FORMAT;
	memcpy(buf, nw->p + off, len);
	return 0;
}

/* Reports progress: planning a chunk counts for half of its bytes, compressing and checking it for the rest. */
static int advance(struct job *j, uint64_t units)
{
	int r = 0;

	pthread_mutex_lock(&j->lock);
	j->done += units;
	if (rsr_progress(j->ctx, "creating patch", j->done, 2 * (uint64_t)j->n_sets * j->nw->size) < 0)
		r = RSR_E_CANCELED;
	pthread_mutex_unlock(&j->lock);
	return r;
}

/* Plans chunk `index` (set-major) into its operations payload, j->payloads[index]. */
static int plan_job(void *arg, size_t index, unsigned worker)
{
	struct job *j = arg;
	uint32_t c = (uint32_t)(index % j->n_chunks);
	struct buf ctrl = {0}, lit = {0}, *payload = &j->payloads[index];
	struct rle diff = {0};
	int r;

	(void)worker;
	r = plan_chunk(j, &j->sets[index / j->n_chunks], j->bounds[c], j->bounds[c + 1], &ctrl, &diff, &lit);
	if (r < 0)
		goto out;
	rle_finish(&diff);
	buf_varint(payload, ctrl.len);
	buf_varint(payload, diff.runs.len);
	buf_varint(payload, diff.nz.len);
	buf_varint(payload, lit.len);
	buf_put(payload, ctrl.p, ctrl.len);
	buf_put(payload, diff.runs.p, diff.runs.len);
	buf_put(payload, diff.nz.p, diff.nz.len);
	buf_put(payload, lit.p, lit.len);
	if (ctrl.oom || lit.oom || diff.runs.oom || diff.nz.oom || payload->oom)
		r = -ENOMEM;
	else if (payload->len > PATCH_MAX_CHUNK_PAYLOAD)
		r = RSR_E_LIMIT;
	else
		r = advance(j, j->bounds[c + 1] - j->bounds[c]);
out:
	buf_free(&ctrl);
	buf_free(&lit);
	buf_free(&diff.runs);
	buf_free(&diff.nz);
	if (r < 0)
		buf_free(payload);
	return r;
}

/* Compresses chunk `index`'s payload (planned first if it is not yet) and checks that it reproduces its output. */
static int chunk_job(void *arg, size_t index, unsigned worker)
{
	struct job *j = arg;
	size_t si = index / j->n_chunks;
	uint32_t c = (uint32_t)(index % j->n_chunks);
	struct set *s = &j->sets[si];
	struct buf *payload = &j->payloads[index], *frame = &j->frames[index];
	struct scratch *sc = &j->scratch[worker];
	ZSTD_CCtx *cctx;
	size_t bound, n;
	int r = 0;

	if (!payload->p && (r = plan_job(j, index, worker)) < 0)
		goto out;
	bound = ZSTD_compressBound(payload->len);
	frame->p = malloc(bound);
	if (!sc->cctx)
		sc->cctx = ZSTD_createCCtx();
	cctx = sc->cctx;
	if (!frame->p || !cctx) {
		r = -ENOMEM;
		goto out;
	}
	frame->cap = bound;
	/* One context per worker: its tables are allocated once, not per chunk. */
	ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters);
	ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, (int)j->opts->level);
	ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 0); /* the patch digest covers every byte */
	ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 1);
	n = ZSTD_compress2(cctx, frame->p, bound, payload->p, payload->len);
	if (ZSTD_isError(n)) {
		r = -ENOMEM;
		goto out;
	}
	frame->len = n;
	j->payload_sizes[index] = (uint32_t)payload->len;
	buf_free(payload);
	/* Self-check: the chunk must give back exactly the new image's bytes. */
	{
		struct patch_chunk_view v = {.version = j->version,
					     .out_offset = j->bounds[c],
					     .out_size = (uint32_t)(j->bounds[c + 1] - j->bounds[c]),
					     .comp_size = (uint32_t)n,
					     .payload_size = j->payload_sizes[index]};
		const char *why = NULL;
		if (sc->out_cap < v.out_size) {
			free(sc->out);
			sc->out = rsr_alloc_large(v.out_size);
			sc->out_cap = sc->out ? v.out_size : 0;
			if (!sc->out) {
				r = -ENOMEM;
				goto out;
			}
		}
		r = patch_run_frame(frame->p, &v, s->old ? s->old->p : NULL, s->old ? s->old->size : 0, sc->out,
				    read_new, j->nw, NULL, &why);
		if (r == 0 && memcmp(sc->out, j->nw->p + v.out_offset, v.out_size) != 0)
			r = RSR_E_DIGEST;
		if (r < 0) {
			if (r != -ENOMEM) {
				pthread_mutex_lock(&j->lock);
				snprintf(j->errmsg, sizeof(j->errmsg),
					 "chunk %u of input %zu does not reproduce the new image%s%s", c, si,
					 why ? ": " : "", why ? why : "");
				pthread_mutex_unlock(&j->lock);
				r = RSR_E_DIGEST;
			}
			goto out;
		}
	}
	r = advance(j, j->bounds[c + 1] - j->bounds[c]);
out:
	buf_free(payload);
	return r;
}

/* Cuts the output into chunks of about chunk_size bytes, never inside a deflate member in token form. */
static int make_bounds(const struct image *nw, const struct members *nm, const bool *handled, uint32_t chunk_size,
		       uint64_t **ret, uint32_t *ret_n)
{
	uint64_t cap = nw->size / chunk_size + 2, *b = malloc(cap * sizeof(uint64_t)), x = 0;
	size_t n = 0, mi = 0;

	if (!b)
		return -ENOMEM;
	b[n++] = 0;
	while (x < nw->size) {
		uint64_t e = RSR_MIN(x + chunk_size, nw->size);
		for (; mi < nm->n && nm->m[mi].off + nm->m[mi].len <= e; mi++)
			;
		if (mi < nm->n && handled[mi] && nm->m[mi].off < e)
			e = nm->m[mi].off + nm->m[mi].len;
		if (n == cap) {
			uint64_t *nb = realloc(b, (cap *= 2) * sizeof(uint64_t));
			if (!nb) {
				free(b);
				return -ENOMEM;
			}
			b = nb;
		}
		b[n++] = e;
		x = e;
	}
	*ret = b;
	*ret_n = (uint32_t)(n - 1);
	return 0;
}

static int write_patch(struct rsr_ctx *ctx, struct job *j, const char *path)
{
	struct buf h = {0};
	struct patch_header hdr = {0};
	uint8_t digest[32];
	uint64_t data_off = 0;
	struct rsr_atomic_file *af;
	int r;

	memcpy(hdr.magic, PATCH_MAGIC, 8);
	rsr_put_le32(hdr.version, j->version);
	rsr_put_le32(hdr.header_size, sizeof(hdr));
	rsr_put_le64(hdr.output_size, j->nw->size);
	memcpy(hdr.output_digest, j->nw->digest, 32);
	rsr_put_le32(hdr.n_inputs, j->sets[0].old ? (uint32_t)j->n_sets : 0);
	rsr_put_le32(hdr.n_chunks, j->n_chunks);
	rsr_put_le32(hdr.chunk_size, j->chunk_size);
	buf_put(&h, &hdr, sizeof(hdr));
	for (size_t s = 0; s < j->n_sets && j->sets[0].old; s++) {
		struct patch_input in = {0};
		memcpy(in.digest, j->sets[s].old->digest, 32);
		rsr_put_le64(in.size, j->sets[s].old->size);
		buf_put(&h, &in, sizeof(in));
	}
	for (uint32_t c = 0; c < j->n_chunks; c++) {
		struct patch_extent e = {0};
		rsr_put_le64(e.out_offset, j->bounds[c]);
		rsr_put_le32(e.out_size, (uint32_t)(j->bounds[c + 1] - j->bounds[c]));
		buf_put(&h, &e, sizeof(e));
	}
	for (size_t i = 0; i < j->n_sets * j->n_chunks; i++) {
		struct patch_chunk pc = {0};
		rsr_put_le64(pc.data_offset, data_off);
		rsr_put_le32(pc.comp_size, (uint32_t)j->frames[i].len);
		rsr_put_le32(pc.payload_size, j->payload_sizes[i]);
		buf_put(&h, &pc, sizeof(pc));
		data_off += j->frames[i].len;
	}
	if (h.oom) {
		buf_free(&h);
		return rsr_error(ctx, -ENOMEM, "out of memory");
	}
	{
		size_t n = j->n_sets * j->n_chunks;
		struct patch_piece *pc = malloc((n + 1) * sizeof(*pc));
		if (!pc) {
			buf_free(&h);
			return rsr_error(ctx, -ENOMEM, "out of memory");
		}
		pc[0] = (struct patch_piece){h.p + sizeof(hdr), h.len - sizeof(hdr)};
		for (size_t i = 0; i < n; i++)
			pc[i + 1] = (struct patch_piece){j->frames[i].p, j->frames[i].len};
		r = patch_digest((const struct patch_header *)h.p, pc, n + 1, digest);
		free(pc);
		if (r < 0) {
			buf_free(&h);
			return rsr_error(ctx, r, "out of memory");
		}
	}
	memcpy(h.p + offsetof(struct patch_header, patch_sha256), digest, 32);

	r = rsr_atomic_open(ctx, path, 0644, &af);
	if (r < 0) {
		buf_free(&h);
		return r;
	}
	r = rsr_write_all(af->fd, h.p, h.len);
	for (size_t i = 0; r == 0 && i < j->n_sets * j->n_chunks; i++)
		r = rsr_write_all(af->fd, j->frames[i].p, j->frames[i].len);
	buf_free(&h);
	if (r < 0) {
		rsr_atomic_abort(af);
		return rsr_error_errno(ctx, r, "%s: write", path);
	}
	return rsr_atomic_commit(ctx, af);
}

struct prep {
	struct job *j;
	struct image *olds;
	size_t n_olds;
	bool deflate;
};

/*
 * The first steps, in two rounds of independent tasks: block matching per
 * input and the new image's deflate streams; then the suffix array per input
 * (the longest task, so first), each old image's deflate streams and the
 * hash-tree search.
 */
static int prep_task(void *arg, size_t index, unsigned worker)
{
	struct prep *pr = arg;
	struct job *j = pr->j;

	if (index < pr->n_olds)
		return match_blocks(&j->sets[index], j->nw);
	return pr->deflate ? find_members(j->nw, j->new_members, true) : 0;
}

static int prep_task2(void *arg, size_t index, unsigned worker)
{
	struct prep *pr = arg;
	struct job *j = pr->j;

	if (index < pr->n_olds)
		return build_sa(&j->sets[index].m);
	index -= pr->n_olds;
	if (index < pr->n_olds)
		/* Old members are only references: decoding is all the patcher does with them. */
		return pr->deflate ? find_members(j->sets[index].old, &j->sets[index].old_members, false) : 0;
	return find_tree(j);
}

/* One patch: from each of olds (none: full replacement) to nw. */
static int create_one(struct rsr_ctx *ctx, struct image *olds, size_t n_olds, struct image *nw, const char *path,
		      const struct rsr_patch_create_opts *opts)
{
	struct members nm = {0};
	struct job j = {.ctx = ctx, .opts = opts, .nw = nw, .new_members = &nm};
	struct prep pr = {.j = &j, .olds = olds, .n_olds = n_olds, .deflate = n_olds && !opts->no_deflate};
	bool *handled = NULL;
	double t0 = now_ms();
	unsigned threads;
	int r;

	j.n_sets = n_olds ? n_olds : 1;
	j.sets = calloc(j.n_sets, sizeof(*j.sets));
	if (!j.sets) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	for (size_t s = 0; s < n_olds; s++)
		j.sets[s].old = &olds[s];
	r = rsr_parallel_for(rsr_threads_for(ctx, n_olds + 1), n_olds + 1, prep_task, &pr);
	if (r >= 0)
		r = rsr_parallel_for(rsr_threads_for(ctx, 2 * n_olds + 1), 2 * n_olds + 1, prep_task2, &pr);
	if (r < 0) {
		r = rsr_error(ctx, r, "%s: out of memory while matching", nw->path);
		goto out;
	}
	j.version = PATCH_VERSION_MIN;
	handled = calloc(nm.n + 1, 1);
	if (!handled) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	for (size_t s = 0; s < n_olds; s++) {
		struct set *st = &j.sets[s];
		st->ref_of = malloc((nm.n + 1) * sizeof(size_t));
		if (!st->ref_of) {
			r = rsr_error(ctx, -ENOMEM, "out of memory");
			goto out;
		}
		for (size_t i = 0; i < nm.n; i++) {
			st->ref_of[i] = pick_reference(&st->old_members, &nm.m[i]);
			if (st->ref_of[i] != SIZE_MAX && nm.m[i].len <= PATCH_MAX_CHUNK_OUT / 2)
				handled[i] = true;
			else
				st->ref_of[i] = SIZE_MAX;
		}
	}
	/*
	 * From here on only the token streams of the members diffed in token
	 * form are read: the anchors and the other streams go, before the chunk
	 * phase needs its memory.
	 */
	for (size_t i = 0; i < nm.n; i++) {
		free(steal_ptr(&nm.m[i].anchors));
		if (!handled[i])
			buf_free(&nm.m[i].tokens);
	}
	for (size_t s = 0; s < n_olds; s++) {
		struct members *om = &j.sets[s].old_members;
		bool *referenced = calloc(om->n + 1, 1);
		if (!referenced) {
			r = rsr_error(ctx, -ENOMEM, "out of memory");
			goto out;
		}
		for (size_t i = 0; i < nm.n; i++)
			if (j.sets[s].ref_of[i] != SIZE_MAX)
				referenced[j.sets[s].ref_of[i]] = true;
		for (size_t i = 0; i < om->n; i++) {
			free(steal_ptr(&om->m[i].anchors));
			if (!referenced[i])
				buf_free(&om->m[i].tokens);
		}
		free(referenced);
	}
	rsr_debug(ctx, "%s: %zu deflate streams; matching and suffix arrays done at %.0f ms", nw->path, nm.n,
		  now_ms() - t0);
	/*
	 * By default images up to 8 MiB are one chunk (one zstd context finds the
	 * most redundancy, e.g. between executables sharing code); larger ones
	 * are cut in quarters of at most 8 MiB, enough for a few threads. It
	 * depends only on the image, so that patches are reproducible.
	 */
	j.chunk_size = opts->chunk_size;
	if (!j.chunk_size)
		j.chunk_size = nw->size <= MAX_AUTO_CHUNK
				   ? MAX_AUTO_CHUNK
				   : (uint32_t)RSR_MIN((nw->size / 4 + BLOCK - 1) / BLOCK * BLOCK, MAX_AUTO_CHUNK);
	r = make_bounds(nw, &nm, handled, j.chunk_size, &j.bounds, &j.n_chunks);
	if (r < 0) {
		r = rsr_error(ctx, r, "out of memory");
		goto out;
	}
	j.frames = calloc(j.n_sets * j.n_chunks + 1, sizeof(*j.frames));
	j.payloads = calloc(j.n_sets * j.n_chunks + 1, sizeof(*j.payloads));
	j.payload_sizes = calloc(j.n_sets * j.n_chunks + 1, sizeof(uint32_t));
	if (!j.frames || !j.payloads || !j.payload_sizes) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	threads = rsr_threads_for(ctx, j.n_sets * j.n_chunks);
	pthread_mutex_init(&j.lock, NULL);
	/*
	 * Two phases: every chunk is planned first, which needs the suffix arrays
	 * and token streams; they are freed before the chunks are compressed and
	 * checked, which needs a zstd context and an output buffer per worker. So
	 * peak memory is the larger of the two, not their sum. The payloads kept
	 * in between are the operations, a fraction of the image for a patch
	 * worth making. A full replacement has nothing to free and is planned
	 * chunk by chunk in the second phase, so that it never holds a copy of
	 * the whole image.
	 */
	if (n_olds) {
		r = rsr_parallel_for(threads, j.n_sets * j.n_chunks, plan_job, &j);
		for (size_t s = 0; s < j.n_sets; s++) {
			struct image *old = j.sets[s].old;
			if (j.sets[s].projected)
				j.version = PATCH_VERSION; /* a chunk reads a projection */
			set_free(&j.sets[s]);
			j.sets[s] = (struct set){.old = old};
		}
		members_free(&nm);
		free(steal_ptr(&j.tree.tab));
	}
	if (r >= 0) {
		j.scratch = calloc(threads, sizeof(*j.scratch));
		r = j.scratch ? rsr_parallel_for(threads, j.n_sets * j.n_chunks, chunk_job, &j) : -ENOMEM;
	}
	pthread_mutex_destroy(&j.lock);
	for (unsigned t = 0; j.scratch && t < threads; t++) {
		ZSTD_freeCCtx(j.scratch[t].cctx);
		free(j.scratch[t].out);
	}
	free(steal_ptr(&j.scratch));
	if (r == RSR_E_CANCELED)
		goto out;
	if (r == RSR_E_LIMIT) {
		r = rsr_error(ctx, r, "%s: a chunk's operations exceed %u bytes", path, PATCH_MAX_CHUNK_PAYLOAD);
		goto out;
	}
	if (r == RSR_E_DIGEST) {
		/* A bug in the differ: refuse to write a patch that would not apply. */
		r = rsr_error(ctx, r, "%s: internal error: %s", path, j.errmsg);
		goto out;
	}
	if (r < 0) {
		r = rsr_error(ctx, r, "%s: out of memory while making the patch", path);
		goto out;
	}
	rsr_debug(ctx, "chunks done at %.0f ms", now_ms() - t0);
	r = write_patch(ctx, &j, path);
out:
	for (size_t s = 0; j.sets && s < j.n_sets; s++)
		set_free(&j.sets[s]);
	for (size_t i = 0; j.frames && i < j.n_sets * j.n_chunks; i++)
		buf_free(&j.frames[i]);
	for (size_t i = 0; j.payloads && i < j.n_sets * j.n_chunks; i++)
		buf_free(&j.payloads[i]);
	free(j.frames);
	free(j.payloads);
	free(j.payload_sizes);
	free(j.bounds);
	free(j.sets);
	free(handled);
	free(j.tree.tab);
	members_free(&nm);
	return r;
}

int rsr_patch_create(struct rsr_ctx *ctx, const char *const *olds, size_t n_olds, const char *new_path,
		     const char *patch_path, const char *reverse_path, const struct rsr_patch_create_opts *opts_in)
{
	struct rsr_patch_create_opts opts = {0};
	struct image nw = {0}, *imgs = NULL;
	int r;

	if (opts_in)
		opts = *opts_in;
	if (opts.level == 0)
		opts.level = DEFAULT_LEVEL;
	if (opts.level > (unsigned)ZSTD_maxCLevel())
		return rsr_error(ctx, -EINVAL, "compression level %u is out of range 1..%d", opts.level,
				 ZSTD_maxCLevel());
	if (opts.chunk_size && (opts.chunk_size < BLOCK || opts.chunk_size > PATCH_MAX_CHUNK_OUT / 2))
		return rsr_error(ctx, -EINVAL, "chunk size %u is out of range %u..%u", opts.chunk_size, BLOCK,
				 PATCH_MAX_CHUNK_OUT / 2);
	if (n_olds > PATCH_MAX_INPUTS)
		return rsr_error(ctx, RSR_E_LIMIT, "%zu inputs, more than the %u a patch may accept", n_olds,
				 PATCH_MAX_INPUTS);
	if (reverse_path && n_olds != 1)
		return rsr_error(ctx, -EINVAL, "a reverse patch needs exactly one input");
	for (int k = 0; k < 2; k++) {
		const char *o = k ? reverse_path : patch_path;
		struct stat ost;
		if (o && stat(o, &ost) == 0 && !S_ISREG(ost.st_mode))
			return rsr_error(ctx, -EINVAL, "%s: exists and is not a regular file", o);
	}
	imgs = calloc(n_olds + 1, sizeof(*imgs));
	if (!imgs)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	/* imgs[n_olds] is the new image while the digests are computed. */
	r = image_open(ctx, new_path, &imgs[n_olds]);
	for (size_t i = 0; r >= 0 && i < n_olds; i++)
		r = image_open(ctx, olds[i], &imgs[i]);
	for (size_t i = 0; r >= 0 && i <= n_olds; i++)
		if ((r = pieces_digest_mem(imgs[i].p, imgs[i].size, rsr_threads_for(ctx, pieces_count(imgs[i].size)),
					   imgs[i].digest)) < 0)
			r = rsr_error(ctx, r, "hashing the images: out of memory");
	nw = imgs[n_olds];
	imgs[n_olds] = (struct image){0};
	if (r < 0)
		goto out;
	if (nw.size > (uint64_t)PATCH_MAX_CHUNKS * (opts.chunk_size ? opts.chunk_size : MIN_AUTO_CHUNK) ||
	    (reverse_path &&
	     imgs[0].size > (uint64_t)PATCH_MAX_CHUNKS * (opts.chunk_size ? opts.chunk_size : MIN_AUTO_CHUNK))) {
		r = rsr_error(ctx, RSR_E_LIMIT, "%s: too large for chunks of %u bytes", new_path, opts.chunk_size);
		goto out;
	}
	for (size_t i = 0; i < n_olds; i++)
		for (size_t k = 0; k < i; k++)
			if (!memcmp(imgs[i].digest, imgs[k].digest, 32)) {
				r = rsr_error(ctx, -EINVAL, "%s and %s are the same image", olds[k], olds[i]);
				goto out;
			}
	r = create_one(ctx, imgs, n_olds, &nw, patch_path, &opts);
	if (r >= 0 && reverse_path)
		r = create_one(ctx, &nw, 1, &imgs[0], reverse_path, &opts);
out:
	image_close(&nw);
	for (size_t i = 0; i < n_olds; i++)
		image_close(&imgs[i]);
	free(imgs);
	return r;
}
