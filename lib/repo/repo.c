/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The vendor's TUF repository: init, add a response as targets, refresh,
 * withdraw, staged rollout and key rotation. Every file is replaced by
 * write-temp, fsync, rename; timestamp.json, written last, is what makes a
 * change visible to clients. Format: docs/formats/repository.md.
 */
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "rsr/repo.h"
#include "rsr/response.h"
#include "tuf.h"

#define META_MAX (64 * 1024 * 1024)

struct repo {
	const char *dir;
	struct tuf_root *root;
	json_t *targets, *snapshot, *timestamp; /* envelopes */
};

const char *rsr_repo_role_name(enum rsr_repo_role role)
{
	return (unsigned)role < TUF_N_ROLES ? tuf_role_names[role] : NULL;
}

int rsr_repo_role_from_name(const char *name)
{
	for (int i = 0; i < TUF_N_ROLES; i++)
		if (!strcmp(name, tuf_role_names[i]))
			return i;
	return -EINVAL;
}

static void repo_done(struct repo *r)
{
	tuf_root_free(r->root);
	json_decref(r->targets);
	json_decref(r->snapshot);
	json_decref(r->timestamp);
}

static int load_env(struct rsr_ctx *ctx, const char *dir, const char *name, enum tuf_role role, json_t **ret)
{
	_cleanup_free_ char *path = NULL, *buf = NULL;
	size_t len;
	int r;

	if (asprintf(&path, "%s/metadata/%s", dir, name) < 0)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	if ((r = rsr_read_file(ctx, path, META_MAX, &buf, &len)) < 0)
		return r;
	return tuf_parse(ctx, buf, len, role, path, ret, NULL, NULL);
}

static int repo_load(struct rsr_ctx *ctx, const char *dir, struct repo *r)
{
	json_t *env = NULL;
	struct tuf_meta m;
	char name[64];
	int e;

	*r = (struct repo){.dir = dir};
	if ((e = load_env(ctx, dir, "root.json", TUF_ROOT, &env)) < 0)
		return e;
	e = tuf_root_from_env(ctx, env, "root.json", &r->root);
	json_decref(env);
	if (e < 0 || (e = load_env(ctx, dir, "timestamp.json", TUF_TIMESTAMP, &r->timestamp)) < 0 ||
	    (e = tuf_meta_get(ctx, r->timestamp, "snapshot.json", "timestamp.json", &m)) < 0)
		goto fail;
	snprintf(name, sizeof(name), "%llu.snapshot.json", (unsigned long long)m.version);
	if ((e = load_env(ctx, dir, name, TUF_SNAPSHOT, &r->snapshot)) < 0 ||
	    (e = tuf_meta_get(ctx, r->snapshot, "targets.json", name, &m)) < 0)
		goto fail;
	snprintf(name, sizeof(name), "%llu.targets.json", (unsigned long long)m.version);
	if ((e = load_env(ctx, dir, name, TUF_TARGETS, &r->targets)) < 0 ||
	    (e = tuf_targets_check(ctx, r->targets, name)) < 0)
		goto fail;
	return 0;
fail:
	repo_done(r);
	return e;
}

/* The given private keys the root lists for `role`; at least its threshold of them. */
static int role_keys(struct rsr_ctx *ctx, const struct tuf_root *root, enum tuf_role role,
		     const struct rsr_repo_sign_opts *sign, const struct rsr_key **out, size_t *n_out)
{
	const struct tuf_role_keys *rk = &root->roles[role];
	size_t n = *n_out, found = 0;

	for (size_t k = 0; k < rk->n; k++) {
		/* Each listed key counts once, however often it was given. */
		for (size_t i = 0; i < sign->n_keys; i++) {
			char id[65];
			bool dup = false;
			int r;

			if (!rsr_key_is_private(sign->keys[i]))
				continue;
			if ((r = tuf_keyid(ctx, sign->keys[i], id)) < 0)
				return r;
			if (strcmp(rk->keyids[k], id))
				continue;
			found++;
			for (size_t j = 0; j < n; j++) {
				char other[65];
				if ((r = tuf_keyid(ctx, out[j], other)) < 0)
					return r;
				dup |= !strcmp(other, id);
			}
			if (!dup)
				out[n++] = sign->keys[i];
			break;
		}
	}
	if (found < rk->threshold)
		return rsr_error(ctx, RSR_E_KEY,
				 "the %s role needs signatures by %llu of its %zu keys; %zu of the given keys %s",
				 tuf_role_names[role], (unsigned long long)rk->threshold, rk->n, found,
				 found == 1 ? "is one" : "are among them");
	*n_out = n;
	return 0;
}

