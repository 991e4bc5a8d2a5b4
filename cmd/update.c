/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * rsr check and rsr update: the device's side of the repository. Reads the
 * policy (etc/rsr/rsr.conf) and machine id under --root, then lets librsr
 * do the TUF workflow, the choice, the download and the install.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cmd.h"
#include "rsr/graft.h"
#include "rsr/response.h"
#include "rsr/update.h"

struct client {
	const char *root;
	const char *config; /* NULL: ROOT/etc/rsr/rsr.conf */
	struct rsr_update_policy policy;
	char machine_id[128];
	bool reinstall;
	struct rsr_updater *u;
};

static char *under_root(const char *root, const char *rel)
{
	char *s;
	return asprintf(&s, "%s/%s", strcmp(root, "/") ? root : "", rel) < 0 ? NULL : s;
}

/* Reads a small file; 0 with *ret NULL when it does not exist. */
static int read_small(const char *path, size_t max, char **ret, size_t *ret_len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	char *buf;
	ssize_t n;

	*ret = NULL;
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > max) {
		close(fd);
		return -EFBIG;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	n = read(fd, buf, (size_t)st.st_size);
	close(fd);
	if (n != st.st_size) {
		free(buf);
		return -EIO;
	}
	buf[n] = '\0';
	*ret = buf;
	*ret_len = (size_t)n;
	return 0;
}

/* Reads the policy file (ROOT/etc/rsr/rsr.conf or `config`) into c->policy; a missing file means defaults. */
static int policy_load(struct cmd_env *env, struct client *c)
{
	char *path = c->config ? strdup(c->config) : under_root(c->root, RSR_UPDATE_POLICY_FILE);
	char *buf = NULL;
	size_t len = 0;
	int r;

	rsr_update_policy_init(&c->policy);
	if (!path)
		return cmd_error(env, -ENOMEM, "out of memory");
	r = read_small(path, 64 * 1024, &buf, &len);
	if (r < 0) {
		cmd_error(env, r, "%s: %s", path, strerror(-r));
		free(path);
		return EXIT_FAIL;
	}
	r = buf ? rsr_update_policy_parse(env->ctx, buf, len, path, &c->policy) : 0;
	r = r < 0 ? cmd_fail(env, r) : EXIT_OK;
	free(buf);
	free(path);
	return r;
}

int cmd_policy_check_remove(struct cmd_env *env, const char *root)
{
	struct client c = {.root = root};
	int r = policy_load(env, &c);

	if (r == EXIT_OK && !c.policy.allow_remove)
		r = cmd_error(env, RSR_E_STATE,
			      "the policy (%s%s) does not allow removing responses (allow_remove = no); --force "
			      "overrides it",
			      strcmp(root, "/") ? root : "", "/" RSR_UPDATE_POLICY_FILE);
	rsr_update_policy_clear(&c.policy);
	return r;
}

static int client_open(struct cmd_env *env, struct client *c)
{
	char *path, *mid = NULL;
	size_t len = 0;
	int r;

	if ((r = policy_load(env, c)) != EXIT_OK)
		return r;
	if (c->policy.n_mirrors == 0)
		return cmd_error(env, -EINVAL, "no repository mirror configured: add 'mirror = URL' to %s",
				 c->config ? c->config : "etc/rsr/rsr.conf under the root");
	/* The machine id decides staged rollouts; without one every rollout applies. */
	path = under_root(c->root, "etc/machine-id");
	if (path && read_small(path, 4096, &mid, &len) == 0 && mid) {
		len = strcspn(mid, "\n");
		if (len > 0 && len < sizeof(c->machine_id)) {
			memcpy(c->machine_id, mid, len);
			c->machine_id[len] = '\0';
		}
	}
	free(mid);
	free(path);
	{
		const char *ca = getenv("RSR_CA_FILE");
		struct rsr_update_opts o = {.root = c->root,
					    .policy = &c->policy,
					    .machine_id = c->machine_id[0] ? c->machine_id : NULL,
					    .now = (int64_t)time(NULL),
					    .ca_file = ca && *ca ? ca : NULL,
					    .reinstall = c->reinstall};
		if ((r = rsr_update_open(env->ctx, &o, &c->u)) < 0)
			return cmd_fail(env, r);
	}
	return EXIT_OK;
}

