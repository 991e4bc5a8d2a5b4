/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Response manifests: the vendor side (make the patches and sign the
 * manifest), the parser (every field checked, signatures before trust) and
 * the security notes. Format: docs/formats/response.md.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>

#include "response-internal.h"
#include "rsr/cryptex.h"

#define MAX_IMAGES 1024
#define MAX_ADVISORIES 1024
#define MAX_LIST 256
#define MAX_SIGS 16
#define MAX_TEXT 8192
/*
 * JSON values a manifest may hold, checked before jansson builds them. The
 * lists above bound the objects and arrays (1024 advisories of 3, 1024
 * images of a few, inputs of at least 150 bytes each: under 40000); strings
 * of 4 MiB of short CVE ids and paths stay under a million. 4 MiB of "[]"
 * took 325 MB as jansson values; at these bounds the worst (empty strings)
 * is about 115 MB.
 */
#define MAX_JSON_CONTAINERS 65536
#define MAX_JSON_SCALARS 1048576

struct rsr_response {
	char *dir;
	json_t *doc; /* owns every string below */
	const char *letter, *base_build;
	uint64_t sequence, timestamp;
	enum rsr_restart restart;
	struct rsr_advisory *advisories;
	size_t n_advisories;
	struct rsr_response_image *images;
	size_t n_images;
};

/* ---- helpers ---- */

char *response_canonical(json_t *v)
{
	return rsr_json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
}

int response_rm_rf(int parent, const char *name)
{
	int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	DIR *d;
	struct dirent *de;
	int r = 0;

	if (fd < 0) {
		if (errno == ENOENT)
			return 0;
		if (errno == ENOTDIR || errno == ELOOP)
			return unlinkat(parent, name, 0) < 0 && errno != ENOENT ? -errno : 0;
		return -errno;
	}
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (de->d_type == DT_DIR) {
			int k = response_rm_rf(dirfd(d), de->d_name);
			if (k < 0 && !r)
				r = k;
		} else if (unlinkat(dirfd(d), de->d_name, 0) < 0 && errno != ENOENT && !r) {
			r = -errno;
		}
	}
	closedir(d);
	if (unlinkat(parent, name, AT_REMOVEDIR) < 0 && errno != ENOENT && !r)
		r = -errno;
	return r;
}

int response_file_sha256(struct rsr_ctx *ctx, const char *path, char ret_hex[65], uint64_t *ret_size)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	uint8_t d[32];
	int r;

	if (fd < 0 || fstat(fd, &st) < 0)
		return rsr_error_errno(ctx, -errno, "%s", path);
	r = rsr_sha256_fd(ctx, fd, 0, (uint64_t)st.st_size, path, d);
	if (r < 0)
		return r;
	rsr_hex_encode(d, 32, ret_hex);
	if (ret_size)
		*ret_size = (uint64_t)st.st_size;
	return 0;
}

int rsr_machine_arch(char ret_arch[65])
{
	struct utsname u;

	if (uname(&u) < 0)
		return -errno;
	snprintf(ret_arch, 65, "%s", u.machine);
	return 0;
}

const char *rsr_restart_name(enum rsr_restart r)
{
	switch (r) {
	case RSR_RESTART_NONE:
		return "none";
	case RSR_RESTART_SERVICES:
		return "services";
	case RSR_RESTART_REBOOT:
		return "reboot";
	}
	return "unknown";
}

static bool restart_from_name(const char *s, enum rsr_restart *ret)
{
	for (int i = RSR_RESTART_NONE; i <= RSR_RESTART_REBOOT; i++)
		if (s && !strcmp(s, rsr_restart_name((enum rsr_restart)i))) {
			*ret = (enum rsr_restart)i;
			return true;
		}
	return false;
}

/* Free text: bounded, no control characters but newline. */
static bool valid_text(const char *s, size_t max)
{
	size_t n = s ? strlen(s) : 0;

	if (n == 0 || n > max)
		return false;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p < ' ' && *p != '\n')
			return false;
	return true;
}

static bool valid_hex64(const char *s)
{
	uint8_t d[32];
	if (!s || !rsr_hex_decode(s, d, 32))
		return false;
	for (const char *p = s; *p; p++)
		if (*p >= 'A' && *p <= 'F')
			return false; /* lowercase only: one spelling per digest */
	return true;
}

