/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * TUF metadata shared by the repository tools and the client: canonical
 * JSON, key ids, signature thresholds and bounded parsers of each role.
 * Format: docs/formats/repository.md.
 */
#include <stdio.h>
#include <time.h>

#include "tuf.h"

const char *const tuf_role_names[TUF_N_ROLES] = {"root", "targets", "snapshot", "timestamp"};

/* Canonical JSON holds strings verbatim but for " and \; jansson escapes control
 * characters too, so strings with them would serialise differently: refuse them. */
static bool json_canonical_ok(json_t *v, int depth)
{
	const char *k;
	json_t *x;
	size_t i;

	if (depth > 32)
		return false;
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		json_object_foreach(v, k, x)
		{
			for (const char *p = k; *p; p++)
				if ((unsigned char)*p < 0x20 || *p == 0x7f)
					return false;
			if (!json_canonical_ok(x, depth + 1))
				return false;
		}
		return true;
	case JSON_ARRAY:
		json_array_foreach(v, i, x) if (!json_canonical_ok(x, depth + 1)) return false;
		return true;
	case JSON_STRING: {
		const char *s = json_string_value(v);
		size_t n = json_string_length(v);
		for (size_t j = 0; j < n; j++)
			if ((unsigned char)s[j] < 0x20 || s[j] == 0x7f)
				return false;
		return true;
	}
	case JSON_REAL:
		return false;
	default:
		return true;
	}
}

int tuf_canonical(struct rsr_ctx *ctx, json_t *v, char **ret, size_t *ret_len)
{
	char *s;

	*ret = NULL;
	*ret_len = 0;
	if (!json_canonical_ok(v, 0))
		return rsr_error(
		    ctx, RSR_E_FORMAT,
		    "metadata has no canonical form (control characters, fractions or nesting deeper than 32)");
	s = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
	if (!s)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	*ret_len = strlen(s);
	*ret = s;
	return 0;
}

json_t *tuf_key_json(const struct rsr_key *key)
{
	uint8_t raw[32];
	char hex[65];

	rsr_key_public_raw(key, raw);
	rsr_hex_encode(raw, 32, hex);
	return json_pack("{s:s, s:s, s:{s:s}}", "keytype", "ed25519", "scheme", "ed25519", "keyval", "public", hex);
}

int tuf_keyid(struct rsr_ctx *ctx, const struct rsr_key *key, char ret_id[65])
{
	json_t *j = tuf_key_json(key);
	_cleanup_free_ char *c = NULL;
	size_t len;
	uint8_t d[32];
	int r;

	if (!j)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	r = tuf_canonical(ctx, j, &c, &len);
	json_decref(j);
	if (r < 0)
		return r;
	rsr_sha256(c, len, d);
	rsr_hex_encode(d, 32, ret_id);
	return 0;
}

int tuf_time_parse(const char *s, int64_t *ret)
{
	struct tm tm = {0};
	int y, mo, d, h, mi, sec, n = 0;

	if (strlen(s) != 20 || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2dZ%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 || n != 20)
		return RSR_E_FORMAT;
	if (y < 1970 || y > 9999 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60 || h < 0 ||
	    mi < 0 || sec < 0)
		return RSR_E_FORMAT;
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;
	*ret = (int64_t)timegm(&tm);
	return 0;
}

void tuf_time_format(int64_t t, char out[32])
{
	time_t tt = (time_t)t;
	struct tm tm;

	gmtime_r(&tt, &tm);
	strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static bool get_uint(json_t *o, const char *k, uint64_t min, uint64_t max, uint64_t *ret)
{
	json_t *v = json_object_get(o, k);

	if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) < min ||
	    (uint64_t)json_integer_value(v) > max)
		return false;
	*ret = (uint64_t)json_integer_value(v);
	return true;
}

