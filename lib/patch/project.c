/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Projections (docs/formats/patch.md, "Projections"): the input as the
 * patcher predicts it after a rebuild, with the addresses stored in an ELF
 * file's code and tables moved through an old-to-new address map. The
 * differ matches against the projected input and the patcher reads it
 * through the same functions, so both see the same bytes.
 *
 * Every rule is local to one 4 KiB block of the input, so that any range of
 * the projected input can be computed on its own: a chunk needs no other.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "format.h"

void proj_free(struct proj *pj)
{
	for (size_t i = 0; i < pj->n; i++) {
		free(pj->regions[i].ranges);
		free(pj->regions[i].steps);
	}
	free(pj->regions);
	pj->regions = NULL;
	pj->n = 0;
	pj->cache_valid = false;
}

#define BAD(msg)                                                                                                       \
	do {                                                                                                           \
		*why = (msg);                                                                                          \
		r = RSR_E_FORMAT;                                                                                      \
		goto fail;                                                                                             \
	} while (0)

int proj_parse(const uint8_t *p, size_t len, uint64_t in_size, struct proj *out, const char **why)
{
	struct rd rd = {.p = p, .len = len};
	struct proj pj = {0};
	uint64_t n, at = 0, total_steps = 0;
	int r = 0;

	if (rd_varint(&rd, &n) < 0 || n == 0 || n > PROJ_MAX_REGIONS)
		BAD("bad projection region count");
	pj.regions = calloc((size_t)n, sizeof(*pj.regions));
	if (!pj.regions)
		return -ENOMEM;
	for (uint64_t i = 0; i < n; i++) {
		struct proj_region *g = &pj.regions[i];
		uint64_t gap, span, nr, ns, rat, vat = 0;

		pj.n++;
		if (rd_varint(&rd, &gap) < 0 || rd_varint(&rd, &g->size) < 0 || rd_varint(&rd, &g->lo) < 0 ||
		    rd_varint(&rd, &span) < 0 || rd_varint(&rd, &nr) < 0)
			BAD("truncated projection region");
		if (gap > in_size - at || g->size == 0 || g->size > in_size - at - gap)
			BAD("projection region outside the input");
		g->start = at + gap;
		at = g->start + g->size;
		if (span == 0 || span > UINT64_MAX - g->lo)
			BAD("bad projection address range");
		g->hi = g->lo + span;
		if (nr == 0 || nr > PROJ_MAX_RANGES)
			BAD("bad projection range count");
		g->ranges = calloc((size_t)nr, sizeof(*g->ranges));
		if (!g->ranges) {
			r = -ENOMEM;
			goto fail;
		}
		rat = g->start;
		for (uint64_t k = 0; k < nr; k++) {
			struct proj_range *x = &g->ranges[k];
			uint64_t off;
			if (rd.pos >= rd.len)
				BAD("truncated projection range");
			x->kind = rd.p[rd.pos++];
			if (x->kind < PK_CODE_X86_64 || x->kind > PK_EHFRAME)
				BAD("unknown projection kind");
			if (rd_varint(&rd, &off) < 0 || rd_varint(&rd, &x->len) < 0 || rd_varint(&rd, &x->vaddr) < 0)
				BAD("truncated projection range");
			if (off > at - rat || x->len == 0 || x->len > at - rat - off)
				BAD("projection range outside its region");
			x->start = rat + off;
			rat = x->start + x->len;
			if (x->vaddr > UINT64_MAX - x->len)
				BAD("bad projection range address");
			g->n_ranges++;
		}
		if (rd_varint(&rd, &ns) < 0 || ns == 0 || ns > PROJ_MAX_STEPS - total_steps ||
		    ns > (rd.len - rd.pos) / 2)
			BAD("bad projection step count");
		total_steps += ns;
		g->steps = malloc((size_t)ns * sizeof(*g->steps));
		if (!g->steps) {
			r = -ENOMEM;
			goto fail;
		}
		for (uint64_t k = 0; k < ns; k++) {
			uint64_t dv;
			if (rd_varint(&rd, &dv) < 0 || rd_svarint(&rd, &g->steps[k].delta) < 0)
				BAD("truncated projection step");
			if ((k > 0 && dv == 0) || dv > UINT64_MAX - vat)
				BAD("projection steps out of order");
			vat += dv;
			g->steps[k].vaddr = vat;
			g->n_steps++;
		}
	}
	if (rd.pos != rd.len)
		BAD("unused bytes in a projection");
	proj_free(out);
	*out = pj;
	return 0;
fail:
	proj_free(&pj);
	return r;
}

