/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What the tree of a cryptex may hold, checked where it is built and again
 * on the image's own mount before it is grafted: files, directories,
 * symbolic links and overlay whiteouts; no other device nodes, FIFOs or
 * sockets; and setuid, setgid and file-capability files only as the signed
 * manifest lists them (docs/formats/cryptex.md, "privileged").
 */
#include <dirent.h>
#include <limits.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#include "image-internal.h"

#define CAPS_XATTR "security.capability"
#define XATTR_LIST_BUF 65536 /* the kernel's XATTR_LIST_MAX */

struct walk {
	struct rsr_ctx *ctx;
	const char *what; /* names the tree in messages */
	unsigned flags;
	const struct rsr_cryptex *cx; /* at graft: what the manifest lists; NULL at build */
	bool *seen;		      /* which of cx's privileged files the tree has */
	uint64_t max_entries, entries;
	struct rsr_image_tree t;
	char *xattrs;	     /* XATTR_LIST_BUF bytes, when stripping */
	char path[PATH_MAX]; /* "/usr/bin/sudo": the entry being looked at */
};

void rsr_image_privileged_free(struct rsr_image_privileged *v, size_t n)
{
	if (!v)
		return;
	for (size_t i = 0; i < n; i++)
		free(v[i].path);
	free(v);
}

void rsr_image_tree_free(struct rsr_image_tree *t)
{
	rsr_image_privileged_free(t->priv, t->n_priv);
	t->priv = NULL;
	t->n_priv = 0;
}

/* One UTF-8 sequence at s (at most n bytes): its length, 0 if it is not valid (RFC 3629). */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	size_t len = s[0] < 0x80		   ? 1
		     : s[0] >= 0xc2 && s[0] < 0xe0 ? 2
		     : s[0] >= 0xe0 && s[0] < 0xf0 ? 3
		     : s[0] >= 0xf0 && s[0] < 0xf5 ? 4
						   : 0;
	uint32_t c;

	if (len == 0 || len > n)
		return 0;
	if (len == 1)
		return 1;
	c = s[0] & (0x7f >> len);
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		c = c << 6 | (s[i] & 0x3f);
	}
	if ((len == 3 && (c < 0x800 || (c >= 0xd800 && c < 0xe000))) || (len == 4 && (c < 0x10000 || c > 0x10ffff)))
		return 0;
	return len;
}

bool rsr_image_privileged_path_valid(const char *s)
{
	size_t n = s ? strlen(s) : 0;

	if (n < 2 || n >= PATH_MAX || s[0] != '/' || s[n - 1] == '/')
		return false;
	for (size_t i = 0; i < n;) {
		size_t l;
		if (s[i] == '/') {
			const char *c = s + i + 1;
			if (*c == '/' || (c[0] == '.' && (c[1] == '/' || !c[1])) ||
			    (c[0] == '.' && c[1] == '.' && (c[2] == '/' || !c[2])))
				return false;
		}
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f || !(l = utf8_len((const unsigned char *)s + i, n - i)))
			return false;
		i += l;
	}
	return true;
}

/* "/proc/self/fd/N/NAME": the entry NAME of the directory open at dfd, for the l*xattr calls. */
static void fd_entry(char buf[], size_t size, int dfd, const char *name)
{
	snprintf(buf, size, "/proc/self/fd/%d/%s", dfd, name);
}

/* Removes every extended attribute of the entry but its file capabilities (a build's staging copy only). */
static int strip_xattrs(struct walk *w, int dfd, const char *name)
{
	char p[320];
	ssize_t n;

	fd_entry(p, sizeof(p), dfd, name);
	n = llistxattr(p, w->xattrs, XATTR_LIST_BUF);
	if (n < 0)
		return errno == ENOTSUP ? 0
					: rsr_error_errno(w->ctx, -errno, "%s: %s: cannot list extended attributes",
							  w->what, w->path);
	for (ssize_t off = 0; off < n; off += (ssize_t)strlen(w->xattrs + off) + 1) {
		const char *x = w->xattrs + off;
		if (strcmp(x, CAPS_XATTR) && lremovexattr(p, x) < 0 && errno != ENODATA)
			return rsr_error_errno(w->ctx, -errno, "%s: %s: cannot drop extended attribute %s", w->what,
					       w->path, x);
	}
	return 0;
}

static int has_caps(struct walk *w, int dfd, const char *name, bool *ret)
{
	char p[320];

	fd_entry(p, sizeof(p), dfd, name);
	if (lgetxattr(p, CAPS_XATTR, NULL, 0) >= 0) {
		*ret = true;
		return 0;
	}
	if (errno != ENODATA && errno != ENOTSUP)
		return rsr_error_errno(w->ctx, -errno, "%s: %s: cannot read its file capabilities", w->what, w->path);
	*ret = false;
	return 0;
}

