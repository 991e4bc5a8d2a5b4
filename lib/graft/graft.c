/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Device state and activation: installing images into slots, grafting the
 * current images over the base directories (swapping with no gap), and
 * ungrafting. The mount stack is described in docs/architecture.md.
 */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/mount.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>

#include "graft-internal.h"

#ifndef OVERLAYFS_SUPER_MAGIC
#define OVERLAYFS_SUPER_MAGIC 0x794c7630
#endif
/* Retired devices remembered for status; the oldest are forgotten first. */
#define RETIRED_MAX 1024

char *graft_path(const struct rsr_graft *g, const char *rel)
{
	char *p;

	if (asprintf(&p, "%s%s", g->prefix, rel) < 0)
		return NULL;
	return p;
}

static void strv_free(char **v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		free(v[i]);
	free(v);
}

int rsr_graft_open(struct rsr_ctx *ctx, const char *root, struct rsr_graft **ret_g)
{
	struct rsr_graft *g;
	char real[PATH_MAX];
	_cleanup_free_ char *keys = NULL;
	int r;

	if (!realpath(root, real))
		return rsr_error_errno(ctx, -errno, "root %s", root);
	g = calloc(1, sizeof(*g));
	if (!g)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	g->rootfd = open(real, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (g->rootfd < 0) {
		r = rsr_error_errno(ctx, -errno, "root %s", real);
		goto fail;
	}
	g->root = strdup(real);
	if (asprintf(&g->prefix, "%s%s", real, strcmp(real, "/") ? "/" : "") < 0)
		g->prefix = NULL;
	if (!g->root || !g->prefix || !(keys = graft_path(g, RSR_GRAFT_KEYS_DIR))) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto fail;
	}
	r = rsr_keyring_new(&g->keys);
	if (r < 0) {
		r = rsr_error(ctx, r, "out of memory");
		goto fail;
	}
	r = rsr_keyring_add_dir(ctx, g->keys, keys);
	if (r < 0)
		goto fail;
	*ret_g = g;
	return 0;
fail:
	rsr_graft_free(g);
	return r;
}

static void undo_clear(struct rsr_graft *g)
{
	for (size_t i = 0; i < g->n_undo; i++) {
		free(g->undo[i].slot);
		free(g->undo[i].prev);
	}
	free(g->undo);
	g->undo = NULL;
	g->n_undo = 0;
}

void rsr_graft_free(struct rsr_graft *g)
{
	if (!g)
		return;
	rsr_lock_release(g->lock);
	if (g->rootfd >= 0)
		close(g->rootfd);
	rsr_keyring_free(g->keys);
	undo_clear(g);
	free(g->root);
	free(g->prefix);
	free(g);
}

const char *rsr_graft_root(const struct rsr_graft *g)
{
	return g->root;
}

/*
 * Serialises the commands that change a root: the device lock (lock.c),
 * shared with install and remove. Held until the handle is freed.
 */
static int graft_lock(struct rsr_ctx *ctx, struct rsr_graft *g)
{
	if (g->lock)
		return 0;
	return rsr_lock_take(ctx, g->rootfd, g->root, &g->lock);
}

/* mkdir -p of a path relative to the root. */
static int mkdir_rel(struct rsr_ctx *ctx, const struct rsr_graft *g, const char *rel, mode_t mode)
{
	_cleanup_free_ char *copy = strdup(rel);

	if (!copy)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	for (char *p = copy;; p++) {
		if (*p == '/' || *p == '\0') {
			char c = *p;
			*p = '\0';
			if (mkdirat(g->rootfd, copy, mode) < 0 && errno != EEXIST)
				return rsr_error_errno(ctx, -errno, "%s%s", g->prefix, copy);
			if (c == '\0')
				return 0;
			*p = c;
		}
	}
}

/* ---- mounts made by rsr ---- */

/*
 * True if the mount on top of `path` is an overlay rsr made: overlayfs, and
 * listed in mountinfo with the source "rsr". *ret_dev gets its device.
 */
static bool top_is_graft(const char *path, dev_t *ret_dev)
{
	struct statfs sf;
	struct stat st;
	FILE *f;
	char *line = NULL;
	size_t cap = 0;
	bool found = false;

	if (statfs(path, &sf) < 0 || (unsigned long)sf.f_type != OVERLAYFS_SUPER_MAGIC || stat(path, &st) < 0 ||
	    !graft_is_mount_point(path))
		return false;
	f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return false;
	while (!found && getline(&line, &cap, f) > 0) {
		unsigned ma, mi;
		char *sep;
		if (sscanf(line, "%*u %*u %u:%u", &ma, &mi) != 2 || makedev(ma, mi) != st.st_dev)
			continue;
		sep = strstr(line, " - ");
		found = sep && !strncmp(sep, " - overlay rsr ", 15);
	}
	free(line);
	fclose(f);
	if (found && ret_dev)
		*ret_dev = st.st_dev;
	return found;
}

/* Every top-level directory of the root that has an rsr overlay on top. */
static int grafted_dirs(struct rsr_ctx *ctx, const struct rsr_graft *g, char ***ret, size_t *ret_n)
{
	_cleanup_close_ int fd = openat(g->rootfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d;
	struct dirent *de;
	char **v = NULL;
	size_t n = 0;
	int r = 0;

	if (fd < 0 || !(d = fdopendir(fd)))
		return rsr_error_errno(ctx, -errno, "%s", g->root);
	fd = -1;
	while ((de = readdir(d))) {
		_cleanup_free_ char *p = NULL;
		if (de->d_name[0] == '.' || (de->d_type != DT_DIR && de->d_type != DT_UNKNOWN))
			continue;
		if (!(p = graft_path(g, de->d_name))) {
			r = -ENOMEM;
			break;
		}
		if (!top_is_graft(p, NULL))
			continue;
		char **nv = realloc(v, (n + 1) * sizeof(*v));
		if (!nv || !(nv[n] = strdup(de->d_name))) {
			v = nv ? nv : v;
			r = -ENOMEM;
			break;
		}
		v = nv;
		n++;
	}
	closedir(d);
	if (r < 0) {
		strv_free(v, n);
		return rsr_error(ctx, r, "out of memory");
	}
	*ret = v;
	*ret_n = n;
	return 0;
}

/* ---- run-time state: run/rsr/graft.json ---- */

static int state_load(struct rsr_ctx *ctx, const struct rsr_graft *g, json_t **ret)
{
	static const char *const arrays[] = {"slots", "paths", "retired"};
	_cleanup_free_ char *path = graft_path(g, RSR_GRAFT_STATE_FILE), *buf = NULL;
	json_t *st = NULL;
	json_error_t jerr;
	size_t len;
	int r;

	if (!path)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	if (access(path, F_OK) == 0) {
		r = rsr_read_file(ctx, path, 16 << 20, &buf, &len);
		if (r < 0)
			return r;
		st = json_loadb(buf, len, 0, &jerr);
		if (!st && rsr_json_load_oom(&jerr))
			return rsr_error(ctx, -ENOMEM, "%s: out of memory", path);
		if (!st || !json_is_object(st)) {
			/* run/ is scratch space: a damaged file is forgotten, not fatal. */
			rsr_warn(ctx, "%s: unreadable (%s); ignoring it", path, st ? "not an object" : jerr.text);
			json_decref(st);
			st = NULL;
		}
	}
	if (!st)
		st = json_object();
	if (!st)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	for (size_t i = 0; i < ARRAY_SIZE(arrays); i++)
		if (!json_is_array(json_object_get(st, arrays[i])) &&
		    json_object_set_new(st, arrays[i], json_array()) < 0) {
			json_decref(st);
			return rsr_error(ctx, -ENOMEM, "out of memory");
		}
	*ret = st;
	return 0;
}

static int state_save(struct rsr_ctx *ctx, const struct rsr_graft *g, json_t *st)
{
	_cleanup_free_ char *path = graft_path(g, RSR_GRAFT_STATE_FILE), *buf = NULL;
	int r;

	if (!path)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	r = mkdir_rel(ctx, g, RSR_GRAFT_RUN_DIR, 0755);
	if (r < 0)
		return r;
	if (json_object_set_new(st, "version", json_integer(1)) < 0 ||
	    !(buf = rsr_json_dumps(st, JSON_INDENT(2) | JSON_SORT_KEYS)))
		return rsr_error(ctx, -ENOMEM, "out of memory");
	size_t len = strlen(buf);
	char *nl = realloc(buf, len + 2);
	if (!nl)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	buf = nl;
	memcpy(buf + len, "\n", 2);
	return rsr_write_file_atomic(ctx, path, buf, len + 1, 0644);
}

static const char *jstr(const json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));
	return s ? s : "";
}

/* A slot entry of the state is live if its image is still mounted where it says. */
static bool slot_entry_live(const json_t *e)
{
	struct stat st;
	dev_t dev;

	return json_is_object(e) && graft_parse_dev(jstr(e, "dev"), &dev) && graft_is_mount_point(jstr(e, "mount")) &&
	       stat(jstr(e, "mount"), &st) == 0 && st.st_dev == dev;
}

static json_t *state_find(json_t *arr, const char *key, const char *value)
{
	size_t i;
	json_t *e;

	json_array_foreach(arr, i, e) if (!strcmp(jstr(e, key), value)) return e;
	return NULL;
}

