/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * rsr: Rapid Security Responses for Linux. Entry point: global options,
 * the library context, and dispatch to the verb groups.
 */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "rsr-config.h"

struct group {
	const char *name;
	int (*run)(struct cmd_env *env, int argc, char **argv);
	const char *summary;
};

static const struct group groups[] = {
    {"key", cmd_key, "make signing keys and show key ids"},
    {"cryptex", cmd_cryptex, "build, verify and inspect cryptex images"},
    {"graft", cmd_graft, "install cryptexes and graft them over the base (no verb)"},
    {"ungraft", cmd_ungraft, "back to the bare base (no verb)"},
    {"status", cmd_status, "base, grafted cryptexes, processes running old code"},
    {"restart-services", cmd_restart_services, "restart services that run superseded code"},
    {"patch", cmd_patch, "make, apply and inspect image patches"},
    {"response", cmd_response, "make and inspect signed security responses"},
    {"install", cmd_install, "install a response on the device (no verb)"},
    {"remove", cmd_remove, "remove the installed response, back to the base (no verb)"},
    {"repo", cmd_repo, "publish responses in a TUF repository (vendor)"},
    {"check", cmd_check, "check the repository for a newer response (no verb)"},
    {"update", cmd_update, "download and install the newest response (no verb)"},
    {"enroll", cmd_enroll, "put this device in a repository: keys, root, policy (no verb)"},
    {NULL, NULL, NULL},
};

static void usage(FILE *f)
{
	fputs("Usage: rsr [--threads N] [--verbose] [--quiet] GROUP VERB [OPTIONS]\n"
	      "\n"
	      "Rapid Security Responses: signed, sealed cryptex images and the small\n"
	      "patches that update them.\n"
	      "\n"
	      "Groups:\n",
	      f);
	for (const struct group *g = groups; g->name; g++)
		fprintf(f, "  %-12s %s\n", g->name, g->summary);
	fputs("\n"
	      "Options:\n"
	      "  -j, --threads N   worker threads (default: one per CPU)\n"
	      "  -v, --verbose     more detail on stderr\n"
	      "  -q, --quiet       no progress bar, only errors on stderr\n"
	      "      --version     print the version and exit\n"
	      "  -h, --help        this help\n"
	      "\n"
	      "Exit status: 0 success, 1 the operation failed or was refused, 2 usage error.\n"
	      "Run 'rsr GROUP --help' for the verbs of a group. The manual is rsr(1), and\n"
	      "rsr-GROUP(1) for each group (rsr-remove(1) is rsr-install(1)).\n",
	      f);
}

static void log_cb(void *userdata, enum rsr_log_level level, const char *msg)
{
	struct cmd_env *env = userdata;

	cmd_progress_done(env);
	fprintf(stderr, "rsr: %s%s\n", level <= RSR_LOG_WARNING ? "warning: " : "", msg);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"threads", required_argument, NULL, 'j'}, {"verbose", no_argument, NULL, 'v'},
	    {"quiet", no_argument, NULL, 'q'},	       {"version", no_argument, NULL, 'V'},
	    {"help", no_argument, NULL, 'h'},	       {NULL, 0, NULL, 0},
	};
	struct cmd_env env = {.argv0 = argv[0]};
	int c, r;

	/* '+': stop at the first non-option, which is the group. */
	while ((c = getopt_long(argc, argv, "+j:vqh", opts, NULL)) != -1) {
		switch (c) {
		case 'j':
			if (cmd_threads_option(optarg, &env.threads) != EXIT_OK) {
				fputs("rsr: see 'rsr --help'\n", stderr);
				return EXIT_USAGE;
			}
			break;
		case 'v':
			env.verbose++;
			break;
		case 'q':
			env.quiet = true;
			break;
		case 'V':
			printf("rsr %s\n", RSR_VERSION);
			return EXIT_OK;
		case 'h':
			usage(stdout);
			return EXIT_OK;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (rsr_ctx_new(&env.ctx) < 0)
		return cmd_error(&env, -ENOMEM, "out of memory");
	rsr_ctx_set_threads(env.ctx, env.threads);
	rsr_ctx_set_log(env.ctx, log_cb, &env);
	rsr_ctx_set_log_level(env.ctx, env.quiet ? RSR_LOG_WARNING : env.verbose ? RSR_LOG_DEBUG : RSR_LOG_NOTICE);

	r = -1;
	for (const struct group *g = groups; g->name; g++) {
		if (!strcmp(argv[optind], g->name)) {
			int sub = optind + 1;
			char name[64];

			/* A group without verbs parses from its own name: getopt says "rsr graft: ...". */
			snprintf(name, sizeof(name), "rsr %s", g->name);
			argv[optind] = name;
			optind = 0; /* reset getopt for the verb's own options */
			r = g->run(&env, argc - sub, argv + sub);
			if (r == EXIT_USAGE && !env.usage_hinted)
				fprintf(stderr, "rsr: see 'rsr %s --help'\n", g->name);
			if (r == EXIT_FAIL && env.json)
				cmd_print_json_error(&env);
			break;
		}
	}
	if (r < 0) {
		if (!strcmp(argv[optind], "help"))
			usage(stdout), r = EXIT_OK;
		else
			r = cmd_usage_error("'%s' is not an rsr command; see 'rsr --help'", argv[optind]);
	}
	cmd_progress_done(&env);
	rsr_ctx_free(env.ctx);
	if (fflush(stdout) != 0 && r == EXIT_OK)
		r = cmd_error(&env, -EIO, "cannot write to standard output");
	return r;
}