static bool is_hex(const char *s, size_t len)
{
	if (strlen(s) != len)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

int tuf_parse(struct rsr_ctx *ctx, const void *buf, size_t len, enum tuf_role role, const char *what, json_t **ret_env,
	      uint64_t *ret_version, int64_t *ret_expires)
{
	json_error_t jerr;
	json_t *env, *sigs, *sig, *s, *v;
	const char *type, *spec, *k;
	uint64_t version;
	int64_t expires;
	size_t i;
	int r = RSR_E_FORMAT;

	env = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!env && rsr_json_load_oom(&jerr))
		return rsr_error(ctx, -ENOMEM, "out of memory");
	if (!env)
		return rsr_error(ctx, RSR_E_FORMAT, "%s: not JSON: %s (line %d)", what, jerr.text, jerr.line);
	s = json_object_get(env, "signed");
	sigs = json_object_get(env, "signatures");
	if (!json_is_object(env) || json_object_size(env) != 2 || !json_is_object(s) || !json_is_array(sigs)) {
		rsr_error(ctx, r, "%s: not TUF metadata (want an object of \"signed\" and \"signatures\")", what);
		goto fail;
	}
	if (json_array_size(sigs) > TUF_MAX_SIGNATURES) {
		rsr_error(ctx, RSR_E_LIMIT, "%s: more than %d signatures", what, TUF_MAX_SIGNATURES);
		r = RSR_E_LIMIT;
		goto fail;
	}
	json_array_foreach(sigs, i, sig)
	{
		json_t *kid = json_object_get(sig, "keyid"), *sv = json_object_get(sig, "sig");
		if (!json_is_object(sig) || !json_is_string(kid) || !json_is_string(sv) ||
		    json_string_length(kid) > 128 || json_string_length(sv) > 1024) {
			rsr_error(ctx, r, "%s: signature %zu is not {\"keyid\", \"sig\"}", what, i);
			goto fail;
		}
	}
	type = json_string_value(json_object_get(s, "_type"));
	if (!type || strcmp(type, tuf_role_names[role])) {
		rsr_error(ctx, r, "%s: _type is %s%s%s, expected \"%s\"", what, type ? "\"" : "",
			  type ? type : "missing", type ? "\"" : "", tuf_role_names[role]);
		goto fail;
	}
	spec = json_string_value(json_object_get(s, "spec_version"));
	if (!spec || strncmp(spec, "1.", 2)) {
		rsr_error(ctx, r, "%s: spec_version %s is not 1.x", what, spec ? spec : "missing");
		goto fail;
	}
	if (!get_uint(s, "version", 1, (uint64_t)1 << 53, &version)) {
		rsr_error(ctx, r, "%s: version is not an integer from 1 to 2^53", what);
		goto fail;
	}
	k = json_string_value(json_object_get(s, "expires"));
	if (!k || tuf_time_parse(k, &expires) < 0) {
		rsr_error(ctx, r, "%s: expires is not a time like 2030-01-01T00:00:00Z", what);
		goto fail;
	}
	v = json_object_get(s, "consistent_snapshot");
	if (v && !json_is_boolean(v)) {
		rsr_error(ctx, r, "%s: consistent_snapshot is not a boolean", what);
		goto fail;
	}
	if (!json_canonical_ok(s, 0)) {
		rsr_error(ctx, r, "%s: metadata has no canonical form (control characters, fractions or deep nesting)",
			  what);
		goto fail;
	}
	*ret_env = env;
	if (ret_version)
		*ret_version = version;
	if (ret_expires)
		*ret_expires = expires;
	return 0;
fail:
	json_decref(env);
	return r;
}

void tuf_root_free(struct tuf_root *root)
{
	if (!root)
		return;
	for (size_t i = 0; i < root->n_keys; i++)
		rsr_key_free(root->keys[i].key);
	free(root->keys);
	for (int i = 0; i < TUF_N_ROLES; i++) {
		for (size_t k = 0; k < root->roles[i].n; k++)
			free(root->roles[i].keyids[k]);
		free(root->roles[i].keyids);
	}
	json_decref(root->env);
	free(root);
}