/* Drops entries that no longer describe the mounts (after a crash, or a run/ that outlived them). */
static void state_reconcile(const struct rsr_graft *g, json_t *st)
{
	json_t *slots = json_object_get(st, "slots"), *paths = json_object_get(st, "paths");
	size_t i;
	bool any = false;

	for (i = 0; i < json_array_size(slots);) {
		if (slot_entry_live(json_array_get(slots, i)))
			i++;
		else
			json_array_remove(slots, i);
	}
	for (i = 0; i < json_array_size(paths);) {
		json_t *e = json_array_get(paths, i);
		_cleanup_free_ char *p = graft_path(g, jstr(e, "path"));
		dev_t want, have;
		if (p && graft_cover_name_valid(jstr(e, "path")) && graft_parse_dev(jstr(e, "dev"), &want) &&
		    top_is_graft(p, &have) && have == want) {
			i++;
			any = true;
		} else {
			json_array_remove(paths, i);
		}
	}
	if (!any)
		json_object_del(st, "base");
}

/* Remembers a device that went, for status to find the processes still using it. */
static int state_retire(struct rsr_ctx *ctx, json_t *st, dev_t dev, const char *what, const char *dir, bool overlay)
{
	json_t *ret = json_object_get(st, "retired");
	char d[32];

	graft_format_dev(dev, d);
	if (json_array_append_new(
		ret, json_pack("{s:s, s:s, s:s, s:b}", "dev", d, "what", what, "dir", dir, "overlay", overlay)) < 0)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	while (json_array_size(ret) > RETIRED_MAX)
		json_array_remove(ret, 0);
	return 0;
}

/* "the graft of /usr (libssl3 3.0.22, swapped out)" from the slots of the state; the caller frees. */
static char *describe_graft(json_t *st, const char *dir, const char *how)
{
	char buf[1024] = "";
	json_t *e, *c;
	size_t i, j;
	char *s;

	json_array_foreach(json_object_get(st, "slots"), i, e)
	{
		json_array_foreach(json_object_get(e, "covers"), j, c)
		{
			size_t l = strlen(buf);
			if (!json_is_string(c) || strcmp(json_string_value(c), dir))
				continue;
			snprintf(buf + l, sizeof(buf) - l, "%s%s %s", l ? ", " : "", jstr(e, "slot"),
				 jstr(e, "version"));
		}
	}
	if (asprintf(&s, "the graft of /%s (%s%s%s)", dir, buf, buf[0] ? ", " : "", how) < 0)
		return NULL;
	return s;
}

/* Forgets retired devices that a live mount now uses: the number was reused. */
static void state_prune_retired(json_t *st)
{
	json_t *ret = json_object_get(st, "retired");
	struct dev_set live = {0};

	if (graft_live_mount_devs(&live) < 0)
		return;
	for (size_t i = 0; i < json_array_size(ret);) {
		dev_t d;
		if (!graft_parse_dev(jstr(json_array_get(ret, i), "dev"), &d) || dev_set_has(&live, d))
			json_array_remove(ret, i);
		else
			i++;
	}
	dev_set_free(&live);
}

/* ---- base identity ---- */

