/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of the TUF layer (canonical JSON, times, parsers, signature
 * thresholds, target paths), the vendor repository (init, refresh, rotate
 * checked by the client-side verifier), the policy file and rollout buckets.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <sys/stat.h>

#include "../../lib/repo/tuf.h"
#include "internal.h"
#include "rsr/key.h"
#include "rsr/repo.h"
#include "rsr/update.h"

static void test_canonical(void **state)
{
	struct rsr_ctx *ctx;
	json_t *v;
	char *s;
	size_t len;

	assert_int_equal(rsr_ctx_new(&ctx), 0);
	v = json_loads(
	    "{\"b\": 1, \"a\": [true, null, \"x\\\"y\\\\z\"], \"c\": {\"\xc3\xa9\": \"\xc3\xbc/\"}, \"B\": -2}", 0,
	    NULL);
	assert_non_null(v);
	assert_int_equal(tuf_canonical(ctx, v, &s, &len), 0);
	/* OLPC canonical JSON, as tuf-js and python-tuf sign: sorted by bytes, only " and \ escaped. */
	assert_string_equal(s,
			    "{\"B\":-2,\"a\":[true,null,\"x\\\"y\\\\z\"],\"b\":1,\"c\":{\"\xc3\xa9\":\"\xc3\xbc/\"}}");
	assert_int_equal(len, strlen(s));
	free(s);
	json_decref(v);
	/* No canonical form: control characters (escaped differently by each library) and fractions. */
	v = json_pack("{s:s}", "a", "line\nbreak");
	assert_int_equal(tuf_canonical(ctx, v, &s, &len), RSR_E_FORMAT);
	json_decref(v);
	v = json_pack("{s:f}", "a", 1.5);
	assert_int_equal(tuf_canonical(ctx, v, &s, &len), RSR_E_FORMAT);
	json_decref(v);
	rsr_ctx_free(ctx);
}

static void test_time(void **state)
{
	int64_t t;
	char buf[32];

	assert_int_equal(tuf_time_parse("2030-01-01T00:00:00Z", &t), 0);
	assert_int_equal(t, 1893456000);
	tuf_time_format(t + 3661, buf);
	assert_string_equal(buf, "2030-01-01T01:01:01Z");
	assert_int_equal(tuf_time_parse("2030-01-01T00:00:00", &t), RSR_E_FORMAT);
	assert_int_equal(tuf_time_parse("2030-01-01T00:00:00+01:00", &t), RSR_E_FORMAT);
	assert_int_equal(tuf_time_parse("2030-13-01T00:00:00Z", &t), RSR_E_FORMAT);
	assert_int_equal(tuf_time_parse("2030-01-01 00:00:00Z", &t), RSR_E_FORMAT);
	assert_int_equal(tuf_time_parse("", &t), RSR_E_FORMAT);
}

static int parse_str(struct rsr_ctx *ctx, const char *s, enum tuf_role role)
{
	json_t *env = NULL;
	int r = tuf_parse(ctx, s, strlen(s), role, "test", &env, NULL, NULL);
	json_decref(env);
	return r;
}

static void test_parse_refusals(void **state)
{
	struct rsr_ctx *ctx;

	assert_int_equal(rsr_ctx_new(&ctx), 0);
#define SIGNED(x) "{\"signatures\": [], \"signed\": {\"_type\": \"timestamp\", \"spec_version\": \"1.0.31\", " x "}}"
	assert_int_equal(parse_str(ctx, SIGNED("\"version\": 3, \"expires\": \"2030-01-01T00:00:00Z\""), TUF_TIMESTAMP),
			 0);
	assert_int_equal(parse_str(ctx, SIGNED("\"version\": 3, \"expires\": \"2030-01-01T00:00:00Z\""), TUF_SNAPSHOT),
			 RSR_E_FORMAT);
	assert_string_equal(rsr_ctx_error(ctx), "test: _type is \"timestamp\", expected \"snapshot\"");
	assert_int_equal(parse_str(ctx, SIGNED("\"version\": 0, \"expires\": \"2030-01-01T00:00:00Z\""), TUF_TIMESTAMP),
			 RSR_E_FORMAT);
	assert_int_equal(
	    parse_str(ctx, SIGNED("\"version\": 1.0, \"expires\": \"2030-01-01T00:00:00Z\""), TUF_TIMESTAMP),
	    RSR_E_FORMAT);
	assert_int_equal(parse_str(ctx, SIGNED("\"version\": 1, \"version\": 2, \"expires\": \"2030-01-01T00:00:00Z\""),
				   TUF_TIMESTAMP),
			 RSR_E_FORMAT);
	assert_int_equal(parse_str(ctx, SIGNED("\"version\": 1, \"expires\": \"soon\""), TUF_TIMESTAMP), RSR_E_FORMAT);
	assert_int_equal(
	    parse_str(ctx, SIGNED("\"version\": 1, \"expires\": \"2030-01-01T00:00:00Z\", \"x\": 0.5"), TUF_TIMESTAMP),
	    RSR_E_FORMAT);
	assert_int_equal(parse_str(ctx, "{\"signed\": {}, \"signatures\": {}}", TUF_ROOT), RSR_E_FORMAT);
	assert_int_equal(parse_str(ctx, "{\"signed\": {}, \"signatures\": [], \"extra\": 1}", TUF_ROOT), RSR_E_FORMAT);
	assert_int_equal(parse_str(ctx, "{\"signed\": {}, \"signatures\": [{\"keyid\": 1, \"sig\": \"\"}]}", TUF_ROOT),
			 RSR_E_FORMAT);
	assert_int_equal(parse_str(ctx, "[]", TUF_ROOT), RSR_E_FORMAT);
	assert_int_equal(parse_str(ctx, "", TUF_ROOT), RSR_E_FORMAT);
#undef SIGNED
	rsr_ctx_free(ctx);
}