static int sign_role(struct rsr_ctx *ctx, const struct tuf_root *root, enum tuf_role role, json_t *env,
		     const struct rsr_repo_sign_opts *sign)
{
	_cleanup_free_ const struct rsr_key **keys = calloc(sign->n_keys + 1, sizeof(*keys));
	size_t n = 0;
	int r;

	if (!keys)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	if ((r = role_keys(ctx, root, role, sign, keys, &n)) < 0)
		return r;
	return tuf_sign(ctx, env, keys, n);
}

static void set_expiry(bool *ok, json_t *s, enum tuf_role role, const struct rsr_repo_sign_opts *sign)
{
	static const uint64_t defaults[] = {RSR_REPO_EXPIRES_ROOT, RSR_REPO_EXPIRES_TARGETS, RSR_REPO_EXPIRES_SNAPSHOT,
					    RSR_REPO_EXPIRES_TIMESTAMP};
	char buf[32];

	tuf_time_format((int64_t)(sign->now + (sign->expires[role] ? sign->expires[role] : defaults[role])), buf);
	rsr_json_set(ok, s, "expires", json_string(buf));
}

static uint64_t version_of(json_t *env)
{
	return (uint64_t)json_integer_value(json_object_get(json_object_get(env, "signed"), "version"));
}

/* Serialises env (indented, keys sorted), writes metadata/NAME atomically, returns length and digest. */
static int write_env(struct rsr_ctx *ctx, const char *dir, const char *name, json_t *env, uint64_t *ret_len,
		     uint8_t ret_sha[32])
{
	_cleanup_free_ char *s = json_dumps(env, JSON_INDENT(1) | JSON_SORT_KEYS), *path = NULL;
	size_t len;
	int r;

	if (!s || asprintf(&path, "%s/metadata/%s", dir, name) < 0)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	len = strlen(s);
	s[len] = '\0';
	if ((r = rsr_write_file_atomic(ctx, path, s, len, 0644)) < 0)
		return r;
	if (ret_len)
		*ret_len = len;
	if (ret_sha)
		rsr_sha256(s, len, ret_sha);
	return 0;
}

static json_t *meta_entry(uint64_t version, uint64_t len, const uint8_t sha[32])
{
	char hex[65];

	rsr_hex_encode(sha, 32, hex);
	return json_pack("{s:I, s:I, s:{s:s}}", "version", (json_int_t)version, "length", (json_int_t)len, "hashes",
			 "sha256", hex);
}

static json_t *new_env(enum tuf_role role, uint64_t version)
{
	return json_pack("{s:{s:s, s:s, s:I}, s:[]}", "signed", "_type", tuf_role_names[role], "spec_version",
			 TUF_SPEC_VERSION, "version", (json_int_t)version, "signatures");
}

/*
 * Publishes a change: the next targets version when `targets_changed`, then
 * always the next snapshot and timestamp versions, timestamp last.
 */
