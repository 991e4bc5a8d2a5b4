/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The device side of responses: install, remove and recover, under a lock,
 * with a journal so that after a crash at any point the device ends up on
 * exactly the old or exactly the new response. State layout and the switch
 * protocol are in docs/architecture.md.
 *
 *   var/lib/rsr/cryptexes/<slot>/<root hash>.cptx, current -> <root hash>.cptx
 *   var/lib/rsr/response/state.json     high-water mark, installed response, the one a person removed
 *   var/lib/rsr/response/current/       its manifest and reverse patches
 *   var/lib/rsr/response/base/          kept base images (optional)
 *   var/lib/rsr/response/incoming/      staging of one operation
 *   var/lib/rsr/response/journal.json   present from "staged" to "switched"
 *   var/lib/rsr/lock                    the device lock, shared with graft (lib/common/lock.c)
 */
#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>

#include "response-internal.h"
#include "rsr/cryptex.h"
#include "rsr/graft.h"

#define STATE_DIR "var/lib/rsr/response"
#define RUN_FILE "run/rsr/response"

struct rsr_device {
	char *root;
	int rootfd;
	int statefd;	       /* STATE_DIR, once made */
	struct rsr_lock *lock; /* the device lock (lock.c), once taken */
	struct rsr_keyring *keys;
	char *base_build, *base_name;
	char arch[65];
};

struct state {
	uint64_t high_water, sequence;
	char letter[2];
	bool installed;
	/* The response a person removed last (cleared by the next install): it may be installed again. */
	bool removed;
	char removed_letter[2];
	uint64_t removed_sequence;
	int64_t removed_at; /* seconds since 1970 */
};

/* ---- small file-system helpers, all relative to directory fds ---- */

static int fsync_at(int dirfd, const char *rel)
{
	_cleanup_close_ int fd = openat(dirfd, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0 || fsync(fd) < 0)
		return -errno;
	return 0;
}

static bool exists_at(int dirfd, const char *rel)
{
	struct stat st;
	return fstatat(dirfd, rel, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

static int read_at(struct rsr_ctx *ctx, int dirfd, const char *rel, size_t max, char **ret, size_t *ret_len)
{
	_cleanup_close_ int fd = openat(dirfd, rel, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	_cleanup_free_ char *buf = NULL;
	struct stat st;
	int r;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > max)
		return rsr_error(ctx, RSR_E_LIMIT, "%s: not a regular file of at most %zu bytes", rel, max);
	buf = malloc((size_t)st.st_size + 1);
	if (!buf)
		return -ENOMEM;
	r = rsr_pread_all(fd, buf, (size_t)st.st_size, 0);
	if (r < 0)
		return r;
	buf[st.st_size] = '\0';
	*ret = TAKE_PTR(buf);
	*ret_len = (size_t)st.st_size;
	return 0;
}

/* Writes a file atomically inside dirfd: temp, fsync, rename, fsync dir. */
static int write_at(struct rsr_ctx *ctx, int dirfd, const char *name, const void *buf, size_t len, const char *what)
{
	char tmp[256];
	_cleanup_close_ int fd = -1;
	int r;

	snprintf(tmp, sizeof(tmp), ".%s.tmp", name);
	fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return rsr_error_errno(ctx, -errno, "%s: cannot write", what);
	r = rsr_write_all(fd, buf, len);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (r == 0 && renameat(dirfd, tmp, dirfd, name) < 0)
		r = -errno;
	if (r == 0 && fsync(dirfd) < 0)
		r = -errno;
	if (r < 0) {
		unlinkat(dirfd, tmp, 0);
		return rsr_error_errno(ctx, r, "%s: cannot write", what);
	}
	return 0;
}

/* Copies a file into dirfd/name (fsynced), checking its SHA-256 on the way. */
static int copy_checked(struct rsr_ctx *ctx, const char *src, int dirfd, const char *name, const char *want_sha,
			uint64_t want_size)
{
	_cleanup_close_ int in = open(src, O_RDONLY | O_CLOEXEC), out = -1;
	struct stat st;
	uint8_t d[32];
	char hex[65];
	int r;

	if (in < 0 || fstat(in, &st) < 0)
		return rsr_error_errno(ctx, -errno, "%s", src);
	if ((uint64_t)st.st_size != want_size)
		return rsr_error(ctx, RSR_E_DIGEST, "%s: %lld bytes, the response signed %llu", src,
				 (long long)st.st_size, (unsigned long long)want_size);
	r = rsr_sha256_fd(ctx, in, 0, want_size, src, d);
	if (r < 0)
		return r;
	rsr_hex_encode(d, 32, hex);
	if (strcmp(hex, want_sha))
		return rsr_error(ctx, RSR_E_DIGEST, "%s: digest %.16s…, the response signed %.16s…", src, hex,
				 want_sha);
	out = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (out < 0)
		return rsr_error_errno(ctx, -errno, "%s: cannot stage", name);
	r = rsr_copy_range(in, 0, out, 0, want_size);
	if (r == 0 && fsync(out) < 0)
		r = -errno;
	if (r < 0)
		return rsr_error_errno(ctx, r, "%s: cannot stage", name);
	return 0;
}

/* ---- opening, locking ---- */

static int read_os_release(struct rsr_ctx *ctx, struct rsr_device *dev)
{
	static const char *files[] = {"etc/os-release", "usr/lib/os-release"};

	for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
		struct open_how how = {.flags = O_RDONLY | O_CLOEXEC, .resolve = RESOLVE_IN_ROOT};
		_cleanup_close_ int fd = (int)syscall(SYS_openat2, dev->rootfd, files[i], &how, sizeof(how));
		char buf[16384];
		ssize_t n;
		char *version = NULL;
		int r;

		if (fd < 0)
			continue;
		n = read(fd, buf, sizeof(buf) - 1);
		if (n < 0)
			return rsr_error_errno(ctx, -errno, "%s/%s", dev->root, files[i]);
		r = rsr_graft_parse_os_release(buf, (size_t)n, &dev->base_name, &version, &dev->base_build);
		free(version);
		if (r < 0)
			return rsr_error(ctx, r, "%s/%s: cannot parse", dev->root, files[i]);
		return 0;
	}
	return 0;
}

int rsr_device_open(struct rsr_ctx *ctx, const char *root, struct rsr_device **ret_dev)
{
	struct rsr_device *dev = calloc(1, sizeof(*dev));
	_cleanup_free_ char *keys = NULL;
	int r;

	if (!dev)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	dev->rootfd = dev->statefd = -1;
	dev->root = realpath(root, NULL);
	if (!dev->root) {
		r = rsr_error_errno(ctx, -errno, "root %s", root);
		goto fail;
	}
	dev->rootfd = open(dev->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dev->rootfd < 0) {
		r = rsr_error_errno(ctx, -errno, "root %s", dev->root);
		goto fail;
	}
	if ((r = rsr_machine_arch(dev->arch)) < 0) {
		r = rsr_error(ctx, r, "cannot tell the machine's architecture");
		goto fail;
	}
	if (rsr_keyring_new(&dev->keys) < 0 ||
	    asprintf(&keys, "%s/%s", strcmp(dev->root, "/") ? dev->root : "", RSR_GRAFT_KEYS_DIR) < 0) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto fail;
	}
	r = rsr_keyring_add_dir(ctx, dev->keys, keys);
	if (r < 0)
		goto fail;
	r = read_os_release(ctx, dev);
	if (r < 0)
		goto fail;
	*ret_dev = dev;
	return 0;
fail:
	rsr_device_free(dev);
	return r;
}

