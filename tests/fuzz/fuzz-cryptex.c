/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libFuzzer target: the cryptex header and manifest parser, and the
 * signature check that follows it, on arbitrary bytes.
 */
#include <stddef.h>
#include <stdint.h>

#include "rsr/cryptex.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rsr_ctx *ctx;
	struct rsr_keyring *ring;
	struct rsr_cryptex *cx;

	if (rsr_ctx_new(&ctx) < 0)
		return 0;
	if (rsr_keyring_new(&ring) < 0) {
		rsr_ctx_free(ctx);
		return 0;
	}
	if (rsr_cryptex_parse(ctx, data, size, &cx) == 0) {
		/* Exercise every getter on what was accepted. */
		(void)rsr_cryptex_verify_signature(ctx, cx, ring);
		for (size_t i = 0; i < rsr_cryptex_base_build_count(cx); i++)
			(void)rsr_cryptex_base_build(cx, i);
		for (size_t i = 0; i < rsr_cryptex_path_count(cx); i++)
			(void)rsr_cryptex_covered_path(cx, i);
		(void)rsr_cryptex_allows_base(cx, "debian-12");
		rsr_cryptex_free(cx);
	}
	rsr_keyring_free(ring);
	rsr_ctx_free(ctx);
	return 0;
}
