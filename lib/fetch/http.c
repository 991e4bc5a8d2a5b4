/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libcurl transfers for the update client. Every transfer is bounded by a
 * length the caller knows from signed metadata: the write callback stops a
 * server that sends more. HTTP and HTTPS only, the system's CA store,
 * timeouts on connect and on a stalled transfer, a deadline per file from
 * its length and a minimum average rate, and one for all transfers.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

/* Calls go through the table below, which the header's type-checking macros would shadow. */
#define CURL_DISABLE_TYPECHECK 1
#include <curl/curl.h>

#include "fetch.h"
#include "rsr-config.h"
#include "rsr/update.h"

#define FILE_ATTEMPTS 4
#define MEM_INITIAL (16 * 1024) /* first buffer of a fetch into memory; it doubles as bytes arrive */

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
	struct curl_slist *(*slist_append)(struct curl_slist *list, const char *string);
	void (*slist_free_all)(struct curl_slist *list);
	time_t (*getdate)(const char *datestring, const time_t *now);
} curl_api;
static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static char curl_load_error[256]; /* empty once libcurl is loaded and initialised */

static void curl_init_once(void)
{
	static const char *const names[] = {"curl_global_init",	   "curl_easy_init",	 "curl_easy_setopt",
					    "curl_easy_perform",   "curl_easy_getinfo",	 "curl_easy_reset",
					    "curl_easy_cleanup",   "curl_easy_strerror", "curl_slist_append",
					    "curl_slist_free_all", "curl_getdate"};
	void **slots[] = {
	    (void **)&curl_api.global_init,    (void **)&curl_api.easy_init,	 (void **)&curl_api.easy_setopt,
	    (void **)&curl_api.easy_perform,   (void **)&curl_api.easy_getinfo,	 (void **)&curl_api.easy_reset,
	    (void **)&curl_api.easy_cleanup,   (void **)&curl_api.easy_strerror, (void **)&curl_api.slist_append,
	    (void **)&curl_api.slist_free_all, (void **)&curl_api.getdate};
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

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int http_init(struct rsr_ctx *ctx, struct http *h, char *const *mirrors, size_t n_mirrors, unsigned timeout,
	      uint64_t min_rate, unsigned max_run_time, const char *ca_file)
{
	*h = (struct http){.mirrors = mirrors,
			   .n_mirrors = n_mirrors,
			   .timeout = timeout ? timeout : RSR_UPDATE_DEFAULT_TIMEOUT,
			   .min_rate = min_rate ? min_rate : RSR_UPDATE_DEFAULT_MIN_RATE,
			   .max_run_time = max_run_time ? max_run_time : RSR_UPDATE_DEFAULT_MAX_RUN_TIME,
			   .ca_file = ca_file};
	h->run_deadline_ms = now_ms() + (uint64_t)h->max_run_time * 1000;
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
	/* memory: grown as bytes arrive, up to max + 1 */
	char *buf;
	size_t cap;
	/* file */
	int fd;
	uint64_t start; /* offset asked for with Range */
	bool checked;	/* status looked at */
	/* both */
	uint64_t off, max;
	uint64_t deadline_ms; /* of this file on this mirror, CLOCK_MONOTONIC */
	bool over;
	int err;
	const char *what; /* the progress label */
	/* conditional GET: the entity tag sent, and the one the answer carries */
	const char *if_none_match;
	char etag[HTTP_ETAG_MAX];
	char date[64]; /* the answer's Date header, as sent */
};

/* Seconds a file of `length` bytes may take on one mirror: the stall timeout plus length at the minimum rate. */
static uint64_t file_seconds(const struct http *h, uint64_t length)
{
	return h->timeout + length / h->min_rate;
}

/* Makes room for n more bytes in a memory sink (its bound is checked first). */
static int grow(struct sink *s, size_t n)
{
	size_t need = (size_t)s->off + n + 1, cap = s->cap ? s->cap : MEM_INITIAL;
	char *nb;

	if (need <= s->cap)
		return 0;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	if ((uint64_t)cap > s->max + 1)
		cap = (size_t)s->max + 1;
	nb = realloc(s->buf, cap);
	if (!nb)
		return -ENOMEM;
	s->buf = nb;
	s->cap = cap;
	return 0;
}

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
		if ((s->err = grow(s, n)) < 0)
			return 0;
		memcpy(s->buf + s->off, data, n);
	}
	s->off += n;
	s->h->fetched += n;
	return n;
}

