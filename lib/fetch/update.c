/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The update client: TUF's client workflow (specification 1.0, section 5)
 * over lib/fetch/http.c, the choice of a response from the targets' custom
 * metadata, and resumable downloads into a response directory that
 * rsr_device_install() then installs.
 *
 *   var/lib/rsr/tuf/{root,timestamp,snapshot,targets}.json   trusted metadata
 *   var/lib/rsr/tuf/downloads/BASE-LETTER/                   a response being fetched
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "../repo/tuf.h"
#include "fetch.h"
#include "rsr/graft.h"
#include "rsr/update.h"

#define ROOT_MAX (512 * 1024)
#define TIMESTAMP_MAX (64 * 1024)
#define SNAPSHOT_MAX (4 * 1024 * 1024)
#define TARGETS_MAX (16 * 1024 * 1024)
#define MAX_ROOT_STEPS 1024

struct candidate {
	const char *path; /* target path of the manifest */
	json_t *rsr;	  /* its custom "rsr" object, borrowed */
	uint64_t sequence;
	const char *letter;
	unsigned rollout;
	bool withdrawn;
};

/* A current image's SHA-256, valid while the file (a new inode on every switch) is unchanged. */
struct slot_digest {
	char slot[65];
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
	char sha[65];
};

struct rsr_updater {
	char *root;
	char *state; /* ROOT/var/lib/rsr/tuf */
	const struct rsr_update_policy *policy;
	char *machine_id;
	int64_t now;
	struct http http;
	struct tuf_root *troot;
	json_t *timestamp, *snapshot, *targets; /* trusted envelopes, or NULL */
	struct rsr_device *dev;
	struct rsr_device_state *dst;
	char arch[65];
	struct rsr_update_offer offer;
	struct rsr_update_advisory *advs;
	const char **cves;
	struct candidate chosen;
	bool checked;
	int lockfd;
	struct slot_digest *digests; /* of the slots' current images, hashed once per open */
	size_t n_digests;
};

static char *path_join(const char *a, const char *b)
{
	char *s;
	bool slash = a[0] && a[strlen(a) - 1] == '/';
	return asprintf(&s, "%s%s%s", a, slash ? "" : "/", b) < 0 ? NULL : s;
}

static void rm_rf(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *de;

	if (!d) {
		unlink(path);
		return;
	}
	while ((de = readdir(d))) {
		_cleanup_free_ char *p = NULL;
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if ((p = path_join(path, de->d_name))) {
			struct stat st;
			if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
				rm_rf(p);
			else
				unlink(p);
		}
	}
	closedir(d);
	rmdir(path);
}

/* Writes the trusted copy of a role, atomically. */
static int persist(struct rsr_ctx *ctx, struct rsr_updater *u, const char *name, const char *buf, size_t len)
{
	_cleanup_free_ char *p = path_join(u->state, name);

	if (!p)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	return rsr_write_file_atomic(ctx, p, buf, len, 0644);
}

static void forget(struct rsr_updater *u, const char *name)
{
	_cleanup_free_ char *p = path_join(u->state, name);
	if (p && unlink(p) == 0)
		rsr_fsync_dir_of(p);
}

/* Loads a trusted role from the state directory; anything that no longer verifies is dropped. */
static void load_trusted(struct rsr_ctx *ctx, struct rsr_updater *u, enum tuf_role role, json_t **ret)
{
	_cleanup_free_ char *name = NULL, *p = NULL, *buf = NULL;
	size_t len;
	json_t *env;

	*ret = NULL;
	if (asprintf(&name, "%s.json", tuf_role_names[role]) < 0 || !(p = path_join(u->state, name)))
		return;
	if (access(p, F_OK) < 0)
		return;
	if (rsr_read_file(ctx, p, TARGETS_MAX, &buf, &len) < 0 ||
	    tuf_parse(ctx, buf, len, role, p, &env, NULL, NULL) < 0) {
		rsr_warn(ctx, "%s; ignoring it", rsr_ctx_error(ctx));
		return;
	}
	if (tuf_verify(ctx, u->troot, role, env, p) < 0) {
		rsr_debug(ctx, "%s; ignoring it", rsr_ctx_error(ctx));
		json_decref(env);
		return;
	}
	*ret = env;
}

static void drop_trusted(struct rsr_updater *u)
{
	json_decref(u->timestamp);
	json_decref(u->snapshot);
	json_decref(u->targets);
	u->timestamp = u->snapshot = u->targets = NULL;
}