static bool valid_severity(const char *s)
{
	static const char *ok[] = {"critical", "high", "medium", "low", "unknown"};
	for (size_t i = 0; s && i < ARRAY_SIZE(ok); i++)
		if (!strcmp(s, ok[i]))
			return true;
	return false;
}

/* A path inside the response directory: "patches/NAME". */
static bool valid_patch_path(const char *s)
{
	return s && !strncmp(s, "patches/", 8) && rsr_valid_name(s + 8);
}

static bool get_u64(json_t *o, const char *key, uint64_t max, uint64_t *ret)
{
	json_t *v = json_object_get(o, key);

	if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) > max)
		return false;
	*ret = (uint64_t)json_integer_value(v);
	return true;
}

static const char *get_str(json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

/* ---- parsing ---- */

void rsr_response_free(struct rsr_response *resp)
{
	if (!resp)
		return;
	for (size_t i = 0; i < resp->n_advisories; i++) {
		free((void *)resp->advisories[i].cves);
		free((void *)resp->advisories[i].files);
	}
	for (size_t i = 0; i < resp->n_images; i++)
		free((void *)resp->images[i].forward_inputs);
	free(resp->advisories);
	free(resp->images);
	json_decref(resp->doc);
	free(resp->dir);
	free(resp);
}

/* A list of strings, each accepted by `ok`; the array is malloc'd, the strings borrowed from the JSON. */
static bool get_strlist(json_t *o, const char *key, bool (*ok)(const char *), size_t min, const char *const **ret,
			size_t *ret_n)
{
	json_t *a = json_object_get(o, key), *v;
	const char **out;
	size_t n, i;

	if (!json_is_array(a) || (n = json_array_size(a)) < min || n > MAX_LIST)
		return false;
	out = calloc(n ? n : 1, sizeof(*out));
	if (!out)
		return false;
	json_array_foreach(a, i, v)
	{
		out[i] = json_string_value(v);
		if (!out[i] || !ok(out[i])) {
			free(out);
			return false;
		}
	}
	*ret = out;
	*ret_n = n;
	return true;
}

static bool valid_cve(const char *s)
{
	return rsr_valid_token(s) && strlen(s) <= 64;
}

static bool valid_abs_path(const char *s)
{
	return s && s[0] == '/' && valid_text(s, 4096) && !strstr(s, "\n");
}

static int parse_advisory(struct rsr_ctx *ctx, json_t *a, size_t i, struct rsr_advisory *out)
{
	if (!json_is_object(a))
		return rsr_error(ctx, RSR_E_FORMAT, "advisory %zu is not an object", i);
	out->id = get_str(a, "id");
	out->title = get_str(a, "title");
	out->severity = get_str(a, "severity");
	out->summary = get_str(a, "summary");
	if (!rsr_valid_token(out->id))
		return rsr_error(ctx, RSR_E_FORMAT, "advisory %zu: 'id' is missing or not a token", i);
	if (!valid_text(out->title, 256) || strchr(out->title, '\n'))
		return rsr_error(ctx, RSR_E_FORMAT, "advisory %s: 'title' must be one line of at most 256 characters",
				 out->id);
	if (!valid_severity(out->severity))
		return rsr_error(ctx, RSR_E_FORMAT,
				 "advisory %s: 'severity' must be critical, high, medium, low or unknown", out->id);
	if (!valid_text(out->summary, MAX_TEXT))
		return rsr_error(ctx, RSR_E_FORMAT, "advisory %s: 'summary' is missing or longer than %d bytes",
				 out->id, MAX_TEXT);
	if (!get_strlist(a, "cves", valid_cve, 0, &out->cves, &out->n_cves))
		return rsr_error(ctx, RSR_E_FORMAT, "advisory %s: 'cves' must be a list of CVE ids", out->id);
	if (!get_strlist(a, "affected_files", valid_abs_path, 0, &out->files, &out->n_files))
		return rsr_error(ctx, RSR_E_FORMAT, "advisory %s: 'affected_files' must be a list of absolute paths",
				 out->id);
	return 0;
}

/* Parses an advisories list (from the vendor's file or a manifest) into resp. */
static int parse_advisories(struct rsr_ctx *ctx, json_t *list, struct rsr_response *resp)
{
	json_t *a;
	size_t i, n;

	if (!json_is_array(list) || (n = json_array_size(list)) == 0 || n > MAX_ADVISORIES)
		return rsr_error(ctx, RSR_E_FORMAT, "'advisories' must be a list of 1 to %d advisories",
				 MAX_ADVISORIES);
	resp->advisories = calloc(n, sizeof(*resp->advisories));
	if (!resp->advisories)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	json_array_foreach(list, i, a)
	{
		int r = parse_advisory(ctx, a, i, &resp->advisories[i]);
		resp->n_advisories = i + 1;
		if (r < 0)
			return r;
	}
	return 0;
}

int response_check_advisories(struct rsr_ctx *ctx, json_t *list)
{
	struct rsr_response tmp = {0};
	int r = parse_advisories(ctx, list, &tmp);

	for (size_t i = 0; i < tmp.n_advisories; i++) {
		free((void *)tmp.advisories[i].cves);
		free((void *)tmp.advisories[i].files);
	}
	free(tmp.advisories);
	return r;
}

static int parse_image(struct rsr_ctx *ctx, json_t *o, size_t i, struct rsr_response_image *im)
{
	json_t *base = json_object_get(o, "base"), *fw = json_object_get(o, "forward"),
	       *rv = json_object_get(o, "reverse");

	im->slot = get_str(o, "slot");
	im->arch = get_str(o, "arch");
	if (!rsr_valid_name(im->slot) || !rsr_valid_name(im->arch))
		return rsr_error(ctx, RSR_E_FORMAT, "image %zu: 'slot' or 'arch' is missing or not a name", i);
	im->version = get_str(o, "version");
	im->root_hash = get_str(o, "root_hash");
	im->sha256 = get_str(o, "sha256");
	if (!rsr_valid_token(im->version) || !valid_hex64(im->root_hash) || !valid_hex64(im->sha256) ||
	    !get_u64(o, "size", UINT64_C(1) << 50, &im->size))
		return rsr_error(ctx, RSR_E_FORMAT,
				 "image %s/%s: 'version', 'root_hash', 'sha256' or 'size' is not valid", im->slot,
				 im->arch);
	if (!json_is_object(base) || !json_is_object(fw) || !json_is_object(rv))
		return rsr_error(ctx, RSR_E_FORMAT, "image %s/%s: 'base', 'forward' and 'reverse' must be objects",
				 im->slot, im->arch);
	im->base_version = get_str(base, "version");
	im->base_root_hash = get_str(base, "root_hash");
	im->base_sha256 = get_str(base, "sha256");
	if (!rsr_valid_token(im->base_version) || !valid_hex64(im->base_root_hash) || !valid_hex64(im->base_sha256) ||
	    !get_u64(base, "size", UINT64_C(1) << 50, &im->base_size))
		return rsr_error(ctx, RSR_E_FORMAT, "image %s/%s: 'base' is not valid", im->slot, im->arch);
	im->forward = get_str(fw, "path");
	im->forward_sha256 = get_str(fw, "sha256");
	im->reverse = get_str(rv, "path");
	im->reverse_sha256 = get_str(rv, "sha256");
	if (!valid_patch_path(im->forward) || !valid_hex64(im->forward_sha256) ||
	    !get_u64(fw, "size", UINT64_C(1) << 50, &im->forward_size) || !valid_patch_path(im->reverse) ||
	    !valid_hex64(im->reverse_sha256) || !get_u64(rv, "size", UINT64_C(1) << 50, &im->reverse_size))
		return rsr_error(ctx, RSR_E_FORMAT, "image %s/%s: 'forward' or 'reverse' is not valid", im->slot,
				 im->arch);
	if (!get_strlist(fw, "inputs", valid_hex64, 1, &im->forward_inputs, &im->n_forward_inputs) ||
	    im->n_forward_inputs > 16)
		return rsr_error(ctx, RSR_E_FORMAT, "image %s/%s: 'forward.inputs' must list 1 to 16 digests", im->slot,
				 im->arch);
	return 0;
}

static int check_signatures(struct rsr_ctx *ctx, json_t *doc, const struct rsr_keyring *trusted)
{
	json_t *sigs = json_object_get(doc, "signatures"), *s;
	_cleanup_free_ char *canon = NULL;
	_cleanup_free_ uint8_t *msg = NULL;
	size_t i, n, len;
	char seen[MAX_SIGS * 18] = "";
	int r;

	if (!json_is_array(sigs) || (n = json_array_size(sigs)) == 0 || n > MAX_SIGS)
		return rsr_error(ctx, RSR_E_FORMAT, "'signatures' must list 1 to %d signatures", MAX_SIGS);
	canon = response_canonical(json_object_get(doc, "signed"));
	if (!canon)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	len = sizeof(RESPONSE_SIG_CONTEXT) + strlen(canon);
	msg = malloc(len);
	if (!msg)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	memcpy(msg, RESPONSE_SIG_CONTEXT, sizeof(RESPONSE_SIG_CONTEXT));
	memcpy(msg + sizeof(RESPONSE_SIG_CONTEXT), canon, strlen(canon));
	json_array_foreach(sigs, i, s)
	{
		const char *kid = get_str(s, "keyid"), *sig = get_str(s, "sig");
		uint8_t id[32], raw[64];
		const struct rsr_key *key;

		if (!kid || !sig || !rsr_hex_decode(kid, id, 32) || !rsr_hex_decode(sig, raw, 64))
			return rsr_error(ctx, RSR_E_FORMAT,
					 "signature %zu: 'keyid' or 'sig' is not hex of the right size", i);
		snprintf(seen + strlen(seen), sizeof(seen) - strlen(seen), "%s%.16s", i ? ", " : "", kid);
		key = rsr_keyring_find(trusted, id);
		r = key ? rsr_key_verify(key, msg, len, raw) : RSR_E_SIGNATURE;
		if (r == 0)
			return 0;
		if (r == -ENOMEM)
			return rsr_error(ctx, r, "out of memory");
	}
	return rsr_error(ctx, RSR_E_SIGNATURE, "no valid signature by a trusted key (signed by %s; %zu key%s trusted)",
			 seen, rsr_keyring_count(trusted), rsr_keyring_count(trusted) == 1 ? "" : "s");
}

static int parse_doc(struct rsr_ctx *ctx, struct rsr_response *resp, const struct rsr_keyring *trusted)
{
	json_t *sg = json_object_get(resp->doc, "signed"), *list, *o;
	const char *type, *restart;
	uint64_t format;
	size_t i, n;
	int r;

	if (!json_is_object(resp->doc) || !json_is_object(sg))
		return rsr_error(ctx, RSR_E_FORMAT, "not a response manifest: no 'signed' object");
	if (trusted && (r = check_signatures(ctx, resp->doc, trusted)) < 0)
		return r;
	type = get_str(sg, "_type");
	if (!type || strcmp(type, "rsr-response") || !get_u64(sg, "format", 1000, &format) || format != 1)
		return rsr_error(ctx, RSR_E_FORMAT, "not an rsr-response manifest of format 1");
	resp->base_build = get_str(sg, "base_build");
	resp->letter = get_str(sg, "letter");
	if (!rsr_valid_token(resp->base_build))
		return rsr_error(ctx, RSR_E_FORMAT, "'base_build' is missing or not valid");
	if (!resp->letter || strlen(resp->letter) != 1 || resp->letter[0] < 'a' || resp->letter[0] > 'z')
		return rsr_error(ctx, RSR_E_FORMAT, "'letter' must be one of a to z");
	if (!get_u64(sg, "sequence", UINT64_C(1) << 53, &resp->sequence) || resp->sequence == 0 ||
	    !get_u64(sg, "timestamp", UINT64_C(1) << 53, &resp->timestamp))
		return rsr_error(ctx, RSR_E_FORMAT, "'sequence' or 'timestamp' is missing or not valid");
	restart = get_str(sg, "restart");
	if (!restart_from_name(restart, &resp->restart))
		return rsr_error(ctx, RSR_E_FORMAT, "'restart' must be none, services or reboot");
	r = parse_advisories(ctx, json_object_get(sg, "advisories"), resp);
	if (r < 0)
		return r;
	list = json_object_get(sg, "images");
	if (!json_is_array(list) || (n = json_array_size(list)) == 0 || n > MAX_IMAGES)
		return rsr_error(ctx, RSR_E_FORMAT, "'images' must list 1 to %d images", MAX_IMAGES);
	resp->images = calloc(n, sizeof(*resp->images));
	if (!resp->images)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	json_array_foreach(list, i, o)
	{
		if (!json_is_object(o))
			return rsr_error(ctx, RSR_E_FORMAT, "image %zu is not an object", i);
		r = parse_image(ctx, o, i, &resp->images[i]);
		resp->n_images = i + 1;
		if (r < 0)
			return r;
		for (size_t j = 0; j < i; j++)
			if (!strcmp(resp->images[j].slot, resp->images[i].slot) &&
			    !strcmp(resp->images[j].arch, resp->images[i].arch))
				return rsr_error(ctx, RSR_E_FORMAT, "image %s/%s is listed twice", resp->images[i].slot,
						 resp->images[i].arch);
	}
	return 0;
}

int rsr_response_parse(struct rsr_ctx *ctx, const void *buf, size_t len, const struct rsr_keyring *trusted,
		       struct rsr_response **ret_resp)
{
	struct rsr_response *resp;
	json_error_t jerr;
	int r;

	if (len > RSR_RESPONSE_MANIFEST_MAX)
		return rsr_error(ctx, RSR_E_LIMIT, "response manifest of %zu bytes exceeds %d", len,
				 RSR_RESPONSE_MANIFEST_MAX);
	if ((r = rsr_json_check_counts(ctx, buf, len, MAX_JSON_CONTAINERS, MAX_JSON_SCALARS, "response manifest")) < 0)
		return r;
	resp = calloc(1, sizeof(*resp));
	if (!resp)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	resp->doc = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!resp->doc && rsr_json_load_oom(&jerr)) {
		rsr_response_free(resp);
		return rsr_error(ctx, -ENOMEM, "out of memory");
	}
	if (!resp->doc) {
		rsr_response_free(resp);
		return rsr_error(ctx, RSR_E_FORMAT, "response manifest is not valid JSON: %s at byte %d", jerr.text,
				 jerr.position);
	}
	r = parse_doc(ctx, resp, trusted);
	if (r < 0) {
		rsr_response_free(resp);
		return r;
	}
	*ret_resp = resp;
	return 0;
}

