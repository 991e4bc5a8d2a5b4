/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Output helpers of the rsr command: error messages, JSON, the progress bar
 * and the verb dispatcher.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cmd.h"

struct progress {
	bool shown;
	int last_permille;
	char what[256]; /* the label shown; a longer one is compared by its start */
	struct timespec last;
};

static void print_group_help(const char *group, const struct verb *verbs, FILE *f)
{
	fprintf(f, "Usage: rsr %s VERB [OPTIONS]\n\nVerbs:\n", group);
	for (const struct verb *v = verbs; v->name; v++)
		fprintf(f, "  %-12s %s\n", v->name, v->summary);
	fprintf(f, "\nRun 'rsr %s VERB --help' for the options of a verb; the manual is rsr-%s(1).\n", group, group);
}

int cmd_dispatch(struct cmd_env *env, const char *group, const struct verb *verbs, int argc, char **argv)
{
	env->usage_hinted = true;
	if (argc < 1) {
		print_group_help(group, verbs, stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[0], "--help") || !strcmp(argv[0], "-h") || !strcmp(argv[0], "help")) {
		print_group_help(group, verbs, stdout);
		return EXIT_OK;
	}
	for (const struct verb *v = verbs; v->name; v++)
		if (!strcmp(argv[0], v->name)) {
			char name[64];
			int r;

			/* getopt names the program in its messages: "rsr cryptex build: ...". */
			snprintf(name, sizeof(name), "rsr %s %s", group, v->name);
			argv[0] = name;
			r = v->run(env, argc, argv);
			if (r == EXIT_USAGE)
				fprintf(stderr, "rsr: see 'rsr %s %s --help'\n", group, v->name);
			return r;
		}
	return cmd_usage_error("'%s' is not a verb of 'rsr %s'; see 'rsr %s --help'", argv[0], group, group);
}

/* Keeps the first failure for cmd_print_json_error(). */
static void record_failure(struct cmd_env *env, int code, const char *message)
{
	if (env->failed)
		return;
	env->failed = true;
	env->fail_code = code;
	snprintf(env->fail_message, sizeof(env->fail_message), "%s", message);
}

int cmd_fail(struct cmd_env *env, int r)
{
	const char *m = r == 0 ? "failed" : rsr_ctx_error(env->ctx);

	cmd_progress_done(env);
	fprintf(stderr, "rsr: %s\n", m);
	record_failure(env, r, m);
	return EXIT_FAIL;
}

int cmd_usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("rsr: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return EXIT_USAGE;
}

int cmd_usage(const char *synopsis)
{
	fprintf(stderr, "Usage: %s\n", synopsis);
	return EXIT_USAGE;
}

int cmd_error(struct cmd_env *env, int code, const char *fmt, ...)
{
	char m[sizeof(env->fail_message)];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(m, sizeof(m), fmt, ap);
	va_end(ap);
	fprintf(stderr, "rsr: %s\n", m);
	record_failure(env, code, m);
	return EXIT_FAIL;
}

void cmd_json_set(bool *ok, json_t *object, const char *key, json_t *value)
{
	if (json_object_set_new(object, key, value) < 0) /* releases value; fails on NULL */
		*ok = false;
}

void cmd_json_push(bool *ok, json_t *array, json_t *value)
{
	if (json_array_append_new(array, value) < 0)
		*ok = false;
}

