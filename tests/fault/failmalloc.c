/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Allocation-failure injection for tests, loaded with LD_PRELOAD: counts every
 * malloc-family call of the process (rsr, OpenSSL, jansson, libc) and makes
 * the N-th fail with ENOMEM, so a harness can walk N = 1, 2, ... through a
 * whole operation. Test-only: the library itself never reads the environment.
 *
 *   RSR_FAILMALLOC=N          fail allocation number N (0 or unset: only count)
 *   RSR_FAILMALLOC_PERSIST=1  also fail every allocation after N
 *   RSR_FAILMALLOC_REPORT=F   write "failed N" to F when the failure fires and
 *                             "allocations M" at exit
 *
 * It forwards to the next allocator in the link order (libc's, or the
 * AddressSanitizer runtime's, so LeakSanitizer still sees every block).
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef void *(*malloc_fn)(size_t);
typedef void *(*calloc_fn)(size_t, size_t);
typedef void *(*realloc_fn)(void *, size_t);
typedef void (*free_fn)(void *);
typedef int (*posix_memalign_fn)(void **, size_t, size_t);
typedef void *(*aligned_alloc_fn)(size_t, size_t);

static malloc_fn next_malloc;
static calloc_fn next_calloc;
static realloc_fn next_realloc;
static free_fn next_free;
static posix_memalign_fn next_posix_memalign;
static aligned_alloc_fn next_aligned_alloc;
static aligned_alloc_fn next_memalign;

static unsigned long fail_at; /* 0: never fail */
static bool persist;
static char report[4096];     /* path of the report file, or empty */
static unsigned long counter; /* allocations so far, atomically updated */
static int state;	      /* 0: not set up, 1: setting up, 2: ready */
static bool armed;	      /* the environment has been read */

/*
 * dlsym() may allocate while we resolve the real functions; those few
 * requests are served from this arena and never freed.
 */
static _Alignas(max_align_t) unsigned char arena[64 * 1024];
static size_t arena_used;

static bool in_arena(const void *p)
{
	return (const unsigned char *)p >= arena && (const unsigned char *)p < arena + sizeof(arena);
}

static void *arena_alloc(size_t n)
{
	size_t a = _Alignof(max_align_t), start = (arena_used + a - 1) / a * a;

	if (n > sizeof(arena) - start)
		return NULL;
	arena_used = start + n;
	return arena + start;
}

static void write_report(const char *what, unsigned long n)
{
	char line[64];
	int len, fd;

	if (!report[0])
		return;
	len = snprintf(line, sizeof(line), "%s %lu\n", what, n);
	/* open/write: no allocation, safe from any thread and at exit. */
	fd = open(report, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	if (write(fd, line, (size_t)len) != len)
		(void)0; /* a lost report shows as a missing line; nothing else to do */
	close(fd);
}

/* dlsym() gives an object pointer; POSIX guarantees it converts to a function pointer. */
static void resolve(void *fnp, const char *name)
{
	void *p = dlsym(RTLD_NEXT, name);

	memcpy(fnp, &p, sizeof(p));
}

static void setup(void)
{
	if (__atomic_load_n(&state, __ATOMIC_ACQUIRE) == 2)
		return;
	state = 1;
	resolve(&next_malloc, "malloc");
	resolve(&next_calloc, "calloc");
	resolve(&next_realloc, "realloc");
	resolve(&next_free, "free");
	resolve(&next_posix_memalign, "posix_memalign");
	resolve(&next_aligned_alloc, "aligned_alloc");
	resolve(&next_memalign, "memalign");
	if (!next_malloc || !next_calloc || !next_realloc || !next_free) {
		static const char msg[] = "failmalloc: cannot find the real allocator\n";
		ssize_t w = write(STDERR_FILENO, msg, sizeof(msg) - 1);
		(void)w;
		_exit(127);
	}
	__atomic_store_n(&state, 2, __ATOMIC_RELEASE);
}

/*
 * The environment is read by a constructor, not on the first allocation: a
 * sanitizer runtime allocates before libc has set up environ.
 */
__attribute__((constructor)) static void read_env(void)
{
	const char *s;

	if (state != 2)
		setup();
	s = getenv("RSR_FAILMALLOC_PERSIST");
	persist = s && *s && strcmp(s, "0") != 0;
	s = getenv("RSR_FAILMALLOC_REPORT");
	if (s && strlen(s) < sizeof(report))
		strcpy(report, s);
	s = getenv("RSR_FAILMALLOC");
	fail_at = s ? strtoul(s, NULL, 10) : 0;
	__atomic_store_n(&armed, true, __ATOMIC_RELEASE);
}

__attribute__((destructor)) static void at_exit(void)
{
	if (state == 2)
		write_report("allocations", __atomic_load_n(&counter, __ATOMIC_RELAXED));
}

/*
 * True if this allocation is the one to fail. Allocations before the
 * constructor (the loader's, a sanitizer runtime's) are not counted: the
 * environment has not been read yet, and they never fail.
 */
static bool should_fail(void)
{
	unsigned long n, at;

	if (!__atomic_load_n(&armed, __ATOMIC_ACQUIRE))
		return false;
	n = __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
	at = fail_at;
	if (at == 0 || n < at || (n > at && !persist))
		return false;
	if (n == at)
		write_report("failed", n);
	errno = ENOMEM;
	return true;
}

void *malloc(size_t n)
{
	if (state != 2) {
		if (state == 1)
			return arena_alloc(n);
		setup();
	}
	return should_fail() ? NULL : next_malloc(n);
}

void *calloc(size_t n, size_t size)
{
	if (state != 2) {
		if (state == 1) {
			/* The arena is zeroed static storage, never reused. */
			if (size && n > SIZE_MAX / size)
				return NULL;
			return arena_alloc(n * size);
		}
		setup();
	}
	return should_fail() ? NULL : next_calloc(n, size);
}

void *realloc(void *p, size_t n)
{
	if (state != 2)
		setup();
	if (in_arena(p)) {
		void *q = malloc(n);
		size_t left = (size_t)(arena + sizeof(arena) - (unsigned char *)p);
		if (q)
			memcpy(q, p, n < left ? n : left);
		return q;
	}
	if (p && n == 0)
		return next_realloc(p, n); /* a free, not an allocation */
	return should_fail() ? NULL : next_realloc(p, n);
}

void *reallocarray(void *p, size_t n, size_t size)
{
	if (size && n > SIZE_MAX / size) {
		errno = ENOMEM;
		return NULL;
	}
	return realloc(p, n * size);
}

void free(void *p)
{
	if (!p || in_arena(p))
		return;
	if (state != 2)
		setup();
	next_free(p);
}

int posix_memalign(void **ret, size_t align, size_t n)
{
	if (state != 2)
		setup();
	if (!next_posix_memalign)
		return ENOSYS;
	if (should_fail())
		return ENOMEM;
	return next_posix_memalign(ret, align, n);
}

void *aligned_alloc(size_t align, size_t n)
{
	if (state != 2)
		setup();
	if (!next_aligned_alloc) {
		errno = ENOSYS;
		return NULL;
	}
	return should_fail() ? NULL : next_aligned_alloc(align, n);
}

void *memalign(size_t align, size_t n)
{
	if (state != 2)
		setup();
	if (!next_memalign) {
		errno = ENOSYS;
		return NULL;
	}
	return should_fail() ? NULL : next_memalign(align, n);
}
