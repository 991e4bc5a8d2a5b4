/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The tree a cryptex build puts into its image: a copy of the source
 * directory and the files of Debian packages, extracted by dpkg-deb into the
 * private staging area, checked, and placed as dpkg places them on a
 * merged-/usr system (bin/, sbin/ and lib*\/ under usr/).
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "image-internal.h"

#define MAX_PACKAGES 256
#define LISTING_MAX (64u << 20)

/* The top-level directories Debian 12 has as links into usr/ (usrmerge). */
static const char *const merged_dirs[] = {"bin", "sbin", "lib", "lib32", "lib64", "libx32"};
/* Top-level directories of a package that stay out: they are the device's writable trees. */
static const char *const left_out_dirs[] = {"etc", "var"};

void rsr_image_packages_free(struct rsr_image_package *v, size_t n)
{
	if (!v)
		return;
	for (size_t i = 0; i < n; i++) {
		free(v[i].name);
		free(v[i].version);
		free(v[i].architecture);
	}
	free(v);
}

/* Debian policy 5.6.1: lower-case letters, digits, + - . ; at least two, starting alphanumeric. */
static bool valid_package_name(const char *s)
{
	size_t n = strlen(s);

	if (n < 2 || n > 64 || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= '0' && s[0] <= '9')))
		return false;
	for (const char *p = s; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '+' || *p == '-' || *p == '.'))
			return false;
	return true;
}

static bool valid_architecture(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 32)
		return false;
	for (const char *p = s; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-'))
			return false;
	return true;
}

/* Reads "Package: x", "Version: y", "Architecture: z" lines that dpkg-deb -f printed. */
static int read_fields(struct rsr_ctx *ctx, const char *deb, const char *out, struct rsr_image_package *p)
{
	_cleanup_free_ char *buf = NULL;
	char *save = NULL;
	size_t len;
	int r = rsr_read_file(ctx, out, 64 * 1024, &buf, &len);

	if (r < 0)
		return r;
	for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		static const char *const keys[] = {"Package: ", "Version: ", "Architecture: "};
		char **dst[] = {&p->name, &p->version, &p->architecture};
		for (size_t k = 0; k < ARRAY_SIZE(keys); k++) {
			size_t kl = strlen(keys[k]);
			if (strncmp(line, keys[k], kl) || *dst[k])
				continue;
			*dst[k] = strdup(line + kl);
			if (!*dst[k])
				return rsr_error(ctx, -ENOMEM, "out of memory");
		}
	}
	if (!p->name || !valid_package_name(p->name))
		return rsr_error(ctx, RSR_E_FORMAT, "%s: the package's name '%s' is missing or not valid", deb,
				 p->name ? p->name : "");
	if (!p->version || !rsr_valid_token(p->version))
		return rsr_error(ctx, RSR_E_FORMAT, "%s: the package's version '%s' is missing or not valid", deb,
				 p->version ? p->version : "");
	if (!p->architecture || !valid_architecture(p->architecture))
		return rsr_error(ctx, RSR_E_FORMAT, "%s: the package's architecture '%s' is missing or not valid", deb,
				 p->architecture ? p->architecture : "");
	return 0;
}

/* True if a member name of the package's data archive stays inside the tree it is extracted to. */
static bool name_stays_inside(const char *name, size_t len)
{
	const char *p = name, *end = name + len;

	if (len >= 2 && name[0] == '.' && name[1] == '/')
		p += 2;
	if (p < end && *p == '/')
		return false;
	while (p < end) {
		const char *slash = memchr(p, '/', (size_t)(end - p));
		size_t n = slash ? (size_t)(slash - p) : (size_t)(end - p);
		if (n == 2 && p[0] == '.' && p[1] == '.')
			return false;
		p += n + (slash ? 1 : 0);
	}
	return true;
}

/*
 * Checks the listing dpkg-deb --contents printed (tar's verbose listing:
 * mode, owner, size, date, time, name, then "-> target" for a symbolic link
 * or "link to target" for a hard link) before anything is extracted, so a
 * package with a member outside the tree is refused with its name. tar,
 * which extracts it, refuses such members as well.
 */
