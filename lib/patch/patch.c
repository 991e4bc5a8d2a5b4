/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The patch parser and the chunk interpreter: validates the header and the
 * tables of a patch, and runs the operations of one chunk. Everything read
 * from a patch is checked before use, so that no patch reads outside its
 * input or writes outside its output.
 */
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <zstd.h>

#include "format.h"

void buf_put(struct buf *b, const void *data, size_t len)
{
	if (b->oom || len == 0)
		return;
	if (b->cap - b->len < len) {
		size_t cap = b->cap ? b->cap : 256;
		uint8_t *p;
		while (cap - b->len < len) {
			if (cap > SIZE_MAX / 2) {
				b->oom = true;
				return;
			}
			cap *= 2;
		}
		p = realloc(b->p, cap);
		if (!p) {
			b->oom = true;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, data, len);
	b->len += len;
}

void buf_varint(struct buf *b, uint64_t v)
{
	uint8_t tmp[10];
	size_t n = 0;

	while (v >= 0x80) {
		tmp[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	tmp[n++] = (uint8_t)v;
	buf_put(b, tmp, n);
}

void buf_svarint(struct buf *b, int64_t v)
{
	buf_varint(b, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
}

int patch_digest(const struct patch_header *h, const struct patch_piece *pieces, size_t n, uint8_t out[32])
{
	struct patch_header hcopy = *h;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned int dlen = 32;
	bool ok;

	memset(hcopy.patch_sha256, 0, 32);
	ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 && EVP_DigestUpdate(md, &hcopy, sizeof(hcopy)) == 1;
	for (size_t i = 0; ok && i < n; i++)
		ok = EVP_DigestUpdate(md, pieces[i].p, pieces[i].len) == 1;
	ok = ok && EVP_DigestFinal_ex(md, out, &dlen) == 1;
	EVP_MD_CTX_free(md);
	return ok ? 0 : -ENOMEM;
}

static int format_error(struct rsr_ctx *ctx, const char *why)
{
	return rsr_error(ctx, RSR_E_FORMAT, "not a valid rsr patch: %s", why);
}

int rsr_patch_load(struct rsr_ctx *ctx, const void *buf, size_t len, struct rsr_patch **ret_patch)
{
	const struct patch_header *h = buf;
	struct rsr_patch *p;
	uint64_t tables, off, sets_entries;
	uint8_t digest[32];
	uint64_t out_off = 0;

	if (len < sizeof(*h))
		return format_error(ctx, "shorter than its header");
	if (memcmp(h->magic, PATCH_MAGIC, 8) != 0)
		return format_error(ctx, "bad magic");
	if (rsr_get_le32(h->version) < PATCH_VERSION_MIN || rsr_get_le32(h->version) > PATCH_VERSION)
		return rsr_error(ctx, RSR_E_FORMAT,
				 "rsr patch format version %u is not supported (this reads versions %u to %u)",
				 rsr_get_le32(h->version), PATCH_VERSION_MIN, PATCH_VERSION);
	if (rsr_get_le32(h->header_size) != sizeof(*h))
		return format_error(ctx, "bad header size");

	/* The digest covers the whole file: a flipped bit or a truncation anywhere is caught here. */
	{
		struct patch_piece rest = {(const uint8_t *)buf + sizeof(*h), len - sizeof(*h)};
		if (patch_digest(h, &rest, 1, digest) < 0)
			return rsr_error(ctx, -ENOMEM, "out of memory");
		if (memcmp(digest, h->patch_sha256, 32) != 0)
			return format_error(ctx, "file corrupt or truncated (patch digest mismatch)");
	}

	p = calloc(1, sizeof(*p));
	if (!p)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	p->buf = buf;
	p->len = len;
	p->version = rsr_get_le32(h->version);
	p->output_size = rsr_get_le64(h->output_size);
	memcpy(p->output_digest, h->output_digest, 32);
	p->n_inputs = rsr_get_le32(h->n_inputs);
	p->n_sets = p->n_inputs ? p->n_inputs : 1;
	p->n_chunks = rsr_get_le32(h->n_chunks);
	p->chunk_size = rsr_get_le32(h->chunk_size);

	/* Counts are 32-bit, so only the last product can overflow. */
	sets_entries = (uint64_t)p->n_sets * p->n_chunks;
	if (rsr_mul_overflow(sets_entries, (uint64_t)sizeof(struct patch_chunk), &tables) ||
	    rsr_add_overflow(tables,
			     (uint64_t)p->n_inputs * sizeof(struct patch_input) +
				 (uint64_t)p->n_chunks * sizeof(struct patch_extent),
			     &tables) ||
	    tables > len - sizeof(*h)) {
		free(p);
		return format_error(ctx, "header corrupt or file truncated (tables extend past its end)");
	}
	p->data_start = sizeof(*h) + tables;

	/* Authentic but beyond what this reader accepts. */
	if (rsr_get_le32(h->flags) != 0) {
		free(p);
		return rsr_error(ctx, RSR_E_FORMAT, "rsr patch: unknown flags %#x", rsr_get_le32(h->flags));
	}
	if (p->n_inputs > PATCH_MAX_INPUTS || p->n_chunks > PATCH_MAX_CHUNKS) {
		uint32_t ni = p->n_inputs, nc = p->n_chunks;
		free(p);
		return rsr_error(ctx, RSR_E_LIMIT,
				 "rsr patch: %u inputs and %u chunks, more than the %u and %u allowed", ni, nc,
				 PATCH_MAX_INPUTS, PATCH_MAX_CHUNKS);
	}
	if (p->output_size > PATCH_MAX_OUTPUT) {
		uint64_t sz = p->output_size;
		free(p);
		return rsr_error(ctx, RSR_E_LIMIT,
				 "rsr patch: declares an output of %llu bytes, more than the %llu allowed",
				 (unsigned long long)sz, (unsigned long long)PATCH_MAX_OUTPUT);
	}
	off = sizeof(*h);
	p->inputs = (const struct patch_input *)((const uint8_t *)buf + off);
	off += (uint64_t)p->n_inputs * sizeof(struct patch_input);
	p->extents = (const struct patch_extent *)((const uint8_t *)buf + off);
	off += (uint64_t)p->n_chunks * sizeof(struct patch_extent);
	p->chunks = (const struct patch_chunk *)((const uint8_t *)buf + off);

	for (uint32_t i = 0; i < p->n_inputs; i++)
		if (rsr_get_le32(p->inputs[i].flags) != 0 || rsr_get_le32(p->inputs[i].reserved) != 0) {
			free(p);
			return format_error(ctx, "unknown input flags");
		}
	for (uint32_t c = 0; c < p->n_chunks; c++) {
		uint32_t sz = rsr_get_le32(p->extents[c].out_size);
		if (rsr_get_le64(p->extents[c].out_offset) != out_off || sz == 0 || sz > PATCH_MAX_CHUNK_OUT ||
		    rsr_get_le32(p->extents[c].reserved) != 0) {
			free(p);
			return format_error(ctx, "chunk extents do not tile the output");
		}
		out_off += sz;
	}
	if (out_off != p->output_size) {
		free(p);
		return format_error(ctx, "chunk extents do not add up to the output size");
	}
	for (uint64_t i = 0; i < sets_entries; i++) {
		uint64_t doff = rsr_get_le64(p->chunks[i].data_offset);
		uint32_t csz = rsr_get_le32(p->chunks[i].comp_size);
		if (doff > len - p->data_start || csz > len - p->data_start - doff) {
			free(p);
			return format_error(ctx, "chunk data extends past the end of the file");
		}
		if (rsr_get_le32(p->chunks[i].payload_size) > PATCH_MAX_CHUNK_PAYLOAD) {
			free(p);
			return rsr_error(ctx, RSR_E_LIMIT, "rsr patch: chunk operations exceed %u bytes",
					 PATCH_MAX_CHUNK_PAYLOAD);
		}
	}
	*ret_patch = p;
	return 0;
}

int rsr_patch_open(struct rsr_ctx *ctx, const char *path, struct rsr_patch **ret_patch)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct rsr_patch *p = NULL;
	struct stat st;
	void *map;
	int r;

	if (fd < 0)
		return rsr_error_errno(ctx, -errno, "patch '%s'", path);
	if (fstat(fd, &st) < 0)
		return rsr_error_errno(ctx, -errno, "patch '%s'", path);
	if (!S_ISREG(st.st_mode))
		return rsr_error(ctx, -EINVAL, "patch '%s': not a regular file", path);
	if (st.st_size == 0)
		return rsr_error(ctx, RSR_E_FORMAT, "patch '%s': empty file", path);
	map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (map == MAP_FAILED)
		return rsr_error_errno(ctx, -errno, "patch '%s': mmap", path);
	r = rsr_patch_load(ctx, map, (size_t)st.st_size, &p);
	if (r < 0 || !p) {
		munmap(map, (size_t)st.st_size);
		return rsr_error_prefix(ctx, r, "patch '%s'", path);
	}
	p->map = map;
	p->map_len = (size_t)st.st_size;
	*ret_patch = p;
	return 0;
}

void rsr_patch_free(struct rsr_patch *patch)
{
	if (!patch)
		return;
	if (patch->map)
		munmap(patch->map, patch->map_len);
	free(patch);
}

uint32_t rsr_patch_version(const struct rsr_patch *patch)
{
	return patch->version;
}
uint64_t rsr_patch_output_size(const struct rsr_patch *patch)
{
	return patch->output_size;
}
const uint8_t *rsr_patch_output_digest(const struct rsr_patch *patch)
{
	return patch->output_digest;
}
size_t rsr_patch_input_count(const struct rsr_patch *patch)
{
	return patch->n_inputs;
}
const uint8_t *rsr_patch_input_digest(const struct rsr_patch *patch, size_t i)
{
	return patch->inputs[i].digest;
}
uint64_t rsr_patch_input_size(const struct rsr_patch *patch, size_t i)
{
	return rsr_get_le64(patch->inputs[i].size);
}
size_t rsr_patch_chunk_count(const struct rsr_patch *patch)
{
	return patch->n_chunks;
}
uint32_t rsr_patch_chunk_size(const struct rsr_patch *patch)
{
	return patch->chunk_size;
}

void patch_chunk_get(const struct rsr_patch *p, uint32_t set, uint32_t chunk, struct patch_chunk_view *v)
{
	const struct patch_chunk *c = &p->chunks[(uint64_t)set * p->n_chunks + chunk];

	v->version = p->version;
	v->out_offset = rsr_get_le64(p->extents[chunk].out_offset);
	v->out_size = rsr_get_le32(p->extents[chunk].out_size);
	v->data_offset = p->data_start + rsr_get_le64(c->data_offset);
	v->comp_size = rsr_get_le32(c->comp_size);
	v->payload_size = rsr_get_le32(c->payload_size);
}

/* The state of one run of operations: streams of the payload and the target. */
struct exec {
	struct rd ctrl, runs, diff, lit;
	uint64_t zleft, bleft; /* of the current run: zero differences, then explicit ones */
	struct rsr_patch_stats *stats;
	const char *why;
	bool dry;	    /* only decode and check bounds: no input, no output */
	bool projections;   /* version 3: OP_PROJECT, OP_PCOPY and OP_PADD are allowed */
	uint64_t chunk_off; /* output offset of the chunk */
	uint8_t salt[PATCH_MAX_SALT];
	size_t salt_len;
	struct deferred *defs; /* OP_HASH, evaluated after the other operations */
	size_t n_defs, cap_defs;
	patch_fill_fn fill; /* identity copies are left to it */
	void *fill_arg;
	struct patch_range *ids;
	size_t n_ids, cap_ids;
	struct proj *proj; /* set by OP_PROJECT; NULL until then */
	uint8_t *pbuf;	   /* PROJ_BLOCK bytes: projected input for OP_PADD */
};

/* Records an identity copy of n bytes at chunk offset o, merged with the one before if adjacent. */
static int add_identity(struct exec *e, uint64_t o, uint64_t n)
{
	if (e->n_ids && e->ids[e->n_ids - 1].off + e->ids[e->n_ids - 1].len == o) {
		e->ids[e->n_ids - 1].len += n;
		return 0;
	}
	if (e->n_ids == e->cap_ids) {
		size_t cap = e->cap_ids ? e->cap_ids * 2 : 64;
		struct patch_range *ids = realloc(e->ids, cap * sizeof(*ids));
		if (!ids)
			return -ENOMEM;
		e->ids = ids;
		e->cap_ids = cap;
	}
	e->ids[e->n_ids++] = (struct patch_range){.off = o, .len = n};
	return 0;
}

struct deferred {
	uint64_t pos; /* in the chunk */
	uint64_t src; /* absolute output offset */
	uint64_t count;
	uint8_t salt[PATCH_MAX_SALT];
	size_t salt_len;
};

#define FAIL(e, msg)                                                                                                   \
	do {                                                                                                           \
		(e)->why = (msg);                                                                                      \
		return RSR_E_FORMAT;                                                                                   \
	} while (0)

static int run_ops(struct exec *e, const uint8_t *in, uint64_t in_size, int64_t pos, uint8_t *out, uint64_t out_size,
		   bool nested);

/*
 * out[0..n) = in[0..n) + the next n differences. Differences are run-length
 * coded: pairs of (zero differences, explicit differences) from the runs
 * stream, the explicit ones from the diff stream. In a dry run in and out are NULL.
 */
static int add_diff(struct exec *e, const uint8_t *in, uint8_t *out, uint64_t n)
{
	while (n > 0) {
		uint64_t m;
		if (e->zleft == 0 && e->bleft == 0) {
			if (rd_varint(&e->runs, &e->zleft) < 0 || rd_varint(&e->runs, &e->bleft) < 0)
				FAIL(e, "difference runs too short");
			if (e->bleft > e->diff.len - e->diff.pos)
				FAIL(e, "diff stream too short");
			continue;
		}
		if (e->zleft > 0) {
			m = RSR_MIN(e->zleft, n);
			if (out)
				memcpy(out, in, (size_t)m);
			e->zleft -= m;
		} else {
			const uint8_t *d = e->diff.p + e->diff.pos;
			m = RSR_MIN(e->bleft, n);
			if (out)
				for (size_t i = 0; i < (size_t)m; i++)
					out[i] = (uint8_t)(in[i] + d[i]);
			e->bleft -= m;
			e->diff.pos += (size_t)m;
		}
		n -= m;
		if (out) {
			out += m;
			in += m;
		}
	}
	return 0;
}

static int run_deflate(struct exec *e, const uint8_t *in, uint64_t in_size, uint8_t *out, uint64_t out_room,
		       uint64_t *ret_len)
{
	uint64_t ref_off, ref_len, out_len, tok_len;
	struct buf ref = {0};
	uint8_t *tok;
	int r;

	if (rd_varint(&e->ctrl, &ref_off) < 0 || rd_varint(&e->ctrl, &ref_len) < 0 ||
	    rd_varint(&e->ctrl, &out_len) < 0 || rd_varint(&e->ctrl, &tok_len) < 0)
		FAIL(e, "truncated deflate operation");
	if (ref_off > in_size || ref_len > in_size - ref_off)
		FAIL(e, "deflate reference outside the input");
	if (out_len > out_room)
		FAIL(e, "deflate output past the end of the chunk");
	if (tok_len > PATCH_MAX_DEFLATE_RAW)
		FAIL(e, "deflate tokens too large");
	if (e->dry) {
		struct rsr_patch_stats *st = e->stats;
		e->stats = NULL; /* the token operations are counted as the deflate stream's output */
		r = run_ops(e, NULL, PATCH_MAX_DEFLATE_RAW, 0, NULL, tok_len, true);
		e->stats = st;
		if (r == 0 && e->stats) {
			e->stats->deflate_ops++;
			e->stats->deflate_bytes += out_len;
		}
		*ret_len = out_len;
		return r;
	}
	if (ref_len > 0) {
		size_t used;
		r = deflate_decode(in + ref_off, (size_t)ref_len, PATCH_MAX_DEFLATE_RAW, &ref, &used);
		if (r == -ENOMEM)
			return r;
		if (r < 0 || used != ref_len) {
			buf_free(&ref);
			FAIL(e, "deflate reference in the input does not decode");
		}
	}
	tok = malloc(tok_len ? (size_t)tok_len : 1);
	if (!tok) {
		buf_free(&ref);
		return -ENOMEM;
	}
	{
		struct rsr_patch_stats *st = e->stats;
		e->stats = NULL;
		r = run_ops(e, ref.p, ref.len, 0, tok, tok_len, true);
		e->stats = st;
	}
	buf_free(&ref);
	if (r == 0 && deflate_encode(tok, (size_t)tok_len, out, (size_t)out_len) < 0) {
		e->why = "deflate tokens do not encode to the recorded length";
		r = RSR_E_FORMAT;
	}
	free(tok);
	if (r == 0) {
		if (e->stats) {
			e->stats->deflate_ops++;
			e->stats->deflate_bytes += out_len;
		}
		*ret_len = out_len;
	}
	return r;
}

static int run_ops(struct exec *e, const uint8_t *in, uint64_t in_size, int64_t pos, uint8_t *out, uint64_t out_size,
		   bool nested)
{
	uint64_t o = 0;

	for (;;) {
		uint8_t op;
		uint64_t n = 0;
		int64_t seek;

		if (e->ctrl.pos >= e->ctrl.len) {
			if (nested)
				FAIL(e, "deflate operations not ended");
			break;
		}
		op = e->ctrl.p[e->ctrl.pos++];
		switch (op) {
		case OP_COPY:
		case OP_ADD:
		case OP_PCOPY:
		case OP_PADD:
			if (rd_svarint(&e->ctrl, &seek) < 0 || rd_varint(&e->ctrl, &n) < 0)
				FAIL(e, "truncated operation");
			if ((op == OP_PCOPY || op == OP_PADD) && (nested || !e->proj))
				FAIL(e, "projected operation without a projection");
			if ((seek > 0 && (uint64_t)seek > in_size) || (seek < 0 && seek < -(int64_t)in_size))
				FAIL(e, "seek outside the input");
			pos += seek;
			if (pos < 0 || (uint64_t)pos > in_size || n > in_size - (uint64_t)pos)
				FAIL(e, "read outside the input");
			if (n > out_size - o)
				FAIL(e, "write past the end of the chunk");
			if (e->dry) {
				bool copy = op == OP_COPY || op == OP_PCOPY;
				if (!copy && add_diff(e, NULL, NULL, n) < 0)
					return RSR_E_FORMAT;
				if (e->stats) {
					*(copy ? &e->stats->copy_ops : &e->stats->add_ops) += 1;
					*(copy ? &e->stats->copy_bytes : &e->stats->add_bytes) += n;
				}
			} else if (n == 0) {
				/* nothing to move (and `in` may be NULL) */
			} else if (op == OP_COPY && e->fill && !nested && (uint64_t)pos == e->chunk_off + o) {
				if (add_identity(e, o, n) < 0)
					return -ENOMEM;
			} else if (op == OP_COPY) {
				memcpy(out + o, in + pos, (size_t)n);
				if (e->stats) {
					e->stats->copy_ops++;
					e->stats->copy_bytes += n;
				}
			} else if (op == OP_PCOPY) {
				proj_read(e->proj, in, in_size, (uint64_t)pos, n, out + o);
			} else if (op == OP_PADD) {
				for (uint64_t k = 0; k < n;) {
					uint64_t m = RSR_MIN(n - k, PROJ_BLOCK);
					proj_read(e->proj, in, in_size, (uint64_t)pos + k, m, e->pbuf);
					if (add_diff(e, e->pbuf, out + o + k, m) < 0)
						return RSR_E_FORMAT;
					k += m;
				}
			} else {
				if (add_diff(e, in + pos, out + o, n) < 0)
					return RSR_E_FORMAT;
				if (e->stats) {
					e->stats->add_ops++;
					e->stats->add_bytes += n;
				}
			}
			pos += (int64_t)n;
			o += n;
			break;
		case OP_LITERAL:
			if (rd_varint(&e->ctrl, &n) < 0)
				FAIL(e, "truncated operation");
			if (n > out_size - o)
				FAIL(e, "write past the end of the chunk");
			if (n > e->lit.len - e->lit.pos)
				FAIL(e, "literal stream too short");
			if (!e->dry && n > 0)
				memcpy(out + o, e->lit.p + e->lit.pos, (size_t)n);
			e->lit.pos += (size_t)n;
			o += n;
			if (e->stats) {
				e->stats->literal_ops++;
				e->stats->literal_bytes += n;
			}
			break;
		case OP_DEFLATE: {
			int r;
			if (nested)
				FAIL(e, "nested deflate operation");
			r = run_deflate(e, in, in_size, e->dry ? NULL : out + o, out_size - o, &n);
			if (r < 0)
				return r;
			o += n;
			break;
		}
		case OP_PROJECT: {
			int r;
			if (!e->projections)
				FAIL(e, "unknown operation");
			if (nested || rd_varint(&e->ctrl, &n) < 0 || n > e->ctrl.len - e->ctrl.pos)
				FAIL(e, "bad projection operation");
			if (!e->proj) {
				e->proj = calloc(1, sizeof(*e->proj));
				e->pbuf = malloc(PROJ_BLOCK);
				if (!e->proj || !e->pbuf)
					return -ENOMEM;
			}
			r = proj_parse(e->ctrl.p + e->ctrl.pos, (size_t)n, in_size, e->proj, &e->why);
			if (r < 0)
				return r;
			e->ctrl.pos += (size_t)n;
			break;
		}
		case OP_SALT:
			if (nested || rd_varint(&e->ctrl, &n) < 0 || n > PATCH_MAX_SALT ||
			    n > e->ctrl.len - e->ctrl.pos)
				FAIL(e, "bad salt operation");
			memcpy(e->salt, e->ctrl.p + e->ctrl.pos, (size_t)n);
			e->salt_len = (size_t)n;
			e->ctrl.pos += (size_t)n;
			break;
		case OP_HASH: {
			uint64_t src, end, chunk_end = e->chunk_off + out_size;
			if (nested || rd_varint(&e->ctrl, &src) < 0 || rd_varint(&e->ctrl, &n) < 0)
				FAIL(e, "bad hash operation");
			if (n == 0 || n > (out_size - o) / 32)
				FAIL(e, "hashes past the end of the chunk");
			/* Sources: whole blocks, all before the chunk or all inside it. */
			if (src > chunk_end || n > (chunk_end - src) / HASH_BLOCK)
				FAIL(e, "hash source outside the output so far");
			end = src + n * HASH_BLOCK;
			if (src < e->chunk_off && end > e->chunk_off)
				FAIL(e, "hash source straddles the chunk start");
			if (e->n_defs == e->cap_defs) {
				size_t cap = e->cap_defs ? 2 * e->cap_defs : 16;
				struct deferred *d = realloc(e->defs, cap * sizeof(*d));
				if (!d)
					return -ENOMEM;
				e->defs = d;
				e->cap_defs = cap;
			}
			e->defs[e->n_defs] =
			    (struct deferred){.pos = o, .src = src, .count = n, .salt_len = e->salt_len};
			memcpy(e->defs[e->n_defs].salt, e->salt, e->salt_len);
			e->n_defs++;
			if (e->stats) {
				e->stats->hash_ops++;
				e->stats->hash_bytes += n * 32;
			}
			if (!e->dry)
				memset(out + o, 0, (size_t)n * 32);
			o += n * 32;
			break;
		}
		case OP_END:
			if (!nested)
				FAIL(e, "end operation outside a deflate operation");
			if (o != out_size)
				FAIL(e, "deflate tokens shorter than recorded");
			return 0;
		default:
			FAIL(e, "unknown operation");
		}
	}
	if (o != out_size)
		FAIL(e, "operations do not fill the chunk");
	return 0;
}

/* Evaluates the deferred hashes, last first (so a hash tree stored top level first is built bottom up). */
static int run_hashes(struct exec *e, uint8_t *out, patch_read_prior_fn read_prior, void *read_arg)
{
	EVP_MD_CTX *md = NULL;
	uint8_t *blk = NULL;
	int r = 0;

	if (e->n_defs == 0)
		return 0;
	md = EVP_MD_CTX_new();
	blk = malloc(HASH_BLOCK);
	if (!md || !blk) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t k = e->n_defs; k-- > 0;) {
		const struct deferred *d = &e->defs[k];
		for (uint64_t i = d->count; i-- > 0;) {
			uint64_t src = d->src + i * HASH_BLOCK;
			const uint8_t *b;
			unsigned int dlen = 32;
			if (src < e->chunk_off) {
				if (!read_prior) {
					e->why = "hash source in an earlier chunk";
					r = RSR_E_FORMAT;
					goto out;
				}
				r = read_prior(read_arg, src, blk, HASH_BLOCK);
				if (r < 0)
					goto out;
				b = blk;
			} else {
				b = out + (src - e->chunk_off);
			}
			if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1 ||
			    EVP_DigestUpdate(md, d->salt, d->salt_len) != 1 ||
			    EVP_DigestUpdate(md, b, HASH_BLOCK) != 1 ||
			    EVP_DigestFinal_ex(md, out + d->pos + 32 * i, &dlen) != 1) {
				r = -ENOMEM;
				goto out;
			}
		}
	}
out:
	EVP_MD_CTX_free(md);
	free(blk);
	return r;
}

static int run_frame(const uint8_t *frame, const struct patch_chunk_view *vp, const uint8_t *in, uint64_t in_size,
		     uint8_t *out, patch_read_prior_fn read_prior, void *read_arg, struct rsr_patch_stats *stats,
		     patch_fill_fn fill, void *fill_arg, const char **why);

int patch_run_chunk(const struct rsr_patch *p, uint32_t set, uint32_t chunk, const uint8_t *in, uint64_t in_size,
		    uint8_t *out, patch_read_prior_fn read_prior, void *read_arg, struct rsr_patch_stats *stats,
		    const char **why)
{
	struct patch_chunk_view v;

	patch_chunk_get(p, set, chunk, &v);
	return run_frame(p->buf + v.data_offset, &v, in, in_size, out, read_prior, read_arg, stats, NULL, NULL, why);
}

int patch_run_chunk_fill(const struct rsr_patch *p, uint32_t set, uint32_t chunk, const uint8_t *in, uint64_t in_size,
			 uint8_t *out, patch_read_prior_fn read_prior, void *read_arg, patch_fill_fn fill,
			 void *fill_arg, const char **why)
{
	struct patch_chunk_view v;

	patch_chunk_get(p, set, chunk, &v);
	return run_frame(p->buf + v.data_offset, &v, in, in_size, out, read_prior, read_arg, NULL, fill, fill_arg, why);
}

int patch_run_frame(const uint8_t *frame, const struct patch_chunk_view *vp, const uint8_t *in, uint64_t in_size,
		    uint8_t *out, patch_read_prior_fn read_prior, void *read_arg, struct rsr_patch_stats *stats,
		    const char **why)
{
	return run_frame(frame, vp, in, in_size, out, read_prior, read_arg, stats, NULL, NULL, why);
}

static int run_frame(const uint8_t *frame, const struct patch_chunk_view *vp, const uint8_t *in, uint64_t in_size,
		     uint8_t *out, patch_read_prior_fn read_prior, void *read_arg, struct rsr_patch_stats *stats,
		     patch_fill_fn fill, void *fill_arg, const char **why)
{
	struct patch_chunk_view v = *vp;
	struct exec e = {.stats = stats,
			 .dry = out == NULL,
			 .projections = v.version >= 3,
			 .fill = out ? fill : NULL,
			 .fill_arg = fill_arg};
	struct rd hdr;
	uint64_t lens[4], rest;
	unsigned long long fsz;
	uint8_t *payload;
	size_t n;
	int r;

	fsz = ZSTD_getFrameContentSize(frame, v.comp_size);
	if (fsz != v.payload_size) {
		*why = "chunk data is not a zstd frame of the recorded size";
		return RSR_E_FORMAT;
	}
	payload = malloc(v.payload_size ? v.payload_size : 1);
	if (!payload)
		return -ENOMEM;
	n = ZSTD_decompress(payload, v.payload_size, frame, v.comp_size);
	if (ZSTD_isError(n) || n != v.payload_size) {
		free(payload);
		*why = "chunk data corrupt (zstd)";
		return RSR_E_FORMAT;
	}
	hdr = (struct rd){.p = payload, .len = n};
	for (int i = 0; i < 4; i++)
		if (rd_varint(&hdr, &lens[i]) < 0) {
			free(payload);
			*why = "truncated chunk header";
			return RSR_E_FORMAT;
		}
	rest = n - hdr.pos;
	for (int i = 0; i < 4; i++) {
		if (lens[i] > rest || (i == 3 && lens[i] != rest)) {
			free(payload);
			*why = "chunk stream lengths do not add up";
			return RSR_E_FORMAT;
		}
		rest -= lens[i];
	}
	e.ctrl = (struct rd){.p = payload + hdr.pos, .len = (size_t)lens[0]};
	e.runs = (struct rd){.p = e.ctrl.p + lens[0], .len = (size_t)lens[1]};
	e.diff = (struct rd){.p = e.runs.p + lens[1], .len = (size_t)lens[2]};
	e.lit = (struct rd){.p = e.diff.p + lens[2], .len = (size_t)lens[3]};
	if (stats) {
		stats->compressed_bytes += v.comp_size;
		stats->payload_bytes += v.payload_size;
	}
	e.chunk_off = v.out_offset;
	r = run_ops(&e, in, in_size, (int64_t)RSR_MIN(v.out_offset, in_size), out, v.out_size, false);
	if (r == 0 &&
	    (e.diff.pos != e.diff.len || e.lit.pos != e.lit.len || e.runs.pos != e.runs.len || e.zleft || e.bleft)) {
		e.why = "unused bytes in the chunk streams";
		r = RSR_E_FORMAT;
	}
	if (r == 0 && e.fill)
		r = e.fill(e.fill_arg, e.ids, e.n_ids, e.n_defs > 0);
	if (r == 0 && !e.dry)
		r = run_hashes(&e, out, read_prior, read_arg);
	free(e.defs);
	free(e.ids);
	if (e.proj)
		proj_free(e.proj);
	free(e.proj);
	free(e.pbuf);
	if (r == RSR_E_FORMAT)
		*why = e.why;
	free(payload);
	return r;
}

int rsr_patch_stats(struct rsr_ctx *ctx, const struct rsr_patch *patch, size_t i, struct rsr_patch_stats *ret_stats)
{
	struct rsr_patch_stats st = {0};
	uint64_t in_size = i < patch->n_inputs ? rsr_get_le64(patch->inputs[i].size) : 0;

	if (i >= patch->n_sets)
		return rsr_error(ctx, -EINVAL, "patch has no input %zu", i);
	/* Operations are decoded and checked against the recorded input size, without the input. */
	for (uint32_t c = 0; c < patch->n_chunks; c++) {
		const char *why = NULL;
		int r = patch_run_chunk(patch, (uint32_t)i, c, NULL, in_size, NULL, NULL, NULL, &st, &why);
		if (r == RSR_E_FORMAT)
			return rsr_error(ctx, r, "not a valid rsr patch: chunk %u: %s", c, why);
		if (r < 0)
			return rsr_error(ctx, r, "chunk %u: out of memory", c);
	}
	*ret_stats = st;
	return 0;
}
