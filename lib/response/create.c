/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The vendor side of responses: checks the images, makes the forward and
 * reverse patches (the forward one also from the previous response's image,
 * so a device on it goes straight to this one), and signs the manifest.
 */
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "response-internal.h"
#include "rsr/cryptex.h"

struct img_info {
	char root[65], sha[65], version[129];
	uint64_t size;
};

/* Opens a cryptex signed by `ring`, checks every block and the slot name. */
static int check_cryptex(struct rsr_ctx *ctx, const char *path, const char *slot, const struct rsr_keyring *ring,
			 const char *base_build, struct img_info *ret)
{
	struct rsr_cryptex *cx;
	int r;

	r = rsr_cryptex_open_trusted(ctx, path, ring, &cx);
	if (r < 0)
		return r;
	r = rsr_cryptex_verify_blocks(ctx, cx);
	if (r < 0)
		goto out;
	if (strcmp(rsr_cryptex_name(cx), slot)) {
		r = rsr_error(ctx, RSR_E_MISMATCH, "%s: is a cryptex of slot '%s', not '%s'", path,
			      rsr_cryptex_name(cx), slot);
		goto out;
	}
	if (base_build && !rsr_cryptex_allows_base(cx, base_build)) {
		r = rsr_error(ctx, RSR_E_MISMATCH, "%s: may not be grafted on base build '%s'", path, base_build);
		goto out;
	}
	snprintf(ret->root, sizeof(ret->root), "%s", rsr_cryptex_root_hash_hex(cx));
	snprintf(ret->version, sizeof(ret->version), "%s", rsr_cryptex_version(cx));
	r = response_file_sha256(ctx, path, ret->sha, &ret->size);
out:
	rsr_cryptex_free(cx);
	return r;
}

static json_t *image_json(const struct rsr_response_slot_spec *s, const char *arch, const struct img_info *nw,
			  const struct img_info *base, const char *fwd, const char *fwd_sha, uint64_t fwd_size,
			  json_t *inputs, const char *rev, const char *rev_sha, uint64_t rev_size)
{
	return json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:{s:s, s:s, s:s, s:I}, s:{s:s, s:s, s:I, s:o}, "
			 "s:{s:s, s:s, s:I}}",
			 "slot", s->slot, "arch", arch, "version", nw->version, "root_hash", nw->root, "sha256",
			 nw->sha, "size", (json_int_t)nw->size, "base", "version", base->version, "root_hash",
			 base->root, "sha256", base->sha, "size", (json_int_t)base->size, "forward", "path", fwd,
			 "sha256", fwd_sha, "size", (json_int_t)fwd_size, "inputs", inputs, "reverse", "path", rev,
			 "sha256", rev_sha, "size", (json_int_t)rev_size);
}

static int load_advisories(struct rsr_ctx *ctx, const char *path, json_t **ret)
{
	_cleanup_free_ char *buf = NULL;
	json_error_t jerr;
	json_t *doc, *list;
	size_t len;
	int r;

	r = rsr_read_file(ctx, path, 1 << 20, &buf, &len);
	if (r < 0)
		return r;
	doc = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!doc && rsr_json_load_oom(&jerr))
		return rsr_error(ctx, -ENOMEM, "out of memory");
	if (!doc)
		return rsr_error(ctx, RSR_E_FORMAT, "%s: not valid JSON: %s at line %d", path, jerr.text, jerr.line);
	list = json_is_array(doc) ? doc : json_object_get(doc, "advisories");
	json_incref(list);
	json_decref(doc);
	/* The manifest's own rules, so that what is signed will also parse. */
	r = response_check_advisories(ctx, list);
	if (r < 0) {
		json_decref(list);
		return rsr_error_prefix(ctx, r, "%s", path);
	}
	*ret = list;
	return 0;
}