int rsr_response_open(struct rsr_ctx *ctx, const char *dir, const struct rsr_keyring *trusted,
		      struct rsr_response **ret_resp)
{
	_cleanup_free_ char *path = NULL, *buf = NULL;
	struct rsr_response *resp;
	size_t len;
	int r;

	if (asprintf(&path, "%s/%s", dir, RSR_RESPONSE_MANIFEST) < 0)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	r = rsr_read_file(ctx, path, RSR_RESPONSE_MANIFEST_MAX, &buf, &len);
	if (r < 0)
		return r;
	r = rsr_response_parse(ctx, buf, len, trusted, &resp);
	if (r < 0)
		return rsr_error_prefix(ctx, r, "%s", path);
	resp->dir = strdup(dir);
	if (!resp->dir) {
		rsr_response_free(resp);
		return rsr_error(ctx, -ENOMEM, "out of memory");
	}
	*ret_resp = resp;
	return 0;
}

const char *rsr_response_dir(const struct rsr_response *resp)
{
	return resp->dir;
}
const char *rsr_response_letter(const struct rsr_response *resp)
{
	return resp->letter;
}
uint64_t rsr_response_sequence(const struct rsr_response *resp)
{
	return resp->sequence;
}
const char *rsr_response_base_build(const struct rsr_response *resp)
{
	return resp->base_build;
}
enum rsr_restart rsr_response_restart(const struct rsr_response *resp)
{
	return resp->restart;
}
uint64_t rsr_response_timestamp(const struct rsr_response *resp)
{
	return resp->timestamp;
}
const char *rsr_response_signer(const struct rsr_response *resp, size_t i)
{
	json_t *sigs = json_object_get(resp->doc, "signatures");
	const char *kid = get_str(json_array_get(sigs, i), "keyid");

	return i < MAX_SIGS && kid && valid_hex64(kid) ? kid : NULL;
}
size_t rsr_response_advisory_count(const struct rsr_response *resp)
{
	return resp->n_advisories;
}
const struct rsr_advisory *rsr_response_advisory(const struct rsr_response *resp, size_t i)
{
	return i < resp->n_advisories ? &resp->advisories[i] : NULL;
}
size_t rsr_response_image_count(const struct rsr_response *resp)
{
	return resp->n_images;
}
const struct rsr_response_image *rsr_response_image(const struct rsr_response *resp, size_t i)
{
	return i < resp->n_images ? &resp->images[i] : NULL;
}
const struct rsr_response_image *rsr_response_find_image(const struct rsr_response *resp, const char *slot,
							 const char *arch)
{
	for (size_t i = 0; i < resp->n_images; i++)
		if (!strcmp(resp->images[i].slot, slot) && !strcmp(resp->images[i].arch, arch))
			return &resp->images[i];
	return NULL;
}

