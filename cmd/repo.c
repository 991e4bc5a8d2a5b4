/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * rsr repo: the vendor's TUF repository (init, add, refresh, withdraw,
 * rollout, rotate-key). Keys are PEM files; signing time comes from
 * SOURCE_DATE_EPOCH when set.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmd.h"
#include "rsr/key.h"
#include "rsr/repo.h"

#define MAX_KEYS 32
#define EXPIRES_USAGE "--expires takes ROLE=DURATION (root, targets, snapshot, timestamp; seconds, or 90d, 12h, 30m)"

struct keys {
	struct rsr_key *k[MAX_KEYS];
	size_t n;
};

static void keys_free(struct keys *ks)
{
	for (size_t i = 0; i < ks->n; i++)
		rsr_key_free(ks->k[i]);
	ks->n = 0;
}

/* Loads a private key; with `public_ok`, a public key when the file holds no private one. */
static int key_add(struct cmd_env *env, struct keys *ks, const char *path, bool public_ok, struct rsr_key **ret)
{
	struct rsr_key *k = NULL;
	int r;

	if (ks->n >= MAX_KEYS)
		return cmd_usage_error("at most %d keys", MAX_KEYS);
	if ((r = rsr_key_load_private(env->ctx, path, &k)) < 0 &&
	    (!public_ok || (r = rsr_key_load_public(env->ctx, path, &k)) < 0))
		return cmd_fail(env, r);
	ks->k[ks->n++] = k;
	if (ret)
		*ret = k;
	return EXIT_OK;
}

/* SECONDS, or a number with s, m, h or d after it ("90d"). */
static bool parse_duration(const char *s, unsigned long long *ret)
{
	static const struct {
		char c;
		unsigned long long mul;
	} units[] = {{'s', 1}, {'m', 60}, {'h', 3600}, {'d', 86400}};
	const unsigned long long max = 100ULL * 365 * 86400;
	char num[24];
	size_t len = strlen(s);
	unsigned long long mul = 1, n;

	if (len == 0 || len >= sizeof(num))
		return false;
	memcpy(num, s, len + 1);
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (num[len - 1] == units[i].c) {
			mul = units[i].mul;
			num[--len] = '\0';
		}
	if (!cmd_parse_uint(num, max / mul, &n))
		return false;
	*ret = n * mul;
	return true;
}

/* ROLE=DURATION into vals[role]; `zero_ok` allows 0. */
static bool parse_role_duration(const char *arg, bool zero_ok, uint64_t vals[4])
{
	const char *eq = strchr(arg, '=');
	char role[16];
	unsigned long long n;
	int r;

	if (!eq || (size_t)(eq - arg) >= sizeof(role))
		return false;
	memcpy(role, arg, (size_t)(eq - arg));
	role[eq - arg] = '\0';
	r = rsr_repo_role_from_name(role);
	if (r < 0 || !parse_duration(eq + 1, &n) || (n == 0 && !zero_ok))
		return false;
	vals[r] = n;
	return true;
}

static bool parse_expires(const char *arg, struct rsr_repo_sign_opts *so)
{
	return parse_role_duration(arg, false, so->expires);
}

static bool sign_time(struct rsr_repo_sign_opts *so)
{
	const char *sde = getenv("SOURCE_DATE_EPOCH");
	unsigned long long n;

	if (!sde) {
		so->now = (uint64_t)time(NULL);
		return true;
	}
	if (!cmd_parse_uint(sde, 1ULL << 40, &n))
		return false;
	so->now = n;
	return true;
}

/* Options every verb takes: --key K (repeated), --expires ROLE=SECONDS. Others go to `extra`. */
struct common {
	struct keys keys;
	struct rsr_repo_sign_opts so;
	const struct rsr_key *signers[MAX_KEYS];
};

static int finish_common(struct common *c)
{
	for (size_t i = 0; i < c->keys.n; i++)
		c->signers[i] = c->keys.k[i];
	c->so.keys = c->signers;
	c->so.n_keys = c->keys.n;
	if (!sign_time(&c->so))
		return cmd_usage_error("SOURCE_DATE_EPOCH is not a number of seconds");
	return EXIT_OK;
}

