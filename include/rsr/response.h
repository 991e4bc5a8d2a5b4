/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Security responses: the vendor makes a signed response (forward and reverse
 * patches of cryptex images, advisories, a letter); the device installs it,
 * stacks the next one on it, removes it, and recovers from an interrupted
 * operation. Formats: docs/formats/response.md; device state:
 * docs/architecture.md.
 */
#ifndef RSR_RESPONSE_H
#define RSR_RESPONSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rsr/common.h"
#include "rsr/key.h"
#include "rsr/patch.h"

#ifdef __cplusplus
extern "C" {
#endif

#define RSR_RESPONSE_MANIFEST "response.json"
#define RSR_RESPONSE_MANIFEST_MAX (4 * 1024 * 1024)

enum rsr_restart {
	RSR_RESTART_NONE = 0,	  /* nothing to restart: e.g. data files */
	RSR_RESTART_SERVICES = 1, /* running processes must restart to use the fix */
	RSR_RESTART_REBOOT = 2,	  /* the fix needs a reboot */
};

/* One changed slot for one architecture. */
struct rsr_response_slot_spec {
	const char *slot;      /* the cryptex name of both images */
	const char *arch;      /* e.g. "x86_64"; NULL for the machine's */
	const char *base_path; /* the base image (.cptx): input of the forward patch, output of the reverse */
	const char *new_path;  /* the fixed image (.cptx) */
};

struct rsr_response_create_opts {
	const char *base_build; /* the base build the response is for */
	const char *letter;	/* "a".."z" */
	uint64_t sequence;	/* 0: from the letter, a = 1 */
	const struct rsr_key *key;
	const struct rsr_response_slot_spec *slots;
	size_t n_slots;
	const char *previous_dir; /* a previous response for the same base: its images become inputs too */
	const char *advisories;	  /* path of the advisories JSON (docs/formats/response.md) */
	enum rsr_restart restart;
	uint64_t timestamp; /* creation time written into the manifest */
	const struct rsr_patch_create_opts *patch_opts;
};

/*
 * Writes a response directory `out_dir` (must not exist; made via a
 * temporary directory and one rename): for each slot spec, the forward patch
 * from the base image (and from the previous response's image of that slot,
 * rebuilt from its forward patch and checked against its signed hashes) to
 * the new image, the reverse patch back to the base image, and the signed
 * manifest. Each new and base image must be a valid cryptex signed by
 * `key`; every slot of the previous response must be carried on.
 */
RSR_EXPORT int rsr_response_create(struct rsr_ctx *ctx, const char *out_dir,
				   const struct rsr_response_create_opts *opts);

struct rsr_response;

/*
 * Reads DIR/response.json. With `trusted`, at least one signature must be by
 * a trusted key (RSR_E_SIGNATURE otherwise); with NULL the signatures are
 * not checked (for `rsr response info`). Every field is bounds-checked.
 */
RSR_EXPORT int rsr_response_open(struct rsr_ctx *ctx, const char *dir, const struct rsr_keyring *trusted,
				 struct rsr_response **ret_resp);
/* The same from manifest bytes in memory (the fuzz target uses this). */
RSR_EXPORT int rsr_response_parse(struct rsr_ctx *ctx, const void *buf, size_t len, const struct rsr_keyring *trusted,
				  struct rsr_response **ret_resp);
RSR_EXPORT void rsr_response_free(struct rsr_response *resp);

RSR_EXPORT const char *rsr_response_dir(const struct rsr_response *resp);
RSR_EXPORT const char *rsr_response_letter(const struct rsr_response *resp);
RSR_EXPORT uint64_t rsr_response_sequence(const struct rsr_response *resp);
RSR_EXPORT const char *rsr_response_base_build(const struct rsr_response *resp);
RSR_EXPORT enum rsr_restart rsr_response_restart(const struct rsr_response *resp);
RSR_EXPORT const char *rsr_restart_name(enum rsr_restart r);
RSR_EXPORT uint64_t rsr_response_timestamp(const struct rsr_response *resp);
/*
 * The key id (64 hex digits) of the manifest's i-th signature, borrowed from
 * resp; NULL past the last one or for one whose key id is not such hex.
 * Whether it verifies is rsr_response_open()'s business (with `trusted`).
 */
RSR_EXPORT const char *rsr_response_signer(const struct rsr_response *resp, size_t i);

struct rsr_advisory {
	const char *id;	      /* e.g. "DSA-5912-1" */
	const char *title;    /* e.g. "OpenSSL" */
	const char *severity; /* "critical", "high", "medium", "low" */
	const char *summary;
	const char *const *cves;
	size_t n_cves;
	const char *const *files; /* affected files, absolute paths */
	size_t n_files;
};
RSR_EXPORT size_t rsr_response_advisory_count(const struct rsr_response *resp);
/* Borrowed from resp. */
RSR_EXPORT const struct rsr_advisory *rsr_response_advisory(const struct rsr_response *resp, size_t i);

struct rsr_response_image {
	const char *slot, *arch;
	const char *version;   /* of the image the forward patch makes */
	const char *root_hash; /* hex; signed root hash of that image */
	const char *sha256;    /* hex; digest of the whole .cptx file */
	uint64_t size;
	const char *base_version; /* of the base image the reverse patch makes */
	const char *base_root_hash, *base_sha256;
	uint64_t base_size;
	const char *forward, *forward_sha256; /* path relative to the response dir; digest */
	uint64_t forward_size;
	const char *const *forward_inputs; /* hex digests of the accepted input images */
	size_t n_forward_inputs;
	const char *reverse, *reverse_sha256;
	uint64_t reverse_size;
};
RSR_EXPORT size_t rsr_response_image_count(const struct rsr_response *resp);
RSR_EXPORT const struct rsr_response_image *rsr_response_image(const struct rsr_response *resp, size_t i);
/* The image of `slot` for `arch`, or NULL. */
RSR_EXPORT const struct rsr_response_image *rsr_response_find_image(const struct rsr_response *resp, const char *slot,
								    const char *arch);

/* The security notes as Markdown, from the signed advisories; the caller frees the string. */
RSR_EXPORT int rsr_response_notes(struct rsr_ctx *ctx, const struct rsr_response *resp, const char *os_name,
				  char **ret_md);

/* The machine's architecture as responses name it (uname -m, e.g. "x86_64"). */
RSR_EXPORT int rsr_machine_arch(char ret_arch[65]);

/* ---- the device ---- */

struct rsr_device;

enum {
	RSR_DEVICE_NO_GRAFT = 1 << 0,  /* stage and switch the images, do not graft them */
	RSR_DEVICE_WAIT = 1 << 1,      /* wait for another rsr operation instead of failing */
	RSR_DEVICE_KEEP_BASE = 1 << 2, /* keep a copy of the base images (costs their size in disk) */
	RSR_DEVICE_REINSTALL = 1 << 3, /* install: the response a person removed last may go back on */
	RSR_DEVICE_WITHDRAWN = 1 << 4, /* remove: of a withdrawn response, not a person's: nothing to reinstall */
};

/*
 * Opens the device state under `root` ("/" for the running system): trusted
 * keys from etc/rsr/keys.d, base identity from etc/os-release, response
 * state under var/lib/rsr. The caller owns the result. Changes nothing.
 */
RSR_EXPORT int rsr_device_open(struct rsr_ctx *ctx, const char *root, struct rsr_device **ret_dev);
RSR_EXPORT void rsr_device_free(struct rsr_device *dev);
/* The trusted keys of etc/rsr/keys.d; borrowed from dev. */
RSR_EXPORT const struct rsr_keyring *rsr_device_keyring(const struct rsr_device *dev);
/* Formats seconds since 1970 as "YYYY-MM-DD HH:MM UTC", the way rsr shows a removal's date. */
RSR_EXPORT void rsr_device_format_time(int64_t t, char ret[32]);

/*
 * Finishes (when its journal was written) or rolls back (otherwise) an
 * install or remove that was interrupted, under the device lock. Returns 1
 * if it did something, 0 if there was nothing to do.
 */
RSR_EXPORT int rsr_device_recover(struct rsr_ctx *ctx, struct rsr_device *dev, unsigned flags);

/*
 * Installs the response in `dir`: checks its signature against the trusted
 * keys, that it is for this base build and newer than anything installed
 * before (the high-water mark survives removal; only the response a person
 * removed last may go back, and only with RSR_DEVICE_REINSTALL: RSR_E_STATE
 * otherwise), checks each patch against its signed digest, applies the patch
 * for the image each slot has now into the incoming area, verifies each
 * result against the signed root hash, then switches every slot and the
 * response state with a journal, and grafts. Returns 0, or 1 when the
 * response was already installed.
 */
RSR_EXPORT int rsr_device_install(struct rsr_ctx *ctx, struct rsr_device *dev, const char *dir, unsigned flags);

/*
 * Goes back to the base images with the installed response's reverse
 * patches (or the kept base copies), verifying each rebuilt image against
 * its signed root hash before the switch, and grafts them. Records the
 * removal (letter, sequence, time) in the state, unless RSR_DEVICE_WITHDRAWN
 * says that the updater removes a withdrawn response. Returns 0, or 1 when
 * no response was installed.
 */
RSR_EXPORT int rsr_device_remove(struct rsr_ctx *ctx, struct rsr_device *dev, unsigned flags);

struct rsr_device_state {
	char *base_build;	       /* of the device; NULL if unknown */
	char *base_name;	       /* os-release PRETTY_NAME or NAME; may be NULL */
	char *letter;		       /* of the installed response, NULL if none */
	uint64_t sequence;	       /* of the installed response, 0 if none */
	uint64_t high_water;	       /* highest sequence ever installed */
	bool interrupted;	       /* an interrupted operation awaits recovery */
	struct rsr_response *response; /* the installed response's manifest, or NULL */
	uint64_t images_bytes;	       /* disk used by the slot images */
	uint64_t base_copy_bytes;      /* disk used by kept base copies */
	uint64_t reverse_bytes;	       /* disk used by the reverse patches */
	char *removed_letter;	       /* of the response a person removed last, NULL if none (or reinstalled) */
	uint64_t removed_sequence;     /* its sequence, 0 if none */
	int64_t removed_at;	       /* when, seconds since 1970 */
};
/* The response state; the caller frees it with rsr_device_state_free(). */
RSR_EXPORT int rsr_device_get_state(struct rsr_ctx *ctx, struct rsr_device *dev, struct rsr_device_state **ret_state);
RSR_EXPORT void rsr_device_state_free(struct rsr_device_state *st);

#ifdef __cplusplus
}
#endif
#endif