void rsr_update_free(struct rsr_updater *u)
{
	if (!u)
		return;
	http_done(&u->http);
	tuf_root_free(u->troot);
	drop_trusted(u);
	rsr_device_state_free(u->dst);
	rsr_device_free(u->dev);
	if (u->lockfd >= 0)
		close(u->lockfd);
	free(u->advs);
	free(u->cves);
	free(u->digests);
	free(u->root);
	free(u->state);
	free(u->machine_id);
	free(u);
}

int rsr_update_open(struct rsr_ctx *ctx, const struct rsr_update_opts *opts, struct rsr_updater **ret_u)
{
	struct rsr_updater *u = calloc(1, sizeof(*u));
	_cleanup_free_ char *p = NULL, *buf = NULL;
	size_t len;
	int r;

	if (!u)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	u->lockfd = -1;
	u->policy = opts->policy;
	u->now = opts->now;
	u->root = strdup(opts->root ? opts->root : "/");
	u->state = u->root ? path_join(u->root, RSR_UPDATE_STATE_DIR) : NULL;
	if (!u->state || (opts->machine_id && !(u->machine_id = strdup(opts->machine_id)))) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto fail;
	}
	if ((r = http_init(ctx, &u->http, opts->policy->mirrors, opts->policy->n_mirrors, opts->policy->timeout,
			   opts->policy->min_rate, opts->policy->max_run_time, opts->ca_file)) < 0)
		goto fail;
	if ((r = rsr_device_open(ctx, u->root, &u->dev)) < 0 || (r = rsr_device_get_state(ctx, u->dev, &u->dst)) < 0)
		goto fail;
	if ((r = rsr_machine_arch(u->arch)) < 0) {
		r = rsr_error_errno(ctx, r, "cannot tell the machine's architecture");
		goto fail;
	}
	/* One client at a time per device: the timer and a user may both start one. */
	if ((r = rsr_mkdir_p_at(ctx, AT_FDCWD, u->state, NULL)) < 0)
		goto fail;
	if (!(p = path_join(u->state, "lock"))) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto fail;
	}
	u->lockfd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (u->lockfd < 0) {
		r = rsr_error_errno(ctx, -errno, "%s", p);
		goto fail;
	}
	if (flock(u->lockfd, LOCK_EX | LOCK_NB) < 0) {
		r = errno == EWOULDBLOCK ? rsr_error(ctx, RSR_E_STATE, "another rsr check or update is running (%s)", p)
					 : rsr_error_errno(ctx, -errno, "%s", p);
		goto fail;
	}
	free(p);
	p = NULL;
	/* The trusted root: the newest this device verified, else the one the OS shipped. */
	if (!(p = path_join(u->state, "root.json"))) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto fail;
	}
	if (access(p, F_OK) < 0) {
		free(p);
		if (!(p = path_join(u->root, RSR_UPDATE_ROOT_FILE))) {
			r = rsr_error(ctx, -ENOMEM, "out of memory");
			goto fail;
		}
		if (access(p, F_OK) < 0) {
			r = rsr_error(ctx, -ENOENT,
				      "%s: no trusted repository root; install the vendor's metadata/1.root.json there",
				      p);
			goto fail;
		}
	}
	if ((r = rsr_read_file(ctx, p, ROOT_MAX, &buf, &len)) < 0 ||
	    (r = tuf_root_parse(ctx, buf, len, p, &u->troot)) < 0 ||
	    (r = tuf_verify(ctx, u->troot, TUF_ROOT, u->troot->env, p)) < 0)
		goto fail;
	load_trusted(ctx, u, TUF_TIMESTAMP, &u->timestamp);
	load_trusted(ctx, u, TUF_SNAPSHOT, &u->snapshot);
	load_trusted(ctx, u, TUF_TARGETS, &u->targets);
	rsr_ctx_clear_error(ctx);
	*ret_u = u;
	return 0;
fail:
	rsr_update_free(u);
	return r;
}

uint64_t rsr_update_bytes_fetched(const struct rsr_updater *u)
{
	return u->http.fetched;
}

static int check_expiry(struct rsr_ctx *ctx, struct rsr_updater *u, json_t *env, const char *what)
{
	int64_t t = 0;
	char when[32];

	tuf_time_parse(json_string_value(json_object_get(json_object_get(env, "signed"), "expires")), &t);
	if (t <= u->now) {
		tuf_time_format(t, when);
		return rsr_error(ctx, RSR_E_EXPIRED,
				 "%s expired at %s: the repository is not being refreshed, or someone replays old "
				 "metadata (freeze attack)",
				 what, when);
	}
	return 0;
}