/*
 * Counts a role's key holder could inflate are refused with RSR_E_LIMIT
 * before anything is allocated from them: signatures, a root's keys and a
 * role's key ids, targets.
 */
static void test_counts(void **state)
{
	struct rsr_ctx *ctx;
	struct tuf_root *root = NULL;
	json_t *env, *sigs, *keys, *ids, *roles, *targets;
	char name[32];

	(void)state;
	assert_int_equal(rsr_ctx_new(&ctx), 0);

	sigs = json_array();
	for (int i = 0; i <= TUF_MAX_SIGNATURES; i++)
		json_array_append_new(sigs, json_pack("{s:s, s:s}", "keyid", "00", "sig", "00"));
	env = json_pack("{s:o, s:{s:s, s:s, s:i, s:s}}", "signatures", sigs, "signed", "_type", "timestamp",
			"spec_version", "1.0.31", "version", 1, "expires", "2030-01-01T00:00:00Z");
	char *text = json_dumps(env, JSON_COMPACT);
	assert_non_null(text);
	assert_int_equal(parse_str(ctx, text, TUF_TIMESTAMP), RSR_E_LIMIT);
	assert_string_equal(rsr_ctx_error(ctx), "test: more than 256 signatures");
	free(text);
	json_decref(env);

	/* A root with one key too many, then one whose role lists one key id too many. */
	keys = json_object();
	for (int i = 0; i <= TUF_MAX_KEYS; i++) {
		snprintf(name, sizeof(name), "k%d", i);
		json_object_set_new(keys, name, json_object());
	}
	roles = json_object();
	for (int i = 0; i < TUF_N_ROLES; i++)
		json_object_set_new(roles, tuf_role_names[i], json_pack("{s:[], s:i}", "keyids", "threshold", 1));
	env = json_pack("{s:[], s:{s:s, s:s, s:i, s:s, s:o, s:o}}", "signatures", "signed", "_type", "root",
			"spec_version", "1.0.31", "version", 1, "expires", "2030-01-01T00:00:00Z", "keys", keys,
			"roles", roles);
	assert_int_equal(tuf_root_from_env(ctx, env, "root", &root), RSR_E_LIMIT);
	assert_string_equal(rsr_ctx_error(ctx), "root: more than 256 keys");
	json_object_clear(keys);
	ids = json_object_get(json_object_get(roles, "targets"), "keyids");
	for (int i = 0; i <= TUF_MAX_KEYS; i++)
		json_array_append_new(ids, json_string("00"));
	assert_int_equal(tuf_root_from_env(ctx, env, "root", &root), RSR_E_LIMIT);
	assert_string_equal(rsr_ctx_error(ctx), "root: role targets lists more than 256 keys");
	json_decref(env);

	targets = json_object();
	for (int i = 0; i <= TUF_MAX_TARGETS; i++) {
		snprintf(name, sizeof(name), "t/%d", i);
		json_object_set_new(targets, name, json_object());
	}
	env = json_pack("{s:{s:o}}", "signed", "targets", targets);
	assert_int_equal(tuf_targets_check(ctx, env, "targets.json"), RSR_E_LIMIT);
	assert_string_equal(rsr_ctx_error(ctx), "targets.json: more than 65536 targets");
	json_decref(env);
	rsr_ctx_free(ctx);
}

