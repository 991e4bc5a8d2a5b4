/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Helpers shared by every module of librsr: the context layout, error
 * recording, cleanup attributes, little-endian access, hex, file I/O and a
 * small parallel-for. Not installed; never part of the public API.
 */
#ifndef RSR_INTERNAL_H
#define RSR_INTERNAL_H

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "rsr/common.h"

#define RSR_ERRMSG_MAX 1024
/* Room for a progress label (rsr_progress_label()). */
#define RSR_PROGRESS_LABEL_MAX 128

struct rsr_ctx {
	rsr_log_fn log_fn;
	void *log_data;
	enum rsr_log_level log_level;
	rsr_progress_fn progress_fn;
	void *progress_data;
	unsigned threads;
	int lock_wait;		/* seconds; 0 fails at once, -1 waits without end */
	struct rsr_lock *locks; /* device locks held (lock.c) */
	int last_err;
	char errmsg[RSR_ERRMSG_MAX];
};

/*
 * The device lock of a root (lock.c): ROOT/var/lib/rsr/lock, an empty 0600
 * file only its owner can open, reached without following symbolic links. Taken
 * by every operation that changes the root; waits as rsr_ctx_set_lock_wait()
 * says and fails with RSR_E_BUSY naming the holder. One context taking the
 * lock of a root it already holds gets the same lock with one more
 * reference. Release before freeing the context.
 */
struct rsr_lock;
int rsr_lock_take(struct rsr_ctx *ctx, int rootfd, const char *root, struct rsr_lock **ret_lock);
void rsr_lock_release(struct rsr_lock *lock);
void rsr_lock_release_all(struct rsr_ctx *ctx);
/*
 * An exclusive flock() on `fd`, waiting as rsr_ctx_set_lock_wait() says; on
 * RSR_E_BUSY the message reads "WHO (pid N: command) is DOING TARGET; ...".
 * rsr_lock_take() uses it; so does the repository client's own lock.
 */
int rsr_flock_wait(struct rsr_ctx *ctx, int fd, const char *who, const char *doing, const char *target);

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define RSR_MIN(a, b) ((a) < (b) ? (a) : (b))
#define RSR_MAX(a, b) ((a) > (b) ? (a) : (b))

/*
 * Records `err` with a formatted message on the context and returns `err`,
 * so a failure is reported once, where it is understood:
 *   return rsr_error(ctx, RSR_E_FORMAT, "%s: header too short", path);
 */
