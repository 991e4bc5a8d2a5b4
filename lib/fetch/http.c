/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libcurl transfers for the update client. Every transfer is bounded by a
 * length the caller knows from signed metadata: the write callback stops a
 * server that sends more. HTTP and HTTPS only, the system's CA store,
 * timeouts on connect and on a stalled transfer.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/stat.h>

/* Calls go through the table below, which the header's type-checking macros would shadow. */
#define CURL_DISABLE_TYPECHECK 1
#include <curl/curl.h>

#include "fetch.h"
#include "rsr-config.h"

#define FILE_ATTEMPTS 4

/*
 * libcurl, loaded on the first transfer: linking it would load its whole
 * dependency chain (TLS, Kerberos, LDAP, ...) into every rsr command, about
 * 13 ms of start-up each, for the two commands that fetch. Like libcurl's
 * own global initialisation, this is process-wide and done once.
 */
static struct {
	CURLcode (*global_init)(long flags);
	CURL *(*easy_init)(void);
	CURLcode (*easy_setopt)(CURL *curl, CURLoption option, ...);
	CURLcode (*easy_perform)(CURL *curl);
	CURLcode (*easy_getinfo)(CURL *curl, CURLINFO info, ...);
	void (*easy_reset)(CURL *curl);
	void (*easy_cleanup)(CURL *curl);
	const char *(*easy_strerror)(CURLcode code);
} curl_api;
static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static char curl_load_error[256]; /* empty once libcurl is loaded and initialised */

static void curl_init_once(void)
{
	static const char *const names[] = {"curl_global_init",	 "curl_easy_init",    "curl_easy_setopt",
					    "curl_easy_perform", "curl_easy_getinfo", "curl_easy_reset",
					    "curl_easy_cleanup", "curl_easy_strerror"};
	void **slots[] = {(void **)&curl_api.global_init,  (void **)&curl_api.easy_init,
			  (void **)&curl_api.easy_setopt,  (void **)&curl_api.easy_perform,
			  (void **)&curl_api.easy_getinfo, (void **)&curl_api.easy_reset,
			  (void **)&curl_api.easy_cleanup, (void **)&curl_api.easy_strerror};
	void *lib = dlopen(RSR_LIBCURL_SONAME, RTLD_NOW | RTLD_LOCAL);
	CURLcode c;

	if (!lib) {
		snprintf(curl_load_error, sizeof(curl_load_error), "cannot load %s: %s", RSR_LIBCURL_SONAME, dlerror());
		return;
	}
	for (size_t i = 0; i < ARRAY_SIZE(names); i++)
		if (!(*slots[i] = dlsym(lib, names[i]))) {
			snprintf(curl_load_error, sizeof(curl_load_error), "%s has no %s", RSR_LIBCURL_SONAME,
				 names[i]);
			return; /* the library stays loaded: unloading it is not worth the risk */
		}
	c = curl_api.global_init(CURL_GLOBAL_DEFAULT);
	if (c != CURLE_OK)
		snprintf(curl_load_error, sizeof(curl_load_error), "cannot initialise libcurl: %s",
			 curl_api.easy_strerror(c));
}

int http_init(struct rsr_ctx *ctx, struct http *h, char *const *mirrors, size_t n_mirrors, unsigned timeout,
	      const char *ca_file)
{
	*h = (struct http){
	    .mirrors = mirrors, .n_mirrors = n_mirrors, .timeout = timeout ? timeout : 30, .ca_file = ca_file};
	pthread_once(&curl_once, curl_init_once);
	if (curl_load_error[0])
		return rsr_error(ctx, -EIO, "%s", curl_load_error);
	h->curl = curl_api.easy_init();
	if (!h->curl)
		return rsr_error(ctx, -ENOMEM, "cannot initialise libcurl");
	return 0;
}

void http_done(struct http *h)
{
	if (h->curl)
		curl_api.easy_cleanup(h->curl);
	h->curl = NULL;
}

struct sink {
	struct rsr_ctx *ctx;
	struct http *h;
	CURL *curl;
	/* memory */
	char *buf;
	/* file */
	int fd;
	uint64_t start; /* offset asked for with Range */
	bool checked;	/* status looked at */
	/* both */
	uint64_t off, max;
	bool over;
	int err;
	const char *what;
};