static void test_targets(void **state)
{
	struct rsr_ctx *ctx;
	struct tuf_target t;
	json_t *info;
	char *f;
	static const char *bad[] = {"../x", "/abs", "a//b", "a/./b", "a/../b", "a/",
				    "",	    "a b",  "a\\b", "a?b",   "%2e%2e"};

	assert_int_equal(rsr_ctx_new(&ctx), 0);
	info = json_pack("{s:I, s:{s:s}}", "length", (json_int_t)7, "hashes", "sha256",
			 "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff");
	assert_int_equal(tuf_target_parse(ctx, "test-1/b/patches/x.rsrp", info, &t), 0);
	assert_int_equal(t.length, 7);
	assert_null(t.custom);
	f = tuf_target_file(&t, true);
	assert_string_equal(f,
			    "test-1/b/patches/00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff.x.rsrp");
	free(f);
	f = tuf_target_file(&t, false);
	assert_string_equal(f, "test-1/b/patches/x.rsrp");
	free(f);
	t.path = "top";
	f = tuf_target_file(&t, true);
	assert_string_equal(f, "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff.top");
	free(f);
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
		assert_int_equal(tuf_target_parse(ctx, bad[i], info, &t), RSR_E_FORMAT);
	json_object_set_new(json_object_get(info, "hashes"), "sha256", json_string("00"));
	assert_int_equal(tuf_target_parse(ctx, "a", info, &t), RSR_E_FORMAT);
	json_object_del(info, "hashes");
	assert_int_equal(tuf_target_parse(ctx, "a", info, &t), RSR_E_FORMAT);
	json_object_set_new(info, "hashes", json_pack("{s:s}", "sha512", "ab"));
	assert_int_equal(tuf_target_parse(ctx, "a", info, &t), RSR_E_FORMAT);
	assert_string_equal(rsr_ctx_error(ctx), "target a: no sha256 hash");
	json_decref(info);
	rsr_ctx_free(ctx);
}

struct keys {
	char dir[32];
	struct rsr_key *k[3];
	char id[3][65];
};

static void keys_make(struct rsr_ctx *ctx, struct keys *ks)
{
	char path[64];

	snprintf(ks->dir, sizeof(ks->dir), "/tmp/rsr-repo-XXXXXX");
	assert_non_null(mkdtemp(ks->dir));
	for (int i = 0; i < 3; i++) {
		snprintf(path, sizeof(path), "%s/k%d", ks->dir, i);
		assert_int_equal(rsr_key_generate(ctx, path, &ks->k[i]), 0);
		assert_int_equal(tuf_keyid(ctx, ks->k[i], ks->id[i]), 0);
	}
}

static void keys_free(struct keys *ks)
{
	char cmd[96];

	for (int i = 0; i < 3; i++)
		rsr_key_free(ks->k[i]);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", ks->dir);
	assert_int_equal(system(cmd), 0);
}

/* A root whose timestamp role has keys 0 and 1 with threshold 2; key 0 is also listed as "alias". */
static struct tuf_root *threshold_root(struct rsr_ctx *ctx, struct keys *ks)
{
	json_t *env = json_pack("{s:{s:s, s:s, s:i, s:s, s:b, s:{}, s:{}}, s:[]}", "signed", "_type", "root",
				"spec_version", "1.0.31", "version", 1, "expires", "2030-01-01T00:00:00Z",
				"consistent_snapshot", 1, "keys", "roles", "signatures");
	json_t *s = json_object_get(env, "signed"), *keys = json_object_get(s, "keys");
	struct tuf_root *root;

	for (int i = 0; i < 2; i++)
		json_object_set_new(keys, ks->id[i], tuf_key_json(ks->k[i]));
	json_object_set_new(keys, "alias", tuf_key_json(ks->k[0]));
	for (int i = 0; i < TUF_N_ROLES; i++)
		json_object_set_new(json_object_get(s, "roles"), tuf_role_names[i],
				    json_pack("{s:[s, s, s], s:i}", "keyids", ks->id[0], ks->id[1], "alias",
					      "threshold", i == TUF_TIMESTAMP ? 2 : 1));
	assert_int_equal(tuf_root_from_env(ctx, env, "root", &root), 0);
	json_decref(env);
	return root;
}