int rsr_error(struct rsr_ctx *ctx, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Like rsr_error() for a negative errno: appends ": <strerror>" itself. */
int rsr_error_errno(struct rsr_ctx *ctx, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Prefixes the message already recorded with more context, returns `err`. */
int rsr_error_prefix(struct rsr_ctx *ctx, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

void rsr_log(struct rsr_ctx *ctx, enum rsr_log_level level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
#define rsr_debug(ctx, ...) rsr_log(ctx, RSR_LOG_DEBUG, __VA_ARGS__)
#define rsr_info(ctx, ...) rsr_log(ctx, RSR_LOG_INFO, __VA_ARGS__)
#define rsr_warn(ctx, ...) rsr_log(ctx, RSR_LOG_WARNING, __VA_ARGS__)

/* Calls the progress callback if any; returns RSR_E_CANCELED when asked to stop. */
int rsr_progress(struct rsr_ctx *ctx, const char *what, uint64_t done, uint64_t total);
/*
 * Writes the progress label "OP NAME" into buf, NAME the last component of
 * `path`: a label names the operation and the file as its user knows it,
 * never a directory inside a device root or a /proc/self/fd path. Returns buf.
 */
const char *rsr_progress_label(char *buf, size_t size, const char *op, const char *path);

/* Number of worker threads to use for `items` independent pieces of work. */
unsigned rsr_threads_for(const struct rsr_ctx *ctx, uint64_t items);

/*
 * Runs fn(arg, i) for i in [0, n) on up to `threads` threads, handing out
 * indices in order. Stops handing out new indices after the first failure
 * and returns the error of the lowest failing index, or 0.
 */
typedef int (*rsr_parallel_fn)(void *arg, size_t index, unsigned worker);
int rsr_parallel_for(unsigned threads, size_t n, rsr_parallel_fn fn, void *arg);

/* Cleanup helpers. */
static inline void freep(void *p)
{
	free(*(void **)p);
}
static inline void closep(int *fd)
{
	if (*fd >= 0) {
		int saved = errno;
		close(*fd);
		errno = saved;
	}
}
#define _cleanup_free_ __attribute__((cleanup(freep)))
#define _cleanup_close_ __attribute__((cleanup(closep)))

static inline void *steal_ptr(void *pp)
{
	void **p = pp;
	void *v = *p;
	*p = NULL;
	return v;
}
#define TAKE_PTR(p) steal_ptr(&(p))
static inline int take_fd(int *fd)
{
	int v = *fd;
	*fd = -1;
	return v;
}
#define TAKE_FD(fd) take_fd(&(fd))

/* Little-endian access to fixed-layout on-disk structures. */
static inline uint16_t rsr_get_le16(const void *p)
{
	const uint8_t *b = p;
	return (uint16_t)(b[0] | b[1] << 8);
}
static inline uint32_t rsr_get_le32(const void *p)
{
	const uint8_t *b = p;
	return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}
static inline uint64_t rsr_get_le64(const void *p)
{
	const uint8_t *b = p;
	return (uint64_t)rsr_get_le32(b) | (uint64_t)rsr_get_le32(b + 4) << 32;
}
static inline void rsr_put_le16(void *p, uint16_t v)
{
	uint8_t *b = p;
	b[0] = (uint8_t)v;
	b[1] = (uint8_t)(v >> 8);
}
static inline void rsr_put_le32(void *p, uint32_t v)
{
	uint8_t *b = p;
	for (int i = 0; i < 4; i++)
		b[i] = (uint8_t)(v >> (8 * i));
}
static inline void rsr_put_le64(void *p, uint64_t v)
{
	uint8_t *b = p;
	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (8 * i));
}

/* Overflow-checked arithmetic; true on overflow. */
#define rsr_add_overflow(a, b, r) __builtin_add_overflow(a, b, r)
#define rsr_mul_overflow(a, b, r) __builtin_mul_overflow(a, b, r)

/*
 * Names (slots, covered directories, architectures): 1 to 64 of
 * A-Z a-z 0-9 . _ - + ~ :, not starting with '.' or '-'. NULL is invalid.
 */
bool rsr_valid_name(const char *s);
/*
 * Slot names (a cryptex's name is its slot): 1 to 64 of A-Z a-z 0-9 . _ -,
 * not starting with '.' or '-'. They name directories, dm-verity devices
 * and overlay layers, so building refuses what grafting would.
 */
#define RSR_SLOT_NAME_RULE "1 to 64 of A-Z a-z 0-9 . _ -, not starting with . or -"
bool rsr_valid_slot_name(const char *s);
/*
 * Tokens (versions, base builds, advisory ids): 1 to 128 printable ASCII
 * characters without space, quotes, backslash, '$' or backquote.
 */
bool rsr_valid_token(const char *s);

/* Hex: `out` gets 2*len characters plus NUL. */
void rsr_hex_encode(const void *buf, size_t len, char *out);
/* Decodes exactly `len` bytes from `hex` (2*len characters, nothing after); false if malformed. */
bool rsr_hex_decode(const char *hex, void *out, size_t len);

/*
 * Working buffers of 512 KiB or more, backed by transparent huge pages
 * where the kernel has them (lib/common/alloc.c); smaller ones are plain
 * malloc. Released with free().
 */
void *rsr_alloc_large(size_t n);
void *rsr_calloc_large(size_t n, size_t size);

/* File I/O: full reads and writes that retry on EINTR and short counts. Return 0 or -errno. */
int rsr_write_all(int fd, const void *buf, size_t len);
int rsr_pwrite_all(int fd, const void *buf, size_t len, uint64_t off);
/* Reads exactly len bytes at off; -EIO with errno-less short read means the file ended early (returns -ENODATA). */
int rsr_pread_all(int fd, void *buf, size_t len, uint64_t off);
/* Copies len bytes from in_fd at in_off to out_fd at out_off (copy_file_range, then read/write). */
int rsr_copy_range(int in_fd, uint64_t in_off, int out_fd, uint64_t out_off, uint64_t len);
int rsr_fsync_dir_of(const char *path);

/*
 * A read-only view of a file for hashing in place (lib/common/view.c).
 * rsr_view_open() maps [0, end) of fd and never fails: without a view,
 * every window is NULL. rsr_view_window() returns the bytes at [off,
 * off + len), which must lie in one RSR_VIEW_WINDOW-aligned window, when
 * the kernel maps that window with one huge page; NULL means pread it.
 * After RSR_VIEW_MAX_MISSES windows in a row that are not, it stops asking.
 */
#define RSR_VIEW_WINDOW (UINT32_C(2) << 20)
struct rsr_view {
	uint8_t *base; /* file offset 0; NULL when there is no view */
	size_t len;
	uint64_t size; /* bytes of the file that may be read */
	int pagemap_fd;
	unsigned misses; /* windows in a row that were not huge */
};
#define RSR_VIEW_MAX_MISSES 4
void rsr_view_open(struct rsr_view *v, int fd, uint64_t end);
const uint8_t *rsr_view_window(struct rsr_view *v, uint64_t off, size_t len);
void rsr_view_close(struct rsr_view *v);
/*
 * mkdir -p of `path` relative to `dirfd` (AT_FDCWD for the working directory
 * or an absolute path), mode 0755. Errors name the directory, after `what`
 * (may be NULL) as a prefix.
 */
int rsr_mkdir_p_at(struct rsr_ctx *ctx, int dirfd, const char *path, const char *what);

/*
 * Reads a whole regular file of at most `max` bytes. The buffer is
 * NUL-terminated (not counted in *ret_len) and owned by the caller.
 */
int rsr_read_file(struct rsr_ctx *ctx, const char *path, size_t max, char **ret_buf, size_t *ret_len);

/*
 * Atomic replacement of a file: open a temporary next to `path`, write it,
 * then rsr_atomic_commit() fsyncs, renames over `path` and fsyncs the
 * directory. rsr_atomic_abort() removes the temporary. Both free `af`.
 */
struct rsr_atomic_file {
	int fd;
	int dirfd;
	char *tmpname; /* relative to dirfd */
	char *name;    /* relative to dirfd */
};
int rsr_atomic_open(struct rsr_ctx *ctx, const char *path, unsigned mode, struct rsr_atomic_file **ret_af);
int rsr_atomic_commit(struct rsr_ctx *ctx, struct rsr_atomic_file *af);
/*
 * Like rsr_atomic_commit(), into `name` in another directory `todirfd` of
 * the same filesystem: for a file staged before where it goes is known.
 */
int rsr_atomic_commit_to(struct rsr_ctx *ctx, struct rsr_atomic_file *af, int todirfd, const char *name);
void rsr_atomic_abort(struct rsr_atomic_file *af);
/* Writes a whole small file atomically. */
int rsr_write_file_atomic(struct rsr_ctx *ctx, const char *path, const void *buf, size_t len, unsigned mode);

/*
 * Initialises OpenSSL where a failure can be seen: when an allocation fails
 * in its implicit initialisation, OpenSSL leaves its default library context
 * without a lock and the next call crashes. Returns 0 or -ENOMEM; OpenSSL
 * runs it once and later calls return the first result.
 */
int rsr_crypto_init(void);

/*
 * SHA-256 of a buffer. Returns 0, or -ENOMEM when OpenSSL cannot allocate
 * (then `out` is all zeroes, never a stale or undefined digest).
 */
int rsr_sha256(const void *buf, size_t len, uint8_t out[32]);
/*
 * json_dumps() that checks its result: the text is parsed again and must
 * equal `v`. NULL when out of memory (also where jansson itself would have
 * returned a document with a key missing). Free the result with free().
 */
char *rsr_json_dumps(const json_t *v, size_t flags);
/* After json_loadb() returned NULL: whether it ran out of memory rather than met bad JSON. */
bool rsr_json_load_oom(const json_error_t *e);
/*
 * Counts, in one pass over the text and before jansson builds anything, the
 * containers (objects, arrays) and the scalars (strings, keys among them,
 * numbers, literals) of a JSON document. jansson spends about 230 bytes on
 * an empty object and 40 on a number, so a document within its byte bound
 * could still take 80 times its size: callers bound both counts by what
 * their format can hold. Returns 0, or RSR_E_LIMIT naming the count (with
 * `what` in the message).
 */
int rsr_json_check_counts(struct rsr_ctx *ctx, const char *buf, size_t len, size_t max_containers, size_t max_scalars,
			  const char *what);
/*
 * json_object_set_new() and json_array_append_new() for building a document
 * with one check at the end: a failure, including a NULL value (an
 * allocation that failed while making it), clears *ok. Ignoring the result
 * of the jansson calls would leave the document silently short of a member.
 */
void rsr_json_set(bool *ok, json_t *object, const char *key, json_t *value);
void rsr_json_push(bool *ok, json_t *array, json_t *value);

/*
 * SHA-256 of `len` bytes of fd from `off`; `what` names the file in messages,
 * and its last component in the progress label "hashing NAME".
 */
int rsr_sha256_fd(struct rsr_ctx *ctx, int fd, uint64_t off, uint64_t len, const char *what, uint8_t out[32]);

struct rsr_cryptex;
/*
 * rsr_cryptex_verify_blocks() of a cryptex opened by another path than the
 * one its user gave (graft opens "/proc/self/fd/N", to attach the file it
 * verified): the progress label is "verifying" and the last component of
 * `name`; messages still name the path it was opened by.
 */
int rsr_image_cryptex_verify_blocks_as(struct rsr_ctx *ctx, struct rsr_cryptex *cx, const char *name);

#endif
