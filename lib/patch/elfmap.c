/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The differ's side of projections: finds the x86-64 ELF files of the old
 * and new images (at block boundaries, as EROFS stores file data), pairs
 * each changed new file with the old file it most resembles, derives the
 * old-to-new address map from matching content, and describes the old
 * file's code and address tables as a projection region (project.c).
 *
 * Matching content is found in the files' *masked* form, where every field
 * a projection would rewrite is zero: code whose calls and references moved
 * is then identical again. Windows of masked bytes are sampled by content
 * (the same content gives the same samples in both files), and a window
 * that occurs once in the old files and again in a new one is an anchor:
 * an old address and the new address of the same content.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "format.h"

#define ELF_MAX_SECTIONS 4096
#define WINDOW 32
#define SAMPLE_MASK 15 /* one window in 16 is sampled */
#define MIN_ANCHORS 8

struct esec {
	uint32_t type;
	uint32_t name_off; /* in the section name table */
	uint64_t flags, addr, off, size, entsize;
	char name[16]; /* enough for the names compared */
};

struct elf {
	uint64_t off, size; /* in the image */
	uint64_t lo, hi;    /* addresses of the allocated sections */
	struct esec *secs;
	size_t n_secs;
};

struct elfs {
	struct elf *e;
	size_t n;
};

/* Parses the ELF file that starts at img[off], defensively; false if it is not one we project. */
static bool parse_elf(const uint8_t *img, uint64_t size, uint64_t off, struct elf *e)
{
	const uint8_t *h = img + off;
	uint64_t shoff, end, room = size - off;
	unsigned shnum, shentsize, shstrndx;
	const struct esec *str;

	if (room < 64 || memcmp(h, "\177ELF", 4) != 0 || h[4] != 2 /* 64-bit */ || h[5] != 1 /* LSB */ ||
	    rsr_get_le16(h + 18) != 62 /* EM_X86_64 */)
		return false;
	shoff = rsr_get_le64(h + 40);
	shentsize = rsr_get_le16(h + 58);
	shnum = rsr_get_le16(h + 60);
	shstrndx = rsr_get_le16(h + 62);
	if (shentsize != 64 || shnum == 0 || shnum > ELF_MAX_SECTIONS || shstrndx >= shnum || shoff > room ||
	    (uint64_t)shnum * 64 > room - shoff)
		return false;
	*e = (struct elf){.off = off, .lo = UINT64_MAX};
	e->secs = calloc(shnum, sizeof(*e->secs));
	if (!e->secs)
		return false;
	end = shoff + (uint64_t)shnum * 64;
	for (unsigned i = 0; i < shnum; i++) {
		const uint8_t *s = h + shoff + (uint64_t)i * 64;
		struct esec *x = &e->secs[i];
		x->type = rsr_get_le32(s + 4);
		x->flags = rsr_get_le64(s + 8);
		x->addr = rsr_get_le64(s + 16);
		x->off = rsr_get_le64(s + 24);
		x->size = rsr_get_le64(s + 32);
		x->entsize = rsr_get_le64(s + 56);
		if (x->type != 8 /* NOBITS */ && x->type != 0) {
			if (x->off > room || x->size > room - x->off)
				goto bad;
			end = RSR_MAX(end, x->off + x->size);
		}
		if ((x->flags & 2) /* ALLOC */ && x->size && x->addr <= UINT64_MAX - x->size) {
			e->lo = RSR_MIN(e->lo, x->addr);
			e->hi = RSR_MAX(e->hi, x->addr + x->size);
		}
		x->name_off = rsr_get_le32(s);
	}
	str = &e->secs[shstrndx];
	for (unsigned i = 0; i < shnum; i++) {
		struct esec *x = &e->secs[i];
		uint32_t no = x->name_off;
		if (str->type == 3 && no < str->size) {
			uint64_t max = RSR_MIN(str->size - no, sizeof(x->name) - 1);
			const uint8_t *nm = h + str->off + no;
			for (uint64_t k = 0; k < max && nm[k]; k++)
				x->name[k] = (char)nm[k];
		}
	}
	if (e->lo >= e->hi)
		goto bad;
	e->n_secs = shnum;
	e->size = end;
	return true;
bad:
	free(e->secs);
	e->secs = NULL;
	return false;
}

static void elfs_free(struct elfs *es)
{
	for (size_t i = 0; i < es->n; i++)
		free(es->e[i].secs);
	free(es->e);
	*es = (struct elfs){0};
}

