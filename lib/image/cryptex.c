/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Cryptex files: build (mkfs.erofs, hash tree, signed manifest), parse with
 * every length and offset checked, verify, and inspect. The format is in
 * docs/formats/cryptex.md.
 */
#include <assert.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <spawn.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <jansson.h>

#include "internal.h"
#include "rsr-config.h"
#include "rsr/cryptex.h"
#include "image-internal.h"
#include "verity.h"

#define CPTX_MAGIC "RSRCPTX\0"
#define CPTX_VERSION 1
#define SIG_CONTEXT "RSR-CRYPTEX-MANIFEST-V1" /* with its NUL: 24 bytes signed before the manifest */
#define MAX_LIST 256
#define MAX_STR 128
/* JSON values a manifest may hold: its lists of at most MAX_LIST, with room to spare, not 1 MiB of "[]". */
#define MAX_JSON_CONTAINERS 4096
#define MAX_JSON_SCALARS 65536

/* The fixed 4 KiB header, little-endian. */
struct cptx_header {
	uint8_t magic[8];
	uint8_t version[4];
	uint8_t header_size[4];
	uint8_t file_size[8];
	uint8_t image_offset[8];
	uint8_t image_size[8];
	uint8_t tree_offset[8];
	uint8_t tree_size[8];
	uint8_t manifest_offset[8];
	uint8_t manifest_size[4];
	uint8_t flags[4];
	uint8_t key_id[32];
	uint8_t signature[64];
	uint8_t reserved[RSR_CRYPTEX_HEADER_SIZE - 168];
};
static_assert(sizeof(struct cptx_header) == RSR_CRYPTEX_HEADER_SIZE, "cryptex header is 4096 bytes");

struct rsr_cryptex {
	char *path;
	int fd;
	uint64_t file_size, image_offset, image_size, tree_offset, tree_size, manifest_offset;
	uint64_t data_blocks, timestamp, files, directories;
	uint8_t key_id[32], signature[64], root_hash[32], salt[RSR_VERITY_SALT_MAX];
	size_t salt_len;
	char key_id_hex[65], root_hash_hex[65], salt_hex[2 * RSR_VERITY_SALT_MAX + 1];
	char *manifest;
	size_t manifest_len;
	char *name, *version;
	char **base_builds, **paths;
	size_t n_base_builds, n_paths;
	struct rsr_image_package *packages; /* the Debian packages it was built from, if any */
	size_t n_packages;
	struct rsr_image_privileged *privileged; /* its setuid, setgid and file-capability files */
	size_t n_privileged;
};

/* Both derivations return -ENOMEM when hashing cannot allocate: the image must not change then. */
static int derive_salt(const char *name, uint8_t salt[32])
{
	/* Stable across versions of a slot, so unchanged blocks keep their hashes and patches stay small. */
	char buf[128];
	int n = snprintf(buf, sizeof(buf), "rsr-cryptex-salt%c%s", 0, name);
	return rsr_sha256(buf, (size_t)n, salt);
}

static int derive_uuid(const char *name, const char *version, char out[37])
{
	uint8_t d[32];
	char hex[65];
	_cleanup_free_ char *s = NULL;
	size_t len = strlen(name) + strlen(version) + 32;
	int n;

	s = malloc(len);
	if (!s)
		return -ENOMEM;
	n = snprintf(s, len, "rsr-cryptex-uuid%c%s%c%s", 0, name, 0, version);
	if (rsr_sha256(s, (size_t)n, d) < 0)
		return -ENOMEM;
	d[6] = (uint8_t)((d[6] & 0x0f) | 0x80); /* RFC 9562 version 8: custom */
	d[8] = (uint8_t)((d[8] & 0x3f) | 0x80);
	rsr_hex_encode(d, 16, hex);
	snprintf(out, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16, hex + 20);
	return 0;
}

/* ---- building ---- */

/*
 * Removes everything below dfd. It reads directories with getdents64 into a
 * stack buffer, not opendir, so that the staging area is removed also when
 * memory has run out (nftw gave up then and left it behind). Entries are
 * removed while the directory is read, so it rereads until a pass removes
 * nothing.
 */
