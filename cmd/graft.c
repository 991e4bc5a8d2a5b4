/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * rsr graft, ungraft, status, restart-services: activate cryptexes over the
 * base system of a root, go back to the base, and report what runs old code.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "rsr/graft.h"
#include "rsr/response.h"

/*
 * These commands take no verb: the dispatcher hands them the words after
 * their name, so they step back one word to give getopt their own name as
 * argv[0].
 */
#define OWN_ARGS(argc, argv)                                                                                           \
	do {                                                                                                           \
		(argc)++;                                                                                              \
		(argv)--;                                                                                              \
	} while (0)

static int open_root(struct cmd_env *env, const char *root, struct rsr_graft **ret)
{
	int r;

	/* Every command first finishes or rolls back an interrupted install or remove. */
	if (cmd_recover_first(env, root) != EXIT_OK)
		return EXIT_FAIL;
	r = rsr_graft_open(env->ctx, root ? root : "/", ret);
	return r < 0 ? cmd_fail(env, r) : EXIT_OK;
}

int cmd_graft(struct cmd_env *env, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"root", required_argument, NULL, 'r'},
	    {"add", required_argument, NULL, 'a'},
	    {"remove", required_argument, NULL, 'R'},
	    {"no-mount", no_argument, NULL, 'n'},
	    {"wait", optional_argument, NULL, 'w'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *root = NULL, *add[64], *remove[64];
	size_t n_add = 0, n_remove = 0;
	bool no_mount = false;
	struct rsr_graft *g = NULL;
	int c, r, ret = EXIT_OK;

	OWN_ARGS(argc, argv);
	while ((c = getopt_long(argc, argv, "r:a:h", opts, NULL)) != -1) {
		switch (c) {
		case 'r':
			root = optarg;
			break;
		case 'a':
			if (n_add >= sizeof(add) / sizeof(add[0]))
				return cmd_usage_error("at most 64 --add options");
			add[n_add++] = optarg;
			break;
		case 'R':
			if (n_remove >= sizeof(remove) / sizeof(remove[0]))
				return cmd_usage_error("at most 64 --remove options");
			remove[n_remove++] = optarg;
			break;
		case 'n':
			no_mount = true;
			break;
		case 'w':
			if ((r = cmd_wait_option(env, optarg)) != EXIT_OK)
				return r;
			break;
		case 'h':
			printf("Usage: rsr graft [--root DIR] [--add FILE.cptx]... [--remove SLOT]... [--no-mount]\n"
			       "                 [--wait[=SECS]]\n\n"
			       "Grafts the current cryptex of every slot over the base directories of DIR\n"
			       "(default /): verifies each new image (signature against DIR/etc/rsr/keys.d,\n"
			       "every block, base build from DIR's os-release), mounts it read-only and\n"
			       "stacks it with overlayfs above the base. A slot already grafted is swapped\n"
			       "with no moment at which a path is missing.\n\n"
			       "  -r, --root DIR     the device root (default /)\n"
			       "  -a, --add FILE     install FILE as the current image of its slot first\n"
			       "      --remove SLOT  drop the slot's current image first (it is ungrafted)\n"
			       "      --no-mount     only install or remove; graft nothing\n"
			       "      --wait[=SECS]  wait (at most SECS seconds) for another rsr operation\n"
			       "                     changing DIR, instead of failing at once\n");
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind != argc)
		return cmd_usage(
		    "rsr graft [--root DIR] [--add FILE]... [--remove SLOT]... [--no-mount] [--wait[=SECS]]");
	if ((r = open_root(env, root, &g)) != EXIT_OK)
		return r;
	cmd_progress_enable(env);
	for (size_t i = 0; i < n_remove; i++) {
		r = rsr_graft_uninstall(env->ctx, g, remove[i]);
		if (r < 0)
			goto undo;
		if (!env->quiet)
			fprintf(stderr, "rsr: slot '%s' removed\n", remove[i]);
	}
	for (size_t i = 0; i < n_add; i++) {
		char *slot = NULL;
		r = rsr_graft_install(env->ctx, g, add[i], &slot);
		cmd_progress_done(env);
		if (r < 0)
			goto undo;
		if (!env->quiet)
			fprintf(stderr, "rsr: %s installed in slot '%s'\n", add[i], slot);
		free(slot);
	}
	if (no_mount) {
		r = rsr_graft_commit(env->ctx, g);
		if (r < 0)
			ret = cmd_fail(env, r);
		goto out;
	}
	r = rsr_graft_activate(env->ctx, g);
	cmd_progress_done(env);
	if (r < 0)
		goto undo;
	if (!env->quiet && r == 0)
		fprintf(stderr, "rsr: nothing to change\n");
	goto out;

undo:
	/* All or nothing: every slot this command changed gets its previous image back. */
	ret = cmd_fail(env, r);
	if (n_remove + n_add > 0) {
		r = rsr_graft_revert(env->ctx, g);
		if (r < 0)
			(void)cmd_fail(env, r);
		else if (!env->quiet)
			fprintf(stderr, "rsr: nothing changed: every slot has its previous image again\n");
	}
out:
	cmd_progress_done(env);
	rsr_graft_free(g);
	return ret;
}

int cmd_ungraft(struct cmd_env *env, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"root", required_argument, NULL, 'r'},
	    {"wait", optional_argument, NULL, 'w'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *root = NULL;
	struct rsr_graft *g = NULL;
	int c, r;

	OWN_ARGS(argc, argv);
	while ((c = getopt_long(argc, argv, "r:h", opts, NULL)) != -1) {
		switch (c) {
		case 'r':
			root = optarg;
			break;
		case 'w':
			if ((r = cmd_wait_option(env, optarg)) != EXIT_OK)
				return r;
			break;
		case 'h':
			printf("Usage: rsr ungraft [--root DIR] [--wait[=SECS]]\n\n"
			       "Back to the bare base: detaches every graft of DIR (default /). Processes\n"
			       "that hold files of an image keep them; its loop device goes with the last.\n"
			       "The installed images stay; 'rsr graft' grafts them again. --wait waits (at\n"
			       "most SECS seconds) for another rsr operation changing DIR.\n");
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind != argc)
		return cmd_usage("rsr ungraft [--root DIR] [--wait[=SECS]]");
	if ((r = open_root(env, root, &g)) != EXIT_OK)
		return r;
	r = rsr_graft_deactivate(env->ctx, g);
	rsr_graft_free(g);
	if (r < 0)
		return cmd_fail(env, r);
	if (!env->quiet && r == 0)
		fprintf(stderr, "rsr: nothing was grafted\n");
	return EXIT_OK;
}

/* NULL when out of memory. */
static json_t *strv_json(char **v, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; a && i < n; i++)
		if (json_array_append_new(a, json_string(v[i] ? v[i] : "")) < 0) {
			json_decref(a);
			a = NULL;
		}
	return a;
}

static json_t *jstr_or_null(const char *s)
{
	return s ? json_string(s) : json_null();
}

/* The report as JSON; NULL when any part of it could not be made (out of memory). */
static json_t *report_json(const struct rsr_graft_report *rep)
{
	json_t *o = json_object(), *slots = json_array(), *stale = json_array();
	bool ok = o && slots && stale;

	ok = ok && json_object_set_new(o, "root", json_string(rep->root)) == 0;
	ok = ok && json_object_set_new(o, "base",
				       json_pack("{s:o, s:o, s:o}", "name", jstr_or_null(rep->base_name), "version",
						 jstr_or_null(rep->base_version), "build",
						 jstr_or_null(rep->base_build))) == 0;
	ok = ok && json_object_set_new(o, "verity_available", json_boolean(rep->verity_available)) == 0;
	for (size_t i = 0; ok && i < rep->n_slots; i++) {
		const struct rsr_graft_slot_info *s = &rep->slots[i];
		json_t *so = json_pack(
		    "{s:s, s:o, s:o, s:o, s:o, s:b, s:b, s:o, s:o, s:b, s:b, s:o}", "slot", s->slot, "version",
		    jstr_or_null(s->version), "grafted_version", jstr_or_null(s->grafted_version), "root_hash",
		    jstr_or_null(s->root_hash), "image", jstr_or_null(s->image), "grafted", s->grafted, "pending",
		    s->pending, "mount", jstr_or_null(s->mount), "device", jstr_or_null(s->device), "verity", s->verity,
		    "direct_io", s->direct_io, "covers", strv_json(s->covers, s->n_covers));
		ok = so && json_object_set_new(so, "removed", json_boolean(s->removed)) == 0 &&
		     json_object_set_new(so, "corrupted", json_boolean(s->corrupted)) == 0 &&
		     json_object_set_new(so, "packages", strv_json(s->packages, s->n_packages)) == 0;
		ok = json_array_append_new(slots, so) == 0 && ok;
	}
	ok = ok && json_object_set_new(o, "slots", json_incref(slots)) == 0;
	ok = ok && json_object_set_new(o, "grafted_paths", strv_json(rep->grafted_paths, rep->n_grafted_paths)) == 0;
	json_t *paths = json_array();
	ok = ok && paths;
	for (size_t i = 0; ok && i < rep->n_paths; i++) {
		const struct rsr_graft_path_info *pi = &rep->paths[i];
		ok = json_array_append_new(paths, json_pack("{s:s, s:o, s:I}", "path", pi->path, "layers_option",
							    jstr_or_null(pi->layers_option), "stacked",
							    (json_int_t)pi->stacked)) == 0;
	}
	ok = ok && json_object_set_new(o, "overlays", json_incref(paths)) == 0;
	json_decref(paths);
	for (size_t i = 0; ok && i < rep->n_stale; i++) {
		const struct rsr_graft_stale_process *p = &rep->stale[i];
		ok = json_array_append_new(
			 stale, json_pack("{s:i, s:o, s:o, s:b, s:o, s:o, s:I}", "pid", p->pid, "command",
					  jstr_or_null(p->comm), "unit", jstr_or_null(p->unit), "system_unit",
					  p->system_unit, "file", jstr_or_null(p->file), "reason",
					  jstr_or_null(p->reason), "files", (json_int_t)p->n_files)) == 0;
	}
	ok = ok && json_object_set_new(o, "stale_processes", json_incref(stale)) == 0;
	json_t *held = json_array(), *holders = json_array();
	ok = ok && held && holders;
	for (size_t i = 0; ok && i < rep->n_held; i++) {
		const struct rsr_graft_held_device *h = &rep->held[i];
		ok = json_array_append_new(
			 held, json_pack("{s:s, s:o, s:o, s:o}", "device", h->device, "name", jstr_or_null(h->name),
					 "image", jstr_or_null(h->image), "open_count",
					 h->open_count >= 0 ? json_integer(h->open_count) : json_null())) == 0;
	}
	for (size_t i = 0; ok && i < rep->n_holders; i++) {
		const struct rsr_graft_holder *h = &rep->holders[i];
		ok = json_array_append_new(holders,
					   json_pack("{s:i, s:o, s:o, s:o, s:o}", "pid", h->pid, "command",
						     jstr_or_null(h->comm), "unit", jstr_or_null(h->unit), "file",
						     jstr_or_null(h->file), "how", jstr_or_null(h->how))) == 0;
	}
	ok = ok && json_object_set_new(o, "held_devices", json_incref(held)) == 0 &&
	     json_object_set_new(o, "holders", json_incref(holders)) == 0;
	json_decref(held);
	json_decref(holders);
	json_decref(slots);
	json_decref(stale);
	if (!ok) {
		json_decref(o);
		return NULL;
	}
	return o;
}

/* True if the unit is a service (systemctl can restart it). */
static bool is_service(const char *u)
{
	size_t l = u ? strlen(u) : 0;
	return l > 8 && strcmp(u + l - 8, ".service") == 0;
}

void cmd_print_restarted(const struct rsr_graft_report *rep, int n, FILE *f)
{
	bool first = true;

	fprintf(f, "Restarted %d service%s", n, n == 1 ? "" : "s");
	for (size_t i = 0; i < rep->n_stale; i++) {
		const char *u = rep->stale[i].unit;
		bool seen = false;
		if (!is_service(u) || !rep->stale[i].system_unit)
			continue;
		for (size_t j = 0; j < i && !seen; j++)
			seen = rep->stale[j].unit && rep->stale[j].system_unit && strcmp(rep->stale[j].unit, u) == 0;
		if (!seen) {
			fprintf(f, "%s%s", first ? ": " : ", ", u);
			first = false;
		}
	}
	fprintf(f, ".\n");
	for (size_t i = 0; i < rep->n_stale; i++) {
		const struct rsr_graft_stale_process *p = &rep->stale[i];
		if (is_service(p->unit) && p->system_unit)
			continue;
		if (is_service(p->unit))
			fprintf(f, "Not a system service, left to its user: %d %s (%s of a user's service manager)\n",
				p->pid, p->comm ? p->comm : "?", p->unit);
		else if (p->pid == 1)
			fprintf(f, "Not a service: 1 %s; 'systemctl daemon-reexec' restarts it\n",
				p->comm ? p->comm : "?");
		else
			fprintf(f, "Not in a service, restart by hand: %d %s (%s)\n", p->pid, p->comm ? p->comm : "?",
				p->unit ? p->unit : "no unit");
	}
}

static void print_stale(const struct rsr_graft_report *rep, FILE *f)
{
	for (size_t i = 0; i < rep->n_stale; i++) {
		const struct rsr_graft_stale_process *p = &rep->stale[i];
		fprintf(f, "  %7d %-16s %-28s %s (%s", p->pid, p->comm ? p->comm : "?", p->unit ? p->unit : "-",
			p->file ? p->file : "?", p->reason ? p->reason : "old code");
		if (p->n_files > 1)
			fprintf(f, "; %zu files", p->n_files);
		fprintf(f, ")\n");
	}
}

/* The devices of retired grafts still open, and what keeps them. */
static void print_held(const struct rsr_graft_report *rep, FILE *f)
{
	if (rep->n_held > 0) {
		fprintf(f, "Held:      %zu device%s of retired grafts %s still set up; %s go%s with the last user:\n",
			rep->n_held, rep->n_held == 1 ? "" : "s", rep->n_held == 1 ? "is" : "are",
			rep->n_held == 1 ? "it" : "they", rep->n_held == 1 ? "es" : "");
		for (size_t i = 0; i < rep->n_held; i++) {
			const struct rsr_graft_held_device *h = &rep->held[i];
			fprintf(f, "             %s", h->device);
			if (h->name)
				fprintf(f, " %s", h->name);
			if (h->open_count >= 0)
				fprintf(f, " (open %d)", h->open_count);
			fprintf(f, " over %s\n", h->image ? h->image : "?");
		}
	}
	if (rep->n_holders > 0) {
		fprintf(f, "Holders:   %zu process%s keep%s retired grafts alive:\n", rep->n_holders,
			rep->n_holders == 1 ? "" : "es", rep->n_holders == 1 ? "s" : "");
		for (size_t i = 0; i < rep->n_holders; i++) {
			const struct rsr_graft_holder *h = &rep->holders[i];
			fprintf(f, "             %d %s", h->pid, h->comm ? h->comm : "?");
			if (h->unit)
				fprintf(f, " (%s)", h->unit);
			fprintf(f, ": %s %s\n", h->how ? h->how : "?", h->file ? h->file : "?");
		}
	} else if (rep->n_held > 0) {
		fprintf(f, "Holders:   no process here has a file of them open, maps one or works in one:\n"
			   "           a mount in another mount namespace, a detached mount or the kernel holds them;\n"
			   "           they go at the next reboot\n");
	}
}

static void print_report(const struct rsr_graft_report *rep)
{
	printf("Root:      %s\n", rep->root);
	printf("Base:      %s", rep->base_name ? rep->base_name : "(unknown)");
	if (rep->base_version)
		printf(" %s", rep->base_version);
	printf(" (build %s)\n", rep->base_build ? rep->base_build : "unknown");
	printf("Verity:    %s\n", rep->verity_available ? "device-mapper available; images mount through dm-verity"
							: "not available in this kernel; images are verified block by "
							  "block before they are grafted");
	if (rep->n_slots == 0)
		printf("Cryptexes: none installed\n");
	for (size_t i = 0; i < rep->n_slots; i++) {
		const struct rsr_graft_slot_info *s = &rep->slots[i];
		printf("\nSlot %s\n", s->slot);
		if (s->version)
			printf("  Version:   %s\n", s->version);
		if (s->grafted_version && s->removed)
			printf("  Grafted:   %s (the slot has no current image; 'rsr graft' ungrafts it)\n",
			       s->grafted_version);
		else if (s->grafted_version && !s->grafted)
			printf("  Grafted:   %s (the current image differs; run 'rsr graft')\n", s->grafted_version);
		if (s->corrupted)
			printf(
			    "  CORRUPTED: dm-verity read a block of the image that does not match its signed hash "
			    "tree,\n"
			    "             so the image file is damaged on disk and reads of that block fail with EIO;\n"
			    "             'rsr graft --add' a good copy of it\n");
		printf("  State:     %s\n", s->grafted ? "grafted"
					    : s->mount ? "grafted image is not the current one"
						       : "installed, not grafted");
		if (s->root_hash)
			printf("  Root hash: %s\n", s->root_hash);
		printf("  Covers:   ");
		for (size_t j = 0; j < s->n_covers; j++)
			printf(" /%s", s->covers[j]);
		printf("\n");
		for (size_t j = 0; j < s->n_packages; j++)
			printf("  %-10s %s\n", j ? "" : "Packages:", s->packages[j]);
		if (s->image)
			printf("  Image:     %s\n", s->image);
		if (s->mount)
			printf("  Mounted:   %s from %s (%s%s)\n", s->mount, s->device ? s->device : "?",
			       s->verity ? "dm-verity" : "no dm-verity", s->direct_io ? ", direct I/O" : "");
	}
	printf("\n");
	for (size_t i = 0; i < rep->n_paths; i++) {
		const struct rsr_graft_path_info *pi = &rep->paths[i];
		printf("Grafted:   %s", pi->path);
		if (pi->layers_option)
			printf(" (overlay with '%s'", pi->layers_option);
		if (pi->layers_option && pi->stacked)
			printf("; %u older graft%s covered beneath until ungraft: this kernel cannot mount beneath",
			       pi->stacked, pi->stacked == 1 ? "" : "s");
		printf("%s\n", pi->layers_option ? ")" : "");
	}
	if (rep->n_stale == 0) {
		printf("Old code:  no process runs code from superseded images\n");
	} else {
		printf("Old code:  %zu process%s still run%s code from superseded images:\n", rep->n_stale,
		       rep->n_stale == 1 ? "" : "es", rep->n_stale == 1 ? "s" : "");
		print_stale(rep, stdout);
	}
	print_held(rep, stdout);
}

static int get_report(struct cmd_env *env, int argc, char **argv, const char *usage, bool *json, bool *dry_run,
		      struct rsr_graft_report **ret)
{
	static const struct option opts[] = {
	    {"root", required_argument, NULL, 'r'},
	    {"json", no_argument, NULL, 'J'},
	    {"dry-run", no_argument, NULL, 'N'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *root = NULL;
	struct rsr_graft *g = NULL;
	int c, r;

	while ((c = getopt_long(argc, argv, "r:h", opts, NULL)) != -1) {
		switch (c) {
		case 'r':
			root = optarg;
			break;
		case 'J':
			if (!json)
				return cmd_usage(usage);
			*json = env->json = true;
			break;
		case 'N':
			if (!dry_run)
				return cmd_usage(usage);
			*dry_run = true;
			break;
		case 'h':
			return -1;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind != argc)
		return cmd_usage(usage);
	/* A report reads the state an operation in progress leaves: wait for it. */
	rsr_ctx_set_lock_wait(env->ctx, -1);
	if ((r = open_root(env, root, &g)) != EXIT_OK)
		return r;
	r = rsr_graft_status(env->ctx, g, ret);
	rsr_graft_free(g);
	return r < 0 ? cmd_fail(env, r) : EXIT_OK;
}

int cmd_status(struct cmd_env *env, int argc, char **argv)
{
	struct rsr_graft_report *rep = NULL;
	bool json = false;
	int r;

	OWN_ARGS(argc, argv);
	r = get_report(env, argc, argv, "rsr status [--root DIR] [--json]", &json, NULL, &rep);
	if (r < 0) {
		printf("Usage: rsr status [--root DIR] [--json]\n\n"
		       "Shows the base OS, each installed and grafted cryptex (slot, version, root\n"
		       "hash, mount, dm-verity or not) and the processes that still run code from\n"
		       "superseded or ungrafted images or from base files a graft now shadows:\n"
		       "PID, command, systemd unit, and one such file.\n");
		return EXIT_OK;
	}
	if (r != EXIT_OK)
		return r;
	{
		struct rsr_device *dev = NULL;
		struct rsr_device_state *st = NULL;
		int e;

		if ((e = rsr_device_open(env->ctx, rep->root, &dev)) < 0 ||
		    (e = rsr_device_get_state(env->ctx, dev, &st)) < 0) {
			r = cmd_fail(env, e);
		} else if (json) {
			json_t *o = report_json(rep);
			if (o && json_object_set_new(o, "response", cmd_response_state_json(st)) < 0) {
				json_decref(o);
				o = NULL;
			}
			r = cmd_print_json(env, o) != EXIT_OK ? EXIT_FAIL : EXIT_OK;
		} else {
			cmd_print_response_state(st);
			print_report(rep);
		}
		rsr_device_state_free(st);
		rsr_device_free(dev);
	}
	rsr_graft_report_free(rep);
	return r;
}

int cmd_restart_services(struct cmd_env *env, int argc, char **argv)
{
	struct rsr_graft_report *rep = NULL;
	bool dry_run = false;
	int r, ret = EXIT_OK;

	OWN_ARGS(argc, argv);
	r = get_report(env, argc, argv, "rsr restart-services [--root DIR] [--dry-run]", NULL, &dry_run, &rep);
	if (r < 0) {
		printf("Usage: rsr restart-services [--root DIR] [--dry-run]\n\n"
		       "Restarts, with 'systemctl try-restart', the systemd services whose processes\n"
		       "still run code from superseded images. Without systemd, or for processes\n"
		       "outside any service, says which processes need restarting.\n");
		return EXIT_OK;
	}
	if (r != EXIT_OK)
		return r;
	if (rep->n_stale == 0) {
		if (!env->quiet)
			printf("No process runs code from superseded images.\n");
		goto out;
	}
	if (dry_run) {
		printf("Would restart the services of these processes:\n");
		print_stale(rep, stdout);
		goto out;
	}
	r = rsr_graft_restart_services(env->ctx, rep);
	if (r < 0) {
		ret = cmd_fail(env, r);
		fprintf(stderr, "rsr: these processes need restarting to leave the superseded code:\n");
		print_stale(rep, stderr);
		goto out;
	}
	cmd_print_restarted(rep, r, stdout);
out:
	rsr_graft_report_free(rep);
	return ret;
}
