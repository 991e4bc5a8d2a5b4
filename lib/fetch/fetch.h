/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * HTTP(S) transfers on libcurl for the update client: bounded fetches into
 * memory, resumable bounded downloads into a file, mirrors tried in turn.
 * Internal to librsr.
 */
#ifndef RSR_FETCH_H
#define RSR_FETCH_H

#include <stdint.h>

#include "internal.h"

struct http {
	void *curl; /* CURL * */
	char *const *mirrors;
	size_t n_mirrors;
	unsigned timeout;
	uint64_t min_rate;	  /* bytes per second a file must average, at least */
	unsigned max_run_time;	  /* seconds for every transfer of this client together */
	uint64_t run_deadline_ms; /* CLOCK_MONOTONIC milliseconds: max_run_time from http_init() */
	const char *ca_file;
	uint64_t fetched;    /* body bytes received, over all transfers */
	size_t preferred;    /* the mirror that answered last: tried first */
	int64_t server_time; /* the Date of the last answer that had one, by its server's clock; 0: none */
};

/*
 * Every file gets `timeout` seconds plus its length (or bound) divided by
 * `min_rate` on each mirror, and all transfers together `max_run_time`
 * seconds from now: a server that trickles is cut off (TUF's slow-retrieval
 * attack). Zeroes take the defaults of rsr_update_policy_init().
 */
int http_init(struct rsr_ctx *ctx, struct http *h, char *const *mirrors, size_t n_mirrors, unsigned timeout,
	      uint64_t min_rate, unsigned max_run_time, const char *ca_file);
void http_done(struct http *h);

/*
 * GETs MIRROR/rel from each mirror in turn until one answers, into a
 * buffer of at most `max` bytes (more is refused: RSR_E_LIMIT). The
 * buffer grows with the bytes that arrive, never ahead of them. -ENOENT
 * when no mirror served it and at least one said 404, 403 or 410 (no such
 * file; the others could not be reached); -ETIMEDOUT past a deadline.
 */
int http_get_mem(struct rsr_ctx *ctx, struct http *h, const char *rel, uint64_t max, char **ret_buf, size_t *ret_len);

/* What makes a GET conditional: the mirror that answered, and the entity tag it gave. */
#define HTTP_ETAG_MAX 128 /* longer tags are not kept */
struct http_validator {
	char *mirror; /* as configured */
	char *etag;   /* as the server sent it, quotes included; NULL for none */
};
void http_validator_clear(struct http_validator *v);

#define HTTP_NOT_MODIFIED 1
/*
 * http_get_mem(), asking the mirror of `have` (tried first) with
 * If-None-Match: HTTP_NOT_MODIFIED when it answers 304, with no buffer.
 * Otherwise as http_get_mem(), and `got` (if not NULL) is set to the
 * answering mirror and its tag. `have` may be NULL, or name a mirror that
 * is no longer configured: the GET is then unconditional.
 */
int http_get_mem_cond(struct rsr_ctx *ctx, struct http *h, const char *rel, uint64_t max,
		      const struct http_validator *have, char **ret_buf, size_t *ret_len, struct http_validator *got);

/*
 * Downloads MIRROR/rel into fd until it holds exactly `length` bytes,
 * resuming from what fd holds already (HTTP Range) and again after a
 * dropped connection, mirrors in turn. A server that sends more than
 * `length` is cut off (RSR_E_LIMIT). Reports progress as "downloading NAME",
 * NAME the last component of `what`, which names the file in messages.
 */
int http_get_file(struct rsr_ctx *ctx, struct http *h, const char *rel, int fd, uint64_t length, const char *what);

#endif
