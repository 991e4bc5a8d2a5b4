/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The device's update client: The Update Framework's workflow over HTTP(S)
 * with libcurl (root rotation, timestamp, snapshot, targets; signatures,
 * thresholds, expiry, rollback, lengths and hashes), the choice of the
 * response to install (base build, sequence, staged rollout, withdrawal),
 * resumable bounded downloads, and the policy file /etc/rsr/rsr.conf.
 * Trusted metadata lives in var/lib/rsr/tuf/ under the device root.
 */
#ifndef RSR_UPDATE_H
#define RSR_UPDATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rsr/common.h"
#include "rsr/response.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The device's first trusted root (shipped with the OS), relative to the root. */
#define RSR_UPDATE_ROOT_FILE "etc/rsr/repository-root.json"
/* Trusted metadata and downloads, relative to the root. */
#define RSR_UPDATE_STATE_DIR "var/lib/rsr/tuf"
/* The policy file, relative to the root. */
#define RSR_UPDATE_POLICY_FILE "etc/rsr/rsr.conf"
#define RSR_UPDATE_MAX_MIRRORS 16
/* Policy defaults: stall timeout, minimum average rate of a file, ceiling of one run (the timer's period). */
#define RSR_UPDATE_DEFAULT_TIMEOUT 30
#define RSR_UPDATE_DEFAULT_MIN_RATE 1024
#define RSR_UPDATE_DEFAULT_MAX_RUN_TIME (6 * 3600)

enum rsr_restart_policy {
	RSR_RESTART_POLICY_NONE = 0,	 /* never restart anything */
	RSR_RESTART_POLICY_SERVICES = 1, /* restart the services that run superseded code */
	RSR_RESTART_POLICY_ASK = 2,	 /* say what needs a restart, leave it to the user */
};

enum rsr_withdrawn_policy {
	RSR_WITHDRAWN_BASE = 0, /* with no newer response, go back to the base */
	RSR_WITHDRAWN_STAY = 1, /* with no newer response, keep the withdrawn one */
};

/* /etc/rsr/rsr.conf, parsed. docs/man/rsr-update.md describes the file. */
struct rsr_update_policy {
	char *mirrors[RSR_UPDATE_MAX_MIRRORS]; /* base URLs, tried in turn */
	size_t n_mirrors;
	bool auto_install; /* the timer installs, not just checks */
	bool allow_remove; /* users may remove responses */
	enum rsr_restart_policy restart;
	bool staged_rollout; /* honour rollout percentages (default on) */
	enum rsr_withdrawn_policy withdrawn;
	unsigned timeout; /* seconds without progress before a transfer fails */
	/*
	 * Bytes per second a file must average: each file has timeout +
	 * length / min_rate seconds on a mirror (TUF's slow-retrieval attack).
	 */
	uint64_t min_rate;
	unsigned max_run_time; /* seconds for all transfers of one check or update */
};

/*
 * The defaults: no mirror, auto install on, remove allowed, restart
 * services, rollout on, withdrawn base, 30 s, 1024 bytes/s, 6 hours.
 */
RSR_EXPORT void rsr_update_policy_init(struct rsr_update_policy *p);
/*
 * Parses the key = value policy file in buf (`what` names it in messages)
 * into *p, which holds the defaults or earlier values; free with
 * rsr_update_policy_clear(). Unknown keys and bad values are errors.
 */
RSR_EXPORT int rsr_update_policy_parse(struct rsr_ctx *ctx, const void *buf, size_t len, const char *what,
				       struct rsr_update_policy *p);
RSR_EXPORT void rsr_update_policy_clear(struct rsr_update_policy *p);

/*
 * The rollout bucket (0..99) of a device for a response: from SHA-256 of
 * "machine_id/base_build/letter"; the device takes a response with rollout
 * percentage P when its bucket is below P.
 */
RSR_EXPORT unsigned rsr_update_rollout_bucket(const char *machine_id, const char *base_build, const char *letter);

