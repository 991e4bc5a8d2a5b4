/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Who still runs old code: scans /proc/ * /exe and /proc/ * /maps for files of
 * retired grafts (swapped out or ungrafted) and for base files now shadowed
 * by a graft, and restarts their systemd units.
 */
#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "graft-internal.h"

struct retired_dev {
	dev_t dev;
	const char *what; /* borrowed from the state */
	const char *dir;  /* where it was mounted: prefix for paths the kernel shows relative to it */
	bool overlay;	  /* an overlay (else an image) */
};

struct grafted_dir {
	char *prefix;	/* "<root>/usr/" */
	dev_t dev;	/* the overlay */
	json_t *layers; /* borrowed: image layer directories, base last */
};

struct scan {
	const struct rsr_graft *g;
	struct retired_dev *retired;
	size_t n_retired;
	struct grafted_dir *dirs;
	size_t n_dirs;
	struct dev_set images; /* devices of grafted images: current, not stale */
};

static bool is_retired(const struct scan *sc, dev_t dev)
{
	for (size_t i = 0; i < sc->n_retired; i++)
		if (sc->retired[i].dev == dev)
			return true;
	return false;
}

/*
 * "<where it was mounted><path>": a detached mount shows paths from its own
 * root. In a mount namespace that still has the retired mount attached (a
 * service's private one, say) the path is already whole.
 */
static char *join_retired(const char *dir, const char *path)
{
	size_t l = strlen(dir);
	char *s = NULL;

	if (l > 0 && !strncmp(path, dir, l) && path[l] == '/')
		return strdup(path);
	return asprintf(&s, "%s%s", dir, path) < 0 ? NULL : s;
}

static char *retired_display(const struct scan *sc, dev_t dev, const char *path)
{
	if (!path)
		return NULL;
	for (size_t i = 0; i < sc->n_retired; i++)
		if (sc->retired[i].dev == dev)
			return join_retired(sc->retired[i].dir, path);
	return strdup(path);
}

