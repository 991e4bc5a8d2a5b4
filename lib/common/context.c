/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The library context: log and progress callbacks, thread count and the
 * message of the last failure. Also error texts and the parallel-for helper.
 */
#include <pthread.h>
#include <stdio.h>

#include "internal.h"
#include "rsr-config.h"

int rsr_ctx_new(struct rsr_ctx **ret_ctx)
{
	struct rsr_ctx *ctx;

	if (rsr_crypto_init() < 0)
		return -ENOMEM;
	ctx = calloc(1, sizeof(*ctx));
	if (!ctx)
		return -ENOMEM;
	ctx->log_level = RSR_LOG_INFO;
	*ret_ctx = ctx;
	return 0;
}

void rsr_ctx_free(struct rsr_ctx *ctx)
{
	if (!ctx)
		return;
	rsr_lock_release_all(ctx);
	free(ctx);
}

void rsr_ctx_set_log(struct rsr_ctx *ctx, rsr_log_fn fn, void *userdata)
{
	ctx->log_fn = fn;
	ctx->log_data = userdata;
}

void rsr_ctx_set_log_level(struct rsr_ctx *ctx, enum rsr_log_level level)
{
	ctx->log_level = level;
}

void rsr_ctx_set_progress(struct rsr_ctx *ctx, rsr_progress_fn fn, void *userdata)
{
	ctx->progress_fn = fn;
	ctx->progress_data = userdata;
}

void rsr_ctx_set_threads(struct rsr_ctx *ctx, unsigned threads)
{
	ctx->threads = threads;
}

unsigned rsr_ctx_get_threads(const struct rsr_ctx *ctx)
{
	long n;

	if (ctx->threads)
		return ctx->threads;
	n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (unsigned)RSR_MIN(n, 256) : 1;
}

unsigned rsr_threads_for(const struct rsr_ctx *ctx, uint64_t items)
{
	unsigned t = rsr_ctx_get_threads(ctx);

	if (items < t)
		t = items ? (unsigned)items : 1;
	return t;
}

const char *rsr_ctx_error(const struct rsr_ctx *ctx)
{
	if (ctx->errmsg[0])
		return ctx->errmsg;
	return ctx->last_err ? rsr_strerror(ctx->last_err) : "no error";
}

void rsr_ctx_clear_error(struct rsr_ctx *ctx)
{
	ctx->last_err = 0;
	ctx->errmsg[0] = '\0';
}

const char *rsr_version(void)
{
	return RSR_VERSION;
}

const char *rsr_strerror(int err)
{
	switch (err) {
	case 0:
		return "success";
	case RSR_E_FORMAT:
		return "malformed or unsupported format";
	case RSR_E_SIGNATURE:
		return "signature verification failed";
	case RSR_E_DIGEST:
		return "content does not match its hash";
	case RSR_E_EXPIRED:
		return "metadata has expired";
	case RSR_E_ROLLBACK:
		return "older than what was seen before";
	case RSR_E_KEY:
		return "unusable key";
	case RSR_E_TOOL:
		return "external program failed";
	case RSR_E_CANCELED:
		return "canceled";
	case RSR_E_MISMATCH:
		return "input is not the one expected";
	case RSR_E_STATE:
		return "device state does not allow this";
	case RSR_E_LIMIT:
		return "input exceeds a limit";
	case RSR_E_BUSY:
		return "another rsr operation is changing the device";
	default:
		if (err < 0 && err > -4096)
			return strerror(-err);
		return "unknown error";
	}
}

__attribute__((format(printf, 3, 0))) static void vrecord(struct rsr_ctx *ctx, int err, const char *fmt, va_list ap)
{
	ctx->last_err = err;
	vsnprintf(ctx->errmsg, sizeof(ctx->errmsg), fmt, ap);
}

int rsr_error(struct rsr_ctx *ctx, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vrecord(ctx, err, fmt, ap);
	va_end(ap);
	return err;
}