static int read_in_root(const struct rsr_graft *g, const char *rel, char *buf, size_t size, size_t *ret_len)
{
	struct open_how how = {.flags = O_RDONLY | O_CLOEXEC, .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
	_cleanup_close_ int fd = (int)syscall(SYS_openat2, g->rootfd, rel, &how, sizeof(how));
	size_t len = 0;

	if (fd < 0)
		return -errno;
	for (;;) {
		ssize_t n = read(fd, buf + len, size - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0 || (len += (size_t)n) == size - 1)
			break;
	}
	buf[len] = '\0';
	*ret_len = len;
	return 0;
}

struct base_id {
	char *name, *version, *build;
};

static void base_id_free(struct base_id *b)
{
	free(b->name);
	free(b->version);
	free(b->build);
	memset(b, 0, sizeof(*b));
}

/*
 * The base identity: the one recorded when the first graft was made (the
 * files may be shadowed now), else the root's os-release.
 */
static int base_identity(struct rsr_ctx *ctx, const struct rsr_graft *g, json_t *st, struct base_id *ret)
{
	json_t *b = json_object_get(st, "base");
	static const char *files[] = {"etc/os-release", "usr/lib/os-release"};
	char buf[65536];
	size_t len = 0;
	int r = -ENOENT;

	memset(ret, 0, sizeof(*ret));
	if (json_is_object(b)) {
		const char *n = json_string_value(json_object_get(b, "name"));
		const char *v = json_string_value(json_object_get(b, "version"));
		const char *bu = json_string_value(json_object_get(b, "build"));
		ret->name = n ? strdup(n) : NULL;
		ret->version = v ? strdup(v) : NULL;
		ret->build = bu ? strdup(bu) : NULL;
		return 0;
	}
	for (size_t i = 0; i < ARRAY_SIZE(files) && r < 0; i++)
		r = read_in_root(g, files[i], buf, sizeof(buf), &len);
	if (r == -ENOENT)
		return 0; /* no os-release: the base build is unknown */
	if (r < 0)
		return rsr_error_errno(ctx, r, "%setc/os-release", g->prefix);
	r = rsr_graft_parse_os_release(buf, len, &ret->name, &ret->version, &ret->build);
	if (r < 0)
		return rsr_error(ctx, r, "out of memory");
	return 0;
}

/* The base identity as recorded in the state; NULL on ENOMEM. */
static json_t *base_json(const struct base_id *b)
{
	json_t *o = json_object();

	if (!o || (b->name && json_object_set_new(o, "name", json_string(b->name)) < 0) ||
	    (b->version && json_object_set_new(o, "version", json_string(b->version)) < 0) ||
	    (b->build && json_object_set_new(o, "build", json_string(b->build)) < 0)) {
		json_decref(o);
		return NULL;
	}
	return o;
}

/* ---- verification of one image against this device ---- */

/*
 * Rewrites the message of a cryptex call made through "/proc/self/fd/N" as
 * "<path>: <how>: <message><suffix>", naming the file instead.
 */
static int name_file(struct rsr_ctx *ctx, int r, const char *fdpath, const char *path, const char *how,
		     const char *suffix)
{
	char msg[RSR_ERRMSG_MAX];
	const char *m = rsr_ctx_error(ctx);
	size_t fl = strlen(fdpath);
	const char *hit;

	if (!strncmp(m, fdpath, fl) && !strncmp(m + fl, ": ", 2))
		snprintf(msg, sizeof(msg), "%s", m + fl + 2);
	else if ((hit = strstr(m, fdpath)))
		snprintf(msg, sizeof(msg), "%.*s%s%s", (int)(hit - m), m, path, hit + fl);
	else
		snprintf(msg, sizeof(msg), "%s", m);
	return rsr_error(ctx, r, "%s: %s%s%s%s", path, how ? how : "", how ? ": " : "", msg, suffix ? suffix : "");
}

/*
 * Opens the cryptex at `fdpath` (which may be "/proc/self/fd/N" for `path`),
 * checking the manifest's signature against the trusted keys of the root
 * before its JSON is parsed: nothing an untrusted party wrote is parsed.
 * A failure names `path`; a bad or unknown signature also says where the
 * trusted keys are.
 */
static int open_signed(struct rsr_ctx *ctx, const struct rsr_graft *g, const char *fdpath, const char *path,
		       struct rsr_cryptex **ret_cx)
{
	char keys[PATH_MAX + 32];
	int r;

	r = rsr_cryptex_open_trusted(ctx, fdpath, g->keys, ret_cx);
	if (r >= 0)
		return r;
	if (r != RSR_E_SIGNATURE)
		return name_file(ctx, r, fdpath, path, NULL, NULL);
	snprintf(keys, sizeof(keys), " (trusted keys: %s%s)", g->prefix, RSR_GRAFT_KEYS_DIR);
	return name_file(ctx, r, fdpath, path, "refused", keys);
}

/* True if the base's top-level `name` is a symbolic link to usr/NAME (merged /usr). */
static bool merged_into_usr(int rootfd, const char *name)
{
	char target[80], want[80];
	ssize_t n = readlinkat(rootfd, name, target, sizeof(target) - 1);

	if (n <= 0)
		return false;
	target[n] = '\0';
	snprintf(want, sizeof(want), "usr/%s", name);
	return !strcmp(target, want) || (target[0] == '/' && !strcmp(target + 1, want));
}

/*
 * The top-level directories this device allows grafting over: /usr and
 * /opt always, others only where etc/rsr/graft.conf names them, so that a
 * stolen vendor key or a vendor's mistake cannot graft over home
 * directories, /root or /boot. `text` lists them, for messages.
 */
struct covers {
	char **v;
	size_t n;
	char text[1024];
};

static void covers_free(struct covers *c)
{
	for (size_t i = 0; i < c->n; i++)
		free(c->v[i]);
	free(c->v);
	c->v = NULL;
	c->n = 0;
}

static bool covers_has(const struct covers *c, const char *p)
{
	for (size_t i = 0; i < c->n; i++)
		if (!strcmp(c->v[i], p))
			return true;
	return false;
}

/* Read through the root's descriptor without following links, so it stays inside the root. */
static int covers_load(struct rsr_ctx *ctx, const struct rsr_graft *g, struct covers *c)
{
	static const char *const dflt[] = {"usr", "opt"};
	_cleanup_close_ int fd = openat(g->rootfd, GRAFT_CONF, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	char buf[65536];
	char **v = NULL;
	size_t n = 0, line = 0, len = 0;
	ssize_t k = 0;
	int r;

	*c = (struct covers){0};
	if (fd < 0 && errno != ENOENT)
		return rsr_error_errno(ctx, -errno, "%s%s", g->prefix, GRAFT_CONF);
	while (fd >= 0 && len < sizeof(buf) && (k = read(fd, buf + len, sizeof(buf) - len)) != 0) {
		if (k < 0 && errno != EINTR)
			return rsr_error_errno(ctx, -errno, "%s%s", g->prefix, GRAFT_CONF);
		len += k > 0 ? (size_t)k : 0;
	}
	if (len == sizeof(buf))
		return rsr_error(ctx, RSR_E_LIMIT, "%s%s: larger than %zu bytes", g->prefix, GRAFT_CONF,
				 sizeof(buf) - 1);
	r = graft_parse_covers(buf, len, &v, &n, &line);
	if (r == -EINVAL)
		return rsr_error(ctx, RSR_E_FORMAT,
				 "%s%s:%zu: not 'cover = /DIR' with DIR a top-level directory other than /etc, /var, "
				 "/run, /tmp, /proc, /sys and /dev",
				 g->prefix, GRAFT_CONF, line);
	if (r < 0)
		return rsr_error(ctx, r, "out of memory");
	/* The defaults first, then the configured ones (which the list now owns). */
	bool oom = !(c->v = calloc(ARRAY_SIZE(dflt) + n, sizeof(char *)));
	for (size_t i = 0; c->v && i < ARRAY_SIZE(dflt); i++)
		oom |= !(c->v[c->n++] = strdup(dflt[i]));
	for (size_t i = 0; i < n; i++) {
		if (c->v)
			c->v[c->n++] = v[i];
		else
			free(v[i]);
	}
	free(v);
	if (oom) {
		covers_free(c);
		return rsr_error(ctx, -ENOMEM, "out of memory");
	}
	for (size_t i = 0; i < c->n; i++)
		snprintf(c->text + strlen(c->text), sizeof(c->text) - strlen(c->text), "%s/%s", i ? ", " : "", c->v[i]);
	return 0;
}

/*
 * Opens and fully checks a cryptex file for grafting on this device. On
 * success *ret_fd is the open file (the same inode that was verified) and
 * *ret_cx the parsed cryptex.
 */
static int check_image(struct rsr_ctx *ctx, struct rsr_graft *g, const char *path, int openfd,
		       const struct base_id *base, const char *want_slot, int *ret_fd, struct rsr_cryptex **ret_cx)
{
	/* `openfd`, when not -1, is the file to check; `path` then only names it. */
	_cleanup_close_ int fd = openfd >= 0 ? fcntl(openfd, F_DUPFD_CLOEXEC, 3) : open(path, O_RDONLY | O_CLOEXEC);
	struct rsr_cryptex *cx = NULL;
	struct covers allowed_dirs = {0};
	char fdpath[64];
	int r;

	if (fd < 0)
		return rsr_error_errno(ctx, -errno, "%s", path);
	/* Through the descriptor: what is verified is what gets attached. */
	snprintf(fdpath, sizeof(fdpath), "/proc/self/fd/%d", fd);
	r = open_signed(ctx, g, fdpath, path, &cx);
	if (r < 0)
		return r;
	const char *name = rsr_cryptex_name(cx);
	if (!graft_slot_name_valid(name)) {
		r = rsr_error(ctx, RSR_E_FORMAT, "%s: slot name '%s' is not valid: " RSR_SLOT_NAME_RULE, path, name);
		goto fail;
	}
	if (want_slot && strcmp(want_slot, name)) {
		r = rsr_error(ctx, RSR_E_MISMATCH, "%s: is a cryptex for slot '%s', installed in slot '%s'", path, name,
			      want_slot);
		goto fail;
	}
	if (!base->build) {
		r = rsr_error(ctx, RSR_E_MISMATCH,
			      "%s: refused: the base build is unknown (no BUILD_ID, IMAGE_VERSION or VERSION_ID in "
			      "%setc/os-release)",
			      path, g->prefix);
		goto fail;
	}
	if (!rsr_cryptex_allows_base(cx, base->build)) {
		char allowed[512] = "";
		for (size_t i = 0; i < rsr_cryptex_base_build_count(cx); i++) {
			size_t l = strlen(allowed);
			snprintf(allowed + l, sizeof(allowed) - l, "%s'%s'", i ? ", " : "",
				 rsr_cryptex_base_build(cx, i));
		}
		r = rsr_error(ctx, RSR_E_MISMATCH, "%s: refused: made for base build %s, this base is '%s'", path,
			      allowed, base->build);
		goto fail;
	}
	r = covers_load(ctx, g, &allowed_dirs);
	if (r < 0)
		goto fail;
	for (size_t i = 0; i < rsr_cryptex_path_count(cx); i++) {
		const char *p = rsr_cryptex_covered_path(cx, i);
		struct stat st;
		if (!graft_cover_name_valid(p)) {
			r = rsr_error(ctx, RSR_E_FORMAT, "%s: refused: a cryptex may not cover /%s", path, p);
			goto fail;
		}
		if (fstatat(g->rootfd, p, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode) &&
		    merged_into_usr(g->rootfd, p)) {
			r = rsr_error(ctx, RSR_E_MISMATCH,
				      "%s: refused: covers /%s, which is a link into /usr on the base %s (merged "
				      "/usr); rebuild the cryptex with 'rsr cryptex build' without --no-merged-usr, "
				      "which puts /%s under /usr/%s",
				      path, p, g->root, p, p);
			goto fail;
		}
		if (!covers_has(&allowed_dirs, p)) {
			r = rsr_error(ctx, RSR_E_MISMATCH,
				      "%s: refused: covers /%s, which this device does not allow to be grafted over "
				      "(allowed: %s); a line 'cover = /%s' in %s%s allows it",
				      path, p, allowed_dirs.text, p, g->prefix, GRAFT_CONF);
			goto fail;
		}
		if (fstatat(g->rootfd, p, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode)) {
			r = rsr_error(ctx, RSR_E_MISMATCH,
				      "%s: refused: covers /%s, which is not a directory of the base %s", path, p,
				      g->root);
			goto fail;
		}
	}
	r = rsr_image_cryptex_verify_blocks_as(ctx, cx, path);
	if (r < 0) {
		r = name_file(ctx, r, fdpath, path, "refused", NULL);
		goto fail;
	}
	covers_free(&allowed_dirs);
	*ret_fd = TAKE_FD(fd);
	*ret_cx = cx;
	return 0;
fail:
	covers_free(&allowed_dirs);
	rsr_cryptex_free(cx);
	return r;
}

/* ---- install ---- */

static int slot_dir_open(struct rsr_ctx *ctx, struct rsr_graft *g, const char *slot, bool create, int *ret_fd)
{
	_cleanup_free_ char *rel = NULL;
	int fd, r;

	if (asprintf(&rel, "%s/%s", RSR_GRAFT_IMAGES_DIR, slot) < 0)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	if (create && (r = mkdir_rel(ctx, g, rel, 0755)) < 0)
		return r;
	fd = openat(g->rootfd, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return errno == ENOENT && !create ? -ENOENT : rsr_error_errno(ctx, -errno, "%s%s", g->prefix, rel);
	*ret_fd = fd;
	return 0;
}

/* The file name `current` points to in a slot directory, or NULL. */
static char *slot_current(int dirfd)
{
	char buf[256];
	ssize_t n = readlinkat(dirfd, "current", buf, sizeof(buf) - 1);

	if (n <= 0)
		return NULL;
	buf[n] = '\0';
	if (strchr(buf, '/') || buf[0] == '.')
		return NULL; /* only names inside the slot directory */
	return strdup(buf);
}

static const struct slot_undo *undo_find(const struct rsr_graft *g, const char *slot)
{
	for (size_t i = 0; i < g->n_undo; i++)
		if (!strcmp(g->undo[i].slot, slot))
			return &g->undo[i];
	return NULL;
}

/* Notes the slot's `current` before its first change through this handle. */
/*
 * What `current` names in a slot directory, into buf: 1 if there is one, 0
 * if there is none, -errno if that cannot be told (then nothing may be
 * removed or recorded on a guess). Allocates nothing.
 */
static int slot_current_buf(int dirfd, char *buf, size_t size)
{
	ssize_t n = readlinkat(dirfd, "current", buf, size - 1);

	if (n < 0)
		return errno == ENOENT ? 0 : -errno;
	if ((size_t)n >= size - 1)
		return -ENAMETOOLONG;
	buf[n] = '\0';
	return 1;
}

static int undo_note(struct rsr_ctx *ctx, struct rsr_graft *g, const char *slot, int dirfd)
{
	struct slot_undo *n;
	char cur[256];
	int r;

	if (undo_find(g, slot))
		return 0;
	r = slot_current_buf(dirfd, cur, sizeof(cur));
	if (r < 0)
		return rsr_error_errno(ctx, r, "%s%s/%s/current", g->prefix, RSR_GRAFT_IMAGES_DIR, slot);
	n = realloc(g->undo, (g->n_undo + 1) * sizeof(*n));
	if (!n)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	g->undo = n;
	n = &g->undo[g->n_undo];
	n->slot = strdup(slot);
	n->prev = r > 0 ? strdup(cur) : NULL;
	if (!n->slot || (r > 0 && !n->prev)) {
		free(n->slot);
		free(n->prev);
		return rsr_error(ctx, -ENOMEM, "out of memory");
	}
	g->n_undo++;
	return 0;
}

/*
 * Removes the slot's images that are neither current, nor grafted (as the
 * state records), nor the `current` an uncommitted change replaced. Where
 * any of those cannot be told, removes nothing. Allocates only to read the
 * directory.
 */
static void slot_prune(struct rsr_ctx *ctx, struct rsr_graft *g, const char *slot, int dirfd, json_t *st)
{
	const struct slot_undo *u = undo_find(g, slot);
	json_t *e = state_find(json_object_get(st, "slots"), "slot", slot);
	const char *grafted = NULL;
	char cur[256];
	int dfd, r;
	DIR *d;

	r = slot_current_buf(dirfd, cur, sizeof(cur));
	if (r < 0)
		return; /* keep everything rather than guess */
	if (r == 0)
		cur[0] = '\0';
	if (e) {
		const char *img = jstr(e, "image"), *b = strrchr(img, '/');
		grafted = b ? b + 1 : img;
	}
	dfd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return;
	d = fdopendir(dfd);
	if (!d) {
		close(dfd);
		return;
	}
	struct dirent *de;
	while ((de = readdir(d))) {
		size_t l = strlen(de->d_name);
		if (de->d_name[0] == '.' || l < 6 || strcmp(de->d_name + l - 5, ".cptx") || !strcmp(de->d_name, cur) ||
		    (grafted && !strcmp(de->d_name, grafted)) || (u && u->prev && !strcmp(de->d_name, u->prev)))
			continue;
		if (unlinkat(dirfd, de->d_name, 0) == 0)
			rsr_debug(ctx, "removed superseded image %s/%s", slot, de->d_name);
	}
	closedir(d);
}

/* Points the slot's `current` at `name` (NULL: no current image), durably. */
static int slot_set_current(struct rsr_ctx *ctx, struct rsr_graft *g, const char *slot, int dirfd, const char *name)
{
	if (name) {
		unlinkat(dirfd, ".current.tmp", 0);
		if (symlinkat(name, dirfd, ".current.tmp") < 0 ||
		    renameat(dirfd, ".current.tmp", dirfd, "current") < 0) {
			int r = -errno;
			unlinkat(dirfd, ".current.tmp", 0);
			return rsr_error_errno(ctx, r, "%s%s/%s/current: cannot switch", g->prefix,
					       RSR_GRAFT_IMAGES_DIR, slot);
		}
	} else if (unlinkat(dirfd, "current", 0) < 0 && errno != ENOENT) {
		return rsr_error_errno(ctx, -errno, "%s%s/%s/current", g->prefix, RSR_GRAFT_IMAGES_DIR, slot);
	}
	if (fsync(dirfd) < 0)
		return rsr_error_errno(ctx, -errno, "%s%s/%s", g->prefix, RSR_GRAFT_IMAGES_DIR, slot);
	return 0;
}

/* Prunes every slot changed since the last commit, then forgets the changes. */
static void undo_commit(struct rsr_ctx *ctx, struct rsr_graft *g, json_t *st)
{
	struct slot_undo *undo = g->undo;
	size_t n = g->n_undo;

	g->undo = NULL;
	g->n_undo = 0;
	for (size_t i = 0; i < n; i++) {
		_cleanup_close_ int dirfd = -1;
		if (slot_dir_open(ctx, g, undo[i].slot, false, &dirfd) == 0)
			slot_prune(ctx, g, undo[i].slot, dirfd, st);
		else
			rsr_ctx_clear_error(ctx);
		free(undo[i].slot);
		free(undo[i].prev);
	}
	free(undo);
}

int rsr_graft_commit(struct rsr_ctx *ctx, struct rsr_graft *g)
{
	json_t *st = NULL;
	int r;

	if (g->n_undo == 0)
		return 0;
	r = state_load(ctx, g, &st);
	if (r < 0)
		return r;
	undo_commit(ctx, g, st);
	json_decref(st);
	return 0;
}

int rsr_graft_revert(struct rsr_ctx *ctx, struct rsr_graft *g)
{
	json_t *st = NULL;
	int r = 0;

	if (g->n_undo == 0)
		return 0;
	/* Newest change first; each slot was noted once, with its first `current`. */
	for (size_t i = g->n_undo; i-- > 0;) {
		_cleanup_close_ int dirfd = -1;
		int q = slot_dir_open(ctx, g, g->undo[i].slot, g->undo[i].prev != NULL, &dirfd);
		if (q == -ENOENT)
			continue; /* no directory, so no current: as it was */
		if (q >= 0)
			q = slot_set_current(ctx, g, g->undo[i].slot, dirfd, g->undo[i].prev);
		if (q < 0 && r == 0)
			r = q; /* the first failure is the one reported */
		else if (q >= 0)
			rsr_info(ctx, "slot '%s': current image restored", g->undo[i].slot);
	}
	if (r < 0)
		return r; /* keep the journal: nothing is pruned that a retry may need */
	r = state_load(ctx, g, &st);
	if (r < 0)
		return r;
	undo_commit(ctx, g, st);
	json_decref(st);
	return 0;
}

int rsr_graft_install(struct rsr_ctx *ctx, struct rsr_graft *g, const char *path, char **ret_slot)
{
	_cleanup_close_ int fd = -1, dirfd = -1, src = -1;
	_cleanup_free_ char *stage = NULL, *name = NULL;
	struct rsr_cryptex *cx = NULL;
	struct rsr_atomic_file *af = NULL;
	struct base_id base = {0};
	json_t *st = NULL;
	struct stat sb;
	const char *slot;
	int r;

	r = graft_lock(ctx, g);
	if (r < 0)
		return r;
	r = state_load(ctx, g, &st);
	if (r < 0)
		return r;
	state_reconcile(g, st);
	r = base_identity(ctx, g, st, &base);
	if (r < 0)
		goto out;
	/*
	 * Copy first, into the store that only root can change, then verify the
	 * copy: what is verified is what is kept, whoever can still write the
	 * source. The copy waits beside the lock until it is known good.
	 */
	src = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY); /* a FIFO does not block it */
	if (src < 0 || fstat(src, &sb) < 0) {
		r = rsr_error_errno(ctx, -errno, "%s", path);
		goto out;
	}
	if (!S_ISREG(sb.st_mode)) {
		r = rsr_error(ctx, RSR_E_FORMAT, "%s: not a regular file", path);
		goto out;
	}
	if (asprintf(&stage, "%s%s/incoming.cptx", g->prefix, GRAFT_STATE_DIR) < 0) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	r = rsr_atomic_open(ctx, stage, 0644, &af);
	if (r < 0)
		goto out;
	r = rsr_copy_range(src, 0, af->fd, 0, (uint64_t)sb.st_size);
	if (r < 0) {
		r = rsr_error_errno(ctx, r, "%s: cannot copy to %s", path, stage);
		goto abort;
	}
	r = check_image(ctx, g, path, af->fd, &base, NULL, &fd, &cx);
	if (r < 0)
		goto abort;
	slot = rsr_cryptex_name(cx);
	r = slot_dir_open(ctx, g, slot, true, &dirfd);
	if (r < 0)
		goto abort;
	if (asprintf(&name, "%s.cptx", rsr_cryptex_root_hash_hex(cx)) < 0) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto abort;
	}
	r = rsr_atomic_commit_to(ctx, af, dirfd, name);
	af = NULL;
	if (r < 0)
		goto out;
	/* One rename switches the slot; the image it replaces stays until the change is committed. */
	r = undo_note(ctx, g, slot, dirfd);
	if (r < 0)
		goto out;
	r = slot_set_current(ctx, g, slot, dirfd, name);
	if (r < 0)
		goto out;
	/* Keep the new current image, the grafted one and the replaced one; nothing else. */
	slot_prune(ctx, g, slot, dirfd, st);
	rsr_info(ctx, "installed %s %s in slot '%s'", slot, rsr_cryptex_version(cx), slot);
	if (ret_slot && !(*ret_slot = strdup(slot)))
		r = rsr_error(ctx, -ENOMEM, "out of memory");
	else
		r = 0;
	goto out;
abort:
	rsr_atomic_abort(af);
out:
	rsr_cryptex_free(cx);
	base_id_free(&base);
	json_decref(st);
	return r;
}

int rsr_graft_uninstall(struct rsr_ctx *ctx, struct rsr_graft *g, const char *slot)
{
	_cleanup_close_ int dirfd = -1;
	int r;

	if (!graft_slot_name_valid(slot))
		return rsr_error(ctx, -EINVAL, "'%s' is not a valid slot name", slot);
	r = graft_lock(ctx, g);
	if (r < 0)
		return r;
	r = slot_dir_open(ctx, g, slot, false, &dirfd);
	if (r >= 0) {
		r = undo_note(ctx, g, slot, dirfd);
		if (r < 0)
			return r;
	}
	if (r == -ENOENT || (r >= 0 && unlinkat(dirfd, "current", 0) < 0 && errno == ENOENT))
		return rsr_error(ctx, -ENOENT, "slot '%s' has no current image in %s%s", slot, g->prefix,
				 RSR_GRAFT_IMAGES_DIR);
	if (r < 0)
		return r;
	if (fsync(dirfd) < 0)
		return rsr_error_errno(ctx, -errno, "slot '%s'", slot);
	return 0;
}

/* ---- activation ---- */

struct plan {
	char *slot;
	char *image; /* absolute */
	char *mount; /* absolute */
	struct rsr_cryptex *cx;
	int fd;
	json_t *old;  /* live state entry of the slot, borrowed */
	bool reuse;   /* the grafted image is the current one: keep its mount */
	bool mounted; /* mounted by this call */
	struct image_mount im;
	char **covers;
	size_t n_covers;
	char *version, *root_hash;
};

static void plan_free(struct plan *p, size_t n)
{
	for (size_t i = 0; p && i < n; i++) {
		free(p[i].slot);
		free(p[i].image);
		free(p[i].mount);
		rsr_cryptex_free(p[i].cx);
		if (p[i].fd >= 0)
			close(p[i].fd);
		strv_free(p[i].covers, p[i].n_covers);
		free(p[i].version);
		free(p[i].root_hash);
	}
	free(p);
}

static int cmp_plan(const void *a, const void *b)
{
	return strcmp(((const struct plan *)a)->slot, ((const struct plan *)b)->slot);
}

/* The installed slots and their current images, sorted by slot name. */
static int list_installed(struct rsr_ctx *ctx, struct rsr_graft *g, struct plan **ret, size_t *ret_n)
{
	_cleanup_free_ char *dir = graft_path(g, RSR_GRAFT_IMAGES_DIR);
	struct plan *v = NULL;
	size_t n = 0;
	struct dirent *de;
	DIR *d;
	int r = 0;

	if (!dir)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	d = opendir(dir);
	if (!d) {
		if (errno != ENOENT)
			return rsr_error_errno(ctx, -errno, "%s", dir);
		*ret = NULL;
		*ret_n = 0;
		return 0;
	}
	while ((de = readdir(d))) {
		_cleanup_close_ int sfd = -1;
		_cleanup_free_ char *cur = NULL;
		if (!graft_slot_name_valid(de->d_name))
			continue;
		sfd = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
		if (sfd < 0 || !(cur = slot_current(sfd)))
			continue;
		struct plan *nv = realloc(v, (n + 1) * sizeof(*v));
		if (!nv) {
			r = -ENOMEM;
			break;
		}
		v = nv;
		memset(&v[n], 0, sizeof(v[n]));
		v[n].fd = -1;
		v[n].slot = strdup(de->d_name);
		if (asprintf(&v[n].image, "%s/%s/%s", dir, de->d_name, cur) < 0)
			v[n].image = NULL;
		n++;
		if (!v[n - 1].slot || !v[n - 1].image) {
			r = -ENOMEM;
			break;
		}
	}
	closedir(d);
	if (r < 0) {
		plan_free(v, n);
		return rsr_error(ctx, r, "out of memory");
	}
	if (n)
		qsort(v, n, sizeof(*v), cmp_plan);
	*ret = v;
	*ret_n = n;
	return 0;
}

static int plan_copy_meta(struct plan *p)
{
	p->n_covers = rsr_cryptex_path_count(p->cx);
	p->covers = calloc(p->n_covers + 1, sizeof(char *));
	p->version = strdup(rsr_cryptex_version(p->cx));
	p->root_hash = strdup(rsr_cryptex_root_hash_hex(p->cx));
	if (!p->covers || !p->version || !p->root_hash)
		return -ENOMEM;
	for (size_t i = 0; i < p->n_covers; i++)
		if (!(p->covers[i] = strdup(rsr_cryptex_covered_path(p->cx, i))))
			return -ENOMEM;
	return 0;
}

static bool plan_covers(const struct plan *p, const char *dir)
{
	for (size_t i = 0; i < p->n_covers; i++)
		if (!strcmp(p->covers[i], dir))
			return true;
	return false;
}

/* The layer list of `dir`: images of later slots above earlier ones, the base last. NULL on ENOMEM. */
static json_t *layers_for(const struct rsr_graft *g, const struct plan *p, size_t n, const char *dir)
{
	json_t *a = json_array();
	char *s;
	int r;

	if (!a)
		return NULL;

	for (size_t i = n; i-- > 0;) {
		if (!plan_covers(&p[i], dir))
			continue;
		if (asprintf(&s, "%s/%s", p[i].mount, dir) < 0)
			goto oom;
		r = json_array_append_new(a, json_string(s));
		free(s);
		if (r < 0)
			goto oom;
	}
	if (json_array_size(a) == 0)
		return a; /* nothing covers it */
	if (asprintf(&s, "%s%s/base/%s", g->prefix, RSR_GRAFT_RUN_DIR, dir) < 0)
		goto oom;
	r = json_array_append_new(a, json_string(s));
	free(s);
	if (r < 0)
		goto oom;
	return a;
oom:
	json_decref(a);
	return NULL;
}

static int strv_add_unique(char ***v, size_t *n, const char *s)
{
	for (size_t i = 0; i < *n; i++)
		if (!strcmp((*v)[i], s))
			return 0;
	char **nv = realloc(*v, (*n + 1) * sizeof(char *));
	if (!nv)
		return -ENOMEM;
	*v = nv;
	if (!(nv[*n] = strdup(s)))
		return -ENOMEM;
	(*n)++;
	return 0;
}

/* Detaches every mount stacked on a directory (leftovers) so it can be used afresh. */
static void detach_all(const char *path)
{
	for (int i = 0; i < 64 && graft_is_mount_point(path); i++)
		if (umount2(path, UMOUNT_NOFOLLOW) < 0 && umount2(path, MNT_DETACH | UMOUNT_NOFOLLOW) < 0)
			break;
}

/* How a directory's overlay went up: the layer option, and whether it covers an older graft. */
struct dir_mount {
	bool plus;
	bool stacked;
};

/*
 * Gives `dir` the overlay of `layers` (or the bare base if there are none),
 * replacing the rsr overlay on it if there is one. *ret_old_dev gets the
 * device of the overlay that went (0 if none), *ret_new_dev the new one.
 */
static int switch_dir(struct rsr_ctx *ctx, const struct rsr_graft *g, const char *dir, json_t *layers,
		      dev_t *ret_old_dev, dev_t *ret_new_dev, struct dir_mount *ret_how)
{
	_cleanup_free_ char *target = graft_path(g, dir), *base = NULL, *base_rel = NULL;
	_cleanup_close_ int mfd = -1;
	const char **lv = NULL;
	dev_t old = 0;
	bool grafted, stacked;
	struct stat st;
	int r;

	if (!target || asprintf(&base_rel, "%s/base/%s", RSR_GRAFT_RUN_DIR, dir) < 0 ||
	    !(base = graft_path(g, base_rel)))
		return rsr_error(ctx, -ENOMEM, "out of memory");
	grafted = top_is_graft(target, &old);
	*ret_old_dev = grafted ? old : 0;
	*ret_new_dev = 0;
	if (json_array_size(layers) == 0) {
		/* Back to the base: unmounting the overlay uncovers the base in one step. */
		for (int i = 0; i < 64 && top_is_graft(target, NULL); i++)
			if ((r = graft_detach(ctx, target)) < 0)
				return r;
		detach_all(base);
		rmdir(base);
		return 0;
	}
	if (!grafted) {
		/* Hold on to the base before anything covers it. */
		r = mkdir_rel(ctx, g, base_rel, 0755);
		if (r < 0)
			return r;
		detach_all(base);
		r = graft_bind_private(ctx, target, base);
		if (r < 0)
			return r;
	} else if (!graft_is_mount_point(base)) {
		return rsr_error(ctx, RSR_E_STATE,
				 "%s is grafted but its base bind %s is gone; run 'rsr ungraft' first", target, base);
	}
	lv = calloc(json_array_size(layers), sizeof(*lv));
	if (!lv)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	for (size_t i = 0; i < json_array_size(layers); i++)
		lv[i] = json_string_value(json_array_get(layers, i));
	r = graft_make_overlay(ctx, lv, json_array_size(layers), &mfd, &ret_how->plus);
	free(lv);
	if (r < 0)
		goto undo_base;
	if (fstat(mfd, &st) < 0) {
		r = rsr_error_errno(ctx, -errno, "overlay for %s", target);
		goto undo_base;
	}
	r = graft_attach(ctx, mfd, target, grafted, &stacked);
	if (r < 0)
		goto undo_base;
	ret_how->stacked = stacked;
	if (stacked)
		rsr_warn(ctx, "%s: the kernel cannot mount beneath; the new graft covers the old one until ungraft",
			 target);
	*ret_new_dev = st.st_dev;
	return 0;
undo_base:
	if (!grafted) {
		detach_all(base);
		rmdir(base);
	}
	return r;
}

/* The state entry of a grafted slot; NULL on ENOMEM. */
static json_t *slot_entry(const struct plan *p)
{
	char d[32];
	json_t *covers = json_array();

	for (size_t i = 0; covers && i < p->n_covers; i++)
		if (json_array_append_new(covers, json_string(p->covers[i])) < 0) {
			json_decref(covers);
			return NULL;
		}
	graft_format_dev(p->im.dev, d);
	/* "o" takes covers, on failure too (jansson >= 2.11); a NULL covers fails the pack. */
	return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:b, s:b, s:o}", "slot", p->slot, "version", p->version,
			 "root_hash", p->root_hash, "image", p->image, "mount", p->mount, "device", p->im.device, "dev",
			 d, "verity", p->im.verity, "direct_io", p->im.direct_io, "covers", covers);
}

