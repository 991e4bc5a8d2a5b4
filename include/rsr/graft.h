/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Grafting: the device side of cryptexes. Installs images into slots under a
 * root, grafts the current images over the base directories with loop, EROFS
 * and overlayfs (swapping a slot with no gap), ungrafts, and reports what
 * still runs code from superseded images. Layout: docs/architecture.md.
 */
#ifndef RSR_GRAFT_H
#define RSR_GRAFT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rsr/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Relative to the root: trusted keys, installed images, run-time state. */
#define RSR_GRAFT_KEYS_DIR "etc/rsr/keys.d"
#define RSR_GRAFT_IMAGES_DIR "var/lib/rsr/cryptexes"
#define RSR_GRAFT_RUN_DIR "run/rsr"
#define RSR_GRAFT_STATE_FILE "run/rsr/graft.json"

/* A device rooted at a directory ("/" for the running system). */
struct rsr_graft;

/*
 * Opens the device state under `root` (made absolute; must be a directory)
 * and loads the trusted keys of its keys.d. Nothing is mounted or written.
 * The caller owns the result.
 */
RSR_EXPORT int rsr_graft_open(struct rsr_ctx *ctx, const char *root, struct rsr_graft **ret_g);
RSR_EXPORT void rsr_graft_free(struct rsr_graft *g);
/* The absolute root; borrowed from g. */
RSR_EXPORT const char *rsr_graft_root(const struct rsr_graft *g);

/*
 * Installs the cryptex file `path` as the current image of its slot (the
 * slot is the cryptex's name): verifies its signature against the trusted
 * keys, every block, and that the base build is allowed, copies it to
 * var/lib/rsr/cryptexes/<slot>/<root hash>.cptx (write-temp, fsync, rename)
 * and switches the slot's `current` symlink with one rename. Images of the
 * slot that are neither current, nor grafted, nor the image this handle's
 * uncommitted changes replaced are removed. Mounts nothing.
 * On success *ret_slot (if not NULL) gets the slot name, owned by the caller.
 */
RSR_EXPORT int rsr_graft_install(struct rsr_ctx *ctx, struct rsr_graft *g, const char *path, char **ret_slot);

/*
 * Makes the slot's current image go away (removes the `current` symlink);
 * the next rsr_graft_activate() ungrafts the slot. Missing slot: -ENOENT.
 */
RSR_EXPORT int rsr_graft_uninstall(struct rsr_ctx *ctx, struct rsr_graft *g, const char *slot);

/*
 * rsr_graft_install() and rsr_graft_uninstall() are durable at once, and
 * the handle remembers each changed slot's previous `current` until the
 * changes are committed: by a successful rsr_graft_activate(), or by
 * rsr_graft_commit() (for changes meant to take effect at the next graft).
 * rsr_graft_revert() points every slot changed since then back at its
 * previous image (or none), so that a failed activation leaves the device
 * as it was; then the images no slot needs go. Both return 0 when there is
 * nothing to do.
 */
RSR_EXPORT int rsr_graft_commit(struct rsr_ctx *ctx, struct rsr_graft *g);
RSR_EXPORT int rsr_graft_revert(struct rsr_ctx *ctx, struct rsr_graft *g);

/*
 * Grafts the current image of every slot. Each new image is verified
 * (signature, every block, base build) before anything changes, attached to
 * a read-only loop device (through dm-verity where the kernel has it) and
 * mounted read-only; then each covered directory gets one overlay of the
 * images above the base, slots stacked in ascending name order (a later
 * name shadows an earlier one). A directory already grafted is swapped by
 * mounting the new stack beneath the old one and detaching the old, so no
 * lookup ever fails. Slots whose image did not change are left alone.
 * A refusal leaves nothing mounted or changed. Returns the number of
 * directories whose stack changed.
 */
RSR_EXPORT int rsr_graft_activate(struct rsr_ctx *ctx, struct rsr_graft *g);

/*
 * Back to the bare base: detaches every overlay, image mount and base bind
 * (lazily: processes holding files keep them; loop devices go with their
 * last user). Returns the number of directories ungrafted.
 */
RSR_EXPORT int rsr_graft_deactivate(struct rsr_ctx *ctx, struct rsr_graft *g);

struct rsr_graft_slot_info {
	char *slot;
	char *version;	       /* of the installed current image; NULL if none or unreadable */
	char *grafted_version; /* of the grafted image; NULL if none */
	char *root_hash;       /* hex, of the current image (else of the grafted one) */
	char *image;	       /* the current .cptx file, absolute (of a removed slot: the grafted one) */
	char *mount;	       /* where the grafted image is mounted, absolute; NULL if not grafted */
	char *device;	       /* /dev/loopN or /dev/dm-N; NULL if not grafted */
	bool grafted;	       /* the current image is the grafted one */
	bool pending;	       /* the next graft changes this slot */
	bool removed;	       /* grafted, but the slot has no current image any more */
	bool verity;	       /* mounted through dm-verity */
	bool direct_io;	       /* the loop device does direct I/O */
	bool corrupted;	       /* dm-verity met a block that does not match the signed tree: reads of it fail */
	char **covers;	       /* covered top-level directories */
	size_t n_covers;
	char **packages; /* "NAME[:ARCH] VERSION" of the Debian packages it was built from */
	size_t n_packages;
};