static size_t on_data(char *data, size_t size, size_t nmemb, void *userdata)
{
	struct sink *s = userdata;
	size_t n = size * nmemb;

	if (s->fd >= 0 && !s->checked) {
		long code = 0;
		s->checked = true;
		curl_api.easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &code);
		if (code == 200 && s->start > 0) {
			/* The server ignored the Range: take the whole body from the start. */
			if (ftruncate(s->fd, 0) < 0) {
				s->err = -errno;
				return 0;
			}
			s->off = 0;
		} else if (code != 200 && code != 206) {
			s->err = RSR_E_FORMAT;
			return 0;
		}
	}
	if (n > s->max - s->off) {
		s->over = true;
		return 0;
	}
	if (s->fd >= 0) {
		int r = rsr_pwrite_all(s->fd, data, n, s->off);
		if (r < 0) {
			s->err = r;
			return 0;
		}
	} else {
		memcpy(s->buf + s->off, data, n);
	}
	s->off += n;
	s->h->fetched += n;
	return n;
}

static int on_progress(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
	struct sink *s = userdata;

	if (s->fd < 0 || !s->what)
		return 0;
	if (rsr_progress(s->ctx, s->what, s->off, s->max) < 0) {
		s->err = RSR_E_CANCELED;
		return 1;
	}
	return 0;
}

/* One GET of base/rel into the sink. Returns 0, -ENOENT for 404/403/410, or an error with a message. */
static int transfer(struct rsr_ctx *ctx, struct http *h, const char *base, const char *rel, struct sink *s)
{
	CURL *c = h->curl;
	_cleanup_free_ char *url = NULL;
	char errbuf[CURL_ERROR_SIZE] = "";
	char range[48];
	CURLcode cc;
	long code = 0;
	size_t bl = strlen(base);

	if (asprintf(&url, "%.*s/%s", (int)(bl && base[bl - 1] == '/' ? bl - 1 : bl), base, rel) < 0)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	curl_api.easy_reset(c);
	s->curl = c;
	s->checked = false;
	s->over = false;
	s->err = 0;
	curl_api.easy_setopt(c, CURLOPT_URL, url);
	curl_api.easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_api.easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	curl_api.easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
	curl_api.easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
	curl_api.easy_setopt(c, CURLOPT_FAILONERROR, 1L);
	curl_api.easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_api.easy_setopt(c, CURLOPT_CONNECTTIMEOUT, (long)h->timeout);
	curl_api.easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_api.easy_setopt(c, CURLOPT_LOW_SPEED_TIME, (long)h->timeout);
	curl_api.easy_setopt(c, CURLOPT_USERAGENT, "rsr/" RSR_VERSION);
	curl_api.easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	curl_api.easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
	curl_api.easy_setopt(c, CURLOPT_WRITEDATA, s);
	curl_api.easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_api.easy_setopt(c, CURLOPT_XFERINFODATA, s);
	curl_api.easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	/* Metadata must not arrive compressed beyond its bound: ask for identity. */
	curl_api.easy_setopt(c, CURLOPT_ACCEPT_ENCODING, NULL);
	if (h->ca_file)
		curl_api.easy_setopt(c, CURLOPT_CAINFO, h->ca_file);
	if (s->fd >= 0 && s->start > 0) {
		snprintf(range, sizeof(range), "%llu-", (unsigned long long)s->start);
		curl_api.easy_setopt(c, CURLOPT_RANGE, range);
	}
	cc = curl_api.easy_perform(c);
	curl_api.easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
	if (s->over)
		return rsr_error(ctx, RSR_E_LIMIT, "%s: the server sent more than the %llu bytes the metadata allows",
				 url, (unsigned long long)s->max);
	if (s->err == RSR_E_CANCELED)
		return rsr_error(ctx, RSR_E_CANCELED, "%s: canceled", url);
	if (s->err == RSR_E_FORMAT)
		return rsr_error(ctx, RSR_E_FORMAT, "%s: unexpected HTTP status %ld", url, code);
	if (s->err < 0)
		return rsr_error_errno(ctx, s->err, "%s: cannot write", url);
	if (cc == CURLE_HTTP_RETURNED_ERROR && (code == 404 || code == 403 || code == 410)) {
		rsr_error(ctx, -ENOENT, "%s: HTTP %ld", url, code);
		return -ENOENT;
	}
	if (cc != CURLE_OK)
		return rsr_error(ctx, -EIO, "%s: %s", url, errbuf[0] ? errbuf : curl_api.easy_strerror(cc));
	return 0;
}