void proj_encode(const struct proj *pj, struct buf *b)
{
	uint64_t at = 0;

	buf_varint(b, pj->n);
	for (size_t i = 0; i < pj->n; i++) {
		const struct proj_region *g = &pj->regions[i];
		uint64_t rat = g->start, vat = 0;
		buf_varint(b, g->start - at);
		buf_varint(b, g->size);
		buf_varint(b, g->lo);
		buf_varint(b, g->hi - g->lo);
		buf_varint(b, g->n_ranges);
		for (size_t k = 0; k < g->n_ranges; k++) {
			const struct proj_range *x = &g->ranges[k];
			buf_byte(b, x->kind);
			buf_varint(b, x->start - rat);
			buf_varint(b, x->len);
			buf_varint(b, x->vaddr);
			rat = x->start + x->len;
		}
		buf_varint(b, g->n_steps);
		for (size_t k = 0; k < g->n_steps; k++) {
			buf_varint(b, g->steps[k].vaddr - vat);
			buf_svarint(b, g->steps[k].delta);
			vat = g->steps[k].vaddr;
		}
		at = g->start + g->size;
	}
}

/* The shift of old address v: the delta of the last step at or below v, 0 below the first. */
static int64_t shift_of(const struct proj_region *g, uint64_t v)
{
	size_t lo = 0, hi = g->n_steps;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (g->steps[mid].vaddr <= v)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo ? g->steps[lo - 1].delta : 0;
}

static bool in_region(const struct proj_region *g, uint64_t v)
{
	return v >= g->lo && v < g->hi;
}

/* A pc- or base-relative 32-bit field at `q` (address vq) whose target is base + v. */
static void proj_rel32(const struct proj_region *g, const uint8_t *in, uint8_t *blk, uint64_t b0, uint64_t q,
		       uint64_t vq, uint64_t base)
{
	int64_t v = (int32_t)rsr_get_le32(in + q), dd, nv;
	uint64_t t = base + (uint64_t)v;

	if (!in_region(g, t))
		return;
	if (g->mask) {
		rsr_put_le32(blk + (q - b0), 0);
		return;
	}
	/*
	 * v + (d(t) - d(vq)), exactly: shifts come from the patch, and a step
	 * that overflows 64 bits can only lead to a result far out of range.
	 */
	if (!__builtin_sub_overflow(shift_of(g, t), shift_of(g, vq), &dd) && !__builtin_add_overflow(v, dd, &nv) &&
	    nv >= INT32_MIN && nv <= INT32_MAX)
		rsr_put_le32(blk + (q - b0), (uint32_t)(int32_t)nv);
}

/* An absolute 64-bit address at `q`. */
static void proj_abs64(const struct proj_region *g, const uint8_t *in, uint8_t *blk, uint64_t b0, uint64_t q)
{
	uint64_t v = rsr_get_le64(in + q);

	if (in_region(g, v))
		rsr_put_le64(blk + (q - b0), g->mask ? 0 : v + (uint64_t)shift_of(g, v));
}

/* ModRM-addressed opcodes whose memory operand is often RIP-relative. */
static bool rip_opcode(uint8_t c)
{
	static const uint8_t ops[] = {0x01, 0x03, 0x09, 0x0b, 0x13, 0x1b, 0x21, 0x23, 0x29, 0x2b, 0x31,
				      0x33, 0x38, 0x39, 0x3a, 0x3b, 0x63, 0x80, 0x81, 0x83, 0x84, 0x85,
				      0x87, 0x88, 0x89, 0x8a, 0x8b, 0x8d, 0xc6, 0xc7, 0xf6, 0xf7, 0xff};
	return memchr(ops, c, sizeof(ops)) != NULL;
}

uint64_t proj_code_field(const uint8_t *in, uint64_t p, uint64_t e)
{
	uint8_t c = in[p];
	uint64_t q = 0;

	if (c == 0xe8 || c == 0xe9)
		q = p + 1;
	else if (c == 0x0f && p + 1 < e && (in[p + 1] & 0xf0) == 0x80)
		q = p + 2;
	else if (c == 0x0f && p + 2 < e && in[p + 1] != 0x38 && in[p + 1] != 0x3a && (in[p + 2] & 0xc7) == 0x05)
		q = p + 3;
	else if (rip_opcode(c) && p + 1 < e && (in[p + 1] & 0xc7) == 0x05)
		q = p + 2;
	return q && q + 4 <= e ? q : 0;
}

/*
 * x86-64 code: the rel32 fields of calls, jumps, conditional jumps and
 * RIP-relative operands, found by a scan that starts afresh at the block.
 */
static void proj_code(const struct proj_region *g, const struct proj_range *x, const uint8_t *in, uint8_t *blk,
		      uint64_t b0, uint64_t s, uint64_t e)
{
	uint64_t p = s;

	while (p < e) {
		uint64_t q = proj_code_field(in, p, e);
		if (q) {
			uint64_t vq = x->vaddr + (q - x->start);
			uint64_t t = vq + 4 + (uint64_t)(int64_t)(int32_t)rsr_get_le32(in + q);
			if (in_region(g, t)) {
				proj_rel32(g, in, blk, b0, q, vq, vq + 4);
				p = q + 4;
				continue;
			}
		}
		p++;
	}
}