static uint64_t version_of(json_t *env)
{
	return env ? (uint64_t)json_integer_value(json_object_get(json_object_get(env, "signed"), "version")) : 0;
}

/* Whether the keys or threshold of `role` differ between two roots. */
static bool role_changed(const struct tuf_root *a, const struct tuf_root *b, enum tuf_role role)
{
	const struct tuf_role_keys *x = &a->roles[role], *y = &b->roles[role];

	if (x->n != y->n || x->threshold != y->threshold)
		return true;
	for (size_t i = 0; i < x->n; i++)
		if (strcmp(x->keyids[i], y->keyids[i]))
			return true;
	return false;
}

/* 5.3: follows every new root version, each signed by the old and the new root keys. */
static int update_root(struct rsr_ctx *ctx, struct rsr_updater *u)
{
	for (int step = 0; step < MAX_ROOT_STEPS; step++) {
		_cleanup_free_ char *buf = NULL;
		char rel[64], what[64];
		struct tuf_root *nroot;
		uint64_t want = u->troot->version + 1, v;
		json_t *env;
		size_t len;
		int r;

		snprintf(rel, sizeof(rel), "metadata/%llu.root.json", (unsigned long long)want);
		snprintf(what, sizeof(what), "%llu.root.json", (unsigned long long)want);
		r = http_get_mem(ctx, &u->http, rel, ROOT_MAX, &buf, &len);
		if (r == -ENOENT) {
			rsr_ctx_clear_error(ctx);
			return 0;
		}
		if (r < 0)
			return r;
		if ((r = tuf_parse(ctx, buf, len, TUF_ROOT, what, &env, &v, NULL)) < 0)
			return r;
		r = tuf_root_from_env(ctx, env, what, &nroot);
		json_decref(env);
		if (r < 0)
			return r;
		if ((r = tuf_verify(ctx, u->troot, TUF_ROOT, nroot->env, what)) < 0 ||
		    (r = tuf_verify(ctx, nroot, TUF_ROOT, nroot->env, what)) < 0) {
			tuf_root_free(nroot);
			return rsr_error_prefix(ctx, r, "root rotation refused");
		}
		if (v != want) {
			tuf_root_free(nroot);
			return rsr_error(ctx, RSR_E_ROLLBACK, "%s: says version %llu (rollback or replay)", what,
					 (unsigned long long)v);
		}
		if ((r = persist(ctx, u, "root.json", buf, len)) < 0) {
			tuf_root_free(nroot);
			return r;
		}
		rsr_info(ctx, "following the repository's root to version %llu", (unsigned long long)v);
		/* 5.3.11: new timestamp or snapshot keys invalidate what they signed. */
		if (role_changed(u->troot, nroot, TUF_TIMESTAMP) || role_changed(u->troot, nroot, TUF_SNAPSHOT)) {
			drop_trusted(u);
			forget(u, "timestamp.json");
			forget(u, "snapshot.json");
			forget(u, "targets.json");
		} else if (role_changed(u->troot, nroot, TUF_TARGETS)) {
			json_decref(u->targets);
			u->targets = NULL;
			forget(u, "targets.json");
		}
		tuf_root_free(u->troot);
		u->troot = nroot;
	}
	return rsr_error(ctx, RSR_E_LIMIT, "more than %d root versions at once", MAX_ROOT_STEPS);
}