/* The same file: an unchanged base file seen through an old and a new overlay. */
static bool same_file(const struct stat *a, const struct stat *b)
{
	return a->st_size == b->st_size && a->st_mode == b->st_mode && a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
	       a->st_mtim.tv_nsec == b->st_mtim.tv_nsec && a->st_ctim.tv_sec == b->st_ctim.tv_sec &&
	       a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

/* True if a current image layer of a grafted directory has `rel` (a file or a whiteout). */
static bool shadowed_now(const struct grafted_dir *d, const char *rel)
{
	size_t nl = json_array_size(d->layers);

	for (size_t j = 0; j + 1 < nl; j++) {
		_cleanup_free_ char *cand = NULL;
		struct stat sb;
		if (asprintf(&cand, "%s/%s", json_string_value(json_array_get(d->layers, j)), rel) < 0)
			continue;
		if (lstat(cand, &sb) == 0)
			return true;
	}
	return false;
}

/*
 * Why a mapped file is old code, or NULL if it is not; the caller frees.
 * `mapped` is the file's stat through the process (NULL if unknown).
 */
static char *classify(const struct scan *sc, dev_t dev, const char *path, const struct stat *mapped, char **ret_display)
{
	char *reason = NULL;

	*ret_display = NULL;
	for (size_t i = 0; i < sc->n_retired; i++) {
		const struct retired_dev *rd = &sc->retired[i];
		if (rd->dev != dev)
			continue;
		if (rd->overlay && mapped) {
			/*
			 * A base file the old overlay merely passed through is
			 * the same file today, unless an image shadows it now.
			 */
			_cleanup_free_ char *now = NULL;
			size_t dl = strlen(rd->dir);
			const char *rel = dl > 0 && !strncmp(path, rd->dir, dl) && path[dl] == '/' ? path + dl : path;
			struct stat sb;
			bool shadowed = false;
			for (size_t k = 0; k < sc->n_dirs; k++) {
				size_t pl = strlen(sc->dirs[k].prefix);
				if (pl > 0 && !strncmp(sc->dirs[k].prefix, rd->dir, pl - 1) && rd->dir[pl - 1] == '\0')
					shadowed |= shadowed_now(&sc->dirs[k], rel[0] == '/' ? rel + 1 : rel);
			}
			if (!shadowed && (now = join_retired(rd->dir, path)) && stat(now, &sb) == 0 &&
			    same_file(&sb, mapped))
				return NULL;
		}
		*ret_display = join_retired(rd->dir, path);
		if (asprintf(&reason, "from %s", rd->what) < 0)
			reason = NULL;
		return reason;
	}
	if (dev_set_has(&sc->images, dev))
		return NULL;
	for (size_t i = 0; i < sc->n_dirs; i++) {
		const struct grafted_dir *d = &sc->dirs[i];
		size_t pl = strlen(d->prefix);
		if (d->dev == dev || strncmp(path, d->prefix, pl))
			continue;
		/* A base file mapped before the graft: old code if an image shadows it. */
		if (shadowed_now(d, path + pl)) {
			*ret_display = strdup(path);
			if (asprintf(&reason, "base file shadowed by the graft on %.*s", (int)(pl - 1), d->prefix) < 0)
				reason = NULL;
			return reason;
		}
	}
	return NULL;
}

struct seen {
	dev_t dev;
	uint64_t ino;
};

/* comm and unit of a process, for the report. */
static void describe_pid(int pid, char **ret_comm, char **ret_unit, bool *ret_system)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/%d/comm", pid);
	*ret_comm = graft_read_small(path, false);
	if (*ret_comm)
		(*ret_comm)[strcspn(*ret_comm, "\n")] = '\0';
	snprintf(path, sizeof(path), "/proc/%d/cgroup", pid);
	_cleanup_free_ char *cg = graft_read_small(path, false);
	*ret_unit = cg ? graft_unit_from_cgroup(cg, ret_system) : NULL;
}

/* The target of a /proc magic link, without " (deleted)"; NULL if unreadable. */
static char *proc_link(const char *path)
{
	char buf[4096];
	ssize_t l = readlink(path, buf, sizeof(buf) - 1);

	if (l <= 0)
		return NULL;
	buf[l] = '\0';
	if (l > 10 && !strcmp(buf + l - 10, " (deleted)"))
		buf[l - 10] = '\0';
	return strdup(buf);
}

/*
 * Where the process keeps a retired graft alive other than by its
 * executable or mappings: its working directory, root or an open file.
 */