struct rsr_update_opts {
	const char *root;			/* device root, "/" for the running system */
	const struct rsr_update_policy *policy; /* borrowed */
	const char *machine_id;			/* for staged rollout; NULL: every rollout applies */
	int64_t now;				/* seconds since 1970, for expiry */
	const char *ca_file;			/* extra CA bundle for HTTPS; NULL: the system store */
	bool reinstall; /* offer the response a person removed last again (rsr update --reinstall) */
};

struct rsr_updater;

/* Opens the client: device state and the trusted root. The caller owns it. */
RSR_EXPORT int rsr_update_open(struct rsr_ctx *ctx, const struct rsr_update_opts *opts, struct rsr_updater **ret_u);
RSR_EXPORT void rsr_update_free(struct rsr_updater *u);

/*
 * The TUF workflow: follows each new root version, then fetches timestamp,
 * snapshot and targets, verifies and persists each. Fails (keeping the
 * trusted metadata as it was) on any check.
 */
RSR_EXPORT int rsr_update_refresh(struct rsr_ctx *ctx, struct rsr_updater *u);

enum rsr_update_action {
	RSR_UPDATE_NONE = 0,	/* up to date */
	RSR_UPDATE_INSTALL = 1, /* a newer response is available */
	RSR_UPDATE_REMOVE = 2,	/* the installed response was withdrawn: back to the base */
};

struct rsr_update_advisory {
	const char *id, *title, *severity;
	const char *const *cves;
	size_t n_cves;
};

/* A response newer than the one offered (if any) that this device cannot install. */
struct rsr_update_blocked {
	const char *letter;
	uint64_t sequence;
	/* why, e.g. "slot 'libssl3': this device's image (3f2a…) is none of the 2 images response (b) patches from" */
	const char *reason;
};

/* What rsr_update_check() found; borrowed from the updater. */
struct rsr_update_offer {
	enum rsr_update_action action;
	const char *base_build;
	const char *installed_letter; /* NULL if none */
	bool installed_withdrawn;
	const char *letter; /* of the offered response (INSTALL) */
	uint64_t sequence;
	const char *restart;
	unsigned rollout;
	size_t n_held_back; /* newer responses not for this device yet (rollout) */
	const struct rsr_update_advisory *advisories;
	size_t n_advisories;
	uint64_t download_bytes; /* what will be fetched: manifest, patches for this device's images, reverse patches */
	size_t n_files;
	uint64_t reused_bytes; /* files of the offer this device holds already (same signed digest): not fetched */
	size_t n_reused;
	bool reinstall; /* the offer (INSTALL) is the response a person removed, asked for with opts.reinstall */
	/* Newer responses for this base build this device cannot install, newest first, each with the reason. */
	const struct rsr_update_blocked *blocked;
	size_t n_blocked;
	/* The response a person removed last (NULL if none): the timer never installs it again. */
	const char *removed_letter;
	uint64_t removed_sequence;
	int64_t removed_at;	  /* seconds since 1970 */
	bool reinstall_available; /* the repository still offers it and this device can install it */
};

/*
 * Chooses after a refresh: the newest response for this base build above
 * the high-water mark (or the one a person removed, with opts.reinstall)
 * that this device can install, told from the signed metadata alone: a
 * trusted key among the manifest's signers, a current image of every slot
 * that is the new image or one the forward patch accepts. Newer ones that
 * cannot install are listed in `blocked` with the reason; nothing is fetched
 * for them.
 */
RSR_EXPORT int rsr_update_check(struct rsr_ctx *ctx, struct rsr_updater *u, const struct rsr_update_offer **ret_offer);

/*
 * Carries the offer out: downloads what it needs (resuming earlier partial
 * downloads, bounded by the signed lengths, checked against the signed
 * hashes; progress "download") and installs it with rsr_device_install(),
 * or removes the withdrawn response. `flags` are RSR_DEVICE_* flags.
 */
RSR_EXPORT int rsr_update_apply(struct rsr_ctx *ctx, struct rsr_updater *u, unsigned flags);

/* Bytes fetched over the network by this updater (for tests and reports). */
RSR_EXPORT uint64_t rsr_update_bytes_fetched(const struct rsr_updater *u);

#ifdef __cplusplus
}
#endif
#endif