/* Fetches a role's file bounded by its meta entry, checks hash, signatures, version. */
static int fetch_role(struct rsr_ctx *ctx, struct rsr_updater *u, enum tuf_role role, const struct tuf_meta *m,
		      uint64_t max, json_t **ret_env, char **ret_buf, size_t *ret_len)
{
	_cleanup_free_ char *buf = NULL;
	char rel[96], what[64];
	uint64_t v;
	json_t *env;
	size_t len;
	int r;

	if (role == TUF_TIMESTAMP || !u->troot->consistent)
		snprintf(what, sizeof(what), "%s.json", tuf_role_names[role]);
	else
		snprintf(what, sizeof(what), "%llu.%s.json", (unsigned long long)m->version, tuf_role_names[role]);
	snprintf(rel, sizeof(rel), "metadata/%s", what);
	/*
	 * A signed length can only lower the client's own bound: the online
	 * timestamp key must not be able to make a device take (or set aside
	 * memory for) more than any snapshot may be.
	 */
	if (m && m->length)
		max = RSR_MIN(max, m->length);
	if ((r = http_get_mem(ctx, &u->http, rel, max, &buf, &len)) < 0)
		return r == -ENOENT ? rsr_error(ctx, -ENOENT, "%s: not on any mirror", what) : r;
	if (m && m->has_sha256) {
		uint8_t d[32];
		rsr_sha256(buf, len, d);
		if (memcmp(d, m->sha256, 32))
			return rsr_error(ctx, RSR_E_DIGEST,
					 "%s: digest differs from the one the %s names (mix-and-match or tampering)",
					 what, role == TUF_SNAPSHOT ? "timestamp" : "snapshot");
	}
	if ((r = tuf_parse(ctx, buf, len, role, what, &env, &v, NULL)) < 0)
		return r;
	if ((r = tuf_verify(ctx, u->troot, role, env, what)) < 0) {
		json_decref(env);
		return r;
	}
	if (m && v != m->version) {
		json_decref(env);
		return rsr_error(ctx, RSR_E_MISMATCH, "%s: version %llu, but the %s names version %llu (mix-and-match)",
				 what, (unsigned long long)v, role == TUF_SNAPSHOT ? "timestamp" : "snapshot",
				 (unsigned long long)m->version);
	}
	*ret_env = env;
	*ret_buf = TAKE_PTR(buf);
	*ret_len = len;
	return 0;
}

int rsr_update_refresh(struct rsr_ctx *ctx, struct rsr_updater *u)
{
	_cleanup_free_ char *tsbuf = NULL, *snbuf = NULL, *tgbuf = NULL;
	struct tuf_meta tsm, snm, old;
	json_t *ts = NULL, *sn = NULL, *tg = NULL;
	size_t len;
	int r;

	u->checked = false;
	if ((r = rsr_mkdir_p_at(ctx, AT_FDCWD, u->state, NULL)) < 0)
		return r;
	/* Root: follow rotations, then the newest root must not have expired. */
	if ((r = update_root(ctx, u)) < 0)
		return r;
	if ((r = check_expiry(ctx, u, u->troot->env, "root.json")) < 0)
		return r;

	/* Timestamp. */
	if ((r = fetch_role(ctx, u, TUF_TIMESTAMP, NULL, TIMESTAMP_MAX, &ts, &tsbuf, &len)) < 0)
		return r;
	if ((r = tuf_meta_get(ctx, ts, "snapshot.json", "timestamp.json", &tsm)) < 0)
		goto out;
	if (u->timestamp) {
		if (version_of(ts) < version_of(u->timestamp)) {
			r = rsr_error(
			    ctx, RSR_E_ROLLBACK,
			    "timestamp.json: version %llu is older than the trusted version %llu (rollback attack)",
			    (unsigned long long)version_of(ts), (unsigned long long)version_of(u->timestamp));
			goto out;
		}
		if (tuf_meta_get(ctx, u->timestamp, "snapshot.json", "trusted timestamp", &old) == 0 &&
		    tsm.version < old.version) {
			r = rsr_error(
			    ctx, RSR_E_ROLLBACK,
			    "timestamp.json: names snapshot version %llu, older than the trusted %llu (rollback "
			    "attack)",
			    (unsigned long long)tsm.version, (unsigned long long)old.version);
			goto out;
		}
	}
	if ((r = check_expiry(ctx, u, ts, "timestamp.json")) < 0 ||
	    (r = persist(ctx, u, "timestamp.json", tsbuf, len)) < 0)
		goto out;
	json_decref(u->timestamp);
	u->timestamp = TAKE_PTR(ts);

	/* Snapshot: the one the timestamp names. */
	if (u->snapshot && version_of(u->snapshot) == tsm.version) {
		sn = json_incref(u->snapshot);
	} else {
		if ((r = fetch_role(ctx, u, TUF_SNAPSHOT, &tsm, SNAPSHOT_MAX, &sn, &snbuf, &len)) < 0)
			goto out;
		if (u->snapshot) {
			json_t *meta = json_object_get(json_object_get(u->snapshot, "signed"), "meta"), *e;
			const char *k;
			json_object_foreach(meta, k, e)
			{
				struct tuf_meta nm, om;
				if (tuf_meta_get(ctx, u->snapshot, k, "trusted snapshot", &om) < 0)
					continue;
				if (tuf_meta_get(ctx, sn, k, "snapshot", &nm) < 0) {
					r = rsr_error(ctx, RSR_E_ROLLBACK,
						      "%llu.snapshot.json: no longer lists %s (rollback attack)",
						      (unsigned long long)tsm.version, k);
					goto out;
				}
				if (nm.version < om.version) {
					r = rsr_error(
					    ctx, RSR_E_ROLLBACK,
					    "%llu.snapshot.json: %s version %llu is older than the trusted %llu "
					    "(rollback attack)",
					    (unsigned long long)tsm.version, k, (unsigned long long)nm.version,
					    (unsigned long long)om.version);
					goto out;
				}
			}
		}
		if ((r = persist(ctx, u, "snapshot.json", snbuf, len)) < 0)
			goto out;
	}
	if ((r = check_expiry(ctx, u, sn, "snapshot.json")) < 0)
		goto out;
	json_decref(u->snapshot);
	u->snapshot = TAKE_PTR(sn);

	/* Targets: the one the snapshot names. */
	if ((r = tuf_meta_get(ctx, u->snapshot, "targets.json", "snapshot.json", &snm)) < 0)
		goto out;
	if (u->targets && version_of(u->targets) == snm.version) {
		tg = json_incref(u->targets);
	} else {
		if (u->targets && snm.version < version_of(u->targets)) {
			r = rsr_error(ctx, RSR_E_ROLLBACK,
				      "snapshot.json names targets version %llu, older than the trusted %llu (rollback "
				      "attack)",
				      (unsigned long long)snm.version, (unsigned long long)version_of(u->targets));
			goto out;
		}
		if ((r = fetch_role(ctx, u, TUF_TARGETS, &snm, TARGETS_MAX, &tg, &tgbuf, &len)) < 0 ||
		    (r = tuf_targets_check(ctx, tg, "targets.json")) < 0)
			goto out;
		if ((r = check_expiry(ctx, u, tg, "targets.json")) < 0 ||
		    (r = persist(ctx, u, "targets.json", tgbuf, len)) < 0)
			goto out;
	}
	if ((r = check_expiry(ctx, u, tg, "targets.json")) < 0)
		goto out;
	json_decref(u->targets);
	u->targets = TAKE_PTR(tg);
out:
	json_decref(ts);
	json_decref(sn);
	json_decref(tg);
	return r;
}

