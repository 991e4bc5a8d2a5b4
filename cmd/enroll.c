/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * rsr enroll: puts a device in a repository in one step (the response key
 * in keys.d, the repository's root, a policy naming the mirrors) through
 * librsr, then checks the repository once as rsr check does.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "rsr/repo.h"

#define MAX_ARGS 16
#define USAGE                                                                                                          \
	"rsr enroll --mirror URL [--mirror URL...] --repository-root FILE --key RESPONSE_KEY.pub [--key ...]\n"        \
	"                  [--root DIR] [--no-check]"

int cmd_enroll(struct cmd_env *env, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"mirror", required_argument, NULL, 'm'},
	    {"repository-root", required_argument, NULL, 'R'},
	    {"key", required_argument, NULL, 'k'},
	    {"root", required_argument, NULL, 'r'},
	    {"no-check", no_argument, NULL, 'N'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *mirrors[MAX_ARGS], *keys[MAX_ARGS];
	struct rsr_repo_enroll_opts o;
	bool check = true;
	int ch, n;

	rsr_repo_enroll_opts_init(&o);
	o.mirrors = mirrors;
	o.keys = keys;
	/* A group without verbs: argv[0] is the first option; getopt wants a program name before it. */
	argc++, argv--;
	while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (ch) {
		case 'm':
			if (o.n_mirrors >= MAX_ARGS)
				return cmd_usage_error("at most %d mirrors", MAX_ARGS);
			mirrors[o.n_mirrors++] = optarg;
			break;
		case 'k':
			if (o.n_keys >= MAX_ARGS)
				return cmd_usage_error("at most %d keys", MAX_ARGS);
			keys[o.n_keys++] = optarg;
			break;
		case 'R':
			o.repository_root = optarg;
			break;
		case 'r':
			o.root = optarg;
			break;
		case 'N':
			check = false;
			break;
		case 'h':
			printf("Usage: %s\n\n"
			       "Enrols this device (or the device root DIR) in a repository: writes each\n"
			       "response key as DIR/etc/rsr/keys.d/NAME.pub, the repository's root metadata\n"
			       "(its metadata/1.root.json) as DIR/etc/rsr/repository-root.json and\n"
			       "DIR/etc/rsr/rsr.conf with the mirrors and every other setting at its default,\n"
			       "commented. A file already there with other content is refused and nothing is\n"
			       "written; one with the same content is kept. Then checks the repository once\n"
			       "(rsr check), unless --no-check.\n",
			       USAGE);
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind != argc)
		return cmd_usage(USAGE);
	if (o.n_mirrors == 0)
		return cmd_usage_error("rsr enroll needs --mirror URL");
	if (!o.repository_root)
		return cmd_usage_error("rsr enroll needs --repository-root FILE");
	if (o.n_keys == 0)
		return cmd_usage_error("rsr enroll needs --key RESPONSE_KEY.pub");
	n = rsr_repo_enroll(env->ctx, &o);
	if (n < 0)
		return cmd_fail(env, n);
	if (!env->quiet)
		printf(n ? "Enrolled %s in %s: %d file%s written.\n"
			 : "Enrolled %s in %s: every file was already in place.\n",
		       o.root, mirrors[0], n, n == 1 ? "" : "s");
	if (!check)
		return EXIT_OK;
	{
		char *args[] = {"check", "--root", (char *)o.root, NULL};
		optind = 0;
		return cmd_check(env, 2, args + 1);
	}
}
