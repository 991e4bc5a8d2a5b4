/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libFuzzer target: the device policy file parser (/etc/rsr/rsr.conf), fed
 * once on the defaults and once on a policy that already holds values (a
 * second file read over the first, as mirrors accumulate).
 */
#include <stddef.h>
#include <stdint.h>

#include "rsr/common.h"
#include "rsr/update.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char first[] = "mirror = https://a.example/rsr\nmirror = http://b.example\n"
				    "auto_install = no\ntimeout = 5\n";
	struct rsr_ctx *ctx;
	struct rsr_update_policy p;

	if (rsr_ctx_new(&ctx) < 0)
		return 0;
	rsr_update_policy_init(&p);
	(void)rsr_update_policy_parse(ctx, data, size, "fuzz", &p);
	rsr_update_policy_clear(&p);

	rsr_update_policy_init(&p);
	if (rsr_update_policy_parse(ctx, first, sizeof(first) - 1, "first", &p) == 0)
		(void)rsr_update_policy_parse(ctx, data, size, "fuzz", &p);
	rsr_update_policy_clear(&p);
	rsr_ctx_free(ctx);
	return 0;
}
