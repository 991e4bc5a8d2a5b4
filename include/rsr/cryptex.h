/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Cryptex images: a signed, sealed EROFS filesystem image in one file.
 * Layout (docs/formats/cryptex.md): a 4 KiB header, the EROFS image, its
 * dm-verity hash tree, and a signed JSON manifest.
 */
#ifndef RSR_CRYPTEX_H
#define RSR_CRYPTEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rsr/common.h"
#include "rsr/key.h"

#ifdef __cplusplus
extern "C" {
#endif

#define RSR_CRYPTEX_BLOCK_SIZE 4096
#define RSR_CRYPTEX_HEADER_SIZE 4096
#define RSR_CRYPTEX_MANIFEST_MAX (1024 * 1024)
/* Bounds of a cryptex's tree, at build and when it is checked before a graft. */
#define RSR_CRYPTEX_TREE_MAX_DEPTH 256
#define RSR_CRYPTEX_TREE_MAX_ENTRIES (4 * 1024 * 1024)
/* At most this many setuid, setgid and file-capability files in one cryptex. */
#define RSR_CRYPTEX_PRIVILEGED_MAX 256
/* Name of the release file at the root of every cryptex's filesystem. */
#define RSR_CRYPTEX_RELEASE_FILE "cryptex-release"

struct rsr_cryptex;

struct rsr_cryptex_build_opts {
	const char *name;		/* slot name: [A-Za-z0-9_.-], 1..64, not starting with '.' */
	const char *version;		/* free text without whitespace, 1..128 */
	const char *const *base_builds; /* base builds it may be grafted on; at least one */
	size_t n_base_builds;
	const struct rsr_key *key; /* private signing key */
	uint64_t timestamp;	   /* every inode's time and the manifest's (SOURCE_DATE_EPOCH) */
	const char *mkfs_erofs;	   /* program to run; NULL for the built-in default */
	const char *tmpdir;	   /* staging area; NULL for the output's directory */
	const char *const *debs;   /* Debian packages (.deb) whose files go in too; may be NULL */
	size_t n_debs;
	bool no_merged_usr; /* keep top-level bin/, sbin/, lib*\/ as they are, not under usr/ */
};

/*
 * Builds OUT from the tree SRC_DIR and the packages opts->debs (either may
 * be absent, not both): copies the tree to a staging area, extracts each
 * package there with dpkg-deb (refusing one whose entries would leave the
 * tree, that carries device nodes or that ships a file another input ships;
 * leaving out its etc/ and var/), moves top-level bin/, sbin/ and lib*\/
 * under usr/ (merged /usr, unless opts->no_merged_usr), adds the release
 * file, runs mkfs.erofs (uncompressed, all files owned by root, every time
 * set to opts->timestamp, a UUID derived from name and version), computes
 * the hash tree and writes the signed file atomically. The packages' names,
 * versions and architectures go into the release file and the manifest.
 * The same inputs and options give a byte-identical file. Each top-level
 * entry of the tree must be a directory; they become the paths the cryptex
 * covers.
 */
RSR_EXPORT int rsr_cryptex_build(struct rsr_ctx *ctx, const char *src_dir, const char *out_path,
				 const struct rsr_cryptex_build_opts *opts);

/*
 * Opens a cryptex file and parses its header and manifest, checking every
 * length and offset; verifies nothing cryptographic. The caller owns the
 * result. Fails with RSR_E_FORMAT and a message naming the fault.
 */
RSR_EXPORT int rsr_cryptex_open(struct rsr_ctx *ctx, const char *path, struct rsr_cryptex **ret_cx);
/*
 * Like rsr_cryptex_open(), but checks the manifest's signature against the
 * trusted keys before parsing it, so untrusted JSON is never parsed and a
 * damaged manifest is reported as a bad signature.
 */
RSR_EXPORT int rsr_cryptex_open_trusted(struct rsr_ctx *ctx, const char *path, const struct rsr_keyring *trusted,
					struct rsr_cryptex **ret_cx);
/* The same from a whole file in memory (used by the fuzzers); the image is not kept. */
RSR_EXPORT int rsr_cryptex_parse(struct rsr_ctx *ctx, const void *buf, size_t len, struct rsr_cryptex **ret_cx);
RSR_EXPORT void rsr_cryptex_free(struct rsr_cryptex *cx);

/*
 * Checks the manifest's signature against the trusted keys: RSR_E_SIGNATURE
 * names the key id when it is not trusted or the signature does not verify.
 */
RSR_EXPORT int rsr_cryptex_verify_signature(struct rsr_ctx *ctx, struct rsr_cryptex *cx,
					    const struct rsr_keyring *trusted);
/*
 * Checks the hash tree against the signed root hash, then every data block
 * against the tree, on several threads. RSR_E_DIGEST names the first bad
 * block (data block index, or hash-tree level and block). Progress is
 * reported in bytes. Only for a cryptex opened from a file.
 */
RSR_EXPORT int rsr_cryptex_verify_blocks(struct rsr_ctx *ctx, struct rsr_cryptex *cx);
/* Signature, then blocks. */
RSR_EXPORT int rsr_cryptex_verify(struct rsr_ctx *ctx, struct rsr_cryptex *cx, const struct rsr_keyring *trusted);

/*
 * Writes OUT, a Discoverable Disk Image (docs/formats/ddi.md) of the
 * cryptex: a GPT disk whose root partition (of `architecture`: "x86-64" or
 * "arm64"; NULL for the one rsr was built for) is the same EROFS image,
 * whose root verity partition is its hash tree behind a dm-verity
 * superblock, and whose root verity signature partition holds the root
 * hash and a PKCS#7 signature of it made with the private key key_path
 * and its X.509 certificate cert_path (PEM), as systemd and the kernel's
 * dm-verity check it. Every block is verified against the signed root
 * hash first; OUT is written atomically. The root hash is the cryptex's.
 */
RSR_EXPORT int rsr_cryptex_export_ddi(struct rsr_ctx *ctx, struct rsr_cryptex *cx, const char *out_path,
				      const char *architecture, const char *key_path, const char *cert_path);

/*
 * Checks the tree of the cryptex's image, mounted and open at dfd, before
 * it is grafted: walking it without following links (bounded by the
 * manifest's counts and RSR_CRYPTEX_TREE_MAX_DEPTH), it refuses a device
 * node other than an overlay whiteout (character device 0:0), a FIFO or a
 * socket, and a setuid, setgid or file-capability file that the signed
 * manifest does not list with the same mode and capabilities, or that is
 * not owned by root; so does a listed file the image does not have so.
 * RSR_E_FORMAT, RSR_E_MISMATCH or RSR_E_LIMIT with a message naming
 * `what` (NULL: the cryptex's path) and the path in the image.
 */
RSR_EXPORT int rsr_cryptex_check_tree(struct rsr_ctx *ctx, const struct rsr_cryptex *cx, int dfd, const char *what);

/* Getters: strings are borrowed from cx. */
RSR_EXPORT const char *rsr_cryptex_path(const struct rsr_cryptex *cx);
RSR_EXPORT const char *rsr_cryptex_name(const struct rsr_cryptex *cx);
RSR_EXPORT const char *rsr_cryptex_version(const struct rsr_cryptex *cx);
RSR_EXPORT size_t rsr_cryptex_base_build_count(const struct rsr_cryptex *cx);
RSR_EXPORT const char *rsr_cryptex_base_build(const struct rsr_cryptex *cx, size_t i);
/* True if `build` is one of the base builds the cryptex may be grafted on. */
RSR_EXPORT bool rsr_cryptex_allows_base(const struct rsr_cryptex *cx, const char *build);
/* Top-level directories the cryptex covers, e.g. "usr". */
RSR_EXPORT size_t rsr_cryptex_path_count(const struct rsr_cryptex *cx);
RSR_EXPORT const char *rsr_cryptex_covered_path(const struct rsr_cryptex *cx, size_t i);
/* The Debian packages the image was built from (none for a plain tree), in the order given. */
RSR_EXPORT size_t rsr_cryptex_package_count(const struct rsr_cryptex *cx);
RSR_EXPORT const char *rsr_cryptex_package_name(const struct rsr_cryptex *cx, size_t i);
RSR_EXPORT const char *rsr_cryptex_package_version(const struct rsr_cryptex *cx, size_t i);
RSR_EXPORT const char *rsr_cryptex_package_architecture(const struct rsr_cryptex *cx, size_t i);
/*
 * The setuid, setgid and file-capability files of the image, as its signed
 * manifest lists them, sorted by path ("/usr/bin/sudo"): the permission
 * bits (07777) and whether the file has file capabilities.
 */
RSR_EXPORT size_t rsr_cryptex_privileged_count(const struct rsr_cryptex *cx);
RSR_EXPORT const char *rsr_cryptex_privileged_path(const struct rsr_cryptex *cx, size_t i);
RSR_EXPORT unsigned rsr_cryptex_privileged_mode(const struct rsr_cryptex *cx, size_t i);
RSR_EXPORT bool rsr_cryptex_privileged_caps(const struct rsr_cryptex *cx, size_t i);
RSR_EXPORT const char *rsr_cryptex_root_hash_hex(const struct rsr_cryptex *cx);
RSR_EXPORT void rsr_cryptex_root_hash(const struct rsr_cryptex *cx, uint8_t ret[32]);
RSR_EXPORT const char *rsr_cryptex_salt_hex(const struct rsr_cryptex *cx);
RSR_EXPORT const char *rsr_cryptex_key_id_hex(const struct rsr_cryptex *cx);
RSR_EXPORT uint64_t rsr_cryptex_timestamp(const struct rsr_cryptex *cx);
RSR_EXPORT uint64_t rsr_cryptex_file_count(const struct rsr_cryptex *cx);      /* non-directories */
RSR_EXPORT uint64_t rsr_cryptex_directory_count(const struct rsr_cryptex *cx); /* directories, root excluded */
RSR_EXPORT uint64_t rsr_cryptex_file_size(const struct rsr_cryptex *cx);
/* The EROFS image: where it starts in the file and its size (a multiple of 4096). */
RSR_EXPORT uint64_t rsr_cryptex_image_offset(const struct rsr_cryptex *cx);
RSR_EXPORT uint64_t rsr_cryptex_image_size(const struct rsr_cryptex *cx);
/* The hash tree (dm-verity format without superblock, version 1). */
RSR_EXPORT uint64_t rsr_cryptex_tree_offset(const struct rsr_cryptex *cx);
RSR_EXPORT uint64_t rsr_cryptex_tree_size(const struct rsr_cryptex *cx);
RSR_EXPORT uint64_t rsr_cryptex_data_blocks(const struct rsr_cryptex *cx);
/* The signed manifest bytes (JSON); borrowed. */
RSR_EXPORT const char *rsr_cryptex_manifest(const struct rsr_cryptex *cx, size_t *ret_len);

#ifdef __cplusplus
}
#endif
#endif