static int publish(struct rsr_ctx *ctx, struct repo *rp, bool targets_changed, const struct rsr_repo_sign_opts *sign)
{
	uint64_t tv = version_of(rp->targets), sv = rp->snapshot ? version_of(rp->snapshot) + 1 : 1;
	uint64_t tlen, slen;
	uint8_t tsha[32], ssha[32];
	json_t *snap = NULL, *ts = NULL;
	char name[64];
	bool ok = true;
	int r;

	if (targets_changed) {
		json_t *s = json_object_get(rp->targets, "signed");
		rsr_json_set(&ok, s, "version", json_integer((json_int_t)++tv));
		set_expiry(&ok, s, TUF_TARGETS, sign);
		if (!ok)
			return rsr_error(ctx, -ENOMEM, "out of memory");
	}
	/* The targets metadata is rewritten (and re-signed when changed) so its length and digest are known. */
	if (targets_changed && (r = sign_role(ctx, rp->root, TUF_TARGETS, rp->targets, sign)) < 0)
		return r;
	snprintf(name, sizeof(name), "%llu.targets.json", (unsigned long long)tv);
	if ((r = write_env(ctx, rp->dir, name, rp->targets, &tlen, tsha)) < 0)
		return r;

	snap = new_env(TUF_SNAPSHOT, sv);
	ts = new_env(TUF_TIMESTAMP, rp->timestamp ? version_of(rp->timestamp) + 1 : 1);
	if (!snap || !ts) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	set_expiry(&ok, json_object_get(snap, "signed"), TUF_SNAPSHOT, sign);
	rsr_json_set(&ok, json_object_get(snap, "signed"), "meta",
		     json_pack("{s:o}", "targets.json", meta_entry(tv, tlen, tsha)));
	if (!ok) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	if ((r = sign_role(ctx, rp->root, TUF_SNAPSHOT, snap, sign)) < 0)
		goto out;
	snprintf(name, sizeof(name), "%llu.snapshot.json", (unsigned long long)sv);
	if ((r = write_env(ctx, rp->dir, name, snap, &slen, ssha)) < 0)
		goto out;

	set_expiry(&ok, json_object_get(ts, "signed"), TUF_TIMESTAMP, sign);
	rsr_json_set(&ok, json_object_get(ts, "signed"), "meta",
		     json_pack("{s:o}", "snapshot.json", meta_entry(sv, slen, ssha)));
	if (!ok) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	if ((r = sign_role(ctx, rp->root, TUF_TIMESTAMP, ts, sign)) < 0 ||
	    (r = write_env(ctx, rp->dir, "timestamp.json", ts, NULL, NULL)) < 0)
		goto out;
	json_decref(rp->snapshot);
	json_decref(rp->timestamp);
	rp->snapshot = TAKE_PTR(snap);
	rp->timestamp = TAKE_PTR(ts);
out:
	json_decref(snap);
	json_decref(ts);
	return r;
}

/* Writes N.root.json and root.json. */
static int write_root(struct rsr_ctx *ctx, const char *dir, json_t *env)
{
	char name[64];
	int r;

	snprintf(name, sizeof(name), "%llu.root.json", (unsigned long long)version_of(env));
	if ((r = write_env(ctx, dir, name, env, NULL, NULL)) < 0)
		return r;
	return write_env(ctx, dir, "root.json", env, NULL, NULL);
}

static int add_key(struct rsr_ctx *ctx, json_t *keys, json_t *ids, const struct rsr_key *key)
{
	char id[65];
	bool ok = true;
	int r;

	if ((r = tuf_keyid(ctx, key, id)) < 0)
		return r;
	rsr_json_set(&ok, keys, id, tuf_key_json(key));
	for (size_t i = 0; ok && i < json_array_size(ids); i++)
		if (!strcmp(json_string_value(json_array_get(ids, i)), id))
			return 0;
	rsr_json_push(&ok, ids, json_string(id));
	return ok ? 0 : rsr_error(ctx, -ENOMEM, "out of memory");
}

