/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The on-disk layout of rsr image patches (docs/formats/patch.md), shared by
 * the parser, the patcher and the differ. Every field is little-endian.
 */
#ifndef RSR_PATCH_FORMAT_H
#define RSR_PATCH_FORMAT_H

#include <assert.h>
#include <stdint.h>

#include "internal.h"
#include "rsr/patch.h"

#define PATCH_MAGIC "RSRPATCH"
#define PATCH_VERSION 3	    /* with projections */
#define PATCH_VERSION_MIN 2 /* version 2: without them (OP_PROJECT, OP_PCOPY, OP_PADD) */

/* Limits every reader enforces; a patch beyond them is refused as RSR_E_LIMIT. */
#define PATCH_MAX_INPUTS 16
#define PATCH_MAX_CHUNK_OUT (64u << 20)	     /* output bytes of one chunk */
#define PATCH_MAX_CHUNK_PAYLOAD (256u << 20) /* decompressed operations of one chunk */
#define PATCH_MAX_CHUNKS (1u << 22)
#define PATCH_MAX_DEFLATE_RAW (64u << 20) /* a decoded deflate stream (tokens) */
/*
 * Output bytes. The patcher keeps 36 bytes per 1 MiB piece of the output
 * (9 MiB at this limit), so a header cannot make it allocate more than that
 * whatever it declares.
 */
#define PATCH_MAX_OUTPUT (1ull << 38)

struct patch_header {
	uint8_t magic[8];	   /* "RSRPATCH" */
	uint8_t version[4];	   /* 2 */
	uint8_t header_size[4];	   /* sizeof(struct patch_header) */
	uint8_t output_size[8];	   /* bytes */
	uint8_t output_digest[32]; /* piece digest of the whole output */
	uint8_t n_inputs[4];	   /* accepted inputs; 0: full replacement */
	uint8_t n_chunks[4];	   /* output chunks */
	uint8_t chunk_size[4];	   /* nominal output bytes per chunk (informational) */
	uint8_t flags[4];	   /* 0 */
	uint8_t patch_sha256[32];  /* SHA-256 of the whole patch file, this field zero */
};
static_assert(sizeof(struct patch_header) == 104, "patch header layout");

struct patch_input {
	uint8_t digest[32]; /* piece digest of the whole input */
	uint8_t size[8];    /* bytes */
	uint8_t flags[4];   /* 0 */
	uint8_t reserved[4];
};
static_assert(sizeof(struct patch_input) == 48, "patch input layout");

struct patch_extent {
	uint8_t out_offset[8]; /* where the chunk's output starts */
	uint8_t out_size[4];   /* output bytes of the chunk, 1..PATCH_MAX_CHUNK_OUT */
	uint8_t reserved[4];
};
static_assert(sizeof(struct patch_extent) == 16, "patch extent layout");

struct patch_chunk {
	uint8_t data_offset[8];	 /* of the zstd frame, from the start of the data area */
	uint8_t comp_size[4];	 /* bytes of the zstd frame */
	uint8_t payload_size[4]; /* decompressed operation bytes */
};
static_assert(sizeof(struct patch_chunk) == 16, "patch chunk layout");

/*
 * The piece digest of an image of `size` bytes: SHA-256 of PIECES_DOMAIN (with
 * its NUL), le64 size, le32 PIECE_SIZE, then the SHA-256 of each PIECE_SIZE
 * piece in order (the last one shorter). pieces.c.
 */
#define PIECE_SIZE (1u << 20)
#define PIECES_DOMAIN "RSR-PIECES-V1"
static inline uint64_t pieces_count(uint64_t size)
{
	return size / PIECE_SIZE + (size % PIECE_SIZE != 0);
}
/* The digest from the pieces' SHA-256 values. 0 or -ENOMEM (out then zero). */
int pieces_combine(const uint8_t (*h)[32], uint64_t size, uint8_t out[32]);
/* Of an image in memory, on up to `threads` threads. 0 or -ENOMEM. */
int pieces_digest_mem(const uint8_t *p, uint64_t size, unsigned threads, uint8_t out[32]);
/* Of the first `size` bytes of fd, on the context's threads, with progress under `what`. */
int pieces_digest_fd(struct rsr_ctx *ctx, int fd, uint64_t size, const char *what, uint8_t out[32]);

/* Operation codes inside a chunk's command stream. */
enum {
	OP_COPY = 0,	/* svarint seek, varint len: copy input bytes */
	OP_ADD = 1,	/* svarint seek, varint len: input bytes plus diff bytes */
	OP_LITERAL = 2, /* varint len: bytes from the literal stream */
	OP_DEFLATE = 3, /* a re-encoded deflate stream, see docs */
	OP_END = 4,	/* ends the operations of an OP_DEFLATE */
	OP_HASH = 5,	/* varint src, varint count: SHA-256(salt || 4 KiB output block), deferred */
	OP_SALT = 6,	/* varint len, bytes: the salt of the following OP_HASH */
	OP_PROJECT = 7, /* varint len, bytes: the projection the following OP_PCOPY/OP_PADD read */
	OP_PCOPY = 8,	/* as OP_COPY, from the projected input */
	OP_PADD = 9,	/* as OP_ADD, from the projected input */
};

