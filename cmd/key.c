/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * rsr key: make Ed25519 signing keys and show their ids.
 */
#include <getopt.h>
#include <string.h>

#include "cmd.h"
#include "rsr/key.h"

static int key_generate(struct cmd_env *env, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"output", required_argument, NULL, 'o'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *out = NULL;
	struct rsr_key *key;
	int c, r;

	while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
		switch (c) {
		case 'o':
			out = optarg;
			break;
		case 'h':
			printf("Usage: rsr key generate -o KEY\n\n"
			       "Writes a new Ed25519 private key to KEY (PEM, mode 0600) and its public\n"
			       "key to KEY.pub, and prints the key id (SHA-256 of the public key).\n"
			       "Keys made by 'openssl genpkey -algorithm ed25519' work the same.\n");
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (!out || optind != argc)
		return cmd_usage("rsr key generate -o KEY");
	r = rsr_key_generate(env->ctx, out, &key);
	if (r < 0)
		return cmd_fail(env, r);
	printf("%s\n", rsr_key_id_hex(key));
	if (!env->quiet)
		fprintf(stderr, "rsr: wrote private key %s and public key %s.pub\n", out, out);
	rsr_key_free(key);
	return EXIT_OK;
}

static int key_id(struct cmd_env *env, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	int c, ret = EXIT_OK;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (c == 'h') {
			printf("Usage: rsr key id KEY...\n\nPrints the key id of each public or private key file.\n");
			return EXIT_OK;
		}
		return EXIT_USAGE;
	}
	if (optind >= argc)
		return cmd_usage("rsr key id KEY...");
	for (int i = optind; i < argc; i++) {
		struct rsr_key *key;
		int r = rsr_key_load_public(env->ctx, argv[i], &key);
		if (r < 0) {
			ret = cmd_fail(env, r);
			continue;
		}
		printf("%s  %s\n", rsr_key_id_hex(key), argv[i]);
		rsr_key_free(key);
	}
	return ret;
}

int cmd_key(struct cmd_env *env, int argc, char **argv)
{
	static const struct verb verbs[] = {
	    {"generate", key_generate, "make a new Ed25519 key pair"},
	    {"id", key_id, "print the key id of key files"},
	    {NULL, NULL, NULL},
	};
	return cmd_dispatch(env, "key", verbs, argc, argv);
}