int rsr_repo_init(struct rsr_ctx *ctx, const char *dir, const struct rsr_repo_init_opts *init,
		  const struct rsr_repo_sign_opts *sign)
{
	struct repo rp = {.dir = dir};
	_cleanup_free_ char *meta = NULL, *tdir = NULL;
	const struct rsr_key *role_key[TUF_N_ROLES];
	json_t *root = NULL, *keys, *roles;
	unsigned threshold = init->threshold ? init->threshold : 1;
	struct stat st;
	int r;

	if (init->n_root_keys == 0)
		return rsr_error(ctx, RSR_E_KEY, "a repository needs at least one root key");
	if (threshold > init->n_root_keys)
		return rsr_error(ctx, -EINVAL, "root threshold %u is more than the %zu root keys", threshold,
				 init->n_root_keys);
	if (asprintf(&meta, "%s/metadata", dir) < 0 || asprintf(&tdir, "%s/targets", dir) < 0)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	if (stat(meta, &st) == 0)
		return rsr_error(ctx, -EEXIST, "%s: a repository is already there", dir);
	role_key[TUF_TARGETS] = init->targets_key ? init->targets_key : init->root_keys[0];
	role_key[TUF_SNAPSHOT] = init->snapshot_key ? init->snapshot_key : init->root_keys[0];
	role_key[TUF_TIMESTAMP] = init->timestamp_key ? init->timestamp_key : init->root_keys[0];

	root = new_env(TUF_ROOT, 1);
	if (!root)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	json_t *s = json_object_get(root, "signed");
	bool ok = true;
	rsr_json_set(&ok, s, "consistent_snapshot", json_true());
	rsr_json_set(&ok, s, "keys", keys = json_object());
	rsr_json_set(&ok, s, "roles", roles = json_object());
	set_expiry(&ok, s, TUF_ROOT, sign);
	for (int i = 0; i < TUF_N_ROLES; i++) {
		json_t *ids = json_array();
		rsr_json_set(&ok, roles, tuf_role_names[i],
			     json_pack("{s:O, s:i}", "keyids", ids, "threshold", i == TUF_ROOT ? (int)threshold : 1));
		json_decref(ids);
		if (!ok) {
			r = rsr_error(ctx, -ENOMEM, "out of memory");
			goto out;
		}
		if (i == TUF_ROOT) {
			for (size_t k = 0; k < init->n_root_keys; k++)
				if ((r = add_key(ctx, keys, ids, init->root_keys[k])) < 0)
					goto out;
		} else if ((r = add_key(ctx, keys, ids, role_key[i])) < 0)
			goto out;
	}
	if (json_array_size(json_object_get(json_object_get(roles, "root"), "keyids")) < threshold) {
		r = rsr_error(ctx, -EINVAL, "root threshold %u is more than the distinct root keys", threshold);
		goto out;
	}
	if ((r = tuf_root_from_env(ctx, root, "new root", &rp.root)) < 0 ||
	    (r = sign_role(ctx, rp.root, TUF_ROOT, root, sign)) < 0)
		goto out;
	/* Keep the signed envelope in the parsed root. */
	json_decref(rp.root->env);
	rp.root->env = json_incref(root);
	rp.targets = new_env(TUF_TARGETS, 0);
	if (!rp.targets) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	rsr_json_set(&ok, json_object_get(rp.targets, "signed"), "targets", json_object());
	if (!ok) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	/* Check every role can be signed before anything is written. */
	{
		const struct rsr_key *tmp[64];
		for (int i = 1; i < TUF_N_ROLES; i++) {
			size_t n = 0;
			const struct rsr_repo_sign_opts one = {.keys = sign->keys, .n_keys = RSR_MIN(sign->n_keys, 64)};
			if ((r = role_keys(ctx, rp.root, i, &one, tmp, &n)) < 0)
				goto out;
		}
	}
	if ((r = rsr_mkdir_p_at(ctx, AT_FDCWD, meta, NULL)) < 0 ||
	    (r = rsr_mkdir_p_at(ctx, AT_FDCWD, tdir, NULL)) < 0 || (r = write_root(ctx, dir, root)) < 0 ||
	    (r = publish(ctx, &rp, true, sign)) < 0)
		goto out;
out:
	json_decref(root);
	repo_done(&rp);
	return r;
}