static void client_close(struct client *c)
{
	rsr_update_free(c->u);
	rsr_update_policy_clear(&c->policy);
}

static json_t *offer_json(const struct rsr_update_offer *o)
{
	static const char *actions[] = {"none", "install", "remove"};
	json_t *avail = json_null(), *blocked = json_array(), *removed = json_null(), *doc;
	bool ok = true;

	for (size_t i = 0; i < o->n_blocked; i++)
		cmd_json_push(&ok, blocked,
			      json_pack("{s:s, s:I, s:s}", "letter", o->blocked[i].letter, "sequence",
					(json_int_t)o->blocked[i].sequence, "reason", o->blocked[i].reason));
	if (o->removed_letter) {
		char when[32];
		cmd_time_iso(o->removed_at, when);
		removed = json_pack("{s:s, s:I, s:s, s:b}", "letter", o->removed_letter, "sequence",
				    (json_int_t)o->removed_sequence, "at", when, "reinstall_available",
				    o->reinstall_available);
	}

	if (o->action == RSR_UPDATE_INSTALL) {
		json_t *advs = json_array();
		for (size_t i = 0; i < o->n_advisories; i++) {
			json_t *cves = json_array();
			for (size_t k = 0; k < o->advisories[i].n_cves; k++)
				cmd_json_push(&ok, cves, json_string(o->advisories[i].cves[k]));
			cmd_json_push(&ok, advs,
				      json_pack("{s:s, s:s, s:s, s:o}", "id", o->advisories[i].id, "title",
						o->advisories[i].title, "severity", o->advisories[i].severity, "cves",
						cves));
		}
		avail = json_pack("{s:s, s:o, s:I, s:s?, s:i, s:o, s:I, s:I, s:I, s:I, s:b}", "letter", o->letter,
				  "version_suffix", json_sprintf("(%s)", o->letter), "sequence",
				  (json_int_t)o->sequence, "restart", o->restart, "rollout", (int)o->rollout,
				  "advisories", advs, "download_bytes", (json_int_t)o->download_bytes, "files",
				  (json_int_t)o->n_files, "reused_bytes", (json_int_t)o->reused_bytes, "reused_files",
				  (json_int_t)o->n_reused, "reinstall", o->reinstall);
	}
	doc = json_pack("{s:s, s:o, s:b, s:s, s:o, s:I, s:o, s:o}", "base_build", o->base_build, "installed",
			o->installed_letter ? json_string(o->installed_letter) : json_null(), "installed_withdrawn",
			o->installed_withdrawn, "action", actions[o->action], "available", avail, "held_back",
			(json_int_t)o->n_held_back, "blocked", blocked, "removed", removed);
	if (!ok) {
		json_decref(doc);
		return NULL;
	}
	return doc;
}

static void offer_print(const struct rsr_update_offer *o)
{
	char b[32], c[32], when[32];

	if (o->removed_letter)
		rsr_device_format_time(o->removed_at, when);
	for (size_t i = 0; i < o->n_blocked; i++)
		printf("Cannot install response (%s), sequence %llu: %s.\n", o->blocked[i].letter,
		       (unsigned long long)o->blocked[i].sequence, o->blocked[i].reason);
	if (o->installed_withdrawn)
		printf("Response (%s), installed, was withdrawn by the vendor.\n", o->installed_letter);
	if (o->action == RSR_UPDATE_INSTALL) {
		printf("Available: response (%s) for %s, sequence %llu%s%s%s\n", o->letter, o->base_build,
		       (unsigned long long)o->sequence, o->installed_letter ? " (installed: (" : "",
		       o->installed_letter ? o->installed_letter : "", o->installed_letter ? "))" : "");
		if (o->reinstall)
			printf("Reinstall: it was removed from this device on %s\n", when);
		printf("Fixes:\n");
		for (size_t i = 0; i < o->n_advisories; i++) {
			printf("  %s %-8s %s", o->advisories[i].id, o->advisories[i].severity, o->advisories[i].title);
			for (size_t k = 0; k < o->advisories[i].n_cves; k++)
				printf("%s%s", k ? ", " : " (", o->advisories[i].cves[k]);
			printf("%s\n", o->advisories[i].n_cves ? ")" : "");
		}
		printf("Download:  %s in %zu file%s", cmd_bytes(o->download_bytes, b), o->n_files,
		       o->n_files == 1 ? "" : "s");
		if (o->n_reused)
			printf(" (%s in %zu file%s already on this device)", cmd_bytes(o->reused_bytes, c), o->n_reused,
			       o->n_reused == 1 ? "" : "s");
		printf("\n");
		printf("Restart:   %s\n", o->restart ? o->restart : "unknown");
	} else if (o->action == RSR_UPDATE_REMOVE) {
		printf("No newer response: the withdrawn one will be removed (back to the base).\n");
	} else if (o->reinstall_available) {
		/* Not "up to date": the device runs without the fixes a person removed. */
		printf("Response (%s) was removed on %s; 'rsr update --reinstall' installs it again.\n",
		       o->removed_letter, when);
	} else if (o->n_blocked) {
		printf("Not up to date: %s%s%s%s, and no newer response can install on this device.\n", o->base_build,
		       o->installed_letter ? " (" : "", o->installed_letter ? o->installed_letter : "",
		       o->installed_letter ? ")" : "");
	} else {
		printf("Up to date: %s%s%s%s\n", o->base_build, o->installed_letter ? " (" : "",
		       o->installed_letter ? o->installed_letter : "", o->installed_letter ? ")" : "");
		if (o->removed_letter && !o->installed_letter)
			printf("Response (%s), removed on %s, is no longer offered.\n", o->removed_letter, when);
	}
	if (o->n_held_back)
		printf("%zu newer response%s not rolled out to this device yet.\n", o->n_held_back,
		       o->n_held_back == 1 ? " is" : "s are");
}

