/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A program that defines functions with the names of librsr's internal
 * helpers (rsr_hex_encode, rsr_sha256) and links the shared library: the
 * library must keep calling its own, so an application cannot change what
 * librsr does inside by accident (docs/abi.md). Output is TAP.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "rsr/key.h"

/* The names and prototypes of librsr's internal helpers (lib/common/internal.h). */
void rsr_hex_encode(const void *buf, size_t len, char *out);
int rsr_sha256(const void *buf, size_t len, uint8_t out[32]);

static int called;

void rsr_hex_encode(const void *buf, size_t len, char *out)
{
	(void)buf;
	called |= 1;
	memset(out, 'X', 2 * len);
	out[2 * len] = '\0';
}

int rsr_sha256(const void *buf, size_t len, uint8_t out[32])
{
	(void)buf;
	(void)len;
	called |= 2;
	memset(out, 0xee, 32);
	return 0;
}

int main(void)
{
	/* SHA-256 of 32 zero bytes: the key id of an all-zero raw public key. */
	static const char want[] = "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925";
	static const uint8_t raw[32];
	struct rsr_ctx *ctx = NULL;
	struct rsr_key *key = NULL;
	const char *hex;
	int failed = 0;

	if (rsr_ctx_new(&ctx) < 0 || rsr_key_from_raw_public(ctx, raw, &key) < 0) {
		printf("not ok 1 - a key from 32 raw bytes: %s\n1..1\n", ctx ? rsr_ctx_error(ctx) : "no context");
		return 1;
	}
	hex = rsr_key_id_hex(key);
	if (strcmp(hex, want) != 0) {
		printf("# key id %s, want %s\n", hex, want);
		failed = 1;
	}
	printf("%s 1 - the key id is librsr's own SHA-256 in librsr's own hex\n", failed ? "not ok" : "ok");
	printf("%s 2 - librsr called neither of the program's functions (mask %d)\n", called ? "not ok" : "ok", called);
	printf("1..2\n");
	rsr_key_free(key);
	rsr_ctx_free(ctx);
	return failed || called;
}