/* Copies src into DIR/targets/<file> via a temporary, fsynced. */
static int copy_target(struct rsr_ctx *ctx, const char *dir, const char *src, const char *file, uint64_t *ret_len,
		       uint8_t ret_sha[32])
{
	_cleanup_free_ char *dst = NULL, *parent = NULL;
	_cleanup_close_ int in = open(src, O_RDONLY | O_CLOEXEC);
	struct rsr_atomic_file *af;
	struct stat st;
	int r;

	if (in < 0 || fstat(in, &st) < 0)
		return rsr_error_errno(ctx, -errno, "%s", src);
	if (!S_ISREG(st.st_mode))
		return rsr_error(ctx, RSR_E_FORMAT, "%s: not a regular file", src);
	if (asprintf(&dst, "%s/targets/%s", dir, file) < 0 || !(parent = strdup(dst)))
		return rsr_error(ctx, -ENOMEM, "out of memory");
	*strrchr(parent, '/') = '\0';
	if ((r = rsr_mkdir_p_at(ctx, AT_FDCWD, parent, NULL)) < 0)
		return r;
	if ((r = rsr_atomic_open(ctx, dst, 0644, &af)) < 0)
		return r;
	if ((r = rsr_copy_range(in, 0, af->fd, 0, (uint64_t)st.st_size)) < 0) {
		rsr_atomic_abort(af);
		return rsr_error_errno(ctx, r, "%s: cannot copy", dst);
	}
	if ((r = rsr_atomic_commit(ctx, af)) < 0)
		return r;
	*ret_len = (uint64_t)st.st_size;
	if (ret_sha) {
		_cleanup_close_ int fd = open(dst, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return rsr_error_errno(ctx, -errno, "%s", dst);
		return rsr_sha256_fd(ctx, fd, 0, *ret_len, dst, ret_sha);
	}
	return 0;
}

static int sha_of_file(struct rsr_ctx *ctx, const char *path, uint64_t *ret_len, uint8_t sha[32])
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;

	if (fd < 0 || fstat(fd, &st) < 0)
		return rsr_error_errno(ctx, -errno, "%s", path);
	*ret_len = (uint64_t)st.st_size;
	return rsr_sha256_fd(ctx, fd, 0, (uint64_t)st.st_size, path, sha);
}

/* Adds the file `rel` of the response as target PREFIX/rel; checks its digest against the manifest's. */
static int add_file(struct rsr_ctx *ctx, struct repo *rp, const char *rdir, const char *prefix, const char *rel,
		    const char *want_sha, json_t *custom, char **ret_target)
{
	_cleanup_free_ char *src = NULL, *target = NULL, *file = NULL;
	struct tuf_target t;
	uint8_t sha[32];
	uint64_t len = 0;
	char hex[65];
	int r;

	if (asprintf(&src, "%s/%s", rdir, rel) < 0 || asprintf(&target, "%s/%s", prefix, rel) < 0)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	if ((r = sha_of_file(ctx, src, &len, sha)) < 0)
		return r;
	rsr_hex_encode(sha, 32, hex);
	if (want_sha && strcmp(hex, want_sha))
		return rsr_error(ctx, RSR_E_DIGEST, "%s: digest %.16s…, the response manifest signed %.16s…", src, hex,
				 want_sha);
	t = (struct tuf_target){.path = target, .length = len};
	memcpy(t.sha256, sha, 32);
	if (!(file = tuf_target_file(&t, rp->root->consistent)))
		return rsr_error(ctx, -ENOMEM, "out of memory");
	if ((r = copy_target(ctx, rp->dir, src, file, &len, NULL)) < 0)
		return r;
	json_t *info = json_pack("{s:I, s:{s:s}}", "length", (json_int_t)len, "hashes", "sha256", hex);
	if (!info)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	if (custom && json_object_set(info, "custom", custom) < 0) {
		json_decref(info);
		return rsr_error(ctx, -ENOMEM, "out of memory");
	}
	/* json_object_set_new releases info when it fails. */
	if (json_object_set_new(json_object_get(json_object_get(rp->targets, "signed"), "targets"), target, info) < 0)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	if (ret_target)
		*ret_target = TAKE_PTR(target);
	return 0;
}