const struct rsr_keyring *rsr_device_keyring(const struct rsr_device *dev)
{
	return dev->keys;
}

void rsr_device_format_time(int64_t t, char ret[32])
{
	struct tm tm;
	time_t tt = (time_t)t;

	if (!gmtime_r(&tt, &tm) || !strftime(ret, 32, "%Y-%m-%d %H:%M UTC", &tm))
		snprintf(ret, 32, "%lld", (long long)t);
}

void rsr_device_free(struct rsr_device *dev)
{
	if (!dev)
		return;
	rsr_lock_release(dev->lock);
	if (dev->statefd >= 0)
		close(dev->statefd);
	if (dev->rootfd >= 0)
		close(dev->rootfd);
	rsr_keyring_free(dev->keys);
	free(dev->base_build);
	free(dev->base_name);
	free(dev->root);
	free(dev);
}

/* Opens the state directory; creates it only when `create` (so that reading changes nothing). */
static int open_state(struct rsr_ctx *ctx, struct rsr_device *dev, bool create)
{
	int r;

	if (dev->statefd >= 0)
		return 0;
	if (create && (r = rsr_mkdir_p_at(ctx, dev->rootfd, STATE_DIR, dev->root)) < 0)
		return r;
	dev->statefd = openat(dev->rootfd, STATE_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (dev->statefd < 0)
		return !create && errno == ENOENT ? -ENOENT
						  : rsr_error_errno(ctx, -errno, "%s/%s", dev->root, STATE_DIR);
	return 0;
}

/*
 * Takes the device lock (lock.c, shared with graft) for the rest of the
 * device's life; RSR_DEVICE_WAIT waits for it without end.
 */
static int lock_device(struct rsr_ctx *ctx, struct rsr_device *dev, unsigned flags)
{
	int wait = rsr_ctx_get_lock_wait(ctx);
	int r;

	if (dev->lock)
		return 0;
	if (flags & RSR_DEVICE_WAIT)
		rsr_ctx_set_lock_wait(ctx, -1);
	r = rsr_lock_take(ctx, dev->rootfd, dev->root, &dev->lock);
	rsr_ctx_set_lock_wait(ctx, wait);
	if (r < 0)
		return r;
	return open_state(ctx, dev, true);
}

/* ---- state ---- */

static int state_load(struct rsr_ctx *ctx, struct rsr_device *dev, struct state *st)
{
	_cleanup_free_ char *buf = NULL;
	json_error_t jerr;
	json_t *doc, *inst, *rm;
	size_t len;
	int r;

	memset(st, 0, sizeof(*st));
	r = open_state(ctx, dev, false);
	if (r == -ENOENT)
		return 0; /* nothing installed ever */
	if (r < 0)
		return r;
	r = read_at(ctx, dev->statefd, "state.json", 65536, &buf, &len);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return rsr_error_errno(ctx, r, "%s/%s/state.json", dev->root, STATE_DIR);
	doc = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!doc && rsr_json_load_oom(&jerr))
		return rsr_error(ctx, -ENOMEM, "%s/%s/state.json: out of memory", dev->root, STATE_DIR);
	inst = json_object_get(doc, "installed");
	rm = json_object_get(doc, "removed"); /* absent in the state of older versions */
	if (!json_is_object(doc) || !json_is_integer(json_object_get(doc, "high_water")) ||
	    json_integer_value(json_object_get(doc, "high_water")) < 0 ||
	    (!json_is_null(inst) && !json_is_object(inst)) || (rm && !json_is_null(rm) && !json_is_object(rm))) {
		json_decref(doc);
		return rsr_error(ctx, RSR_E_FORMAT, "%s/%s/state.json is damaged", dev->root, STATE_DIR);
	}
	st->high_water = (uint64_t)json_integer_value(json_object_get(doc, "high_water"));
	if (json_is_object(inst)) {
		const char *l = json_string_value(json_object_get(inst, "letter"));
		json_int_t s = json_integer_value(json_object_get(inst, "sequence"));
		if (!l || strlen(l) != 1 || s <= 0) {
			json_decref(doc);
			return rsr_error(ctx, RSR_E_FORMAT, "%s/%s/state.json is damaged", dev->root, STATE_DIR);
		}
		st->installed = true;
		st->letter[0] = l[0];
		st->sequence = (uint64_t)s;
	}
	if (json_is_object(rm)) {
		const char *l = json_string_value(json_object_get(rm, "letter"));
		json_t *s = json_object_get(rm, "sequence"), *at = json_object_get(rm, "at");
		if (!l || strlen(l) != 1 || !json_is_integer(s) || json_integer_value(s) <= 0 ||
		    (uint64_t)json_integer_value(s) > st->high_water || !json_is_integer(at) ||
		    json_integer_value(at) < 0) {
			json_decref(doc);
			return rsr_error(ctx, RSR_E_FORMAT, "%s/%s/state.json is damaged", dev->root, STATE_DIR);
		}
		st->removed = true;
		st->removed_letter[0] = l[0];
		st->removed_sequence = (uint64_t)json_integer_value(s);
		st->removed_at = (int64_t)json_integer_value(at);
	}
	json_decref(doc);
	return 0;
}