int tuf_root_from_env(struct rsr_ctx *ctx, json_t *env, const char *what, struct tuf_root **ret_root)
{
	struct tuf_root *root = calloc(1, sizeof(*root));
	json_t *s = json_object_get(env, "signed"), *keys, *roles, *v;
	const char *k;
	int r = RSR_E_FORMAT;

	if (!root)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	root->env = json_incref(env);
	root->version = (uint64_t)json_integer_value(json_object_get(s, "version"));
	tuf_time_parse(json_string_value(json_object_get(s, "expires")), &root->expires);
	root->consistent = json_is_true(json_object_get(s, "consistent_snapshot"));
	keys = json_object_get(s, "keys");
	roles = json_object_get(s, "roles");
	if (!json_is_object(keys) || !json_is_object(roles)) {
		rsr_error(ctx, r, "%s: root has no \"keys\" or \"roles\" object", what);
		goto fail;
	}
	if (json_object_size(keys) > TUF_MAX_KEYS) {
		rsr_error(ctx, r = RSR_E_LIMIT, "%s: more than %d keys", what, TUF_MAX_KEYS);
		goto fail;
	}
	root->keys = calloc(json_object_size(keys) + 1, sizeof(*root->keys));
	if (!root->keys) {
		rsr_error(ctx, r = -ENOMEM, "out of memory");
		goto fail;
	}
	json_object_foreach(keys, k, v)
	{
		const char *type = json_string_value(json_object_get(v, "keytype"));
		const char *scheme = json_string_value(json_object_get(v, "scheme"));
		const char *pub = json_string_value(json_object_get(json_object_get(v, "keyval"), "public"));
		uint8_t raw[32];

		if (!json_is_object(v) || !type || !scheme || !pub || strlen(k) > 128) {
			rsr_error(ctx, r, "%s: key %.64s is not {keytype, scheme, keyval: {public}}", what, k);
			goto fail;
		}
		/* Keys of other types may be listed; they just never count towards a threshold. */
		if (strcmp(type, "ed25519") || strcmp(scheme, "ed25519"))
			continue;
		if (!is_hex(pub, 64) || !rsr_hex_decode(pub, raw, 32)) {
			rsr_error(ctx, r, "%s: ed25519 key %.64s: public key is not 64 hex digits", what, k);
			goto fail;
		}
		snprintf(root->keys[root->n_keys].id, sizeof(root->keys[0].id), "%s", k);
		if (strlen(k) > 64 || rsr_key_from_raw_public(ctx, raw, &root->keys[root->n_keys].key) < 0) {
			rsr_error(ctx, r, "%s: key %.64s is not a valid ed25519 key", what, k);
			goto fail;
		}
		root->n_keys++;
	}
	for (int i = 0; i < TUF_N_ROLES; i++) {
		json_t *role = json_object_get(roles, tuf_role_names[i]), *ids = json_object_get(role, "keyids"), *id;
		struct tuf_role_keys *rk = &root->roles[i];
		size_t j;

		if (!json_is_object(role) || !json_is_array(ids) ||
		    !get_uint(role, "threshold", 1, TUF_MAX_KEYS, &rk->threshold)) {
			rsr_error(ctx, r, "%s: role %s is not {keyids: [...], threshold: 1..%d}", what,
				  tuf_role_names[i], TUF_MAX_KEYS);
			goto fail;
		}
		if (json_array_size(ids) > TUF_MAX_KEYS) {
			rsr_error(ctx, r = RSR_E_LIMIT, "%s: role %s lists more than %d keys", what, tuf_role_names[i],
				  TUF_MAX_KEYS);
			goto fail;
		}
		rk->keyids = calloc(json_array_size(ids) + 1, sizeof(char *));
		if (!rk->keyids) {
			rsr_error(ctx, r = -ENOMEM, "out of memory");
			goto fail;
		}
		json_array_foreach(ids, j, id)
		{
			if (!json_is_string(id) || json_string_length(id) > 128) {
				rsr_error(ctx, r, "%s: role %s: key id %zu is not a string", what, tuf_role_names[i],
					  j);
				goto fail;
			}
			if (!(rk->keyids[rk->n++] = strdup(json_string_value(id)))) {
				rsr_error(ctx, r = -ENOMEM, "out of memory");
				goto fail;
			}
		}
	}
	*ret_root = root;
	return 0;
fail:
	tuf_root_free(root);
	return r;
}

int tuf_root_parse(struct rsr_ctx *ctx, const void *buf, size_t len, const char *what, struct tuf_root **ret_root)
{
	json_t *env;
	int r = tuf_parse(ctx, buf, len, TUF_ROOT, what, &env, NULL, NULL);

	if (r < 0)
		return r;
	r = tuf_root_from_env(ctx, env, what, ret_root);
	json_decref(env);
	return r;
}

static const struct tuf_key *find_key(const struct tuf_root *root, const char *id)
{
	for (size_t i = 0; i < root->n_keys; i++)
		if (!strcmp(root->keys[i].id, id))
			return &root->keys[i];
	return NULL;
}