static json_t *response_custom(const struct rsr_response *resp, const char *prefix, unsigned rollout)
{
	json_t *advs = json_array(), *images = json_array(), *c;
	bool ok = true;

	for (size_t i = 0; i < rsr_response_advisory_count(resp); i++) {
		const struct rsr_advisory *a = rsr_response_advisory(resp, i);
		json_t *cves = json_array();
		for (size_t k = 0; k < a->n_cves; k++)
			rsr_json_push(&ok, cves, json_string(a->cves[k]));
		rsr_json_push(&ok, advs,
			      json_pack("{s:s, s:s, s:s, s:o}", "id", a->id, "title", a->title, "severity", a->severity,
					"cves", cves));
	}
	for (size_t i = 0; i < rsr_response_image_count(resp); i++) {
		const struct rsr_response_image *im = rsr_response_image(resp, i);
		json_t *inputs = json_array();
		for (size_t k = 0; k < im->n_forward_inputs; k++)
			rsr_json_push(&ok, inputs, json_string(im->forward_inputs[k]));
		rsr_json_push(&ok, images,
			      json_pack("{s:s, s:s, s:s, s:s, s:{s:s++, s:I, s:o}, s:{s:s++, s:I}}", "slot", im->slot,
					"arch", im->arch, "version", im->version, "sha256", im->sha256, "forward",
					"target", prefix, "/", im->forward, "length", (json_int_t)im->forward_size,
					"inputs", inputs, "reverse", "target", prefix, "/", im->reverse, "length",
					(json_int_t)im->reverse_size));
	}
	c = json_pack("{s:{s:s, s:s, s:I, s:s, s:I, s:i, s:b, s:o, s:o}}", "rsr", "base_build",
		      rsr_response_base_build(resp), "letter", rsr_response_letter(resp), "sequence",
		      (json_int_t)rsr_response_sequence(resp), "restart", rsr_restart_name(rsr_response_restart(resp)),
		      "timestamp", (json_int_t)rsr_response_timestamp(resp), "rollout", (int)rollout, "withdrawn", 0,
		      "advisories", advs, "images", images);
	if (!ok) {
		json_decref(c);
		return NULL;
	}
	return c;
}

int rsr_repo_add(struct rsr_ctx *ctx, const char *dir, const char *response_dir, unsigned rollout,
		 const struct rsr_repo_sign_opts *sign)
{
	struct rsr_response *resp = NULL;
	struct repo rp;
	_cleanup_free_ char *prefix = NULL, *manifest_target = NULL;
	json_t *custom = NULL, *targets, *info;
	const char *k;
	int r;

	if (rollout < 1 || rollout > 100)
		return rsr_error(ctx, -EINVAL, "rollout percentage %u is not 1 to 100", rollout);
	if ((r = rsr_response_open(ctx, response_dir, NULL, &resp)) < 0)
		return r;
	if ((r = repo_load(ctx, dir, &rp)) < 0)
		goto out_resp;
	if (asprintf(&prefix, "%s/%s", rsr_response_base_build(resp), rsr_response_letter(resp)) < 0) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	targets = json_object_get(json_object_get(rp.targets, "signed"), "targets");
	json_object_foreach(targets, k, info)
	{
		json_t *c = json_object_get(json_object_get(info, "custom"), "rsr");
		if (!c)
			continue;
		const char *b = json_string_value(json_object_get(c, "base_build"));
		const char *l = json_string_value(json_object_get(c, "letter"));
		if (b && !strcmp(b, rsr_response_base_build(resp)) &&
		    ((l && !strcmp(l, rsr_response_letter(resp))) ||
		     (uint64_t)json_integer_value(json_object_get(c, "sequence")) == rsr_response_sequence(resp))) {
			r = rsr_error(ctx, -EEXIST,
				      "%s: response (%s) of base %s, sequence %llu, is already published as %s", dir,
				      rsr_response_letter(resp), rsr_response_base_build(resp),
				      (unsigned long long)rsr_response_sequence(resp), k);
			goto out;
		}
	}
	custom = response_custom(resp, prefix, rollout);
	if (!custom) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	/* Patches first, the manifest last: a target is listed only once its file is in place. */
	for (size_t i = 0; i < rsr_response_image_count(resp); i++) {
		const struct rsr_response_image *im = rsr_response_image(resp, i);
		if ((r = add_file(ctx, &rp, response_dir, prefix, im->forward, im->forward_sha256, NULL, NULL)) < 0 ||
		    (r = add_file(ctx, &rp, response_dir, prefix, im->reverse, im->reverse_sha256, NULL, NULL)) < 0)
			goto out;
	}
	if ((r = add_file(ctx, &rp, response_dir, prefix, RSR_RESPONSE_MANIFEST, NULL, custom, &manifest_target)) < 0)
		goto out;
	r = publish(ctx, &rp, true, sign);
	if (r == 0)
		rsr_info(ctx, "published response (%s) of %s as %s", rsr_response_letter(resp),
			 rsr_response_base_build(resp), manifest_target);
out:
	json_decref(custom);
	repo_done(&rp);
out_resp:
	rsr_response_free(resp);
	return r;
}