/* ---- choosing a response ---- */

static bool is_letter(const char *s)
{
	return s && s[0] >= 'a' && s[0] <= 'z' && s[1] == '\0';
}

/* Reads the custom "rsr" object of a manifest target; false when it is not one of ours or malformed. */
static bool candidate_parse(const char *path, json_t *info, const char *base, struct candidate *c)
{
	json_t *rsr = json_object_get(json_object_get(info, "custom"), "rsr"), *seq, *ro, *wd;
	const char *b, *l;
	size_t plen = strlen(path), mlen = strlen("/" RSR_RESPONSE_MANIFEST);

	if (!json_is_object(rsr) || plen <= mlen || strcmp(path + plen - mlen, "/" RSR_RESPONSE_MANIFEST))
		return false;
	b = json_string_value(json_object_get(rsr, "base_build"));
	l = json_string_value(json_object_get(rsr, "letter"));
	seq = json_object_get(rsr, "sequence");
	ro = json_object_get(rsr, "rollout");
	wd = json_object_get(rsr, "withdrawn");
	if (!b || strcmp(b, base) || !is_letter(l) || !json_is_integer(seq) || json_integer_value(seq) < 1 ||
	    (ro && (!json_is_integer(ro) || json_integer_value(ro) < 0 || json_integer_value(ro) > 100)) ||
	    (wd && !json_is_boolean(wd)))
		return false;
	*c = (struct candidate){.path = path,
				.rsr = rsr,
				.sequence = (uint64_t)json_integer_value(seq),
				.letter = l,
				.rollout = ro ? (unsigned)json_integer_value(ro) : 100,
				.withdrawn = json_is_true(wd)};
	return true;
}

/*
 * SHA-256 (hex) of the current image of a slot, or "" when the slot has none.
 * Checking for and then fetching an update both ask; the image is hashed once.
 */
