/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The vendor's repository: a directory of static files in The Update
 * Framework's layout (metadata/ with root, targets, snapshot and timestamp
 * roles, targets/ with consistent-snapshot file names) that any web server
 * serves. Responses become targets with custom metadata a device chooses
 * by. Format: docs/formats/repository.md; hosting: docs/repository.md.
 */
#ifndef RSR_REPO_H
#define RSR_REPO_H

#include <stddef.h>
#include <stdint.h>

#include "rsr/common.h"
#include "rsr/key.h"

#ifdef __cplusplus
extern "C" {
#endif

enum rsr_repo_role {
	RSR_REPO_ROOT = 0,
	RSR_REPO_TARGETS = 1,
	RSR_REPO_SNAPSHOT = 2,
	RSR_REPO_TIMESTAMP = 3,
};
/* "root", "targets", "snapshot", "timestamp"; NULL for anything else. */
const char *rsr_repo_role_name(enum rsr_repo_role role);
/* The role named `name`, or -EINVAL. */
int rsr_repo_role_from_name(const char *name);

/* Default lifetimes of each role's metadata, in seconds. */
#define RSR_REPO_EXPIRES_ROOT (365 * 86400)
#define RSR_REPO_EXPIRES_TARGETS (90 * 86400)
#define RSR_REPO_EXPIRES_SNAPSHOT (7 * 86400)
#define RSR_REPO_EXPIRES_TIMESTAMP (86400)

/*
 * Signing keys for one operation (private keys, borrowed): each role's
 * metadata is signed by every given key the root lists for that role, and
 * must reach its threshold. `now` is the signing time (expiry is counted
 * from it); `expires[role]` overrides the default lifetime when non-zero.
 */
struct rsr_repo_sign_opts {
	const struct rsr_key *const *keys;
	size_t n_keys;
	uint64_t now;
	uint64_t expires[4];
};

struct rsr_repo_init_opts {
	const struct rsr_key *const *root_keys; /* 1 or more */
	size_t n_root_keys;
	unsigned threshold; /* of the root role; 0 means 1 */
	/* One key each; NULL means the first root key. */
	const struct rsr_key *targets_key, *snapshot_key, *timestamp_key;
};

/*
 * Makes a new repository in `dir` (created; must not exist or be empty):
 * version 1 of all four roles with consistent snapshots, signed with the
 * private keys in `init` and `sign`.
 */
int rsr_repo_init(struct rsr_ctx *ctx, const char *dir, const struct rsr_repo_init_opts *init,
		  const struct rsr_repo_sign_opts *sign);

/*
 * Publishes the response in `response_dir`: its manifest and patches become
 * targets under BASE_BUILD/LETTER/, the manifest with custom metadata (base
 * build, letter, sequence, restart, advisories, images and patch sizes,
 * `rollout` percentage 1..100), then new targets, snapshot and timestamp
 * versions. Refuses a letter or sequence already published for that base.
 */
int rsr_repo_add(struct rsr_ctx *ctx, const char *dir, const char *response_dir, unsigned rollout,
		 const struct rsr_repo_sign_opts *sign);

/* New snapshot and timestamp versions with fresh expiry (for cron). */
int rsr_repo_refresh(struct rsr_ctx *ctx, const char *dir, const struct rsr_repo_sign_opts *sign);

/*
 * Marks the response BASE_BUILD/LETTER withdrawn (devices stop installing it
 * and those on it move on, as their policy says), or sets its rollout
 * percentage when `rollout` is 1..100 and `withdraw` is false.
 */
int rsr_repo_withdraw(struct rsr_ctx *ctx, const char *dir, const char *base_build, const char *letter,
		      const struct rsr_repo_sign_opts *sign);
int rsr_repo_set_rollout(struct rsr_ctx *ctx, const char *dir, const char *base_build, const char *letter,
			 unsigned rollout, const struct rsr_repo_sign_opts *sign);

/*
 * Replaces the keys of `role` by `new_keys` (public keys suffice, except for
 * a new root key, which must sign) with `threshold` (0: 1): writes the next
 * root version, signed by the current root keys to their threshold and, for
 * the root role, by the new keys too; then re-signs the role's metadata
 * (and those below it) with the new keys, which `sign` must hold.
 */
int rsr_repo_rotate_key(struct rsr_ctx *ctx, const char *dir, enum rsr_repo_role role,
			const struct rsr_key *const *new_keys, size_t n_new_keys, unsigned threshold,
			const struct rsr_repo_sign_opts *sign);

#ifdef __cplusplus
}
#endif
#endif