#define HASH_BLOCK 4096u

/*
 * Projections (project.c): regions of the input (ELF files) whose stored
 * addresses are moved through a step map of old to new addresses.
 */
enum {
	PK_CODE_X86_64 = 1, /* rel32 fields of x86-64 instructions */
	PK_ABS64 = 2,	    /* 64-bit words that are addresses */
	PK_RELA64 = 3,	    /* Elf64_Rela entries */
	PK_SYM64 = 4,	    /* Elf64_Sym entries */
	PK_EHHDR = 5,	    /* .eh_frame_hdr: section-relative 32-bit fields from offset 12 */
	PK_EHFRAME = 6,	    /* .eh_frame: pc-relative pc_begin of each FDE */
};
#define PROJ_BLOCK 4096u
struct buf;
#define PROJ_MAX_REGIONS 256
#define PROJ_MAX_RANGES 64
#define PROJ_MAX_STEPS (1u << 20) /* in all regions of a projection */
struct proj_range {
	uint8_t kind;
	uint64_t start, len; /* input offsets */
	uint64_t vaddr;	     /* the address of start */
};
struct proj_step {
	uint64_t vaddr; /* from this old address on ... */
	int64_t delta;	/* ... new address = old address + delta */
};
struct proj_region {
	uint64_t start, size; /* in the input */
	uint64_t lo, hi;      /* the addresses references may point to */
	struct proj_range *ranges;
	size_t n_ranges;
	struct proj_step *steps;
	size_t n_steps;
	bool mask; /* the differ's matching form: the fields become zero (never in a patch) */
};
struct proj {
	struct proj_region *regions;
	size_t n;
	bool cache_valid; /* the last projected block, for proj_read() */
	uint64_t cache_off;
	uint8_t cache[PROJ_BLOCK];
};
/* Parses a projection over an input of in_size bytes into *out (replacing it). 0, -ENOMEM, or RSR_E_FORMAT with why. */
int proj_parse(const uint8_t *p, size_t len, uint64_t in_size, struct proj *out, const char **why);
void proj_encode(const struct proj *pj, struct buf *b);
void proj_free(struct proj *pj);
/* The projected bytes of the input block at b0 (PROJ_BLOCK-aligned; shorter at the end) into blk. */
void proj_block(const struct proj *pj, const uint8_t *in, uint64_t in_size, uint64_t b0, uint8_t *blk);
/*
 * The differ's projection of old towards nw (elfmap.c): a region for each
 * changed x86-64 ELF file it could pair; none is not an error. blk: per
 * 4 KiB block of nw, the old offset of an identical block or -1; used: per
 * old block, whether one is identical to a new block. Only the other blocks
 * are searched. 0 or -ENOMEM.
 */
int elf_plan(const uint8_t *old, uint64_t old_size, const uint8_t *nw, uint64_t nw_size, const int64_t *blk,
	     const bool *used, struct proj *out);
/* The rel32 field of an x86-64 instruction candidate at p (ending by e), or 0. */
uint64_t proj_code_field(const uint8_t *in, uint64_t p, uint64_t e);
/* The projected input [off, off + len) into out. */
void proj_read(struct proj *pj, const uint8_t *in, uint64_t in_size, uint64_t off, uint64_t len, uint8_t *out);
#define PATCH_MAX_SALT 256

/*
 * Reads `len` bytes of output at `off`, which lies before the current chunk
 * (waiting until it is written). Returns 0 or a negative error.
 */
typedef int (*patch_read_prior_fn)(void *arg, uint64_t off, void *buf, size_t len);

/* One chunk of one input set, with its table entries decoded. */
struct patch_chunk_view {
	uint32_t version; /* of the patch: which operations are allowed */
	uint64_t out_offset;
	uint32_t out_size;
	uint64_t data_offset; /* absolute, in the patch buffer */
	uint32_t comp_size;
	uint32_t payload_size;
};

/* A parsed, validated patch over a borrowed buffer. */
struct rsr_patch {
	const uint8_t *buf;
	size_t len;
	void *map; /* when opened from a file: the mapping to unmap */
	size_t map_len;
	uint32_t version;
	uint64_t output_size;
	uint8_t output_digest[32];
	uint32_t n_inputs;
	uint32_t n_sets; /* max(1, n_inputs) */
	uint32_t n_chunks;
	uint32_t chunk_size;
	const struct patch_input *inputs;
	const struct patch_extent *extents;
	const struct patch_chunk *chunks; /* n_sets * n_chunks, set-major */
	uint64_t data_start;
};