int tuf_verify(struct rsr_ctx *ctx, const struct tuf_root *root, enum tuf_role role, json_t *env, const char *what)
{
	const struct tuf_role_keys *rk = &root->roles[role];
	json_t *sigs = json_object_get(env, "signatures"), *sig;
	_cleanup_free_ char *msg = NULL;
	_cleanup_free_ const struct rsr_key **good = NULL;
	size_t len, n_good = 0, i, n_bad = 0;
	int r;

	r = tuf_canonical(ctx, json_object_get(env, "signed"), &msg, &len);
	if (r < 0)
		return rsr_error_prefix(ctx, r, "%s", what);
	good = calloc(json_array_size(sigs) + 1, sizeof(*good));
	if (!good)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	json_array_foreach(sigs, i, sig)
	{
		const char *kid = json_string_value(json_object_get(sig, "keyid"));
		const char *sv = json_string_value(json_object_get(sig, "sig"));
		const struct tuf_key *tk;
		uint8_t raw[RSR_SIGNATURE_SIZE], pub[32], other[32];
		bool listed = false, dup = false;

		if (!kid || !sv)
			continue;
		for (size_t k = 0; k < rk->n; k++)
			listed |= !strcmp(rk->keyids[k], kid);
		if (!listed || !(tk = find_key(root, kid)))
			continue;
		if (!is_hex(sv, 2 * RSR_SIGNATURE_SIZE) || !rsr_hex_decode(sv, raw, sizeof(raw))) {
			n_bad++;
			continue;
		}
		r = rsr_key_verify(tk->key, msg, len, raw);
		if (r == -ENOMEM)
			return rsr_error(ctx, r, "out of memory");
		if (r < 0) {
			n_bad++;
			continue;
		}
		/* A key listed under two ids still counts once. */
		rsr_key_public_raw(tk->key, pub);
		for (size_t k = 0; k < n_good; k++) {
			rsr_key_public_raw(good[k], other);
			dup |= !memcmp(pub, other, 32);
		}
		if (!dup)
			good[n_good++] = tk->key;
	}
	if (n_good < rk->threshold)
		return rsr_error(ctx, RSR_E_SIGNATURE,
				 "%s: %zu valid signature%s by %s keys of root version %llu, threshold is %llu%s", what,
				 n_good, n_good == 1 ? "" : "s", tuf_role_names[role],
				 (unsigned long long)root->version, (unsigned long long)rk->threshold,
				 n_bad ? " (some signatures by those keys do not verify)" : "");
	return 0;
}

int tuf_sign(struct rsr_ctx *ctx, json_t *env, const struct rsr_key *const *keys, size_t n_keys)
{
	_cleanup_free_ char *msg = NULL;
	json_t *sigs = json_array();
	size_t len;
	int r;

	if (!sigs)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	r = tuf_canonical(ctx, json_object_get(env, "signed"), &msg, &len);
	for (size_t i = 0; r == 0 && i < n_keys; i++) {
		uint8_t sig[RSR_SIGNATURE_SIZE];
		char hex[2 * RSR_SIGNATURE_SIZE + 1], id[65];

		if ((r = tuf_keyid(ctx, keys[i], id)) < 0 || (r = rsr_key_sign(ctx, keys[i], msg, len, sig)) < 0)
			break;
		rsr_hex_encode(sig, sizeof(sig), hex);
		if (json_array_append_new(sigs, json_pack("{s:s, s:s}", "keyid", id, "sig", hex)) < 0)
			r = rsr_error(ctx, -ENOMEM, "out of memory");
	}
	if (r < 0) {
		json_decref(sigs);
		return r;
	}
	if (json_object_set_new(env, "signatures", sigs) < 0) /* releases sigs */
		return rsr_error(ctx, -ENOMEM, "out of memory");
	return 0;
}

static int parse_hashes(struct rsr_ctx *ctx, json_t *h, const char *what, bool *has, uint8_t out[32])
{
	json_t *v;
	const char *k;

	*has = false;
	if (!h)
		return 0;
	if (!json_is_object(h) || json_object_size(h) > 16)
		return rsr_error(ctx, RSR_E_FORMAT, "%s: hashes is not an object of at most 16 digests", what);
	json_object_foreach(h, k, v)
	{
		if (!json_is_string(v) || json_string_length(v) > 256)
			return rsr_error(ctx, RSR_E_FORMAT, "%s: hash %.32s is not a string", what, k);
		if (!strcmp(k, "sha256")) {
			if (!is_hex(json_string_value(v), 64) || !rsr_hex_decode(json_string_value(v), out, 32))
				return rsr_error(ctx, RSR_E_FORMAT, "%s: sha256 is not 64 lowercase hex digits", what);
			*has = true;
		}
	}
	return 0;
}

