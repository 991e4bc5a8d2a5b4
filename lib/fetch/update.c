/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The update client: TUF's client workflow (specification 1.0, section 5)
 * over lib/fetch/http.c, the choice of a response from the targets' custom
 * metadata (and whether this device can install it), and resumable
 * downloads, of only the files the device does not hold, into a response
 * directory that rsr_device_install() then installs.
 *
 *   var/lib/rsr/tuf/{root,timestamp,snapshot,targets}.json   trusted metadata
 *   var/lib/rsr/tuf/timestamp.etag.json                      the mirror's ETag for it
 *   var/lib/rsr/tuf/downloads/BASE-LETTER/                   a response being fetched
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
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
#define VALIDATOR_FILE "timestamp.etag.json"
#define VALIDATOR_MAX 4096

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
	bool reinstall;
	struct rsr_update_blocked *blocked; /* each reason allocated */
	size_t n_blocked;
};

/* One image of a response's custom metadata, borrowed from it. */
struct meta_image {
	const char *slot, *arch, *sha, *fwd, *rev;
	json_t *inputs; /* array of hex digests, or NULL (metadata of older repositories) */
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

static void clear_blocked(struct rsr_updater *u)
{
	for (size_t i = 0; i < u->n_blocked; i++)
		free((char *)u->blocked[i].reason);
	free(u->blocked);
	u->blocked = NULL;
	u->n_blocked = 0;
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
	clear_blocked(u);
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
	u->reinstall = opts->reinstall;
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
	if ((r = rsr_flock_wait(ctx, u->lockfd, "another rsr check or update", "checking the repository for",
				u->root)) < 0)
		goto fail;
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

/* A device clock this far from the server's is called wrong when metadata expires. */
#define CLOCK_SKEW_MAX 300

/* "3 days", "5 hours", "12 minutes": the rough size of a clock's error. */
static void format_span(int64_t secs, char *buf, size_t size)
{
	if (secs >= 2 * 86400)
		snprintf(buf, size, "%lld days", (long long)(secs / 86400));
	else if (secs >= 2 * 3600)
		snprintf(buf, size, "%lld hours", (long long)(secs / 3600));
	else
		snprintf(buf, size, "%lld minutes", (long long)(secs / 60));
}

/*
 * Expired metadata is a freeze attack or a repository nobody refreshes,
 * unless the device's clock is wrong: when the metadata has not expired by
 * the server's Date header and the device's clock is ahead of it, the
 * message says so, with both times.
 */
static int check_expiry(struct rsr_ctx *ctx, struct rsr_updater *u, json_t *env, const char *what)
{
	int64_t t = 0, server = u->http.server_time;
	char when[32], dev[32], srv[32], span[32];

	tuf_time_parse(json_string_value(json_object_get(json_object_get(env, "signed"), "expires")), &t);
	if (t > u->now)
		return 0;
	tuf_time_format(t, when);
	if (server > 0 && t > server && u->now - server > CLOCK_SKEW_MAX) {
		tuf_time_format(u->now, dev);
		tuf_time_format(server, srv);
		format_span(u->now - server, span, sizeof(span));
		return rsr_error(ctx, RSR_E_EXPIRED,
				 "%s expired at %s by this device's clock, which reads %s, %s ahead of the server's "
				 "(%s): set the clock (for example with timedatectl set-ntp true), then check again",
				 what, when, dev, span, srv);
	}
	return rsr_error(ctx, RSR_E_EXPIRED,
			 "%s expired at %s: the repository is not being refreshed, or someone replays old "
			 "metadata (freeze attack)",
			 what, when);
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
/* The name of a role's file on the mirrors, and where it is under them. */
static void role_file(const struct rsr_updater *u, enum tuf_role role, const struct tuf_meta *m, char what[64],
		      char rel[96])
{
	if (role == TUF_TIMESTAMP || !u->troot->consistent)
		snprintf(what, 64, "%s.json", tuf_role_names[role]);
	else
		snprintf(what, 64, "%llu.%s.json", (unsigned long long)m->version, tuf_role_names[role]);
	snprintf(rel, 96, "metadata/%s", what);
}

/* Turns "every mirror said 404" into a message that names what was tried and what a mirror must be. */
static int not_on_any_mirror(struct rsr_ctx *ctx, const char *what)
{
	char last[512];

	snprintf(last, sizeof(last), "%s", rsr_ctx_error(ctx));
	return rsr_error(ctx, -ENOENT,
			 "%s: not on any mirror (%s); a mirror URL is the repository's top directory, the one that "
			 "holds metadata/ and targets/",
			 what, last);
}

/* Checks the bytes of a role fetched as `what`: digest and version the referring role names, signatures. */
static int check_role(struct rsr_ctx *ctx, struct rsr_updater *u, enum tuf_role role, const struct tuf_meta *m,
		      const char *what, const char *buf, size_t len, json_t **ret_env)
{
	uint64_t v;
	json_t *env;
	int r;

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
	return 0;
}

static int fetch_role(struct rsr_ctx *ctx, struct rsr_updater *u, enum tuf_role role, const struct tuf_meta *m,
		      uint64_t max, json_t **ret_env, char **ret_buf, size_t *ret_len)
{
	_cleanup_free_ char *buf = NULL;
	char rel[96], what[64];
	size_t len;
	int r;

	role_file(u, role, m, what, rel);
	/*
	 * A signed length can only lower the client's own bound: the online
	 * timestamp key must not be able to make a device take (or set aside
	 * memory for) more than any snapshot may be.
	 */
	if (m && m->length)
		max = RSR_MIN(max, m->length);
	if ((r = http_get_mem(ctx, &u->http, rel, max, &buf, &len)) < 0)
		return r == -ENOENT ? not_on_any_mirror(ctx, what) : r;
	if ((r = check_role(ctx, u, role, m, what, buf, len, ret_env)) < 0)
		return r;
	*ret_buf = TAKE_PTR(buf);
	*ret_len = len;
	return 0;
}

/* ---- conditional checks ---- */

static bool fresh(const struct rsr_updater *u, json_t *env)
{
	const char *e = json_string_value(json_object_get(json_object_get(env, "signed"), "expires"));
	int64_t t = 0;

	return e && tuf_time_parse(e, &t) == 0 && t > u->now;
}

/*
 * Whether the trusted metadata is one whole, unexpired chain: root, the
 * timestamp, the snapshot it names and the targets that names. Only then
 * may "timestamp.json has not changed" end a check.
 */
static bool chain_fresh(struct rsr_ctx *ctx, const struct rsr_updater *u)
{
	struct tuf_meta m;
	bool whole;

	if (!u->timestamp || !u->snapshot || !u->targets || !fresh(u, u->troot->env) || !fresh(u, u->timestamp) ||
	    !fresh(u, u->snapshot) || !fresh(u, u->targets))
		return false;
	whole = tuf_meta_get(ctx, u->timestamp, "snapshot.json", "trusted timestamp", &m) == 0 &&
		m.version == version_of(u->snapshot) &&
		tuf_meta_get(ctx, u->snapshot, "targets.json", "trusted snapshot", &m) == 0 &&
		m.version == version_of(u->targets);
	rsr_ctx_clear_error(ctx);
	return whole;
}

/* The hex SHA-256 of the trusted timestamp.json as stored; false when it cannot be read. */
static bool trusted_timestamp_digest(struct rsr_ctx *ctx, const struct rsr_updater *u, char hex[65])
{
	_cleanup_free_ char *p = path_join(u->state, "timestamp.json"), *buf = NULL;
	uint8_t d[32];
	size_t len;

	if (!p || rsr_read_file(ctx, p, TIMESTAMP_MAX, &buf, &len) < 0)
		return false;
	rsr_sha256(buf, len, d);
	rsr_hex_encode(d, sizeof(d), hex);
	return true;
}

/*
 * Loads the entity tag of the trusted timestamp.json. The file binds it to
 * those bytes by their SHA-256, so a tag left from another timestamp (a cut
 * between the two writes, a file put there by hand) is not used: the GET
 * is then unconditional, which is always safe.
 */
static void validator_load(struct rsr_ctx *ctx, struct rsr_updater *u, struct http_validator *v)
{
	_cleanup_free_ char *p = path_join(u->state, VALIDATOR_FILE), *buf = NULL;
	const char *mirror, *etag, *sha;
	char hex[65];
	json_t *j = NULL;
	size_t len;

	if (!p || access(p, F_OK) < 0 || rsr_read_file(ctx, p, VALIDATOR_MAX, &buf, &len) < 0 ||
	    !(j = json_loadb(buf, len, JSON_REJECT_DUPLICATES, NULL)))
		goto out;
	mirror = json_string_value(json_object_get(j, "mirror"));
	etag = json_string_value(json_object_get(j, "etag"));
	sha = json_string_value(json_object_get(j, "sha256"));
	if (!mirror || !etag || !sha || strlen(etag) >= HTTP_ETAG_MAX || !trusted_timestamp_digest(ctx, u, hex) ||
	    strcmp(hex, sha))
		goto out;
	v->mirror = strdup(mirror);
	v->etag = strdup(etag);
	if (!v->mirror || !v->etag)
		http_validator_clear(v);
out:
	json_decref(j);
	rsr_ctx_clear_error(ctx);
}

/* Records the tag the mirror gave for the timestamp.json just trusted (or forgets the old one). */
static int validator_save(struct rsr_ctx *ctx, struct rsr_updater *u, const struct http_validator *v, const char *buf,
			  size_t len)
{
	_cleanup_free_ char *text = NULL;
	uint8_t d[32];
	char hex[65];
	json_t *j;

	if (!v->mirror || !v->etag) {
		forget(u, VALIDATOR_FILE);
		return 0;
	}
	rsr_sha256(buf, len, d);
	rsr_hex_encode(d, sizeof(d), hex);
	j = json_pack("{s:s, s:s, s:s}", "mirror", v->mirror, "etag", v->etag, "sha256", hex);
	text = j ? rsr_json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	json_decref(j);
	if (!text)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	return persist(ctx, u, VALIDATOR_FILE, text, strlen(text));
}

int rsr_update_refresh(struct rsr_ctx *ctx, struct rsr_updater *u)
{
	_cleanup_free_ char *tsbuf = NULL, *snbuf = NULL, *tgbuf = NULL;
	struct tuf_meta tsm, snm, old;
	struct http_validator have = {0}, got = {0};
	json_t *ts = NULL, *sn = NULL, *tg = NULL;
	size_t len;
	int r;

	u->checked = false;
	if ((r = rsr_mkdir_p_at(ctx, AT_FDCWD, u->state, NULL)) < 0)
		return r;
	/*
	 * Timestamp first, conditionally: when the device holds a whole,
	 * unexpired chain and the mirror that served its timestamp.json says
	 * 304 Not Modified, nothing has changed and the check ends at one small
	 * request. That skips looking for a new root: a repository publishes a
	 * new timestamp with every new root (rsr repo does), and a mirror that
	 * lies with 304 can only hold the device at what it has until that
	 * timestamp expires, which a mirror withholding files can do anyway
	 * (TUF's freeze attack, bounded by the timestamp's expiry).
	 */
	if (chain_fresh(ctx, u))
		validator_load(ctx, u, &have);
	r = http_get_mem_cond(ctx, &u->http, "metadata/timestamp.json", TIMESTAMP_MAX, have.etag ? &have : NULL, &tsbuf,
			      &len, &got);
	if (r == HTTP_NOT_MODIFIED) {
		rsr_debug(ctx, "timestamp.json: not modified since version %llu",
			  (unsigned long long)version_of(u->timestamp));
		r = 0;
		goto out;
	}
	if (r < 0) {
		if (r == -ENOENT)
			not_on_any_mirror(ctx, "timestamp.json");
		goto out;
	}
	/* Root: follow rotations, then the newest root must not have expired. */
	if ((r = update_root(ctx, u)) < 0 || (r = check_expiry(ctx, u, u->troot->env, "root.json")) < 0)
		goto out;

	/* Timestamp: verified by the root just updated. */
	if ((r = check_role(ctx, u, TUF_TIMESTAMP, NULL, "timestamp.json", tsbuf, len, &ts)) < 0)
		goto out;
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
	    (r = persist(ctx, u, "timestamp.json", tsbuf, len)) < 0 ||
	    (r = validator_save(ctx, u, &got, tsbuf, len)) < 0)
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
	http_validator_clear(&have);
	http_validator_clear(&got);
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
	json_t *rsr = json_object_get(json_object_get(info, "custom"), "rsr"), *seq, *ro, *wd, *kid;
	const char *b, *l;
	size_t plen = strlen(path), mlen = strlen("/" RSR_RESPONSE_MANIFEST);

	if (!json_is_object(rsr) || plen <= mlen || strcmp(path + plen - mlen, "/" RSR_RESPONSE_MANIFEST))
		return false;
	b = json_string_value(json_object_get(rsr, "base_build"));
	l = json_string_value(json_object_get(rsr, "letter"));
	seq = json_object_get(rsr, "sequence");
	ro = json_object_get(rsr, "rollout");
	wd = json_object_get(rsr, "withdrawn");
	kid = json_object_get(rsr, "keyids");
	if (!b || strcmp(b, base) || !is_letter(l) || !json_is_integer(seq) || json_integer_value(seq) < 1 ||
	    (ro && (!json_is_integer(ro) || json_integer_value(ro) < 0 || json_integer_value(ro) > 100)) ||
	    (wd && !json_is_boolean(wd)) || (kid && (!json_is_array(kid) || json_array_size(kid) > 16)))
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

/* Reads image i of a response's custom metadata; RSR_E_FORMAT when it is malformed. */
static int meta_image_get(struct rsr_ctx *ctx, const struct candidate *c, json_t *im, size_t i, struct meta_image *ret)
{
	json_t *fw = json_object_get(im, "forward"), *in = json_object_get(fw, "inputs");

	*ret = (struct meta_image){
	    .slot = json_string_value(json_object_get(im, "slot")),
	    .arch = json_string_value(json_object_get(im, "arch")),
	    .sha = json_string_value(json_object_get(im, "sha256")),
	    .fwd = json_string_value(json_object_get(fw, "target")),
	    .rev = json_string_value(json_object_get(json_object_get(im, "reverse"), "target")),
	    .inputs = in,
	};
	if (!ret->slot || !ret->arch || !ret->sha || !ret->fwd || !ret->rev || strlen(ret->slot) > 64 ||
	    strchr(ret->slot, '/') || ret->slot[0] == '.' || (in && (!json_is_array(in) || json_array_size(in) > 16)))
		return rsr_error(ctx, RSR_E_FORMAT, "%s: image %zu of the custom metadata is malformed", c->path, i);
	return 0;
}

static json_t *meta_images(struct rsr_ctx *ctx, const struct candidate *c)
{
	json_t *images = json_object_get(c->rsr, "images");

	if (!json_is_array(images) || json_array_size(images) > 1024) {
		rsr_error(ctx, RSR_E_FORMAT, "%s: the custom metadata's images are not a list of at most 1024",
			  c->path);
		return NULL;
	}
	return images;
}

/*
 * Whether this device can install response c, from the signed metadata and
 * the images it has: 0 if so, 1 with *ret_reason (allocated) if not, or a
 * negative error. Metadata without "keyids" or "inputs" (older
 * repositories) settles only what it says.
 */
static int installable(struct rsr_ctx *ctx, struct rsr_updater *u, const struct candidate *c, char **ret_reason)
{
	const struct rsr_keyring *keys = rsr_device_keyring(u->dev);
	json_t *kids = json_object_get(c->rsr, "keyids"), *images = meta_images(ctx, c), *im, *v;
	size_t i, k, n_mine = 0;
	int r;

	*ret_reason = NULL;
	if (!images)
		return RSR_E_FORMAT;
	if (rsr_keyring_count(keys) == 0)
		return asprintf(ret_reason, "no trusted keys in %s/%s to verify it",
				strcmp(u->root, "/") ? u->root : "", RSR_GRAFT_KEYS_DIR) < 0
			   ? -ENOMEM
			   : 1;
	if (kids) {
		bool found = false;
		json_array_foreach(kids, k, v)
		{
			uint8_t id[RSR_KEY_ID_SIZE];
			const char *hex = json_string_value(v);
			if (hex && strlen(hex) == 2 * RSR_KEY_ID_SIZE && rsr_hex_decode(hex, id, sizeof(id)) &&
			    rsr_keyring_find(keys, id))
				found = true;
		}
		if (!found)
			return asprintf(ret_reason, "it is signed by %s%.16s%s, not by any of the %zu key%s in %s/%s",
					json_array_size(kids) ? "key " : "no key",
					json_array_size(kids) ? json_string_value(json_array_get(kids, 0)) : "",
					json_array_size(kids) ? "…" : "", rsr_keyring_count(keys),
					rsr_keyring_count(keys) == 1 ? "" : "s", strcmp(u->root, "/") ? u->root : "",
					RSR_GRAFT_KEYS_DIR) < 0
				   ? -ENOMEM
				   : 1;
	}
	json_array_foreach(images, i, im)
	{
		struct meta_image m;
		char cur[65];
		bool accepted = false;

		if ((r = meta_image_get(ctx, c, im, i, &m)) < 0)
			return r;
		if (strcmp(m.arch, u->arch))
			continue;
		n_mine++;
		slot_sha(ctx, u, m.slot, cur);
		if (!cur[0])
			return asprintf(ret_reason, "slot '%s' has no image on this device", m.slot) < 0 ? -ENOMEM : 1;
		if (!strcmp(cur, m.sha) || !m.inputs)
			continue;
		json_array_foreach(m.inputs, k, v) if (json_is_string(v) && !strcmp(json_string_value(v), cur))
		    accepted = true;
		if (!accepted)
			return asprintf(
				   ret_reason,
				   "slot '%s': this device's image (%.16s…) is none of the %zu image%s response (%s) "
				   "patches from",
				   m.slot, cur, json_array_size(m.inputs), json_array_size(m.inputs) == 1 ? "" : "s",
				   c->letter) < 0
				   ? -ENOMEM
				   : 1;
	}
	if (n_mine == 0)
		return asprintf(ret_reason, "it carries no images for this machine's architecture (%s)", u->arch) < 0
			   ? -ENOMEM
			   : 1;
	return 0;
}

/* The files of the chosen response this device needs: manifest, forward patches it can use, reverse patches. */
typedef int (*need_fn)(struct rsr_ctx *ctx, struct rsr_updater *u, const char *target, void *arg);

static int each_needed(struct rsr_ctx *ctx, struct rsr_updater *u, need_fn fn, void *arg)
{
	json_t *images, *im;
	size_t i;
	int r;

	if ((r = fn(ctx, u, u->chosen.path, arg)) < 0)
		return r;
	if (!(images = meta_images(ctx, &u->chosen)))
		return RSR_E_FORMAT;
	json_array_foreach(images, i, im)
	{
		struct meta_image m;
		char cur[65];

		if ((r = meta_image_get(ctx, &u->chosen, im, i, &m)) < 0)
			return r;
		if (strcmp(m.arch, u->arch))
			continue;
		slot_sha(ctx, u, m.slot, cur);
		if (strcmp(cur, m.sha) && (r = fn(ctx, u, m.fwd, arg)) < 0)
			return r;
		if ((r = fn(ctx, u, m.rev, arg)) < 0)
			return r;
	}
	return 0;
}

/*
 * The path of a file this device holds with the target's signed length and
 * SHA-256, or NULL: the installed response's reverse patches, by the
 * digests its verified manifest signed (a response that carries a slot's
 * image on unchanged carries the same reverse patch). The caller frees it.
 */
static char *held_file(struct rsr_updater *u, const struct tuf_target *t)
{
	const struct rsr_response *resp = u->dst->response;
	char hex[65], *p;

	if (!resp)
		return NULL;
	rsr_hex_encode(t->sha256, 32, hex);
	for (size_t i = 0; i < rsr_response_image_count(resp); i++) {
		const struct rsr_response_image *im = rsr_response_image(resp, i);
		if (im->reverse_size == t->length && !strcmp(im->reverse_sha256, hex))
			return asprintf(&p, "%s/%s", rsr_response_dir(resp), im->reverse) < 0 ? NULL : p;
	}
	return NULL;
}

static int count_size(struct rsr_ctx *ctx, struct rsr_updater *u, const char *target, void *arg)
{
	_cleanup_free_ char *held = NULL;
	struct tuf_target t;
	int r = tuf_target_get(ctx, u->targets, target, &t);

	(void)arg;
	if (r == -ENOENT)
		return rsr_error(ctx, RSR_E_FORMAT, "%s: the targets metadata lists no %s", u->chosen.path, target);
	if (r < 0)
		return r;
	if ((held = held_file(u, &t))) {
		u->offer.reused_bytes += t.length;
		u->offer.n_reused++;
	} else {
		u->offer.download_bytes += t.length;
		u->offer.n_files++;
	}
	return 0;
}

static int fill_advisories(struct rsr_ctx *ctx, struct rsr_updater *u)
{
	json_t *advs = json_object_get(u->chosen.rsr, "advisories"), *a, *c;
	size_t i, k, n_cves = 0, at = 0;

	if (!json_is_array(advs) || json_array_size(advs) > 1024)
		return rsr_error(ctx, RSR_E_FORMAT,
				 "%s: the custom metadata's advisories are not a list of at most 1024", u->chosen.path);
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

static int by_sequence_desc(const void *a, const void *b)
{
	const struct candidate *x = a, *y = b;
	return x->sequence < y->sequence ? 1 : x->sequence > y->sequence ? -1 : 0;
}

/* The response a person removed last, if c is it and nothing newer was installed since. */
static bool is_removed(const struct rsr_device_state *st, const struct candidate *c)
{
	return !st->letter && st->removed_letter && c->sequence == st->removed_sequence &&
	       c->sequence == st->high_water;
}

int rsr_update_check(struct rsr_ctx *ctx, struct rsr_updater *u, const struct rsr_update_offer **ret_offer)
{
	json_t *targets, *info;
	const char *k;
	const struct rsr_device_state *st = u->dst;
	_cleanup_free_ struct candidate *cands = NULL;
	size_t n = 0;
	int r;

	if (!u->targets)
		return rsr_error(ctx, RSR_E_STATE, "no trusted targets metadata yet: refresh first");
	if (!st->base_build)
		return rsr_error(ctx, RSR_E_STATE, "cannot tell this device's base build from %s/etc/os-release",
				 u->root);
	clear_blocked(u);
	u->checked = false;
	u->chosen = (struct candidate){0};
	u->offer = (struct rsr_update_offer){.base_build = st->base_build,
					     .installed_letter = st->letter,
					     .removed_letter = st->removed_letter,
					     .removed_sequence = st->removed_sequence,
					     .removed_at = st->removed_at};
	targets = json_object_get(json_object_get(u->targets, "signed"), "targets");
	cands = calloc(json_object_size(targets) + 1, sizeof(*cands));
	if (!cands)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	json_object_foreach(targets, k, info)
	{
		struct candidate c;
		if (!candidate_parse(k, info, st->base_build, &c))
			continue;
		if (st->letter && c.sequence == st->sequence && c.withdrawn)
			u->offer.installed_withdrawn = true;
		if (c.withdrawn || (c.sequence <= st->high_water && !is_removed(st, &c)))
			continue;
		/* The removed response was installed here before: its rollout took this device then. */
		if (!is_removed(st, &c) && u->policy->staged_rollout && u->machine_id &&
		    rsr_update_rollout_bucket(u->machine_id, st->base_build, c.letter) >= c.rollout) {
			rsr_debug(ctx, "response (%s) is rolled out to %u%% of devices, not yet to this one", c.letter,
				  c.rollout);
			u->offer.n_held_back++;
			continue;
		}
		cands[n++] = c;
	}
	qsort(cands, n, sizeof(*cands), by_sequence_desc);
	/* The newest this device can install; the newer ones it cannot are said, with the reason. */
	for (size_t i = 0; i < n && !u->chosen.path; i++) {
		char *reason = NULL;
		if ((r = installable(ctx, u, &cands[i], &reason)) < 0)
			return r == -ENOMEM ? rsr_error(ctx, r, "out of memory") : r;
		if (r > 0) {
			struct rsr_update_blocked *b = realloc(u->blocked, (u->n_blocked + 1) * sizeof(*b));
			if (!b) {
				free(reason);
				return rsr_error(ctx, -ENOMEM, "out of memory");
			}
			u->blocked = b;
			u->blocked[u->n_blocked++] = (struct rsr_update_blocked){
			    .letter = cands[i].letter, .sequence = cands[i].sequence, .reason = reason};
			rsr_debug(ctx, "response (%s) cannot install on this device: %s", cands[i].letter, reason);
			continue;
		}
		if (is_removed(st, &cands[i])) {
			u->offer.reinstall_available = true;
			if (!u->reinstall)
				break; /* a person removed it: only a person installs it again */
			u->offer.reinstall = true;
		}
		u->chosen = cands[i];
	}
	u->offer.blocked = u->blocked;
	u->offer.n_blocked = u->n_blocked;
	if (u->chosen.path) {
		u->offer.action = RSR_UPDATE_INSTALL;
		u->offer.letter = u->chosen.letter;
		u->offer.sequence = u->chosen.sequence;
		u->offer.rollout = u->chosen.rollout;
		u->offer.restart = json_string_value(json_object_get(u->chosen.rsr, "restart"));
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

/*
 * Copies a file the device holds into the partial download fd, and checks
 * the copy against the signed digest: 0 if it is the target; otherwise fd is
 * emptied again and the target is fetched instead.
 */
static int copy_held(struct rsr_ctx *ctx, const char *held, int fd, const struct tuf_target *t, const char *target)
{
	_cleanup_close_ int in = open(held, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	uint8_t d[32];

	if (in >= 0 && ftruncate(fd, 0) == 0 && rsr_copy_range(in, 0, fd, 0, t->length) == 0 &&
	    rsr_sha256_fd(ctx, fd, 0, t->length, target, d) == 0 && !memcmp(d, t->sha256, 32))
		return 0;
	rsr_ctx_clear_error(ctx);
	rsr_debug(ctx, "%s: the copy this device holds (%s) is not the target: fetching it", target, held);
	return ftruncate(fd, 0) < 0 ? -errno : -1;
}

static int download_one(struct rsr_ctx *ctx, struct rsr_updater *u, const char *target, void *arg)
{
	struct dl *dl = arg;
	struct tuf_target t;
	_cleanup_free_ char *file = NULL, *local = NULL, *part = NULL, *parent = NULL, *held = NULL;
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
	if ((held = held_file(u, &t)) && copy_held(ctx, held, fd, &t, target) == 0) {
		rsr_info(ctx, "%s: this device holds it already (%s): not fetched", target, held);
	} else {
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
		r = rsr_device_remove(ctx, u->dev, flags | RSR_DEVICE_WITHDRAWN);
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
	r = rsr_device_install(ctx, u->dev, dir, flags | (u->offer.reinstall ? RSR_DEVICE_REINSTALL : 0));
	rm_rf(dir);
	return r < 0 ? r : 0;
}