static void slot_sha(struct rsr_ctx *ctx, struct rsr_updater *u, const char *slot, char out[65])
{
	_cleanup_free_ char *rel = NULL, *p = NULL;
	_cleanup_close_ int fd = -1;
	struct slot_digest *sd;
	struct stat st;
	uint8_t d[32];

	out[0] = '\0';
	if (strlen(slot) >= sizeof(sd->slot) || asprintf(&rel, "%s/%s/current", RSR_GRAFT_IMAGES_DIR, slot) < 0 ||
	    !(p = path_join(u->root, rel)))
		return;
	fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		return;
	for (size_t i = 0; i < u->n_digests; i++) {
		sd = &u->digests[i];
		if (!strcmp(sd->slot, slot) && sd->dev == st.st_dev && sd->ino == st.st_ino && sd->size == st.st_size &&
		    sd->mtime.tv_sec == st.st_mtim.tv_sec && sd->mtime.tv_nsec == st.st_mtim.tv_nsec) {
			memcpy(out, sd->sha, sizeof(sd->sha));
			return;
		}
	}
	if (rsr_sha256_fd(ctx, fd, 0, (uint64_t)st.st_size, slot, d) < 0)
		return;
	rsr_hex_encode(d, 32, out);
	/* Without room to remember it, it is hashed again next time. */
	sd = realloc(u->digests, (u->n_digests + 1) * sizeof(*sd));
	if (!sd)
		return;
	u->digests = sd;
	sd = &u->digests[u->n_digests++];
	*sd = (struct slot_digest){.dev = st.st_dev, .ino = st.st_ino, .size = st.st_size, .mtime = st.st_mtim};
	memcpy(sd->slot, slot, strlen(slot) + 1);
	memcpy(sd->sha, out, sizeof(sd->sha));
}

/* The files of the chosen response this device needs: manifest, forward patches it can use, reverse patches. */
typedef int (*need_fn)(struct rsr_ctx *ctx, struct rsr_updater *u, const char *target, void *arg);

static int each_needed(struct rsr_ctx *ctx, struct rsr_updater *u, need_fn fn, void *arg)
{
	json_t *images = json_object_get(u->chosen.rsr, "images"), *im;
	size_t i;
	int r;

	if ((r = fn(ctx, u, u->chosen.path, arg)) < 0)
		return r;
	if (!json_is_array(images) || json_array_size(images) > 1024)
		return rsr_error(ctx, RSR_E_FORMAT, "%s: custom metadata has no images list", u->chosen.path);
	json_array_foreach(images, i, im)
	{
		const char *slot = json_string_value(json_object_get(im, "slot"));
		const char *arch = json_string_value(json_object_get(im, "arch"));
		const char *sha = json_string_value(json_object_get(im, "sha256"));
		const char *fwd = json_string_value(json_object_get(json_object_get(im, "forward"), "target"));
		const char *rev = json_string_value(json_object_get(json_object_get(im, "reverse"), "target"));
		char cur[65];

		if (!slot || !arch || !sha || !fwd || !rev || strlen(slot) > 64 || strchr(slot, '/') || slot[0] == '.')
			return rsr_error(ctx, RSR_E_FORMAT, "%s: image %zu of the custom metadata is malformed",
					 u->chosen.path, i);
		if (strcmp(arch, u->arch))
			continue;
		slot_sha(ctx, u, slot, cur);
		if (strcmp(cur, sha) && (r = fn(ctx, u, fwd, arg)) < 0)
			return r;
		if ((r = fn(ctx, u, rev, arg)) < 0)
			return r;
	}
	return 0;
}

static int count_size(struct rsr_ctx *ctx, struct rsr_updater *u, const char *target, void *arg)
{
	struct tuf_target t;
	int r = tuf_target_get(ctx, u->targets, target, &t);

	if (r == -ENOENT)
		return rsr_error(ctx, RSR_E_FORMAT, "%s: the targets metadata lists no %s", u->chosen.path, target);
	if (r < 0)
		return r;
	u->offer.download_bytes += t.length;
	u->offer.n_files++;
	return 0;
}