static void test_threshold(void **state)
{
	struct rsr_ctx *ctx;
	struct keys ks;
	struct tuf_root *root;
	json_t *ts, *sigs;
	const struct rsr_key *both[2], *one[1], *other[1];

	assert_int_equal(rsr_ctx_new(&ctx), 0);
	keys_make(ctx, &ks);
	root = threshold_root(ctx, &ks);
	assert_int_equal(root->n_keys, 3);
	assert_int_equal(root->roles[TUF_TIMESTAMP].threshold, 2);
	ts = json_pack("{s:{s:s, s:s, s:i, s:s}, s:[]}", "signed", "_type", "timestamp", "spec_version", "1.0.31",
		       "version", 1, "expires", "2030-01-01T00:00:00Z", "signatures");
	both[0] = ks.k[0], both[1] = ks.k[1], one[0] = ks.k[0], other[0] = ks.k[2];
	assert_int_equal(tuf_sign(ctx, ts, both, 2), 0);
	assert_int_equal(tuf_verify(ctx, root, TUF_TIMESTAMP, ts, "ts"), 0);
	assert_int_equal(tuf_sign(ctx, ts, one, 1), 0);
	assert_int_equal(tuf_verify(ctx, root, TUF_TIMESTAMP, ts, "ts"), RSR_E_SIGNATURE);
	assert_string_equal(rsr_ctx_error(ctx),
			    "ts: 1 valid signature by timestamp keys of root version 1, threshold is 2");
	assert_int_equal(tuf_verify(ctx, root, TUF_SNAPSHOT, ts, "ts"), 0);
	/* The same key again under its alias counts once. */
	sigs = json_object_get(ts, "signatures");
	json_array_append_new(
	    sigs, json_pack("{s:s, s:O}", "keyid", "alias", "sig", json_object_get(json_array_get(sigs, 0), "sig")));
	assert_int_equal(json_array_size(sigs), 2);
	assert_int_equal(tuf_verify(ctx, root, TUF_TIMESTAMP, ts, "ts"), RSR_E_SIGNATURE);
	/* A key the root does not name does not count. */
	assert_int_equal(tuf_sign(ctx, ts, other, 1), 0);
	assert_int_equal(tuf_verify(ctx, root, TUF_SNAPSHOT, ts, "ts"), RSR_E_SIGNATURE);
	/* A changed signed part breaks both signatures. */
	assert_int_equal(tuf_sign(ctx, ts, both, 2), 0);
	json_object_set_new(json_object_get(ts, "signed"), "version", json_integer(2));
	assert_int_equal(tuf_verify(ctx, root, TUF_TIMESTAMP, ts, "ts"), RSR_E_SIGNATURE);
	assert_non_null(strstr(rsr_ctx_error(ctx), "0 valid signatures"));
	json_decref(ts);
	tuf_root_free(root);
	keys_free(&ks);
	rsr_ctx_free(ctx);
}

static json_t *load(struct rsr_ctx *ctx, const char *dir, const char *name, enum tuf_role role)
{
	char path[256], *buf;
	size_t len;
	json_t *env;

	snprintf(path, sizeof(path), "%s/metadata/%s", dir, name);
	assert_int_equal(rsr_read_file(ctx, path, 1 << 20, &buf, &len), 0);
	assert_int_equal(tuf_parse(ctx, buf, len, role, name, &env, NULL, NULL), 0);
	free(buf);
	return env;
}

