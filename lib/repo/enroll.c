/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Enrolment of a device in a repository: the response key in keys.d, the
 * repository's root as the first trusted root, and a policy file naming the
 * mirrors, each checked before anything is written and never written over
 * different content. The command checks the repository afterwards.
 */
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "rsr/graft.h"
#include "rsr/repo.h"
#include "rsr/update.h"
#include "tuf.h"

#define ENROLL_MAX_FILE (1024 * 1024)

void rsr_repo_enroll_opts_init(struct rsr_repo_enroll_opts *opts)
{
	*opts = (struct rsr_repo_enroll_opts){.version = RSR_REPO_ENROLL_OPTS_VERSION, .root = "/"};
}

/* One file enrol writes: its path under the root and its content. */
struct planned {
	char *path;
	char *buf;
	size_t len;
	bool in_place; /* already there with this content */
};

static void planned_free(struct planned *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(p[i].path);
		free(p[i].buf);
	}
	free(p);
}

/* The policy file: the mirrors, then every other key at its default, commented out and explained. */
static char *policy_text(const struct rsr_repo_enroll_opts *o, size_t *ret_len)
{
	char *s = NULL, *m = NULL;
	size_t mlen = 0;
	FILE *f = open_memstream(&m, &mlen);

	if (!f)
		return NULL;
	for (size_t i = 0; i < o->n_mirrors; i++)
		fprintf(f, "mirror = %s\n", o->mirrors[i]);
	if (fclose(f) != 0) {
		free(m);
		return NULL;
	}
	if (asprintf(&s,
		     "# rsr update policy (rsr-update(1)), written by rsr enroll. One 'key = value'\n"
		     "# per line; the commented values are the defaults.\n"
		     "\n"
		     "# Base URLs of the repository (its top directory, which holds metadata/ and\n"
		     "# targets/), tried in turn; up to %d.\n"
		     "%s"
		     "\n"
		     "# yes: rsr-update.timer installs new responses; no: it only checks.\n"
		     "#auto_install = yes\n"
		     "\n"
		     "# yes: rsr remove may take a response off; no: only with --force.\n"
		     "#allow_remove = yes\n"
		     "\n"
		     "# After an install: services (restart those running superseded code), ask\n"
		     "# (say which need it), none.\n"
		     "#restart = services\n"
		     "\n"
		     "# yes: take a response only when this machine's bucket is inside its rollout\n"
		     "# percentage; no: take every response at once.\n"
		     "#staged_rollout = yes\n"
		     "\n"
		     "# When the installed response is withdrawn and nothing newer is offered: base\n"
		     "# (remove it), stay (keep it).\n"
		     "#withdrawn = base\n"
		     "\n"
		     "# Seconds to connect, and without progress during a transfer (1 to 3600).\n"
		     "#timeout = 30\n"
		     "\n"
		     "# Bytes per second a file must average: each file has timeout + its length /\n"
		     "# min_rate seconds on a mirror (1 to 1073741824).\n"
		     "#min_rate = 1024\n"
		     "\n"
		     "# Seconds for all the transfers of one rsr check or rsr update (1 to 604800).\n"
		     "#max_run_time = 21600\n",
		     RSR_UPDATE_MAX_MIRRORS, m) < 0)
		s = NULL;
	free(m);
	if (s)
		*ret_len = strlen(s);
	return s;
}