/*
 * After a failed switch: puts back the directories already switched (their
 * old images are still mounted), keeps the state in step, and keeps the
 * original failure message.
 */
static void rollback_dirs(struct rsr_ctx *ctx, const struct rsr_graft *g, json_t *st, char **dirs, const bool *changed,
			  json_t **old_layers, size_t n_done, int r)
{
	char msg[RSR_ERRMSG_MAX];

	snprintf(msg, sizeof(msg), "%s", rsr_ctx_error(ctx));
	for (size_t k = 0; k < n_done; k++) {
		_cleanup_free_ char *t = graft_path(g, dirs[k]);
		json_t *pe = state_find(json_object_get(st, "paths"), "path", dirs[k]);
		dev_t went = 0, back = 0;
		struct dir_mount how = {0};
		bool recorded = true;
		char d[32];
		if (!changed[k])
			continue;
		if (!old_layers[k] || switch_dir(ctx, g, dirs[k], old_layers[k], &went, &back, &how) < 0) {
			rsr_warn(ctx, "%s%s: could not restore the previous graft", g->prefix, dirs[k]);
			continue;
		}
		/* Files opened through the short-lived new stack belong to images that are going. */
		if (went)
			recorded =
			    state_retire(ctx, st, went, "a graft rolled back after a failure", t ? t : "", true) >= 0;
		graft_format_dev(back, d);
		if (pe && back && json_object_set_new(pe, "dev", json_string(d)) < 0)
			recorded = false;
		/* Stacked again: the previous graft now covers the failed one, which covers the original. */
		if (pe && how.stacked &&
		    json_object_set_new(pe, "stacked",
					json_integer(json_integer_value(json_object_get(pe, "stacked")) + 2)) < 0)
			recorded = false;
		/* Best effort: the next run drops state entries that do not match the mounts. */
		if (!recorded)
			rsr_warn(ctx, "%s%s: out of memory recording the rollback in %s%s", g->prefix, dirs[k],
				 g->prefix, RSR_GRAFT_STATE_FILE);
	}
	if (n_done > 0)
		(void)state_save(ctx, g, st);
	rsr_error(ctx, r, "%s", msg);
}