static int check_listing(struct rsr_ctx *ctx, const char *deb, const char *out)
{
	_cleanup_free_ char *buf = NULL;
	char *save = NULL;
	size_t len;
	int r = rsr_read_file(ctx, out, LISTING_MAX, &buf, &len);

	if (r < 0)
		return r;
	if (strlen(buf) != len)
		return rsr_error(ctx, RSR_E_FORMAT, "%s: dpkg-deb --contents printed a NUL byte", deb);
	for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *name = line, *target = NULL;
		size_t nlen;

		for (int field = 0; field < 5; field++) {
			name += strcspn(name, " ");
			name += strspn(name, " ");
		}
		if (!*name)
			return rsr_error(ctx, RSR_E_FORMAT, "%s: cannot read dpkg-deb's listing line '%s'", deb, line);
		nlen = strlen(name);
		if (line[0] == 'l' && (target = strstr(name, " -> ")))
			nlen = (size_t)(target - name);
		else if (line[0] == 'h' && (target = strstr(name, " link to "))) {
			nlen = (size_t)(target - name);
			target += strlen(" link to ");
			if (!name_stays_inside(target, strlen(target)))
				return rsr_error(ctx, RSR_E_FORMAT,
						 "%s: refused: its entry '%.*s' is a hard link to '%s', outside the "
						 "package's tree",
						 deb, (int)nlen, name, target);
		}
		if (!name_stays_inside(name, nlen))
			return rsr_error(ctx, RSR_E_FORMAT,
					 "%s: refused: its entry '%.*s' would leave the image's tree", deb, (int)nlen,
					 name);
	}
	return 0;
}

/* A path for messages: "/" + rel, in a caller's buffer. */
static const char *show(char buf[], size_t size, const char *rel, const char *name)
{
	snprintf(buf, size, "/%s%s%s", rel, *rel ? "/" : "", name);
	return buf;
}

/*
 * Refuses what a package's tree may not hold: device nodes (overlayfs reads
 * a 0:0 character device as a whiteout, others would be device files in the
 * system's tree), FIFOs and sockets. Walks without following links.
 */
static int check_types(struct rsr_ctx *ctx, const char *deb, int dfd, char *rel, size_t relsize, unsigned depth)
{
	int fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd < 0 ? NULL : fdopendir(fd);
	size_t rl = strlen(rel);
	struct dirent *de;
	int r = 0;

	if (!d) {
		r = rsr_error_errno(ctx, -errno, "%s: extracted tree /%s", deb, rel);
		if (fd >= 0)
			close(fd);
		return r;
	}
	if (depth > 256) {
		closedir(d);
		return rsr_error(ctx, RSR_E_LIMIT, "%s: /%s is nested too deeply", deb, rel);
	}
	while (r == 0 && (de = readdir(d))) {
		struct stat st;
		char p[512];

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			r = rsr_error_errno(ctx, -errno, "%s: %s", deb, show(p, sizeof(p), rel, de->d_name));
			break;
		}
		if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
			r = rsr_error(ctx, RSR_E_FORMAT,
				      "%s: refused: %s is a device node; packages in a cryptex may not carry any", deb,
				      show(p, sizeof(p), rel, de->d_name));
		} else if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode) && !S_ISLNK(st.st_mode)) {
			r = rsr_error(ctx, RSR_E_FORMAT,
				      "%s: refused: %s is a FIFO or socket; a cryptex holds files, directories and "
				      "symbolic links",
				      deb, show(p, sizeof(p), rel, de->d_name));
		} else if (!S_ISDIR(st.st_mode) && depth == 0) {
			r = rsr_error(ctx, RSR_E_FORMAT,
				      "%s: refused: it ships %s at the top of the tree, where a cryptex has only "
				      "directories",
				      deb, show(p, sizeof(p), rel, de->d_name));
		} else if (S_ISDIR(st.st_mode)) {
			_cleanup_close_ int sub =
			    openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (rl + 1 + strlen(de->d_name) + 1 > relsize) {
				r = rsr_error(ctx, RSR_E_LIMIT, "%s: a path below /%s is too long", deb, rel);
				break;
			}
			snprintf(rel + rl, relsize - rl, "%s%s", rl ? "/" : "", de->d_name);
			r = sub < 0 ? rsr_error_errno(ctx, -errno, "%s: /%s", deb, rel)
				    : check_types(ctx, deb, sub, rel, relsize, depth + 1);
			rel[rl] = '\0';
		}
	}
	closedir(d);
	return r;
}

