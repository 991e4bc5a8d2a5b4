/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Shared by the response modules: manifest signing context and helpers. */
#ifndef RSR_RESPONSE_INTERNAL_H
#define RSR_RESPONSE_INTERNAL_H

#include <jansson.h>

#include "internal.h"
#include "rsr/response.h"

/* Signed message: this prefix (with its NUL) then the canonical JSON of "signed". */
#define RESPONSE_SIG_CONTEXT "RSR-RESPONSE-V1"

/* Canonical form of a JSON value: compact, keys sorted; the caller frees it. */
char *response_canonical(json_t *v);
/* Removes a directory tree (no symlinks followed); missing is fine. */
int response_rm_rf(int dirfd, const char *name);
/* SHA-256 of a whole file, as hex (65 bytes); *ret_size gets its size. */
int response_file_sha256(struct rsr_ctx *ctx, const char *path, char ret_hex[65], uint64_t *ret_size);

/* Checks a list of advisories against the manifest's rules. */
int response_check_advisories(struct rsr_ctx *ctx, json_t *list);

#endif