static int fill_advisories(struct rsr_ctx *ctx, struct rsr_updater *u)
{
	json_t *advs = json_object_get(u->chosen.rsr, "advisories"), *a, *c;
	size_t i, k, n_cves = 0, at = 0;

	if (!json_is_array(advs) || json_array_size(advs) > 1024)
		return rsr_error(ctx, RSR_E_FORMAT, "%s: custom metadata has no advisories list", u->chosen.path);
	json_array_foreach(advs, i, a)
	{
		json_t *cves = json_object_get(a, "cves");
		if (!json_string_value(json_object_get(a, "id")) || !json_string_value(json_object_get(a, "title")) ||
		    !json_string_value(json_object_get(a, "severity")) || !json_is_array(cves) ||
		    json_array_size(cves) > 256)
			return rsr_error(ctx, RSR_E_FORMAT, "%s: advisory %zu of the custom metadata is malformed",
					 u->chosen.path, i);
		json_array_foreach(cves, k, c) if (!json_is_string(c)) return rsr_error(
		    ctx, RSR_E_FORMAT, "%s: advisory %zu: a CVE id is not a string", u->chosen.path, i);
		n_cves += json_array_size(cves);
	}
	free(u->advs);
	free(u->cves);
	u->advs = calloc(json_array_size(advs) + 1, sizeof(*u->advs));
	u->cves = calloc(n_cves + 1, sizeof(*u->cves));
	if (!u->advs || !u->cves)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	json_array_foreach(advs, i, a)
	{
		json_t *cves = json_object_get(a, "cves");
		u->advs[i] = (struct rsr_update_advisory){
		    .id = json_string_value(json_object_get(a, "id")),
		    .title = json_string_value(json_object_get(a, "title")),
		    .severity = json_string_value(json_object_get(a, "severity")),
		    .cves = u->cves + at,
		    .n_cves = json_array_size(cves),
		};
		json_array_foreach(cves, k, c) u->cves[at++] = json_string_value(c);
	}
	u->offer.advisories = u->advs;
	u->offer.n_advisories = json_array_size(advs);
	return 0;
}

int rsr_update_check(struct rsr_ctx *ctx, struct rsr_updater *u, const struct rsr_update_offer **ret_offer)
{
	json_t *targets, *info;
	const char *k;
	const struct rsr_device_state *st = u->dst;
	struct candidate best = {0};
	int r;

	if (!u->targets)
		return rsr_error(ctx, RSR_E_STATE, "no trusted targets metadata yet: refresh first");
	if (!st->base_build)
		return rsr_error(ctx, RSR_E_STATE, "cannot tell this device's base build from %s/etc/os-release",
				 u->root);
	u->offer = (struct rsr_update_offer){.base_build = st->base_build, .installed_letter = st->letter};
	targets = json_object_get(json_object_get(u->targets, "signed"), "targets");
	json_object_foreach(targets, k, info)
	{
		struct candidate c;
		if (!candidate_parse(k, info, st->base_build, &c))
			continue;
		if (st->letter && c.sequence == st->sequence && c.withdrawn)
			u->offer.installed_withdrawn = true;
		if (c.withdrawn || c.sequence <= st->high_water)
			continue;
		if (u->policy->staged_rollout && u->machine_id &&
		    rsr_update_rollout_bucket(u->machine_id, st->base_build, c.letter) >= c.rollout) {
			rsr_debug(ctx, "response (%s) is rolled out to %u%% of devices, not yet to this one", c.letter,
				  c.rollout);
			u->offer.n_held_back++;
			continue;
		}
		if (!best.path || c.sequence > best.sequence)
			best = c;
	}
	if (best.path) {
		u->chosen = best;
		u->offer.action = RSR_UPDATE_INSTALL;
		u->offer.letter = best.letter;
		u->offer.sequence = best.sequence;
		u->offer.rollout = best.rollout;
		u->offer.restart = json_string_value(json_object_get(best.rsr, "restart"));
		if ((r = fill_advisories(ctx, u)) < 0 || (r = each_needed(ctx, u, count_size, NULL)) < 0)
			return r;
	} else if (u->offer.installed_withdrawn && u->policy->withdrawn == RSR_WITHDRAWN_BASE) {
		u->offer.action = RSR_UPDATE_REMOVE;
	}
	u->checked = true;
	*ret_offer = &u->offer;
	return 0;
}

/* ---- downloading and installing ---- */

struct dl {
	const char *dir;    /* the local response directory */
	const char *prefix; /* target path of the response directory, with a slash */
};