/* Fields of `width` bytes at x->start + first + stride*k that lie wholly in [s, e). */
static uint64_t first_field(const struct proj_range *x, uint64_t first, uint64_t stride, uint64_t s)
{
	uint64_t base = x->start + first;
	if (s <= base)
		return base;
	return base + (s - base + stride - 1) / stride * stride;
}

static void proj_range_block(const struct proj_region *g, const struct proj_range *x, const uint8_t *in, uint8_t *blk,
			     uint64_t b0, uint64_t b1)
{
	uint64_t s = RSR_MAX(b0, x->start), e = RSR_MIN(b1, x->start + x->len), end = x->start + x->len, q;

	switch (x->kind) {
	case PK_CODE_X86_64:
		proj_code(g, x, in, blk, b0, s, e);
		break;
	case PK_ABS64:
		for (q = first_field(x, 0, 8, s); q + 8 <= e; q += 8)
			proj_abs64(g, in, blk, b0, q);
		break;
	case PK_RELA64:
		/* Elf64_Rela: r_offset, r_info, r_addend; the addend is an address for RELATIVE and IRELATIVE. */
		for (q = first_field(x, 0, 24, s > 16 ? s - 16 : 0); q < e && q + 24 <= end; q += 24) {
			uint32_t type = rsr_get_le32(in + q + 8);
			if (q >= s && q + 8 <= e)
				proj_abs64(g, in, blk, b0, q);
			if ((type == 8 || type == 37) && q + 16 >= s && q + 24 <= e)
				proj_abs64(g, in, blk, b0, q + 16);
		}
		break;
	case PK_SYM64:
		/* Elf64_Sym: st_value at 8. */
		for (q = first_field(x, 8, 24, s); q + 8 <= e && q + 16 <= end; q += 24)
			proj_abs64(g, in, blk, b0, q);
		break;
	case PK_EHHDR:
		/* .eh_frame_hdr: the search table's fields, relative to the section. */
		for (q = first_field(x, 12, 4, s); q + 4 <= e; q += 4)
			proj_rel32(g, in, blk, b0, q, x->vaddr + (q - x->start), x->vaddr);
		break;
	case PK_EHFRAME:
		/* .eh_frame: each FDE's pc_begin, pc-relative. */
		for (q = x->start; q + 8 <= end && q < e;) {
			uint32_t n = rsr_get_le32(in + q);
			if (n < 8 || n == UINT32_MAX || n > end - q - 4)
				break;
			if (rsr_get_le32(in + q + 4) != 0 && q + 8 >= s && q + 12 <= e) {
				uint64_t vq = x->vaddr + (q + 8 - x->start);
				proj_rel32(g, in, blk, b0, q + 8, vq, vq);
			}
			q += 4 + (uint64_t)n;
		}
		break;
	}
}

void proj_block(const struct proj *pj, const uint8_t *in, uint64_t in_size, uint64_t b0, uint8_t *blk)
{
	uint64_t b1 = RSR_MIN(b0 + PROJ_BLOCK, in_size);

	memcpy(blk, in + b0, (size_t)(b1 - b0));
	for (size_t i = 0; i < pj->n; i++) {
		const struct proj_region *g = &pj->regions[i];
		if (g->start >= b1 || g->start + g->size <= b0)
			continue;
		for (size_t k = 0; k < g->n_ranges; k++) {
			const struct proj_range *x = &g->ranges[k];
			if (x->start < b1 && x->start + x->len > b0)
				proj_range_block(g, x, in, blk, b0, b1);
		}
	}
}

/* Whether input bytes [off, off + len) meet a region. */
static bool proj_touches(const struct proj *pj, uint64_t off, uint64_t len)
{
	for (size_t i = 0; i < pj->n; i++)
		if (pj->regions[i].start < off + len && pj->regions[i].start + pj->regions[i].size > off)
			return true;
	return false;
}

void proj_read(struct proj *pj, const uint8_t *in, uint64_t in_size, uint64_t off, uint64_t len, uint8_t *out)
{
	while (len > 0) {
		uint64_t b0 = off / PROJ_BLOCK * PROJ_BLOCK, n = RSR_MIN(len, b0 + PROJ_BLOCK - off);
		if (!proj_touches(pj, b0, PROJ_BLOCK)) {
			memcpy(out, in + off, (size_t)n);
		} else {
			if (!pj->cache_valid || pj->cache_off != b0) {
				proj_block(pj, in, in_size, b0, pj->cache);
				pj->cache_off = b0;
				pj->cache_valid = true;
			}
			memcpy(out, pj->cache + (off - b0), (size_t)n);
		}
		out += n;
		off += n;
		len -= n;
	}
}
