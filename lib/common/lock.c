/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The device lock: one lock per device root, taken by every operation that
 * changes the root (graft, ungraft, install, remove, recover), so that two of
 * them never switch or prune one slot at once.
 *
 * It is an flock() on ROOT/var/lib/rsr/lock, a regular file owned by the
 * caller (root) with mode 0600, reached from the root directory one
 * component at a time with O_NOFOLLOW. Nobody else can open it, so nobody
 * else can hold it: a user who can read the root directory cannot block
 * rsr by locking it. The file stays empty: a waiter names the holder from
 * /proc/locks, so a refused operation changes nothing in it.
 *
 * flock() locks belong to an open file description, so two opens of the
 * file by one process would block each other. An operation that takes the
 * lock and then calls another that takes it (install grafting its images)
 * must not deadlock: the context keeps the locks it holds, keyed by the
 * lock file's device and inode, and counts references.
 */
#include <fcntl.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>

#include "internal.h"

#define LOCK_STATE_DIR "var/lib/rsr"
#define LOCK_FILE "lock"
#define LOCK_POLL_MS 100

struct rsr_lock {
	struct rsr_ctx *ctx;
	struct rsr_lock *next;
	dev_t dev;
	ino_t ino;
	int fd;
	unsigned refs;
};

void rsr_ctx_set_lock_wait(struct rsr_ctx *ctx, int seconds)
{
	ctx->lock_wait = seconds < 0 ? -1 : seconds;
}

int rsr_ctx_get_lock_wait(const struct rsr_ctx *ctx)
{
	return ctx->lock_wait;
}

/*
 * Opens (creating what is missing) var/lib/rsr below `rootfd`, every
 * component a directory reached without following a symbolic link.
 */