/* Creates ROOT/rel as directories, refusing a symbolic link on the way (it could lead out of the root). */
static int make_dirs(struct rsr_ctx *ctx, const char *root, const char *rel)
{
	_cleanup_close_ int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	_cleanup_free_ char *p = strdup(rel);
	char *save = NULL, *part;

	if (fd < 0)
		return rsr_error_errno(ctx, -errno, "%s", root);
	if (!p)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	for (part = strtok_r(p, "/", &save); part; part = strtok_r(NULL, "/", &save)) {
		int next;
		if (mkdirat(fd, part, 0755) < 0 && errno != EEXIST)
			return rsr_error_errno(ctx, -errno, "%s/%s: cannot make %s", root, rel, part);
		next = openat(fd, part, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
		if (next < 0)
			return rsr_error_errno(ctx, -errno, "%s/%s: %s is not a directory", root, rel, part);
		close(fd);
		fd = next;
	}
	return 0;
}

/* Fills `p` for ROOT/rel with buf (taken); notes whether it is in place, refuses other content. */
static int plan(struct rsr_ctx *ctx, const char *root, const char *rel, char *buf, size_t len, struct planned *p)
{
	_cleanup_free_ char *old = NULL;
	struct stat st;
	size_t old_len = 0;
	int r;

	p->buf = buf;
	p->len = len;
	if (!buf || asprintf(&p->path, "%s/%s", strcmp(root, "/") ? root : "", rel) < 0)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	if (lstat(p->path, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		return rsr_error_errno(ctx, -errno, "%s", p->path);
	}
	if (!S_ISREG(st.st_mode))
		return rsr_error(ctx, -EEXIST, "%s: exists and is not a regular file; nothing was written", p->path);
	if ((r = rsr_read_file(ctx, p->path, ENROLL_MAX_FILE, &old, &old_len)) < 0)
		return r;
	if (old_len != len || memcmp(old, buf, len))
		return rsr_error(ctx, -EEXIST,
				 "%s: exists with other content; nothing was written (remove it to enrol anew, or "
				 "edit it by hand)",
				 p->path);
	p->in_place = true;
	return 0;
}

/* The repository's root: a root role, signed by its own keys to their threshold. */
static int check_root(struct rsr_ctx *ctx, const char *path, char **ret_buf, size_t *ret_len)
{
	_cleanup_free_ char *buf = NULL;
	struct tuf_root *root = NULL;
	size_t len;
	int r;

	if ((r = rsr_read_file(ctx, path, ENROLL_MAX_FILE, &buf, &len)) < 0)
		return r;
	if ((r = tuf_root_parse(ctx, buf, len, path, &root)) < 0)
		return r;
	r = tuf_verify(ctx, root, TUF_ROOT, root->env, path);
	tuf_root_free(root);
	if (r < 0)
		return r;
	*ret_buf = TAKE_PTR(buf);
	*ret_len = len;
	return 0;
}

/* A response key: a public Ed25519 key (a private one is refused: it must not be on devices). */
static int check_key(struct rsr_ctx *ctx, const char *path, char **ret_buf, size_t *ret_len, char **ret_name)
{
	_cleanup_free_ char *buf = NULL, *copy = strdup(path);
	struct rsr_key *k = NULL;
	const char *base;
	size_t len, n;
	int r;

	if (!copy)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	if (rsr_key_load_private(ctx, path, &k) == 0) {
		rsr_key_free(k);
		return rsr_error(ctx, RSR_E_KEY,
				 "%s: a private key; give the public key (rsr key generate writes KEY.pub)", path);
	}
	if ((r = rsr_key_load_public(ctx, path, &k)) < 0)
		return r;
	rsr_key_free(k);
	if ((r = rsr_read_file(ctx, path, ENROLL_MAX_FILE, &buf, &len)) < 0)
		return r;
	base = strrchr(copy, '/') ? strrchr(copy, '/') + 1 : copy;
	n = strlen(base);
	if (n == 0 || base[0] == '.')
		return rsr_error(ctx, -EINVAL, "%s: no file name to give the key in keys.d", path);
	if (asprintf(ret_name, "%s%s", base,
		     n > 4 && (!strcmp(base + n - 4, ".pub") || !strcmp(base + n - 4, ".pem")) ? "" : ".pub") < 0)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	*ret_buf = TAKE_PTR(buf);
	*ret_len = len;
	return 0;
}

int rsr_repo_enroll(struct rsr_ctx *ctx, const struct rsr_repo_enroll_opts *o)
{
	struct rsr_update_policy policy;
	struct planned *p;
	const char *root;
	size_t n = 0, n_files;
	int r, written = 0;

	if (!o || o->version != RSR_REPO_ENROLL_OPTS_VERSION)
		return rsr_error(ctx, -EINVAL, "enrol options of an unknown version");
	if (o->n_mirrors == 0 || !o->repository_root || o->n_keys == 0)
		return rsr_error(ctx, -EINVAL, "enrolment needs a mirror, the repository's root and a response key");
	root = o->root ? o->root : "/";
	n_files = o->n_keys + 2;
	if (!(p = calloc(n_files, sizeof(*p))))
		return rsr_error(ctx, -ENOMEM, "out of memory");

	/* Everything is read and checked first: a refusal writes nothing. */
	for (size_t i = 0; i < o->n_keys; i++) {
		_cleanup_free_ char *name = NULL, *rel = NULL;
		char *buf = NULL;
		size_t len = 0;
		if ((r = check_key(ctx, o->keys[i], &buf, &len, &name)) < 0)
			goto out;
		if (asprintf(&rel, "%s/%s", RSR_GRAFT_KEYS_DIR, name) < 0) {
			free(buf);
			r = rsr_error(ctx, -ENOMEM, "out of memory");
			goto out;
		}
		for (size_t k = 0; k < n; k++)
			if (!strcmp(strrchr(p[k].path, '/') + 1, name)) {
				free(buf);
				r = rsr_error(ctx, -EINVAL, "%s: two keys would be keys.d/%s", o->keys[i], name);
				goto out;
			}
		if ((r = plan(ctx, root, rel, buf, len, &p[n++])) < 0)
			goto out;
	}
	{
		char *buf = NULL;
		size_t len = 0;
		if ((r = check_root(ctx, o->repository_root, &buf, &len)) < 0 ||
		    (r = plan(ctx, root, RSR_UPDATE_ROOT_FILE, buf, len, &p[n++])) < 0)
			goto out;
	}
	{
		size_t len = 0;
		char *buf = policy_text(o, &len);
		if (!buf) {
			r = rsr_error(ctx, -ENOMEM, "out of memory");
			goto out;
		}
		/* The policy must read back as rsr check and update read it (mirror URLs included). */
		rsr_update_policy_init(&policy);
		r = rsr_update_policy_parse(ctx, buf, len, "the policy rsr enroll writes", &policy);
		rsr_update_policy_clear(&policy);
		if (r < 0) {
			free(buf);
			goto out;
		}
		if ((r = plan(ctx, root, RSR_UPDATE_POLICY_FILE, buf, len, &p[n++])) < 0)
			goto out;
	}
	if ((r = make_dirs(ctx, root, RSR_GRAFT_KEYS_DIR)) < 0)
		goto out;
	/* Keys first, the policy last: a device with a policy has what it needs to check. */
	for (size_t i = 0; i < n; i++) {
		if (p[i].in_place)
			continue;
		if ((r = rsr_write_file_atomic(ctx, p[i].path, p[i].buf, p[i].len, 0644)) < 0)
			goto out;
		rsr_info(ctx, "wrote %s", p[i].path);
		written++;
	}
	r = written;
out:
	planned_free(p, n_files);
	return r;
}