int rsr_repo_refresh(struct rsr_ctx *ctx, const char *dir, const struct rsr_repo_sign_opts *sign)
{
	struct repo rp;
	int r;

	if ((r = repo_load(ctx, dir, &rp)) < 0)
		return r;
	r = publish(ctx, &rp, false, sign);
	repo_done(&rp);
	return r;
}

static int edit_response(struct rsr_ctx *ctx, const char *dir, const char *base_build, const char *letter,
			 bool withdraw, unsigned rollout, const struct rsr_repo_sign_opts *sign)
{
	_cleanup_free_ char *path = NULL;
	struct repo rp;
	json_t *c;
	bool ok = true;
	int r;

	if (!withdraw && (rollout < 1 || rollout > 100))
		return rsr_error(ctx, -EINVAL, "rollout percentage %u is not 1 to 100", rollout);
	if (asprintf(&path, "%s/%s/%s", base_build, letter, RSR_RESPONSE_MANIFEST) < 0)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	if ((r = repo_load(ctx, dir, &rp)) < 0)
		return r;
	c = json_object_get(
	    json_object_get(json_object_get(json_object_get(json_object_get(rp.targets, "signed"), "targets"), path),
			    "custom"),
	    "rsr");
	if (!json_is_object(c)) {
		r = rsr_error(ctx, -ENOENT, "%s: no response (%s) of base build %s is published", dir, letter,
			      base_build);
		goto out;
	}
	if (withdraw)
		rsr_json_set(&ok, c, "withdrawn", json_true());
	else
		rsr_json_set(&ok, c, "rollout", json_integer(rollout));
	r = ok ? publish(ctx, &rp, true, sign) : rsr_error(ctx, -ENOMEM, "out of memory");
out:
	repo_done(&rp);
	return r;
}

int rsr_repo_withdraw(struct rsr_ctx *ctx, const char *dir, const char *base_build, const char *letter,
		      const struct rsr_repo_sign_opts *sign)
{
	return edit_response(ctx, dir, base_build, letter, true, 0, sign);
}

int rsr_repo_set_rollout(struct rsr_ctx *ctx, const char *dir, const char *base_build, const char *letter,
			 unsigned rollout, const struct rsr_repo_sign_opts *sign)
{
	return edit_response(ctx, dir, base_build, letter, false, rollout, sign);
}

