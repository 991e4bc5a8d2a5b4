/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Shared by the verb groups of the rsr command: the verb table, error
 * reporting, JSON output and the progress bar. The command holds no logic
 * of its own: each verb parses options, calls librsr and shows the result.
 */
#ifndef RSR_CMD_H
#define RSR_CMD_H

#include <stdbool.h>
#include <stdio.h>

#include <jansson.h>

#include "rsr/common.h"

/* Exit statuses, as documented in rsr(1). */
enum {
	EXIT_OK = 0,
	EXIT_FAIL = 1,	/* the operation failed or the input was refused */
	EXIT_USAGE = 2, /* bad command line */
};

struct cmd_env {
	struct rsr_ctx *ctx;
	const char *argv0;
	unsigned threads;
	bool quiet;
	int verbose;
	struct progress *progress;
	bool usage_hinted; /* a usage error already said where the help is */
	bool json;	   /* the verb was given --json: a failure is also an error object on stdout */
	/* The first failure cmd_fail() or cmd_error() reported, for that object. */
	bool failed;
	int fail_code;
	char fail_message[1024];
};

struct verb {
	const char *name;
	int (*run)(struct cmd_env *env, int argc, char **argv);
	const char *summary;
};

/* Runs argv[0] as a verb of `group`, or prints the group's help. */
int cmd_dispatch(struct cmd_env *env, const char *group, const struct verb *verbs, int argc, char **argv);

/*
 * Prints "rsr: <message of the last failure>" to stderr and returns EXIT_FAIL;
 * `r` is the code the failing call returned.
 */
int cmd_fail(struct cmd_env *env, int r);
/* Prints "rsr: <formatted message>" to stderr and returns EXIT_USAGE. */
int cmd_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/*
 * Prints "Usage: <synopsis>" to stderr, the line --help starts with, and
 * returns EXIT_USAGE: a command line of the wrong shape.
 */
int cmd_usage(const char *synopsis);
/*
 * Prints "rsr: <formatted message>" to stderr and returns EXIT_FAIL: a failure
 * of the command itself, with `code` (-errno or an RSR_E_* code) for --json.
 */
int cmd_error(struct cmd_env *env, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Prints a JSON value (NULL: out of memory) to stdout, indented, with a newline; takes
 * ownership. Returns EXIT_OK, or EXIT_FAIL after an error message. */
int cmd_print_json(struct cmd_env *env, json_t *v);
/*
 * After a verb given --json failed: prints its first failure on stdout as
 * {"error": {"code": C, "name": N, "message": M}} (rsr(1) documents it), so
 * that stdout holds one JSON document whether the verb succeeds or fails.
 */
void cmd_print_json_error(struct cmd_env *env);
/*
 * json_object_set_new() and json_array_append_new() that clear *ok when they
 * fail (a NULL value too), so that a document short of a member is never
 * printed: build, then check ok once.
 */
void cmd_json_set(bool *ok, json_t *object, const char *key, json_t *value);
void cmd_json_push(bool *ok, json_t *array, json_t *value);

/* Turns on the progress bar when stderr is a terminal and --quiet is not set. */
void cmd_progress_enable(struct cmd_env *env);
/* Ends a progress bar line, if one is shown. */
void cmd_progress_done(struct cmd_env *env);

/*
 * --wait[=SECS]: how long to wait for another rsr operation holding the
 * device lock (rsr_ctx_set_lock_wait()); NULL waits without end.
 */
int cmd_wait_option(struct cmd_env *env, const char *arg);
/*
 * -j/--threads N: 1 to 256 worker threads into *ret; anything else (0 too,
 * which would mean the default) is a usage error. Returns EXIT_OK or EXIT_USAGE.
 */
int cmd_threads_option(const char *arg, unsigned *ret);
/* Parses a non-negative integer option; false if malformed. */
bool cmd_parse_uint(const char *s, unsigned long long max, unsigned long long *ret);

/* Formats a byte count as "123.4 MiB" into buf. */
const char *cmd_bytes(unsigned long long n, char buf[32]);

/* Formats seconds since 1970 as "YYYY-MM-DDTHH:MM:SSZ" (UTC) into buf, for --json. */
const char *cmd_time_iso(int64_t t, char buf[32]);

/* Verb groups. */
int cmd_key(struct cmd_env *env, int argc, char **argv);
int cmd_cryptex(struct cmd_env *env, int argc, char **argv);
int cmd_graft(struct cmd_env *env, int argc, char **argv);
int cmd_ungraft(struct cmd_env *env, int argc, char **argv);
struct rsr_graft_report;
/* After rsr_graft_restart_services() restarted n services: which, and the processes it could not restart. */
void cmd_print_restarted(const struct rsr_graft_report *rep, int n, FILE *f);
int cmd_status(struct cmd_env *env, int argc, char **argv);
int cmd_restart_services(struct cmd_env *env, int argc, char **argv);
int cmd_patch(struct cmd_env *env, int argc, char **argv);
int cmd_response(struct cmd_env *env, int argc, char **argv);
int cmd_install(struct cmd_env *env, int argc, char **argv);
int cmd_remove(struct cmd_env *env, int argc, char **argv);
int cmd_repo(struct cmd_env *env, int argc, char **argv);
int cmd_check(struct cmd_env *env, int argc, char **argv);
int cmd_update(struct cmd_env *env, int argc, char **argv);
int cmd_enroll(struct cmd_env *env, int argc, char **argv);
/* EXIT_OK unless the policy under `root` says allow_remove = no (then a message and EXIT_FAIL). */
int cmd_policy_check_remove(struct cmd_env *env, const char *root);

/* Finishes or rolls back an interrupted install or remove under `root` (NULL: "/"). */
int cmd_recover_first(struct cmd_env *env, const char *root);
struct rsr_device_state;
void cmd_print_response_state(const struct rsr_device_state *st);
json_t *cmd_response_state_json(const struct rsr_device_state *st);

#endif
