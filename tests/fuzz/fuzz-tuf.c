/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libFuzzer target: the TUF metadata parsers (every role, root key and role
 * tables, signature thresholds against the input's own root, meta entries,
 * targets and their custom metadata) and the policy file parser, all on the
 * same input.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "../../lib/repo/tuf.h"
#include "rsr/update.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rsr_ctx *ctx;
	struct rsr_update_policy p;

	if (rsr_ctx_new(&ctx) < 0)
		return 0;
	for (int role = 0; role < TUF_N_ROLES; role++) {
		json_t *env = NULL;
		struct tuf_root *root = NULL;
		struct tuf_meta m;
		uint64_t v;
		int64_t exp;

		if (tuf_parse(ctx, data, size, (enum tuf_role)role, "fuzz", &env, &v, &exp) < 0)
			continue;
		switch (role) {
		case TUF_ROOT:
			if (tuf_root_from_env(ctx, env, "fuzz", &root) == 0) {
				for (int r = 0; r < TUF_N_ROLES; r++)
					(void)tuf_verify(ctx, root, (enum tuf_role)r, env, "fuzz");
				tuf_root_free(root);
			}
			break;
		case TUF_TARGETS:
			if (tuf_targets_check(ctx, env, "fuzz") == 0) {
				json_t *targets = json_object_get(json_object_get(env, "signed"), "targets"), *info;
				const char *k;
				json_object_foreach(targets, k, info)
				{
					struct tuf_target t;
					if (tuf_target_get(ctx, env, k, &t) == 0)
						free(tuf_target_file(&t, true));
				}
			}
			break;
		case TUF_SNAPSHOT:
			(void)tuf_meta_get(ctx, env, "targets.json", "fuzz", &m);
			break;
		case TUF_TIMESTAMP:
			(void)tuf_meta_get(ctx, env, "snapshot.json", "fuzz", &m);
			break;
		}
		json_decref(env);
	}
	rsr_update_policy_init(&p);
	(void)rsr_update_policy_parse(ctx, data, size, "fuzz", &p);
	rsr_update_policy_clear(&p);
	rsr_ctx_free(ctx);
	return 0;
}