int rsr_response_create(struct rsr_ctx *ctx, const char *out_dir, const struct rsr_response_create_opts *o)
{
	_cleanup_free_ char *tmp = NULL, *patches = NULL, *text = NULL, *canon = NULL, *parent = NULL;
	_cleanup_free_ uint8_t *msg = NULL;
	struct rsr_keyring *ring = NULL;
	struct rsr_key *pub = NULL;
	struct rsr_response *prev = NULL;
	json_t *advisories = NULL, *images = NULL, *signed_obj = NULL, *doc = NULL;
	char host_arch[65];
	uint8_t raw[32], sig[64];
	char sig_hex[129];
	uint64_t seq;
	size_t mlen;
	int r;

	if (!rsr_valid_token(o->base_build))
		return rsr_error(ctx, -EINVAL, "base build '%s' is not valid", o->base_build ? o->base_build : "");
	if (!o->letter || strlen(o->letter) != 1 || o->letter[0] < 'a' || o->letter[0] > 'z')
		return rsr_error(ctx, -EINVAL, "the letter must be one of a to z");
	seq = o->sequence ? o->sequence : (uint64_t)(o->letter[0] - 'a' + 1);
	if (!o->key || !rsr_key_is_private(o->key))
		return rsr_error(ctx, RSR_E_KEY, "making a response needs a private signing key");
	if (o->n_slots == 0)
		return rsr_error(ctx, -EINVAL, "a response changes at least one slot");
	if (!o->advisories)
		return rsr_error(ctx, -EINVAL, "a response needs its advisories");
	if (access(out_dir, F_OK) == 0)
		return rsr_error(ctx, -EEXIST, "%s: already exists", out_dir);
	if (rsr_machine_arch(host_arch) < 0)
		return rsr_error(ctx, -EIO, "cannot read the machine's architecture");

	/* The images must be signed by the same key that signs the response. */
	rsr_key_public_raw(o->key, raw);
	if ((r = rsr_key_from_raw_public(ctx, raw, &pub)) < 0)
		return r;
	if (rsr_keyring_new(&ring) < 0 || rsr_keyring_add(ring, pub) < 0) {
		rsr_keyring_free(ring);
		return rsr_error(ctx, -ENOMEM, "out of memory");
	}
	r = load_advisories(ctx, o->advisories, &advisories);
	if (r < 0)
		goto out;
	if (o->previous_dir) {
		r = rsr_response_open(ctx, o->previous_dir, ring, &prev);
		if (r < 0) {
			rsr_error_prefix(ctx, r, "previous response");
			goto out;
		}
		if (strcmp(rsr_response_base_build(prev), o->base_build)) {
			r = rsr_error(ctx, RSR_E_MISMATCH, "previous response %s is for base build '%s', not '%s'",
				      o->previous_dir, rsr_response_base_build(prev), o->base_build);
			goto out;
		}
		if (rsr_response_sequence(prev) >= seq) {
			r = rsr_error(ctx, RSR_E_ROLLBACK,
				      "previous response (%s) has sequence %llu, not below this one's %llu",
				      rsr_response_letter(prev), (unsigned long long)rsr_response_sequence(prev),
				      (unsigned long long)seq);
			goto out;
		}
		/* Responses are cumulative: every slot the previous one changed is carried on. */
		for (size_t i = 0; i < rsr_response_image_count(prev); i++) {
			const struct rsr_response_image *pi = rsr_response_image(prev, i);
			bool found = false;
			for (size_t k = 0; k < o->n_slots; k++)
				found |= !strcmp(o->slots[k].slot, pi->slot) &&
					 !strcmp(o->slots[k].arch ? o->slots[k].arch : host_arch, pi->arch);
			if (!found) {
				r = rsr_error(
				    ctx, -EINVAL,
				    "previous response (%s) changed slot %s/%s; this response must carry it on "
				    "(--slot %s=BASE:NEW)",
				    rsr_response_letter(prev), pi->slot, pi->arch, pi->slot);
				goto out;
			}
		}
	}

	parent = strdup(out_dir);
	if (!parent || asprintf(&tmp, "%s.tmp-XXXXXX", out_dir) < 0) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	if (!mkdtemp(tmp)) {
		r = rsr_error_errno(ctx, -errno, "%s: cannot create a temporary directory", tmp);
		free(tmp);
		tmp = NULL;
		goto out;
	}
	chmod(tmp, 0755);
	if (asprintf(&patches, "%s/patches", tmp) < 0 || mkdir(patches, 0755) < 0) {
		r = rsr_error_errno(ctx, -errno, "%s", tmp);
		goto out;
	}
	images = json_array();
	if (!images) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < o->n_slots; i++) {
		const struct rsr_response_slot_spec *s = &o->slots[i];
		const char *arch = s->arch ? s->arch : host_arch;
		struct img_info base, nw;
		_cleanup_free_ char *fwd = NULL, *rev = NULL, *fwd_rel = NULL, *rev_rel = NULL, *prev_img = NULL;
		char fwd_sha[65], rev_sha[65];
		uint64_t fwd_size, rev_size;
		const char *olds[2];
		size_t n_olds = 1;
		json_t *inputs, *im;
		bool inputs_ok = true;

		for (size_t k = 0; k < i; k++)
			if (!strcmp(o->slots[k].slot, s->slot) &&
			    !strcmp(o->slots[k].arch ? o->slots[k].arch : host_arch, arch)) {
				r = rsr_error(ctx, -EINVAL, "slot %s/%s is given twice", s->slot, arch);
				goto out;
			}
		if ((r = check_cryptex(ctx, s->base_path, s->slot, ring, o->base_build, &base)) < 0 ||
		    (r = check_cryptex(ctx, s->new_path, s->slot, ring, o->base_build, &nw)) < 0)
			goto out;
		if (!strcmp(base.sha, nw.sha)) {
			r = rsr_error(ctx, -EINVAL, "slot %s: the base and new images are the same file", s->slot);
			goto out;
		}
		if (asprintf(&fwd_rel, "patches/%s-%s.forward.rsrp", s->slot, arch) < 0 ||
		    asprintf(&rev_rel, "patches/%s-%s.reverse.rsrp", s->slot, arch) < 0 ||
		    asprintf(&fwd, "%s/%s", tmp, fwd_rel) < 0 || asprintf(&rev, "%s/%s", tmp, rev_rel) < 0) {
			r = rsr_error(ctx, -ENOMEM, "out of memory");
			goto out;
		}
		olds[0] = s->base_path;
		inputs = json_array();
		rsr_json_push(&inputs_ok, inputs, json_string(base.sha));
		if (prev) {
			const struct rsr_response_image *pi = rsr_response_find_image(prev, s->slot, arch);
			if (pi && strcmp(pi->base_sha256, base.sha)) {
				json_decref(inputs);
				r = rsr_error(ctx, RSR_E_MISMATCH,
					      "slot %s: the previous response starts from another base image", s->slot);
				goto out;
			}
			if (pi && strcmp(pi->sha256, nw.sha) && strcmp(pi->sha256, base.sha)) {
				/* Rebuild the previous image from its patch and check it against its signed digest. */
				_cleanup_free_ char *pp = NULL;
				char got[65];
				if (asprintf(&pp, "%s/%s", o->previous_dir, pi->forward) < 0 ||
				    asprintf(&prev_img, "%s/.previous-%s.cptx", tmp, s->slot) < 0) {
					json_decref(inputs);
					r = rsr_error(ctx, -ENOMEM, "out of memory");
					goto out;
				}
				if ((r = response_file_sha256(ctx, pp, got, NULL)) < 0 ||
				    (strcmp(got, pi->forward_sha256) &&
				     (r = rsr_error(ctx, RSR_E_DIGEST,
						    "%s: does not match the previous response's signed digest", pp)) <
					 0) ||
				    (r = rsr_patch_apply(ctx, s->base_path, pp, prev_img)) < 0 ||
				    (r = response_file_sha256(ctx, prev_img, got, NULL)) < 0) {
					json_decref(inputs);
					goto out;
				}
				if (strcmp(got, pi->sha256)) {
					json_decref(inputs);
					r = rsr_error(
					    ctx, RSR_E_DIGEST,
					    "slot %s: the previous image rebuilt from its patch has digest %s, "
					    "not the signed %s",
					    s->slot, got, pi->sha256);
					goto out;
				}
				olds[n_olds++] = prev_img;
				rsr_json_push(&inputs_ok, inputs, json_string(pi->sha256));
			}
		}
		rsr_info(ctx, "slot %s/%s: patches %s -> %s%s", s->slot, arch, base.version, nw.version,
			 n_olds > 1 ? " (also from the previous response)" : "");
		r = rsr_patch_create(ctx, olds, n_olds, s->new_path, fwd, n_olds == 1 ? rev : NULL, o->patch_opts);
		if (r >= 0 && n_olds > 1)
			r = rsr_patch_create(ctx, &s->new_path, 1, s->base_path, rev, NULL, o->patch_opts);
		if (prev_img)
			unlink(prev_img);
		if (r < 0 || (r = response_file_sha256(ctx, fwd, fwd_sha, &fwd_size)) < 0 ||
		    (r = response_file_sha256(ctx, rev, rev_sha, &rev_size)) < 0) {
			json_decref(inputs);
			goto out;
		}
		if (!inputs_ok) {
			json_decref(inputs);
			r = rsr_error(ctx, -ENOMEM, "out of memory");
			goto out;
		}
		im = image_json(s, arch, &nw, &base, fwd_rel, fwd_sha, fwd_size, inputs, rev_rel, rev_sha, rev_size);
		if (!im || json_array_append_new(images, im) < 0) {
			r = rsr_error(ctx, -ENOMEM, "out of memory");
			goto out;
		}
	}

	signed_obj = json_pack("{s:s, s:i, s:s, s:s, s:I, s:I, s:s, s:O, s:O}", "_type", "rsr-response", "format", 1,
			       "base_build", o->base_build, "letter", o->letter, "sequence", (json_int_t)seq,
			       "timestamp", (json_int_t)o->timestamp, "restart", rsr_restart_name(o->restart),
			       "advisories", advisories, "images", images);
	canon = signed_obj ? response_canonical(signed_obj) : NULL;
	if (!canon) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	mlen = sizeof(RESPONSE_SIG_CONTEXT) + strlen(canon);
	msg = malloc(mlen);
	if (!msg) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	memcpy(msg, RESPONSE_SIG_CONTEXT, sizeof(RESPONSE_SIG_CONTEXT));
	memcpy(msg + sizeof(RESPONSE_SIG_CONTEXT), canon, strlen(canon));
	r = rsr_key_sign(ctx, o->key, msg, mlen, sig);
	if (r < 0)
		goto out;
	rsr_hex_encode(sig, 64, sig_hex);
	doc = json_pack("{s:O, s:[{s:s, s:s}]}", "signed", signed_obj, "signatures", "keyid", rsr_key_id_hex(o->key),
			"sig", sig_hex);
	text = doc ? rsr_json_dumps(doc, JSON_INDENT(1) | JSON_SORT_KEYS) : NULL;
	if (!text) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	{
		_cleanup_free_ char *mpath = NULL;
		size_t tl = strlen(text);
		if (asprintf(&mpath, "%s/%s", tmp, RSR_RESPONSE_MANIFEST) < 0) {
			r = rsr_error(ctx, -ENOMEM, "out of memory");
			goto out;
		}
		text[tl] = '\0';
		r = rsr_write_file_atomic(ctx, mpath, text, tl, 0644);
		if (r < 0)
			goto out;
	}
	{
		_cleanup_close_ int pfd = open(patches, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (pfd >= 0)
			fsync(pfd);
	}
	if (rename(tmp, out_dir) < 0) {
		r = rsr_error_errno(ctx, -errno, "%s: cannot rename into place", out_dir);
		goto out;
	}
	free(tmp);
	tmp = NULL;
	rsr_fsync_dir_of(out_dir);
	r = 0;
out:
	if (tmp)
		response_rm_rf(AT_FDCWD, tmp);
	json_decref(doc);
	json_decref(signed_obj);
	json_decref(images);
	json_decref(advisories);
	rsr_response_free(prev);
	rsr_keyring_free(ring);
	return r;
}
