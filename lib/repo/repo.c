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
#include <time.h>

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

/*
 * Writes timestamp.json with a modification time at least a second past the
 * one it replaces. Web servers derive the validators devices send back
 * (nginx's ETag, Last-Modified) from the time in whole seconds and the
 * size, and two timestamps written within one second have the same size:
 * a device that fetched the first would be told "304 Not Modified" about
 * the second until the next change.
 */
static int write_timestamp(struct rsr_ctx *ctx, const char *path, const char *s, size_t len)
{
	struct rsr_atomic_file *af;
	struct timespec now, t[2];
	struct stat old;
	int r;

	if ((r = rsr_atomic_open(ctx, path, 0644, &af)) < 0)
		return r;
	if ((r = rsr_write_all(af->fd, s, len)) < 0) {
		rsr_atomic_abort(af);
		return rsr_error_errno(ctx, r, "%s: write", path);
	}
	clock_gettime(CLOCK_REALTIME, &now);
	if (stat(path, &old) == 0 && now.tv_sec <= old.st_mtim.tv_sec) {
		t[0] = t[1] = (struct timespec){.tv_sec = old.st_mtim.tv_sec + 1};
		if (futimens(af->fd, t) < 0) {
			r = -errno;
			rsr_atomic_abort(af);
			return rsr_error_errno(ctx, r, "%s: cannot set its modification time", path);
		}
	}
	return rsr_atomic_commit(ctx, af);
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
	if ((r = !strcmp(name, "timestamp.json") ? write_timestamp(ctx, path, s, len)
						 : rsr_write_file_atomic(ctx, path, s, len, 0644)) < 0)
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

/* Roles publish_roles() writes. */
#define W_TARGETS RSR_REPO_ROLE_BIT(TUF_TARGETS)
#define W_SNAPSHOT RSR_REPO_ROLE_BIT(TUF_SNAPSHOT)
#define W_TIMESTAMP RSR_REPO_ROLE_BIT(TUF_TIMESTAMP)

/*
 * Writes the next versions of the roles in `which`, timestamp last: targets
 * (with a new version and expiry), then snapshot (naming the current
 * targets), then timestamp (naming the current snapshot). A new targets
 * needs a new snapshot and a new snapshot a new timestamp; the caller
 * passes them.
 */
static int publish_roles(struct rsr_ctx *ctx, struct repo *rp, unsigned which, const struct rsr_repo_sign_opts *sign)
{
	uint64_t tv = version_of(rp->targets), sv = rp->snapshot ? version_of(rp->snapshot) + 1 : 1;
	uint64_t tlen, slen;
	uint8_t tsha[32], ssha[32];
	json_t *snap = NULL, *ts = NULL, *snap_meta = NULL;
	char name[64];
	bool ok = true;
	int r = 0;

	if (which & W_TARGETS) {
		json_t *s = json_object_get(rp->targets, "signed");
		rsr_json_set(&ok, s, "version", json_integer((json_int_t)++tv));
		set_expiry(&ok, s, TUF_TARGETS, sign);
		if (!ok)
			return rsr_error(ctx, -ENOMEM, "out of memory");
		if ((r = sign_role(ctx, rp->root, TUF_TARGETS, rp->targets, sign)) < 0)
			return r;
	}
	if (which & W_SNAPSHOT) {
		/* The targets metadata is rewritten (unchanged unless re-signed) so its length and digest are known. */
		snprintf(name, sizeof(name), "%llu.targets.json", (unsigned long long)tv);
		if ((r = write_env(ctx, rp->dir, name, rp->targets, &tlen, tsha)) < 0)
			return r;
		snap = new_env(TUF_SNAPSHOT, sv);
		if (!snap)
			return rsr_error(ctx, -ENOMEM, "out of memory");
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
		snap_meta = meta_entry(sv, slen, ssha);
	} else if (rp->timestamp) {
		/* The current snapshot stays: the new timestamp names it as the old one did. */
		snap_meta = json_deep_copy(json_object_get(
		    json_object_get(json_object_get(rp->timestamp, "signed"), "meta"), "snapshot.json"));
	}
	if (!(which & W_TIMESTAMP))
		goto out;
	ts = new_env(TUF_TIMESTAMP, rp->timestamp ? version_of(rp->timestamp) + 1 : 1);
	if (!ts || !snap_meta) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	set_expiry(&ok, json_object_get(ts, "signed"), TUF_TIMESTAMP, sign);
	rsr_json_set(&ok, json_object_get(ts, "signed"), "meta", json_pack("{s:O}", "snapshot.json", snap_meta));
	if (!ok) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	if ((r = sign_role(ctx, rp->root, TUF_TIMESTAMP, ts, sign)) < 0 ||
	    (r = write_env(ctx, rp->dir, "timestamp.json", ts, NULL, NULL)) < 0)
		goto out;
	if (snap) {
		json_decref(rp->snapshot);
		rp->snapshot = TAKE_PTR(snap);
	}
	json_decref(rp->timestamp);
	rp->timestamp = TAKE_PTR(ts);
out:
	json_decref(snap_meta);
	json_decref(snap);
	json_decref(ts);
	return r;
}

/*
 * Publishes a change: the next targets version when `targets_changed`, then
 * always the next snapshot and timestamp versions, timestamp last.
 */
static int publish(struct rsr_ctx *ctx, struct repo *rp, bool targets_changed, const struct rsr_repo_sign_opts *sign)
{
	return publish_roles(ctx, rp, (targets_changed ? W_TARGETS : 0) | W_SNAPSHOT | W_TIMESTAMP, sign);
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
	json_t *advs = json_array(), *images = json_array(), *keyids = json_array(), *c;
	bool ok = true;
	const char *kid;

	/* Who signed the manifest: a device tells from this whether its keys.d can verify it. */
	for (size_t i = 0; (kid = rsr_response_signer(resp, i)); i++)
		rsr_json_push(&ok, keyids, json_string(kid));

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
	c = json_pack("{s:{s:s, s:s, s:I, s:s, s:I, s:i, s:b, s:o, s:o, s:o}}", "rsr", "base_build",
		      rsr_response_base_build(resp), "letter", rsr_response_letter(resp), "sequence",
		      (json_int_t)rsr_response_sequence(resp), "restart", rsr_restart_name(rsr_response_restart(resp)),
		      "timestamp", (json_int_t)rsr_response_timestamp(resp), "rollout", (int)rollout, "withdrawn", 0,
		      "advisories", advs, "images", images, "keyids", keyids);
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

void rsr_repo_refresh_opts_init(struct rsr_repo_refresh_opts *opts)
{
	*opts = (struct rsr_repo_refresh_opts){
	    .version = RSR_REPO_REFRESH_OPTS_VERSION,
	    .margin_root = RSR_REPO_MARGIN_ROOT,
	    .margin_targets = RSR_REPO_MARGIN_TARGETS,
	    .margin_snapshot = RSR_REPO_MARGIN_SNAPSHOT,
	    .margin_timestamp = RSR_REPO_MARGIN_TIMESTAMP,
	};
}

/* The envelope of a role's current metadata, borrowed from rp. */
static json_t *role_env(const struct repo *rp, enum tuf_role role)
{
	json_t *envs[TUF_N_ROLES] = {rp->root->env, rp->targets, rp->snapshot, rp->timestamp};

	return envs[role];
}

static int64_t expires_of(json_t *env)
{
	int64_t t = 0;

	tuf_time_parse(json_string_value(json_object_get(json_object_get(env, "signed"), "expires")), &t);
	return t;
}

/* Whether the given keys sign `role` to its threshold (the reason in the context's error if not). */
static bool can_sign(struct rsr_ctx *ctx, const struct tuf_root *root, enum tuf_role role,
		     const struct rsr_repo_sign_opts *sign, int *ret_err)
{
	_cleanup_free_ const struct rsr_key **keys = calloc(sign->n_keys + 1, sizeof(*keys));
	size_t n = 0;

	*ret_err = keys ? role_keys(ctx, root, role, sign, keys, &n) : rsr_error(ctx, -ENOMEM, "out of memory");
	return *ret_err == 0;
}

/* Makes the root just written, *nroot with its signed envelope `env`, the repository's current one. */
static void adopt_root(struct repo *rp, struct tuf_root **nroot, json_t *env)
{
	json_decref((*nroot)->env);
	(*nroot)->env = json_incref(env);
	tuf_root_free(rp->root);
	rp->root = TAKE_PTR(*nroot);
}

/* Writes the next root version: the same keys and roles, a fresh expiry, signed by the current root keys. */
static int renew_root(struct rsr_ctx *ctx, struct repo *rp, const struct rsr_repo_sign_opts *sign)
{
	json_t *env = json_deep_copy(rp->root->env), *s;
	struct tuf_root *nroot = NULL;
	bool ok = true;
	int r;

	if (!env)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	s = json_object_get(env, "signed");
	rsr_json_set(&ok, s, "version", json_integer((json_int_t)(rp->root->version + 1)));
	set_expiry(&ok, s, TUF_ROOT, sign);
	if (!ok) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	if ((r = tuf_root_from_env(ctx, env, "new root", &nroot)) < 0 ||
	    (r = sign_role(ctx, rp->root, TUF_ROOT, env, sign)) < 0 ||
	    (r = tuf_verify(ctx, rp->root, TUF_ROOT, env, "new root")) < 0 || (r = write_root(ctx, rp->dir, env)) < 0)
		goto out;
	adopt_root(rp, &nroot, env);
out:
	tuf_root_free(nroot);
	json_decref(env);
	return r;
}

int rsr_repo_refresh(struct rsr_ctx *ctx, const char *dir, const struct rsr_repo_sign_opts *sign,
		     const struct rsr_repo_refresh_opts *opts, unsigned *ret_renewed, unsigned *ret_missed)
{
	struct rsr_repo_refresh_opts defaults;
	struct repo rp;
	uint64_t margins[TUF_N_ROLES];
	unsigned renew = 0, missed = 0;
	int n_missed = 0, r;

	if (!opts) {
		rsr_repo_refresh_opts_init(&defaults);
		opts = &defaults;
	} else if (opts->version != RSR_REPO_REFRESH_OPTS_VERSION)
		return rsr_error(ctx, -EINVAL, "refresh options of version %u; this librsr knows version %u",
				 opts->version, RSR_REPO_REFRESH_OPTS_VERSION);
	margins[TUF_ROOT] = opts->margin_root;
	margins[TUF_TARGETS] = opts->margin_targets;
	margins[TUF_SNAPSHOT] = opts->margin_snapshot;
	margins[TUF_TIMESTAMP] = opts->margin_timestamp;
	if ((r = repo_load(ctx, dir, &rp)) < 0)
		return r;

	/* Decide everything before writing anything. */
	for (int i = 0; i < TUF_N_ROLES; i++) {
		int64_t exp = expires_of(role_env(&rp, i)), left = exp - (int64_t)sign->now;
		char when[32];
		int e;

		if (!sign->expires[i] && left > 0 && (uint64_t)left > margins[i])
			continue;
		if (can_sign(ctx, rp.root, i, sign, &e)) {
			renew |= RSR_REPO_ROLE_BIT(i);
			continue;
		}
		if (e == -ENOMEM || sign->expires[i]) {
			/* A lifetime was asked for this role: not renewing it is a failure. */
			r = e == -ENOMEM ? e : rsr_error_prefix(ctx, e, "%s.json cannot be renewed", tuf_role_names[i]);
			goto out;
		}
		tuf_time_format(exp, when);
		rsr_warn(ctx, "%s.json (version %llu) %s at %s and is not renewed: %s%s", tuf_role_names[i],
			 (unsigned long long)version_of(role_env(&rp, i)), left > 0 ? "expires" : "expired", when,
			 rsr_ctx_error(ctx), left > 0 ? "" : "; devices refuse the repository until it is renewed");
		rsr_ctx_clear_error(ctx);
		missed |= RSR_REPO_ROLE_BIT(i);
		n_missed++;
	}
	/* New targets need a new snapshot, a new snapshot a new timestamp. */
	for (int i = TUF_TARGETS; i < TUF_TIMESTAMP; i++) {
		int e;

		if (!(renew & RSR_REPO_ROLE_BIT(i)) || (renew & RSR_REPO_ROLE_BIT(i + 1)))
			continue;
		if (!can_sign(ctx, rp.root, i + 1, sign, &e)) {
			r = rsr_error_prefix(ctx, e, "renewing %s.json needs a new %s.json", tuf_role_names[i],
					     tuf_role_names[i + 1]);
			goto out;
		}
		renew |= RSR_REPO_ROLE_BIT(i + 1);
		if (missed & RSR_REPO_ROLE_BIT(i + 1)) {
			missed &= ~RSR_REPO_ROLE_BIT(i + 1);
			n_missed--;
		}
	}
	if ((renew & RSR_REPO_ROLE_BIT(TUF_ROOT)) && (r = renew_root(ctx, &rp, sign)) < 0)
		goto out;
	if ((renew & ~RSR_REPO_ROLE_BIT(TUF_ROOT)) &&
	    (r = publish_roles(ctx, &rp, renew & (W_TARGETS | W_SNAPSHOT | W_TIMESTAMP), sign)) < 0)
		goto out;
	for (int i = 0; i < TUF_N_ROLES; i++)
		if (renew & RSR_REPO_ROLE_BIT(i))
			rsr_info(ctx, "renewed %s.json", tuf_role_names[i]);
	if (ret_renewed)
		*ret_renewed = renew;
	if (ret_missed)
		*ret_missed = missed;
	r = n_missed;
out:
	repo_done(&rp);
	return r;
}

struct rsr_repo_status {
	uint64_t versions[TUF_N_ROLES];
	int64_t expires[TUF_N_ROLES];
	json_t *targets; /* owns the strings of responses */
	struct rsr_repo_published *responses;
	size_t n_responses;
};

void rsr_repo_status_free(struct rsr_repo_status *st)
{
	if (!st)
		return;
	json_decref(st->targets);
	free(st->responses);
	free(st);
}

static int published_cmp(const void *a, const void *b)
{
	const struct rsr_repo_published *x = a, *y = b;
	int c = strcmp(x->base_build, y->base_build);

	if (c)
		return c;
	return x->sequence < y->sequence ? -1 : x->sequence > y->sequence;
}

/* One response's custom metadata, checked; -ENOENT when the target is not a response manifest. */
static int published_parse(struct rsr_ctx *ctx, const char *path, json_t *info, struct rsr_repo_published *ret)
{
	json_t *c = json_object_get(json_object_get(info, "custom"), "rsr"), *v;
	json_t *images = json_object_get(c, "images"), *advs = json_object_get(c, "advisories");
	json_int_t rollout = json_integer_value(json_object_get(c, "rollout"));
	size_t i;

	if (!c)
		return -ENOENT;
	*ret = (struct rsr_repo_published){
	    .target = path,
	    .base_build = json_string_value(json_object_get(c, "base_build")),
	    .letter = json_string_value(json_object_get(c, "letter")),
	    .restart = json_string_value(json_object_get(c, "restart")),
	    .sequence = (uint64_t)json_integer_value(json_object_get(c, "sequence")),
	    .timestamp = (int64_t)json_integer_value(json_object_get(c, "timestamp")),
	    .rollout = (unsigned)rollout,
	    .withdrawn = json_is_true(json_object_get(c, "withdrawn")),
	    .n_advisories = json_array_size(advs),
	    .n_images = json_array_size(images),
	};
	if (!ret->base_build || !ret->letter || !ret->restart || !json_is_integer(json_object_get(c, "sequence")) ||
	    rollout < 1 || rollout > 100 || !json_is_boolean(json_object_get(c, "withdrawn")) ||
	    !json_is_array(images) || !json_is_array(advs))
		return rsr_error(ctx, RSR_E_FORMAT, "targets.json: %s: malformed rsr custom metadata", path);
	json_array_foreach(images, i, v)
	{
		json_int_t f = json_integer_value(json_object_get(json_object_get(v, "forward"), "length"));
		json_int_t b = json_integer_value(json_object_get(json_object_get(v, "reverse"), "length"));
		if (f < 0 || b < 0)
			return rsr_error(ctx, RSR_E_FORMAT, "targets.json: %s: malformed patch length", path);
		ret->patch_bytes += (uint64_t)f + (uint64_t)b;
	}
	return 0;
}

int rsr_repo_status_open(struct rsr_ctx *ctx, const char *dir, struct rsr_repo_status **ret_status)
{
	struct rsr_repo_status *st = calloc(1, sizeof(*st));
	json_t *targets, *info;
	const char *path;
	struct repo rp;
	int r;

	if (!st)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	if ((r = repo_load(ctx, dir, &rp)) < 0) {
		free(st);
		return r;
	}
	for (int i = 0; i < TUF_N_ROLES; i++) {
		st->versions[i] = version_of(role_env(&rp, i));
		st->expires[i] = expires_of(role_env(&rp, i));
	}
	st->targets = json_incref(rp.targets);
	targets = json_object_get(json_object_get(st->targets, "signed"), "targets");
	st->responses = calloc(json_object_size(targets) + 1, sizeof(*st->responses));
	if (!st->responses) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto fail;
	}
	json_object_foreach(targets, path, info)
	{
		r = published_parse(ctx, path, info, &st->responses[st->n_responses]);
		if (r == -ENOENT)
			continue;
		if (r < 0)
			goto fail;
		st->n_responses++;
	}
	qsort(st->responses, st->n_responses, sizeof(*st->responses), published_cmp);
	repo_done(&rp);
	*ret_status = st;
	return 0;
fail:
	repo_done(&rp);
	rsr_repo_status_free(st);
	return r;
}

uint64_t rsr_repo_status_version(const struct rsr_repo_status *st, enum rsr_repo_role role)
{
	return (unsigned)role < TUF_N_ROLES ? st->versions[role] : 0;
}

int64_t rsr_repo_status_expires(const struct rsr_repo_status *st, enum rsr_repo_role role)
{
	return (unsigned)role < TUF_N_ROLES ? st->expires[role] : 0;
}

size_t rsr_repo_status_response_count(const struct rsr_repo_status *st)
{
	return st->n_responses;
}

const struct rsr_repo_published *rsr_repo_status_response(const struct rsr_repo_status *st, size_t i)
{
	return i < st->n_responses ? &st->responses[i] : NULL;
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
	adopt_root(&rp, &nroot, env);
	r = publish(ctx, &rp, (int)role == TUF_TARGETS, sign);
out:
	tuf_root_free(nroot);
	json_decref(env);
	repo_done(&rp);
	return r;
}