/* ---- notes ---- */

struct sbuf {
	char *s;
	size_t len, cap;
	bool oom;
};

__attribute__((format(printf, 2, 3))) static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->oom)
		return;
	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->oom = true;
			return;
		}
		if (b->s && b->len + (size_t)n < b->cap) {
			b->len += (size_t)n;
			return;
		}
		size_t cap = RSR_MAX(b->cap * 2, b->len + (size_t)n + 256);
		char *ns = realloc(b->s, cap);
		if (!ns) {
			b->oom = true;
			return;
		}
		b->s = ns;
		b->cap = cap;
	}
}

int rsr_response_notes(struct rsr_ctx *ctx, const struct rsr_response *resp, const char *os_name, char **ret_md)
{
	struct sbuf b = {0};
	char date[32] = "";
	time_t t = (time_t)resp->timestamp;
	struct tm tm;

	if (gmtime_r(&t, &tm))
		strftime(date, sizeof(date), "%Y-%m-%d", &tm);
	sb_printf(&b, "# About the security content of %s (%s)\n\n", os_name ? os_name : resp->base_build,
		  resp->letter);
	sb_printf(&b, "Rapid Security Response (%s) for base build `%s`, sequence %llu, released %s.\n\n", resp->letter,
		  resp->base_build, (unsigned long long)resp->sequence, date);
	sb_printf(&b, "%s\n\n",
		  resp->restart == RSR_RESTART_REBOOT ? "**Restart required:** the fix takes effect after a reboot."
		  : resp->restart == RSR_RESTART_SERVICES
		      ? "Services that use the updated files restart to take the fix; "
			"`rsr status` lists them."
		      : "No restart is needed.");
	sb_printf(&b, "This response updates:\n\n");
	for (size_t i = 0; i < resp->n_images; i++)
		sb_printf(&b, "- `%s` (%s): %s → %s\n", resp->images[i].slot, resp->images[i].arch,
			  resp->images[i].base_version, resp->images[i].version);
	for (size_t i = 0; i < resp->n_advisories; i++) {
		const struct rsr_advisory *a = &resp->advisories[i];
		sb_printf(&b, "\n## %s\n\n", a->title);
		sb_printf(&b, "Advisory: %s  \nSeverity: %s\n\n", a->id, a->severity);
		sb_printf(&b, "Impact: %s\n", a->summary);
		if (a->n_files) {
			sb_printf(&b, "\nAffected files:\n\n");
			for (size_t k = 0; k < a->n_files; k++)
				sb_printf(&b, "- `%s`\n", a->files[k]);
		}
		if (a->n_cves) {
			sb_printf(&b, "\n");
			for (size_t k = 0; k < a->n_cves; k++)
				sb_printf(&b, "%s%s", k ? ", " : "", a->cves[k]);
			sb_printf(&b, "\n");
		}
	}
	if (b.oom) {
		free(b.s);
		return rsr_error(ctx, -ENOMEM, "out of memory");
	}
	*ret_md = b.s;
	return 0;
}
