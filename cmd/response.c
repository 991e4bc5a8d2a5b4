/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * rsr response (create, info, notes) for the vendor, and rsr install /
 * rsr remove for the device; also the response part of rsr status.
 */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmd.h"
#include "rsr/graft.h"
#include "rsr/response.h"

/* Splits NAME[@ARCH]=BASE:NEW. */
static bool parse_slot(char *arg, struct rsr_response_slot_spec *s)
{
	char *eq = strchr(arg, '='), *colon, *at;

	if (!eq)
		return false;
	*eq = '\0';
	colon = strchr(eq + 1, ':');
	if (!colon)
		return false;
	*colon = '\0';
	at = strchr(arg, '@');
	if (at)
		*at = '\0';
	s->slot = arg;
	s->arch = at ? at + 1 : NULL;
	s->base_path = eq + 1;
	s->new_path = colon + 1;
	return *s->slot && *s->base_path && *s->new_path && (!at || *s->arch);
}

static int response_create(struct cmd_env *env, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"output", required_argument, NULL, 'o'},
	    {"base-build", required_argument, NULL, 'b'},
	    {"letter", required_argument, NULL, 'l'},
	    {"key", required_argument, NULL, 'k'},
	    {"slot", required_argument, NULL, 's'},
	    {"previous", required_argument, NULL, 'p'},
	    {"advisories", required_argument, NULL, 'a'},
	    {"restart", required_argument, NULL, 'R'},
	    {"sequence", required_argument, NULL, 'S'},
	    {"timestamp", required_argument, NULL, 't'},
	    {"level", required_argument, NULL, 'L'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct rsr_response_slot_spec slots[64];
	struct rsr_response_create_opts o = {.restart = RSR_RESTART_SERVICES, .slots = slots};
	struct rsr_patch_create_opts po = {0};
	const char *out = NULL, *keypath = NULL, *sde = getenv("SOURCE_DATE_EPOCH");
	unsigned long long n;
	struct rsr_key *key = NULL;
	bool ts_set = false;
	int c, r;

	while ((c = getopt_long(argc, argv, "o:k:h", opts, NULL)) != -1) {
		switch (c) {
		case 'o':
			out = optarg;
			break;
		case 'b':
			o.base_build = optarg;
			break;
		case 'l':
			o.letter = optarg;
			break;
		case 'k':
			keypath = optarg;
			break;
		case 's':
			if (o.n_slots >= 64)
				return cmd_usage_error("at most 64 --slot options");
			if (!parse_slot(optarg, &slots[o.n_slots++]))
				return cmd_usage_error("--slot takes NAME[@ARCH]=BASE.cptx:NEW.cptx");
			break;
		case 'p':
			o.previous_dir = optarg;
			break;
		case 'a':
			o.advisories = optarg;
			break;
		case 'R':
			if (!strcmp(optarg, "none"))
				o.restart = RSR_RESTART_NONE;
			else if (!strcmp(optarg, "services"))
				o.restart = RSR_RESTART_SERVICES;
			else if (!strcmp(optarg, "reboot"))
				o.restart = RSR_RESTART_REBOOT;
			else
				return cmd_usage_error("--restart takes none, services or reboot");
			break;
		case 'S':
			if (!cmd_parse_uint(optarg, UINT64_C(1) << 53, &n) || n == 0)
				return cmd_usage_error("--sequence takes a positive number");
			o.sequence = n;
			break;
		case 't':
			if (!cmd_parse_uint(optarg, UINT64_C(1) << 53, &n))
				return cmd_usage_error("--timestamp takes seconds since 1970");
			o.timestamp = n;
			ts_set = true;
			break;
		case 'L':
			if (!cmd_parse_uint(optarg, 22, &n) || n == 0)
				return cmd_usage_error("--level takes 1 to 22");
			po.level = (unsigned)n;
			break;
		case 'h':
			printf("Usage: rsr response create -o DIR --base-build BUILD --letter a --key KEY\n"
			       "           --slot NAME[@ARCH]=BASE.cptx:NEW.cptx [--slot ...] --advisories FILE\n"
			       "           [--previous PREV_DIR] [--restart none|services|reboot] [--sequence N]\n"
			       "           [--timestamp SECONDS] [--level N]\n\n"
			       "Makes a signed response directory: per slot, the forward patch from the base\n"
			       "image (and, with --previous, from the previous response's image, so that a\n"
			       "device on it goes straight to this one), the reverse patch back to the base\n"
			       "image, and the signed manifest with the advisories (see\n"
			       "docs/formats/response.md). ARCH defaults to this machine's.\n");
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind != argc || !out || !o.base_build || !o.letter || !keypath || !o.n_slots || !o.advisories)
		return cmd_usage("rsr response create -o DIR --base-build BUILD --letter a --key KEY "
				 "--slot NAME=BASE.cptx:NEW.cptx --advisories FILE");
	if (!ts_set && sde && *sde) {
		if (!cmd_parse_uint(sde, UINT64_C(1) << 53, &n))
			return cmd_usage_error("SOURCE_DATE_EPOCH is not a number of seconds: %s", sde);
		o.timestamp = n;
	} else if (!ts_set) {
		o.timestamp = (uint64_t)time(NULL);
	}
	o.patch_opts = &po;
	r = rsr_key_load_private(env->ctx, keypath, &key);
	if (r < 0)
		return cmd_fail(env, r);
	o.key = key;
	cmd_progress_enable(env);
	r = rsr_response_create(env->ctx, out, &o);
	cmd_progress_done(env);
	rsr_key_free(key);
	if (r < 0)
		return cmd_fail(env, r);
	if (!env->quiet) {
		struct rsr_response *resp;
		if (rsr_response_open(env->ctx, out, NULL, &resp) == 0) {
			char a[32], b[32];
			printf("%s: response (%s) for %s, sequence %llu\n", out, rsr_response_letter(resp),
			       rsr_response_base_build(resp), (unsigned long long)rsr_response_sequence(resp));
			for (size_t i = 0; i < rsr_response_image_count(resp); i++) {
				const struct rsr_response_image *im = rsr_response_image(resp, i);
				printf("  %s/%s: forward %s, reverse %s, for an image of %s\n", im->slot, im->arch,
				       cmd_bytes(im->forward_size, a), cmd_bytes(im->reverse_size, b),
				       cmd_bytes(im->size, (char[32]){0}));
			}
			rsr_response_free(resp);
		}
	}
	return EXIT_OK;
}

static json_t *response_json(const struct rsr_response *resp)
{
	json_t *adv = json_array(), *imgs = json_array(), *doc;
	bool ok = true;

	for (size_t i = 0; i < rsr_response_advisory_count(resp); i++) {
		const struct rsr_advisory *a = rsr_response_advisory(resp, i);
		json_t *cves = json_array(), *files = json_array();
		for (size_t k = 0; k < a->n_cves; k++)
			cmd_json_push(&ok, cves, json_string(a->cves[k]));
		for (size_t k = 0; k < a->n_files; k++)
			cmd_json_push(&ok, files, json_string(a->files[k]));
		cmd_json_push(&ok, adv,
			      json_pack("{s:s, s:s, s:s, s:s, s:o, s:o}", "id", a->id, "title", a->title, "severity",
					a->severity, "summary", a->summary, "cves", cves, "affected_files", files));
	}
	for (size_t i = 0; i < rsr_response_image_count(resp); i++) {
		const struct rsr_response_image *im = rsr_response_image(resp, i);
		cmd_json_push(&ok, imgs,
			      json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:s, s:s, s:I, s:I, s:I, s:i}", "slot",
					im->slot, "arch", im->arch, "version", im->version, "root_hash", im->root_hash,
					"base_version", im->base_version, "size", (json_int_t)im->size, "forward",
					im->forward, "reverse", im->reverse, "forward_size",
					(json_int_t)im->forward_size, "reverse_size", (json_int_t)im->reverse_size,
					"base_size", (json_int_t)im->base_size, "forward_inputs",
					(int)im->n_forward_inputs));
	}
	doc = json_pack("{s:s, s:I, s:s, s:s, s:I, s:o, s:o}", "letter", rsr_response_letter(resp), "sequence",
			(json_int_t)rsr_response_sequence(resp), "base_build", rsr_response_base_build(resp), "restart",
			rsr_restart_name(rsr_response_restart(resp)), "timestamp",
			(json_int_t)rsr_response_timestamp(resp), "advisories", adv, "images", imgs);
	if (!ok) {
		json_decref(doc);
		return NULL;
	}
	return doc;
}