static bool holds_by_files(const struct scan *sc, int pid, char **ret_file, const char **ret_how)
{
	static const struct {
		const char *link, *how;
	} dirs[] = {{"cwd", "working directory"}, {"root", "root directory"}};
	char path[96];
	struct dirent *de;
	struct stat sb;
	DIR *d;

	for (size_t i = 0; i < ARRAY_SIZE(dirs); i++) {
		snprintf(path, sizeof(path), "/proc/%d/%s", pid, dirs[i].link);
		if (stat(path, &sb) == 0 && is_retired(sc, sb.st_dev)) {
			_cleanup_free_ char *l = proc_link(path);
			*ret_file = retired_display(sc, sb.st_dev, l);
			*ret_how = dirs[i].how;
			return true;
		}
	}
	snprintf(path, sizeof(path), "/proc/%d/fd", pid);
	d = opendir(path);
	while (d && (de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/fd/%.16s", pid, de->d_name);
		if (stat(path, &sb) == 0 && is_retired(sc, sb.st_dev)) {
			_cleanup_free_ char *l = proc_link(path);
			*ret_file = retired_display(sc, sb.st_dev, l);
			*ret_how = "open file";
			closedir(d);
			return true;
		}
	}
	if (d)
		closedir(d);
	return false;
}

/* Takes `file`; copies `comm` and `unit` (either may be NULL). */
static int add_holder(struct rsr_ctx *ctx, struct rsr_graft_report *rep, int pid, char *file, const char *how,
		      const char *comm, const char *unit)
{
	struct rsr_graft_holder *n = realloc(rep->holders, (rep->n_holders + 1) * sizeof(*n));

	if (!n) {
		free(file);
		return rsr_error(ctx, -ENOMEM, "out of memory");
	}
	rep->holders = n;
	n = &rep->holders[rep->n_holders++];
	*n = (struct rsr_graft_holder){.pid = pid,
				       .file = file,
				       .how = strdup(how),
				       .comm = comm ? strdup(comm) : NULL,
				       .unit = unit ? strdup(unit) : NULL};
	if (!n->how || (comm && !n->comm) || (unit && !n->unit))
		return rsr_error(ctx, -ENOMEM, "out of memory");
	return 0;
}

static int scan_pid(struct rsr_ctx *ctx, const struct scan *sc, int pid, struct rsr_graft_report *rep)
{
	char *hold_file = NULL;
	const char *hold_how = NULL;
	char path[64], *line = NULL;
	size_t cap = 0;
	struct seen *seen = NULL;
	size_t n_seen = 0, cap_seen = 0;
	char *first_file = NULL, *first_reason = NULL;
	size_t n_files = 0;
	struct stat sb;
	FILE *f;

	/* The executable first: it is what people recognise. */
	snprintf(path, sizeof(path), "/proc/%d/exe", pid);
	if (stat(path, &sb) == 0) {
		_cleanup_free_ char *exe = proc_link(path);
		if (exe && is_retired(sc, sb.st_dev)) {
			hold_file = retired_display(sc, sb.st_dev, exe);
			hold_how = "executable";
		}
		if (exe) {
			char *disp;
			first_reason = classify(sc, sb.st_dev, exe, &sb, &disp);
			if (!first_reason)
				free(disp);
			if (first_reason) {
				first_file = disp ? disp : strdup(exe);
				n_files++;
				seen = malloc(sizeof(*seen));
				if (seen) {
					seen[0] = (struct seen){sb.st_dev, sb.st_ino};
					n_seen = cap_seen = 1;
				}
			}
		}
	}
	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	f = fopen(path, "re");
	while (f && getline(&line, &cap, f) > 0) {
		dev_t dev;
		uint64_t ino;
		char *file, *disp, *reason;
		bool dup = false;
		if (!graft_parse_maps_line(line, &dev, &ino, &file))
			continue;
		for (size_t i = 0; i < n_seen && !dup; i++)
			dup = seen[i].dev == dev && seen[i].ino == ino;
		if (dup)
			continue;
		if (n_seen == cap_seen) {
			size_t nc = cap_seen ? 2 * cap_seen : 16;
			struct seen *ns = realloc(seen, nc * sizeof(*ns));
			if (!ns)
				break;
			seen = ns;
			cap_seen = nc;
		}
		seen[n_seen++] = (struct seen){dev, ino};
		struct stat ms;
		bool have_ms = false;
		if (is_retired(sc, dev)) {
			if (!hold_how) {
				hold_file = retired_display(sc, dev, file);
				hold_how = "mapping";
			}
			/* Only then is the mapped file's own stat needed (through map_files, as root). */
			char mf[96];
			snprintf(mf, sizeof(mf), "/proc/%d/map_files/%.*s", pid, (int)strcspn(line, " "), line);
			have_ms = stat(mf, &ms) == 0;
		}
		reason = classify(sc, dev, file, have_ms ? &ms : NULL, &disp);
		if (!reason) {
			free(disp);
			continue;
		}
		n_files++;
		if (!first_reason) {
			first_reason = reason;
			first_file = disp ? disp : strdup(file);
		} else {
			free(reason);
			free(disp);
		}
	}
	if (f)
		fclose(f);
	free(line);
	free(seen);
	if (!hold_how && sc->n_retired > 0)
		(void)holds_by_files(sc, pid, &hold_file, &hold_how);
	if (!hold_how && !first_reason) {
		free(first_file);
		return 0;
	}
	/* One look at the process's name and unit, for both lists. */
	_cleanup_free_ char *comm = NULL, *unit = NULL;
	bool system_unit = false;
	describe_pid(pid, &comm, &unit, &system_unit);
	if (hold_how) {
		int r = add_holder(ctx, rep, pid, hold_file, hold_how, comm, unit);
		if (r < 0) {
			free(first_file);
			free(first_reason);
			return r;
		}
	}
	if (!first_reason) {
		free(first_file);
		return 0;
	}
	struct rsr_graft_stale_process *np = realloc(rep->stale, (rep->n_stale + 1) * sizeof(*np));
	if (!np) {
		free(first_file);
		free(first_reason);
		return rsr_error(ctx, -ENOMEM, "out of memory");
	}
	rep->stale = np;
	struct rsr_graft_stale_process *sp = &rep->stale[rep->n_stale++];
	memset(sp, 0, sizeof(*sp));
	sp->pid = pid;
	sp->file = first_file;
	sp->reason = first_reason;
	sp->n_files = n_files;
	sp->comm = TAKE_PTR(comm);
	sp->unit = TAKE_PTR(unit);
	sp->system_unit = system_unit;
	return 0;
}

static const char *str_or(const json_t *v, const char *dflt)
{
	return json_is_string(v) ? json_string_value(v) : dflt;
}

static int cmp_int(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;
	return (x > y) - (x < y);
}

int graft_scan_processes(struct rsr_ctx *ctx, const struct rsr_graft *g, json_t *st, struct rsr_graft_report *rep)
{
	struct scan sc = {.g = g};
	struct dev_set live = {0};
	json_t *retired = json_object_get(st, "retired"), *paths = json_object_get(st, "paths"), *e;
	int *pids = NULL;
	size_t n_pids = 0, idx;
	struct dirent *de;
	DIR *d;
	int r = 0;

	r = graft_live_mount_devs(&live);
	if (r < 0)
		return rsr_error_errno(ctx, r, "/proc/self/mountinfo");
	sc.retired = calloc(json_array_size(retired) + 1, sizeof(*sc.retired));
	sc.dirs = calloc(json_array_size(paths) + 1, sizeof(*sc.dirs));
	if (!sc.retired || !sc.dirs) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	/* Newest first: a device number reused by a later graft names the later one. */
	for (size_t i = json_array_size(retired); i-- > 0;) {
		dev_t dev;
		e = json_array_get(retired, i);
		/* A retired device is detached; one that a mount shows again was reused. */
		if (!graft_parse_dev(json_string_value(json_object_get(e, "dev")), &dev) || dev_set_has(&live, dev))
			continue;
		sc.retired[sc.n_retired].dev = dev;
		sc.retired[sc.n_retired].what = str_or(json_object_get(e, "what"), "a retired graft");
		sc.retired[sc.n_retired].dir = str_or(json_object_get(e, "dir"), "");
		sc.retired[sc.n_retired].overlay = json_is_true(json_object_get(e, "overlay"));
		sc.n_retired++;
	}
	json_array_foreach(paths, idx, e)
	{
		struct grafted_dir *gd = &sc.dirs[sc.n_dirs];
		if (!graft_parse_dev(json_string_value(json_object_get(e, "dev")), &gd->dev) ||
		    !json_is_array(json_object_get(e, "layers")))
			continue;
		if (asprintf(&gd->prefix, "%s%s/", g->prefix, str_or(json_object_get(e, "path"), "")) < 0) {
			r = rsr_error(ctx, -ENOMEM, "out of memory");
			goto out;
		}
		gd->layers = json_object_get(e, "layers");
		sc.n_dirs++;
	}
	json_array_foreach(json_object_get(st, "slots"), idx, e)
	{
		dev_t dev;
		if (graft_parse_dev(json_string_value(json_object_get(e, "dev")), &dev))
			dev_set_add(&sc.images, dev);
	}
	if (sc.n_retired == 0 && sc.n_dirs == 0)
		goto out; /* nothing can be stale */

	d = opendir("/proc");
	if (!d) {
		r = rsr_error_errno(ctx, -errno, "/proc");
		goto out;
	}
	while ((de = readdir(d))) {
		char *end;
		long pid = strtol(de->d_name, &end, 10);
		if (!isdigit((unsigned char)de->d_name[0]) || *end || pid <= 0 || pid == getpid())
			continue;
		int *np = realloc(pids, (n_pids + 1) * sizeof(*np));
		if (!np) {
			closedir(d);
			r = rsr_error(ctx, -ENOMEM, "out of memory");
			goto out;
		}
		pids = np;
		pids[n_pids++] = (int)pid;
	}
	closedir(d);
	if (n_pids)
		qsort(pids, n_pids, sizeof(*pids), cmp_int);
	/* Processes come and go while we look; a vanished one is simply not listed. */
	for (size_t i = 0; i < n_pids && r >= 0; i++)
		r = scan_pid(ctx, &sc, pids[i], rep);
out:
	for (size_t i = 0; sc.dirs && i < sc.n_dirs; i++)
		free(sc.dirs[i].prefix);
	free(sc.dirs);
	free(sc.retired);
	free(pids);
	dev_set_free(&sc.images);
	dev_set_free(&live);
	return r < 0 ? r : 0;
}

int rsr_graft_restart_services(struct rsr_ctx *ctx, const struct rsr_graft_report *rep)
{
	static const char *systemctl[] = {"/usr/bin/systemctl", "/bin/systemctl"};
	static char *const envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL};
	const char *prog = NULL;
	char **argv = NULL;
	size_t argc = 0;
	pid_t pid;
	int status, r;

	argv = calloc(rep->n_stale + 4, sizeof(char *));
	if (!argv)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	argv[argc++] = "systemctl";
	argv[argc++] = "try-restart";
	argv[argc++] = "--";
	for (size_t i = 0; i < rep->n_stale; i++) {
		const char *u = rep->stale[i].unit;
		size_t l = u ? strlen(u) : 0;
		bool dup = false;
		if (l < 9 || strcmp(u + l - 8, ".service"))
			continue; /* scopes and sessions are not restartable */
		if (!rep->stale[i].system_unit)
			continue; /* a user's units are theirs: reported, never restarted as root */
		for (size_t j = 3; j < argc && !dup; j++)
			dup = !strcmp(argv[j], u);
		if (!dup)
			argv[argc++] = (char *)u;
	}
	/* The same test as sd_booted(). */
	if (rep->n_stale > 0 && access("/run/systemd/system", F_OK) < 0) {
		free(argv);
		return rsr_error(ctx, RSR_E_STATE,
				 "systemd is not running (no /run/systemd/system): cannot restart the %zu process%s "
				 "running superseded code",
				 rep->n_stale, rep->n_stale == 1 ? "" : "es");
	}
	if (argc == 3) {
		free(argv);
		return 0;
	}
	for (size_t i = 0; i < ARRAY_SIZE(systemctl) && !prog; i++)
		if (access(systemctl[i], X_OK) == 0)
			prog = systemctl[i];
	if (!prog) {
		free(argv);
		return rsr_error(ctx, RSR_E_TOOL, "systemctl not found in /usr/bin or /bin");
	}
	r = posix_spawn(&pid, prog, NULL, NULL, argv, envp);
	if (r != 0) {
		free(argv);
		return rsr_error_errno(ctx, -r, "%s", prog);
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR) {
			free(argv);
			return rsr_error_errno(ctx, -errno, "waiting for %s", prog);
		}
	r = (int)argc - 3;
	free(argv);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return rsr_error(ctx, RSR_E_TOOL, "systemctl try-restart failed (status %d)",
				 WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
	return r;
}