int http_get_mem(struct rsr_ctx *ctx, struct http *h, const char *rel, uint64_t max, char **ret_buf, size_t *ret_len)
{
	_cleanup_free_ char *buf = NULL;
	size_t n_missing = 0;
	int r = -EIO;

	if (h->n_mirrors == 0)
		return rsr_error(ctx, -EINVAL, "no repository mirror is configured (mirror = URL in rsr.conf)");
	if (max > SIZE_MAX - 1 || !(buf = malloc((size_t)max + 1)))
		return rsr_error(ctx, -ENOMEM, "out of memory");
	for (size_t i = 0; i < h->n_mirrors; i++) {
		size_t m = (h->preferred + i) % h->n_mirrors;
		struct sink s = {.ctx = ctx, .h = h, .buf = buf, .fd = -1, .max = max};
		r = transfer(ctx, h, h->mirrors[m], rel, &s);
		if (r == 0) {
			h->preferred = m;
			buf[s.off] = '\0';
			*ret_len = (size_t)s.off;
			*ret_buf = TAKE_PTR(buf);
			return 0;
		}
		if (r == -ENOENT)
			n_missing++;
		else if (r == RSR_E_LIMIT || r == RSR_E_CANCELED)
			return r;
		if (i + 1 < h->n_mirrors)
			rsr_warn(ctx, "%s; trying the next mirror", rsr_ctx_error(ctx));
	}
	return n_missing == h->n_mirrors ? -ENOENT : r;
}

int http_get_file(struct rsr_ctx *ctx, struct http *h, const char *rel, int fd, uint64_t length, const char *what)
{
	int r = -EIO;

	if (h->n_mirrors == 0)
		return rsr_error(ctx, -EINVAL, "no repository mirror is configured (mirror = URL in rsr.conf)");
	for (size_t i = 0; i < h->n_mirrors; i++) {
		size_t m = (h->preferred + i) % h->n_mirrors;
		for (int attempt = 0; attempt < FILE_ATTEMPTS; attempt++) {
			struct stat st;
			struct sink s = {.ctx = ctx, .h = h, .fd = fd, .max = length, .what = what};

			if (fstat(fd, &st) < 0)
				return rsr_error_errno(ctx, -errno, "%s", what);
			if ((uint64_t)st.st_size > length && ftruncate(fd, 0) < 0)
				return rsr_error_errno(ctx, -errno, "%s", what);
			s.start = s.off = (uint64_t)st.st_size > length ? 0 : (uint64_t)st.st_size;
			if (s.off == length)
				return 0;
			if (s.start)
				rsr_info(ctx, "%s: resuming at byte %llu of %llu", what, (unsigned long long)s.start,
					 (unsigned long long)length);
			r = transfer(ctx, h, h->mirrors[m], rel, &s);
			if (r == 0 && s.off != length)
				r = rsr_error(ctx, -EIO, "%s: the server sent %llu of %llu bytes", what,
					      (unsigned long long)s.off, (unsigned long long)length);
			if (r == 0) {
				h->preferred = m;
				return 0;
			}
			if (r == RSR_E_LIMIT || r == RSR_E_CANCELED)
				return r;
			/* Retry on this mirror only when the last attempt moved forward. */
			if (r == -ENOENT || s.off == s.start)
				break;
			rsr_warn(ctx, "%s; resuming", rsr_ctx_error(ctx));
		}
		if (i + 1 < h->n_mirrors)
			rsr_warn(ctx, "%s; trying the next mirror", rsr_ctx_error(ctx));
	}
	return r;
}
