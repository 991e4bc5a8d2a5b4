/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Ed25519 signing keys (ordinary PEM files, as `openssl genpkey -algorithm
 * ed25519` writes them), key ids, and keyrings of trusted public keys.
 */
#ifndef RSR_KEY_H
#define RSR_KEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rsr/common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define RSR_KEY_ID_SIZE 32
#define RSR_KEY_ID_HEX_SIZE (2 * RSR_KEY_ID_SIZE + 1)
#define RSR_SIGNATURE_SIZE 64

struct rsr_key;

/*
 * Writes a new Ed25519 key pair: the private key to `path` (PEM, PKCS#8,
 * mode 0600) and the public key to `path`.pub (PEM, SubjectPublicKeyInfo).
 * Refuses to overwrite either. On success *ret_key (if not NULL) gets the key.
 */
RSR_EXPORT int rsr_key_generate(struct rsr_ctx *ctx, const char *path, struct rsr_key **ret_key);
/* Loads a private key (PEM); the caller owns it. */
RSR_EXPORT int rsr_key_load_private(struct rsr_ctx *ctx, const char *path, struct rsr_key **ret_key);
/* Loads a public key (PEM; a private key file also works); the caller owns it. */
RSR_EXPORT int rsr_key_load_public(struct rsr_ctx *ctx, const char *path, struct rsr_key **ret_key);
/* A public key from its 32 raw bytes. */
RSR_EXPORT int rsr_key_from_raw_public(struct rsr_ctx *ctx, const uint8_t raw[32], struct rsr_key **ret_key);
RSR_EXPORT void rsr_key_free(struct rsr_key *key);

/* The key id: SHA-256 of the 32-byte raw Ed25519 public key. */
RSR_EXPORT void rsr_key_id(const struct rsr_key *key, uint8_t ret_id[RSR_KEY_ID_SIZE]);
/* The key id in lowercase hex; borrowed from the key. */
RSR_EXPORT const char *rsr_key_id_hex(const struct rsr_key *key);
/* The 32-byte raw public key. */
RSR_EXPORT void rsr_key_public_raw(const struct rsr_key *key, uint8_t ret_raw[32]);
RSR_EXPORT bool rsr_key_is_private(const struct rsr_key *key);

/* Ed25519 signature of msg. Needs a private key. */
RSR_EXPORT int rsr_key_sign(struct rsr_ctx *ctx, const struct rsr_key *key, const void *msg, size_t len,
			    uint8_t ret_sig[RSR_SIGNATURE_SIZE]);
/*
 * 0 if sig is a valid signature of msg by key, RSR_E_SIGNATURE if not,
 * -ENOMEM if OpenSSL failed inside (out of memory). Records no message.
 */
RSR_EXPORT int rsr_key_verify(const struct rsr_key *key, const void *msg, size_t len,
			      const uint8_t sig[RSR_SIGNATURE_SIZE]);

/* A set of trusted public keys. */
struct rsr_keyring;
RSR_EXPORT int rsr_keyring_new(struct rsr_keyring **ret_ring);
RSR_EXPORT void rsr_keyring_free(struct rsr_keyring *ring);
/* Adds a public key file; a key already present is not added twice. */
RSR_EXPORT int rsr_keyring_add_file(struct rsr_ctx *ctx, struct rsr_keyring *ring, const char *path);
/* Adds every *.pub and *.pem file of a directory; a missing directory adds nothing. */
RSR_EXPORT int rsr_keyring_add_dir(struct rsr_ctx *ctx, struct rsr_keyring *ring, const char *dir);
/* Adds a key; the ring takes ownership. */
RSR_EXPORT int rsr_keyring_add(struct rsr_keyring *ring, struct rsr_key *key);
RSR_EXPORT size_t rsr_keyring_count(const struct rsr_keyring *ring);
/* The key with this id, or NULL; borrowed from the ring. */
RSR_EXPORT const struct rsr_key *rsr_keyring_find(const struct rsr_keyring *ring, const uint8_t id[RSR_KEY_ID_SIZE]);

#ifdef __cplusplus
}
#endif
#endif
