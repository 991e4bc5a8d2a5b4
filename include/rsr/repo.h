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

#include <stdbool.h>
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
RSR_EXPORT const char *rsr_repo_role_name(enum rsr_repo_role role);
/* The role named `name`, or -EINVAL. */
RSR_EXPORT int rsr_repo_role_from_name(const char *name);

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
RSR_EXPORT int rsr_repo_init(struct rsr_ctx *ctx, const char *dir, const struct rsr_repo_init_opts *init,
			     const struct rsr_repo_sign_opts *sign);

/*
 * Publishes the response in `response_dir`: its manifest and patches become
 * targets under BASE_BUILD/LETTER/, the manifest with custom metadata (base
 * build, letter, sequence, restart, advisories, images and patch sizes,
 * `rollout` percentage 1..100), then new targets, snapshot and timestamp
 * versions. Refuses a letter or sequence already published for that base.
 */
RSR_EXPORT int rsr_repo_add(struct rsr_ctx *ctx, const char *dir, const char *response_dir, unsigned rollout,
			    const struct rsr_repo_sign_opts *sign);

/* Default renewal margins of rsr_repo_refresh(), in seconds. */
#define RSR_REPO_MARGIN_ROOT (60 * 86400)
#define RSR_REPO_MARGIN_TARGETS (30 * 86400)
#define RSR_REPO_MARGIN_SNAPSHOT RSR_REPO_EXPIRES_SNAPSHOT
#define RSR_REPO_MARGIN_TIMESTAMP RSR_REPO_EXPIRES_TIMESTAMP

#define RSR_REPO_REFRESH_OPTS_VERSION 1
/*
 * What rsr_repo_refresh() renews: a role whose metadata expires within its
 * margin of `sign->now` (the defaults renew snapshot and timestamp at every
 * refresh, targets in the last 30 days of its 90 and root in the last 60 of
 * its 365).
 */
struct rsr_repo_refresh_opts {
	unsigned version; /* RSR_REPO_REFRESH_OPTS_VERSION */
	uint64_t margin_root, margin_targets, margin_snapshot, margin_timestamp;
};
/* Sets the version and the default margins. */
RSR_EXPORT void rsr_repo_refresh_opts_init(struct rsr_repo_refresh_opts *opts);

/* Bits of rsr_repo_refresh()'s results: 1 << role. */
#define RSR_REPO_ROLE_BIT(role) (1u << (unsigned)(role))

/*
 * Renews every role that is due (expires within its margin, or has a
 * lifetime in `sign->expires`) and that the given keys can sign: root as its
 * next version signed by its current keys, targets as its next version with
 * the same targets; a new targets version brings new snapshot and timestamp
 * versions, a new snapshot a new timestamp. A due role the keys cannot sign
 * is left as it is and named in a warning with its expiry; so is one that
 * depends on it (snapshot and timestamp are written only with their keys).
 * Fails, writing nothing, when a role given a lifetime in `sign->expires`
 * cannot be signed, or when renewing targets needs snapshot or timestamp
 * keys that are missing. `opts` NULL means the defaults. Sets
 * *ret_renewed and *ret_missed (either may be NULL) to the roles renewed and
 * the due roles left as they were; returns the number of the latter.
 */
RSR_EXPORT int rsr_repo_refresh(struct rsr_ctx *ctx, const char *dir, const struct rsr_repo_sign_opts *sign,
				const struct rsr_repo_refresh_opts *opts, unsigned *ret_renewed, unsigned *ret_missed);

/* A response published in a repository, as its targets metadata lists it. */
struct rsr_repo_published {
	const char *base_build, *letter;
	const char *target; /* the manifest's target path, BASE_BUILD/LETTER/response.json */
	uint64_t sequence;
	int64_t timestamp; /* when the response was made */
	unsigned rollout;  /* percent, 1..100 */
	bool withdrawn;
	const char *restart;
	size_t n_advisories, n_images;
	uint64_t patch_bytes; /* forward and reverse patches of every image */
};