int rsr_graft_activate(struct rsr_ctx *ctx, struct rsr_graft *g)
{
	struct plan *p = NULL;
	size_t n = 0, n_dirs = 0, n_done = 0;
	char **dirs = NULL;
	json_t *st = NULL, *next = NULL, *new_paths = NULL, *new_slots = NULL, **old_layers = NULL, **new_layers = NULL;
	struct base_id base = {0};
	bool *changed = NULL;
	struct dir_mount *how = NULL;
	int r, count = 0;

	r = graft_lock(ctx, g);
	if (r < 0)
		return r;
	r = state_load(ctx, g, &st);
	if (r < 0)
		return r;
	state_reconcile(g, st);
	r = base_identity(ctx, g, st, &base);
	if (r < 0)
		goto out;
	r = list_installed(ctx, g, &p, &n);
	if (r < 0)
		goto out;

	/* 1. Check every new image before anything changes. */
	for (size_t i = 0; i < n; i++) {
		json_t *old = state_find(json_object_get(st, "slots"), "slot", p[i].slot);
		/*
		 * The signature is checked before the manifest is parsed, for every image.
		 * The blocks of an image grafted already were verified when it was; only
		 * a new one is checked in full again.
		 */
		r = open_signed(ctx, g, p[i].image, p[i].image, &p[i].cx);
		if (r < 0) {
			r = rsr_error_prefix(ctx, r, "slot '%s'", p[i].slot);
			goto out;
		}
		if (!old || strcmp(jstr(old, "root_hash"), rsr_cryptex_root_hash_hex(p[i].cx))) {
			rsr_cryptex_free(p[i].cx);
			p[i].cx = NULL;
			r = check_image(ctx, g, p[i].image, -1, &base, p[i].slot, &p[i].fd, &p[i].cx);
			if (r < 0)
				goto out;
		}
		if (plan_copy_meta(&p[i]) < 0) {
			r = rsr_error(ctx, -ENOMEM, "out of memory");
			goto out;
		}
		if (old && !strcmp(jstr(old, "root_hash"), p[i].root_hash)) {
			p[i].old = old;
			p[i].reuse = true;
			p[i].mount = strdup(jstr(old, "mount"));
			snprintf(p[i].im.device, sizeof(p[i].im.device), "%s", jstr(old, "device"));
			graft_parse_dev(jstr(old, "dev"), &p[i].im.dev);
			p[i].im.verity = json_is_true(json_object_get(old, "verity"));
			p[i].im.direct_io = json_is_true(json_object_get(old, "direct_io"));
		} else if (asprintf(&p[i].mount, "%s%s/images/%s-%.16s", g->prefix, RSR_GRAFT_RUN_DIR, p[i].slot,
				    p[i].root_hash) < 0) {
			p[i].mount = NULL;
		}
		if (!p[i].mount) {
			r = rsr_error(ctx, -ENOMEM, "out of memory");
			goto out;
		}
	}

	/* 2. The directories involved: covered now, or grafted before. */
	r = grafted_dirs(ctx, g, &dirs, &n_dirs);
	if (r < 0)
		goto out;
	for (size_t i = 0; i < n && r >= 0; i++)
		for (size_t j = 0; j < p[i].n_covers && r >= 0; j++)
			r = strv_add_unique(&dirs, &n_dirs, p[i].covers[j]);
	if (r < 0) {
		r = rsr_error(ctx, r, "out of memory");
		goto out;
	}
	old_layers = calloc(n_dirs + 1, sizeof(json_t *));
	new_layers = calloc(n_dirs + 1, sizeof(json_t *));
	changed = calloc(n_dirs + 1, sizeof(bool));
	how = calloc(n_dirs + 1, sizeof(*how));
	if (!old_layers || !new_layers || !changed || !how) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	for (size_t k = 0; k < n_dirs; k++) {
		json_t *e = state_find(json_object_get(st, "paths"), "path", dirs[k]);
		_cleanup_free_ char *t = graft_path(g, dirs[k]);
		new_layers[k] = layers_for(g, p, n, dirs[k]);
		if (!new_layers[k] || !t) {
			r = rsr_error(ctx, -ENOMEM, "out of memory");
			goto out;
		}
		old_layers[k] = e ? json_incref(json_object_get(e, "layers")) : NULL;
		if (!old_layers[k] && !top_is_graft(t, NULL) && !(old_layers[k] = json_array() /* bare base */)) {
			r = rsr_error(ctx, -ENOMEM, "out of memory");
			goto out;
		}
		changed[k] = !old_layers[k] || !json_equal(old_layers[k], new_layers[k]);
	}

	/* 3. Mount the new images. */
	for (size_t i = 0; i < n; i++) {
		_cleanup_free_ char *rel = NULL;
		bool used = false;
		if (p[i].reuse)
			continue;
		for (size_t k = 0; k < n_dirs; k++)
			used |= changed[k] && plan_covers(&p[i], dirs[k]);
		if (!used)
			continue;
		if (asprintf(&rel, "%s/images/%s-%.16s", RSR_GRAFT_RUN_DIR, p[i].slot, p[i].root_hash) < 0) {
			r = rsr_error(ctx, -ENOMEM, "out of memory");
			goto undo;
		}
		r = mkdir_rel(ctx, g, rel, 0755);
		if (r < 0)
			goto undo;
		detach_all(p[i].mount);
		r = graft_mount_image(ctx, p[i].cx, p[i].fd, p[i].mount, &p[i].im);
		if (r < 0) {
			r = rsr_error_prefix(ctx, r, "slot '%s'", p[i].slot);
			goto undo;
		}
		p[i].mounted = true;
		rsr_debug(ctx, "slot '%s': %s on %s%s%s", p[i].slot, p[i].im.device, p[i].mount,
			  p[i].im.verity ? " (dm-verity)" : "", p[i].im.direct_io ? " (direct I/O)" : "");
		/* Its device nodes and privileged files, on its own mount, before it is grafted anywhere. */
		_cleanup_close_ int mfd = open(p[i].mount, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		r = mfd < 0 ? rsr_error_errno(ctx, -errno, "%s", p[i].mount)
			    : rsr_cryptex_check_tree(ctx, p[i].cx, mfd, p[i].image);
		if (r < 0) {
			r = rsr_error_prefix(ctx, r, "slot '%s'", p[i].slot);
			goto undo;
		}
	}

	/* 4. Switch each directory: the new stack beneath the old one, then the old one goes. */
	if (!json_is_object(json_object_get(st, "base")) && json_object_set_new(st, "base", base_json(&base)) < 0) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto undo;
	}
	for (size_t k = 0; k < n_dirs; k++) {
		dev_t old_dev = 0, new_dev = 0;
		if (!changed[k])
			continue;
		r = switch_dir(ctx, g, dirs[k], new_layers[k], &old_dev, &new_dev, &how[k]);
		if (r < 0)
			goto rollback;
		n_done = k + 1;
		count++;
		if (old_dev) {
			_cleanup_free_ char *t = graft_path(g, dirs[k]),
					    *what = describe_graft(st, dirs[k], "swapped out");
			if (!t || !what)
				goto oom_rollback;
			r = state_retire(ctx, st, old_dev, what, t, true);
			if (r < 0)
				goto rollback;
		}
		rsr_info(ctx, "%s%s: %s", g->prefix, dirs[k],
			 json_array_size(new_layers[k]) ? (old_dev ? "graft swapped" : "grafted") : "back to base");
	}

	/*
	 * 5. The new state, saved before the old images go: until then any failure,
	 * saving included, rolls back. Every new mount is in place, so retired
	 * device numbers they reuse can be forgotten now; the old images are
	 * still mounted, so those retired below are kept.
	 */
	state_prune_retired(st);
	new_slots = json_array();
	new_paths = json_array();
	if (!new_slots || !new_paths)
		goto oom_rollback;
	for (size_t i = 0; i < n; i++) {
		bool used = false;
		for (size_t k = 0; k < n_dirs; k++)
			used |= plan_covers(&p[i], dirs[k]) && json_array_size(new_layers[k]) > 0;
		if (used && (p[i].reuse || p[i].mounted) && json_array_append_new(new_slots, slot_entry(&p[i])) < 0)
			goto oom_rollback;
	}
	for (size_t k = 0; k < n_dirs; k++) {
		char d[32];
		_cleanup_free_ char *t = graft_path(g, dirs[k]);
		dev_t dev;
		if (!t)
			goto oom_rollback;
		if (json_array_size(new_layers[k]) == 0 || !top_is_graft(t, &dev))
			continue;
		graft_format_dev(dev, d);
		/*
		 * How the overlay went up; an unchanged directory keeps what it had.
		 * "stacked" counts the older grafts a kernel without mount-beneath
		 * left covered under this one (they go at ungraft).
		 */
		json_t *pe = state_find(json_object_get(st, "paths"), "path", dirs[k]);
		const char *opt = how[k].plus ? "lowerdir+" : "lowerdir";
		json_int_t stacked = 0;
		if (!changed[k] && pe) {
			opt = json_is_string(json_object_get(pe, "layers_option")) ? jstr(pe, "layers_option") : NULL;
			stacked = json_integer_value(json_object_get(pe, "stacked"));
		} else if (how[k].stacked) {
			stacked = (pe ? json_integer_value(json_object_get(pe, "stacked")) : 0) + 1;
		}
		json_t *ne = json_pack("{s:s, s:s, s:O, s:I}", "path", dirs[k], "dev", d, "layers", new_layers[k],
				       "stacked", stacked);
		if (!ne || (opt && json_object_set_new(ne, "layers_option", json_string(opt)) < 0) ||
		    json_array_append_new(new_paths, ne) < 0)
			goto oom_rollback;
	}
	json_t *e;
	size_t idx;
	json_array_foreach(json_object_get(st, "slots"), idx, e)
	{
		_cleanup_free_ char *what = NULL;
		dev_t d;
		if (state_find(new_slots, "mount", jstr(e, "mount")) || !graft_parse_dev(jstr(e, "dev"), &d))
			continue;
		if (asprintf(&what, "image %s %s (swapped out)", jstr(e, "slot"), jstr(e, "version")) < 0) {
			what = NULL;
			goto oom_rollback;
		}
		r = state_retire(ctx, st, d, what, jstr(e, "mount"), false);
		if (r < 0)
			goto rollback;
	}
	/* A shallow copy: st keeps describing the old mounts for a rollback. */
	next = json_copy(st);
	if (!next || json_object_set(next, "slots", new_slots) < 0 || json_object_set(next, "paths", new_paths) < 0)
		goto oom_rollback;
	if (json_array_size(new_paths) == 0)
		(void)json_object_del(next, "base"); /* fails only if there is none */
	r = state_save(ctx, g, next);
	if (r < 0)
		goto rollback;

	/* 6. Old images that nothing uses any more go (lazily; overlays hold them while they live). */
	json_array_foreach(json_object_get(st, "slots"), idx, e)
	{
		if (state_find(new_slots, "mount", jstr(e, "mount")))
			continue;
		detach_all(jstr(e, "mount"));
		rmdir(jstr(e, "mount"));
	}
	r = count;
	goto out;

oom_rollback:
	r = rsr_error(ctx, -ENOMEM, "out of memory");
rollback:
	rollback_dirs(ctx, g, st, dirs, changed, old_layers, n_done, r);
undo:
	for (size_t i = 0; i < n; i++)
		if (p[i].mounted) {
			detach_all(p[i].mount);
			rmdir(p[i].mount);
		}
out:
	/* Grafted: the slots' replaced images may go (those not grafted any more). */
	if (r >= 0 && (next || st))
		undo_commit(ctx, g, next ? next : st);
	for (size_t k = 0; old_layers && k < n_dirs; k++)
		json_decref(old_layers[k]);
	for (size_t k = 0; new_layers && k < n_dirs; k++)
		json_decref(new_layers[k]);
	free(old_layers);
	free(new_layers);
	free(changed);
	free(how);
	json_decref(new_slots);
	json_decref(new_paths);
	json_decref(next);
	strv_free(dirs, n_dirs);
	plan_free(p, n);
	base_id_free(&base);
	json_decref(st);
	return r;
}