static int cmp_privileged(const void *a, const void *b)
{
	return strcmp(((const struct rsr_image_privileged *)a)->path, ((const struct rsr_image_privileged *)b)->path);
}

static void describe(char buf[], size_t size, unsigned mode, bool caps)
{
	snprintf(buf, size, "mode %04o%s%s%s", mode & 07777, mode & S_ISUID ? ", setuid" : "",
		 mode & S_ISGID ? ", setgid" : "", caps ? ", with file capabilities" : ", without file capabilities");
}

/* A setuid, setgid or file-capability file: kept (at build) or checked against the manifest (at graft). */
static int privileged(struct walk *w, const struct stat *st, bool caps)
{
	unsigned mode = st->st_mode & 07777;
	char have[96], want[96];

	if (!w->cx) {
		struct rsr_image_privileged *v;
		if (!rsr_image_privileged_path_valid(w->path))
			return rsr_error(w->ctx, RSR_E_FORMAT,
					 "%s: refused: %s is setuid, setgid or has file capabilities, and its path is "
					 "not UTF-8 without control characters, which the signed manifest must list",
					 w->what, w->path);
		if (w->t.n_priv >= RSR_CRYPTEX_PRIVILEGED_MAX)
			return rsr_error(w->ctx, RSR_E_LIMIT,
					 "%s: more than %d setuid, setgid or file-capability files", w->what,
					 RSR_CRYPTEX_PRIVILEGED_MAX);
		v = realloc(w->t.priv, (w->t.n_priv + 1) * sizeof(*v));
		if (!v)
			return rsr_error(w->ctx, -ENOMEM, "out of memory");
		w->t.priv = v;
		if (!(v[w->t.n_priv].path = strdup(w->path)))
			return rsr_error(w->ctx, -ENOMEM, "out of memory");
		v[w->t.n_priv].mode = mode;
		v[w->t.n_priv++].caps = caps;
		return 0;
	}
	describe(have, sizeof(have), mode, caps);
	if (st->st_uid != 0 || st->st_gid != 0)
		return rsr_error(w->ctx, RSR_E_FORMAT,
				 "%s: refused: %s (%s) is owned by %u:%u; rsr builds own every file by root", w->what,
				 w->path, have, (unsigned)st->st_uid, (unsigned)st->st_gid);
	size_t n = rsr_cryptex_privileged_count(w->cx), lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(w->path, rsr_cryptex_privileged_path(w->cx, mid));
		if (c == 0) {
			describe(want, sizeof(want), rsr_cryptex_privileged_mode(w->cx, mid),
				 rsr_cryptex_privileged_caps(w->cx, mid));
			if (rsr_cryptex_privileged_mode(w->cx, mid) != mode ||
			    rsr_cryptex_privileged_caps(w->cx, mid) != caps)
				return rsr_error(w->ctx, RSR_E_MISMATCH,
						 "%s: refused: %s has %s in the image, its signed manifest lists it "
						 "with %s",
						 w->what, w->path, have, want);
			w->seen[mid] = true;
			return 0;
		}
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return rsr_error(
	    w->ctx, RSR_E_MISMATCH,
	    "%s: refused: %s has %s, and its signed manifest does not list it among the setuid, setgid and "
	    "file-capability files",
	    w->what, w->path, have);
}

/* One entry of a directory: its type, privileges and extended attributes; directories are walked. */
static int walk_dir(struct walk *w, int dfd, unsigned depth);

static int walk_entry(struct walk *w, int dfd, const char *name, unsigned depth)
{
	struct stat st;
	bool caps = false;
	int r;

	if (++w->entries > w->max_entries)
		return rsr_error(w->ctx, RSR_E_LIMIT, "%s: refused: holds more than %llu entries%s", w->what,
				 (unsigned long long)w->max_entries,
				 w->cx ? ", the number its signed manifest counts" : "");
	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return rsr_error_errno(w->ctx, -errno, "%s: %s", w->what, w->path);
	if (S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0)) {
		/* An overlayfs whiteout: it hides the base's file of that name. */
	} else if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
		return rsr_error(w->ctx, RSR_E_FORMAT,
				 "%s: refused: %s is a %s device %u:%u; a cryptex holds no device nodes but overlay "
				 "whiteouts (character device 0:0)",
				 w->what, w->path, S_ISCHR(st.st_mode) ? "character" : "block", major(st.st_rdev),
				 minor(st.st_rdev));
	} else if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode) && !S_ISLNK(st.st_mode)) {
		return rsr_error(w->ctx, RSR_E_FORMAT,
				 "%s: refused: %s is a %s; a cryptex holds files, directories, symbolic links and "
				 "overlay whiteouts",
				 w->what, w->path, S_ISFIFO(st.st_mode) ? "FIFO" : "socket");
	}
	if ((w->flags & RSR_IMAGE_TREE_STRIP) && (r = strip_xattrs(w, dfd, name)) < 0)
		return r;
	if (S_ISREG(st.st_mode) && (r = has_caps(w, dfd, name, &caps)) < 0)
		return r;
	w->t.caps += caps;
	if (S_ISREG(st.st_mode) && (caps || (st.st_mode & (S_ISUID | S_ISGID))) && (r = privileged(w, &st, caps)) < 0)
		return r;
	if (!S_ISDIR(st.st_mode)) {
		w->t.files++;
		return 0;
	}
	w->t.dirs++;
	if (depth >= RSR_CRYPTEX_TREE_MAX_DEPTH)
		return rsr_error(w->ctx, RSR_E_LIMIT, "%s: refused: %s is nested more than %d directories deep",
				 w->what, w->path, RSR_CRYPTEX_TREE_MAX_DEPTH);
	_cleanup_close_ int sub = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (sub < 0)
		return rsr_error_errno(w->ctx, -errno, "%s: %s", w->what, w->path);
	return walk_dir(w, sub, depth + 1);
}