int cmd_print_json(struct cmd_env *env, json_t *v)
{
	char *s;
	json_t *back;
	int r = EXIT_OK;

	if (!v)
		return cmd_error(env, -ENOMEM, "out of memory");
	/*
	 * Through a string that is parsed back: jansson 2.14 drops an object
	 * key whose append fails and still succeeds (see lib/common/json.c).
	 */
	s = json_dumps(v, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	back = s ? json_loads(s, JSON_DECODE_ANY, NULL) : NULL;
	if (!back || !json_equal(v, back))
		r = cmd_error(env, -ENOMEM, "out of memory");
	else if (fputs(s, stdout) == EOF || fputc('\n', stdout) == EOF)
		r = cmd_error(env, -EIO, "cannot write JSON output");
	free(s);
	json_decref(back);
	json_decref(v);
	return r;
}

/* The name of an error code in the error object: the RSR_E_* domain code in lower case, or the errno name. */
static const char *error_name(int code)
{
	/* In the order of their values, from RSR_E_FORMAT (-1000) down. */
	static const char *const domain[] = {"format", "signature", "digest",	"expired", "rollback", "key",
					     "tool",   "canceled",  "mismatch", "state",   "limit",    "busy"};
	_Static_assert(RSR_E_FORMAT - RSR_E_BUSY + 1 == sizeof(domain) / sizeof(domain[0]), "a name per RSR_E_ code");
	const char *n;

	if (code <= RSR_E_FORMAT && code > RSR_E_FORMAT - (int)(sizeof(domain) / sizeof(domain[0])))
		return domain[RSR_E_FORMAT - code];
	if (code < 0 && code > -4096 && (n = strerrorname_np(-code)))
		return n;
	return "unknown";
}

void cmd_print_json_error(struct cmd_env *env)
{
	if (!env->failed)
		record_failure(env, 0, "failed");
	cmd_print_json(env, json_pack("{s:{s:i, s:s, s:s}}", "error", "code", env->fail_code, "name",
				      error_name(env->fail_code), "message", env->fail_message));
}

static int progress_cb(void *userdata, const char *what, uint64_t done, uint64_t total)
{
	struct progress *p = userdata;
	struct timespec now;
	int permille = total ? (int)(done * 1000 / total) : 1000;
	char a[32], b[32];
	int width = 16, fill;
	bool same = strncmp(p->what, what, sizeof(p->what) - 1) == 0;

	clock_gettime(CLOCK_MONOTONIC, &now);
	/* Redraw at most 10 times a second, and always for a new phase or the end. */
	if (same && permille != 1000 &&
	    (now.tv_sec - p->last.tv_sec) * 1000000000L + (now.tv_nsec - p->last.tv_nsec) < 100000000L)
		return 0;
	if (!same && p->shown)
		fputc('\n', stderr);
	snprintf(p->what, sizeof(p->what), "%s", what);
	p->last = now;
	p->last_permille = permille;
	fill = permille * width / 1000;
	/* 40 columns for the label (the operation and a file name), 16 for the bar. */
	fprintf(stderr, "\r%-40.40s [", what);
	for (int i = 0; i < width; i++)
		fputc(i < fill ? '#' : '.', stderr);
	fprintf(stderr, "] %3d%%  %s / %s\033[K", permille / 10, cmd_bytes(done, a), cmd_bytes(total, b));
	fflush(stderr);
	p->shown = true;
	return 0;
}

void cmd_progress_enable(struct cmd_env *env)
{
	if (env->quiet || !isatty(STDERR_FILENO) || env->progress)
		return;
	env->progress = calloc(1, sizeof(*env->progress));
	if (env->progress)
		rsr_ctx_set_progress(env->ctx, progress_cb, env->progress);
}

void cmd_progress_done(struct cmd_env *env)
{
	if (!env->progress)
		return;
	if (env->progress->shown)
		fputc('\n', stderr);
	rsr_ctx_set_progress(env->ctx, NULL, NULL);
	free(env->progress);
	env->progress = NULL;
}

int cmd_wait_option(struct cmd_env *env, const char *arg)
{
	unsigned long long secs;

	if (!arg) {
		rsr_ctx_set_lock_wait(env->ctx, -1);
		return EXIT_OK;
	}
	if (!cmd_parse_uint(arg, 7 * 24 * 3600, &secs))
		return cmd_usage_error("--wait=%s: a number of seconds (at most a week), or --wait alone to wait "
				       "without end",
				       arg);
	rsr_ctx_set_lock_wait(env->ctx, (int)secs);
	return EXIT_OK;
}

int cmd_threads_option(const char *arg, unsigned *ret)
{
	unsigned long long n;

	if (!cmd_parse_uint(arg, 256, &n) || n == 0)
		return cmd_usage_error("--threads %s: not a number of worker threads from 1 to 256 (without --threads, "
				       "one per CPU)",
				       arg);
	*ret = (unsigned)n;
	return EXIT_OK;
}

bool cmd_parse_uint(const char *s, unsigned long long max, unsigned long long *ret)
{
	char *end;
	unsigned long long v;

	if (!s || !*s || *s == '-' || *s == '+')
		return false;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v > max)
		return false;
	*ret = v;
	return true;
}

const char *cmd_time_iso(int64_t t, char buf[32])
{
	struct tm tm;
	time_t tt = (time_t)t;

	if (!gmtime_r(&tt, &tm) || !strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(buf, 32, "%lld", (long long)t);
	return buf;
}

const char *cmd_bytes(unsigned long long n, char buf[32])
{
	static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	double v = (double)n;
	unsigned u = 0;

	while (v >= 1024 && u < 4) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, 32, "%llu B", n);
	else
		snprintf(buf, 32, "%.1f %s", v, units[u]);
	return buf;
}