/*
 * Lazily detaches every mount under run/rsr/<sub>/, retiring their devices
 * (when `what` says what they are).
 */
static int detach_under(struct rsr_ctx *ctx, const struct rsr_graft *g, json_t *st, const char *sub, const char *what)
{
	_cleanup_free_ char *dir = NULL;
	struct dirent *de;
	DIR *d;
	int r = 0;

	if (asprintf(&dir, "%s%s/%s", g->prefix, RSR_GRAFT_RUN_DIR, sub) < 0) {
		dir = NULL;
		return rsr_error(ctx, -ENOMEM, "out of memory");
	}
	if (!(d = opendir(dir)))
		return 0;
	while (r >= 0 && (de = readdir(d))) {
		_cleanup_free_ char *p = NULL;
		struct stat sb;
		if (de->d_name[0] == '.')
			continue;
		if (asprintf(&p, "%s/%s", dir, de->d_name) < 0) {
			p = NULL;
			r = rsr_error(ctx, -ENOMEM, "out of memory");
			break;
		}
		if (what && graft_is_mount_point(p) && stat(p, &sb) == 0)
			r = state_retire(ctx, st, sb.st_dev, what, p, false);
		detach_all(p);
		rmdir(p);
	}
	closedir(d);
	return r;
}

int rsr_graft_deactivate(struct rsr_ctx *ctx, struct rsr_graft *g)
{
	char **dirs = NULL;
	size_t n_dirs = 0;
	json_t *st = NULL, *e;
	size_t idx;
	int r, count = 0;

	r = graft_lock(ctx, g);
	if (r < 0)
		return r;
	r = state_load(ctx, g, &st);
	if (r < 0)
		return r;
	state_reconcile(g, st);
	r = grafted_dirs(ctx, g, &dirs, &n_dirs);
	if (r < 0)
		goto out;
	for (size_t k = 0; k < n_dirs; k++) {
		_cleanup_free_ char *t = graft_path(g, dirs[k]), *what = NULL;
		dev_t dev;
		if (!t) {
			r = rsr_error(ctx, -ENOMEM, "out of memory");
			goto out;
		}
		what = describe_graft(st, dirs[k], "ungrafted");
		if (!what) {
			r = rsr_error(ctx, -ENOMEM, "out of memory");
			goto out;
		}
		for (int i = 0; i < 64 && top_is_graft(t, &dev); i++) {
			r = graft_detach(ctx, t);
			if (r < 0)
				goto out;
			r = state_retire(ctx, st, dev, what, t, true);
			if (r < 0)
				goto out;
		}
		count++;
		rsr_info(ctx, "%s: back to base", t);
	}
	json_array_foreach(json_object_get(st, "slots"), idx, e)
	{
		_cleanup_free_ char *what = NULL;
		dev_t d;
		if (graft_parse_dev(jstr(e, "dev"), &d)) {
			if (asprintf(&what, "image %s %s (ungrafted)", jstr(e, "slot"), jstr(e, "version")) < 0) {
				what = NULL;
				r = rsr_error(ctx, -ENOMEM, "out of memory");
				goto out;
			}
			r = state_retire(ctx, st, d, what, jstr(e, "mount"), false);
			if (r < 0)
				goto out;
		}
		detach_all(jstr(e, "mount"));
		rmdir(jstr(e, "mount"));
	}
	/* Leftovers of interrupted runs too. */
	r = detach_under(ctx, g, st, "images", "image (ungrafted)");
	if (r < 0)
		goto out;
	r = detach_under(ctx, g, st, "base", NULL);
	if (r < 0)
		goto out;
	if (json_object_set_new(st, "slots", json_array()) < 0 || json_object_set_new(st, "paths", json_array()) < 0) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	(void)json_object_del(st, "base"); /* fails only if there is none */
	state_prune_retired(st);
	r = state_save(ctx, g, st);
	if (r >= 0)
		r = count;
out:
	strv_free(dirs, n_dirs);
	json_decref(st);
	return r;
}