static int state_save(struct rsr_ctx *ctx, struct rsr_device *dev, const struct state *st)
{
	json_t *doc = json_pack(
	    "{s:I, s:o, s:o}", "high_water", (json_int_t)st->high_water, "installed",
	    st->installed ? json_pack("{s:s, s:I, s:s}", "letter", st->letter, "sequence", (json_int_t)st->sequence,
				      "base_build", dev->base_build ? dev->base_build : "")
			  : json_null(),
	    "removed",
	    st->removed ? json_pack("{s:s, s:I, s:I}", "letter", st->removed_letter, "sequence",
				    (json_int_t)st->removed_sequence, "at", (json_int_t)st->removed_at)
			: json_null());
	_cleanup_free_ char *text = doc ? rsr_json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;

	json_decref(doc);
	if (!text)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	return write_at(ctx, dev->statefd, "state.json", text, strlen(text), "response state");
}

/*
 * Appends KEY="VALUE" and a newline to the buffer at *at, quoted as
 * os-release(5) asks: in double quotes, with $, ", \ and ` escaped by a
 * backslash, so that a shell that sources the file reads the value back and
 * runs nothing. A control character (which the format cannot carry on one
 * line) is refused with -EINVAL; a full buffer with -ENOBUFS.
 */
static int put_quoted(char *buf, size_t size, size_t *at, const char *key, const char *value)
{
	size_t n = *at;
	int k = snprintf(buf + n, size - n, "%s=\"", key);

	if (k < 0 || (size_t)k >= size - n)
		return -ENOBUFS;
	n += (size_t)k;
	for (const char *v = value; *v; v++) {
		unsigned char c = (unsigned char)*v;
		if (c < 0x20 || c == 0x7f)
			return -EINVAL;
		if (n + 2 >= size)
			return -ENOBUFS;
		if (c == '$' || c == '"' || c == '\\' || c == '`')
			buf[n++] = '\\';
		buf[n++] = (char)c;
	}
	if (n + 3 > size)
		return -ENOBUFS;
	memcpy(buf + n, "\"\n", 3);
	*at = n + 2;
	return 0;
}