int tuf_meta_get(struct rsr_ctx *ctx, json_t *env, const char *name, const char *what, struct tuf_meta *ret)
{
	json_t *meta = json_object_get(json_object_get(env, "signed"), "meta"), *m;
	struct tuf_meta t = {0};
	int r;

	if (!json_is_object(meta))
		return rsr_error(ctx, RSR_E_FORMAT, "%s: no \"meta\" object", what);
	m = json_object_get(meta, name);
	if (!m)
		return rsr_error(ctx, RSR_E_FORMAT, "%s: meta lists no %s", what, name);
	if (!json_is_object(m) || !get_uint(m, "version", 1, (uint64_t)1 << 53, &t.version))
		return rsr_error(ctx, RSR_E_FORMAT, "%s: meta %s has no version from 1 to 2^53", what, name);
	if (json_object_get(m, "length") && !get_uint(m, "length", 1, (uint64_t)1 << 53, &t.length))
		return rsr_error(ctx, RSR_E_FORMAT, "%s: meta %s: length is not a positive integer", what, name);
	if ((r = parse_hashes(ctx, json_object_get(m, "hashes"), what, &t.has_sha256, t.sha256)) < 0)
		return r;
	*ret = t;
	return 0;
}

static bool path_ok(const char *p)
{
	size_t n = strlen(p);

	if (n == 0 || n > TUF_MAX_PATH || p[0] == '/' || p[n - 1] == '/')
		return false;
	for (const char *s = p; *s; s++)
		if ((unsigned char)*s < 0x21 || *s == 0x7f || *s == '\\' || *s == '?' || *s == '#' || *s == '%')
			return false;
	/* No "." or ".." component, no empty one. */
	for (const char *c = p; c; c = strchr(c, '/') ? strchr(c, '/') + 1 : NULL) {
		size_t l = strcspn(c, "/");
		if (l == 0 || (l == 1 && c[0] == '.') || (l == 2 && c[0] == '.' && c[1] == '.'))
			return false;
	}
	return true;
}

int tuf_target_parse(struct rsr_ctx *ctx, const char *path, json_t *info, struct tuf_target *ret)
{
	struct tuf_target t = {.path = path};
	bool has;
	int r;

	if (!path_ok(path))
		return rsr_error(ctx, RSR_E_FORMAT, "target path '%.64s' is not a clean relative path", path);
	if (!json_is_object(info) || !get_uint(info, "length", 0, (uint64_t)1 << 53, &t.length))
		return rsr_error(ctx, RSR_E_FORMAT, "target %s: no length", path);
	if ((r = parse_hashes(ctx, json_object_get(info, "hashes"), path, &has, t.sha256)) < 0)
		return r;
	if (!has)
		return rsr_error(ctx, RSR_E_FORMAT, "target %s: no sha256 hash", path);
	t.custom = json_object_get(info, "custom");
	if (t.custom && !json_is_object(t.custom))
		return rsr_error(ctx, RSR_E_FORMAT, "target %s: custom is not an object", path);
	*ret = t;
	return 0;
}

int tuf_target_get(struct rsr_ctx *ctx, json_t *env, const char *path, struct tuf_target *ret)
{
	json_t *targets = json_object_get(json_object_get(env, "signed"), "targets");
	json_t *info = json_object_get(targets, path);
	const char *k;

	if (!info)
		return -ENOENT;
	/* Borrow the key from the object so the path outlives the caller's string. */
	json_object_foreach(targets, k, info) if (!strcmp(k, path)) return tuf_target_parse(ctx, k, info, ret);
	return -ENOENT;
}

int tuf_targets_check(struct rsr_ctx *ctx, json_t *env, const char *what)
{
	json_t *targets = json_object_get(json_object_get(env, "signed"), "targets"), *info;
	const char *k;
	struct tuf_target t;
	int r;

	if (!json_is_object(targets))
		return rsr_error(ctx, RSR_E_FORMAT, "%s: no \"targets\" object", what);
	if (json_object_size(targets) > TUF_MAX_TARGETS)
		return rsr_error(ctx, RSR_E_LIMIT, "%s: more than %d targets", what, TUF_MAX_TARGETS);
	json_object_foreach(targets, k, info) if ((r = tuf_target_parse(ctx, k, info, &t)) <
						  0) return rsr_error_prefix(ctx, r, "%s", what);
	return 0;
}

char *tuf_target_file(const struct tuf_target *t, bool consistent)
{
	const char *base = strrchr(t->path, '/');
	char hex[65], *out;
	int dirlen = base ? (int)(base - t->path) : 0;

	if (!consistent)
		return strdup(t->path);
	rsr_hex_encode(t->sha256, 32, hex);
	if (asprintf(&out, "%.*s%s%s.%s", dirlen, t->path, base ? "/" : "", hex, base ? base + 1 : t->path) < 0)
		return NULL;
	return out;
}