/* After an install: a reboot is only announced; stale services are restarted or listed, as the policy says. */
static void apply_restart(struct cmd_env *env, struct client *c, const char *restart)
{
	struct rsr_graft *g = NULL;
	struct rsr_graft_report *rep = NULL;
	int r;

	if (!strcmp(restart, "reboot")) {
		printf("This response needs a reboot to take effect.\n");
		return;
	}
	if (strcmp(restart, "services") || c->policy.restart == RSR_RESTART_POLICY_NONE)
		return;
	if (rsr_graft_open(env->ctx, c->root, &g) < 0 || rsr_graft_status(env->ctx, g, &rep) < 0) {
		fprintf(stderr, "rsr: warning: cannot tell which processes run old code: %s\n",
			rsr_ctx_error(env->ctx));
		rsr_graft_free(g);
		return;
	}
	if (rep->n_stale && c->policy.restart == RSR_RESTART_POLICY_ASK) {
		printf("%zu process%s still run%s superseded code (restart = ask); 'rsr restart-services' restarts "
		       "their services:\n",
		       rep->n_stale, rep->n_stale == 1 ? "" : "es", rep->n_stale == 1 ? "s" : "");
		for (size_t i = 0; i < rep->n_stale; i++)
			printf("  %d %s (%s)\n", rep->stale[i].pid, rep->stale[i].comm ? rep->stale[i].comm : "?",
			       rep->stale[i].unit ? rep->stale[i].unit : "no unit");
	} else if (rep->n_stale) {
		r = rsr_graft_restart_services(env->ctx, rep);
		if (r < 0)
			fprintf(stderr, "rsr: warning: restarting services: %s\n", rsr_ctx_error(env->ctx));
		else
			cmd_print_restarted(rep, r, stdout);
	}
	rsr_graft_report_free(rep);
	rsr_graft_free(g);
}