/* The names in a directory, without . and .. (so entries can be moved while they are walked). */
static int list_names(struct rsr_ctx *ctx, int dfd, const char *what, char ***ret, size_t *ret_n)
{
	int fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd < 0 ? NULL : fdopendir(fd);
	char **v = NULL;
	size_t n = 0;
	struct dirent *de;

	if (!d) {
		int r = rsr_error_errno(ctx, -errno, "%s", what);
		if (fd >= 0)
			close(fd);
		return r;
	}
	while ((de = readdir(d))) {
		char **nv;
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		nv = realloc(v, (n + 1) * sizeof(*v));
		if (nv)
			v = nv;
		if (!nv || !(v[n] = strdup(de->d_name))) {
			closedir(d);
			for (size_t i = 0; i < n; i++)
				free(v[i]);
			free(v);
			return rsr_error(ctx, -ENOMEM, "out of memory");
		}
		n++;
	}
	closedir(d);
	*ret = v;
	*ret_n = n;
	return 0;
}

static void free_names(char **v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		free(v[i]);
	free(v);
}

struct merge {
	struct rsr_ctx *ctx;
	const char *from; /* the input being merged, for messages */
	const char *hint; /* appended to a conflict's message */
	char rel[4096];	  /* destination path of the directory being merged */
};

/*
 * Moves every entry of directory sfd into directory dfd: an entry the
 * destination lacks is renamed there whole, a directory both have is merged
 * into, anything else is a conflict.
 */