/*
 * Copies the value of header NAME (with its colon) from one header line into
 * out, or empties out: a value longer than the bound, or with bytes outside
 * printable ASCII and blanks, is not kept.
 */
static void header_value(const char *data, size_t n, const char *name, char *out, size_t size)
{
	size_t nl = strlen(name), len;
	const char *v;

	if (n < nl || strncasecmp(data, name, nl))
		return;
	v = data + nl;
	len = n - nl;
	while (len && (*v == ' ' || *v == '\t'))
		v++, len--;
	while (len && (v[len - 1] == '\r' || v[len - 1] == '\n' || v[len - 1] == ' ' || v[len - 1] == '\t'))
		len--;
	out[0] = '\0';
	if (len == 0 || len >= size)
		return;
	for (size_t i = 0; i < len; i++)
		if ((v[i] < 0x20 || v[i] > 0x7e) && v[i] != '\t')
			return;
	memcpy(out, v, len);
	out[len] = '\0';
}

/*
 * Keeps the ETag and the Date of the last response (each redirect's
 * response starts with its status line, which forgets the one before). A
 * tag that is not kept makes the next request unconditional.
 */
static size_t on_header(char *data, size_t size, size_t nitems, void *userdata)
{
	struct sink *s = userdata;
	size_t n = size * nitems;

	if (n >= 5 && !memcmp(data, "HTTP/", 5)) {
		s->etag[0] = s->date[0] = '\0';
		return n;
	}
	header_value(data, n, "etag:", s->etag, sizeof(s->etag));
	if (strchr(s->etag, ' ') || strchr(s->etag, '\t'))
		s->etag[0] = '\0'; /* an entity tag has no blanks */
	header_value(data, n, "date:", s->date, sizeof(s->date));
	return n;
}

static int on_progress(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
	struct sink *s = userdata;

	/* Called at least about once a second, also while nothing arrives. */
	if (now_ms() >= s->deadline_ms) {
		s->err = -ETIMEDOUT;
		return 1;
	}
	if (s->fd < 0 || !s->what)
		return 0;
	if (rsr_progress(s->ctx, s->what, s->off, s->max) < 0) {
		s->err = RSR_E_CANCELED;
		return 1;
	}
	return 0;
}

/* Whether the run's ceiling, rather than the file's own deadline, is the one that ends this transfer. */
static bool run_bound(const struct http *h, const struct sink *s)
{
	return h->run_deadline_ms <= s->deadline_ms;
}

static int deadline_error(struct rsr_ctx *ctx, struct http *h, const struct sink *s, const char *url)
{
	if (run_bound(h, s))
		return rsr_error(ctx, -ETIMEDOUT,
				 "%s: stopped at the ceiling of %u s for all transfers of one run (max_run_time)", url,
				 h->max_run_time);
	return rsr_error(ctx, -ETIMEDOUT,
			 "%s: not complete after %llu s, the time %llu bytes may take at %llu bytes/s (min_rate) "
			 "plus the %u s timeout: the server is too slow, or holds the transfer back on purpose "
			 "(slow-retrieval attack)",
			 url, (unsigned long long)file_seconds(h, s->max), (unsigned long long)s->max,
			 (unsigned long long)h->min_rate, h->timeout);
}

/*
 * One GET of base/rel into the sink. Returns 0, HTTP_NOT_MODIFIED when the
 * sink asked with If-None-Match and the server answered 304, -ENOENT for
 * 404/403/410, or an error with a message.
 */