/* run/rsr/response: the letter for tools, outside /etc/os-release; an os-release-style file tools may source. */
static void write_run_file(struct rsr_ctx *ctx, struct rsr_device *dev, const struct state *st)
{
	char text[1024], seq[24], suffix[8];
	const char *keys[] = {"RSR_BASE_BUILD", "RSR_RESPONSE_LETTER", "RSR_RESPONSE_SEQUENCE", "RSR_VERSION_SUFFIX"};
	const char *values[] = {dev->base_build ? dev->base_build : "", st->installed ? st->letter : "", seq, suffix};
	_cleanup_close_ int fd = -1;
	size_t len = 0;
	int r = 0;

	snprintf(seq, sizeof(seq), "%llu", (unsigned long long)(st->installed ? st->sequence : 0));
	snprintf(suffix, sizeof(suffix), "%s%s%s", st->installed ? "(" : "", st->installed ? st->letter : "",
		 st->installed ? ")" : "");
	if (rsr_mkdir_p_at(ctx, dev->rootfd, "run/rsr", dev->root) < 0)
		return;
	fd = openat(dev->rootfd, "run/rsr", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return;
	for (size_t i = 0; r == 0 && i < ARRAY_SIZE(keys); i++)
		r = put_quoted(text, sizeof(text), &len, keys[i], values[i]);
	if (r < 0) {
		/* A stale file would name the previous state: it goes, and the reason is said. */
		if (unlinkat(fd, "response", 0) == 0)
			fsync(fd);
		size_t bad = strcspn(values[0], "\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f"
						"\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f\x7f");
		/* The value itself is not shown: it could drive the terminal. */
		if (r == -EINVAL)
			rsr_warn(ctx,
				 "%s/run/rsr/response not written: the base build from os-release holds control "
				 "character 0x%02x at byte %zu",
				 dev->root, (unsigned char)values[0][bad], bad);
		else
			rsr_warn(ctx, "%s/run/rsr/response not written: the base build from os-release is too long",
				 dev->root);
		return;
	}
	if (write_at(ctx, fd, "response", text, len, "run/rsr/response") < 0)
		rsr_warn(ctx, "%s", rsr_ctx_error(ctx));
}

/* ---- slots ---- */

static int slot_dir(struct rsr_ctx *ctx, struct rsr_device *dev, const char *slot, bool create, int *ret_fd)
{
	char rel[256];
	int r;

	snprintf(rel, sizeof(rel), "%s/%s", RSR_GRAFT_IMAGES_DIR, slot);
	if (create && (r = rsr_mkdir_p_at(ctx, dev->rootfd, rel, dev->root)) < 0)
		return r;
	*ret_fd = openat(dev->rootfd, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (*ret_fd < 0)
		return errno == ENOENT ? rsr_error(ctx, RSR_E_STATE, "slot '%s' has no image on this device (%s/%s)",
						   slot, dev->root, rel)
				       : rsr_error_errno(ctx, -errno, "%s/%s", dev->root, rel);
	return 0;
}

/* The name of the slot's current image, or -ENOENT. */
static int slot_current(int sfd, char name[128])
{
	ssize_t n = readlinkat(sfd, "current", name, 127);

	if (n <= 0)
		return -ENOENT;
	name[n] = '\0';
	if (strchr(name, '/') || name[0] == '.')
		return -EINVAL;
	return 0;
}

static int slot_switch(struct rsr_ctx *ctx, int sfd, const char *slot, const char *image)
{
	unlinkat(sfd, ".current.tmp", 0);
	if (symlinkat(image, sfd, ".current.tmp") < 0 || renameat(sfd, ".current.tmp", sfd, "current") < 0 ||
	    fsync(sfd) < 0) {
		int r = -errno;
		unlinkat(sfd, ".current.tmp", 0);
		return rsr_error_errno(ctx, r, "slot '%s': cannot switch its current image", slot);
	}
	return 0;
}

/* Removes the images of a slot other than the current one. */
static void slot_prune(struct rsr_ctx *ctx, struct rsr_device *dev, const char *slot)
{
	_cleanup_close_ int sfd = -1;
	char cur[128];
	DIR *d;
	struct dirent *de;

	if (slot_dir(ctx, dev, slot, false, &sfd) < 0 || slot_current(sfd, cur) < 0)
		return;
	d = fdopendir(dup(sfd));
	if (!d)
		return;
	while ((de = readdir(d))) {
		size_t l = strlen(de->d_name);
		if (l > 5 && !strcmp(de->d_name + l - 5, ".cptx") && strcmp(de->d_name, cur))
			unlinkat(sfd, de->d_name, 0);
	}
	closedir(d);
	fsync(sfd);
}

/* ---- the journal: from staged to switched ---- */

/*
 * Whether incoming/response still holds the response the journal installs
 * (1), or already the one it replaced (0): switching exchanges the two
 * directories, so a recovery after that must not exchange them back. Told by
 * the manifest's sequence, which is above every earlier one on this device.
 */
static int response_staged(struct rsr_ctx *ctx, struct rsr_device *dev, int infd, json_t *j)
{
	_cleanup_free_ char *buf = NULL;
	struct rsr_response *resp = NULL;
	size_t len;
	int r;

	r = read_at(ctx, infd, "response/" RSR_RESPONSE_MANIFEST, RSR_RESPONSE_MANIFEST_MAX, &buf, &len);
	if (r == -ENOMEM)
		return rsr_error(ctx, r, "out of memory");
	if (r < 0)
		return rsr_error(ctx, RSR_E_STATE, "%s/%s/incoming/response: cannot read its manifest (%s)", dev->root,
				 STATE_DIR, rsr_strerror(r));
	if ((r = rsr_response_parse(ctx, buf, len, NULL, &resp)) < 0)
		return rsr_error_prefix(ctx, r, "%s/%s/incoming/response", dev->root, STATE_DIR);
	r = rsr_response_sequence(resp) == (uint64_t)json_integer_value(json_object_get(j, "sequence"));
	rsr_response_free(resp);
	return r;
}

/*
 * Makes the journal's target state true. Every step is idempotent, so this
 * is both the second half of an install or remove and the recovery.
 */
static int roll_forward(struct rsr_ctx *ctx, struct rsr_device *dev, json_t *j)
{
	const char *op = json_string_value(json_object_get(j, "op")), *slot;
	json_t *slots = json_object_get(j, "slots"), *v;
	_cleanup_close_ int infd = openat(dev->statefd, "incoming", O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	struct state st;
	int r;

	if (!op || (strcmp(op, "install") && strcmp(op, "remove")) || !json_is_object(slots))
		return rsr_error(ctx, RSR_E_FORMAT, "%s/%s/journal.json is damaged", dev->root, STATE_DIR);
	r = state_load(ctx, dev, &st);
	if (r < 0)
		return r;
	json_object_foreach(slots, slot, v)
	{
		_cleanup_close_ int sfd = -1;
		const char *image = json_string_value(v);
		char staged[256];

		if (!image || strchr(image, '/') || strchr(slot, '/') || slot[0] == '.')
			return rsr_error(ctx, RSR_E_FORMAT, "%s/%s/journal.json is damaged", dev->root, STATE_DIR);
		if ((r = slot_dir(ctx, dev, slot, true, &sfd)) < 0)
			return r;
		snprintf(staged, sizeof(staged), "%s.cptx", slot);
		if (infd >= 0 && exists_at(infd, staged)) {
			if (renameat(infd, staged, sfd, image) < 0)
				return rsr_error_errno(ctx, -errno, "slot '%s': cannot move the new image into place",
						       slot);
		} else if (!exists_at(sfd, image)) {
			return rsr_error(ctx, RSR_E_STATE, "slot '%s': image %s is neither staged nor in place", slot,
					 image);
		}
		if ((r = slot_switch(ctx, sfd, slot, image)) < 0)
			return r;
	}
	if (!strcmp(op, "install")) {
		if (infd >= 0 && exists_at(infd, "response") && (r = response_staged(ctx, dev, infd, j)) != 0) {
			if (r < 0)
				return r;
			if (exists_at(dev->statefd, "current")) {
				if (renameat2(infd, "response", dev->statefd, "current", RENAME_EXCHANGE) < 0)
					return rsr_error_errno(ctx, -errno, "cannot switch the response state");
			} else if (renameat(infd, "response", dev->statefd, "current") < 0) {
				return rsr_error_errno(ctx, -errno, "cannot switch the response state");
			}
		}
		if (infd >= 0 && exists_at(infd, "base") && !exists_at(dev->statefd, "base") &&
		    renameat(infd, "base", dev->statefd, "base") < 0)
			return rsr_error_errno(ctx, -errno, "cannot keep the base images");
		st.installed = true;
		st.letter[0] = json_string_value(json_object_get(j, "letter"))[0];
		st.letter[1] = '\0';
		st.sequence = (uint64_t)json_integer_value(json_object_get(j, "sequence"));
		st.high_water = RSR_MAX(st.high_water, st.sequence);
		st.removed = false;
	} else {
		json_t *rm = json_object_get(j, "removed");
		if ((r = response_rm_rf(dev->statefd, "current")) < 0 || (r = response_rm_rf(dev->statefd, "base")) < 0)
			return rsr_error_errno(ctx, r, "cannot clear the response state");
		/* A person's removal is remembered, so that the response may be installed again. */
		st.removed = json_is_object(rm);
		if (st.removed) {
			st.removed_letter[0] = json_string_value(json_object_get(rm, "letter"))[0];
			st.removed_letter[1] = '\0';
			st.removed_sequence = (uint64_t)json_integer_value(json_object_get(rm, "sequence"));
			st.removed_at = (int64_t)json_integer_value(json_object_get(rm, "at"));
		}
		st.installed = false;
		st.sequence = 0;
	}
	if (fsync(dev->statefd) < 0)
		return rsr_error_errno(ctx, -errno, "%s/%s", dev->root, STATE_DIR);
	if ((r = state_save(ctx, dev, &st)) < 0)
		return r;
	if (unlinkat(dev->statefd, "journal.json", 0) < 0 && errno != ENOENT)
		return rsr_error_errno(ctx, -errno, "cannot remove the journal");
	/*
	 * The switch is done. A failing fsync is still reported, but only after
	 * the clean-up: nothing would redo it (no journal, and `incoming` is
	 * removed by the caller), and the superseded images would stay for good.
	 */
	r = fsync(dev->statefd) < 0 ? rsr_error_errno(ctx, -errno, "%s/%s", dev->root, STATE_DIR) : 0;
	write_run_file(ctx, dev, &st);
	/* Clean-up; `incoming` goes last, so that recovery redoes an interrupted clean-up. */
	json_object_foreach(slots, slot, v)
	{
		slot_prune(ctx, dev, slot);
	}
	response_rm_rf(dev->statefd, "incoming");
	fsync(dev->statefd);
	return r;
}

/* Removes the images of every slot other than its current one. */
static void prune_all(struct rsr_ctx *ctx, struct rsr_device *dev)
{
	int fd = openat(dev->rootfd, RSR_GRAFT_IMAGES_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *de;

	if (!d) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			slot_prune(ctx, dev, de->d_name);
	closedir(d);
}

static int check_journal(json_t *j)
{
	json_t *l = json_object_get(j, "letter"), *s = json_object_get(j, "sequence");
	const char *op = json_string_value(json_object_get(j, "op"));

	json_t *rm = json_object_get(j, "removed");

	if (!op || !json_is_object(json_object_get(j, "slots")))
		return -1;
	if (!strcmp(op, "install") && (!json_string_value(l) || strlen(json_string_value(l)) != 1 ||
				       !json_is_integer(s) || json_integer_value(s) <= 0))
		return -1;
	if (rm && (!json_is_object(rm) || !json_string_value(json_object_get(rm, "letter")) ||
		   strlen(json_string_value(json_object_get(rm, "letter"))) != 1 ||
		   !json_is_integer(json_object_get(rm, "sequence")) ||
		   json_integer_value(json_object_get(rm, "sequence")) <= 0 ||
		   !json_is_integer(json_object_get(rm, "at")) || json_integer_value(json_object_get(rm, "at")) < 0))
		return -1;
	return 0;
}

static int recover_locked(struct rsr_ctx *ctx, struct rsr_device *dev)
{
	_cleanup_free_ char *buf = NULL;
	json_error_t jerr;
	json_t *j;
	size_t len;
	int r;

	r = read_at(ctx, dev->statefd, "journal.json", 1 << 20, &buf, &len);
	if (r == -ENOENT) {
		if (!exists_at(dev->statefd, "incoming"))
			return 0;
		/* Staged but not switched (roll back), or switched but not cleaned up. */
		rsr_info(ctx, "rolling back an interrupted operation: removing its staged images");
		prune_all(ctx, dev);
		r = response_rm_rf(dev->statefd, "incoming");
		if (r < 0)
			return rsr_error_errno(ctx, r, "%s/%s/incoming: cannot remove", dev->root, STATE_DIR);
		fsync(dev->statefd);
		return 1;
	}
	if (r < 0)
		return rsr_error_errno(ctx, r, "%s/%s/journal.json", dev->root, STATE_DIR);
	j = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	/* Out of memory is not damage: the journal must stay for the next attempt. */
	if (!j && rsr_json_load_oom(&jerr))
		return rsr_error(ctx, -ENOMEM, "%s/%s/journal.json: out of memory", dev->root, STATE_DIR);
	if (!j || check_journal(j) < 0) {
		json_decref(j);
		return rsr_error(ctx, RSR_E_FORMAT, "%s/%s/journal.json is damaged", dev->root, STATE_DIR);
	}
	rsr_info(ctx, "finishing an interrupted %s", json_string_value(json_object_get(j, "op")));
	r = roll_forward(ctx, dev, j);
	json_decref(j);
	return r < 0 ? r : 1;
}

int rsr_device_recover(struct rsr_ctx *ctx, struct rsr_device *dev, unsigned flags)
{
	int r;

	/* Nothing to do and nothing created unless an operation left its traces. */
	if (!exists_at(dev->rootfd, STATE_DIR "/journal.json") && !exists_at(dev->rootfd, STATE_DIR "/incoming"))
		return 0;
	r = lock_device(ctx, dev, flags);
	return r < 0 ? r : recover_locked(ctx, dev);
}

/* Writes the journal (the point of no return), then switches. */
static int commit(struct rsr_ctx *ctx, struct rsr_device *dev, json_t *j)
{
	_cleanup_free_ char *text = rsr_json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
	int r;

	if (!text)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	r = fsync_at(dev->statefd, "incoming");
	if (r < 0)
		return rsr_error_errno(ctx, r, "%s/%s/incoming", dev->root, STATE_DIR);
	r = write_at(ctx, dev->statefd, "journal.json", text, strlen(text), "journal");
	if (r < 0)
		return r;
	return roll_forward(ctx, dev, j);
}

/*
 * Whether the image at `path` is a cryptex signed by a trusted key whose
 * signed root hash is `root`: 1 if so, 0 if not (or if it is no valid
 * cryptex), -ENOMEM. Only the header, the manifest and its signature are
 * read, not the blocks; the image staged from it is verified block by block
 * afterwards (verify_staged). This tells a slot that is already on the
 * target, or already back on its base, without hashing its image whole; an
 * image that is neither is left to the patcher, which checks its input's
 * digest in the same pass that writes the output.
 */
static int image_has_root(struct rsr_ctx *ctx, struct rsr_device *dev, const char *path, const char *root)
{
	struct rsr_cryptex *cx = NULL;
	int r = rsr_cryptex_open_trusted(ctx, path, dev->keys, &cx);

	if (r == -ENOMEM)
		return r;
	if (r < 0) {
		rsr_ctx_clear_error(ctx);
		return 0;
	}
	r = !strcmp(rsr_cryptex_root_hash_hex(cx), root);
	rsr_cryptex_free(cx);
	return r;
}

/* Verifies a staged image against the root hash the response signed. */
static int verify_staged(struct rsr_ctx *ctx, struct rsr_device *dev, const char *name, const char *slot,
			 const char *want_root)
{
	_cleanup_free_ char *path = NULL;
	struct rsr_cryptex *cx = NULL;
	int r;

	if (asprintf(&path, "%s/%s/incoming/%s", strcmp(dev->root, "/") ? dev->root : "", STATE_DIR, name) < 0)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	r = rsr_cryptex_open_trusted(ctx, path, dev->keys, &cx);
	if (r < 0)
		return r;
	r = rsr_cryptex_verify_blocks(ctx, cx);
	if (r < 0)
		goto out;
	if (strcmp(rsr_cryptex_root_hash_hex(cx), want_root))
		r = rsr_error(ctx, RSR_E_DIGEST,
			      "slot '%s': the patched image has root hash %.16s…, the response signed %.16s…", slot,
			      rsr_cryptex_root_hash_hex(cx), want_root);
	else if (strcmp(rsr_cryptex_name(cx), slot))
		r = rsr_error(ctx, RSR_E_MISMATCH, "slot '%s': the patched image is of slot '%s'", slot,
			      rsr_cryptex_name(cx));
	else if (dev->base_build && !rsr_cryptex_allows_base(cx, dev->base_build))
		r = rsr_error(ctx, RSR_E_MISMATCH, "slot '%s': the patched image may not be grafted on base build '%s'",
			      slot, dev->base_build);
out:
	rsr_cryptex_free(cx);
	return r;
}

static int start_incoming(struct rsr_ctx *ctx, struct rsr_device *dev, int *ret_fd)
{
	int r = response_rm_rf(dev->statefd, "incoming");

	if (r < 0)
		return rsr_error_errno(ctx, r, "%s/%s/incoming: cannot clear", dev->root, STATE_DIR);
	if (mkdirat(dev->statefd, "incoming", 0700) < 0)
		return rsr_error_errno(ctx, -errno, "%s/%s/incoming", dev->root, STATE_DIR);
	*ret_fd = openat(dev->statefd, "incoming", O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (*ret_fd < 0)
		return rsr_error_errno(ctx, -errno, "%s/%s/incoming", dev->root, STATE_DIR);
	return 0;
}

static char *abs_path(struct rsr_device *dev, const char *rel)
{
	char *p = NULL;
	if (asprintf(&p, "%s/%s", strcmp(dev->root, "/") ? dev->root : "", rel) < 0)
		return NULL;
	return p;
}

static int graft_now(struct rsr_ctx *ctx, struct rsr_device *dev)
{
	struct rsr_graft *g;
	int r = rsr_graft_open(ctx, dev->root, &g);

	if (r < 0)
		return r;
	r = rsr_graft_activate(ctx, g);
	rsr_graft_free(g);
	return r < 0 ? rsr_error_prefix(ctx, r,
					"the new images are in place but grafting them failed "
					"(run 'rsr graft' to retry)")
		     : 0;
}

/*
 * Commits a staged operation and grafts. On success, or once the journal is
 * on disk, *infd is closed and set to -1: the staging area then belongs to
 * recovery and the caller must not remove it.
 */
static int switch_and_graft(struct rsr_ctx *ctx, struct rsr_device *dev, json_t *j, int *infd, unsigned flags)
{
	int r = commit(ctx, dev, j);

	if (r < 0 && !exists_at(dev->statefd, "journal.json"))
		return r; /* not committed: the caller rolls back */
	close(*infd);
	*infd = -1;
	if (r < 0)
		return rsr_error_prefix(ctx, r, "the switch was interrupted and completes at the next rsr command");
	return (flags & RSR_DEVICE_NO_GRAFT) ? 0 : graft_now(ctx, dev);
}

/* Removes the staging area of an operation that was not committed. */
static void roll_back(struct rsr_device *dev, int infd)
{
	if (infd < 0)
		return;
	response_rm_rf(dev->statefd, "incoming");
	fsync(dev->statefd);
}

int rsr_device_install(struct rsr_ctx *ctx, struct rsr_device *dev, const char *dir, unsigned flags)
{
	struct rsr_response *resp = NULL;
	_cleanup_close_ int infd = -1;
	_cleanup_free_ char *mbuf = NULL, *mpath = NULL;
	json_t *j = NULL, *slots = NULL;
	bool slots_ok = true;
	struct state st;
	size_t mlen, n_mine = 0;
	int r;

	if ((r = lock_device(ctx, dev, flags)) < 0 || (r = recover_locked(ctx, dev)) < 0)
		return r;
	if (rsr_keyring_count(dev->keys) == 0)
		return rsr_error(ctx, RSR_E_SIGNATURE, "no trusted keys in %s/%s", dev->root, RSR_GRAFT_KEYS_DIR);
	r = rsr_response_open(ctx, dir, dev->keys, &resp);
	if (r < 0)
		return r;
	if (!dev->base_build) {
		r = rsr_error(ctx, RSR_E_STATE,
			      "cannot tell this device's base build: no BUILD_ID, IMAGE_VERSION or "
			      "VERSION_ID in %s/etc/os-release",
			      dev->root);
		goto out;
	}
	if (strcmp(rsr_response_base_build(resp), dev->base_build)) {
		r = rsr_error(ctx, RSR_E_MISMATCH, "response (%s) is for base build '%s'; this device runs '%s'",
			      rsr_response_letter(resp), rsr_response_base_build(resp), dev->base_build);
		goto out;
	}
	if ((r = state_load(ctx, dev, &st)) < 0)
		goto out;
	if (st.installed && st.sequence == rsr_response_sequence(resp)) {
		rsr_info(ctx, "response (%s) is already installed", st.letter);
		r = 1;
		goto out;
	}
	if (!st.installed && st.removed && rsr_response_sequence(resp) == st.removed_sequence &&
	    st.removed_sequence == st.high_water) {
		/* What a person removed goes back only when a person asks: the timer never reinstalls it. */
		if (!(flags & RSR_DEVICE_REINSTALL)) {
			char when[32];
			rsr_device_format_time(st.removed_at, when);
			r = rsr_error(ctx, RSR_E_STATE,
				      "response (%s) was removed from this device on %s; --reinstall installs it again",
				      rsr_response_letter(resp), when);
			goto out;
		}
	} else if (rsr_response_sequence(resp) <= st.high_water) {
		r = rsr_error(
		    ctx, RSR_E_ROLLBACK,
		    "response (%s) has sequence %llu, not newer than the highest this device has installed (%llu)%s",
		    rsr_response_letter(resp), (unsigned long long)rsr_response_sequence(resp),
		    (unsigned long long)st.high_water,
		    st.removed && !st.installed ? "; only the response removed last may be installed again" : "");
		goto out;
	}
	if ((r = start_incoming(ctx, dev, &infd)) < 0)
		goto out;
	if (mkdirat(infd, "response", 0755) < 0 || mkdirat(infd, "response/patches", 0755) < 0) {
		r = rsr_error_errno(ctx, -errno, "%s/%s/incoming", dev->root, STATE_DIR);
		goto out;
	}
	slots = json_object();
	if (!slots) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < rsr_response_image_count(resp); i++) {
		const struct rsr_response_image *im = rsr_response_image(resp, i);
		_cleanup_close_ int sfd = -1;
		_cleanup_free_ char *cur_path = NULL, *patch = NULL, *out_path = NULL, *rev = NULL, *rel = NULL;
		char cur[128], staged[128], image[80];

		if (strcmp(im->arch, dev->arch))
			continue;
		n_mine++;
		if ((r = slot_dir(ctx, dev, im->slot, false, &sfd)) < 0)
			goto out;
		if (slot_current(sfd, cur) < 0) {
			r = rsr_error(ctx, RSR_E_STATE, "slot '%s' has no current image on this device", im->slot);
			goto out;
		}
		if (asprintf(&rel, "%s/%s/%s", RSR_GRAFT_IMAGES_DIR, im->slot, cur) < 0 ||
		    !(cur_path = abs_path(dev, rel)) || asprintf(&patch, "%s/%s", dir, im->forward) < 0 ||
		    asprintf(&rev, "%s/%s", dir, im->reverse) < 0) {
			r = rsr_error(ctx, -ENOMEM, "out of memory");
			goto out;
		}
		snprintf(staged, sizeof(staged), "%s.cptx", im->slot);
		snprintf(image, sizeof(image), "%s.cptx", im->root_hash);
		if ((r = image_has_root(ctx, dev, cur_path, im->root_hash)) < 0) {
			r = rsr_error(ctx, r, "out of memory");
			goto out;
		}
		if (r > 0) {
			/* Already the target image: nothing to patch. */
			if (linkat(sfd, cur, infd, staged, 0) < 0) {
				r = rsr_error_errno(ctx, -errno, "slot '%s': cannot stage", im->slot);
				goto out;
			}
		} else {
			/* The patch itself must be the one the response signed. */
			if ((r = copy_checked(ctx, patch, infd, ".forward.rsrp", im->forward_sha256,
					      im->forward_size)) < 0)
				goto out;
			_cleanup_free_ char *staged_patch = NULL;
			if (asprintf(&staged_patch, "%s/%s/incoming/.forward.rsrp",
				     strcmp(dev->root, "/") ? dev->root : "", STATE_DIR) < 0 ||
			    asprintf(&out_path, "%s/%s/incoming/%s", strcmp(dev->root, "/") ? dev->root : "", STATE_DIR,
				     staged) < 0) {
				r = rsr_error(ctx, -ENOMEM, "out of memory");
				goto out;
			}
			rsr_info(ctx, "slot '%s': applying %llu-byte patch to %s", im->slot,
				 (unsigned long long)im->forward_size, cur);
			/* It accepts only the images the response patches from, and checks which one this is. */
			r = rsr_patch_apply(ctx, cur_path, staged_patch, out_path);
			unlinkat(infd, ".forward.rsrp", 0);
			if (r == RSR_E_MISMATCH) {
				rsr_error_prefix(
				    ctx, r,
				    "slot '%s': this device's image (%s) is none of the %zu images response "
				    "(%s) patches from",
				    im->slot, cur, im->n_forward_inputs, rsr_response_letter(resp));
				goto out;
			}
			if (r < 0) {
				rsr_error_prefix(ctx, r, "slot '%s'", im->slot);
				goto out;
			}
		}
		if ((r = verify_staged(ctx, dev, staged, im->slot, im->root_hash)) < 0)
			goto out;
		/* The reverse patch, to go back without the network. */
		{
			char name[160];
			snprintf(name, sizeof(name), "response/%s", im->reverse);
			if ((r = copy_checked(ctx, rev, infd, name, im->reverse_sha256, im->reverse_size)) < 0)
				goto out;
		}
		/* Keep the base image too, where asked and while the device is still on it. */
		if ((flags & RSR_DEVICE_KEEP_BASE) && !st.installed && !exists_at(dev->statefd, "base")) {
			char bname[160];
			if (mkdirat(infd, "base", 0755) < 0 && errno != EEXIST) {
				r = rsr_error_errno(ctx, -errno, "cannot keep the base images");
				goto out;
			}
			snprintf(bname, sizeof(bname), "base/%s.cptx", im->slot);
			if (linkat(sfd, cur, infd, bname, 0) < 0) {
				r = rsr_error_errno(ctx, -errno, "slot '%s': cannot keep the base image", im->slot);
				goto out;
			}
		}
		rsr_json_set(&slots_ok, slots, im->slot, json_string(image));
	}
	if (n_mine == 0) {
		r = rsr_error(ctx, RSR_E_MISMATCH,
			      "response (%s) carries no images for this machine's architecture (%s)",
			      rsr_response_letter(resp), dev->arch);
		goto out;
	}
	if (asprintf(&mpath, "%s/%s", dir, RSR_RESPONSE_MANIFEST) < 0) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	if ((r = rsr_read_file(ctx, mpath, RSR_RESPONSE_MANIFEST_MAX, &mbuf, &mlen)) < 0)
		goto out;
	{
		_cleanup_close_ int rfd = openat(infd, "response", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		_cleanup_close_ int pfd = openat(infd, "response/patches", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (rfd < 0 || (r = write_at(ctx, rfd, RSR_RESPONSE_MANIFEST, mbuf, mlen, "response manifest")) < 0 ||
		    (pfd >= 0 && fsync(pfd) < 0)) {
			r = r < 0 ? r : rsr_error_errno(ctx, -errno, "cannot stage the response");
			goto out;
		}
	}
	/* Staged and verified; from the journal on, the install completes even after a crash. */
	if (slots_ok)
		j = json_pack("{s:s, s:s, s:I, s:O}", "op", "install", "letter", rsr_response_letter(resp), "sequence",
			      (json_int_t)rsr_response_sequence(resp), "slots", slots);
	if (!j) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	r = switch_and_graft(ctx, dev, j, &infd, flags);
out:
	if (r < 0)
		roll_back(dev, infd); /* nothing switched: the device stays as it was */
	json_decref(j);
	json_decref(slots);
	rsr_response_free(resp);
	return r;
}

int rsr_device_remove(struct rsr_ctx *ctx, struct rsr_device *dev, unsigned flags)
{
	struct rsr_response *resp = NULL;
	_cleanup_close_ int infd = -1;
	_cleanup_free_ char *cdir = NULL;
	json_t *j = NULL, *slots = NULL;
	bool slots_ok = true;
	struct state st;
	int r;

	if ((r = lock_device(ctx, dev, flags)) < 0 || (r = recover_locked(ctx, dev)) < 0)
		return r;
	if ((r = state_load(ctx, dev, &st)) < 0)
		return r;
	if (!st.installed) {
		rsr_info(ctx, "no response is installed; the device is on its base images");
		return 1;
	}
	if (!(cdir = abs_path(dev, STATE_DIR "/current")))
		return rsr_error(ctx, -ENOMEM, "out of memory");
	r = rsr_response_open(ctx, cdir, dev->keys, &resp);
	if (r < 0)
		return rsr_error_prefix(ctx, r, "the installed response");
	if ((r = start_incoming(ctx, dev, &infd)) < 0)
		goto out;
	slots = json_object();
	for (size_t i = 0; slots && i < rsr_response_image_count(resp); i++) {
		const struct rsr_response_image *im = rsr_response_image(resp, i);
		_cleanup_close_ int sfd = -1;
		_cleanup_free_ char *rel = NULL, *cur_path = NULL, *rev = NULL, *out_path = NULL, *kept = NULL;
		char cur[128], staged[128], image[80], sha[65];

		if (strcmp(im->arch, dev->arch))
			continue;
		if ((r = slot_dir(ctx, dev, im->slot, false, &sfd)) < 0)
			goto out;
		if (slot_current(sfd, cur) < 0) {
			r = rsr_error(ctx, RSR_E_STATE, "slot '%s' has no current image on this device", im->slot);
			goto out;
		}
		snprintf(staged, sizeof(staged), "%s.cptx", im->slot);
		snprintf(image, sizeof(image), "%s.cptx", im->base_root_hash);
		if (asprintf(&rel, "%s/%s/%s", RSR_GRAFT_IMAGES_DIR, im->slot, cur) < 0 ||
		    !(cur_path = abs_path(dev, rel)) || asprintf(&rev, "%s/%s", cdir, im->reverse) < 0 ||
		    asprintf(&out_path, "%s/%s/incoming/%s", strcmp(dev->root, "/") ? dev->root : "", STATE_DIR,
			     staged) < 0 ||
		    asprintf(&kept, "%s/%s/base/%s", strcmp(dev->root, "/") ? dev->root : "", STATE_DIR, staged) < 0) {
			r = rsr_error(ctx, -ENOMEM, "out of memory");
			goto out;
		}
		if (access(kept, F_OK) == 0 && response_file_sha256(ctx, kept, sha, NULL) == 0 &&
		    !strcmp(sha, im->base_sha256)) {
			rsr_info(ctx, "slot '%s': using the kept base image", im->slot);
			_cleanup_close_ int bfd = openat(dev->statefd, "base", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			if (bfd < 0 || linkat(bfd, staged, infd, staged, 0) < 0) {
				r = rsr_error_errno(ctx, -errno, "slot '%s': cannot stage the kept base image",
						    im->slot);
				goto out;
			}
		} else {
			if ((r = image_has_root(ctx, dev, cur_path, im->base_root_hash)) < 0) {
				r = rsr_error(ctx, r, "out of memory");
				goto out;
			}
			if (r > 0) {
				if (linkat(sfd, cur, infd, staged, 0) < 0) {
					r = rsr_error_errno(ctx, -errno, "slot '%s': cannot stage", im->slot);
					goto out;
				}
			} else {
				char rsha[65];
				uint64_t rsize;
				if ((r = response_file_sha256(ctx, rev, rsha, &rsize)) < 0)
					goto out;
				if (strcmp(rsha, im->reverse_sha256) || rsize != im->reverse_size) {
					r = rsr_error(ctx, RSR_E_DIGEST, "%s: does not match the signed digest", rev);
					goto out;
				}
				rsr_info(ctx, "slot '%s': applying the reverse patch", im->slot);
				r = rsr_patch_apply(ctx, cur_path, rev, out_path);
				if (r < 0) {
					rsr_error_prefix(ctx, r, "slot '%s'", im->slot);
					goto out;
				}
			}
		}
		if ((r = verify_staged(ctx, dev, staged, im->slot, im->base_root_hash)) < 0)
			goto out;
		rsr_json_set(&slots_ok, slots, im->slot, json_string(image));
	}
	/* Recorded in the journal, so that recovery writes the same record. */
	if (slots && slots_ok)
		j = (flags & RSR_DEVICE_WITHDRAWN) ? json_pack("{s:s, s:O}", "op", "remove", "slots", slots)
						   : json_pack("{s:s, s:O, s:{s:s, s:I, s:I}}", "op", "remove", "slots",
							       slots, "removed", "letter", st.letter, "sequence",
							       (json_int_t)st.sequence, "at", (json_int_t)time(NULL));
	if (!j) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	r = switch_and_graft(ctx, dev, j, &infd, flags);
out:
	if (r < 0)
		roll_back(dev, infd); /* nothing switched: the device stays as it was */
	json_decref(j);
	json_decref(slots);
	rsr_response_free(resp);
	return r;
}

/* ---- state for status ---- */

static uint64_t dir_bytes(int parent, const char *rel, bool only_current)
{
	int fd = openat(parent, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *de;
	uint64_t sum = 0;
	char cur[128];

	if (!d) {
		if (fd >= 0)
			close(fd);
		return 0;
	}
	if (only_current && slot_current(dirfd(d), cur) < 0)
		cur[0] = '\0';
	while ((de = readdir(d))) {
		struct stat st;
		if (de->d_name[0] == '.')
			continue;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (S_ISDIR(st.st_mode))
			sum += only_current ? 0 : dir_bytes(dirfd(d), de->d_name, false);
		else if (S_ISREG(st.st_mode) && (!only_current || !strcmp(de->d_name, cur)))
			sum += (uint64_t)st.st_blocks * 512;
	}
	closedir(d);
	return sum;
}

int rsr_device_get_state(struct rsr_ctx *ctx, struct rsr_device *dev, struct rsr_device_state **ret_state)
{
	struct rsr_device_state *s = calloc(1, sizeof(*s));
	struct state st;
	int r;

	if (!s)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	if ((r = state_load(ctx, dev, &st)) < 0) {
		free(s);
		return r;
	}
	s->base_build = dev->base_build ? strdup(dev->base_build) : NULL;
	s->base_name = dev->base_name ? strdup(dev->base_name) : NULL;
	s->high_water = st.high_water;
	s->interrupted = exists_at(dev->statefd, "journal.json") || exists_at(dev->statefd, "incoming");
	if (st.removed) {
		s->removed_letter = strdup(st.removed_letter);
		s->removed_sequence = st.removed_sequence;
		s->removed_at = st.removed_at;
	}
	if (st.installed) {
		_cleanup_free_ char *cdir = abs_path(dev, STATE_DIR "/current");
		s->letter = strdup(st.letter);
		s->sequence = st.sequence;
		if (cdir && rsr_response_open(ctx, cdir, dev->keys, &s->response) < 0) {
			rsr_warn(ctx, "the installed response's manifest does not verify: %s", rsr_ctx_error(ctx));
			s->response = NULL;
		}
	}
	{
		int fd = openat(dev->rootfd, RSR_GRAFT_IMAGES_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
		struct dirent *de;
		while (d && (de = readdir(d)))
			if (de->d_name[0] != '.')
				s->images_bytes += dir_bytes(dirfd(d), de->d_name, true);
		if (d)
			closedir(d);
		else if (fd >= 0)
			close(fd);
	}
	s->base_copy_bytes = dir_bytes(dev->statefd, "base", false);
	s->reverse_bytes = dir_bytes(dev->statefd, "current", false);
	*ret_state = s;
	return 0;
}

void rsr_device_state_free(struct rsr_device_state *st)
{
	if (!st)
		return;
	free(st->base_build);
	free(st->base_name);
	free(st->letter);
	free(st->removed_letter);
	rsr_response_free(st->response);
	free(st);
}
