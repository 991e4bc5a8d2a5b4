/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Shared by the files of lib/image: running the external tools a build
 * needs, and staging a build's tree from a directory and Debian packages
 * (deb.c). Not installed.
 */
#ifndef RSR_IMAGE_INTERNAL_H
#define RSR_IMAGE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "internal.h"
#include "rsr/cryptex.h"

/*
 * Runs argv with a fixed minimal environment, stdin from /dev/null, stdout
 * to `out` (NULL: to `log` as well) and stderr to `log`; on failure the
 * error quotes the log's last line.
 */
int rsr_image_run_tool(struct rsr_ctx *ctx, char *const argv[], const char *out, const char *log);

/* The open file of a cryptex opened from a file (-1 for one parsed from memory); borrowed. */
int rsr_image_cryptex_fd(const struct rsr_cryptex *cx);

/* A Debian package a cryptex was built from (dpkg-deb -f). */
struct rsr_image_package {
	char *name, *version, *architecture;
};
void rsr_image_packages_free(struct rsr_image_package *v, size_t n);

/*
 * Fills `root` (which must not exist; inside the private staging directory
 * `stage`) with what the build puts into the image: a copy of src_dir (may
 * be NULL), then the files of each of opts->debs extracted with dpkg-deb,
 * with bin/, sbin/ and lib*\/ moved under usr/ unless opts->no_merged_usr.
 * Packages whose entries would leave the tree, that carry device nodes or
 * that ship a file another input ships are refused; their etc/ and var/ are
 * left out (a cryptex covers read-only directories only), with a warning.
 * `log` is a scratch file for the tools' output. On success the packages,
 * in the order given, are returned; the caller frees them.
 */
int rsr_image_stage(struct rsr_ctx *ctx, const char *src_dir, const struct rsr_cryptex_build_opts *opts,
		    const char *stage, const char *root, const char *log, struct rsr_image_package **ret_pkgs,
		    size_t *ret_n);

/* A setuid, setgid or file-capability file of a tree, as the manifest's "privileged" lists it. */
struct rsr_image_privileged {
	char *path;    /* "/usr/bin/sudo" */
	unsigned mode; /* the permission bits, 07777 */
	bool caps;     /* it has a security.capability extended attribute */
};
void rsr_image_privileged_free(struct rsr_image_privileged *v, size_t n);
/* True if s can be a "privileged" path: absolute, normalised, UTF-8 without control characters. */
bool rsr_image_privileged_path_valid(const char *s);

/* What rsr_image_scan_tree() found below a tree's root. */
struct rsr_image_tree {
	uint64_t files, dirs;		   /* non-directories and directories */
	uint64_t caps;			   /* files with file capabilities */
	struct rsr_image_privileged *priv; /* sorted by path */
	size_t n_priv;
};
void rsr_image_tree_free(struct rsr_image_tree *t);

/* Also drop every extended attribute but security.capability (in a build's own staging copy). */
#define RSR_IMAGE_TREE_STRIP 1u

/*
 * Walks the tree open at dfd without following links, at most
 * RSR_CRYPTEX_TREE_MAX_DEPTH deep and RSR_CRYPTEX_TREE_MAX_ENTRIES entries,
 * refusing device nodes other than overlay whiteouts (character 0:0), FIFOs
 * and sockets, and collecting its setuid, setgid and file-capability files.
 * `what` names the tree in messages. The caller frees *ret with
 * rsr_image_tree_free().
 */
int rsr_image_scan_tree(struct rsr_ctx *ctx, int dfd, const char *what, unsigned flags, struct rsr_image_tree *ret);

#endif