static int transfer(struct rsr_ctx *ctx, struct http *h, const char *base, const char *rel, struct sink *s)
{
	CURL *c = h->curl;
	_cleanup_free_ char *url = NULL, *cond = NULL;
	struct curl_slist *headers = NULL;
	char errbuf[CURL_ERROR_SIZE] = "";
	char range[48];
	CURLcode cc;
	long code = 0;
	size_t bl = strlen(base);
	uint64_t now = now_ms(), end = RSR_MIN(s->deadline_ms, h->run_deadline_ms);

	if (asprintf(&url, "%.*s/%s", (int)(bl && base[bl - 1] == '/' ? bl - 1 : bl), base, rel) < 0)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	s->deadline_ms = end;
	if (now >= end)
		return deadline_error(ctx, h, s, url);
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
	/* The progress callback ends the transfer at the deadline; this is the backstop. */
	curl_api.easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)RSR_MIN(end - now + 2000, (uint64_t)LONG_MAX));
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
	s->etag[0] = s->date[0] = '\0';
	curl_api.easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_api.easy_setopt(c, CURLOPT_HEADERDATA, s);
	if (s->if_none_match) {
		if (asprintf(&cond, "If-None-Match: %s", s->if_none_match) < 0 ||
		    !(headers = curl_api.slist_append(NULL, cond)))
			return rsr_error(ctx, -ENOMEM, "out of memory");
		curl_api.easy_setopt(c, CURLOPT_HTTPHEADER, headers);
	}
	cc = curl_api.easy_perform(c);
	curl_api.easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
	curl_api.slist_free_all(headers);
	curl_api.easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
	if (s->date[0]) {
		time_t d = curl_api.getdate(s->date, NULL);
		if (d > 0)
			h->server_time = (int64_t)d;
	}
	if (s->over)
		return rsr_error(ctx, RSR_E_LIMIT, "%s: the server sent more than the %llu bytes the metadata allows",
				 url, (unsigned long long)s->max);
	if (s->err == -ETIMEDOUT || (cc == CURLE_OPERATION_TIMEDOUT && now_ms() >= end))
		return deadline_error(ctx, h, s, url);
	if (s->err == RSR_E_CANCELED)
		return rsr_error(ctx, RSR_E_CANCELED, "%s: canceled", url);
	if (s->err == -ENOMEM)
		return rsr_error(ctx, -ENOMEM, "out of memory");
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
	if (code == 304 && s->if_none_match && s->off == 0)
		return HTTP_NOT_MODIFIED;
	if (code != 200 && code != 206)
		return rsr_error(ctx, -EIO, "%s: unexpected HTTP status %ld", url, code);
	return 0;
}

void http_validator_clear(struct http_validator *v)
{
	free(v->mirror);
	free(v->etag);
	v->mirror = v->etag = NULL;
}