static void test_repo_lifecycle(void **state)
{
	struct rsr_ctx *ctx;
	struct keys ks;
	char dir[96], *buf;
	size_t len;
	struct tuf_root *r1, *r2;
	json_t *env;
	const struct rsr_key *all[3], *newroot[1];
	struct rsr_repo_init_opts io = {0};
	struct rsr_repo_sign_opts so = {.now = 1800000000};
	struct tuf_meta m;

	assert_int_equal(rsr_ctx_new(&ctx), 0);
	keys_make(ctx, &ks);
	snprintf(dir, sizeof(dir), "%s/repo", ks.dir);
	all[0] = ks.k[0], all[1] = ks.k[1], all[2] = ks.k[2];
	io.root_keys = all;
	io.n_root_keys = 1;
	io.timestamp_key = ks.k[1];
	so.keys = all;
	so.n_keys = 1;
	/* Without the timestamp key nothing is written. */
	assert_int_equal(rsr_repo_init(ctx, dir, &io, &so), RSR_E_KEY);
	assert_string_equal(
	    rsr_ctx_error(ctx),
	    "the timestamp role needs signatures by 1 of its 1 keys; 0 of the given keys are among them");
	so.n_keys = 2;
	so.expires[TUF_TIMESTAMP] = 600;
	assert_int_equal(rsr_repo_init(ctx, dir, &io, &so), 0);
	assert_int_equal(rsr_repo_init(ctx, dir, &io, &so), -EEXIST);
	snprintf(dir + strlen(dir), 32, "/metadata/1.root.json");
	assert_int_equal(rsr_read_file(ctx, dir, 1 << 20, &buf, &len), 0);
	*strstr(dir, "/metadata") = '\0';
	assert_int_equal(tuf_root_parse(ctx, buf, len, "1.root.json", &r1), 0);
	free(buf);
	assert_true(r1->consistent);
	assert_int_equal(r1->version, 1);
	assert_int_equal(r1->expires, 1800000000 + RSR_REPO_EXPIRES_ROOT);
	assert_int_equal(tuf_verify(ctx, r1, TUF_ROOT, r1->env, "root"), 0);
	env = load(ctx, dir, "timestamp.json", TUF_TIMESTAMP);
	assert_int_equal(tuf_verify(ctx, r1, TUF_TIMESTAMP, env, "timestamp"), 0);
	assert_string_equal(json_string_value(json_object_get(json_object_get(env, "signed"), "expires")),
			    "2027-01-15T08:10:00Z");
	assert_int_equal(tuf_meta_get(ctx, env, "snapshot.json", "ts", &m), 0);
	assert_int_equal(m.version, 1);
	assert_true(m.has_sha256);
	assert_true(m.length > 0);
	json_decref(env);
	env = load(ctx, dir, "1.snapshot.json", TUF_SNAPSHOT);
	assert_int_equal(tuf_verify(ctx, r1, TUF_SNAPSHOT, env, "snapshot"), 0);
	json_decref(env);
	env = load(ctx, dir, "1.targets.json", TUF_TARGETS);
	assert_int_equal(tuf_verify(ctx, r1, TUF_TARGETS, env, "targets"), 0);
	assert_int_equal(tuf_targets_check(ctx, env, "targets"), 0);
	json_decref(env);

	/* Refresh: snapshot and timestamp version 2. */
	assert_int_equal(rsr_repo_refresh(ctx, dir, &so, NULL, NULL, NULL), 0);
	env = load(ctx, dir, "timestamp.json", TUF_TIMESTAMP);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(env, "signed"), "version")), 2);
	json_decref(env);

	/* Root rotation to key 2: root 2 verifies under root 1 and under itself. */
	newroot[0] = ks.k[2];
	so.n_keys = 3;
	assert_int_equal(rsr_repo_rotate_key(ctx, dir, RSR_REPO_ROOT, newroot, 1, 0, &so), 0);
	env = load(ctx, dir, "2.root.json", TUF_ROOT);
	assert_int_equal(tuf_root_from_env(ctx, env, "2.root.json", &r2), 0);
	json_decref(env);
	assert_int_equal(tuf_verify(ctx, r1, TUF_ROOT, r2->env, "2.root.json"), 0);
	assert_int_equal(tuf_verify(ctx, r2, TUF_ROOT, r2->env, "2.root.json"), 0);
	assert_int_equal(r2->roles[TUF_ROOT].n, 1);
	assert_string_equal(r2->roles[TUF_ROOT].keyids[0], ks.id[2]);
	/* Without the current root key (2), no further rotation; nothing is written. */
	so.keys = all;
	so.n_keys = 2;
	assert_int_equal(rsr_repo_rotate_key(ctx, dir, RSR_REPO_ROOT, all, 1, 0, &so), RSR_E_KEY);
	assert_non_null(strstr(rsr_ctx_error(ctx), "the root role needs signatures by 1"));
	assert_int_equal(rsr_repo_rotate_key(ctx, dir, RSR_REPO_ROOT, all, 2, 3, &so), -EINVAL);
	snprintf(dir + strlen(dir), 32, "/metadata/3.root.json");
	assert_int_equal(access(dir, F_OK), -1);
	tuf_root_free(r1);
	tuf_root_free(r2);
	keys_free(&ks);
	rsr_ctx_free(ctx);
}

static char last_warning[1024];

static void warn_cb(void *userdata, enum rsr_log_level level, const char *msg)
{
	if (level <= RSR_LOG_WARNING)
		snprintf(last_warning, sizeof(last_warning), "%s", msg);
}

static json_int_t signed_int(json_t *env, const char *key)
{
	return json_integer_value(json_object_get(json_object_get(env, "signed"), key));
}

static json_int_t meta_version(json_t *env, const char *name)
{
	return json_integer_value(
	    json_object_get(json_object_get(json_object_get(json_object_get(env, "signed"), "meta"), name), "version"));
}

/* The status's view of each role, checked against the files. */
static void status_is(struct rsr_ctx *ctx, const char *dir, uint64_t root, uint64_t targets, uint64_t snapshot,
		      uint64_t timestamp)
{
	struct rsr_repo_status *st;

	assert_int_equal(rsr_repo_status_open(ctx, dir, &st), 0);
	assert_int_equal(rsr_repo_status_version(st, RSR_REPO_ROOT), root);
	assert_int_equal(rsr_repo_status_version(st, RSR_REPO_TARGETS), targets);
	assert_int_equal(rsr_repo_status_version(st, RSR_REPO_SNAPSHOT), snapshot);
	assert_int_equal(rsr_repo_status_version(st, RSR_REPO_TIMESTAMP), timestamp);
	assert_int_equal(rsr_repo_status_response_count(st), 0);
	rsr_repo_status_free(st);
}

