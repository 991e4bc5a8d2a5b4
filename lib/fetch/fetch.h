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
	uint64_t fetched; /* body bytes received, over all transfers */
	size_t preferred; /* the mirror that answered last: tried first */
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
 * when every mirror says 404 or 403 (no such file); -ETIMEDOUT past a
 * deadline.
 */
int http_get_mem(struct rsr_ctx *ctx, struct http *h, const char *rel, uint64_t max, char **ret_buf, size_t *ret_len);

/*
 * Downloads MIRROR/rel into fd until it holds exactly `length` bytes,
 * resuming from what fd holds already (HTTP Range) and again after a
 * dropped connection, mirrors in turn. A server that sends more than
 * `length` is cut off (RSR_E_LIMIT). Reports progress as `what`.
 */
int http_get_file(struct rsr_ctx *ctx, struct http *h, const char *rel, int fd, uint64_t length, const char *what);

#endif