static void remove_contents(int dfd, unsigned depth)
{
	_Alignas(struct dirent64) char buf[1024];
	bool removed = true;

	while (removed) {
		removed = false;
		if (lseek(dfd, 0, SEEK_SET) < 0)
			return;
		for (;;) {
			ssize_t n = getdents64(dfd, buf, sizeof(buf));
			if (n <= 0)
				break;
			for (ssize_t off = 0; off < n;) {
				struct dirent64 *de = (struct dirent64 *)(void *)(buf + off);
				off += de->d_reclen;
				if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
					continue;
				if (unlinkat(dfd, de->d_name, 0) == 0) {
					removed = true;
				} else if (errno == EISDIR && depth < 256) {
					int sub =
					    openat(dfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
					if (sub >= 0) {
						remove_contents(sub, depth + 1);
						close(sub);
					}
					if (unlinkat(dfd, de->d_name, AT_REMOVEDIR) == 0)
						removed = true;
				}
			}
		}
	}
}

static void remove_tree(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

	if (fd >= 0) {
		remove_contents(fd, 0);
		close(fd);
	}
	rmdir(path);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_strv(char **v, size_t n)
{
	if (!v)
		return;
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/*
 * Writes the header and the filesystem image in whole 2 MiB windows of the
 * output file, each one pwrite at a window boundary. Where the filesystem
 * has large folios (ext4 from Linux 6.16, XFS), the page cache then holds
 * each window in one huge folio, and verification hashes it in place
 * instead of copying it out (lib/common/view.c). copy_file_range would share extents on a filesystem
 * that can, but leaves the cache in small folios where it copies.
 */
static int write_header_and_image(int out_fd, const struct cptx_header *hdr, int img_fd, uint64_t image_size)
{
	_cleanup_free_ uint8_t *buf = rsr_alloc_large(RSR_VIEW_WINDOW);
	uint64_t end = RSR_CRYPTEX_HEADER_SIZE + image_size;

	if (!buf)
		return -ENOMEM;
	for (uint64_t off = 0; off < end; off += RSR_VIEW_WINDOW) {
		size_t n = (size_t)RSR_MIN(RSR_VIEW_WINDOW, end - off), head = 0;
		int r;

		if (off == 0) {
			memcpy(buf, hdr, sizeof(*hdr));
			head = sizeof(*hdr);
		}
		if ((r = rsr_pread_all(img_fd, buf + head, n - head, off + head - RSR_CRYPTEX_HEADER_SIZE)) < 0 ||
		    (r = rsr_pwrite_all(out_fd, buf, n, off)) < 0)
			return r;
	}
	return 0;
}

/* ---- checking what mkfs.erofs made ---- */

struct tree_cmp {
	struct rsr_ctx *ctx;
	char path[PATH_MAX]; /* of the entry being compared, relative, for messages */
	uint8_t *a, *b;	     /* TREE_CMP_BUF bytes each */
};
#define TREE_CMP_BUF (64 * 1024)

static int tree_differs(struct tree_cmp *c, const char *what)
{
	return rsr_error(c->ctx, RSR_E_TOOL, "/%s: %s", c->path, what);
}

static int same_contents(struct tree_cmp *c, int afd, int bfd, const char *name, uint64_t size)
{
	_cleanup_close_ int fa = openat(afd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	_cleanup_close_ int fb = openat(bfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);

	if (fa < 0 || fb < 0)
		return rsr_error_errno(c->ctx, -errno, "/%s", c->path);
	for (uint64_t off = 0; off < size;) {
		size_t n = (size_t)RSR_MIN(size - off, TREE_CMP_BUF);
		int r = rsr_pread_all(fa, c->a, n, off);
		if (r == 0)
			r = rsr_pread_all(fb, c->b, n, off);
		if (r == -ENODATA)
			return tree_differs(c, "changed size while being compared");
		if (r < 0)
			return rsr_error_errno(c->ctx, r, "/%s: read", c->path);
		if (memcmp(c->a, c->b, n) != 0)
			return tree_differs(c, "the content differs");
		off += n;
	}
	return 0;
}

/* Number of entries of a directory, without . and .. (-errno on failure). */
static long count_entries(int dfd)
{
	int fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd < 0 ? NULL : fdopendir(fd);
	struct dirent *de;
	long n = 0;

	if (!d) {
		n = -errno;
		if (fd >= 0)
			close(fd);
		return n;
	}
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

/*
 * Compares directory b (the extracted image) with a (the tree): the same
 * names, types, file contents, symlink targets and device numbers (overlayfs
 * whiteouts are character devices). Modes and owners are not compared: the
 * extraction applies its own.
 */
static int same_dir(struct tree_cmp *c, int afd, int bfd, unsigned depth)
{
	size_t plen = strlen(c->path);
	long na = count_entries(afd), nb = count_entries(bfd);
	int fd, r = 0;
	DIR *d;
	struct dirent *de;

	if (na < 0 || nb < 0)
		return rsr_error_errno(c->ctx, (int)(na < 0 ? na : nb), "/%s", c->path);
	if (na != nb)
		return tree_differs(c, "the image's directory has another number of entries");
	if (depth > 256)
		return tree_differs(c, "nested too deeply");
	fd = openat(afd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	d = fd < 0 ? NULL : fdopendir(fd);
	if (!d) {
		r = rsr_error_errno(c->ctx, -errno, "/%s", c->path);
		if (fd >= 0)
			close(fd);
		return r;
	}
	while (r == 0 && (de = readdir(d))) {
		struct stat sa, sb;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if ((size_t)snprintf(c->path + plen, sizeof(c->path) - plen, "%s%s", plen ? "/" : "", de->d_name) >=
		    sizeof(c->path) - plen) {
			r = tree_differs(c, "path too long");
			break;
		}
		if (fstatat(afd, de->d_name, &sa, AT_SYMLINK_NOFOLLOW) < 0) {
			r = rsr_error_errno(c->ctx, -errno, "/%s", c->path);
			break;
		}
		if (fstatat(bfd, de->d_name, &sb, AT_SYMLINK_NOFOLLOW) < 0) {
			r = errno == ENOENT ? tree_differs(c, "missing from the image")
					    : rsr_error_errno(c->ctx, -errno, "/%s", c->path);
			break;
		}
		if ((sa.st_mode & S_IFMT) != (sb.st_mode & S_IFMT)) {
			r = tree_differs(c, "has another file type in the image");
		} else if (S_ISREG(sa.st_mode)) {
			r = sa.st_size != sb.st_size ? tree_differs(c, "has another size in the image")
						     : same_contents(c, afd, bfd, de->d_name, (uint64_t)sa.st_size);
		} else if (S_ISLNK(sa.st_mode)) {
			ssize_t la = readlinkat(afd, de->d_name, (char *)c->a, TREE_CMP_BUF);
			ssize_t lb = readlinkat(bfd, de->d_name, (char *)c->b, TREE_CMP_BUF);
			if (la < 0 || lb < 0)
				r = rsr_error_errno(c->ctx, -errno, "/%s", c->path);
			else if (la != lb || memcmp(c->a, c->b, (size_t)la) != 0)
				r = tree_differs(c, "the symbolic link's target differs");
		} else if (S_ISCHR(sa.st_mode) || S_ISBLK(sa.st_mode)) {
			if (sa.st_rdev != sb.st_rdev)
				r = tree_differs(c, "has another device number in the image");
		} else if (S_ISDIR(sa.st_mode)) {
			_cleanup_close_ int sub_a =
			    openat(afd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			_cleanup_close_ int sub_b =
			    openat(bfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub_a < 0 || sub_b < 0)
				r = rsr_error_errno(c->ctx, -errno, "/%s", c->path);
			else
				r = same_dir(c, sub_a, sub_b, depth + 1);
		}
		c->path[plen] = '\0';
	}
	closedir(d);
	return r;
}

/* 0 if the tree below `b` holds what the tree below `a` holds, else an error naming the first difference. */
static int same_tree(struct rsr_ctx *ctx, const char *a, const char *b)
{
	_cleanup_close_ int afd = open(a, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	_cleanup_close_ int bfd = open(b, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	_cleanup_free_ struct tree_cmp *c = calloc(1, sizeof(*c));
	_cleanup_free_ uint8_t *buf = malloc(2 * TREE_CMP_BUF);

	if (!c || !buf)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	if (afd < 0 || bfd < 0)
		return rsr_error_errno(ctx, -errno, "%s", afd < 0 ? a : b);
	c->ctx = ctx;
	c->a = buf;
	c->b = buf + TREE_CMP_BUF;
	return same_dir(c, afd, bfd, 0);
}

/* The top-level directories of src: sorted, each a real directory. */
static int scan_top(struct rsr_ctx *ctx, const char *src, char ***ret, size_t *ret_n)
{
	DIR *d = opendir(src);
	char **v = NULL;
	size_t n = 0;
	struct dirent *de;
	int r = 0;

	if (!d)
		return rsr_error_errno(ctx, -errno, "%s", src);
	while ((de = readdir(d))) {
		struct stat st;
		char **nv;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			r = rsr_error_errno(ctx, -errno, "%s/%s", src, de->d_name);
			goto fail;
		}
		if (!strcmp(de->d_name, RSR_CRYPTEX_RELEASE_FILE)) {
			r = rsr_error(ctx, -EEXIST, "%s: the name '%s' is reserved for the release file rsr adds", src,
				      de->d_name);
			goto fail;
		}
		if (!S_ISDIR(st.st_mode)) {
			r = rsr_error(
			    ctx, -EINVAL,
			    "%s/%s: every top-level entry must be a directory (it is grafted over the base's)", src,
			    de->d_name);
			goto fail;
		}
		if (!rsr_valid_name(de->d_name)) {
			r = rsr_error(ctx, -EINVAL, "%s/%s: unsupported top-level directory name", src, de->d_name);
			goto fail;
		}
		if (n >= MAX_LIST) {
			r = rsr_error(ctx, RSR_E_LIMIT, "%s: more than %d top-level directories", src, MAX_LIST);
			goto fail;
		}
		nv = realloc(v, (n + 1) * sizeof(*v));
		if (!nv || !(nv[n] = strdup(de->d_name))) {
			v = nv ? nv : v;
			r = rsr_error(ctx, -ENOMEM, "out of memory");
			goto fail;
		}
		v = nv;
		n++;
	}
	if (n == 0) {
		r = rsr_error(ctx, -EINVAL, "%s: empty; a cryptex needs at least one top-level directory such as usr/",
			      src);
		goto fail;
	}
	qsort(v, n, sizeof(*v), cmp_str);
	closedir(d);
	*ret = v;
	*ret_n = n;
	return 0;
fail:
	closedir(d);
	free_strv(v, n);
	return r;
}

int rsr_image_run_tool(struct rsr_ctx *ctx, char *const argv[], const char *out, const char *log)
{
	static char *const envp[] = {"LC_ALL=C", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
				     NULL};
	posix_spawn_file_actions_t fa;
	pid_t pid;
	int r, status;

	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (out)
		posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	else
		posix_spawn_file_actions_adddup2(&fa, STDERR_FILENO, STDOUT_FILENO);
	r = posix_spawnp(&pid, argv[0], &fa, NULL, argv, envp);
	posix_spawn_file_actions_destroy(&fa);
	if (r != 0)
		return rsr_error_errno(ctx, -r, "cannot run %s", argv[0]);
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return rsr_error_errno(ctx, -errno, "waiting for %s", argv[0]);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		char *text = NULL, *last;
		size_t len = 0;
		struct rsr_ctx *tmp = NULL;

		if (rsr_ctx_new(&tmp) == 0 && rsr_read_file(tmp, log, 1 << 20, &text, &len) == 0) {
			while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == ' '))
				text[--len] = '\0';
			last = strrchr(text, '\n');
			last = last ? last + 1 : text;
		} else {
			last = "";
		}
		if (WIFEXITED(status))
			r = rsr_error(ctx, RSR_E_TOOL, "%s failed with exit status %d%s%s", argv[0],
				      WEXITSTATUS(status), *last ? ": " : "", last);
		else
			r = rsr_error(ctx, RSR_E_TOOL, "%s was killed by signal %d", argv[0], WTERMSIG(status));
		free(text);
		rsr_ctx_free(tmp);
		return r;
	}
	return 0;
}

static char *release_text(const struct rsr_cryptex_build_opts *o, char **paths, size_t n_paths,
			  const struct rsr_image_package *pkgs, size_t n_pkgs)
{
	size_t len = 256 + strlen(o->name) + strlen(o->version);
	char *s, *p;

	for (size_t i = 0; i < o->n_base_builds; i++)
		len += strlen(o->base_builds[i]) + 1;
	for (size_t i = 0; i < n_paths; i++)
		len += strlen(paths[i]) + 1;
	for (size_t i = 0; i < n_pkgs; i++)
		len += strlen(pkgs[i].name) + strlen(pkgs[i].architecture) + strlen(pkgs[i].version) + 3;
	s = malloc(len);
	if (!s)
		return NULL;
	p = s + sprintf(s, "CRYPTEX_NAME=%s\nCRYPTEX_VERSION=%s\nCRYPTEX_BASE_BUILDS=\"", o->name, o->version);
	for (size_t i = 0; i < o->n_base_builds; i++)
		p += sprintf(p, "%s%s", i ? " " : "", o->base_builds[i]);
	p += sprintf(p, "\"\nCRYPTEX_PATHS=\"");
	for (size_t i = 0; i < n_paths; i++)
		p += sprintf(p, "%s%s", i ? " " : "", paths[i]);
	p += sprintf(p, "\"\n");
	/* Only for images built from packages, so the release file of any other image stays as it was. */
	if (n_pkgs) {
		p += sprintf(p, "CRYPTEX_PACKAGES=\"");
		for (size_t i = 0; i < n_pkgs; i++)
			p +=
			    sprintf(p, "%s%s:%s=%s", i ? " " : "", pkgs[i].name, pkgs[i].architecture, pkgs[i].version);
		sprintf(p, "\"\n");
	}
	return s;
}

/* The manifest's "privileged": [{"path", "mode", "caps"}...], sorted by path; NULL when out of memory. */
static json_t *privileged_json(const struct rsr_image_privileged *v, size_t n)
{
	json_t *a = json_array();
	bool ok = a != NULL;

	for (size_t i = 0; ok && i < n; i++) {
		char mode[8];
		snprintf(mode, sizeof(mode), "%04o", v[i].mode & 07777);
		rsr_json_push(&ok, a, json_pack("{s:s, s:s, s:b}", "path", v[i].path, "mode", mode, "caps", v[i].caps));
	}
	if (!ok) {
		json_decref(a);
		return NULL;
	}
	return a;
}

/*
 * Checks the tree as given (src_dir) before it is copied, so that a refusal
 * names the vendor's own path, and counts its file-capability files.
 */
static int check_source(struct rsr_ctx *ctx, const char *src_dir, uint64_t *ret_caps)
{
	_cleanup_close_ int dfd = open(src_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct rsr_image_tree t;
	int r;

	if (dfd < 0)
		return rsr_error_errno(ctx, -errno, "%s", src_dir);
	r = rsr_image_scan_tree(ctx, dfd, src_dir, 0, &t);
	if (r < 0)
		return r;
	*ret_caps = t.caps;
	rsr_image_tree_free(&t);
	return 0;
}

/* The manifest's "packages": [{"name", "version", "architecture"}...]; NULL when out of memory. */
static json_t *packages_json(const struct rsr_image_package *pkgs, size_t n)
{
	json_t *a = json_array();
	bool ok = a != NULL;

	for (size_t i = 0; ok && i < n; i++)
		rsr_json_push(&ok, a,
			      json_pack("{s:s, s:s, s:s}", "name", pkgs[i].name, "version", pkgs[i].version,
					"architecture", pkgs[i].architecture));
	if (!ok) {
		json_decref(a);
		return NULL;
	}
	return a;
}

static json_t *strv_json(const char *const *v, size_t n)
{
	json_t *a = json_array();

	for (size_t i = 0; a && i < n; i++)
		if (json_array_append_new(a, json_string(v[i])) < 0) {
			json_decref(a);
			return NULL;
		}
	return a;
}

static int check_build_opts(struct rsr_ctx *ctx, const struct rsr_cryptex_build_opts *o)
{
	if (!o->name || !rsr_valid_slot_name(o->name))
		return rsr_error(ctx, -EINVAL,
				 "cryptex name '%s' is not valid (it names the slot): " RSR_SLOT_NAME_RULE,
				 o->name ? o->name : "");
	if (!o->version || !rsr_valid_token(o->version))
		return rsr_error(ctx, -EINVAL,
				 "version '%s' is not valid: 1 to %d printable characters without spaces or quotes",
				 o->version ? o->version : "", MAX_STR);
	if (o->n_base_builds == 0)
		return rsr_error(ctx, -EINVAL, "at least one base build is needed");
	if (o->n_base_builds > MAX_LIST)
		return rsr_error(ctx, RSR_E_LIMIT, "more than %d base builds", MAX_LIST);
	for (size_t i = 0; i < o->n_base_builds; i++)
		if (!rsr_valid_token(o->base_builds[i]))
			return rsr_error(
			    ctx, -EINVAL,
			    "base build '%s' is not valid: 1 to %d printable characters without spaces or quotes",
			    o->base_builds[i], MAX_STR);
	if (!o->key || !rsr_key_is_private(o->key))
		return rsr_error(ctx, RSR_E_KEY, "building a cryptex needs a private signing key");
	return 0;
}

int rsr_cryptex_build(struct rsr_ctx *ctx, const char *src_dir, const char *out_path,
		      const struct rsr_cryptex_build_opts *opts)
{
	char **paths = NULL;
	size_t n_paths = 0, n_pkgs = 0;
	struct rsr_image_package *pkgs = NULL;
	struct rsr_image_tree tree_info = {0};
	uint64_t src_caps = 0;
	_cleanup_free_ char *src_real = NULL, *out_dir = NULL, *stage = NULL, *root = NULL, *img = NULL, *log = NULL;
	_cleanup_free_ char *release = NULL, *manifest = NULL, *signed_msg = NULL;
	_cleanup_free_ uint8_t *tree = NULL;
	_cleanup_close_ int img_fd = -1;
	struct rsr_atomic_file *af = NULL;
	struct cptx_header hdr;
	struct rsr_verity_layout layout;
	uint8_t salt[32], root_hash[32], key_id[32], sig[64];
	char uuid[37], salt_hex[65], root_hex[65], tbuf[32];
	json_t *m = NULL;
	struct stat st;
	uint64_t image_size, tree_size, manifest_off;
	size_t manifest_len;
	int r;

	r = check_build_opts(ctx, opts);
	if (r < 0)
		return r;
	if (!src_dir && opts->n_debs == 0)
		return rsr_error(ctx, -EINVAL, "a cryptex is built from a directory, packages, or both");
	if (src_dir) {
		src_real = realpath(src_dir, NULL);
		if (!src_real)
			return rsr_error_errno(ctx, -errno, "%s", src_dir);
		/* Checks the source's own layout, with messages that name it. */
		r = scan_top(ctx, src_real, &paths, &n_paths);
		free_strv(paths, n_paths);
		paths = NULL;
		n_paths = 0;
		if (r < 0)
			return r;
		r = check_source(ctx, src_real, &src_caps);
		if (r < 0)
			return r;
	}

	/* The staging area lives beside the output (or in tmpdir); it must not be inside the source. */
	if (opts->tmpdir) {
		out_dir = realpath(opts->tmpdir, NULL);
	} else {
		_cleanup_free_ char *copy = strdup(out_path);
		char *slash = copy ? strrchr(copy, '/') : NULL;
		if (slash)
			*slash = '\0';
		out_dir = copy ? realpath(slash ? (*copy ? copy : "/") : ".", NULL) : NULL;
	}
	if (!out_dir) {
		r = rsr_error_errno(ctx, errno ? -errno : -ENOMEM, "%s: cannot resolve the output directory", out_path);
		goto out;
	}
	if (src_real) {
		size_t sl = strlen(src_real);
		if (strncmp(out_dir, src_real, sl) == 0 && (out_dir[sl] == '/' || out_dir[sl] == '\0')) {
			r = rsr_error(ctx, -EINVAL,
				      "%s: the output and staging area must not be inside the source tree %s", out_path,
				      src_real);
			goto out;
		}
	}
	if (asprintf(&stage, "%s/.rsr-build-XXXXXX", out_dir) < 0) {
		stage = NULL;
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	if (!mkdtemp(stage)) {
		r = rsr_error_errno(ctx, -errno, "%s: cannot create a staging directory", out_dir);
		free(stage);
		stage = NULL;
		goto out;
	}
	if (asprintf(&root, "%s/root", stage) < 0 || asprintf(&img, "%s/image.erofs", stage) < 0 ||
	    asprintf(&log, "%s/log", stage) < 0) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}

	r = rsr_progress(ctx, "copying tree", 0, 1);
	if (r < 0)
		goto out;
	r = rsr_image_stage(ctx, src_real, opts, stage, root, log, &pkgs, &n_pkgs);
	if (r < 0)
		goto out;
	r = scan_top(ctx, root, &paths, &n_paths);
	if (r < 0)
		goto out;
	/*
	 * Check and count what goes in (the counts and the privileged files are
	 * part of the signed manifest), with no extended attribute left but
	 * file capabilities. The packages' files are checked here too.
	 */
	{
		_cleanup_close_ int dfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		r = dfd < 0 ? rsr_error_errno(ctx, -errno, "%s", root)
			    : rsr_image_scan_tree(ctx, dfd, src_real ? src_real : "the packages' files",
						  RSR_IMAGE_TREE_STRIP, &tree_info);
		if (r < 0)
			goto out;
	}
	if (tree_info.caps < src_caps) {
		r = rsr_error(ctx, -EPERM,
			      "%s: %llu files have file capabilities (security.capability), which the copy of the "
			      "tree lost: copying them needs CAP_SETFCAP (build as root)",
			      src_real, (unsigned long long)src_caps);
		goto out;
	}
	release = release_text(opts, paths, n_paths, pkgs, n_pkgs);
	if (!release) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	{
		_cleanup_free_ char *rel_path = NULL;
		if (asprintf(&rel_path, "%s/%s", root, RSR_CRYPTEX_RELEASE_FILE) < 0) {
			r = rsr_error(ctx, -ENOMEM, "out of memory");
			goto out;
		}
		r = rsr_write_file_atomic(ctx, rel_path, release, strlen(release), 0644);
		if (r < 0)
			goto out;
		/* Normalise the root directory's mode so the host's umask does not leak in. */
		chmod(root, 0755);
	}

	r = rsr_progress(ctx, "mkfs.erofs", 0, 1);
	if (r < 0)
		goto out;
	if (derive_uuid(opts->name, opts->version, uuid) < 0) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	snprintf(tbuf, sizeof(tbuf), "-T%llu", (unsigned long long)opts->timestamp);
	{
		char ubuf[48];
		snprintf(ubuf, sizeof(ubuf), "-U%s", uuid);
		/*
		 * Uncompressed, file data block-aligned and contiguous (no tail
		 * packing) so that unchanged files keep identical blocks; no
		 * owners or times from the build host, and no extended
		 * attributes but the file capabilities the scan above kept.
		 */
		char *argv[] = {(char *)(opts->mkfs_erofs ? opts->mkfs_erofs : RSR_MKFS_EROFS),
				"--quiet",
				tbuf,
				ubuf,
				"--all-root",
				"-Enoinline_data",
				img,
				root,
				NULL};
		r = rsr_image_run_tool(ctx, argv, NULL, log);
		if (r < 0)
			goto out;
	}
	/*
	 * mkfs.erofs 1.5 does not report every failed write: when writing the
	 * tail of a file's data fails, it exits 0 with zeros in its place (found
	 * by injecting EIO into its pwrite64 calls). What is signed must be the
	 * tree, so extract the image again and compare before hashing it.
	 */
	r = rsr_progress(ctx, "checking the image", 0, 1);
	if (r < 0)
		goto out;
	{
		_cleanup_free_ char *check = NULL, *xopt = NULL;
		if (asprintf(&check, "%s/check", stage) < 0 || asprintf(&xopt, "--extract=%s", check) < 0) {
			r = rsr_error(ctx, -ENOMEM, "out of memory");
			goto out;
		}
		char *fsck[] = {"fsck.erofs", xopt, img, NULL};
		r = rsr_image_run_tool(ctx, fsck, NULL, log);
		if (r == 0)
			r = same_tree(ctx, root, check);
		if (r < 0) {
			r = rsr_error_prefix(ctx, r, "mkfs.erofs made an image that does not hold %s",
					     src_real ? src_real : "the packages' files");
			goto out;
		}
	}
	img_fd = open(img, O_RDONLY | O_CLOEXEC);
	if (img_fd < 0 || fstat(img_fd, &st) < 0) {
		r = rsr_error_errno(ctx, -errno, "%s", img);
		goto out;
	}
	image_size = (uint64_t)st.st_size;
	if (image_size == 0 || image_size % RSR_CRYPTEX_BLOCK_SIZE) {
		r = rsr_error(ctx, RSR_E_TOOL, "mkfs.erofs made an image of %llu bytes, not a multiple of 4096",
			      (unsigned long long)image_size);
		goto out;
	}
	if (derive_salt(opts->name, salt) < 0) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	r = rsr_verity_build(ctx, img_fd, 0, image_size / RSR_CRYPTEX_BLOCK_SIZE, salt, sizeof(salt), &tree, root_hash);
	if (r < 0)
		goto out;
	rsr_verity_layout(image_size / RSR_CRYPTEX_BLOCK_SIZE, &layout);
	tree_size = layout.tree_blocks * RSR_CRYPTEX_BLOCK_SIZE;
	rsr_hex_encode(salt, sizeof(salt), salt_hex);
	rsr_hex_encode(root_hash, sizeof(root_hash), root_hex);

	m = json_pack("{s:s, s:i, s:s, s:s, s:o, s:o, s:I, s:I, s:I, s:{s:s, s:I, s:I, s:s}, "
		      "s:{s:s, s:i, s:i, s:i, s:I, s:I, s:I, s:s, s:s}}",
		      "type", "rsr-cryptex", "format", CPTX_VERSION, "name", opts->name, "version", opts->version,
		      "base_builds", strv_json(opts->base_builds, opts->n_base_builds), "paths",
		      strv_json((const char *const *)paths, n_paths), "timestamp", (json_int_t)opts->timestamp, "files",
		      (json_int_t)tree_info.files, "directories", (json_int_t)tree_info.dirs, "image", "type", "erofs",
		      "offset", (json_int_t)RSR_CRYPTEX_HEADER_SIZE, "size", (json_int_t)image_size, "uuid", uuid,
		      "verity", "hash", "sha256", "version", 1, "data_block_size", RSR_CRYPTEX_BLOCK_SIZE,
		      "hash_block_size", RSR_CRYPTEX_BLOCK_SIZE, "data_blocks",
		      (json_int_t)(image_size / RSR_CRYPTEX_BLOCK_SIZE), "offset",
		      (json_int_t)(RSR_CRYPTEX_HEADER_SIZE + image_size), "size", (json_int_t)tree_size, "salt",
		      salt_hex, "root_hash", root_hex);
	/* Each only where there is something to list, so other manifests stay as they were. */
	if (m && ((n_pkgs && json_object_set_new(m, "packages", packages_json(pkgs, n_pkgs)) < 0) ||
		  (tree_info.n_priv &&
		   json_object_set_new(m, "privileged", privileged_json(tree_info.priv, tree_info.n_priv)) < 0))) {
		json_decref(m);
		m = NULL;
	}
	if (!m || !(manifest = rsr_json_dumps(m, JSON_COMPACT | JSON_SORT_KEYS))) {
		r = rsr_error(ctx, -ENOMEM, "cannot build the manifest");
		goto out;
	}
	manifest_len = strlen(manifest);
	if (manifest_len > RSR_CRYPTEX_MANIFEST_MAX) {
		r = rsr_error(ctx, RSR_E_LIMIT, "manifest of %zu bytes exceeds %d", manifest_len,
			      RSR_CRYPTEX_MANIFEST_MAX);
		goto out;
	}
	signed_msg = malloc(sizeof(SIG_CONTEXT) + manifest_len);
	if (!signed_msg) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	memcpy(signed_msg, SIG_CONTEXT, sizeof(SIG_CONTEXT));
	memcpy(signed_msg + sizeof(SIG_CONTEXT), manifest, manifest_len);
	r = rsr_key_sign(ctx, opts->key, signed_msg, sizeof(SIG_CONTEXT) + manifest_len, sig);
	if (r < 0)
		goto out;
	rsr_key_id(opts->key, key_id);

	manifest_off = RSR_CRYPTEX_HEADER_SIZE + image_size + tree_size;
	memset(&hdr, 0, sizeof(hdr));
	memcpy(hdr.magic, CPTX_MAGIC, 8);
	rsr_put_le32(hdr.version, CPTX_VERSION);
	rsr_put_le32(hdr.header_size, RSR_CRYPTEX_HEADER_SIZE);
	rsr_put_le64(hdr.file_size, manifest_off + manifest_len);
	rsr_put_le64(hdr.image_offset, RSR_CRYPTEX_HEADER_SIZE);
	rsr_put_le64(hdr.image_size, image_size);
	rsr_put_le64(hdr.tree_offset, RSR_CRYPTEX_HEADER_SIZE + image_size);
	rsr_put_le64(hdr.tree_size, tree_size);
	rsr_put_le64(hdr.manifest_offset, manifest_off);
	rsr_put_le32(hdr.manifest_size, (uint32_t)manifest_len);
	memcpy(hdr.key_id, key_id, 32);
	memcpy(hdr.signature, sig, 64);

	r = rsr_progress(ctx, "writing", 0, 1);
	if (r < 0)
		goto out;
	r = rsr_atomic_open(ctx, out_path, 0644, &af);
	if (r < 0)
		goto out;
	if ((r = write_header_and_image(af->fd, &hdr, img_fd, image_size)) < 0 ||
	    (r = rsr_pwrite_all(af->fd, tree, tree_size, RSR_CRYPTEX_HEADER_SIZE + image_size)) < 0 ||
	    (r = rsr_pwrite_all(af->fd, manifest, manifest_len, manifest_off)) < 0) {
		r = rsr_error_errno(ctx, r, "%s: write", out_path);
		rsr_atomic_abort(af);
		goto out;
	}
	r = rsr_atomic_commit(ctx, af);
	if (r == 0)
		rsr_progress(ctx, "writing", 1, 1);
out:
	json_decref(m);
	free_strv(paths, n_paths);
	rsr_image_packages_free(pkgs, n_pkgs);
	rsr_image_tree_free(&tree_info);
	if (stage)
		remove_tree(stage);
	return r;
}

/* ---- parsing ---- */

void rsr_cryptex_free(struct rsr_cryptex *cx)
{
	if (!cx)
		return;
	if (cx->fd >= 0)
		close(cx->fd);
	free(cx->path);
	free(cx->manifest);
	free(cx->name);
	free(cx->version);
	free_strv(cx->base_builds, cx->n_base_builds);
	free_strv(cx->paths, cx->n_paths);
	rsr_image_packages_free(cx->packages, cx->n_packages);
	rsr_image_privileged_free(cx->privileged, cx->n_privileged);
	free(cx);
}

static int parse_header(struct rsr_ctx *ctx, struct rsr_cryptex *cx, const struct cptx_header *h, uint64_t file_size)
{
	const char *w = cx->path;
	uint64_t msize, expect;
	struct rsr_verity_layout l;

	if (memcmp(h->magic, CPTX_MAGIC, 8) != 0)
		return rsr_error(ctx, RSR_E_FORMAT, "%s: not a cryptex (bad magic)", w);
	if (rsr_get_le32(h->version) != CPTX_VERSION)
		return rsr_error(ctx, RSR_E_FORMAT,
				 "%s: cryptex format version %u is not supported (this rsr reads %d)", w,
				 rsr_get_le32(h->version), CPTX_VERSION);
	if (rsr_get_le32(h->header_size) != RSR_CRYPTEX_HEADER_SIZE || rsr_get_le32(h->flags) != 0)
		return rsr_error(ctx, RSR_E_FORMAT, "%s: header size or flags are not supported", w);
	for (size_t i = 0; i < sizeof(h->reserved); i++)
		if (h->reserved[i])
			return rsr_error(ctx, RSR_E_FORMAT, "%s: reserved header byte %zu is not zero", w,
					 offsetof(struct cptx_header, reserved) + i);
	cx->file_size = rsr_get_le64(h->file_size);
	cx->image_offset = rsr_get_le64(h->image_offset);
	cx->image_size = rsr_get_le64(h->image_size);
	cx->tree_offset = rsr_get_le64(h->tree_offset);
	cx->tree_size = rsr_get_le64(h->tree_size);
	cx->manifest_offset = rsr_get_le64(h->manifest_offset);
	msize = rsr_get_le32(h->manifest_size);
	if (cx->file_size != file_size)
		return rsr_error(ctx, RSR_E_FORMAT, "%s: file is %llu bytes but its header says %llu (%s)", w,
				 (unsigned long long)file_size, (unsigned long long)cx->file_size,
				 file_size < cx->file_size ? "truncated" : "data appended");
	if (cx->image_offset != RSR_CRYPTEX_HEADER_SIZE)
		return rsr_error(ctx, RSR_E_FORMAT, "%s: image offset %llu is not %d", w,
				 (unsigned long long)cx->image_offset, RSR_CRYPTEX_HEADER_SIZE);
	if (cx->image_size == 0 || cx->image_size % RSR_CRYPTEX_BLOCK_SIZE || cx->image_size > file_size)
		return rsr_error(ctx, RSR_E_FORMAT,
				 "%s: image size %llu is not a non-zero multiple of 4096 within the file", w,
				 (unsigned long long)cx->image_size);
	cx->data_blocks = cx->image_size / RSR_CRYPTEX_BLOCK_SIZE;
	if (rsr_verity_layout(cx->data_blocks, &l) < 0)
		return rsr_error(ctx, RSR_E_FORMAT, "%s: image of %llu blocks is too large", w,
				 (unsigned long long)cx->data_blocks);
	expect = cx->image_offset + cx->image_size;
	if (cx->tree_offset != expect || cx->tree_size != l.tree_blocks * RSR_CRYPTEX_BLOCK_SIZE)
		return rsr_error(ctx, RSR_E_FORMAT, "%s: hash tree at %llu+%llu, expected %llu+%llu", w,
				 (unsigned long long)cx->tree_offset, (unsigned long long)cx->tree_size,
				 (unsigned long long)expect,
				 (unsigned long long)(l.tree_blocks * RSR_CRYPTEX_BLOCK_SIZE));
	expect += cx->tree_size;
	if (cx->manifest_offset != expect || msize == 0 || msize > RSR_CRYPTEX_MANIFEST_MAX ||
	    cx->manifest_offset + msize != file_size)
		return rsr_error(ctx, RSR_E_FORMAT, "%s: manifest at %llu+%llu does not end the %llu-byte file", w,
				 (unsigned long long)cx->manifest_offset, (unsigned long long)msize,
				 (unsigned long long)file_size);
	cx->manifest_len = (size_t)msize;
	memcpy(cx->key_id, h->key_id, 32);
	memcpy(cx->signature, h->signature, 64);
	rsr_hex_encode(cx->key_id, 32, cx->key_id_hex);
	return 0;
}

static int get_strv(struct rsr_ctx *ctx, const char *w, json_t *m, const char *key, bool names, char ***ret,
		    size_t *ret_n)
{
	json_t *a = json_object_get(m, key), *v;
	size_t n, i;
	char **out;

	if (!json_is_array(a) || (n = json_array_size(a)) == 0 || n > MAX_LIST)
		return rsr_error(ctx, RSR_E_FORMAT, "%s: manifest '%s' must be a list of 1 to %d strings", w, key,
				 MAX_LIST);
	out = calloc(n, sizeof(*out));
	if (!out)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	json_array_foreach(a, i, v)
	{
		const char *s = json_string_value(v);
		if (!s || (names ? !rsr_valid_name(s) : !rsr_valid_token(s)) || !(out[i] = strdup(s))) {
			free_strv(out, n);
			return rsr_error(ctx, RSR_E_FORMAT, "%s: manifest '%s' entry %zu is not valid", w, key, i);
		}
	}
	*ret = out;
	*ret_n = n;
	return 0;
}

static bool get_u64(json_t *o, const char *key, uint64_t *ret)
{
	json_t *v = json_object_get(o, key);

	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return false;
	*ret = (uint64_t)json_integer_value(v);
	return true;
}

/* The optional "packages" list: objects with a name, version and architecture, each a token. */
static int get_packages(struct rsr_ctx *ctx, const char *w, json_t *m, struct rsr_cryptex *cx)
{
	json_t *a = json_object_get(m, "packages"), *v;
	size_t n, i;

	if (!a)
		return 0;
	if (!json_is_array(a) || (n = json_array_size(a)) == 0 || n > MAX_LIST)
		return rsr_error(ctx, RSR_E_FORMAT, "%s: manifest 'packages' must be a list of 1 to %d packages", w,
				 MAX_LIST);
	cx->packages = calloc(n, sizeof(*cx->packages));
	if (!cx->packages)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	cx->n_packages = n;
	json_array_foreach(a, i, v)
	{
		const char *name = json_string_value(json_object_get(v, "name"));
		const char *version = json_string_value(json_object_get(v, "version"));
		const char *arch = json_string_value(json_object_get(v, "architecture"));
		struct rsr_image_package *p = &cx->packages[i];
		if (!rsr_valid_token(name) || !rsr_valid_token(version) || !rsr_valid_token(arch))
			return rsr_error(ctx, RSR_E_FORMAT, "%s: manifest 'packages' entry %zu is not valid", w, i);
		if (!(p->name = strdup(name)) || !(p->version = strdup(version)) || !(p->architecture = strdup(arch)))
			return rsr_error(ctx, -ENOMEM, "out of memory");
	}
	return 0;
}

/*
 * The optional "privileged" list: objects with an absolute path, a mode of
 * four octal digits and "caps", strictly sorted by path; each setuid, setgid
 * or with file capabilities.
 */
static int get_privileged(struct rsr_ctx *ctx, const char *w, json_t *m, struct rsr_cryptex *cx)
{
	json_t *a = json_object_get(m, "privileged"), *v;
	size_t n, i;

	if (!a)
		return 0;
	if (!json_is_array(a) || (n = json_array_size(a)) == 0 || n > RSR_CRYPTEX_PRIVILEGED_MAX)
		return rsr_error(ctx, RSR_E_FORMAT, "%s: manifest 'privileged' must be a list of 1 to %d files", w,
				 RSR_CRYPTEX_PRIVILEGED_MAX);
	cx->privileged = calloc(n, sizeof(*cx->privileged));
	if (!cx->privileged)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	cx->n_privileged = n;
	json_array_foreach(a, i, v)
	{
		json_t *jp = json_object_get(v, "path"), *caps = json_object_get(v, "caps");
		const char *path = json_string_value(jp), *mode = json_string_value(json_object_get(v, "mode"));
		struct rsr_image_privileged *p = &cx->privileged[i];
		unsigned bits = 0;
		bool ok = path && strlen(path) == json_string_length(jp) && rsr_image_privileged_path_valid(path) &&
			  json_is_boolean(caps) && mode && strlen(mode) == 4;

		for (size_t k = 0; ok && k < 4; k++) {
			ok = mode[k] >= '0' && mode[k] <= '7';
			bits = bits << 3 | (unsigned)(mode[k] - '0');
		}
		ok = ok && ((bits & 06000) || json_is_true(caps)) &&
		     (i == 0 || strcmp(cx->privileged[i - 1].path, path) < 0);
		if (!ok)
			return rsr_error(ctx, RSR_E_FORMAT,
					 "%s: manifest 'privileged' entry %zu is not valid (an absolute path, sorted "
					 "after the one before, a mode of 4 octal digits with setuid or setgid unless "
					 "'caps' is true, and 'caps' true or false)",
					 w, i);
		if (!(p->path = strdup(path)))
			return rsr_error(ctx, -ENOMEM, "out of memory");
		p->mode = bits;
		p->caps = json_is_true(caps);
	}
	return 0;
}

static int parse_manifest(struct rsr_ctx *ctx, struct rsr_cryptex *cx)
{
	const char *w = cx->path;
	_cleanup_free_ char *what = NULL;
	json_error_t jerr;
	json_t *m, *img, *ver;
	const char *s;
	uint64_t u, format;
	int r = RSR_E_FORMAT;

	if (asprintf(&what, "%s: manifest", w) < 0)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	if ((r = rsr_json_check_counts(ctx, cx->manifest, cx->manifest_len, MAX_JSON_CONTAINERS, MAX_JSON_SCALARS,
				       what)) < 0)
		return r;
	r = RSR_E_FORMAT;
	m = json_loadb(cx->manifest, cx->manifest_len, JSON_REJECT_DUPLICATES, &jerr);
	if (!m && rsr_json_load_oom(&jerr))
		return rsr_error(ctx, -ENOMEM, "out of memory");
	if (!m)
		return rsr_error(ctx, RSR_E_FORMAT, "%s: manifest is not valid JSON: %s at byte %d", w, jerr.text,
				 jerr.position);
	if (!json_is_object(m) || !(s = json_string_value(json_object_get(m, "type"))) || strcmp(s, "rsr-cryptex") ||
	    !get_u64(m, "format", &format) || format != CPTX_VERSION) {
		rsr_error(ctx, RSR_E_FORMAT, "%s: manifest is not an rsr-cryptex manifest of format %d", w,
			  CPTX_VERSION);
		goto out;
	}
	s = json_string_value(json_object_get(m, "name"));
	if (!s || !rsr_valid_name(s) || !(cx->name = strdup(s))) {
		rsr_error(ctx, RSR_E_FORMAT, "%s: manifest 'name' is missing or not valid", w);
		goto out;
	}
	s = json_string_value(json_object_get(m, "version"));
	if (!s || !rsr_valid_token(s) || !(cx->version = strdup(s))) {
		rsr_error(ctx, RSR_E_FORMAT, "%s: manifest 'version' is missing or not valid", w);
		goto out;
	}
	if ((r = get_strv(ctx, w, m, "base_builds", false, &cx->base_builds, &cx->n_base_builds)) < 0 ||
	    (r = get_strv(ctx, w, m, "paths", true, &cx->paths, &cx->n_paths)) < 0 ||
	    (r = get_packages(ctx, w, m, cx)) < 0 || (r = get_privileged(ctx, w, m, cx)) < 0)
		goto out;
	r = RSR_E_FORMAT;
	if (!get_u64(m, "timestamp", &cx->timestamp) || !get_u64(m, "files", &cx->files) ||
	    !get_u64(m, "directories", &cx->directories)) {
		rsr_error(ctx, RSR_E_FORMAT, "%s: manifest 'timestamp', 'files' or 'directories' is missing", w);
		goto out;
	}
	img = json_object_get(m, "image");
	if (!json_is_object(img) || !(s = json_string_value(json_object_get(img, "type"))) || strcmp(s, "erofs") ||
	    !get_u64(img, "offset", &u) || u != cx->image_offset || !get_u64(img, "size", &u) || u != cx->image_size) {
		rsr_error(ctx, RSR_E_FORMAT, "%s: manifest 'image' does not describe the header's EROFS image", w);
		goto out;
	}
	ver = json_object_get(m, "verity");
	if (!json_is_object(ver) || !(s = json_string_value(json_object_get(ver, "hash"))) || strcmp(s, "sha256") ||
	    !get_u64(ver, "version", &u) || u != 1 || !get_u64(ver, "data_block_size", &u) || u != 4096 ||
	    !get_u64(ver, "hash_block_size", &u) || u != 4096 || !get_u64(ver, "data_blocks", &u) ||
	    u != cx->data_blocks || !get_u64(ver, "offset", &u) || u != cx->tree_offset || !get_u64(ver, "size", &u) ||
	    u != cx->tree_size) {
		rsr_error(ctx, RSR_E_FORMAT, "%s: manifest 'verity' does not describe the header's hash tree", w);
		goto out;
	}
	s = json_string_value(json_object_get(ver, "root_hash"));
	if (!s || !rsr_hex_decode(s, cx->root_hash, 32)) {
		rsr_error(ctx, RSR_E_FORMAT, "%s: manifest 'root_hash' is not 64 hex digits", w);
		goto out;
	}
	rsr_hex_encode(cx->root_hash, 32, cx->root_hash_hex);
	s = json_string_value(json_object_get(ver, "salt"));
	if (!s || strlen(s) % 2 || strlen(s) > 2 * RSR_VERITY_SALT_MAX || !rsr_hex_decode(s, cx->salt, strlen(s) / 2)) {
		rsr_error(ctx, RSR_E_FORMAT, "%s: manifest 'salt' is not hex of at most %d bytes", w,
			  RSR_VERITY_SALT_MAX);
		goto out;
	}
	cx->salt_len = strlen(s) / 2;
	rsr_hex_encode(cx->salt, cx->salt_len, cx->salt_hex);
	r = 0;
out:
	json_decref(m);
	return r;
}

static struct rsr_cryptex *cx_new(const char *path)
{
	struct rsr_cryptex *cx = calloc(1, sizeof(*cx));

	if (!cx)
		return NULL;
	cx->fd = -1;
	cx->path = strdup(path);
	if (!cx->path) {
		free(cx);
		return NULL;
	}
	return cx;
}

static int check_signature(struct rsr_ctx *ctx, struct rsr_cryptex *cx, const struct rsr_keyring *trusted);

int rsr_cryptex_open(struct rsr_ctx *ctx, const char *path, struct rsr_cryptex **ret_cx)
{
	return rsr_cryptex_open_trusted(ctx, path, NULL, ret_cx);
}

int rsr_cryptex_open_trusted(struct rsr_ctx *ctx, const char *path, const struct rsr_keyring *trusted,
			     struct rsr_cryptex **ret_cx)
{
	struct rsr_cryptex *cx = cx_new(path);
	struct cptx_header h;
	struct stat st;
	int r;

	if (!cx)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	cx->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (cx->fd < 0 || fstat(cx->fd, &st) < 0) {
		r = rsr_error_errno(ctx, -errno, "%s", path);
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		r = rsr_error(ctx, -EINVAL, "%s: not a regular file", path);
		goto fail;
	}
	r = rsr_pread_all(cx->fd, &h, sizeof(h), 0);
	if (r < 0) {
		r = r == -ENODATA ? rsr_error(ctx, RSR_E_FORMAT, "%s: %lld bytes, too short for a cryptex header", path,
					      (long long)st.st_size)
				  : rsr_error_errno(ctx, r, "%s: read", path);
		goto fail;
	}
	r = parse_header(ctx, cx, &h, (uint64_t)st.st_size);
	if (r < 0)
		goto fail;
	cx->manifest = malloc(cx->manifest_len + 1);
	if (!cx->manifest) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto fail;
	}
	r = rsr_pread_all(cx->fd, cx->manifest, cx->manifest_len, cx->manifest_offset);
	if (r < 0) {
		r = rsr_error_errno(ctx, r, "%s: read of the manifest", path);
		goto fail;
	}
	cx->manifest[cx->manifest_len] = '\0';
	/* Authenticate before parsing, when we can. */
	if (trusted && (r = check_signature(ctx, cx, trusted)) < 0)
		goto fail;
	r = parse_manifest(ctx, cx);
	if (r < 0)
		goto fail;
	*ret_cx = cx;
	return 0;
fail:
	rsr_cryptex_free(cx);
	return r;
}

int rsr_cryptex_parse(struct rsr_ctx *ctx, const void *buf, size_t len, struct rsr_cryptex **ret_cx)
{
	struct rsr_cryptex *cx = cx_new("<memory>");
	int r;

	if (!cx)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	if (len < sizeof(struct cptx_header)) {
		r = rsr_error(ctx, RSR_E_FORMAT, "<memory>: %zu bytes, too short for a cryptex header", len);
		goto fail;
	}
	r = parse_header(ctx, cx, buf, len);
	if (r < 0)
		goto fail;
	cx->manifest = malloc(cx->manifest_len + 1);
	if (!cx->manifest) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto fail;
	}
	memcpy(cx->manifest, (const uint8_t *)buf + cx->manifest_offset, cx->manifest_len);
	cx->manifest[cx->manifest_len] = '\0';
	r = parse_manifest(ctx, cx);
	if (r < 0)
		goto fail;
	*ret_cx = cx;
	return 0;
fail:
	rsr_cryptex_free(cx);
	return r;
}

/* ---- verification ---- */

int rsr_cryptex_verify_signature(struct rsr_ctx *ctx, struct rsr_cryptex *cx, const struct rsr_keyring *trusted)
{
	return check_signature(ctx, cx, trusted);
}

static int check_signature(struct rsr_ctx *ctx, struct rsr_cryptex *cx, const struct rsr_keyring *trusted)
{
	const struct rsr_key *key = trusted ? rsr_keyring_find(trusted, cx->key_id) : NULL;
	_cleanup_free_ uint8_t *msg = NULL;
	int r;

	if (!key)
		return rsr_error(ctx, RSR_E_SIGNATURE, "%s: signed by key %s, which is not among the %zu trusted key%s",
				 cx->path, cx->key_id_hex, trusted ? rsr_keyring_count(trusted) : 0,
				 trusted && rsr_keyring_count(trusted) == 1 ? "" : "s");
	msg = malloc(sizeof(SIG_CONTEXT) + cx->manifest_len);
	if (!msg)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	memcpy(msg, SIG_CONTEXT, sizeof(SIG_CONTEXT));
	memcpy(msg + sizeof(SIG_CONTEXT), cx->manifest, cx->manifest_len);
	r = rsr_key_verify(key, msg, sizeof(SIG_CONTEXT) + cx->manifest_len, cx->signature);
	if (r == -ENOMEM)
		return rsr_error(ctx, r, "out of memory");
	if (r < 0)
		return rsr_error(
		    ctx, RSR_E_SIGNATURE,
		    "%s: the signature by key %s does not verify: the manifest or its signature was altered", cx->path,
		    cx->key_id_hex);
	return 0;
}

int rsr_image_cryptex_verify_blocks_as(struct rsr_ctx *ctx, struct rsr_cryptex *cx, const char *name)
{
	if (cx->fd < 0)
		return rsr_error(ctx, -EBADF, "%s: not opened from a file", cx->path);
	return rsr_verity_verify(ctx, cx->fd, cx->image_offset, cx->data_blocks, cx->tree_offset, cx->salt,
				 cx->salt_len, cx->root_hash, cx->path, name);
}

int rsr_cryptex_verify_blocks(struct rsr_ctx *ctx, struct rsr_cryptex *cx)
{
	return rsr_image_cryptex_verify_blocks_as(ctx, cx, cx->path);
}

int rsr_cryptex_verify(struct rsr_ctx *ctx, struct rsr_cryptex *cx, const struct rsr_keyring *trusted)
{
	int r = rsr_cryptex_verify_signature(ctx, cx, trusted);

	return r < 0 ? r : rsr_cryptex_verify_blocks(ctx, cx);
}

/* ---- getters ---- */

int rsr_image_cryptex_fd(const struct rsr_cryptex *cx)
{
	return cx->fd;
}
const char *rsr_cryptex_path(const struct rsr_cryptex *cx)
{
	return cx->path;
}
const char *rsr_cryptex_name(const struct rsr_cryptex *cx)
{
	return cx->name;
}
const char *rsr_cryptex_version(const struct rsr_cryptex *cx)
{
	return cx->version;
}
size_t rsr_cryptex_base_build_count(const struct rsr_cryptex *cx)
{
	return cx->n_base_builds;
}
const char *rsr_cryptex_base_build(const struct rsr_cryptex *cx, size_t i)
{
	return i < cx->n_base_builds ? cx->base_builds[i] : NULL;
}
bool rsr_cryptex_allows_base(const struct rsr_cryptex *cx, const char *build)
{
	for (size_t i = 0; build && i < cx->n_base_builds; i++)
		if (!strcmp(cx->base_builds[i], build))
			return true;
	return false;
}
size_t rsr_cryptex_path_count(const struct rsr_cryptex *cx)
{
	return cx->n_paths;
}
const char *rsr_cryptex_covered_path(const struct rsr_cryptex *cx, size_t i)
{
	return i < cx->n_paths ? cx->paths[i] : NULL;
}
size_t rsr_cryptex_package_count(const struct rsr_cryptex *cx)
{
	return cx->n_packages;
}
const char *rsr_cryptex_package_name(const struct rsr_cryptex *cx, size_t i)
{
	return i < cx->n_packages ? cx->packages[i].name : NULL;
}
const char *rsr_cryptex_package_version(const struct rsr_cryptex *cx, size_t i)
{
	return i < cx->n_packages ? cx->packages[i].version : NULL;
}
const char *rsr_cryptex_package_architecture(const struct rsr_cryptex *cx, size_t i)
{
	return i < cx->n_packages ? cx->packages[i].architecture : NULL;
}
size_t rsr_cryptex_privileged_count(const struct rsr_cryptex *cx)
{
	return cx->n_privileged;
}
const char *rsr_cryptex_privileged_path(const struct rsr_cryptex *cx, size_t i)
{
	return i < cx->n_privileged ? cx->privileged[i].path : NULL;
}
unsigned rsr_cryptex_privileged_mode(const struct rsr_cryptex *cx, size_t i)
{
	return i < cx->n_privileged ? cx->privileged[i].mode : 0;
}
bool rsr_cryptex_privileged_caps(const struct rsr_cryptex *cx, size_t i)
{
	return i < cx->n_privileged && cx->privileged[i].caps;
}
const char *rsr_cryptex_root_hash_hex(const struct rsr_cryptex *cx)
{
	return cx->root_hash_hex;
}
void rsr_cryptex_root_hash(const struct rsr_cryptex *cx, uint8_t ret[32])
{
	memcpy(ret, cx->root_hash, 32);
}
const char *rsr_cryptex_salt_hex(const struct rsr_cryptex *cx)
{
	return cx->salt_hex;
}
const char *rsr_cryptex_key_id_hex(const struct rsr_cryptex *cx)
{
	return cx->key_id_hex;
}
uint64_t rsr_cryptex_timestamp(const struct rsr_cryptex *cx)
{
	return cx->timestamp;
}
uint64_t rsr_cryptex_file_count(const struct rsr_cryptex *cx)
{
	return cx->files;
}
uint64_t rsr_cryptex_directory_count(const struct rsr_cryptex *cx)
{
	return cx->directories;
}
uint64_t rsr_cryptex_file_size(const struct rsr_cryptex *cx)
{
	return cx->file_size;
}
uint64_t rsr_cryptex_image_offset(const struct rsr_cryptex *cx)
{
	return cx->image_offset;
}
uint64_t rsr_cryptex_image_size(const struct rsr_cryptex *cx)
{
	return cx->image_size;
}
uint64_t rsr_cryptex_tree_offset(const struct rsr_cryptex *cx)
{
	return cx->tree_offset;
}
uint64_t rsr_cryptex_tree_size(const struct rsr_cryptex *cx)
{
	return cx->tree_size;
}
uint64_t rsr_cryptex_data_blocks(const struct rsr_cryptex *cx)
{
	return cx->data_blocks;
}
const char *rsr_cryptex_manifest(const struct rsr_cryptex *cx, size_t *ret_len)
{
	if (ret_len)
		*ret_len = cx->manifest_len;
	return cx->manifest;
}
