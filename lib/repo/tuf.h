/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The Update Framework's metadata, shared by the vendor side (lib/repo) and
 * the client (lib/fetch): canonical JSON, Ed25519 signatures with thresholds,
 * role checks, and the bounded parsers of every role. Internal to librsr.
 */
#ifndef RSR_TUF_H
#define RSR_TUF_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "internal.h"
#include "rsr/key.h"

#define TUF_SPEC_VERSION "1.0.31"
#define TUF_MAX_KEYS 256
#define TUF_MAX_SIGNATURES 256
#define TUF_MAX_TARGETS 65536
#define TUF_MAX_PATH 1024

enum tuf_role {
	TUF_ROOT = 0,
	TUF_TARGETS = 1,
	TUF_SNAPSHOT = 2,
	TUF_TIMESTAMP = 3,
	TUF_N_ROLES = 4,
};
extern const char *const tuf_role_names[TUF_N_ROLES];

struct tuf_key {
	char id[65];	     /* as the root names it */
	struct rsr_key *key; /* Ed25519 public key */
};

struct tuf_role_keys {
	char **keyids;
	size_t n;
	uint64_t threshold;
};

/* A parsed root role. */
struct tuf_root {
	json_t *env; /* the whole envelope */
	uint64_t version;
	int64_t expires;
	bool consistent;
	struct tuf_key *keys; /* Ed25519 keys only; others are not counted */
	size_t n_keys;
	struct tuf_role_keys roles[TUF_N_ROLES];
};

/* Meta entry of timestamp ("snapshot.json") or snapshot ("targets.json"). */
struct tuf_meta {
	uint64_t version;
	uint64_t length; /* 0: not given */
	bool has_sha256;
	uint8_t sha256[32];
};

/* A target of the targets role; custom is borrowed from its metadata. */
struct tuf_target {
	const char *path;
	uint64_t length;
	uint8_t sha256[32];
	json_t *custom; /* may be NULL */
};

/* Canonical JSON (OLPC, as TUF signs it) of v; the caller frees *ret. */
int tuf_canonical(struct rsr_ctx *ctx, json_t *v, char **ret, size_t *ret_len);

/* The TUF key object of an Ed25519 key and its key id (SHA-256 of its canonical form). */
json_t *tuf_key_json(const struct rsr_key *key);
int tuf_keyid(struct rsr_ctx *ctx, const struct rsr_key *key, char ret_id[65]);

/* "2026-11-23T19:00:00Z" <-> seconds since 1970. */
int tuf_time_parse(const char *s, int64_t *ret);
void tuf_time_format(int64_t t, char out[32]);

/*
 * Parses an envelope {"signed": {...}, "signatures": [...]}: JSON with no
 * duplicate keys and no fractional numbers, at most `max` bytes, the _type
 * of `role`, a spec_version 1.x, a version >= 1 and an expiry. The caller
 * owns *ret_env.
 */
int tuf_parse(struct rsr_ctx *ctx, const void *buf, size_t len, enum tuf_role role, const char *what, json_t **ret_env,
	      uint64_t *ret_version, int64_t *ret_expires);

/* Parses the signed part of a root envelope (its signatures are not checked here). */
int tuf_root_from_env(struct rsr_ctx *ctx, json_t *env, const char *what, struct tuf_root **ret_root);
int tuf_root_parse(struct rsr_ctx *ctx, const void *buf, size_t len, const char *what, struct tuf_root **ret_root);
void tuf_root_free(struct tuf_root *root);

/*
 * Checks that `env` carries valid signatures of at least the threshold of
 * distinct keys that `root` gives `role`. RSR_E_SIGNATURE with a message
 * naming `what` and the counts otherwise.
 */
int tuf_verify(struct rsr_ctx *ctx, const struct tuf_root *root, enum tuf_role role, json_t *env, const char *what);

/* Replaces the signatures of env by signatures of every key (private keys). */
int tuf_sign(struct rsr_ctx *ctx, json_t *env, const struct rsr_key *const *keys, size_t n_keys);

/* The meta entry `name` of a timestamp or snapshot's signed part. */
int tuf_meta_get(struct rsr_ctx *ctx, json_t *env, const char *name, const char *what, struct tuf_meta *ret);

/* The target at `path` of a targets envelope; -ENOENT if none. */
int tuf_target_get(struct rsr_ctx *ctx, json_t *env, const char *path, struct tuf_target *ret);
/* Checks the shape of one target entry. */
int tuf_target_parse(struct rsr_ctx *ctx, const char *path, json_t *info, struct tuf_target *ret);
/* Checks every target entry of a targets envelope (count, paths, lengths, hashes). */
int tuf_targets_check(struct rsr_ctx *ctx, json_t *env, const char *what);

/* The path a target is stored at: "dir/<sha256>.name" with consistent snapshots. Caller frees. */
char *tuf_target_file(const struct tuf_target *t, bool consistent);

#endif
