/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libFuzzer target: the response manifest parser, with and without a
 * keyring (so both the signature path and the field checks are reached).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "rsr/response.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rsr_ctx *ctx;
	struct rsr_keyring *ring;
	struct rsr_response *resp;
	char *md;

	if (rsr_ctx_new(&ctx) < 0)
		return 0;
	if (rsr_keyring_new(&ring) < 0) {
		rsr_ctx_free(ctx);
		return 0;
	}
	if (rsr_response_parse(ctx, data, size, ring, &resp) == 0)
		rsr_response_free(resp);
	if (rsr_response_parse(ctx, data, size, NULL, &resp) == 0) {
		if (rsr_response_notes(ctx, resp, "OS", &md) == 0)
			free(md);
		for (size_t i = 0; i < rsr_response_image_count(resp); i++)
			(void)rsr_response_find_image(resp, rsr_response_image(resp, i)->slot, "x86_64");
		rsr_response_free(resp);
	}
	rsr_keyring_free(ring);
	rsr_ctx_free(ctx);
	return 0;
}