/* SHA-256 of a patch: header (with patch_sha256 taken as zero), then `n` pieces of the rest. */
struct patch_piece {
	const void *p;
	size_t len;
};
/* 0, or -ENOMEM when OpenSSL cannot allocate. */
int patch_digest(const struct patch_header *h, const struct patch_piece *pieces, size_t n, uint8_t out[32]);

void patch_chunk_get(const struct rsr_patch *p, uint32_t set, uint32_t chunk, struct patch_chunk_view *v);

/* Decoded, bounds-checked stream cursor. */
struct rd {
	const uint8_t *p;
	size_t len, pos;
};
static inline int rd_varint(struct rd *r, uint64_t *ret)
{
	uint64_t v = 0;
	for (unsigned shift = 0; shift < 64; shift += 7) {
		uint8_t b;
		if (r->pos >= r->len)
			return -1;
		b = r->p[r->pos++];
		if (shift == 63 && b > 1)
			return -1;
		v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*ret = v;
			return 0;
		}
	}
	return -1;
}
static inline int rd_svarint(struct rd *r, int64_t *ret)
{
	uint64_t u;
	if (rd_varint(r, &u) < 0)
		return -1;
	*ret = (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
	return 0;
}

/* Growable byte buffer for writers. */
struct buf {
	uint8_t *p;
	size_t len, cap;
	bool oom;
};
void buf_put(struct buf *b, const void *data, size_t len);
void buf_varint(struct buf *b, uint64_t v);
void buf_svarint(struct buf *b, int64_t v);
static inline void buf_byte(struct buf *b, uint8_t v)
{
	buf_put(b, &v, 1);
}
static inline void buf_free(struct buf *b)
{
	free(b->p);
	*b = (struct buf){0};
}

/*
 * Executes one chunk: decompresses its frame and runs its operations against
 * `in` (NULL/0 for a full replacement) into `out` (exactly the chunk's output
 * size). OP_HASH sources before the chunk are read through read_prior (NULL:
 * such sources are refused). `stats` (may be NULL) gets operation counts. Returns 0 or
 * RSR_E_FORMAT with the reason in `why`.
 */
int patch_run_chunk(const struct rsr_patch *p, uint32_t set, uint32_t chunk, const uint8_t *in, uint64_t in_size,
		    uint8_t *out, patch_read_prior_fn read_prior, void *read_arg, struct rsr_patch_stats *stats,
		    const char **why);

/*
 * Identity copies (COPY operations whose input offset is the output offset,
 * the unchanged regions of an image) can be left to the caller: with a fill
 * function, patch_run_chunk_fill() does not copy them but hands their
 * ranges (chunk offsets, in order, adjacent ones merged) to fill() after the
 * other operations and before the deferred OP_HASH ones. When `out_read`
 * is true those read the chunk's output, and fill() must have written every
 * range into `out` when it returns 0; otherwise it may instead write a range
 * to its destination by itself. fill() is called once per chunk, also with
 * no range.
 */
struct patch_range {
	uint64_t off, len;
};
typedef int (*patch_fill_fn)(void *arg, const struct patch_range *ranges, size_t n, bool out_read);
int patch_run_chunk_fill(const struct rsr_patch *p, uint32_t set, uint32_t chunk, const uint8_t *in, uint64_t in_size,
			 uint8_t *out, patch_read_prior_fn read_prior, void *read_arg, patch_fill_fn fill,
			 void *fill_arg, const char **why);

/* Runs one chunk's zstd frame (at `frame`, sizes and extent in *v; data_offset unused). */
int patch_run_frame(const uint8_t *frame, const struct patch_chunk_view *v, const uint8_t *in, uint64_t in_size,
		    uint8_t *out, patch_read_prior_fn read_prior, void *read_arg, struct rsr_patch_stats *stats,
		    const char **why);

/* Deflate re-encoding (deflate.c). */
/*
 * Decodes a raw deflate stream that starts at `in` into its token form, which
 * records every choice of the encoder so that deflate_encode() reproduces the
 * stream bit for bit. On success *ret_used is the stream's length in bytes.
 * Returns 0, -ENOMEM, or RSR_E_FORMAT if the bytes are not a deflate stream
 * (or its token form would exceed `max_tokens` bytes).
 */
int deflate_decode(const uint8_t *in, size_t in_len, size_t max_tokens, struct buf *tokens, size_t *ret_used);
/* Encodes tokens into out[0..out_len); RSR_E_FORMAT if they are malformed or do not fill out exactly. */
int deflate_encode(const uint8_t *tokens, size_t len, uint8_t *out, size_t out_len);
/* Length of the gzip member header at p (10+ bytes), or 0 if p is not one. */
size_t gzip_header_len(const uint8_t *p, size_t len);

#endif