/* ---- status ---- */

static char *dup_or_null(const char *s)
{
	return s && *s ? strdup(s) : NULL;
}

/* dup_or_null() into *dst; false when out of memory. */
static bool dup_field(char **dst, const char *s)
{
	*dst = dup_or_null(s);
	return *dst || !s || !*s;
}

int rsr_graft_status(struct rsr_ctx *ctx, struct rsr_graft *g, struct rsr_graft_report **ret_report)
{
	struct rsr_graft_report *rep = calloc(1, sizeof(*rep));
	struct plan *p = NULL;
	size_t n = 0;
	json_t *st = NULL, *slots, *e;
	struct base_id base = {0};
	size_t idx;
	int r;

	if (!rep)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	r = state_load(ctx, g, &st);
	if (r < 0)
		goto fail;
	state_reconcile(g, st);
	r = base_identity(ctx, g, st, &base);
	if (r < 0)
		goto fail;
	rep->root = strdup(g->root);
	rep->base_name = TAKE_PTR(base.name);
	rep->base_version = TAKE_PTR(base.version);
	rep->base_build = TAKE_PTR(base.build);
	rep->verity_available = graft_verity_available();
	r = list_installed(ctx, g, &p, &n);
	if (r < 0)
		goto fail;
	slots = json_object_get(st, "slots");
	/* One entry per slot: what is grafted if anything is, else what is installed. */
	rep->slots = calloc(n + json_array_size(slots) + 1, sizeof(*rep->slots));
	if (!rep->slots || !rep->root) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto fail;
	}
	for (size_t i = 0; i < n; i++) {
		struct rsr_graft_slot_info *s = &rep->slots[rep->n_slots];
		struct rsr_cryptex *cx = NULL;
		json_t *g_e = state_find(slots, "slot", p[i].slot);
		bool ok;
		s->slot = strdup(p[i].slot);
		s->image = strdup(p[i].image);
		rep->n_slots++;
		if (!s->slot || !s->image)
			goto oom;
		r = open_signed(ctx, g, p[i].image, p[i].image, &cx);
		if (r == -ENOMEM)
			goto fail; /* not a fault of the image: no report rather than a wrong one */
		if (r < 0) {
			rsr_warn(ctx, "%s", rsr_ctx_error(ctx));
			rsr_ctx_clear_error(ctx);
		} else {
			s->version = strdup(rsr_cryptex_version(cx));
			s->root_hash = strdup(rsr_cryptex_root_hash_hex(cx));
			s->covers = calloc(rsr_cryptex_path_count(cx) + 1, sizeof(char *));
			ok = s->version && s->root_hash && s->covers;
			for (size_t j = 0; ok && j < rsr_cryptex_path_count(cx); j++)
				ok = (s->covers[s->n_covers++] = strdup(rsr_cryptex_covered_path(cx, j))) != NULL;
			s->packages = calloc(rsr_cryptex_package_count(cx) + 1, sizeof(char *));
			ok = ok && s->packages;
			for (size_t j = 0; ok && j < rsr_cryptex_package_count(cx); j++) {
				char *pk = NULL;
				const char *arch = rsr_cryptex_package_architecture(cx, j);
				ok = asprintf(&pk, "%s%s%s %s", rsr_cryptex_package_name(cx, j),
					      arch && *arch ? ":" : "", arch ? arch : "",
					      rsr_cryptex_package_version(cx, j)) >= 0;
				if (ok)
					s->packages[s->n_packages++] = pk;
			}
			rsr_cryptex_free(cx);
			if (!ok)
				goto oom;
		}
		if (g_e) {
			s->grafted = s->root_hash && !strcmp(s->root_hash, jstr(g_e, "root_hash"));
			s->pending = !s->grafted;
			s->verity = json_is_true(json_object_get(g_e, "verity"));
			s->direct_io = json_is_true(json_object_get(g_e, "direct_io"));
			if (!dup_field(&s->mount, jstr(g_e, "mount")) || !dup_field(&s->device, jstr(g_e, "device")) ||
			    !dup_field(&s->grafted_version, jstr(g_e, "version")))
				goto oom;
		} else {
			s->pending = true;
		}
	}
	/* Grafted slots whose installation is gone. */
	json_array_foreach(slots, idx, e)
	{
		bool known = false;
		for (size_t i = 0; i < n; i++)
			known |= !strcmp(p[i].slot, jstr(e, "slot"));
		if (known)
			continue;
		struct rsr_graft_slot_info *s = &rep->slots[rep->n_slots++];
		json_t *c = json_object_get(e, "covers");
		bool ok;
		s->slot = strdup(jstr(e, "slot"));
		s->verity = json_is_true(json_object_get(e, "verity"));
		s->direct_io = json_is_true(json_object_get(e, "direct_io"));
		s->pending = true; /* the next graft removes it */
		s->removed = true;
		s->covers = calloc(json_array_size(c) + 1, sizeof(char *));
		ok = s->slot && s->covers && dup_field(&s->grafted_version, jstr(e, "version")) &&
		     dup_field(&s->root_hash, jstr(e, "root_hash")) && dup_field(&s->image, jstr(e, "image")) &&
		     dup_field(&s->mount, jstr(e, "mount")) && dup_field(&s->device, jstr(e, "device"));
		for (size_t j = 0; ok && j < json_array_size(c); j++) {
			const char *v = json_string_value(json_array_get(c, j));
			ok = (s->covers[s->n_covers++] = strdup(v ? v : "")) != NULL;
		}
		if (!ok)
			goto oom;
	}
	/* dm-verity has checked every block read since the graft: has one failed? */
	for (size_t i = 0; i < rep->n_slots; i++) {
		struct rsr_graft_slot_info *s = &rep->slots[i];
		struct stat sb;
		if (s->verity && s->device && stat(s->device, &sb) == 0 && S_ISBLK(sb.st_mode) &&
		    graft_verity_corrupted(sb.st_rdev, &s->corrupted) < 0)
			s->corrupted = false;
	}
	{
		char **dirs = NULL;
		size_t nd = 0;
		r = grafted_dirs(ctx, g, &dirs, &nd);
		if (r < 0)
			goto fail;
		rep->grafted_paths = dirs;
		rep->n_grafted_paths = nd;
		rep->paths = calloc(nd + 1, sizeof(*rep->paths));
		if (!rep->paths)
			goto oom;
		for (size_t k = 0; k < nd; k++) {
			/* How its overlay went up, as the graft recorded it. */
			json_t *pe = state_find(json_object_get(st, "paths"), "path", dirs[k]);
			struct rsr_graft_path_info *pi = &rep->paths[rep->n_paths++];
			pi->path = graft_path(g, dirs[k]);
			if (!pi->path)
				goto oom;
			if (pe && json_is_string(json_object_get(pe, "layers_option")) &&
			    !(pi->layers_option = strdup(jstr(pe, "layers_option"))))
				goto oom;
			json_int_t stacked = pe ? json_integer_value(json_object_get(pe, "stacked")) : 0;
			pi->stacked = stacked > 0 && stacked < INT_MAX ? (unsigned)stacked : 0;
			char *abs = strdup(pi->path);
			if (!abs)
				goto oom; /* the whole report or none, never a part */
			free(dirs[k]);
			dirs[k] = abs;
		}
	}
	r = graft_scan_processes(ctx, g, st, rep);
	if (r >= 0)
		r = graft_list_held(ctx, g, rep);
	if (r < 0)
		goto fail;
	plan_free(p, n);
	json_decref(st);
	*ret_report = rep;
	return 0;