static int download_one(struct rsr_ctx *ctx, struct rsr_updater *u, const char *target, void *arg)
{
	struct dl *dl = arg;
	struct tuf_target t;
	_cleanup_free_ char *file = NULL, *local = NULL, *part = NULL, *parent = NULL;
	_cleanup_close_ int fd = -1;
	const char *rel;
	uint8_t d[32];
	struct stat st;
	int r;

	if ((r = tuf_target_get(ctx, u->targets, target, &t)) < 0)
		return r == -ENOENT ? rsr_error(ctx, RSR_E_FORMAT, "the targets metadata lists no %s", target) : r;
	if (strncmp(target, dl->prefix, strlen(dl->prefix)))
		return rsr_error(ctx, RSR_E_FORMAT, "%s: not inside the response's directory %s", target, dl->prefix);
	rel = target + strlen(dl->prefix);
	if (strcmp(rel, RSR_RESPONSE_MANIFEST) && (strncmp(rel, "patches/", 8) || strchr(rel + 8, '/')))
		return rsr_error(ctx, RSR_E_FORMAT, "%s: not a file a response holds", target);
	if (!(file = tuf_target_file(&t, u->troot->consistent)) || !(local = path_join(dl->dir, rel)) ||
	    asprintf(&part, "%s.part", local) < 0 || !(parent = strdup(local)))
		return rsr_error(ctx, -ENOMEM, "out of memory");
	*strrchr(parent, '/') = '\0';
	if ((r = rsr_mkdir_p_at(ctx, AT_FDCWD, parent, NULL)) < 0)
		return r;
	/* A file completed by an earlier run is kept if it still matches. */
	if (stat(local, &st) == 0) {
		fd = open(local, O_RDONLY | O_CLOEXEC);
		if (fd >= 0 && (uint64_t)st.st_size == t.length &&
		    rsr_sha256_fd(ctx, fd, 0, t.length, target, d) == 0 && !memcmp(d, t.sha256, 32))
			return 0;
		unlink(local);
		closep(&fd);
		fd = -1;
	}
	fd = open(part, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return rsr_error_errno(ctx, -errno, "%s", part);
	{
		_cleanup_free_ char *rurl = NULL;
		if (asprintf(&rurl, "targets/%s", file) < 0)
			return rsr_error(ctx, -ENOMEM, "out of memory");
		if ((r = http_get_file(ctx, &u->http, rurl, fd, t.length, target)) < 0)
			return r;
	}
	if ((r = rsr_sha256_fd(ctx, fd, 0, t.length, target, d)) < 0)
		return r;
	if (memcmp(d, t.sha256, 32)) {
		unlink(part);
		return rsr_error(ctx, RSR_E_DIGEST,
				 "%s: the downloaded file does not match the digest in the signed targets metadata "
				 "(arbitrary or damaged target)",
				 target);
	}
	if (fsync(fd) < 0 || rename(part, local) < 0)
		return rsr_error_errno(ctx, -errno, "%s", local);
	return rsr_fsync_dir_of(local) < 0 ? rsr_error_errno(ctx, -EIO, "%s", local) : 0;
}

int rsr_update_apply(struct rsr_ctx *ctx, struct rsr_updater *u, unsigned flags)
{
	_cleanup_free_ char *dir = NULL, *prefix = NULL, *name = NULL;
	struct dl dl;
	int r;

	if (!u->checked)
		return rsr_error(ctx, RSR_E_STATE, "nothing checked yet");
	if (u->offer.action == RSR_UPDATE_NONE)
		return 0;
	if (u->offer.action == RSR_UPDATE_REMOVE) {
		rsr_info(ctx, "response (%s) was withdrawn and nothing replaces it: going back to the base",
			 u->offer.installed_letter);
		r = rsr_device_remove(ctx, u->dev, flags);
		return r < 0 ? r : 0;
	}
	prefix = strndup(u->chosen.path, strlen(u->chosen.path) - strlen(RSR_RESPONSE_MANIFEST));
	if (!prefix || asprintf(&name, "downloads/%s-%s", u->offer.base_build, u->offer.letter) < 0 ||
	    !(dir = path_join(u->state, name)))
		return rsr_error(ctx, -ENOMEM, "out of memory");
	if (strchr(u->offer.base_build, '/'))
		return rsr_error(ctx, RSR_E_FORMAT, "base build '%s' contains a slash", u->offer.base_build);
	if ((r = rsr_mkdir_p_at(ctx, AT_FDCWD, dir, NULL)) < 0)
		return r;
	dl = (struct dl){.dir = dir, .prefix = prefix};
	/* A failed download keeps its partial files, so the next run resumes them. */
	if ((r = each_needed(ctx, u, download_one, &dl)) < 0)
		return r;
	r = rsr_device_install(ctx, u->dev, dir, flags);
	rm_rf(dir);
	return r < 0 ? r : 0;
}