static int merge_dir(struct merge *m, int sfd, int dfd, unsigned depth)
{
	char **names = NULL;
	size_t n = 0, rl = strlen(m->rel);
	int r;

	if (depth > 256)
		return rsr_error(m->ctx, RSR_E_LIMIT, "%s: /%s is nested too deeply", m->from, m->rel);
	r = list_names(m->ctx, sfd, m->from, &names, &n);
	for (size_t i = 0; r == 0 && i < n; i++) {
		struct stat ss, ds;
		char p[512];

		if (fstatat(sfd, names[i], &ss, AT_SYMLINK_NOFOLLOW) < 0) {
			r = rsr_error_errno(m->ctx, -errno, "%s: %s", m->from, show(p, sizeof(p), m->rel, names[i]));
		} else if (fstatat(dfd, names[i], &ds, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno != ENOENT || renameat(sfd, names[i], dfd, names[i]) < 0)
				r = rsr_error_errno(m->ctx, -errno, "%s: %s", m->from,
						    show(p, sizeof(p), m->rel, names[i]));
		} else if (S_ISDIR(ss.st_mode) && S_ISDIR(ds.st_mode)) {
			_cleanup_close_ int s2 = openat(sfd, names[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			_cleanup_close_ int d2 = openat(dfd, names[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (s2 < 0 || d2 < 0 || rl + 1 + strlen(names[i]) + 1 > sizeof(m->rel)) {
				r = rsr_error_errno(m->ctx, s2 < 0 || d2 < 0 ? -errno : -ENAMETOOLONG, "%s: %s",
						    m->from, show(p, sizeof(p), m->rel, names[i]));
				break;
			}
			snprintf(m->rel + rl, sizeof(m->rel) - rl, "%s%s", rl ? "/" : "", names[i]);
			r = merge_dir(m, s2, d2, depth + 1);
			m->rel[rl] = '\0';
			if (r == 0 && unlinkat(sfd, names[i], AT_REMOVEDIR) < 0)
				r = rsr_error_errno(m->ctx, -errno, "%s: %s", m->from,
						    show(p, sizeof(p), m->rel, names[i]));
		} else {
			r = rsr_error(m->ctx, -EEXIST, "%s: %s is already there from another input%s", m->from,
				      show(p, sizeof(p), m->rel, names[i]), m->hint);
		}
	}
	free_names(names, n);
	return r;
}

/*
 * Moves rootfd's bin/, sbin/ and lib*\/ (real directories) under usr/,
 * creating usr/ if needed: dpkg's result on a system where they are
 * symbolic links into usr/.
 */
static int merge_usr(struct rsr_ctx *ctx, int rootfd, const char *from)
{
	for (size_t i = 0; i < ARRAY_SIZE(merged_dirs); i++) {
		const char *name = merged_dirs[i];
		struct stat st;
		struct merge m = {.ctx = ctx,
				  .from = from,
				  .hint = " (with merged /usr, /bin, /sbin and /lib* are the same as /usr/bin, "
					  "/usr/sbin and /usr/lib*; --no-merged-usr keeps them apart)"};
		int r;

		if (fstatat(rootfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT)
				continue;
			return rsr_error_errno(ctx, -errno, "%s: /%s", from, name);
		}
		if (!S_ISDIR(st.st_mode))
			continue; /* a top-level file was refused before; a link stays a link */
		if (mkdirat(rootfd, "usr", 0755) < 0 && errno != EEXIST)
			return rsr_error_errno(ctx, -errno, "%s: /usr", from);
		if (fstatat(rootfd, "usr", &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode))
			return rsr_error(ctx, RSR_E_FORMAT, "%s: /usr is not a directory", from);
		_cleanup_close_ int sfd = openat(rootfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		_cleanup_close_ int ufd = openat(rootfd, "usr", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (sfd < 0 || ufd < 0)
			return rsr_error_errno(ctx, -errno, "%s: /%s", from, sfd < 0 ? name : "usr");
		if (fstatat(ufd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno != ENOENT || renameat(rootfd, name, ufd, name) < 0)
				return rsr_error_errno(ctx, -errno, "%s: moving /%s to /usr/%s", from, name, name);
			continue;
		}
		if (!S_ISDIR(st.st_mode))
			return rsr_error(ctx, -EEXIST, "%s: /usr/%s is not a directory, so /%s cannot go there%s", from,
					 name, name, m.hint);
		_cleanup_close_ int dfd = openat(ufd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (dfd < 0)
			return rsr_error_errno(ctx, -errno, "%s: /usr/%s", from, name);
		snprintf(m.rel, sizeof(m.rel), "usr/%s", name);
		r = merge_dir(&m, sfd, dfd, 1);
		if (r < 0)
			return r;
		if (unlinkat(rootfd, name, AT_REMOVEDIR) < 0)
			return rsr_error_errno(ctx, -errno, "%s: /%s", from, name);
	}
	return 0;
}

/*
 * After dpkg-deb --extract failed: the first complaint of the tar it runs
 * names the member (the last line only says that tar failed).
 */
static int tar_error(struct rsr_ctx *ctx, int r, const char *deb, const char *log)
{
	_cleanup_free_ char *buf = NULL;
	char *save = NULL;
	size_t len;
	struct rsr_ctx *tmp = NULL;

	if (rsr_ctx_new(&tmp) < 0)
		return r;
	if (rsr_read_file(tmp, log, 1 << 20, &buf, &len) == 0)
		for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
			if (!strncmp(line, "tar: ", 5) && !strstr(line, "Removing leading")) {
				r = rsr_error(ctx, RSR_E_TOOL, "%s: refused: dpkg-deb cannot extract it: %s", deb,
					      line);
				break;
			}
	rsr_ctx_free(tmp);
	return r;
}

/* Extracts one package into dir (new, private) and checks it; fills *p. */
static int extract_one(struct rsr_ctx *ctx, const char *deb, const char *dir, const char *log,
		       struct rsr_image_package *p)
{
	static const char dpkg_deb[] = "dpkg-deb";
	_cleanup_free_ char *out = NULL;
	char rel[4096] = "";
	int r;

	if (asprintf(&out, "%s.out", log) < 0) {
		out = NULL;
		return rsr_error(ctx, -ENOMEM, "out of memory");
	}
	{
		char *argv[] = {(char *)dpkg_deb, "--field", (char *)deb, "Package", "Version", "Architecture", NULL};
		if ((r = rsr_image_run_tool(ctx, argv, out, log)) < 0 || (r = read_fields(ctx, deb, out, p)) < 0)
			return r;
	}
	{
		char *argv[] = {(char *)dpkg_deb, "--contents", (char *)deb, NULL};
		if ((r = rsr_image_run_tool(ctx, argv, out, log)) < 0 || (r = check_listing(ctx, deb, out)) < 0)
			return r;
	}
	if (mkdir(dir, 0700) < 0)
		return rsr_error_errno(ctx, -errno, "%s", dir);
	{
		char *argv[] = {(char *)dpkg_deb, "--extract", (char *)deb, (char *)dir, NULL};
		if ((r = rsr_image_run_tool(ctx, argv, NULL, log)) < 0)
			return tar_error(ctx, r, deb, log);
	}
	_cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0)
		return rsr_error_errno(ctx, -errno, "%s", dir);
	return check_types(ctx, deb, dfd, rel, sizeof(rel), 0);
}

/* Moves the package's etc/ and var/ aside (into `aside`) and says what was left out. */
static int leave_out(struct rsr_ctx *ctx, const char *deb, int dfd, int asidefd)
{
	for (size_t i = 0; i < ARRAY_SIZE(left_out_dirs); i++) {
		if (renameat(dfd, left_out_dirs[i], asidefd, left_out_dirs[i]) == 0)
			rsr_warn(ctx, "%s: its /%s is left out: a cryptex covers only read-only directories", deb,
				 left_out_dirs[i]);
		else if (errno != ENOENT)
			return rsr_error_errno(ctx, -errno, "%s: /%s", deb, left_out_dirs[i]);
	}
	return 0;
}

int rsr_image_stage(struct rsr_ctx *ctx, const char *src_dir, const struct rsr_cryptex_build_opts *opts,
		    const char *stage, const char *root, const char *log, struct rsr_image_package **ret_pkgs,
		    size_t *ret_n)
{
	struct rsr_image_package *pkgs = NULL;
	_cleanup_close_ int rootfd = -1;
	size_t n = 0;
	int r = 0;

	if (opts->n_debs > MAX_PACKAGES)
		return rsr_error(ctx, RSR_E_LIMIT, "more than %d packages", MAX_PACKAGES);
	if (src_dir) {
		_cleanup_free_ char *srcdot = NULL;
		if (asprintf(&srcdot, "%s/.", src_dir) < 0)
			return rsr_error(ctx, -ENOMEM, "out of memory");
		char *argv[] = {"cp", "-a", "--reflink=auto", "--no-preserve=ownership", srcdot, (char *)root, NULL};
		r = rsr_image_run_tool(ctx, argv, NULL, log);
	} else if (mkdir(root, 0755) < 0) {
		r = rsr_error_errno(ctx, -errno, "%s", root);
	}
	if (r < 0)
		return r;
	rootfd = open(root, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (rootfd < 0)
		return rsr_error_errno(ctx, -errno, "%s", root);
	if (src_dir && !opts->no_merged_usr && (r = merge_usr(ctx, rootfd, src_dir)) < 0)
		return r;
	if (opts->n_debs && !(pkgs = calloc(opts->n_debs, sizeof(*pkgs))))
		return rsr_error(ctx, -ENOMEM, "out of memory");
	for (; n < opts->n_debs; n++) {
		const char *deb = opts->debs[n];
		_cleanup_free_ char *dir = NULL, *aside = NULL;
		struct merge m = {.ctx = ctx, .from = deb, .hint = ""};

		if (asprintf(&dir, "%s/deb-%zu", stage, n) < 0 || asprintf(&aside, "%s/left-out-%zu", stage, n) < 0) {
			r = rsr_error(ctx, -ENOMEM, "out of memory");
			break;
		}
		r = rsr_progress(ctx, "extracting packages", n, opts->n_debs);
		if (r < 0 || (r = extract_one(ctx, deb, dir, log, &pkgs[n])) < 0)
			break;
		for (size_t j = 0; j < n; j++)
			if (!strcmp(pkgs[j].name, pkgs[n].name) &&
			    !strcmp(pkgs[j].architecture, pkgs[n].architecture)) {
				r = rsr_error(ctx, -EINVAL, "%s: package %s:%s is given twice (also %s)", deb,
					      pkgs[n].name, pkgs[n].architecture, opts->debs[j]);
				break;
			}
		if (r < 0)
			break;
		_cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (dfd < 0 || mkdir(aside, 0700) < 0) {
			r = rsr_error_errno(ctx, -errno, "%s", dfd < 0 ? dir : aside);
			break;
		}
		_cleanup_close_ int afd = open(aside, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (afd < 0) {
			r = rsr_error_errno(ctx, -errno, "%s", aside);
			break;
		}
		if ((r = leave_out(ctx, deb, dfd, afd)) < 0 ||
		    (!opts->no_merged_usr && (r = merge_usr(ctx, dfd, deb)) < 0) ||
		    (r = merge_dir(&m, dfd, rootfd, 0)) < 0)
			break;
	}
	if (r < 0) {
		rsr_image_packages_free(pkgs, opts->n_debs);
		return r;
	}
	*ret_pkgs = pkgs;
	*ret_n = n;
	return 0;
}