static int open_with_keys(struct cmd_env *env, const char *dir, char **keys, size_t nkeys, struct rsr_response **ret)
{
	struct rsr_keyring *ring = NULL;
	int r;

	if (nkeys) {
		if (rsr_keyring_new(&ring) < 0)
			return cmd_error(env, -ENOMEM, "out of memory");
		for (size_t i = 0; i < nkeys; i++)
			if ((r = rsr_keyring_add_file(env->ctx, ring, keys[i])) < 0) {
				rsr_keyring_free(ring);
				return cmd_fail(env, r);
			}
	}
	r = rsr_response_open(env->ctx, dir, ring, ret);
	rsr_keyring_free(ring);
	return r < 0 ? cmd_fail(env, r) : EXIT_OK;
}

static int response_info(struct cmd_env *env, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"json", no_argument, NULL, 'J'},
	    {"pubkey", required_argument, NULL, 'p'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	char *keys[16];
	size_t nkeys = 0;
	bool json = false;
	struct rsr_response *resp;
	int c, r;

	while ((c = getopt_long(argc, argv, "p:h", opts, NULL)) != -1) {
		switch (c) {
		case 'J':
			json = env->json = true;
			break;
		case 'p':
			if (nkeys >= 16)
				return cmd_usage_error("at most 16 --pubkey options");
			keys[nkeys++] = optarg;
			break;
		case 'h':
			printf("Usage: rsr response info DIR [--json] [--pubkey KEY.pub...]\n\n"
			       "Shows a response: letter, sequence, base build, restart need, advisories and,\n"
			       "per slot and architecture, the versions and patch sizes. With --pubkey the\n"
			       "signature is checked first.\n");
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind + 1 != argc)
		return cmd_usage("rsr response info DIR [--json]");
	if ((r = open_with_keys(env, argv[optind], keys, nkeys, &resp)) != EXIT_OK)
		return r;
	if (json) {
		if (cmd_print_json(env, response_json(resp)) != EXIT_OK)
			r = EXIT_FAIL;
	} else {
		char a[32], b[32], s[32];
		printf("Response:   (%s), sequence %llu\n", rsr_response_letter(resp),
		       (unsigned long long)rsr_response_sequence(resp));
		printf("Base build: %s\n", rsr_response_base_build(resp));
		printf("Restart:    %s\n", rsr_restart_name(rsr_response_restart(resp)));
		printf("Signature:  %s\n", nkeys ? "verified" : "not checked (give --pubkey)");
		printf("Advisories:\n");
		for (size_t i = 0; i < rsr_response_advisory_count(resp); i++) {
			const struct rsr_advisory *adv = rsr_response_advisory(resp, i);
			printf("  %s  %-8s %s", adv->id, adv->severity, adv->title);
			for (size_t k = 0; k < adv->n_cves; k++)
				printf("%s%s", k ? ", " : " (", adv->cves[k]);
			printf("%s\n", adv->n_cves ? ")" : "");
		}
		printf("Images:\n");
		for (size_t i = 0; i < rsr_response_image_count(resp); i++) {
			const struct rsr_response_image *im = rsr_response_image(resp, i);
			printf("  %s/%s: %s -> %s (image %s); forward %s from %zu input%s (%.2f%% of the image), "
			       "reverse %s\n",
			       im->slot, im->arch, im->base_version, im->version, cmd_bytes(im->size, s),
			       cmd_bytes(im->forward_size, a), im->n_forward_inputs,
			       im->n_forward_inputs == 1 ? "" : "s",
			       100.0 * (double)im->forward_size / (double)(im->size ? im->size : 1),
			       cmd_bytes(im->reverse_size, b));
		}
	}
	rsr_response_free(resp);
	return r;
}

static int response_notes(struct cmd_env *env, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"os-name", required_argument, NULL, 'n'},
	    {"pubkey", required_argument, NULL, 'p'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *os = NULL;
	char *keys[16], *md;
	size_t nkeys = 0;
	struct rsr_response *resp;
	int c, r;

	while ((c = getopt_long(argc, argv, "p:h", opts, NULL)) != -1) {
		switch (c) {
		case 'n':
			os = optarg;
			break;
		case 'p':
			if (nkeys >= 16)
				return cmd_usage_error("at most 16 --pubkey options");
			keys[nkeys++] = optarg;
			break;
		case 'h':
			printf("Usage: rsr response notes DIR [--os-name NAME] [--pubkey KEY.pub...]\n\n"
			       "Prints the security notes of a response as Markdown, from its signed advisories.\n");
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind + 1 != argc)
		return cmd_usage("rsr response notes DIR [--os-name NAME]");
	if ((r = open_with_keys(env, argv[optind], keys, nkeys, &resp)) != EXIT_OK)
		return r;
	r = rsr_response_notes(env->ctx, resp, os, &md);
	rsr_response_free(resp);
	if (r < 0)
		return cmd_fail(env, r);
	fputs(md, stdout);
	free(md);
	return EXIT_OK;
}

int cmd_response(struct cmd_env *env, int argc, char **argv)
{
	static const struct verb verbs[] = {
	    {"create", response_create, "make a signed response from base and fixed images"},
	    {"info", response_info, "show what a response holds"},
	    {"notes", response_notes, "print a response's security notes (Markdown)"},
	    {NULL, NULL, NULL},
	};
	return cmd_dispatch(env, "response", verbs, argc, argv);
}

/* ---- device verbs ---- */

static int device_open(struct cmd_env *env, const char *root, struct rsr_device **ret)
{
	int r = rsr_device_open(env->ctx, root ? root : "/", ret);
	return r < 0 ? cmd_fail(env, r) : EXIT_OK;
}

int cmd_recover_first(struct cmd_env *env, const char *root)
{
	struct rsr_device *dev;
	int r;

	if (device_open(env, root, &dev) != EXIT_OK)
		return EXIT_FAIL;
	r = rsr_device_recover(env->ctx, dev, 0);
	rsr_device_free(dev);
	return r < 0 ? cmd_fail(env, r) : EXIT_OK;
}

static void print_after(struct cmd_env *env, const char *root, bool installed)
{
	struct rsr_device *dev;
	struct rsr_device_state *st = NULL;
	struct rsr_graft *g;
	struct rsr_graft_report *rep = NULL;

	if (rsr_device_open(env->ctx, root, &dev) < 0)
		return;
	if (rsr_device_get_state(env->ctx, dev, &st) == 0) {
		cmd_print_response_state(st);
		if (installed && st->response && rsr_response_restart(st->response) == RSR_RESTART_REBOOT)
			printf("Restart:   this response needs a reboot to take full effect\n");
	}
	if (rsr_graft_open(env->ctx, root, &g) == 0) {
		if (rsr_graft_status(env->ctx, g, &rep) == 0) {
			if (rep->n_stale)
				printf("Old code:  %zu process%s still run%s superseded code; 'rsr status' lists them, "
				       "'rsr restart-services' restarts their services\n",
				       rep->n_stale, rep->n_stale == 1 ? "" : "es", rep->n_stale == 1 ? "s" : "");
			else
				printf("Old code:  no process runs superseded code\n");
			rsr_graft_report_free(rep);
		}
		rsr_graft_free(g);
	}
	rsr_device_state_free(st);
	rsr_device_free(dev);
}

static int device_verb(struct cmd_env *env, int argc, char **argv, bool install)
{
	static const struct option opts[] = {
	    {"root", required_argument, NULL, 'r'}, {"no-graft", no_argument, NULL, 'n'},
	    {"wait", optional_argument, NULL, 'w'}, {"keep-base", no_argument, NULL, 'K'},
	    {"force", no_argument, NULL, 'f'},	    {"reinstall", no_argument, NULL, 'R'},
	    {"help", no_argument, NULL, 'h'},	    {NULL, 0, NULL, 0},
	};
	const char *root = "/";
	bool force = false;
	unsigned flags = 0;
	struct rsr_device *dev;
	int c, r;

	while ((c = getopt_long(argc, argv, "r:h", opts, NULL)) != -1) {
		switch (c) {
		case 'r':
			root = optarg;
			break;
		case 'n':
			flags |= RSR_DEVICE_NO_GRAFT;
			break;
		case 'w':
			if ((r = cmd_wait_option(env, optarg)) != EXIT_OK)
				return r;
			break;
		case 'f':
			if (install)
				return cmd_usage_error("--force is an option of rsr remove");
			force = true;
			break;
		case 'K':
			if (!install)
				return EXIT_USAGE;
			flags |= RSR_DEVICE_KEEP_BASE;
			break;
		case 'R':
			if (!install)
				return cmd_usage_error("--reinstall is an option of rsr install");
			flags |= RSR_DEVICE_REINSTALL;
			break;
		case 'h':
			if (install)
				printf(
				    "Usage: rsr install DIR [--root DIR] [--no-graft] [--wait[=SECS]] [--keep-base]\n"
				    "                   [--reinstall]\n\n"
				    "Installs the response in DIR: checks its signature against the root's\n"
				    "etc/rsr/keys.d, that it is for this base build and newer than any response\n"
				    "installed before (or, with --reinstall, the one removed last), applies the\n"
				    "patch for each slot's current image into an\n"
				    "incoming area, verifies every result against the signed root hash, then\n"
				    "switches all slots at once (journaled: safe across power loss) and grafts.\n"
				    "--keep-base keeps the base images (costs their size on disk; remove is then\n"
				    "a copy instead of a patch).\n"
				    "Another rsr operation changing the root (pid and command named) fails this at\n"
				    "once; --wait waits for it to end, --wait=SECS at most SECS seconds.\n");
			else
				printf("Usage: rsr remove [--root DIR] [--no-graft] [--wait[=SECS]] [--force]\n\n"
				       "Goes back to the base images with the installed response's reverse patches\n"
				       "(or the kept base copies), verifies each against its signed root hash,\n"
				       "switches all slots at once and grafts the base images. The high-water mark\n"
				       "stays: an older response cannot be installed afterwards, this one again\n"
				       "only with --reinstall (the timer never does). When the policy\n"
				       "(etc/rsr/rsr.conf) says allow_remove = no, only --force removes.\n"
				       "Another rsr operation changing the root (pid and command named) fails this at\n"
				       "once; --wait waits for it to end, --wait=SECS at most SECS seconds.\n");
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (install ? optind + 1 != argc : optind != argc)
		return cmd_usage(install ? "rsr install DIR [--root DIR] [--no-graft]"
					 : "rsr remove [--root DIR] [--no-graft]");
	if (!install && !force && (r = cmd_policy_check_remove(env, root)) != EXIT_OK)
		return r;
	if (device_open(env, root, &dev) != EXIT_OK)
		return EXIT_FAIL;
	cmd_progress_enable(env);
	r = install ? rsr_device_install(env->ctx, dev, argv[optind], flags) : rsr_device_remove(env->ctx, dev, flags);
	cmd_progress_done(env);
	rsr_device_free(dev);
	if (r < 0)
		return cmd_fail(env, r);
	if (r == 1)
		printf(install ? "Response already installed.\n" : "No response is installed; nothing to remove.\n");
	if (!env->quiet)
		print_after(env, root, install);
	return EXIT_OK;
}

#define OWN_ARGS(argc, argv)                                                                                           \
	do {                                                                                                           \
		(argc)++;                                                                                              \
		(argv)--;                                                                                              \
	} while (0)

int cmd_install(struct cmd_env *env, int argc, char **argv)
{
	OWN_ARGS(argc, argv);
	return device_verb(env, argc, argv, true);
}

int cmd_remove(struct cmd_env *env, int argc, char **argv)
{
	OWN_ARGS(argc, argv);
	return device_verb(env, argc, argv, false);
}

/* ---- the response part of rsr status ---- */

void cmd_print_response_state(const struct rsr_device_state *st)
{
	char a[32], b[32], c[32];

	printf("Version:   %s%s%s%s%s\n", st->base_name ? st->base_name : (st->base_build ? st->base_build : "unknown"),
	       st->letter ? " (" : "", st->letter ? st->letter : "", st->letter ? ")" : "",
	       st->letter ? "" : " (no response installed)");
	if (st->interrupted)
		printf("Response:  an interrupted operation awaits recovery (any rsr command finishes it)\n");
	if (st->letter)
		printf("Response:  (%s), sequence %llu; highest ever installed %llu\n", st->letter,
		       (unsigned long long)st->sequence, (unsigned long long)st->high_water);
	else if (st->high_water)
		printf("Response:  none (highest ever installed: sequence %llu)\n", (unsigned long long)st->high_water);
	if (st->removed_letter && !st->letter) {
		char when[32];
		rsr_device_format_time(st->removed_at, when);
		printf("Removed:   response (%s) was removed on %s; 'rsr update --reinstall' installs it again\n",
		       st->removed_letter, when);
	}
	if (st->response) {
		printf("Fixes:\n");
		for (size_t i = 0; i < rsr_response_advisory_count(st->response); i++) {
			const struct rsr_advisory *adv = rsr_response_advisory(st->response, i);
			printf("  %s %-8s %s", adv->id, adv->severity, adv->title);
			for (size_t k = 0; k < adv->n_cves; k++)
				printf("%s%s", k ? ", " : " (", adv->cves[k]);
			printf("%s\n", adv->n_cves ? ")" : "");
		}
	}
	printf("Disk:      images %s, reverse patches %s, kept base copies %s\n", cmd_bytes(st->images_bytes, a),
	       cmd_bytes(st->reverse_bytes, b), cmd_bytes(st->base_copy_bytes, c));
}

json_t *cmd_response_state_json(const struct rsr_device_state *st)
{
	json_t *fixes = json_array(), *removed = json_null(), *doc;
	bool ok = true;
	char when[32];

	for (size_t i = 0; st->response && i < rsr_response_advisory_count(st->response); i++) {
		const struct rsr_advisory *adv = rsr_response_advisory(st->response, i);
		json_t *cves = json_array();
		for (size_t k = 0; k < adv->n_cves; k++)
			cmd_json_push(&ok, cves, json_string(adv->cves[k]));
		cmd_json_push(&ok, fixes,
			      json_pack("{s:s, s:s, s:s, s:o}", "id", adv->id, "title", adv->title, "severity",
					adv->severity, "cves", cves));
	}
	if (st->removed_letter)
		removed = json_pack("{s:s, s:I, s:s}", "letter", st->removed_letter, "sequence",
				    (json_int_t)st->removed_sequence, "at", cmd_time_iso(st->removed_at, when));
	doc =
	    json_pack("{s:o, s:o, s:I, s:I, s:b, s:o, s:{s:I, s:I, s:I}, s:o}", "letter",
		      st->letter ? json_string(st->letter) : json_null(), "version_suffix",
		      st->letter ? json_sprintf("(%s)", st->letter) : json_null(), "sequence", (json_int_t)st->sequence,
		      "high_water", (json_int_t)st->high_water, "interrupted", st->interrupted, "advisories", fixes,
		      "disk", "images", (json_int_t)st->images_bytes, "reverse_patches", (json_int_t)st->reverse_bytes,
		      "base_copies", (json_int_t)st->base_copy_bytes, "removed", removed);
	if (!ok) {
		json_decref(doc);
		return NULL;
	}
	return doc;
}