static int open_state_dir(struct rsr_ctx *ctx, int rootfd, const char *root)
{
	_cleanup_free_ char *path = strdup(LOCK_STATE_DIR);
	int fd = -1, parent = rootfd;
	char *save = NULL;

	if (!path)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	for (char *c = strtok_r(path, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
		if (mkdirat(parent, c, 0755) < 0 && errno != EEXIST) {
			int e = -errno;
			if (parent != rootfd)
				close(parent);
			return rsr_error_errno(ctx, e, "%s/%s: cannot create the directory of the device lock",
					       strcmp(root, "/") ? root : "", LOCK_STATE_DIR);
		}
		fd = openat(parent, c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0) {
			int e = -errno;
			if (parent != rootfd)
				close(parent);
			return e == -ENOTDIR || e == -ELOOP
				   ? rsr_error(ctx, RSR_E_STATE,
					       "%s/%s: a component is not a directory (a symbolic link?); "
					       "the device state stays inside the root",
					       strcmp(root, "/") ? root : "", LOCK_STATE_DIR)
				   : rsr_error_errno(ctx, e, "%s/%s", strcmp(root, "/") ? root : "", LOCK_STATE_DIR);
		}
		if (parent != rootfd)
			close(parent);
		parent = fd;
	}
	return fd;
}

/*
 * Who holds the lock on the file with this device and inode, from
 * /proc/locks: "N: FLOCK  ADVISORY  WRITE PID MAJ:MIN:INODE 0 EOF".
 * Returns the pid, or 0 if no line names it.
 */
static pid_t lock_holder(dev_t dev, ino_t ino)
{
	FILE *f = fopen("/proc/locks", "re");
	char line[256];
	pid_t found = 0;

	if (!f)
		return 0;
	while (!found && fgets(line, sizeof(line), f)) {
		char kind[16];
		int pid;
		unsigned maj, min;
		unsigned long long inode;

		/* Lines for processes blocked on a lock start "N: -> ". */
		if (strstr(line, "->"))
			continue;
		if (sscanf(line, "%*d: %15s %*s %*s %d %x:%x:%llu", kind, &pid, &maj, &min, &inode) != 5)
			continue;
		if (strcmp(kind, "FLOCK") == 0 && maj == major(dev) && min == minor(dev) &&
		    inode == (unsigned long long)ino && pid > 0)
			found = (pid_t)pid;
	}
	fclose(f);
	return found;
}

/*
 * "pid 1234: rsr install /srv/r" (the start of its command line), "pid 1234",
 * or "pid unknown" when /proc/locks does not show it (a holder in a pid
 * namespace this process cannot see).
 */
static void describe_holder(pid_t pid, char *buf, size_t size)
{
	char path[64], cmd[128];
	ssize_t n = -1;

	if (pid <= 0) {
		snprintf(buf, size, "pid unknown");
		return;
	}
	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
	{
		_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd >= 0)
			n = read(fd, cmd, sizeof(cmd) - 1);
	}
	if (n <= 0) {
		snprintf(buf, size, "pid %d", (int)pid);
		return;
	}
	cmd[n] = '\0';
	for (ssize_t i = 0; i + 1 < n; i++)
		if (cmd[i] == '\0' || (unsigned char)cmd[i] < ' ')
			cmd[i] = ' ';
	/* The program's own name, not its path. */
	{
		char *prog = cmd, *space = strchr(cmd, ' '), *slash;
		if (space)
			*space = '\0';
		slash = strrchr(prog, '/');
		snprintf(buf, size, "pid %d: %s%s%s%s", (int)pid, slash ? slash + 1 : prog, space ? " " : "",
			 space ? space + 1 : "", (size_t)n >= sizeof(cmd) - 1 ? " ..." : "");
	}
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int rsr_flock_wait(struct rsr_ctx *ctx, int fd, const char *who, const char *doing, const char *target)
{
	int64_t deadline = 0;
	bool told = false;
	char holder[192];
	struct stat st;

	if (fstat(fd, &st) < 0)
		return rsr_error_errno(ctx, -errno, "%s: cannot lock", target);
	if (ctx->lock_wait > 0)
		deadline = now_ms() + (int64_t)ctx->lock_wait * 1000;
	while (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		if (errno == EINTR)
			continue;
		if (errno != EWOULDBLOCK)
			return rsr_error_errno(ctx, -errno, "%s: cannot lock", target);
		describe_holder(lock_holder(st.st_dev, st.st_ino), holder, sizeof(holder));
		if (ctx->lock_wait == 0)
			return rsr_error(ctx, RSR_E_BUSY,
					 "%s (%s) is %s %s; try again when it ends, or wait for it with --wait", who,
					 holder, doing, target);
		if (ctx->lock_wait > 0 && now_ms() >= deadline)
			return rsr_error(ctx, RSR_E_BUSY, "%s (%s) is still %s %s after %d s of waiting", who, holder,
					 doing, target, ctx->lock_wait);
		if (!told) {
			if (ctx->lock_wait > 0)
				rsr_info(ctx, "waiting up to %d s for %s (%s) to end", ctx->lock_wait, who, holder);
			else
				rsr_info(ctx, "waiting for %s (%s) to end", who, holder);
			told = true;
		}
		nanosleep(&(struct timespec){.tv_nsec = LOCK_POLL_MS * 1000000L}, NULL);
	}
	return 0;
}

int rsr_lock_take(struct rsr_ctx *ctx, int rootfd, const char *root, struct rsr_lock **ret_lock)
{
	_cleanup_close_ int dirfd = -1, fd = -1;
	const char *shown = strcmp(root, "/") ? root : "";
	struct rsr_lock *l;
	struct stat st;
	int r;

	dirfd = open_state_dir(ctx, rootfd, root);
	if (dirfd < 0)
		return dirfd;
	fd = openat(dirfd, LOCK_FILE, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC, 0600);
	if (fd < 0)
		return rsr_error_errno(ctx, -errno, "%s/%s/%s: cannot open the device lock", shown, LOCK_STATE_DIR,
				       LOCK_FILE);
	if (fstat(fd, &st) < 0)
		return rsr_error_errno(ctx, -errno, "%s/%s/%s", shown, LOCK_STATE_DIR, LOCK_FILE);
	if (!S_ISREG(st.st_mode) || st.st_uid != geteuid())
		return rsr_error(ctx, RSR_E_STATE,
				 "%s/%s/%s: not rsr's lock (it must be a regular file owned by uid %u); "
				 "remove it and try again",
				 shown, LOCK_STATE_DIR, LOCK_FILE, (unsigned)geteuid());
	/* Whoever else can open it can hold it. */
	if ((st.st_mode & 07777) != 0600 && fchmod(fd, 0600) < 0)
		return rsr_error_errno(ctx, -errno, "%s/%s/%s: cannot make it mode 0600", shown, LOCK_STATE_DIR,
				       LOCK_FILE);

	for (l = ctx->locks; l; l = l->next)
		if (l->dev == st.st_dev && l->ino == st.st_ino) {
			l->refs++;
			*ret_lock = l;
			return 0;
		}

	r = rsr_flock_wait(ctx, fd, "another rsr operation", "changing", root);
	if (r < 0)
		return r;

	l = calloc(1, sizeof(*l));
	if (!l)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	l->ctx = ctx;
	l->dev = st.st_dev;
	l->ino = st.st_ino;
	l->fd = fd;
	fd = -1;
	l->refs = 1;
	l->next = ctx->locks;
	ctx->locks = l;
	*ret_lock = l;
	return 0;
}

void rsr_lock_release(struct rsr_lock *lock)
{
	struct rsr_lock **p;

	if (!lock || --lock->refs > 0)
		return;
	for (p = &lock->ctx->locks; *p; p = &(*p)->next)
		if (*p == lock) {
			*p = lock->next;
			break;
		}
	close(lock->fd); /* releases the flock */
	free(lock);
}

void rsr_lock_release_all(struct rsr_ctx *ctx)
{
	while (ctx->locks) {
		struct rsr_lock *l = ctx->locks;
		ctx->locks = l->next;
		close(l->fd);
		free(l);
	}
}