/*
 * Refresh renews each role within its margin that the keys sign: targets
 * and root too, not only snapshot and timestamp; a due role without its key
 * is named with its expiry and left as it was.
 */
static void test_refresh_margins(void **state)
{
	const uint64_t t0 = 1800000000, day = 86400;
	struct rsr_ctx *ctx;
	struct keys ks;
	char dir[96];
	const struct rsr_key *online[2], *release[3], *all[3];
	struct rsr_repo_init_opts io = {0};
	struct rsr_repo_sign_opts so = {.now = t0};
	struct rsr_repo_refresh_opts ro;
	struct rsr_repo_status *st;
	struct tuf_root *r1, *r2;
	unsigned renewed, missed;
	json_t *env;

	assert_int_equal(rsr_ctx_new(&ctx), 0);
	rsr_ctx_set_log(ctx, warn_cb, NULL);
	keys_make(ctx, &ks);
	snprintf(dir, sizeof(dir), "%s/repo", ks.dir);
	/* Key 0: root; 1: targets; 2: snapshot and timestamp (the cron machine's). */
	all[0] = ks.k[0], all[1] = ks.k[1], all[2] = ks.k[2];
	online[0] = ks.k[2];
	release[0] = ks.k[1], release[1] = ks.k[2];
	io.root_keys = all;
	io.n_root_keys = 1;
	io.targets_key = ks.k[1];
	io.snapshot_key = io.timestamp_key = ks.k[2];
	so.keys = all;
	so.n_keys = 3;
	assert_int_equal(rsr_repo_init(ctx, dir, &io, &so), 0);
	env = load(ctx, dir, "1.root.json", TUF_ROOT);
	assert_int_equal(tuf_root_from_env(ctx, env, "1.root.json", &r1), 0);
	json_decref(env);

	/* A day later, the cron keys: snapshot and timestamp renewed, targets not due. */
	so.keys = online;
	so.n_keys = 1;
	so.now = t0 + day;
	last_warning[0] = '\0';
	assert_int_equal(rsr_repo_refresh(ctx, dir, &so, NULL, &renewed, &missed), 0);
	assert_int_equal(renewed, RSR_REPO_ROLE_BIT(RSR_REPO_SNAPSHOT) | RSR_REPO_ROLE_BIT(RSR_REPO_TIMESTAMP));
	assert_int_equal(missed, 0);
	assert_string_equal(last_warning, "");
	status_is(ctx, dir, 1, 1, 2, 2);

	/* 61 days on, targets expires within its 30-day margin: the cron keys cannot renew it. */
	so.now = t0 + 61 * day;
	assert_int_equal(rsr_repo_refresh(ctx, dir, &so, NULL, &renewed, &missed), 1);
	assert_int_equal(missed, RSR_REPO_ROLE_BIT(RSR_REPO_TARGETS));
	assert_int_equal(renewed, RSR_REPO_ROLE_BIT(RSR_REPO_SNAPSHOT) | RSR_REPO_ROLE_BIT(RSR_REPO_TIMESTAMP));
	assert_string_equal(last_warning,
			    "targets.json (version 1) expires at 2027-04-15T08:00:00Z and is not renewed: "
			    "the targets role needs signatures by 1 of its 1 keys; 0 of the given keys are among them");
	status_is(ctx, dir, 1, 1, 3, 3);
	/* After its expiry the warning says devices refuse the repository. */
	so.now = t0 + 91 * day;
	assert_int_equal(rsr_repo_refresh(ctx, dir, &so, NULL, NULL, NULL), 1);
	assert_non_null(
	    strstr(last_warning, "targets.json (version 1) expired at 2027-04-15T08:00:00Z and is not renewed"));
	assert_non_null(strstr(last_warning, "devices refuse the repository until it is renewed"));

	/* The targets key renews targets, and with it snapshot and timestamp. */
	so.keys = release;
	so.n_keys = 2;
	assert_int_equal(rsr_repo_refresh(ctx, dir, &so, NULL, &renewed, &missed), 0);
	assert_int_equal(renewed, RSR_REPO_ROLE_BIT(RSR_REPO_TARGETS) | RSR_REPO_ROLE_BIT(RSR_REPO_SNAPSHOT) |
				      RSR_REPO_ROLE_BIT(RSR_REPO_TIMESTAMP));
	status_is(ctx, dir, 1, 2, 5, 5);
	env = load(ctx, dir, "2.targets.json", TUF_TARGETS);
	assert_int_equal(tuf_verify(ctx, r1, TUF_TARGETS, env, "2.targets.json"), 0);
	json_decref(env);
	assert_int_equal(rsr_repo_status_open(ctx, dir, &st), 0);
	assert_int_equal(rsr_repo_status_expires(st, RSR_REPO_TARGETS), (int64_t)(so.now + RSR_REPO_EXPIRES_TARGETS));
	rsr_repo_status_free(st);
	env = load(ctx, dir, "5.snapshot.json", TUF_SNAPSHOT);
	assert_int_equal(meta_version(env, "targets.json"), 2);
	json_decref(env);

	/* Only the targets key: renewing targets needs a new snapshot; nothing is written. */
	so.keys = release;
	so.n_keys = 1;
	so.expires[TUF_TARGETS] = 90 * day;
	assert_int_equal(rsr_repo_refresh(ctx, dir, &so, NULL, NULL, NULL), RSR_E_KEY);
	assert_non_null(
	    strstr(rsr_ctx_error(ctx), "renewing targets.json needs a new snapshot.json: the snapshot role"));
	status_is(ctx, dir, 1, 2, 5, 5);
	/* A lifetime asked for a role without its key fails; nothing is written. */
	so.keys = online;
	assert_int_equal(rsr_repo_refresh(ctx, dir, &so, NULL, NULL, NULL), RSR_E_KEY);
	assert_non_null(strstr(rsr_ctx_error(ctx), "targets.json cannot be renewed: the targets role needs"));
	status_is(ctx, dir, 1, 2, 5, 5);
	so.expires[TUF_TARGETS] = 0;

	/* A zero snapshot margin renews the timestamp alone; it names the same snapshot. */
	rsr_repo_refresh_opts_init(&ro);
	ro.margin_snapshot = 0;
	assert_int_equal(rsr_repo_refresh(ctx, dir, &so, &ro, &renewed, NULL), 0);
	assert_int_equal(renewed, RSR_REPO_ROLE_BIT(RSR_REPO_TIMESTAMP));
	status_is(ctx, dir, 1, 2, 5, 6);
	env = load(ctx, dir, "timestamp.json", TUF_TIMESTAMP);
	assert_int_equal(signed_int(env, "version"), 6);
	assert_int_equal(meta_version(env, "snapshot.json"), 5);
	assert_int_equal(tuf_verify(ctx, r1, TUF_TIMESTAMP, env, "timestamp.json"), 0);
	json_decref(env);

	/* Root, 306 days on (59 left of 365): missed without its key, renewed with it as version 2. */
	so.now = t0 + 306 * day;
	assert_int_equal(rsr_repo_refresh(ctx, dir, &so, NULL, NULL, &missed), 2);
	assert_int_equal(missed, RSR_REPO_ROLE_BIT(RSR_REPO_ROOT) | RSR_REPO_ROLE_BIT(RSR_REPO_TARGETS));
	so.keys = all;
	so.n_keys = 3;
	assert_int_equal(rsr_repo_refresh(ctx, dir, &so, NULL, &renewed, &missed), 0);
	assert_int_equal(renewed, 0xf);
	assert_int_equal(missed, 0);
	status_is(ctx, dir, 2, 3, 7, 8);
	env = load(ctx, dir, "2.root.json", TUF_ROOT);
	assert_int_equal(tuf_root_from_env(ctx, env, "2.root.json", &r2), 0);
	json_decref(env);
	assert_int_equal(tuf_verify(ctx, r1, TUF_ROOT, r2->env, "2.root.json"), 0);
	assert_int_equal(tuf_verify(ctx, r2, TUF_ROOT, r2->env, "2.root.json"), 0);
	assert_int_equal(r2->expires, (int64_t)(so.now + RSR_REPO_EXPIRES_ROOT));
	assert_int_equal(r2->roles[TUF_TARGETS].n, 1);
	assert_string_equal(r2->roles[TUF_TARGETS].keyids[0], ks.id[1]);
	/* Nothing is due right after: a refresh with the root key alone writes nothing. */
	so.keys = all;
	so.n_keys = 1;
	ro.margin_snapshot = ro.margin_timestamp = 0;
	assert_int_equal(rsr_repo_refresh(ctx, dir, &so, &ro, &renewed, &missed), 0);
	assert_int_equal(renewed, 0);
	status_is(ctx, dir, 2, 3, 7, 8);
	ro.version = 99;
	assert_int_equal(rsr_repo_refresh(ctx, dir, &so, &ro, NULL, NULL), -EINVAL);
	tuf_root_free(r1);
	tuf_root_free(r2);
	keys_free(&ks);
	rsr_ctx_free(ctx);
}

