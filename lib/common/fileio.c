/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * File helpers: complete reads and writes, bounded whole-file reads, and the
 * write-temp, fsync, rename, fsync-directory sequence behind every state
 * change rsr makes.
 */
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <sys/stat.h>

#include "internal.h"

bool rsr_valid_name(const char *s)
{
	size_t n = s ? strlen(s) : 0;

	if (n == 0 || n > 64 || s[0] == '.' || s[0] == '-')
		return false;
	for (const char *p = s; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_' ||
		      *p == '.' || *p == '-' || *p == '+' || *p == '~' || *p == ':'))
			return false;
	return true;
}

bool rsr_valid_slot_name(const char *s)
{
	if (!rsr_valid_name(s))
		return false;
	for (const char *p = s; *p; p++)
		if (*p == '+' || *p == '~' || *p == ':')
			return false;
	return true;
}

bool rsr_valid_token(const char *s)
{
	size_t n = s ? strlen(s) : 0;

	if (n == 0 || n > 128)
		return false;
	for (const char *p = s; *p; p++)
		if (*p <= ' ' || *p >= 127 || *p == '"' || *p == '\'' || *p == '\\' || *p == '$' || *p == '`')
			return false;
	return true;
}

void rsr_hex_encode(const void *buf, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";
	const uint8_t *b = buf;

	for (size_t i = 0; i < len; i++) {
		out[2 * i] = digits[b[i] >> 4];
		out[2 * i + 1] = digits[b[i] & 15];
	}
	out[2 * len] = '\0';
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

bool rsr_hex_decode(const char *hex, void *out, size_t len)
{
	uint8_t *b = out;

	if (!hex || strlen(hex) != 2 * len)
		return false;
	for (size_t i = 0; i < len; i++) {
		int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return false;
		b[i] = (uint8_t)(hi << 4 | lo);
	}
	return true;
}

int rsr_write_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int rsr_pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
	const uint8_t *p = buf;

	while (len > 0) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

int rsr_pread_all(int fd, void *buf, size_t len, uint64_t off)
{
	uint8_t *p = buf;

	while (len > 0) {
		ssize_t n = pread(fd, p, len, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -ENODATA;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

int rsr_copy_range(int in_fd, uint64_t in_off, int out_fd, uint64_t out_off, uint64_t len)
{
	off_t io = (off_t)in_off, oo = (off_t)out_off;
	bool fallback = false;

	while (len > 0 && !fallback) {
		ssize_t n = copy_file_range(in_fd, &io, out_fd, &oo, (size_t)RSR_MIN(len, 1u << 30), 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EXDEV || errno == ENOSYS || errno == EOPNOTSUPP || errno == EINVAL)
				fallback = true;
			else
				return -errno;
		} else if (n == 0) {
			return -ENODATA;
		} else {
			len -= (uint64_t)n;
		}
	}
	if (len > 0) {
		size_t bufsz = 1u << 20;
		_cleanup_free_ uint8_t *buf = malloc(bufsz);
		if (!buf)
			return -ENOMEM;
		while (len > 0) {
			size_t n = (size_t)RSR_MIN(len, bufsz);
			int r = rsr_pread_all(in_fd, buf, n, (uint64_t)io);
			if (r < 0)
				return r;
			r = rsr_pwrite_all(out_fd, buf, n, (uint64_t)oo);
			if (r < 0)
				return r;
			io += (off_t)n;
			oo += (off_t)n;
			len -= n;
		}
	}
	return 0;
}

int rsr_fsync_dir_of(const char *path)
{
	_cleanup_free_ char *copy = strdup(path);
	_cleanup_close_ int fd = -1;

	if (!copy)
		return -ENOMEM;
	fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		return -errno;
	return 0;
}

int rsr_mkdir_p_at(struct rsr_ctx *ctx, int dirfd, const char *path, const char *what)
{
	_cleanup_free_ char *p = strdup(path);
	char *s;

	if (!p)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	for (s = p; *s == '/'; s++)
		;
	for (;; s++) {
		if ((*s == '/' || *s == '\0') && s > p && s[-1] != '/') {
			char c = *s;
			*s = '\0';
			if (mkdirat(dirfd, p, 0755) < 0 && errno != EEXIST)
				return rsr_error_errno(ctx, -errno, "%s%s", what ? what : "", p);
			*s = c;
		}
		if (!*s)
			break;
	}
	return 0;
}

int rsr_read_file(struct rsr_ctx *ctx, const char *path, size_t max, char **ret_buf, size_t *ret_len)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	_cleanup_free_ char *buf = NULL;
	struct stat st;
	size_t len = 0, cap;

	if (fd < 0)
		return rsr_error_errno(ctx, -errno, "%s", path);
	if (fstat(fd, &st) < 0)
		return rsr_error_errno(ctx, -errno, "%s", path);
	if (!S_ISREG(st.st_mode))
		return rsr_error(ctx, -EINVAL, "%s: not a regular file", path);
	if ((uint64_t)st.st_size > max)
		return rsr_error(ctx, RSR_E_LIMIT, "%s: %lld bytes, more than the %zu allowed", path,
				 (long long)st.st_size, max);
	cap = (size_t)st.st_size + 1;
	buf = malloc(cap);
	if (!buf)
		return rsr_error(ctx, -ENOMEM, "%s: out of memory", path);
	for (;;) {
		ssize_t n = read(fd, buf + len, cap - len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return rsr_error_errno(ctx, -errno, "%s", path);
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len == cap) /* the file grew while we read it */
			return rsr_error(ctx, RSR_E_LIMIT, "%s: changed size while being read", path);
	}
	buf[len] = '\0';
	*ret_buf = TAKE_PTR(buf);
	*ret_len = len;
	return 0;
}

static void atomic_free(struct rsr_atomic_file *af)
{
	if (!af)
		return;
	if (af->fd >= 0)
		close(af->fd);
	if (af->dirfd >= 0)
		close(af->dirfd);
	free(af->tmpname);
	free(af->name);
	free(af);
}

int rsr_atomic_open(struct rsr_ctx *ctx, const char *path, unsigned mode, struct rsr_atomic_file **ret_af)
{
	_cleanup_free_ char *dcopy = strdup(path), *bcopy = strdup(path);
	struct rsr_atomic_file *af;
	const char *base;
	int r;

	if (!dcopy || !bcopy)
		return rsr_error(ctx, -ENOMEM, "%s: out of memory", path);
	af = calloc(1, sizeof(*af));
	if (!af)
		return rsr_error(ctx, -ENOMEM, "%s: out of memory", path);
	af->fd = af->dirfd = -1;
	base = basename(bcopy);
	af->name = strdup(base);
	af->dirfd = open(dirname(dcopy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (af->dirfd < 0) {
		r = rsr_error_errno(ctx, -errno, "%s: cannot open its directory", path);
		goto fail;
	}
	for (unsigned attempt = 0; attempt < 100; attempt++) {
		char suffix[32];
		uint8_t rnd[6];
		char hex[13];

		if (getentropy(rnd, sizeof(rnd)) < 0) {
			r = rsr_error_errno(ctx, -errno, "getentropy");
			goto fail;
		}
		rsr_hex_encode(rnd, sizeof(rnd), hex);
		snprintf(suffix, sizeof(suffix), ".%s.tmp", hex);
		free(af->tmpname);
		af->tmpname = malloc(strlen(base) + strlen(suffix) + 2);
		if (!af->tmpname || !af->name) {
			r = rsr_error(ctx, -ENOMEM, "%s: out of memory", path);
			goto fail;
		}
		sprintf(af->tmpname, ".%s%s", base, suffix);
		af->fd = openat(af->dirfd, af->tmpname, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
		if (af->fd >= 0)
			break;
		if (errno != EEXIST) {
			r = rsr_error_errno(ctx, -errno, "%s: cannot create a temporary file beside it", path);
			goto fail;
		}
	}
	if (af->fd < 0) {
		r = rsr_error(ctx, -EEXIST, "%s: no free temporary name", path);
		goto fail;
	}
	/* The umask must not change the mode of what we publish. */
	if (fchmod(af->fd, mode) < 0) {
		r = rsr_error_errno(ctx, -errno, "%s: chmod", path);
		unlinkat(af->dirfd, af->tmpname, 0);
		goto fail;
	}
	*ret_af = af;
	return 0;
fail:
	atomic_free(af);
	return r;
}

int rsr_atomic_commit_to(struct rsr_ctx *ctx, struct rsr_atomic_file *af, int todirfd, const char *name)
{
	int r = 0;

	if (fsync(af->fd) < 0)
		r = rsr_error_errno(ctx, -errno, "%s: fsync", af->name);
	else if (renameat(af->dirfd, af->tmpname, todirfd, name) < 0)
		r = rsr_error_errno(ctx, -errno, "%s: rename into place", name);
	else if (fsync(todirfd) < 0 || fsync(af->dirfd) < 0)
		r = rsr_error_errno(ctx, -errno, "%s: fsync of its directory", name);
	if (r < 0) /* after a successful rename there is nothing left to remove */
		unlinkat(af->dirfd, af->tmpname, 0);
	atomic_free(af);
	return r;
}

int rsr_atomic_commit(struct rsr_ctx *ctx, struct rsr_atomic_file *af)
{
	int r = 0;

	if (fsync(af->fd) < 0)
		r = rsr_error_errno(ctx, -errno, "%s: fsync", af->name);
	else if (renameat(af->dirfd, af->tmpname, af->dirfd, af->name) < 0)
		r = rsr_error_errno(ctx, -errno, "%s: rename into place", af->name);
	else if (fsync(af->dirfd) < 0)
		r = rsr_error_errno(ctx, -errno, "%s: fsync of its directory", af->name);
	if (r < 0) /* after a successful rename there is nothing left to remove */
		unlinkat(af->dirfd, af->tmpname, 0);
	atomic_free(af);
	return r;
}

void rsr_atomic_abort(struct rsr_atomic_file *af)
{
	if (!af)
		return;
	unlinkat(af->dirfd, af->tmpname, 0);
	atomic_free(af);
}

int rsr_write_file_atomic(struct rsr_ctx *ctx, const char *path, const void *buf, size_t len, unsigned mode)
{
	struct rsr_atomic_file *af;
	int r;

	r = rsr_atomic_open(ctx, path, mode, &af);
	if (r < 0)
		return r;
	r = rsr_write_all(af->fd, buf, len);
	if (r < 0) {
		rsr_atomic_abort(af);
		return rsr_error_errno(ctx, r, "%s: write", path);
	}
	return rsr_atomic_commit(ctx, af);
}
