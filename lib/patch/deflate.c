/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Bit-exact deflate re-encoding. deflate_decode() turns a raw deflate stream
 * into a token form that records every choice its encoder made (block types
 * and boundaries, Huffman code lengths and how they were run-length coded,
 * literals and matches, padding bits); deflate_encode() writes the same bits
 * back. The differ diffs token forms, which change little where the
 * uncompressed text changes little, and the patcher re-encodes them, so no
 * particular deflate implementation has to be reproduced.
 *
 * Token form (docs/formats/patch.md): per block a header byte (BFINAL | BTYPE
 * << 1); stored blocks: pad bits, u16 length, bytes; dynamic blocks: HLIT-257,
 * HDIST-1, HCLEN-4, the HCLEN+4 code length code lengths, then the code length
 * symbols (symbol byte, plus an extra-bits byte for 16, 17, 18); then
 * symbols: 0x00 n(varint) bytes = literals, 0x01 len-3 dist-1(le16) = match,
 * 0x02 = end of block. After the final block: the value of the padding bits.
 */
#include "format.h"

#define MAXBITS 15
#define NLITLEN 288
#define NDIST 32

static const uint16_t len_base[29] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,	15,  17,  19,  23, 27,
				      31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
static const uint8_t len_extra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
				      2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
static const uint16_t dist_base[30] = {1,    2,	   3,	 4,    5,    7,	   9,	 13,	17,    25,
				       33,   49,   65,	 97,   129,  193,  257,	 385,	513,   769,
				       1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
static const uint8_t dist_extra[30] = {0, 0, 0, 0, 1, 1, 2, 2,	3,  3,	4,  4,	5,  5,	6,
				       6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};
static const uint8_t clen_order[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};

/* ---- decoding ---- */

struct bitin {
	const uint8_t *p;
	size_t len, pos; /* pos: next byte */
	uint32_t bits;	 /* pending bits, LSB first */
	unsigned nbits;
	bool overrun;
};

static uint32_t getbits(struct bitin *b, unsigned n)
{
	uint32_t v;

	while (b->nbits < n) {
		if (b->pos >= b->len) {
			b->overrun = true;
			return 0;
		}
		b->bits |= (uint32_t)b->p[b->pos++] << b->nbits;
		b->nbits += 8;
	}
	v = b->bits & ((1u << n) - 1);
	b->bits >>= n;
	b->nbits -= n;
	return v;
}

#define FASTBITS 9

struct huff {
	uint16_t count[MAXBITS + 1];
	uint16_t symbol[NLITLEN];
	/* Codes of at most FASTBITS bits, indexed by the next FASTBITS input bits: symbol << 4 | length; 0: slow path.
	 */
	uint16_t fast[1u << FASTBITS];
};

/* Builds a canonical decoding table; -1 if over-subscribed (incomplete codes are allowed). */
static int huff_build(struct huff *h, const uint8_t *lens, unsigned n)
{
	uint16_t offs[MAXBITS + 1];
	int left = 1;

	memset(h->count, 0, sizeof(h->count));
	for (unsigned s = 0; s < n; s++)
		h->count[lens[s]]++;
	for (unsigned l = 1; l <= MAXBITS; l++) {
		left <<= 1;
		left -= h->count[l];
		if (left < 0)
			return -1;
	}
	offs[1] = 0;
	for (unsigned l = 1; l < MAXBITS; l++)
		offs[l + 1] = (uint16_t)(offs[l] + h->count[l]);
	for (unsigned s = 0; s < n; s++)
		if (lens[s])
			h->symbol[offs[lens[s]]++] = (uint16_t)s;
	/* Canonical codes, bit-reversed because deflate sends them most significant bit first. */
	memset(h->fast, 0, sizeof(h->fast));
	{
		unsigned code = 0, k = 0;
		for (unsigned l = 1; l <= FASTBITS; l++) {
			for (unsigned i = 0; i < h->count[l]; i++, k++, code++) {
				unsigned rev = 0;
				for (unsigned b = 0; b < l; b++)
					rev |= ((code >> b) & 1) << (l - 1 - b);
				for (unsigned fill = rev; fill < (1u << FASTBITS); fill += 1u << l)
					h->fast[fill] = (uint16_t)(h->symbol[k] << 4 | l);
			}
			code <<= 1;
		}
	}
	return 0;
}

static int huff_decode(struct bitin *b, const struct huff *h)
{
	int code = 0, first = 0, index = 0;
	uint16_t e;

	/* Fast path: enough bits buffered (or available) for a short code. */
	while (b->nbits < FASTBITS && b->pos < b->len) {
		b->bits |= (uint32_t)b->p[b->pos++] << b->nbits;
		b->nbits += 8;
	}
	e = h->fast[b->bits & ((1u << FASTBITS) - 1)];
	if (e && (e & 15) <= b->nbits) {
		b->bits >>= e & 15;
		b->nbits -= e & 15;
		return e >> 4;
	}
	for (unsigned l = 1; l <= MAXBITS; l++) {
		int count = h->count[l];
		code |= (int)getbits(b, 1);
		if (b->overrun)
			return -1;
		if (code - count < first)
			return h->symbol[index + (code - first)];
		index += count;
		first += count;
		first <<= 1;
		code <<= 1;
	}
	return -1;
}

static void fixed_lens(uint8_t *ll, uint8_t *dl)
{
	unsigned s = 0;
	for (; s < 144; s++)
		ll[s] = 8;
	for (; s < 256; s++)
		ll[s] = 9;
	for (; s < 280; s++)
		ll[s] = 7;
	for (; s < NLITLEN; s++)
		ll[s] = 8;
	for (s = 0; s < NDIST; s++)
		dl[s] = 5;
}

/* Reads a dynamic block header into lens, recording it; -1 if malformed. */
static int decode_dynamic_header(struct bitin *b, struct buf *t, uint8_t *ll, uint8_t *dl, unsigned *nlen,
				 unsigned *ndist)
{
	uint8_t clens[19] = {0}, lens[NLITLEN + NDIST];
	struct huff ch;
	unsigned hlit = getbits(b, 5), hdist = getbits(b, 5), hclen = getbits(b, 4), i = 0;

	if (b->overrun || hlit > 29 || hdist > 29)
		return -1;
	buf_byte(t, (uint8_t)hlit);
	buf_byte(t, (uint8_t)hdist);
	buf_byte(t, (uint8_t)hclen);
	for (unsigned k = 0; k < hclen + 4; k++) {
		clens[clen_order[k]] = (uint8_t)getbits(b, 3);
		buf_byte(t, clens[clen_order[k]]);
	}
	if (b->overrun || huff_build(&ch, clens, 19) < 0)
		return -1;
	*nlen = hlit + 257;
	*ndist = hdist + 1;
	while (i < *nlen + *ndist) {
		int sym = huff_decode(b, &ch);
		unsigned rep, extra;
		uint8_t val = 0;

		if (sym < 0)
			return -1;
		buf_byte(t, (uint8_t)sym);
		if (sym < 16) {
			lens[i++] = (uint8_t)sym;
			continue;
		}
		if (sym == 16) {
			if (i == 0)
				return -1;
			val = lens[i - 1];
			extra = getbits(b, 2);
			rep = 3 + extra;
		} else if (sym == 17) {
			extra = getbits(b, 3);
			rep = 3 + extra;
		} else {
			extra = getbits(b, 7);
			rep = 11 + extra;
		}
		if (b->overrun || i + rep > *nlen + *ndist)
			return -1;
		buf_byte(t, (uint8_t)extra);
		while (rep--)
			lens[i++] = val;
	}
	if (lens[256] == 0)
		return -1;
	memset(ll, 0, NLITLEN);
	memset(dl, 0, NDIST);
	memcpy(ll, lens, *nlen);
	memcpy(dl, lens + *nlen, *ndist);
	return 0;
}

static void flush_lits(struct buf *t, const uint8_t *lits, size_t *n)
{
	if (*n == 0)
		return;
	buf_byte(t, 0);
	buf_varint(t, *n);
	buf_put(t, lits, *n);
	*n = 0;
}

int deflate_decode(const uint8_t *in, size_t in_len, size_t max_tokens, struct buf *tokens, size_t *ret_used)
{
	struct bitin b = {.p = in, .len = in_len};
	struct buf t = {0};
	uint8_t ll[NLITLEN], dl[NDIST], lits[256];
	struct huff lh, dh;
	size_t nlits = 0;
	uint64_t produced = 0; /* uncompressed bytes, for the distance check */
	unsigned final;

	do {
		unsigned type;
		final = getbits(&b, 1);
		type = getbits(&b, 2);
		if (b.overrun || type == 3)
			goto bad;
		buf_byte(&t, (uint8_t)(final | type << 1));
		if (type == 0) {
			unsigned pad = b.nbits & 7, len, nlen;
			buf_byte(&t, (uint8_t)getbits(&b, pad));
			len = getbits(&b, 16);
			nlen = getbits(&b, 16);
			if (b.overrun || len != (~nlen & 0xffff) || b.nbits != 0 || len > in_len - b.pos)
				goto bad;
			rsr_put_le16(lits, (uint16_t)len);
			buf_put(&t, lits, 2);
			buf_put(&t, in + b.pos, len);
			b.pos += len;
			produced += len;
		} else {
			unsigned nlen = NLITLEN, ndist = NDIST;
			if (type == 1)
				fixed_lens(ll, dl);
			else if (decode_dynamic_header(&b, &t, ll, dl, &nlen, &ndist) < 0)
				goto bad;
			if (huff_build(&lh, ll, NLITLEN) < 0 || huff_build(&dh, dl, NDIST) < 0)
				goto bad;
			for (;;) {
				int sym = huff_decode(&b, &lh);
				if (sym < 0 || sym > 285)
					goto bad;
				if (sym < 256) {
					lits[nlits++] = (uint8_t)sym;
					produced++;
					if (nlits == sizeof(lits))
						flush_lits(&t, lits, &nlits);
					continue;
				}
				flush_lits(&t, lits, &nlits);
				if (sym == 256) {
					buf_byte(&t, 2);
					break;
				}
				{
					unsigned li = (unsigned)sym - 257, len, dist, di, ex;
					uint8_t m[4];
					ex = getbits(&b, len_extra[li]);
					len = len_base[li] + ex;
					/* 258 as code 284 plus 31 would not be re-encoded the same way. */
					if (li == 27 && ex == 31)
						goto bad;
					di = (unsigned)huff_decode(&b, &dh);
					if (b.overrun || di >= 30)
						goto bad;
					dist = dist_base[di] + getbits(&b, dist_extra[di]);
					if (b.overrun || dist > produced || len > 258)
						goto bad;
					m[0] = 1;
					m[1] = (uint8_t)(len - 3);
					rsr_put_le16(m + 2, (uint16_t)(dist - 1));
					buf_put(&t, m, 4);
					produced += len;
				}
			}
		}
		if (t.oom)
			goto oom;
		if (t.len > max_tokens)
			goto bad;
	} while (!final);
	/* Whole bytes read ahead by the decoder are not part of the stream; then the padding bits of the last byte. */
	while (b.nbits >= 8) {
		b.pos--;
		b.nbits -= 8;
	}
	b.bits &= (1u << b.nbits) - 1;
	buf_byte(&t, (uint8_t)getbits(&b, b.nbits & 7));
	if (t.oom)
		goto oom;
	buf_free(tokens);
	*tokens = t;
	*ret_used = b.pos;
	return 0;
oom:
	buf_free(&t);
	return -ENOMEM;
bad:
	buf_free(&t);
	return RSR_E_FORMAT;
}

/* ---- encoding ---- */

struct bitout {
	uint8_t *p;
	size_t len, pos;
	uint64_t bits;
	unsigned nbits;
	bool overrun;
};

static void putbits(struct bitout *o, uint32_t v, unsigned n)
{
	o->bits |= (uint64_t)v << o->nbits;
	o->nbits += n;
	while (o->nbits >= 8) {
		if (o->pos >= o->len) {
			o->overrun = true;
			o->nbits = 0;
			o->bits = 0;
			return;
		}
		o->p[o->pos++] = (uint8_t)o->bits;
		o->bits >>= 8;
		o->nbits -= 8;
	}
}

struct hcode {
	uint16_t code[NLITLEN]; /* bit-reversed, ready for putbits */
	uint8_t len[NLITLEN];
};

static void hcode_build(struct hcode *c, const uint8_t *lens, unsigned n)
{
	uint16_t count[MAXBITS + 1] = {0}, next[MAXBITS + 1];
	unsigned code = 0;

	for (unsigned s = 0; s < n; s++)
		count[lens[s]]++;
	count[0] = 0;
	for (unsigned l = 1; l <= MAXBITS; l++) {
		code = (code + count[l - 1]) << 1;
		next[l] = (uint16_t)code;
	}
	memset(c->len, 0, sizeof(c->len));
	for (unsigned s = 0; s < n; s++) {
		unsigned l = lens[s], v, r = 0;
		if (!l)
			continue;
		v = next[l]++;
		for (unsigned k = 0; k < l; k++)
			r |= ((v >> k) & 1) << (l - 1 - k);
		c->code[s] = (uint16_t)r;
		c->len[s] = (uint8_t)l;
	}
}

static int put_sym(struct bitout *o, const struct hcode *c, unsigned s)
{
	if (!c->len[s])
		return -1;
	putbits(o, c->code[s], c->len[s]);
	return 0;
}

int deflate_encode(const uint8_t *tokens, size_t len, uint8_t *out, size_t out_len)
{
	struct rd t = {.p = tokens, .len = len};
	struct bitout o = {.p = out, .len = out_len};
	struct hcode lc, dc;
	uint8_t ll[NLITLEN], dl[NDIST];
	unsigned final;

#define NEED(n)                                                                                                        \
	do {                                                                                                           \
		if (t.len - t.pos < (n))                                                                               \
			return RSR_E_FORMAT;                                                                           \
	} while (0)
	do {
		unsigned hdr, type;
		NEED(1);
		hdr = t.p[t.pos++];
		final = hdr & 1;
		type = hdr >> 1;
		if (type > 2)
			return RSR_E_FORMAT;
		putbits(&o, final, 1);
		putbits(&o, type, 2);
		if (type == 0) {
			unsigned pad = (8 - o.nbits) & 7, n;
			NEED(3);
			if (t.p[t.pos] >> pad)
				return RSR_E_FORMAT;
			putbits(&o, t.p[t.pos], pad);
			n = rsr_get_le16(t.p + t.pos + 1);
			t.pos += 3;
			putbits(&o, n, 16);
			putbits(&o, ~n & 0xffff, 16);
			NEED(n);
			if (o.overrun || n > o.len - o.pos)
				return RSR_E_FORMAT;
			memcpy(o.p + o.pos, t.p + t.pos, n);
			o.pos += n;
			t.pos += n;
			continue;
		}
		if (type == 1) {
			fixed_lens(ll, dl);
		} else {
			uint8_t clens[19] = {0}, lens[NLITLEN + NDIST];
			struct hcode cc;
			unsigned hlit, hdist, hclen, i = 0, n;
			NEED(3);
			hlit = t.p[t.pos];
			hdist = t.p[t.pos + 1];
			hclen = t.p[t.pos + 2];
			t.pos += 3;
			if (hlit > 29 || hdist > 29 || hclen > 15)
				return RSR_E_FORMAT;
			putbits(&o, hlit, 5);
			putbits(&o, hdist, 5);
			putbits(&o, hclen, 4);
			NEED(hclen + 4);
			for (unsigned k = 0; k < hclen + 4; k++) {
				uint8_t v = t.p[t.pos++];
				if (v > 7)
					return RSR_E_FORMAT;
				clens[clen_order[k]] = v;
				putbits(&o, v, 3);
			}
			hcode_build(&cc, clens, 19);
			n = hlit + 257 + hdist + 1;
			while (i < n) {
				unsigned sym, extra, rep;
				uint8_t val = 0;
				NEED(1);
				sym = t.p[t.pos++];
				if (sym > 18 || put_sym(&o, &cc, sym) < 0)
					return RSR_E_FORMAT;
				if (sym < 16) {
					lens[i++] = (uint8_t)sym;
					continue;
				}
				NEED(1);
				extra = t.p[t.pos++];
				if (sym == 16) {
					if (i == 0 || extra > 3)
						return RSR_E_FORMAT;
					val = lens[i - 1];
					putbits(&o, extra, 2);
					rep = 3 + extra;
				} else if (sym == 17) {
					if (extra > 7)
						return RSR_E_FORMAT;
					putbits(&o, extra, 3);
					rep = 3 + extra;
				} else {
					if (extra > 127)
						return RSR_E_FORMAT;
					putbits(&o, extra, 7);
					rep = 11 + extra;
				}
				if (i + rep > n)
					return RSR_E_FORMAT;
				while (rep--)
					lens[i++] = val;
			}
			memset(ll, 0, sizeof(ll));
			memset(dl, 0, sizeof(dl));
			memcpy(ll, lens, hlit + 257);
			memcpy(dl, lens + hlit + 257, hdist + 1);
		}
		hcode_build(&lc, ll, NLITLEN);
		hcode_build(&dc, dl, NDIST);
		for (;;) {
			unsigned tag;
			NEED(1);
			tag = t.p[t.pos++];
			if (tag == 0) {
				uint64_t n;
				if (rd_varint(&t, &n) < 0 || n > t.len - t.pos)
					return RSR_E_FORMAT;
				for (uint64_t k = 0; k < n; k++)
					if (put_sym(&o, &lc, t.p[t.pos + k]) < 0)
						return RSR_E_FORMAT;
				t.pos += (size_t)n;
			} else if (tag == 1) {
				unsigned mlen, dist, li = 28, di = 29;
				NEED(3);
				mlen = t.p[t.pos] + 3u;
				dist = rsr_get_le16(t.p + t.pos + 1) + 1u;
				t.pos += 3;
				if (dist > 32768)
					return RSR_E_FORMAT;
				if (mlen < 258)
					for (li = 0; li < 28 && len_base[li + 1] <= mlen; li++)
						;
				for (unsigned k = 1; k < 30; k++) /* dist >= 1 == dist_base[0] */
					if (dist_base[k] > dist) {
						di = k - 1;
						break;
					}
				if (put_sym(&o, &lc, 257 + li) < 0)
					return RSR_E_FORMAT;
				putbits(&o, mlen - len_base[li], len_extra[li]);
				if (put_sym(&o, &dc, di) < 0)
					return RSR_E_FORMAT;
				putbits(&o, dist - dist_base[di], dist_extra[di]);
			} else if (tag == 2) {
				if (put_sym(&o, &lc, 256) < 0)
					return RSR_E_FORMAT;
				break;
			} else {
				return RSR_E_FORMAT;
			}
			if (o.overrun)
				return RSR_E_FORMAT;
		}
	} while (!final);
	NEED(1);
	{
		unsigned pad = (8 - o.nbits) & 7;
		if (t.p[t.pos] >> pad)
			return RSR_E_FORMAT;
		putbits(&o, t.p[t.pos++], pad);
	}
#undef NEED
	if (o.overrun || o.nbits != 0 || o.pos != out_len || t.pos != t.len)
		return RSR_E_FORMAT;
	return 0;
}

size_t gzip_header_len(const uint8_t *p, size_t len)
{
	size_t i = 10;
	uint8_t flg;

	if (len < 18 || p[0] != 0x1f || p[1] != 0x8b || p[2] != 8)
		return 0;
	flg = p[3];
	if (flg & 0xe0)
		return 0;
	if (flg & 4) {
		if (len - i < 2)
			return 0;
		i += 2 + rsr_get_le16(p + i);
		if (i > len)
			return 0;
	}
	for (int f = 8; f <= 16; f <<= 1) {
		if (!(flg & f))
			continue;
		while (i < len && p[i])
			i++;
		if (i >= len)
			return 0;
		i++;
	}
	if (flg & 2)
		i += 2;
	return i < len ? i : 0;
}