int rsr_repo_rotate_key(struct rsr_ctx *ctx, const char *dir, enum rsr_repo_role role,
			const struct rsr_key *const *new_keys, size_t n_new_keys, unsigned threshold,
			const struct rsr_repo_sign_opts *sign)
{
	struct repo rp;
	struct tuf_root *nroot = NULL;
	json_t *env = NULL, *s, *keys, *roles, *ids, *used;
	bool ok = true;
	_cleanup_free_ const struct rsr_key **signers = NULL;
	const char *k;
	json_t *v;
	size_t n = 0;
	int r;

	if ((unsigned)role >= TUF_N_ROLES)
		return rsr_error(ctx, -EINVAL, "no such role");
	if (threshold == 0)
		threshold = 1;
	if (n_new_keys == 0 || threshold > n_new_keys)
		return rsr_error(ctx, -EINVAL, "threshold %u needs at least as many new keys (%zu given)", threshold,
				 n_new_keys);
	if ((r = repo_load(ctx, dir, &rp)) < 0)
		return r;
	env = json_deep_copy(rp.root->env);
	signers = calloc(2 * sign->n_keys + 1, sizeof(*signers));
	if (!env || !signers) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	s = json_object_get(env, "signed");
	keys = json_object_get(s, "keys");
	roles = json_object_get(s, "roles");
	rsr_json_set(&ok, s, "version", json_integer((json_int_t)(rp.root->version + 1)));
	set_expiry(&ok, s, TUF_ROOT, sign);
	ids = json_array();
	rsr_json_set(&ok, roles, tuf_role_names[role],
		     json_pack("{s:O, s:i}", "keyids", ids, "threshold", (int)threshold));
	json_decref(ids);
	if (!ok) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n_new_keys; i++)
		if ((r = add_key(ctx, keys, ids, new_keys[i])) < 0)
			goto out;
	/* Keys no role uses any more leave the root. */
	used = json_object();
	json_object_foreach(roles, k, v)
	{
		json_t *id;
		size_t i;
		json_array_foreach(json_object_get(v, "keyids"), i, id)
		    rsr_json_set(&ok, used, json_string_value(id), json_incref(id));
	}
	if (!ok) {
		/* A key missing from `used` would be dropped from the root while a role still names it. */
		json_decref(used);
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	{
		void *tmp;
		json_object_foreach_safe(keys, tmp, k, v) if (!json_object_get(used, k)) json_object_del(keys, k);
	}
	json_decref(used);
	if ((r = tuf_root_from_env(ctx, env, "new root", &nroot)) < 0)
		goto out;
	/* Signed by the old root keys (so devices trust it) and the new ones (so it trusts itself). */
	if ((r = role_keys(ctx, rp.root, TUF_ROOT, sign, signers, &n)) < 0 ||
	    (r = role_keys(ctx, nroot, TUF_ROOT, sign, signers, &n)) < 0 || (r = tuf_sign(ctx, env, signers, n)) < 0)
		goto out;
	if ((r = tuf_verify(ctx, rp.root, TUF_ROOT, env, "new root")) < 0 ||
	    (r = tuf_verify(ctx, nroot, TUF_ROOT, env, "new root")) < 0)
		goto out;
	/* Every role must still be signable with the given keys before the new root is written. */
	for (int i = 1; i < TUF_N_ROLES; i++) {
		size_t m = 0;
		_cleanup_free_ const struct rsr_key **tmp = calloc(sign->n_keys + 1, sizeof(*tmp));
		if (!tmp) {
			r = rsr_error(ctx, -ENOMEM, "out of memory");
			goto out;
		}
		if (i == TUF_TARGETS && (int)role != TUF_TARGETS)
			continue;
		if ((r = role_keys(ctx, nroot, i, sign, tmp, &m)) < 0)
			goto out;
	}
	if ((r = write_root(ctx, dir, env)) < 0)
		goto out;
	json_decref(nroot->env);
	nroot->env = json_incref(env);
	tuf_root_free(rp.root);
	rp.root = TAKE_PTR(nroot);
	r = publish(ctx, &rp, (int)role == TUF_TARGETS, sign);
out:
	tuf_root_free(nroot);
	json_decref(env);
	repo_done(&rp);
	return r;
}