static int walk_dir(struct walk *w, int dfd, unsigned depth)
{
	int fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd < 0 ? NULL : fdopendir(fd);
	size_t plen = strlen(w->path);
	struct dirent *de;
	int r = 0;

	if (!d) {
		r = rsr_error_errno(w->ctx, -errno, "%s: %s", w->what, plen ? w->path : "/");
		if (fd >= 0)
			close(fd);
		return r;
	}
	while (r == 0) {
		errno = 0;
		if (!(de = readdir(d))) {
			if (errno)
				r = rsr_error_errno(w->ctx, -errno, "%s: %s", w->what, plen ? w->path : "/");
			break;
		}
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if ((size_t)snprintf(w->path + plen, sizeof(w->path) - plen, "/%s", de->d_name) >=
		    sizeof(w->path) - plen) {
			w->path[plen] = '\0';
			r = rsr_error(w->ctx, RSR_E_LIMIT, "%s: refused: a path below %s is longer than %d bytes",
				      w->what, plen ? w->path : "/", PATH_MAX - 1);
			break;
		}
		r = walk_entry(w, dirfd(d), de->d_name, depth);
		w->path[plen] = '\0';
	}
	closedir(d);
	return r;
}

int rsr_image_scan_tree(struct rsr_ctx *ctx, int dfd, const char *what, unsigned flags, struct rsr_image_tree *ret)
{
	struct walk *w = calloc(1, sizeof(*w));
	int r;

	if (!w || ((flags & RSR_IMAGE_TREE_STRIP) && !(w->xattrs = malloc(XATTR_LIST_BUF)))) {
		free(w);
		return rsr_error(ctx, -ENOMEM, "out of memory");
	}
	w->ctx = ctx;
	w->what = what;
	w->flags = flags;
	w->max_entries = RSR_CRYPTEX_TREE_MAX_ENTRIES;
	/* The root's own attributes reach the image too. */
	r = (flags & RSR_IMAGE_TREE_STRIP) ? strip_xattrs(w, dfd, ".") : 0;
	if (r >= 0)
		r = walk_dir(w, dfd, 0);
	if (r >= 0) {
		if (w->t.n_priv > 0) /* qsort's array may not be NULL, even when empty */
			qsort(w->t.priv, w->t.n_priv, sizeof(*w->t.priv), cmp_privileged);
		*ret = w->t;
	} else {
		rsr_image_tree_free(&w->t);
	}
	free(w->xattrs);
	free(w);
	return r;
}

int rsr_cryptex_check_tree(struct rsr_ctx *ctx, const struct rsr_cryptex *cx, int dfd, const char *what)
{
	size_t n = rsr_cryptex_privileged_count(cx);
	struct walk *w = calloc(1, sizeof(*w));
	uint64_t listed;
	int r;

	if (!w || !(w->seen = calloc(n + 1, sizeof(bool)))) {
		free(w);
		return rsr_error(ctx, -ENOMEM, "out of memory");
	}
	w->ctx = ctx;
	w->what = what ? what : rsr_cryptex_path(cx);
	w->cx = cx;
	/* The signed counts bound the walk: the files, the directories and the release file. */
	if (rsr_add_overflow(rsr_cryptex_file_count(cx), rsr_cryptex_directory_count(cx), &listed) ||
	    rsr_add_overflow(listed, 1, &listed))
		listed = UINT64_MAX;
	w->max_entries = RSR_MIN(listed, (uint64_t)RSR_CRYPTEX_TREE_MAX_ENTRIES);
	r = walk_dir(w, dfd, 0);
	for (size_t i = 0; r >= 0 && i < n; i++)
		if (!w->seen[i])
			r = rsr_error(ctx, RSR_E_MISMATCH,
				      "%s: refused: its signed manifest lists %s as setuid, setgid or with file "
				      "capabilities, and the image has no such file",
				      w->what, rsr_cryptex_privileged_path(cx, i));
	rsr_image_tree_free(&w->t);
	free(w->seen);
	free(w);
	return r;
}