static void test_policy(void **state)
{
	struct rsr_ctx *ctx;
	struct rsr_update_policy p;
	static const char good[] = "# rsr policy\n"
				   "mirror = https://updates.example.com/rsr\n"
				   "  mirror=http://mirror.example.org/rsr/  \n"
				   "\n"
				   "auto_install = no\n"
				   "allow_remove = false\n"
				   "restart = ask\n"
				   "staged_rollout = off\n"
				   "withdrawn = stay\n"
				   "timeout = 90\n"
				   "min_rate = 4096\n"
				   "max_run_time = 600";
	static const char *bad[] = {
	    "mirror = ftp://x\n", "mirror = http://a b\n", "auto_install = maybe\n", "restart = always\n",
	    "withdrawn = next\n", "timeout = 0\n",	   "timeout = 3601\n",	     "timeout = 5s\n",
	    "colour = blue\n",	  "just a line\n",	   "min_rate = 0\n",	     "min_rate = 1073741825\n",
	    "min_rate = -1\n",	  "min_rate = 1k\n",	   "max_run_time = 0\n",     "max_run_time = 604801\n",
	};
	char many[2048] = "";

	assert_int_equal(rsr_ctx_new(&ctx), 0);
	rsr_update_policy_init(&p);
	assert_true(p.auto_install && p.allow_remove && p.staged_rollout);
	assert_int_equal(p.restart, RSR_RESTART_POLICY_SERVICES);
	assert_int_equal(p.withdrawn, RSR_WITHDRAWN_BASE);
	assert_int_equal(p.timeout, 30);
	assert_int_equal(p.min_rate, 1024);
	assert_int_equal(p.max_run_time, 6 * 3600);
	assert_int_equal(rsr_update_policy_parse(ctx, good, sizeof(good) - 1, "rsr.conf", &p), 0);
	assert_int_equal(p.n_mirrors, 2);
	assert_string_equal(p.mirrors[0], "https://updates.example.com/rsr");
	assert_string_equal(p.mirrors[1], "http://mirror.example.org/rsr/");
	assert_false(p.auto_install || p.allow_remove || p.staged_rollout);
	assert_int_equal(p.restart, RSR_RESTART_POLICY_ASK);
	assert_int_equal(p.withdrawn, RSR_WITHDRAWN_STAY);
	assert_int_equal(p.timeout, 90);
	assert_int_equal(p.min_rate, 4096);
	assert_int_equal(p.max_run_time, 600);
	rsr_update_policy_clear(&p);
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		rsr_update_policy_init(&p);
		assert_int_equal(rsr_update_policy_parse(ctx, bad[i], strlen(bad[i]), "rsr.conf", &p), RSR_E_FORMAT);
		assert_non_null(strstr(rsr_ctx_error(ctx), "rsr.conf:1: "));
		rsr_update_policy_clear(&p);
	}
	for (int i = 0; i < RSR_UPDATE_MAX_MIRRORS + 1; i++)
		strcat(many, "mirror = http://m.example/\n");
	rsr_update_policy_init(&p);
	assert_int_equal(rsr_update_policy_parse(ctx, many, strlen(many), "rsr.conf", &p), RSR_E_LIMIT);
	rsr_update_policy_clear(&p);
	assert_int_equal(rsr_update_policy_parse(ctx, "a\0b = c", 7, "rsr.conf", &p), RSR_E_FORMAT);
	rsr_ctx_free(ctx);
}

static void test_rollout_bucket(void **state)
{
	unsigned under = 0;
	char id[40];

	/* The documented formula: SHA-256("machine/base/letter"), first 4 bytes big-endian, mod 100. */
	assert_int_equal(rsr_update_rollout_bucket("0123456789abcdef0123456789abcdef", "test-1", "b"), 91);
	/* Another response reshuffles devices. */
	for (int i = 0; i < 2000; i++) {
		snprintf(id, sizeof(id), "%032x", i);
		assert_true(rsr_update_rollout_bucket(id, "test-1", "b") < 100);
		under += rsr_update_rollout_bucket(id, "test-1", "b") < 30;
	}
	/* About 30% of devices fall under a 30% rollout. */
	assert_true(under > 500 && under < 700);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_canonical),	   cmocka_unit_test(test_time),
	    cmocka_unit_test(test_parse_refusals), cmocka_unit_test(test_counts),
	    cmocka_unit_test(test_targets),	   cmocka_unit_test(test_threshold),
	    cmocka_unit_test(test_repo_lifecycle), cmocka_unit_test(test_refresh_margins),
	    cmocka_unit_test(test_policy),	   cmocka_unit_test(test_rollout_bucket),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