static int update_verb(struct cmd_env *env, int argc, char **argv, bool install)
{
	static const struct option opts[] = {
	    {"root", required_argument, NULL, 'r'},
	    {"config", required_argument, NULL, 'c'},
	    {"json", no_argument, NULL, 'J'},
	    {"auto", no_argument, NULL, 'a'},
	    {"no-graft", no_argument, NULL, 'n'},
	    {"wait", optional_argument, NULL, 'w'},
	    {"reinstall", no_argument, NULL, 'R'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct client c = {.root = "/"};
	const struct rsr_update_offer *o;
	bool json = false, autom = false;
	unsigned flags = 0;
	int ch, r;

	while ((ch = getopt_long(argc, argv, "r:c:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'r':
			c.root = optarg;
			break;
		case 'c':
			c.config = optarg;
			break;
		case 'J':
			if (install)
				return cmd_usage_error("--json is an option of rsr check");
			json = env->json = true;
			break;
		case 'R':
			/* check --reinstall shows what update --reinstall would do. */
			c.reinstall = true;
			break;
		case 'a':
		case 'n':
		case 'w':
			if (!install)
				return cmd_usage_error("--auto, --no-graft and --wait are options of rsr update");
			if (ch == 'a')
				autom = true;
			else if (ch == 'n')
				flags |= RSR_DEVICE_NO_GRAFT;
			else if ((r = cmd_wait_option(env, optarg)) != EXIT_OK)
				return r;
			break;
		case 'h':
			if (install)
				printf("Usage: rsr update [--root DIR] [--config FILE] [--auto] [--no-graft] "
				       "[--wait[=SECS]]\n"
				       "                  [--reinstall]\n\n"
				       "Checks the repository (as rsr check), downloads the files this device needs\n"
				       "and does not hold (resuming earlier partial downloads) and installs the\n"
				       "newest response for its base build that it can install; removes a withdrawn\n"
				       "response when the policy says so. With --auto (the timer), installs only\n"
				       "when the policy's auto_install is on. --reinstall installs the response\n"
				       "removed last again (nothing else ever does).\n"
				       "Another rsr operation changing the root (pid and command named) fails this at\n"
				       "once; --wait waits for it to end, --wait=SECS at most SECS seconds.\n");
			else
				printf("Usage: rsr check [--root DIR] [--config FILE] [--json] [--reinstall]\n\n"
				       "Updates the trusted TUF metadata from the repository mirrors in\n"
				       "etc/rsr/rsr.conf and shows the newest response for this base build that is\n"
				       "newer than the installed one and can install here: letter, advisories, the\n"
				       "bytes it will fetch; newer ones that cannot install, and why; a removed\n"
				       "response that 'rsr update --reinstall' installs again.\n");
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind != argc)
		return cmd_usage(install ? "rsr update [--root DIR] [--auto]" : "rsr check [--root DIR] [--json]");
	/*
	 * check changes nothing: it waits for an interrupted operation's recovery,
	 * and fails at once when another check or update is running.
	 */
	if (!install)
		rsr_ctx_set_lock_wait(env->ctx, -1);
	if ((r = cmd_recover_first(env, c.root)) != EXIT_OK)
		return r;
	if (!install)
		rsr_ctx_set_lock_wait(env->ctx, 0);
	if ((r = client_open(env, &c)) != EXIT_OK) {
		client_close(&c);
		return r;
	}
	if ((r = rsr_update_refresh(env->ctx, c.u)) < 0 || (r = rsr_update_check(env->ctx, c.u, &o)) < 0) {
		r = cmd_fail(env, r);
		goto out;
	}
	if (!install) {
		if (json)
			r = cmd_print_json(env, offer_json(o)) != EXIT_OK ? EXIT_FAIL : EXIT_OK;
		else
			offer_print(o);
		goto out;
	}
	if (!env->quiet)
		offer_print(o);
	if (o->action == RSR_UPDATE_NONE)
		goto out;
	if (autom && o->action == RSR_UPDATE_INSTALL && !c.policy.auto_install) {
		if (!env->quiet)
			printf("Automatic install is off (auto_install = no): run 'rsr update' to install.\n");
		goto out;
	}
	cmd_progress_enable(env);
	if ((r = rsr_update_apply(env->ctx, c.u, flags)) < 0) {
		r = cmd_fail(env, r);
		goto out;
	}
	cmd_progress_done(env);
	if (!env->quiet) {
		char b[32];
		if (o->action == RSR_UPDATE_INSTALL)
			printf("Installed response (%s)%s; downloaded %s.\n", o->letter, o->reinstall ? " again" : "",
			       cmd_bytes(rsr_update_bytes_fetched(c.u), b));
		else
			printf("Removed the withdrawn response (%s): back to the base.\n", o->installed_letter);
	}
	/* Restart policy, once the new images are grafted. */
	if (o->action == RSR_UPDATE_INSTALL && o->restart && !(flags & RSR_DEVICE_NO_GRAFT))
		apply_restart(env, &c, o->restart);
out:
	client_close(&c);
	return r;
}

int cmd_check(struct cmd_env *env, int argc, char **argv)
{
	argc++, argv--;
	return update_verb(env, argc, argv, false);
}

int cmd_update(struct cmd_env *env, int argc, char **argv)
{
	argc++, argv--;
	return update_verb(env, argc, argv, true);
}