struct rsr_graft_stale_process {
	int pid;
	char *comm;	  /* from /proc/PID/comm */
	char *unit;	  /* systemd unit from /proc/PID/cgroup, or NULL */
	char *file;	  /* one superseded file it runs or maps */
	char *reason;	  /* e.g. "superseded: os 1.0 (swapped out)" or "base file shadowed by slot os" */
	size_t n_files;	  /* how many superseded files it maps */
	bool system_unit; /* `unit` is the system manager's (in system.slice): restart-services may restart it */
};

/*
 * A dm-verity or loop device rsr set up for an image that no live graft
 * uses any more but that is still open: something keeps a retired graft
 * alive (see struct rsr_graft_holder). It goes away with its last user.
 */
struct rsr_graft_held_device {
	char *device;	/* "/dev/dm-5" or "/dev/loop5" */
	char *name;	/* the dm-verity device's name ("rsr-SLOT-HASH16[-N]"), NULL for a loop device */
	char *image;	/* the file the loop device reads, " (deleted)" at the end once removed; may be NULL */
	int open_count; /* how often the device is open (a mount counts once), -1 if unknown */
};

/*
 * A process that keeps a retired graft (swapped out or ungrafted) alive:
 * its executable, a mapping, an open file, its working directory or its
 * root is on the retired overlay or image, even where the file is the same
 * as today's and so not old code.
 */
struct rsr_graft_holder {
	int pid;
	char *comm; /* from /proc/PID/comm */
	char *unit; /* systemd unit from /proc/PID/cgroup, or NULL */
	char *file; /* one such file or directory, as the process names it */
	char *how;  /* "executable", "mapping", "open file", "working directory" or "root directory" */
};

/* A grafted directory and how its overlay was mounted. */
struct rsr_graft_path_info {
	char *path;	     /* absolute */
	char *layers_option; /* "lowerdir+" (Linux 6.8 and later) or "lowerdir"; NULL if not recorded */
	unsigned stacked;    /* older grafts left covered beneath it (kernels without mount-beneath), until ungraft */
};

struct rsr_graft_report {
	char *root;
	char *base_name;    /* os-release PRETTY_NAME or NAME; may be NULL */
	char *base_version; /* VERSION_ID; may be NULL */
	char *base_build;   /* the build used to match cryptexes; may be NULL */
	bool verity_available;
	struct rsr_graft_slot_info *slots; /* installed or grafted slots, by name */
	size_t n_slots;
	char **grafted_paths; /* absolute directories with an overlay */
	size_t n_grafted_paths;
	struct rsr_graft_stale_process *stale;
	size_t n_stale;
	struct rsr_graft_held_device *held; /* devices of retired grafts still open */
	size_t n_held;
	struct rsr_graft_holder *holders; /* processes keeping retired grafts alive */
	size_t n_holders;
	struct rsr_graft_path_info *paths; /* the grafted directories, as grafted_paths, with how */
	size_t n_paths;
};

/*
 * Fills a report: base OS, installed and grafted slots, and the processes
 * whose executable or mappings come from superseded or ungrafted images or
 * from base files now shadowed by a graft (found in /proc/ * /maps and
 * /proc/ * /exe), the devices of retired grafts that are still open, and
 * the processes that keep them open. Changes nothing. The caller owns the
 * report.
 */
RSR_EXPORT int rsr_graft_status(struct rsr_ctx *ctx, struct rsr_graft *g, struct rsr_graft_report **ret_report);
RSR_EXPORT void rsr_graft_report_free(struct rsr_graft_report *rep);

/*
 * Restarts the systemd units of the stale processes of `rep` with
 * `systemctl try-restart`: only system services (system_unit), so a unit
 * of a user's service manager that shares a system service's name is never
 * restarted as root. When systemd is not running, fails with RSR_E_STATE
 * and a message saying so. Processes outside any service unit are not
 * restarted. Returns the number of units restarted.
 */
RSR_EXPORT int rsr_graft_restart_services(struct rsr_ctx *ctx, const struct rsr_graft_report *rep);

/*
 * Reads the base identity from an os-release buffer: BUILD_ID, else
 * IMAGE_VERSION, else VERSION_ID is the build. Strings are owned by the caller.
 */
RSR_EXPORT int rsr_graft_parse_os_release(const char *buf, size_t len, char **ret_name, char **ret_version,
					  char **ret_build);

#ifdef __cplusplus
}
#endif
#endif