oom:
	r = rsr_error(ctx, -ENOMEM, "out of memory");
fail:
	plan_free(p, n);
	base_id_free(&base);
	json_decref(st);
	rsr_graft_report_free(rep);
	return r;
}

void rsr_graft_report_free(struct rsr_graft_report *rep)
{
	if (!rep)
		return;
	for (size_t i = 0; i < rep->n_slots; i++) {
		struct rsr_graft_slot_info *s = &rep->slots[i];
		free(s->slot);
		free(s->version);
		free(s->grafted_version);
		free(s->root_hash);
		free(s->image);
		free(s->mount);
		free(s->device);
		strv_free(s->covers, s->n_covers);
		strv_free(s->packages, s->n_packages);
	}
	free(rep->slots);
	strv_free(rep->grafted_paths, rep->n_grafted_paths);
	for (size_t i = 0; i < rep->n_paths; i++) {
		free(rep->paths[i].path);
		free(rep->paths[i].layers_option);
	}
	free(rep->paths);
	for (size_t i = 0; i < rep->n_stale; i++) {
		free(rep->stale[i].comm);
		free(rep->stale[i].unit);
		free(rep->stale[i].file);
		free(rep->stale[i].reason);
	}
	free(rep->stale);
	for (size_t i = 0; i < rep->n_held; i++) {
		free(rep->held[i].device);
		free(rep->held[i].name);
		free(rep->held[i].image);
	}
	free(rep->held);
	for (size_t i = 0; i < rep->n_holders; i++) {
		free(rep->holders[i].comm);
		free(rep->holders[i].unit);
		free(rep->holders[i].file);
		free(rep->holders[i].how);
	}
	free(rep->holders);
	free(rep->root);
	free(rep->base_name);
	free(rep->base_version);
	free(rep->base_build);
	free(rep);
}