int http_get_mem_cond(struct rsr_ctx *ctx, struct http *h, const char *rel, uint64_t max,
		      const struct http_validator *have, char **ret_buf, size_t *ret_len, struct http_validator *got)
{
	_cleanup_free_ char *buf = NULL;
	char missing[512] = "";
	size_t n_missing = 0, cap = 0;
	int r = -EIO;

	if (h->n_mirrors == 0)
		return rsr_error(ctx, -EINVAL, "no repository mirror is configured (mirror = URL in rsr.conf)");
	if (max > SIZE_MAX - 1)
		return rsr_error(ctx, RSR_E_LIMIT, "%s: a bound of %llu bytes does not fit in memory", rel,
				 (unsigned long long)max);
	/* The mirror that gave the tag is asked first: a tag means nothing to another server. */
	if (have && have->mirror && have->etag)
		for (size_t i = 0; i < h->n_mirrors; i++)
			if (!strcmp(h->mirrors[i], have->mirror))
				h->preferred = i;
	for (size_t i = 0; i < h->n_mirrors; i++) {
		size_t m = (h->preferred + i) % h->n_mirrors;
		struct sink s = {.ctx = ctx,
				 .h = h,
				 .buf = TAKE_PTR(buf),
				 .cap = cap,
				 .fd = -1,
				 .max = max,
				 .deadline_ms = now_ms() + file_seconds(h, max) * 1000};
		if (have && have->mirror && have->etag && !strcmp(h->mirrors[m], have->mirror))
			s.if_none_match = have->etag;
		r = transfer(ctx, h, h->mirrors[m], rel, &s);
		buf = s.buf;
		cap = s.cap;
		if (r == HTTP_NOT_MODIFIED) {
			h->preferred = m;
			return r;
		}
		/* The terminating NUL; an empty body has no buffer yet. */
		if (r == 0 && grow(&s, 0) < 0)
			return rsr_error(ctx, -ENOMEM, "out of memory");
		if (r == 0) {
			if (got) {
				http_validator_clear(got);
				if (!(got->mirror = strdup(h->mirrors[m])) ||
				    (s.etag[0] && !(got->etag = strdup(s.etag)))) {
					http_validator_clear(got);
					return rsr_error(ctx, -ENOMEM, "out of memory");
				}
			}
			h->preferred = m;
			buf = s.buf;
			buf[s.off] = '\0';
			*ret_len = (size_t)s.off;
			*ret_buf = TAKE_PTR(buf);
			return 0;
		}
		if (r == -ENOENT) {
			if (n_missing++ == 0)
				snprintf(missing, sizeof(missing), "%s", rsr_ctx_error(ctx));
		} else if (r == RSR_E_LIMIT || r == RSR_E_CANCELED || r == -ENOMEM ||
			   (r == -ETIMEDOUT && run_bound(h, &s))) {
			return r;
		}
		if (i + 1 < h->n_mirrors)
			rsr_warn(ctx, "%s; trying the next mirror", rsr_ctx_error(ctx));
	}
	/*
	 * A mirror that answered 404 answered; one that could not be reached
	 * did not. So "not there" is the answer whenever any mirror gave it and
	 * none served the file, whatever order the mirrors were tried in (the
	 * lookup of a next root version depends on this).
	 */
	if (n_missing > 0)
		return rsr_error(ctx, -ENOENT, "%s", missing);
	return r;
}

int http_get_mem(struct rsr_ctx *ctx, struct http *h, const char *rel, uint64_t max, char **ret_buf, size_t *ret_len)
{
	return http_get_mem_cond(ctx, h, rel, max, NULL, ret_buf, ret_len, NULL);
}

int http_get_file(struct rsr_ctx *ctx, struct http *h, const char *rel, int fd, uint64_t length, const char *what)
{
	char label[RSR_PROGRESS_LABEL_MAX];
	int r = -EIO;

	if (h->n_mirrors == 0)
		return rsr_error(ctx, -EINVAL, "no repository mirror is configured (mirror = URL in rsr.conf)");
	rsr_progress_label(label, sizeof(label), "downloading", what);
	for (size_t i = 0; i < h->n_mirrors; i++) {
		size_t m = (h->preferred + i) % h->n_mirrors;
		/* One deadline for the file on this mirror, over every resumed attempt. */
		uint64_t deadline = now_ms() + file_seconds(h, length) * 1000;
		for (int attempt = 0; attempt < FILE_ATTEMPTS; attempt++) {
			struct stat st;
			struct sink s = {
			    .ctx = ctx, .h = h, .fd = fd, .max = length, .deadline_ms = deadline, .what = label};

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
			if (r == RSR_E_LIMIT || r == RSR_E_CANCELED || (r == -ETIMEDOUT && run_bound(h, &s)))
				return r;
			/* Retry on this mirror only when the last attempt moved forward, within its deadline. */
			if (r == -ENOENT || r == -ETIMEDOUT || s.off == s.start)
				break;
			rsr_warn(ctx, "%s; resuming", rsr_ctx_error(ctx));
		}
		if (i + 1 < h->n_mirrors)
			rsr_warn(ctx, "%s; trying the next mirror", rsr_ctx_error(ctx));
	}
	return r;
}
