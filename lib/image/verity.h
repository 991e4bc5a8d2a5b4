/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * dm-verity hash trees (format version 1, SHA-256, 4 KiB data and hash
 * blocks, salt prepended), computed and checked on several threads. The
 * layout is the one `veritysetup format --no-superblock` writes.
 */
#ifndef RSR_VERITY_H
#define RSR_VERITY_H

#include <stddef.h>
#include <stdint.h>

#include "rsr/common.h"

#define RSR_VERITY_BLOCK 4096
#define RSR_VERITY_DIGEST 32
#define RSR_VERITY_SALT_MAX 256
#define RSR_VERITY_MAX_LEVELS 10

struct rsr_verity_layout {
	uint64_t data_blocks;
	unsigned levels;
	/* Level 0 hashes data blocks; the highest level has one block. */
	uint64_t level_offset[RSR_VERITY_MAX_LEVELS]; /* in blocks, from the tree start */
	uint64_t level_blocks[RSR_VERITY_MAX_LEVELS];
	uint64_t tree_blocks;
};

/* Fills the layout for data_blocks >= 1 blocks; -EINVAL for 0 or absurd sizes. */
int rsr_verity_layout(uint64_t data_blocks, struct rsr_verity_layout *ret);

/*
 * Computes the hash tree of data_blocks blocks read from fd at data_off.
 * *ret_tree (malloc'd, layout.tree_blocks * 4096 bytes) and the root hash.
 */
int rsr_verity_build(struct rsr_ctx *ctx, int fd, uint64_t data_off, uint64_t data_blocks, const uint8_t *salt,
		     size_t salt_len, uint8_t **ret_tree, uint8_t ret_root[32]);

/*
 * Checks the stored tree at tree_off against `root`, top level first, then
 * every data block against the tree. RSR_E_DIGEST with a message naming the
 * first bad block; `what` names the file in messages, and the last
 * component of `name` in the progress label "verifying NAME".
 */
int rsr_verity_verify(struct rsr_ctx *ctx, int fd, uint64_t data_off, uint64_t data_blocks, uint64_t tree_off,
		      const uint8_t *salt, size_t salt_len, const uint8_t root[32], const char *what, const char *name);

#endif
