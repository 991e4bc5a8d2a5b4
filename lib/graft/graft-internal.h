/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Internals of the graft module shared by its files and its unit tests:
 * loop/dm-verity/EROFS/overlay mounting, /proc scanning and small parsers.
 */
#ifndef RSR_GRAFT_INTERNAL_H
#define RSR_GRAFT_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "internal.h"
#include "rsr/cryptex.h"
#include "rsr/graft.h"
#include "rsr/key.h"

/* A slot's `current` before this handle first changed it: NULL if it had none. */
struct slot_undo {
	char *slot;
	char *prev;
};

struct rsr_graft {
	char *root;   /* absolute, no trailing slash except for "/" itself */
	char *prefix; /* root with a trailing '/', to join relative paths */
	int rootfd;
	struct rsr_lock *lock; /* the device lock, once the handle changes the root */
	struct rsr_keyring *keys;
	/* Slots changed since the last commit or revert, in the order changed. */
	struct slot_undo *undo;
	size_t n_undo;
};

/* Joins the root and a relative path; the caller frees. NULL on ENOMEM. */
char *graft_path(const struct rsr_graft *g, const char *rel);

/* A mounted image: its loop (or dm) device and where it is. */
struct image_mount {
	char device[64];
	dev_t dev; /* st_dev of the mounted filesystem */
	bool verity;
	bool direct_io;
};

/* True if the kernel has device-mapper (and so may have dm-verity). */
bool graft_verity_available(void);

/*
 * Whether the dm-verity device numbered `dev` has met a block that does not
 * match its hash tree since it was created (its status "C"). -errno when
 * there is no such device or it is not a verity target.
 */
int graft_verity_corrupted(dev_t dev, bool *ret_corrupted);

/*
 * The dm-verity table line for an image and its hash tree on one device
 * (data blocks from 0, the tree from hash_start_block; 4 KiB blocks, SHA-256,
 * format 1; salt "-" when empty). Returns what snprintf() returns.
 */
int graft_verity_table(char *buf, size_t size, dev_t dev, uint64_t data_blocks, uint64_t hash_start_block,
		       const char *root_hex, const char *salt_hex);

/*
 * Attaches the EROFS image of cx (opened at file_fd) read-only and mounts it
 * read-only, nodev, nosuid at `target` (an existing directory).
 */
int graft_mount_image(struct rsr_ctx *ctx, struct rsr_cryptex *cx, int file_fd, const char *target,
		      struct image_mount *ret);

/*
 * Makes a detached read-only overlay of `layers` (absolute directories,
 * uppermost first) and returns its mount fd. *ret_plus says whether each
 * layer went in as its own "lowerdir+" (else all in one "lowerdir").
 */
int graft_make_overlay(struct rsr_ctx *ctx, const char *const *layers, size_t n_layers, int *ret_fd, bool *ret_plus);

/*
 * Puts the detached mount `mnt_fd` at `target`: beneath the mount on top of
 * `target` when `replace` is set (then detaches that top mount), else on
 * top. *ret_stacked is set when the kernel refused to mount beneath and the
 * new mount went on top of the old one instead.
 */
int graft_attach(struct rsr_ctx *ctx, int mnt_fd, const char *target, bool replace, bool *ret_stacked);

/* Private, non-recursive bind of `src` at `target` (an existing directory). */
int graft_bind_private(struct rsr_ctx *ctx, const char *src, const char *target);

/* Lazily detaches the mount on top of `path`. -EINVAL if not a mount. */
int graft_detach(struct rsr_ctx *ctx, const char *path);

/* True if path is the root of a mount. */
bool graft_is_mount_point(const char *path);

/* The set of st_dev values of every mount visible in /proc/self/mountinfo. */
struct dev_set {
	dev_t *devs;
	size_t n, cap;
};
int dev_set_add(struct dev_set *s, dev_t d);
bool dev_set_has(const struct dev_set *s, dev_t d);
void dev_set_free(struct dev_set *s);
int graft_live_mount_devs(struct dev_set *ret);

/* "MAJ:MIN" (decimal) <-> dev_t. */
void graft_format_dev(dev_t d, char buf[32]);
bool graft_parse_dev(const char *s, dev_t *ret);

/* One line of /proc/PID/maps: false if it names no file. `path` points into `line`. */
bool graft_parse_maps_line(char *line, dev_t *ret_dev, uint64_t *ret_ino, char **ret_path);
/*
 * The systemd unit in a /proc/PID/cgroup buffer, or NULL; the caller frees.
 * *ret_system (if not NULL): the unit belongs to the system manager
 * (system.slice, no user@UID.service above it), so it may be restarted.
 */
char *graft_unit_from_cgroup(const char *buf, bool *ret_system);

/*
 * Adds to rep->held the dm-verity and loop devices over this root's images
 * that no visible mount uses but that are still set up (mount.c).
 */
int graft_list_held(struct rsr_ctx *ctx, const struct rsr_graft *g, struct rsr_graft_report *rep);

/*
 * Adds the processes running old code to rep->stale, and those keeping a
 * retired graft alive to rep->holders (scan.c).
 */
int graft_scan_processes(struct rsr_ctx *ctx, const struct rsr_graft *g, json_t *st, struct rsr_graft_report *rep);

/*
 * A small file of /proc or /sys (up to PATH_MAX bytes), or NULL; with
 * `first_line`, its first line only (NULL if empty). The caller frees.
 */
char *graft_read_small(const char *path, bool first_line);

/* Valid slot name: rsr_valid_slot_name(). */
bool graft_slot_name_valid(const char *s);
/*
 * A top-level directory a cryptex may ever cover: a plain name, not one of
 * the API filesystems or /etc, /var, /tmp (no configuration can allow those).
 */
bool graft_cover_name_valid(const char *s);

/*
 * The directories a device allows grafting over besides /usr and /opt:
 * the "cover = /DIR" lines of etc/rsr/graft.conf ('#' comments, blank
 * lines). Each DIR must pass graft_cover_name_valid(). -EINVAL with
 * *ret_line set on a line that is not such a setting; -ENOMEM.
 */
#define GRAFT_CONF "etc/rsr/graft.conf"
/* The state directory: the device lock, and images being installed before they are verified. */
#define GRAFT_STATE_DIR "var/lib/rsr"
int graft_parse_covers(const char *buf, size_t len, char ***ret, size_t *ret_n, size_t *ret_line);

#endif