static int find_elfs(const uint8_t *img, uint64_t size, struct elfs *es)
{
	size_t cap = 0;

	for (uint64_t off = 0; off + 64 <= size; off += PROJ_BLOCK) {
		struct elf e;
		if (img[off] != 0x7f || !parse_elf(img, size, off, &e))
			continue;
		if (es->n == cap) {
			struct elf *n = realloc(es->e, (cap = cap ? 2 * cap : 16) * sizeof(*n));
			if (!n) {
				free(e.secs);
				return -ENOMEM;
			}
			es->e = n;
		}
		es->e[es->n++] = e;
		/* The next file starts after this one. */
		off += (e.size - 1) / PROJ_BLOCK * PROJ_BLOCK;
	}
	return 0;
}

/* The index of the file that holds image offset off (files are in image order), or SIZE_MAX. */
static size_t elf_at(const struct elfs *es, uint64_t off)
{
	size_t lo = 0, hi = es->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (es->e[mid].off + es->e[mid].size <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < es->n && es->e[lo].off <= off ? lo : SIZE_MAX;
}

/* The file offset (from the ELF's start) -> address of an allocated section's byte, or false. */
static bool addr_of(const struct elf *e, uint64_t foff, uint64_t *ret)
{
	for (size_t i = 0; i < e->n_secs; i++) {
		const struct esec *x = &e->secs[i];
		if ((x->flags & 2) && x->type != 8 && x->type != 0 && foff >= x->off && foff - x->off < x->size) {
			*ret = x->addr + (foff - x->off);
			return true;
		}
	}
	return false;
}

static int cmp_range(const void *a, const void *b)
{
	const struct proj_range *x = a, *y = b;
	return x->start < y->start ? -1 : x->start > y->start;
}

/* The projection ranges of an ELF file: its code and address tables. */
static size_t elf_ranges(const struct elf *e, struct proj_range *out)
{
	size_t n = 0, k = 0;

	for (size_t i = 0; i < e->n_secs && n < PROJ_MAX_RANGES; i++) {
		const struct esec *x = &e->secs[i];
		uint8_t kind = 0;
		if (x->type == 8 || x->type == 0 || !x->size)
			continue;
		if (x->type == 1 && (x->flags & 6) == 6) /* PROGBITS, ALLOC|EXECINSTR */
			kind = PK_CODE_X86_64;
		else if (x->type == 4 && x->entsize == 24) /* RELA */
			kind = PK_RELA64;
		else if ((x->type == 2 || x->type == 11) && x->entsize == 24) /* SYMTAB, DYNSYM */
			kind = PK_SYM64;
		else if (strcmp(x->name, ".eh_frame_hdr") == 0)
			kind = PK_EHHDR;
		else if (strcmp(x->name, ".eh_frame") == 0)
			kind = PK_EHFRAME;
		else if ((x->flags & 3) == 3 || x->type == 6 || x->type == 14 || x->type == 15 || x->type == 16)
			kind = PK_ABS64; /* writable data (.data.rel.ro, .got, .data), DYNAMIC, the init/fini arrays */
		if (!kind)
			continue;
		out[n++] = (struct proj_range){
		    .kind = kind, .start = e->off + x->off, .len = x->size, .vaddr = (x->flags & 2) ? x->addr : 0};
	}
	if (n)
		qsort(out, n, sizeof(*out), cmp_range);
	/* Sections do not overlap in a sane file; drop any that do. */
	for (size_t i = 0; i < n; i++)
		if (!k || out[i].start >= out[k - 1].start + out[k - 1].len)
			out[k++] = out[i];
	return k;
}

/* A projection region for ELF file e alone (steps left empty). */
static int elf_region(const struct elf *e, struct proj_region *g)
{
	struct proj_range r[PROJ_MAX_RANGES];
	size_t n = elf_ranges(e, r);

	*g = (struct proj_region){.start = e->off, .size = e->size, .lo = e->lo, .hi = e->hi};
	if (!n)
		return 0;
	g->ranges = malloc(n * sizeof(*r));
	if (!g->ranges)
		return -ENOMEM;
	memcpy(g->ranges, r, n * sizeof(*r));
	g->n_ranges = n;
	return 0;
}

/*
 * Which blocks of an image are searched: for the old image those no new
 * block is identical to, for the new image those identical to no old block.
 */
struct sel {
	const bool *used;   /* old */
	const int64_t *blk; /* new */
};

static bool selected(const struct sel *sl, uint64_t b)
{
	return sl->used ? !sl->used[b] : sl->blk[b] < 0;
}

/*
 * The masked form of ELF file e of img: a copy with every projected field
 * zero, in the selected blocks and the block after each (which windows
 * starting in them reach).
 */
static uint8_t *masked(const uint8_t *img, uint64_t img_size, const struct elf *e, const struct sel *sl)
{
	struct proj pj = {0};
	struct proj_region g;
	uint8_t *m;
	uint64_t b0 = e->off, end = e->off + e->size;

	if (elf_region(e, &g) < 0)
		return NULL;
	m = malloc(e->size + PROJ_BLOCK);
	if (!m) {
		free(g.ranges);
		return NULL;
	}
	g.mask = true;
	pj.regions = &g;
	pj.n = 1;
	/* e->off is block-aligned, so blocks of the image are blocks of the copy. */
	for (; b0 < end; b0 += PROJ_BLOCK) {
		uint64_t b = b0 / PROJ_BLOCK;
		if (selected(sl, b) || (b0 > e->off && selected(sl, b - 1)))
			proj_block(&pj, img, img_size, b0, m + (b0 - e->off));
	}
	free(g.ranges);
	return m;
}

#define HB 0x100000001b3ull

static uint64_t mix(uint64_t h)
{
	h ^= h >> 31;
	h *= 0x9e3779b97f4a7c15ull;
	return h ^ (h >> 29);
}

struct sample {
	uint64_t h;
	uint64_t off; /* in the image; UINT64_MAX: the window occurs more than once */
};

static int cmp_sample(const void *a, const void *b)
{
	const struct sample *x = a, *y = b;
	if (x->h != y->h)
		return x->h < y->h ? -1 : 1;
	return x->off < y->off ? -1 : x->off > y->off;
}

static bool distinct(const uint8_t *w)
{
	unsigned nz = 0;
	for (unsigned i = 0; i < WINDOW; i++)
		nz += w[i] != 0;
	return nz >= WINDOW / 2;
}

/* Calls fn for every sampled window of m that starts in [s, e), with its hash and image offset (base + start). */
static int sample_run(const uint8_t *m, uint64_t n, uint64_t s, uint64_t e, uint64_t base,
		      int (*fn)(void *arg, uint64_t h, uint64_t off), void *arg)
{
	uint64_t h = 0, pw = 1;

	if (s + WINDOW > n)
		return 0;
	for (unsigned i = 0; i < WINDOW; i++) {
		h = h * HB + m[s + i];
		pw *= HB;
	}
	for (uint64_t i = s;; i++) {
		uint64_t x = mix(h);
		if ((x & SAMPLE_MASK) == 0 && distinct(m + i)) {
			int r = fn(arg, x, base + i);
			if (r < 0)
				return r;
		}
		if (i + 1 >= e || i + WINDOW >= n)
			break;
		h = h * HB + m[i + WINDOW] - pw * m[i];
	}
	return 0;
}

/* sample_run() over each run of selected blocks of the masked file m of e. */
static int sample_windows(const uint8_t *m, const struct elf *e, const struct sel *sl,
			  int (*fn)(void *arg, uint64_t h, uint64_t off), void *arg)
{
	for (uint64_t s = 0; s < e->size;) {
		uint64_t x = s;
		int r;
		if (!selected(sl, (e->off + s) / PROJ_BLOCK)) {
			s += PROJ_BLOCK;
			continue;
		}
		while (x < e->size && selected(sl, (e->off + x) / PROJ_BLOCK))
			x += PROJ_BLOCK;
		r = sample_run(m, e->size, s, RSR_MIN(x, e->size), e->off, fn, arg);
		if (r < 0)
			return r;
		s = x;
	}
	return 0;
}

struct samples {
	struct sample *s;
	size_t n, cap;
};

static int add_sample(void *arg, uint64_t h, uint64_t off)
{
	struct samples *ss = arg;
	if (ss->n == ss->cap) {
		size_t cap = ss->cap ? 2 * ss->cap : 4096;
		struct sample *n = realloc(ss->s, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		ss->s = n;
		ss->cap = cap;
	}
	ss->s[ss->n++] = (struct sample){.h = h, .off = off};
	return 0;
}

struct anchor {
	uint64_t old_off, new_off; /* image offsets */
};

struct lookup {
	const struct samples *index;
	struct anchor *a;
	size_t n, cap;
};

static int add_anchor(struct lookup *lk, uint64_t old_off, uint64_t new_off);

static int find_anchor(void *arg, uint64_t h, uint64_t off)
{
	struct lookup *lk = arg;
	size_t lo = 0, hi = lk->index->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (lk->index->s[mid].h < h)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == lk->index->n || lk->index->s[lo].h != h || lk->index->s[lo].off == UINT64_MAX)
		return 0;
	return add_anchor(lk, lk->index->s[lo].off, off);
}

static int add_anchor(struct lookup *lk, uint64_t old_off, uint64_t new_off)
{
	if (lk->n == lk->cap) {
		size_t cap = lk->cap ? 2 * lk->cap : 4096;
		struct anchor *n = realloc(lk->a, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		lk->a = n;
		lk->cap = cap;
	}
	lk->a[lk->n++] = (struct anchor){.old_off = old_off, .new_off = new_off};
	return 0;
}

static int cmp_step(const void *a, const void *b)
{
	const struct proj_step *x = a, *y = b;
	return x->vaddr < y->vaddr ? -1 : x->vaddr > y->vaddr;
}

/*
 * The step map from anchors (old address, delta) sorted by address: a new
 * delta starts where two anchors in a row agree on it, so a stray match
 * does not cut a region. The first step covers everything below it.
 */
static int make_steps(struct proj_step *a, size_t n, struct proj_region *g)
{
	struct proj_step *out;
	size_t k = 0;
	int64_t cur = 0;
	bool have = false;

	if (n)
		qsort(a, n, sizeof(*a), cmp_step);
	out = malloc((n + 1) * sizeof(*out));
	if (!out)
		return -ENOMEM;
	for (size_t i = 0; i + 1 < n; i++) {
		if (have && a[i].delta == cur)
			continue;
		if (a[i + 1].delta != a[i].delta)
			continue;
		if (k && out[k - 1].vaddr >= a[i].vaddr) {
			out[k - 1].delta = a[i].delta;
		} else {
			out[k] = (struct proj_step){.vaddr = k ? a[i].vaddr : 0, .delta = a[i].delta};
			k++;
		}
		cur = a[i].delta;
		have = true;
	}
	if (!k) {
		free(out);
		return 0;
	}
	g->steps = out;
	g->n_steps = k;
	return 0;
}

/*
 * The projection of old image `old` towards new image `nw`: one region for
 * each changed ELF file of the new image that could be paired with an old
 * one. An empty projection when there is none.
 */
int elf_plan(const uint8_t *old, uint64_t old_size, const uint8_t *nw, uint64_t nw_size, const int64_t *blk,
	     const bool *used, struct proj *out)
{
	const struct sel so = {.used = used}, sn = {.blk = blk};
	struct elfs eo = {0}, en = {0};
	struct samples index = {0};
	struct proj pj = {0};
	bool *cand = NULL;
	size_t *votes = NULL;
	int r;

	*out = (struct proj){0};
	r = find_elfs(old, old_size, &eo);
	if (r >= 0)
		r = find_elfs(nw, nw_size, &en);
	if (r < 0 || !eo.n || !en.n)
		goto done;
	cand = calloc(eo.n, sizeof(bool));
	votes = calloc(eo.n, sizeof(size_t));
	pj.regions = calloc(RSR_MIN(en.n, (size_t)PROJ_MAX_REGIONS), sizeof(*pj.regions));
	if (!cand || !votes || !pj.regions) {
		r = -ENOMEM;
		goto done;
	}
	/* Old files whose every block is in the new image need no projection. */
	for (size_t i = 0; i < eo.n; i++)
		for (uint64_t b = eo.e[i].off / PROJ_BLOCK; b * PROJ_BLOCK < eo.e[i].off + eo.e[i].size && !cand[i];
		     b++)
			cand[i] = !used[b];
	for (size_t i = 0; i < eo.n; i++) {
		uint8_t *m;
		if (!cand[i])
			continue;
		m = masked(old, old_size, &eo.e[i], &so);
		if (!m) {
			r = -ENOMEM;
			goto done;
		}
		r = sample_windows(m, &eo.e[i], &so, add_sample, &index);
		free(m);
		if (r < 0)
			goto done;
	}
	if (index.n)
		qsort(index.s, index.n, sizeof(*index.s), cmp_sample);
	for (size_t i = 0; i < index.n;) {
		size_t k = i + 1;
		while (k < index.n && index.s[k].h == index.s[i].h)
			k++;
		if (k - i > 1)
			for (size_t x = i; x < k; x++)
				index.s[x].off = UINT64_MAX;
		i = k;
	}
	for (size_t k = 0; k < en.n && pj.n < PROJ_MAX_REGIONS; k++) {
		const struct elf *ne = &en.e[k];
		struct lookup lk = {.index = &index};
		struct proj_step *st = NULL;
		size_t best = SIZE_MAX, ns = 0;
		uint8_t *m;
		bool changed = false;

		/* A file all of whose blocks are in the old image is unchanged. */
		for (uint64_t b = ne->off / PROJ_BLOCK; b * PROJ_BLOCK < ne->off + ne->size && !changed; b++)
			changed = blk[b] < 0;
		if (!changed)
			continue;
		m = masked(nw, nw_size, ne, &sn);
		if (!m) {
			r = -ENOMEM;
			goto done;
		}
		r = sample_windows(m, ne, &sn, find_anchor, &lk);
		free(m);
		if (r < 0) {
			free(lk.a);
			goto done;
		}
		/*
		 * Blocks identical to old ones are anchors too (two each, as a step
		 * needs two in a row); they were not sampled.
		 */
		for (uint64_t b = ne->off / PROJ_BLOCK; (b + 1) * PROJ_BLOCK <= ne->off + ne->size && r >= 0; b++)
			for (uint64_t h = 0; h < PROJ_BLOCK && blk[b] >= 0 && r >= 0; h += PROJ_BLOCK / 2)
				r = add_anchor(&lk, (uint64_t)blk[b] + h, b * PROJ_BLOCK + h);
		if (r < 0) {
			free(lk.a);
			goto done;
		}
		/* The old file most anchors fall in is this one's old version. */
		memset(votes, 0, eo.n * sizeof(size_t));
		for (size_t a = 0; a < lk.n; a++) {
			size_t i = elf_at(&eo, lk.a[a].old_off);
			if (i != SIZE_MAX)
				votes[i]++;
		}
		for (size_t i = 0; i < eo.n; i++)
			if (cand[i] && votes[i] >= MIN_ANCHORS && (best == SIZE_MAX || votes[i] > votes[best]))
				best = i;
		if (best != SIZE_MAX)
			st = malloc(lk.n * sizeof(*st));
		for (size_t a = 0; st && a < lk.n; a++) {
			const struct elf *oe = &eo.e[best];
			uint64_t ov, nv;
			if (lk.a[a].old_off < oe->off || lk.a[a].old_off >= oe->off + oe->size)
				continue;
			if (addr_of(oe, lk.a[a].old_off - oe->off, &ov) && addr_of(ne, lk.a[a].new_off - ne->off, &nv))
				st[ns++] = (struct proj_step){.vaddr = ov, .delta = (int64_t)(nv - ov)};
		}
		free(lk.a);
		if (best == SIZE_MAX)
			continue;
		if (!st) {
			r = -ENOMEM;
			goto done;
		}
		r = elf_region(&eo.e[best], &pj.regions[pj.n]);
		if (r >= 0 && pj.regions[pj.n].n_ranges)
			r = make_steps(st, ns, &pj.regions[pj.n]);
		free(st);
		if (r < 0) {
			pj.n++;
			goto done;
		}
		/* A map the format cannot carry (a huge file with no shift in common) is not used. */
		if (pj.regions[pj.n].n_steps && pj.regions[pj.n].n_steps <= PROJ_MAX_STEPS &&
		    pj.regions[pj.n].n_ranges) {
			cand[best] = false; /* one new file per old one */
			pj.n++;
		} else {
			free(pj.regions[pj.n].ranges);
			free(pj.regions[pj.n].steps);
			pj.regions[pj.n] = (struct proj_region){0};
		}
	}
	/* Regions in image order, as the format wants them. */
	for (size_t i = 1; i < pj.n; i++)
		for (size_t k = i; k > 0 && pj.regions[k].start < pj.regions[k - 1].start; k--) {
			struct proj_region t = pj.regions[k];
			pj.regions[k] = pj.regions[k - 1];
			pj.regions[k - 1] = t;
		}
done:
	free(index.s);
	free(cand);
	free(votes);
	elfs_free(&eo);
	elfs_free(&en);
	if (r < 0 || !pj.n) {
		proj_free(&pj);
		return r < 0 ? r : 0;
	}
	*out = pj;
	return 0;
}