static int repo_init(struct cmd_env *env, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"root-key", required_argument, NULL, 'R'},
	    {"targets-key", required_argument, NULL, 'T'},
	    {"snapshot-key", required_argument, NULL, 'S'},
	    {"timestamp-key", required_argument, NULL, 'M'},
	    {"threshold", required_argument, NULL, 't'},
	    {"expires", required_argument, NULL, 'e'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct common c = {0};
	struct rsr_repo_init_opts io = {0};
	const struct rsr_key *roots[MAX_KEYS];
	struct rsr_key *k = NULL;
	unsigned long long n;
	int ch, r = EXIT_OK;

	while (r == EXIT_OK && (ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (ch) {
		case 'R':
			if ((r = key_add(env, &c.keys, optarg, false, &k)) == EXIT_OK)
				roots[io.n_root_keys++] = k;
			break;
		case 'T':
		case 'S':
		case 'M':
			if ((r = key_add(env, &c.keys, optarg, false, &k)) == EXIT_OK)
				*(ch == 'T' ? &io.targets_key : ch == 'S' ? &io.snapshot_key : &io.timestamp_key) = k;
			break;
		case 't':
			if (!cmd_parse_uint(optarg, MAX_KEYS, &n) || n == 0)
				r = cmd_usage_error("--threshold takes a number from 1 to %d", MAX_KEYS);
			io.threshold = (unsigned)n;
			break;
		case 'e':
			if (!parse_expires(optarg, &c.so))
				r = cmd_usage_error(EXPIRES_USAGE);
			break;
		case 'h':
			printf("Usage: rsr repo init DIR --root-key KEY [--root-key KEY...] [--threshold N]\n"
			       "                    [--targets-key KEY] [--snapshot-key KEY] [--timestamp-key KEY]\n"
			       "                    [--expires ROLE=SECONDS...]\n\n"
			       "Makes a TUF repository in DIR: metadata/ (root, targets, snapshot, timestamp,\n"
			       "version 1, Ed25519, consistent snapshots) and targets/. Roles without a key of\n"
			       "their own use the first root key. Give devices metadata/1.root.json as\n"
			       "/etc/rsr/repository-root.json.\n");
			keys_free(&c.keys);
			return EXIT_OK;
		default:
			r = EXIT_USAGE;
		}
	}
	if (r == EXIT_OK && optind + 1 != argc)
		r = cmd_usage("rsr repo init DIR --root-key KEY [...]");
	if (r == EXIT_OK && io.n_root_keys == 0)
		r = cmd_usage_error("rsr repo init needs --root-key");
	if (r == EXIT_OK)
		r = finish_common(&c);
	if (r == EXIT_OK) {
		io.root_keys = roots;
		int e = rsr_repo_init(env->ctx, argv[optind], &io, &c.so);
		if (e < 0)
			r = cmd_fail(env, e);
		else if (!env->quiet)
			printf("Repository made in %s; devices trust %s/metadata/1.root.json.\n", argv[optind],
			       argv[optind]);
	}
	keys_free(&c.keys);
	return r;
}

/* "2027-03-03T10:00:00Z" */
static void format_time(int64_t t, char out[32])
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (!gmtime_r(&tt, &tm) || !strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(out, 32, "%lld", (long long)t);
}

/* "in 12 days", "3 hours ago". */
static void format_left(int64_t d, char out[48])
{
	int64_t a = d < 0 ? -d : d, n = a;
	const char *unit = "seconds";

	if (a >= 2 * 86400)
		n = a / 86400, unit = "days";
	else if (a >= 2 * 3600)
		n = a / 3600, unit = "hours";
	else if (a >= 120)
		n = a / 60, unit = "minutes";
	snprintf(out, 48, d <= 0 ? "expired %lld %s ago" : "in %lld %s", (long long)n, unit);
}

/* Each role's version and expiry; with `renewed`/`missed` (refresh), what refresh did to it. */
static void print_roles(const struct rsr_repo_status *st, int64_t now, unsigned renewed, unsigned missed)
{
	for (int i = 0; i < 4; i++) {
		int64_t exp = rsr_repo_status_expires(st, (enum rsr_repo_role)i);
		char when[32], left[48];

		format_time(exp, when);
		format_left(exp - now, left);
		printf("%-10s version %-4llu expires %s (%s)%s\n", rsr_repo_role_name((enum rsr_repo_role)i),
		       (unsigned long long)rsr_repo_status_version(st, (enum rsr_repo_role)i), when, left,
		       renewed & RSR_REPO_ROLE_BIT(i)  ? ": renewed"
		       : missed & RSR_REPO_ROLE_BIT(i) ? ": NOT RENEWED"
						       : "");
	}
}

/* After a refresh: each role, and what the refresh did to it. */
static int print_refreshed(struct cmd_env *env, const char *dir, int64_t now, unsigned renewed, unsigned missed)
{
	struct rsr_repo_status *st;
	int r = rsr_repo_status_open(env->ctx, dir, &st);

	if (r < 0)
		return cmd_fail(env, r);
	print_roles(st, now, renewed, missed);
	rsr_repo_status_free(st);
	return EXIT_OK;
}

enum verb_kind { V_ADD, V_REFRESH, V_WITHDRAW, V_ROLLOUT, V_ROTATE };

static int repo_verb(struct cmd_env *env, int argc, char **argv, enum verb_kind kind, int n_args, const char *usage,
		     const char *help)
{
	static const struct option opts[] = {
	    {"key", required_argument, NULL, 'k'},
	    {"expires", required_argument, NULL, 'e'},
	    {"rollout", required_argument, NULL, 'p'},
	    {"role", required_argument, NULL, 'r'},
	    {"new", required_argument, NULL, 'n'},
	    {"threshold", required_argument, NULL, 't'},
	    {"margin", required_argument, NULL, 'm'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct common c = {0};
	struct keys newk = {0};
	const struct rsr_key *newp[MAX_KEYS];
	struct rsr_repo_refresh_opts ro;
	uint64_t margins[4];
	unsigned long long n;
	unsigned rollout = 100, threshold = 0, renewed = 0, missed = 0;
	int role = -1, ch, r = EXIT_OK, e = 0;

	rsr_repo_refresh_opts_init(&ro);
	margins[RSR_REPO_ROOT] = ro.margin_root;
	margins[RSR_REPO_TARGETS] = ro.margin_targets;
	margins[RSR_REPO_SNAPSHOT] = ro.margin_snapshot;
	margins[RSR_REPO_TIMESTAMP] = ro.margin_timestamp;

	while (r == EXIT_OK && (ch = getopt_long(argc, argv, "k:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'k':
			r = key_add(env, &c.keys, optarg, false, NULL);
			break;
		case 'e':
			if (!parse_expires(optarg, &c.so))
				r = cmd_usage_error(EXPIRES_USAGE);
			break;
		case 'p':
			if (kind != V_ADD || !cmd_parse_uint(optarg, 100, &n) || n == 0)
				r = cmd_usage_error("--rollout takes a percentage from 1 to 100 (rsr repo add)");
			rollout = (unsigned)n;
			break;
		case 'r':
			if (kind != V_ROTATE || (role = rsr_repo_role_from_name(optarg)) < 0)
				r = cmd_usage_error(
				    "--role takes root, targets, snapshot or timestamp (rsr repo rotate-key)");
			break;
		case 'n': {
			struct rsr_key *k = NULL;
			if (kind != V_ROTATE)
				r = cmd_usage_error("--new is an option of rsr repo rotate-key");
			else if ((r = key_add(env, &newk, optarg, true, &k)) == EXIT_OK && rsr_key_is_private(k) &&
				 c.keys.n < MAX_KEYS) {
				/* A new private key may sign too (a new root key must). */
				struct rsr_key *copy;
				if (rsr_key_load_private(env->ctx, optarg, &copy) == 0)
					c.keys.k[c.keys.n++] = copy;
			}
			break;
		}
		case 't':
			if (kind != V_ROTATE || !cmd_parse_uint(optarg, MAX_KEYS, &n) || n == 0)
				r = cmd_usage_error("--threshold takes a number from 1 to %d (rsr repo rotate-key)",
						    MAX_KEYS);
			threshold = (unsigned)n;
			break;
		case 'm':
			if (kind != V_REFRESH || !parse_role_duration(optarg, true, margins))
				r = cmd_usage_error("--margin takes ROLE=DURATION (rsr repo refresh)");
			break;
		case 'h':
			printf("Usage: %s\n\n%s", usage, help);
			keys_free(&c.keys);
			keys_free(&newk);
			return EXIT_OK;
		default:
			r = EXIT_USAGE;
		}
	}
	if (r == EXIT_OK && optind + n_args != argc)
		r = cmd_usage(usage);
	if (r == EXIT_OK && c.keys.n == 0)
		r = cmd_usage_error("give the signing keys with --key KEY");
	if (r == EXIT_OK && kind == V_ROTATE && (role < 0 || newk.n == 0))
		r = cmd_usage_error("rsr repo rotate-key needs --role and --new");
	if (r == EXIT_OK && kind == V_ROLLOUT && (!cmd_parse_uint(argv[optind + 3], 100, &n) || n == 0))
		r = cmd_usage_error("the rollout percentage is a number from 1 to 100");
	if (r == EXIT_OK)
		r = finish_common(&c);
	if (r == EXIT_OK) {
		const char *dir = argv[optind];
		switch (kind) {
		case V_ADD:
			e = rsr_repo_add(env->ctx, dir, argv[optind + 1], rollout, &c.so);
			break;
		case V_REFRESH:
			ro.margin_root = margins[RSR_REPO_ROOT];
			ro.margin_targets = margins[RSR_REPO_TARGETS];
			ro.margin_snapshot = margins[RSR_REPO_SNAPSHOT];
			ro.margin_timestamp = margins[RSR_REPO_TIMESTAMP];
			e = rsr_repo_refresh(env->ctx, dir, &c.so, &ro, &renewed, &missed);
			if (e >= 0 && !env->quiet &&
			    print_refreshed(env, dir, (int64_t)c.so.now, renewed, missed) != EXIT_OK)
				e = -1;
			break;
		case V_WITHDRAW:
			e = rsr_repo_withdraw(env->ctx, dir, argv[optind + 1], argv[optind + 2], &c.so);
			break;
		case V_ROLLOUT:
			e = rsr_repo_set_rollout(env->ctx, dir, argv[optind + 1], argv[optind + 2], (unsigned)n, &c.so);
			break;
		case V_ROTATE:
			for (size_t i = 0; i < newk.n; i++)
				newp[i] = newk.k[i];
			e = rsr_repo_rotate_key(env->ctx, dir, (enum rsr_repo_role)role, newp, newk.n, threshold,
						&c.so);
			break;
		}
		/* refresh: a due role left as it was fails the run (cron mails it), after the others are renewed. */
		r = e < 0 ? cmd_fail(env, e) : e > 0 ? EXIT_FAIL : EXIT_OK;
	}
	keys_free(&c.keys);
	keys_free(&newk);
	return r;
}

static json_t *status_json(const struct rsr_repo_status *st, int64_t now)
{
	json_t *o = json_object(), *roles = json_object(), *resps = json_array();
	bool ok = o && roles && resps;

	for (int i = 0; i < 4; i++) {
		int64_t exp = rsr_repo_status_expires(st, (enum rsr_repo_role)i);
		char when[32];

		format_time(exp, when);
		cmd_json_set(&ok, roles, rsr_repo_role_name((enum rsr_repo_role)i),
			     json_pack("{s:I, s:s, s:I, s:b}", "version",
				       (json_int_t)rsr_repo_status_version(st, (enum rsr_repo_role)i), "expires", when,
				       "expires_in", (json_int_t)(exp - now), "expired", exp <= now));
	}
	for (size_t i = 0; i < rsr_repo_status_response_count(st); i++) {
		const struct rsr_repo_published *p = rsr_repo_status_response(st, i);
		cmd_json_push(&ok, resps,
			      json_pack("{s:s, s:s, s:I, s:s, s:i, s:b, s:s, s:I, s:I, s:I}", "base_build",
					p->base_build, "letter", p->letter, "sequence", (json_int_t)p->sequence,
					"target", p->target, "rollout", (int)p->rollout, "withdrawn", p->withdrawn,
					"restart", p->restart, "advisories", (json_int_t)p->n_advisories, "images",
					(json_int_t)p->n_images, "patch_bytes", (json_int_t)p->patch_bytes));
	}
	cmd_json_set(&ok, o, "roles", roles);
	cmd_json_set(&ok, o, "responses", resps);
	if (!ok) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static int repo_status(struct cmd_env *env, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"json", no_argument, NULL, 'J'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct rsr_repo_status *st;
	struct rsr_repo_sign_opts so = {0};
	bool json = false;
	int ch, r;

	while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (ch) {
		case 'J':
			json = env->json = true;
			break;
		case 'h':
			printf("Usage: rsr repo status DIR [--json]\n\n"
			       "Shows the version and expiry of each role's current metadata and every\n"
			       "published response with its sequence, rollout percentage and whether it is\n"
			       "withdrawn. Reads DIR only; signatures are not checked.\n");
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind + 1 != argc)
		return cmd_usage("rsr repo status DIR [--json]");
	if (!sign_time(&so))
		return cmd_usage_error("SOURCE_DATE_EPOCH is not a number of seconds");
	if ((r = rsr_repo_status_open(env->ctx, argv[optind], &st)) < 0)
		return cmd_fail(env, r);
	if (json) {
		r = cmd_print_json(env, status_json(st, (int64_t)so.now));
		rsr_repo_status_free(st);
		return r;
	}
	printf("Repository %s\n", argv[optind]);
	print_roles(st, (int64_t)so.now, 0, 0);
	if (rsr_repo_status_response_count(st) == 0)
		printf("No response is published.\n");
	for (size_t i = 0; i < rsr_repo_status_response_count(st); i++) {
		const struct rsr_repo_published *p = rsr_repo_status_response(st, i);
		char bytes[32];
		printf("%s (%s)  sequence %llu  rollout %u%%%s  %zu advisor%s, %zu image%s, patches %s\n",
		       p->base_build, p->letter, (unsigned long long)p->sequence, p->rollout,
		       p->withdrawn ? "  WITHDRAWN" : "", p->n_advisories, p->n_advisories == 1 ? "y" : "ies",
		       p->n_images, p->n_images == 1 ? "" : "s", cmd_bytes(p->patch_bytes, bytes));
	}
	rsr_repo_status_free(st);
	return EXIT_OK;
}

static int repo_add(struct cmd_env *env, int argc, char **argv)
{
	return repo_verb(env, argc, argv, V_ADD, 2, "rsr repo add DIR RESPONSE_DIR --key KEY... [--rollout PERCENT]",
			 "Publishes a response: its manifest and patches become targets under\n"
			 "BASE_BUILD/LETTER/ with custom metadata (base build, letter, sequence,\n"
			 "advisories, patch sizes, rollout percentage), then signs new targets,\n"
			 "snapshot and timestamp metadata with the given keys.\n");
}

static int repo_refresh(struct cmd_env *env, int argc, char **argv)
{
	return repo_verb(env, argc, argv, V_REFRESH, 1,
			 "rsr repo refresh DIR --key KEY... [--margin ROLE=DURATION...] [--expires ROLE=DURATION...]",
			 "Renews every role whose metadata expires within its margin (defaults: root\n"
			 "60d, targets 30d, snapshot 7d, timestamp 1d, so snapshot and timestamp at\n"
			 "every run) and that the given keys sign; a role given --expires is renewed\n"
			 "whatever its margin. A due role without its keys is left as it is, named\n"
			 "with its expiry on stderr, and the exit status is 1. Run it from cron more\n"
			 "often than the timestamp lifetime (one day by default). DURATION is seconds,\n"
			 "or a number with s, m, h or d.\n");
}

static int repo_withdraw(struct cmd_env *env, int argc, char **argv)
{
	return repo_verb(env, argc, argv, V_WITHDRAW, 3, "rsr repo withdraw DIR BASE_BUILD LETTER --key KEY...",
			 "Marks a published response withdrawn. Devices stop installing it; devices\n"
			 "on it move to a newer response, or back to the base when none is newer\n"
			 "(their policy's 'withdrawn' setting).\n");
}

static int repo_rollout(struct cmd_env *env, int argc, char **argv)
{
	return repo_verb(env, argc, argv, V_ROLLOUT, 4, "rsr repo rollout DIR BASE_BUILD LETTER PERCENT --key KEY...",
			 "Changes the staged rollout percentage of a published response. A device takes\n"
			 "it when its bucket (from a hash of its machine id and the response) is below.\n");
}

static int repo_rotate(struct cmd_env *env, int argc, char **argv)
{
	return repo_verb(env, argc, argv, V_ROTATE, 1,
			 "rsr repo rotate-key DIR --role ROLE --new KEY... [--threshold N] --key KEY...",
			 "Replaces the keys of ROLE: writes the next root version, signed by the current\n"
			 "root keys (--key) and, for the root role, by the new keys (--new, private), then\n"
			 "re-signs the metadata below with the new keys. Devices follow the rotation.\n");
}

int cmd_repo(struct cmd_env *env, int argc, char **argv)
{
	static const struct verb verbs[] = {
	    {"init", repo_init, "make a new TUF repository"},
	    {"add", repo_add, "publish a response"},
	    {"refresh", repo_refresh, "renew the roles that expire soon (cron)"},
	    {"status", repo_status, "each role's version and expiry, the published responses"},
	    {"withdraw", repo_withdraw, "withdraw a published response"},
	    {"rollout", repo_rollout, "change the staged rollout percentage of a response"},
	    {"rotate-key", repo_rotate, "replace the keys of a role"},
	    {NULL, NULL, NULL},
	};
	return cmd_dispatch(env, "repo", verbs, argc, argv);
}
