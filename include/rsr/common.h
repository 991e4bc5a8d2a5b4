/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * librsr: the context every call takes, error codes, logging and progress
 * callbacks. Nothing in the library prints, exits or reads the environment.
 */
#ifndef RSR_COMMON_H
#define RSR_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Marks the functions librsr exports. The library is built with hidden
 * visibility and a version script (lib/librsr.map); only what carries this
 * mark, and is listed there, leaves librsr.so (docs/abi.md).
 */
#if defined(__GNUC__) || defined(__clang__)
#define RSR_EXPORT __attribute__((visibility("default")))
#else
#define RSR_EXPORT
#endif

/*
 * Threads: nothing in librsr is locked for the caller. A context holds the
 * callbacks and the message of the last failure, so it belongs to one thread
 * at a time, and so does every object passed to a call together with it:
 * use one context (and its objects) per thread. Separate contexts may be used
 * on separate threads at once; one-time initialisation (OpenSSL, libcurl) is
 * thread-safe. Calls that take no context (rsr_strerror(), rsr_version(),
 * rsr_key_verify(), the getters on const objects) may run on several threads
 * at once, as long as no thread changes or frees the object. Inside a call
 * the library runs worker threads of its own (rsr_ctx_set_threads()), which
 * may call the progress callback, never two at once. Two callers changing one
 * device root are serialised by its state lock, not by the context.
 */

/*
 * Errors: functions return >= 0 on success, a negative errno value for a
 * system error, or one of these domain codes.
 */
enum {
	RSR_E_FORMAT = -1000,	 /* malformed or unsupported input */
	RSR_E_SIGNATURE = -1001, /* signature missing, bad, or by an untrusted key */
	RSR_E_DIGEST = -1002,	 /* content does not match its hash */
	RSR_E_EXPIRED = -1003,	 /* metadata past its expiry */
	RSR_E_ROLLBACK = -1004,	 /* older than what was seen before */
	RSR_E_KEY = -1005,	 /* key missing, unreadable or of the wrong type */
	RSR_E_TOOL = -1006,	 /* an external program failed */
	RSR_E_CANCELED = -1007,	 /* a callback asked to stop */
	RSR_E_MISMATCH = -1008,	 /* input is not the one expected (base, slot, ...) */
	RSR_E_STATE = -1009,	 /* device state does not allow the operation */
	RSR_E_LIMIT = -1010,	 /* input exceeds a documented limit */
	RSR_E_BUSY = -1011,	 /* another rsr operation holds the device lock */
};

/* Static text for an error code (domain code or negative errno). */
RSR_EXPORT const char *rsr_strerror(int err);

enum rsr_log_level {
	RSR_LOG_ERROR = 3,
	RSR_LOG_WARNING = 4,
	RSR_LOG_NOTICE = 5,
	RSR_LOG_INFO = 6,
	RSR_LOG_DEBUG = 7,
};

/* Receives each log line, without a trailing newline. */
typedef void (*rsr_log_fn)(void *userdata, enum rsr_log_level level, const char *msg);

/*
 * Reports progress of long operations: `done` of `total` units (bytes unless
 * the operation says otherwise). Returning non-zero cancels the operation,
 * which then fails with RSR_E_CANCELED and leaves nothing behind.
 * May be called from any worker thread, but never from two at once.
 */
typedef int (*rsr_progress_fn)(void *userdata, const char *what, uint64_t done, uint64_t total);

struct rsr_ctx;

/* A new context; the caller owns it. Returns 0 or -ENOMEM. */
RSR_EXPORT int rsr_ctx_new(struct rsr_ctx **ret_ctx);
/* Frees a context; NULL is allowed. */
RSR_EXPORT void rsr_ctx_free(struct rsr_ctx *ctx);

RSR_EXPORT void rsr_ctx_set_log(struct rsr_ctx *ctx, rsr_log_fn fn, void *userdata);
/* Only messages at `level` or more severe reach the log callback. */
RSR_EXPORT void rsr_ctx_set_log_level(struct rsr_ctx *ctx, enum rsr_log_level level);
RSR_EXPORT void rsr_ctx_set_progress(struct rsr_ctx *ctx, rsr_progress_fn fn, void *userdata);
/* Worker threads for parallel work; 0 means one per online CPU (the default). */
RSR_EXPORT void rsr_ctx_set_threads(struct rsr_ctx *ctx, unsigned threads);
RSR_EXPORT unsigned rsr_ctx_get_threads(const struct rsr_ctx *ctx);
/*
 * How long an operation that changes a device root (graft, ungraft,
 * install, remove, recover) waits for another one holding the root's device
 * lock (ROOT/var/lib/rsr/lock): 0, the default, fails at once with
 * RSR_E_BUSY and a message naming the holder; a positive number waits up to
 * that many seconds; a negative one waits until the lock is free. Handles
 * that hold the lock (a graft handle that changed the root, a device that
 * installed) keep it until they are freed, and must be freed before the
 * context.
 */
RSR_EXPORT void rsr_ctx_set_lock_wait(struct rsr_ctx *ctx, int seconds);
RSR_EXPORT int rsr_ctx_get_lock_wait(const struct rsr_ctx *ctx);

/*
 * The message describing the most recent failure on this context: what
 * failed, on what, and why. Borrowed from the context; valid until the next
 * call that fails. Falls back to rsr_strerror() text when none was recorded.
 */
RSR_EXPORT const char *rsr_ctx_error(const struct rsr_ctx *ctx);
/* Forgets the recorded failure. */
RSR_EXPORT void rsr_ctx_clear_error(struct rsr_ctx *ctx);

/* The library version, "MAJOR.MINOR.PATCH". */
RSR_EXPORT const char *rsr_version(void);

#ifdef __cplusplus
}
#endif
#endif