int rsr_error_errno(struct rsr_ctx *ctx, int err, const char *fmt, ...)
{
	va_list ap;
	size_t n;

	va_start(ap, fmt);
	vrecord(ctx, err, fmt, ap);
	va_end(ap);
	n = strlen(ctx->errmsg);
	snprintf(ctx->errmsg + n, sizeof(ctx->errmsg) - n, ": %s", rsr_strerror(err));
	return err;
}

int rsr_error_prefix(struct rsr_ctx *ctx, int err, const char *fmt, ...)
{
	char prefix[RSR_ERRMSG_MAX], old[RSR_ERRMSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	snprintf(old, sizeof(old), "%s", rsr_ctx_error(ctx));
	if (snprintf(ctx->errmsg, sizeof(ctx->errmsg), "%s: %s", prefix, old) >= (int)sizeof(ctx->errmsg))
		memcpy(ctx->errmsg + sizeof(ctx->errmsg) - 4, "...", 4); /* truncated */
	ctx->last_err = err;
	return err;
}

void rsr_log(struct rsr_ctx *ctx, enum rsr_log_level level, const char *fmt, ...)
{
	char buf[RSR_ERRMSG_MAX];
	va_list ap;

	if (!ctx->log_fn || level > ctx->log_level)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	ctx->log_fn(ctx->log_data, level, buf);
}

int rsr_progress(struct rsr_ctx *ctx, const char *what, uint64_t done, uint64_t total)
{
	if (ctx->progress_fn && ctx->progress_fn(ctx->progress_data, what, done, total))
		return rsr_error(ctx, RSR_E_CANCELED, "%s: canceled", what);
	return 0;
}

const char *rsr_progress_label(char *buf, size_t size, const char *op, const char *path)
{
	const char *slash = strrchr(path, '/'), *name = slash ? slash + 1 : path;

	snprintf(buf, size, "%s%s%s", op, *name ? " " : "", name);
	return buf;
}

struct pfor {
	pthread_mutex_t lock;
	size_t next, n;
	size_t fail_index;
	int fail_err;
	rsr_parallel_fn fn;
	void *arg;
};

struct pfor_worker {
	struct pfor *p;
	unsigned id;
};

static void *pfor_run(void *v)
{
	struct pfor_worker *w = v;
	struct pfor *p = w->p;

	for (;;) {
		size_t i;
		int r;

		pthread_mutex_lock(&p->lock);
		if (p->fail_err || p->next >= p->n) {
			pthread_mutex_unlock(&p->lock);
			return NULL;
		}
		i = p->next++;
		pthread_mutex_unlock(&p->lock);

		r = p->fn(p->arg, i, w->id);
		if (r < 0) {
			pthread_mutex_lock(&p->lock);
			if (!p->fail_err || i < p->fail_index) {
				p->fail_err = r;
				p->fail_index = i;
			}
			pthread_mutex_unlock(&p->lock);
		}
	}
}

int rsr_parallel_for(unsigned threads, size_t n, rsr_parallel_fn fn, void *arg)
{
	struct pfor p = {.next = 0, .n = n, .fn = fn, .arg = arg};
	pthread_t tids[256];
	struct pfor_worker workers[256];
	unsigned started = 0;

	if (threads > 256)
		threads = 256;
	if (threads > n)
		threads = (unsigned)n;
	if (threads <= 1) {
		for (size_t i = 0; i < n; i++) {
			int r = fn(arg, i, 0);
			if (r < 0)
				return r;
		}
		return 0;
	}
	pthread_mutex_init(&p.lock, NULL);
	for (unsigned t = 1; t < threads; t++) {
		workers[t] = (struct pfor_worker){.p = &p, .id = t};
		if (pthread_create(&tids[t], NULL, pfor_run, &workers[t]) != 0)
			break;
		started++;
	}
	workers[0] = (struct pfor_worker){.p = &p, .id = 0};
	pfor_run(&workers[0]);
	for (unsigned t = 1; t <= started; t++)
		pthread_join(tids[t], NULL);
	pthread_mutex_destroy(&p.lock);
	return p.fail_err;
}