/* The current metadata and responses of a repository (rsr repo status). */
struct rsr_repo_status;
/*
 * Reads the current root, timestamp, snapshot and targets metadata of the
 * repository in `dir` (as written; signatures are not checked) and the
 * responses the targets list. The caller frees *ret_status.
 */
RSR_EXPORT int rsr_repo_status_open(struct rsr_ctx *ctx, const char *dir, struct rsr_repo_status **ret_status);
RSR_EXPORT void rsr_repo_status_free(struct rsr_repo_status *st);
/* The version and expiry (seconds since 1970) of a role's current metadata. */
RSR_EXPORT uint64_t rsr_repo_status_version(const struct rsr_repo_status *st, enum rsr_repo_role role);
RSR_EXPORT int64_t rsr_repo_status_expires(const struct rsr_repo_status *st, enum rsr_repo_role role);
/* Published responses, ordered by base build and sequence; borrowed from st. */
RSR_EXPORT size_t rsr_repo_status_response_count(const struct rsr_repo_status *st);
RSR_EXPORT const struct rsr_repo_published *rsr_repo_status_response(const struct rsr_repo_status *st, size_t i);

/*
 * Marks the response BASE_BUILD/LETTER withdrawn (devices stop installing it
 * and those on it move on, as their policy says), or sets its rollout
 * percentage when `rollout` is 1..100 and `withdraw` is false.
 */
RSR_EXPORT int rsr_repo_withdraw(struct rsr_ctx *ctx, const char *dir, const char *base_build, const char *letter,
				 const struct rsr_repo_sign_opts *sign);
RSR_EXPORT int rsr_repo_set_rollout(struct rsr_ctx *ctx, const char *dir, const char *base_build, const char *letter,
				    unsigned rollout, const struct rsr_repo_sign_opts *sign);

/*
 * Replaces the keys of `role` by `new_keys` (public keys suffice, except for
 * a new root key, which must sign) with `threshold` (0: 1): writes the next
 * root version, signed by the current root keys to their threshold and, for
 * the root role, by the new keys too; then re-signs the role's metadata
 * (and those below it) with the new keys, which `sign` must hold.
 */
RSR_EXPORT int rsr_repo_rotate_key(struct rsr_ctx *ctx, const char *dir, enum rsr_repo_role role,
				   const struct rsr_key *const *new_keys, size_t n_new_keys, unsigned threshold,
				   const struct rsr_repo_sign_opts *sign);

#define RSR_REPO_ENROLL_OPTS_VERSION 1
/* What rsr_repo_enroll() writes; paths and strings borrowed. */
struct rsr_repo_enroll_opts {
	unsigned version;	    /* RSR_REPO_ENROLL_OPTS_VERSION */
	const char *root;	    /* device root; "/" (the default) for the running system */
	const char *const *mirrors; /* base URLs of the repository, 1 or more */
	size_t n_mirrors;
	const char *repository_root; /* the repository's root metadata (DIR/metadata/1.root.json) */
	const char *const *keys;     /* public keys that sign responses, 1 or more */
	size_t n_keys;
};
/* Sets the version and the root "/". */
RSR_EXPORT void rsr_repo_enroll_opts_init(struct rsr_repo_enroll_opts *opts);

/*
 * Enrols the device under `opts->root` in a repository: each key as
 * etc/rsr/keys.d/NAME (the key file's name, with .pub added unless it ends
 * in .pub or .pem), the repository's root as etc/rsr/repository-root.json
 * and etc/rsr/rsr.conf naming the mirrors with every other key at its
 * default, commented out and explained. The keys must be public Ed25519
 * keys, the root a root role signed by its own keys to their threshold.
 * Everything is checked before anything is written; a file already there
 * with other content is refused (-EEXIST), one with the same content is left
 * alone. Returns the number of files written (0: all were in place).
 */
RSR_EXPORT int rsr_repo_enroll(struct rsr_ctx *ctx, const struct rsr_repo_enroll_opts *opts);

#ifdef __cplusplus
}
#endif
#endif
