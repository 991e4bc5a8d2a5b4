/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Image patches: a raw-image binary diff that turns one of a list of accepted
 * input images into one output image, cut into independently compressed
 * chunks so that it is made and applied on several threads. Format:
 * docs/formats/patch.md.
 */
#ifndef RSR_PATCH_H
#define RSR_PATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rsr/common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define RSR_PATCH_DIGEST_SIZE 32

struct rsr_patch_create_opts {
	unsigned level;	     /* zstd level 1..22; 0: 19 */
	uint32_t chunk_size; /* nominal output bytes per chunk, 4 KiB..32 MiB; 0: automatic (see below) */
	bool no_deflate;     /* do not re-encode embedded deflate (gzip) streams */
};

/*
 * Automatic chunk size: images up to 8 MiB are one chunk; larger ones are
 * cut in quarters of at most 8 MiB. It depends only on the new image, so
 * the same inputs always give the same patch, whatever the thread count.
 *
 * Writes a patch from each of `olds` (n_olds of them; 0 makes a full
 * replacement) to `new_path` into `patch_path` (temp, fsync, rename). If
 * `reverse_path` is not NULL (and n_olds is 1) also writes the patch from
 * `new_path` back to olds[0] there. `opts` may be NULL. Returns 0 or a
 * negative error with the message recorded on ctx.
 */
RSR_EXPORT int rsr_patch_create(struct rsr_ctx *ctx, const char *const *olds, size_t n_olds, const char *new_path,
				const char *patch_path, const char *reverse_path,
				const struct rsr_patch_create_opts *opts);

enum {
	RSR_PATCH_APPLIED = 0,	  /* the output was written */
	RSR_PATCH_UP_TO_DATE = 1, /* the output already had the right content and was left alone */
};

/*
 * Applies the patch at `patch_path` to `old_path` (NULL for a full
 * replacement) and writes the result to `out_path`. The output goes through
 * a temporary file beside `out_path` whose digest is checked before it is
 * renamed into place, and only once the input's digest matched: first, or,
 * when the input's size singles out one accepted input, in the same pass
 * that makes the output (docs/formats/patch.md, "Apply").
 * Uses the context's threads and progress callback. Returns
 * RSR_PATCH_APPLIED, RSR_PATCH_UP_TO_DATE, or a negative error
 * (RSR_E_MISMATCH for a wrong input, RSR_E_FORMAT for a malformed patch,
 * RSR_E_DIGEST for a wrong output, RSR_E_CANCELED); on error no output file
 * is left behind.
 */
RSR_EXPORT int rsr_patch_apply(struct rsr_ctx *ctx, const char *old_path, const char *patch_path, const char *out_path);

/*
 * The piece digest by which patches name their inputs and output: SHA-256
 * over the SHA-256 of every 1 MiB piece of the file (docs/formats/patch.md),
 * computed on the context's threads.
 */
RSR_EXPORT int rsr_patch_digest_file(struct rsr_ctx *ctx, const char *path, uint8_t out[32]);

/* A parsed patch, for inspection. */
struct rsr_patch;

/* Maps and validates a patch file; the caller owns the result. */
RSR_EXPORT int rsr_patch_open(struct rsr_ctx *ctx, const char *path, struct rsr_patch **ret_patch);
/* Validates a patch in memory; `buf` is borrowed and must outlive the result. */
RSR_EXPORT int rsr_patch_load(struct rsr_ctx *ctx, const void *buf, size_t len, struct rsr_patch **ret_patch);
RSR_EXPORT void rsr_patch_free(struct rsr_patch *patch);

RSR_EXPORT uint32_t rsr_patch_version(const struct rsr_patch *patch);
RSR_EXPORT uint64_t rsr_patch_output_size(const struct rsr_patch *patch);
/* The output's piece digest (see rsr_patch_digest_file); borrowed from the patch. */
RSR_EXPORT const uint8_t *rsr_patch_output_digest(const struct rsr_patch *patch);
RSR_EXPORT size_t rsr_patch_input_count(const struct rsr_patch *patch);
/* Digest (borrowed) and size of accepted input `i`. */
RSR_EXPORT const uint8_t *rsr_patch_input_digest(const struct rsr_patch *patch, size_t i);
RSR_EXPORT uint64_t rsr_patch_input_size(const struct rsr_patch *patch, size_t i);
RSR_EXPORT size_t rsr_patch_chunk_count(const struct rsr_patch *patch);
RSR_EXPORT uint32_t rsr_patch_chunk_size(const struct rsr_patch *patch);

/* Operation counts for one input; the byte counts add up to the output size. */
struct rsr_patch_stats {
	uint64_t compressed_bytes; /* zstd frames */
	uint64_t payload_bytes;	   /* decompressed operations */
	uint64_t copy_ops, copy_bytes;
	uint64_t add_ops, add_bytes;
	uint64_t literal_ops, literal_bytes;
	uint64_t deflate_ops, deflate_bytes; /* re-encoded deflate streams, output bytes */
	uint64_t hash_ops, hash_bytes;	     /* SHA-256 hashes of output blocks (hash trees) */
};

/*
 * Decodes every chunk of the operations for input `i` (0 for a full
 * replacement) without applying them and counts them into *ret_stats.
 */
RSR_EXPORT int rsr_patch_stats(struct rsr_ctx *ctx, const struct rsr_patch *patch, size_t i,
			       struct rsr_patch_stats *ret_stats);

#ifdef __cplusplus
}
#endif
#endif
