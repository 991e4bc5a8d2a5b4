/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The device policy file (/etc/rsr/rsr.conf): "key = value" lines, '#'
 * comments. The command reads the file; this parses the bytes, bounded.
 */
#include <ctype.h>
#include <stdio.h>

#include "internal.h"
#include "rsr/update.h"

void rsr_update_policy_init(struct rsr_update_policy *p)
{
	*p = (struct rsr_update_policy){
	    .auto_install = true,
	    .allow_remove = true,
	    .restart = RSR_RESTART_POLICY_SERVICES,
	    .staged_rollout = true,
	    .withdrawn = RSR_WITHDRAWN_BASE,
	    .timeout = RSR_UPDATE_DEFAULT_TIMEOUT,
	    .min_rate = RSR_UPDATE_DEFAULT_MIN_RATE,
	    .max_run_time = RSR_UPDATE_DEFAULT_MAX_RUN_TIME,
	};
}

void rsr_update_policy_clear(struct rsr_update_policy *p)
{
	for (size_t i = 0; i < p->n_mirrors; i++)
		free(p->mirrors[i]);
	p->n_mirrors = 0;
}

static int parse_bool(const char *v, bool *ret)
{
	if (!strcmp(v, "yes") || !strcmp(v, "true") || !strcmp(v, "on") || !strcmp(v, "1"))
		*ret = true;
	else if (!strcmp(v, "no") || !strcmp(v, "false") || !strcmp(v, "off") || !strcmp(v, "0"))
		*ret = false;
	else
		return -EINVAL;
	return 0;
}

static bool url_ok(const char *v)
{
	if (strncmp(v, "http://", 7) && strncmp(v, "https://", 8))
		return false;
	for (const char *s = v; *s; s++)
		if ((unsigned char)*s <= 0x20 || *s == 0x7f)
			return false;
	return strlen(v) <= 2048;
}

int rsr_update_policy_parse(struct rsr_ctx *ctx, const void *buf, size_t len, const char *what,
			    struct rsr_update_policy *p)
{
	const char *s = buf, *end = s + len;
	unsigned lineno = 0;

	while (s < end) {
		const char *nl = memchr(s, '\n', (size_t)(end - s));
		size_t n = nl ? (size_t)(nl - s) : (size_t)(end - s);
		char line[4096], *k, *v, *eq, *e;

		lineno++;
		if (n >= sizeof(line))
			return rsr_error(ctx, RSR_E_LIMIT, "%s:%u: line longer than %zu bytes", what, lineno,
					 sizeof(line) - 1);
		memcpy(line, s, n);
		line[n] = '\0';
		s += n + (nl ? 1 : 0);
		if (memchr(line, '\0', n))
			return rsr_error(ctx, RSR_E_FORMAT, "%s:%u: NUL byte", what, lineno);
		for (k = line; *k == ' ' || *k == '\t'; k++)
			;
		if (*k == '#' || *k == '\0' || *k == '\r')
			continue;
		eq = strchr(k, '=');
		if (!eq)
			return rsr_error(ctx, RSR_E_FORMAT, "%s:%u: expected key = value", what, lineno);
		for (e = eq; e > k && (e[-1] == ' ' || e[-1] == '\t'); e--)
			;
		*e = '\0';
		for (v = eq + 1; *v == ' ' || *v == '\t'; v++)
			;
		for (e = v + strlen(v); e > v && isspace((unsigned char)e[-1]); e--)
			;
		*e = '\0';
		if (!strcmp(k, "mirror")) {
			if (!url_ok(v))
				return rsr_error(ctx, RSR_E_FORMAT, "%s:%u: mirror must be an http:// or https:// URL",
						 what, lineno);
			if (p->n_mirrors >= RSR_UPDATE_MAX_MIRRORS)
				return rsr_error(ctx, RSR_E_LIMIT, "%s:%u: more than %d mirrors", what, lineno,
						 RSR_UPDATE_MAX_MIRRORS);
			if (!(p->mirrors[p->n_mirrors] = strdup(v)))
				return rsr_error(ctx, -ENOMEM, "out of memory");
			p->n_mirrors++;
		} else if (!strcmp(k, "auto_install") || !strcmp(k, "allow_remove") || !strcmp(k, "staged_rollout")) {
			bool *b = !strcmp(k, "auto_install")   ? &p->auto_install
				  : !strcmp(k, "allow_remove") ? &p->allow_remove
							       : &p->staged_rollout;
			if (parse_bool(v, b) < 0)
				return rsr_error(ctx, RSR_E_FORMAT, "%s:%u: %s must be yes or no", what, lineno, k);
		} else if (!strcmp(k, "restart")) {
			if (!strcmp(v, "none"))
				p->restart = RSR_RESTART_POLICY_NONE;
			else if (!strcmp(v, "services"))
				p->restart = RSR_RESTART_POLICY_SERVICES;
			else if (!strcmp(v, "ask"))
				p->restart = RSR_RESTART_POLICY_ASK;
			else
				return rsr_error(ctx, RSR_E_FORMAT, "%s:%u: restart must be none, services or ask",
						 what, lineno);
		} else if (!strcmp(k, "withdrawn")) {
			if (!strcmp(v, "base"))
				p->withdrawn = RSR_WITHDRAWN_BASE;
			else if (!strcmp(v, "stay"))
				p->withdrawn = RSR_WITHDRAWN_STAY;
			else
				return rsr_error(ctx, RSR_E_FORMAT, "%s:%u: withdrawn must be base or stay", what,
						 lineno);
		} else if (!strcmp(k, "timeout")) {
			char *ep;
			unsigned long t;
			errno = 0;
			t = strtoul(v, &ep, 10);
			if (errno || ep == v || *ep || t < 1 || t > 3600)
				return rsr_error(ctx, RSR_E_FORMAT, "%s:%u: timeout must be 1 to 3600 seconds", what,
						 lineno);
			p->timeout = (unsigned)t;
		} else if (!strcmp(k, "min_rate") || !strcmp(k, "max_run_time")) {
			bool rate = !strcmp(k, "min_rate");
			unsigned long long lo = 1, hi = rate ? 1ULL << 30 : 7 * 86400, t;
			char *ep;
			errno = 0;
			t = strtoull(v, &ep, 10);
			if (errno || ep == v || *ep || v[0] == '-' || t < lo || t > hi)
				return rsr_error(ctx, RSR_E_FORMAT, "%s:%u: %s must be %llu to %llu %s", what, lineno,
						 k, lo, hi, rate ? "bytes per second" : "seconds");
			if (rate)
				p->min_rate = t;
			else
				p->max_run_time = (unsigned)t;
		} else {
			return rsr_error(ctx, RSR_E_FORMAT, "%s:%u: unknown key '%.64s'", what, lineno, k);
		}
	}
	return 0;
}

unsigned rsr_update_rollout_bucket(const char *machine_id, const char *base_build, const char *letter)
{
	_cleanup_free_ char *s = NULL;
	uint8_t d[32];

	if (asprintf(&s, "%s/%s/%s", machine_id, base_build, letter) < 0)
		return 0;
	rsr_sha256(s, strlen(s), d);
	return (unsigned)(((uint64_t)d[0] << 24 | (uint64_t)d[1] << 16 | (uint64_t)d[2] << 8 | d[3]) % 100);
}
