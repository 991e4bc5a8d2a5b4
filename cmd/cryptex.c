/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * rsr cryptex: build, verify and inspect cryptex images.
 */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "rsr/cryptex.h"

static int cryptex_build(struct cmd_env *env, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"output", required_argument, NULL, 'o'},
	    {"name", required_argument, NULL, 'n'},
	    {"version", required_argument, NULL, 'V'},
	    {"base", required_argument, NULL, 'b'},
	    {"key", required_argument, NULL, 'k'},
	    {"timestamp", required_argument, NULL, 't'},
	    {"mkfs", required_argument, NULL, 'M'},
	    {"deb", required_argument, NULL, 'd'},
	    {"no-merged-usr", no_argument, NULL, 'U'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct rsr_cryptex_build_opts o = {0};
	const char *out = NULL, *keypath = NULL, *sde = getenv("SOURCE_DATE_EPOCH");
	const char *bases[256], *debs[256];
	struct rsr_key *key = NULL;
	unsigned long long ts = 0;
	bool ts_set = false;
	int c, r;

	while ((c = getopt_long(argc, argv, "o:n:V:b:k:t:h", opts, NULL)) != -1) {
		switch (c) {
		case 'o':
			out = optarg;
			break;
		case 'n':
			o.name = optarg;
			break;
		case 'V':
			o.version = optarg;
			break;
		case 'b':
			if (o.n_base_builds >= 256)
				return cmd_usage_error("at most 256 --base options");
			bases[o.n_base_builds++] = optarg;
			break;
		case 'k':
			keypath = optarg;
			break;
		case 't':
			if (!cmd_parse_uint(optarg, INT64_MAX, &ts))
				return cmd_usage_error("--timestamp takes seconds since 1970");
			ts_set = true;
			break;
		case 'M':
			o.mkfs_erofs = optarg;
			break;
		case 'd':
			if (o.n_debs >= 256)
				return cmd_usage_error("at most 256 --deb options");
			debs[o.n_debs++] = optarg;
			break;
		case 'U':
			o.no_merged_usr = true;
			break;
		case 'h':
			printf("Usage: rsr cryptex build [SRC_DIR] [--deb PKG.deb...] -o OUT.cptx --name NAME\n"
			       "                         --version VERSION --base BUILD_ID [--base BUILD_ID...]\n"
			       "                         --key KEY [--no-merged-usr] [--timestamp SECONDS]\n"
			       "                         [--mkfs PROGRAM]\n\n"
			       "Builds a signed, sealed cryptex: an EROFS image of SRC_DIR (each top-level\n"
			       "entry a directory it covers, e.g. usr/) and of the files of each package\n"
			       "(extracted with dpkg-deb; its etc/ and var/ are left out), its dm-verity hash\n"
			       "tree and a manifest signed with KEY, which names the packages.\n\n"
			       "  -o, --output OUT      the cryptex to write\n"
			       "      --name NAME       slot name\n"
			       "      --version VERSION version of the image\n"
			       "      --base BUILD_ID   a base build it may be grafted on; repeatable\n"
			       "      --key KEY         private signing key (PEM)\n"
			       "      --deb PKG.deb     a Debian package whose files go in; repeatable\n"
			       "      --no-merged-usr   keep top-level bin/, sbin/, lib*/ as they are (by default\n"
			       "                        they go under usr/, as on a merged-/usr system)\n"
			       "      --timestamp SECS  time of every inode (default $SOURCE_DATE_EPOCH, else 0)\n"
			       "      --mkfs PROGRAM    the mkfs.erofs to run\n\n"
			       "Reproducible: the same inputs give the same bytes. See rsr-cryptex(1).\n");
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (argc - optind > 1 || (optind == argc && !o.n_debs) || !out || !o.name || !o.version || !o.n_base_builds ||
	    !keypath)
		return cmd_usage("rsr cryptex build [SRC_DIR] [--deb PKG.deb...] -o OUT --name NAME "
				 "--version VERSION --base BUILD_ID --key KEY");
	if (!ts_set && sde && *sde && !cmd_parse_uint(sde, INT64_MAX, &ts))
		return cmd_usage_error("SOURCE_DATE_EPOCH is not a number of seconds: %s", sde);
	o.timestamp = ts;
	o.base_builds = bases;
	o.debs = debs;
	r = rsr_key_load_private(env->ctx, keypath, &key);
	if (r < 0)
		return cmd_fail(env, r);
	o.key = key;
	cmd_progress_enable(env);
	r = rsr_cryptex_build(env->ctx, optind < argc ? argv[optind] : NULL, out, &o);
	cmd_progress_done(env);
	rsr_key_free(key);
	if (r < 0)
		return cmd_fail(env, r);
	if (!env->quiet) {
		struct rsr_cryptex *cx;
		if (rsr_cryptex_open(env->ctx, out, &cx) == 0) {
			char b[32];
			printf("%s: %s %s, %s, root hash %s\n", out, rsr_cryptex_name(cx), rsr_cryptex_version(cx),
			       cmd_bytes(rsr_cryptex_file_size(cx), b), rsr_cryptex_root_hash_hex(cx));
			rsr_cryptex_free(cx);
		}
	}
	return EXIT_OK;
}

static int load_keyring(struct cmd_env *env, char **files, size_t n, struct rsr_keyring **ret)
{
	struct rsr_keyring *ring;
	int r;

	if (rsr_keyring_new(&ring) < 0)
		return cmd_error(env, -ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++) {
		r = rsr_keyring_add_file(env->ctx, ring, files[i]);
		if (r < 0) {
			rsr_keyring_free(ring);
			return cmd_fail(env, r);
		}
	}
	*ret = ring;
	return EXIT_OK;
}

static int cryptex_verify(struct cmd_env *env, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"pubkey", required_argument, NULL, 'p'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	char *keys[64];
	size_t nkeys = 0;
	struct rsr_keyring *ring = NULL;
	int c, ret = EXIT_OK;

	while ((c = getopt_long(argc, argv, "p:h", opts, NULL)) != -1) {
		switch (c) {
		case 'p':
			if (nkeys >= 64)
				return cmd_usage_error("at most 64 --pubkey options");
			keys[nkeys++] = optarg;
			break;
		case 'h':
			printf("Usage: rsr cryptex verify FILE.cptx... --pubkey KEY.pub [--pubkey KEY.pub...]\n\n"
			       "Checks the manifest's signature against the given public keys, then the\n"
			       "hash tree against the signed root hash, then every block of the image\n"
			       "against the tree. Exit status 1 names what is wrong.\n");
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind >= argc || nkeys == 0)
		return cmd_usage("rsr cryptex verify FILE.cptx --pubkey KEY.pub");
	if ((c = load_keyring(env, keys, nkeys, &ring)) != EXIT_OK)
		return c;
	for (int i = optind; i < argc; i++) {
		struct rsr_cryptex *cx;
		int r = rsr_cryptex_open_trusted(env->ctx, argv[i], ring, &cx);

		if (r < 0) {
			ret = cmd_fail(env, r);
			continue;
		}
		cmd_progress_enable(env);
		r = rsr_cryptex_verify_blocks(env->ctx, cx);
		cmd_progress_done(env);
		if (r < 0) {
			ret = cmd_fail(env, r);
			rsr_cryptex_free(cx);
			continue;
		}
		if (!env->quiet) {
			printf("%s: OK (%s %s, signed by %.16s, %llu blocks, root hash %s)\n", argv[i],
			       rsr_cryptex_name(cx), rsr_cryptex_version(cx), rsr_cryptex_key_id_hex(cx),
			       (unsigned long long)rsr_cryptex_data_blocks(cx), rsr_cryptex_root_hash_hex(cx));
		}
		rsr_cryptex_free(cx);
	}
	rsr_keyring_free(ring);
	return ret;
}

/* The --json description of one cryptex; NULL when out of memory. */
static json_t *info_json(struct rsr_cryptex *cx)
{
	json_t *bases = json_array(), *paths = json_array(), *pkgs = json_array(), *priv = json_array(), *v;
	bool ok = pkgs != NULL && priv != NULL;

	for (size_t i = 0; ok && i < rsr_cryptex_package_count(cx); i++)
		cmd_json_push(&ok, pkgs,
			      json_pack("{s:s, s:s, s:s}", "name", rsr_cryptex_package_name(cx, i), "version",
					rsr_cryptex_package_version(cx, i), "architecture",
					rsr_cryptex_package_architecture(cx, i)));
	for (size_t i = 0; ok && i < rsr_cryptex_privileged_count(cx); i++) {
		char mode[8];
		snprintf(mode, sizeof(mode), "%04o", rsr_cryptex_privileged_mode(cx, i));
		cmd_json_push(&ok, priv,
			      json_pack("{s:s, s:s, s:b}", "path", rsr_cryptex_privileged_path(cx, i), "mode", mode,
					"caps", rsr_cryptex_privileged_caps(cx, i)));
	}
	if (!ok)
		goto fail;

	for (size_t i = 0; bases && i < rsr_cryptex_base_build_count(cx); i++)
		if (json_array_append_new(bases, json_string(rsr_cryptex_base_build(cx, i))) < 0)
			goto fail;
	for (size_t i = 0; paths && i < rsr_cryptex_path_count(cx); i++)
		if (json_array_append_new(paths, json_string(rsr_cryptex_covered_path(cx, i))) < 0)
			goto fail;
	if (!bases || !paths)
		goto fail;
	/* "o" hands both arrays to the result, also when packing fails. */
	v = json_pack("{s:s, s:s, s:s, s:o, s:o, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "file",
		      rsr_cryptex_path(cx), "name", rsr_cryptex_name(cx), "version", rsr_cryptex_version(cx),
		      "base_builds", bases, "paths", paths, "root_hash", rsr_cryptex_root_hash_hex(cx), "salt",
		      rsr_cryptex_salt_hex(cx), "key_id", rsr_cryptex_key_id_hex(cx), "timestamp",
		      (json_int_t)rsr_cryptex_timestamp(cx), "files", (json_int_t)rsr_cryptex_file_count(cx),
		      "directories", (json_int_t)rsr_cryptex_directory_count(cx), "file_size",
		      (json_int_t)rsr_cryptex_file_size(cx), "image_offset", (json_int_t)rsr_cryptex_image_offset(cx),
		      "image_size", (json_int_t)rsr_cryptex_image_size(cx), "hash_tree_size",
		      (json_int_t)rsr_cryptex_tree_size(cx), "data_blocks", (json_int_t)rsr_cryptex_data_blocks(cx));
	bases = paths = NULL;
	if (v) {
		cmd_json_set(&ok, v, "packages", pkgs);
		cmd_json_set(&ok, v, "privileged", priv);
	} else {
		json_decref(pkgs);
		json_decref(priv);
	}
	if (!ok) {
		json_decref(v);
		return NULL;
	}
	return v;
fail:
	json_decref(bases);
	json_decref(paths);
	json_decref(pkgs);
	json_decref(priv);
	return NULL;
}

static void info_text(struct rsr_cryptex *cx)
{
	char a[32], b[32], c[32];

	printf("File:         %s\n", rsr_cryptex_path(cx));
	printf("Name:         %s\n", rsr_cryptex_name(cx));
	printf("Version:      %s\n", rsr_cryptex_version(cx));
	printf("Base builds:  ");
	for (size_t i = 0; i < rsr_cryptex_base_build_count(cx); i++)
		printf("%s%s", i ? ", " : "", rsr_cryptex_base_build(cx, i));
	printf("\nCovers:       ");
	for (size_t i = 0; i < rsr_cryptex_path_count(cx); i++)
		printf("%s/%s", i ? ", " : "", rsr_cryptex_covered_path(cx, i));
	if (rsr_cryptex_package_count(cx)) {
		printf("\nPackages:     ");
		for (size_t i = 0; i < rsr_cryptex_package_count(cx); i++)
			printf("%s%s:%s %s", i ? ", " : "", rsr_cryptex_package_name(cx, i),
			       rsr_cryptex_package_architecture(cx, i), rsr_cryptex_package_version(cx, i));
	}
	printf("\nPrivileged:   ");
	if (!rsr_cryptex_privileged_count(cx))
		printf("none (no setuid, setgid or file-capability files)");
	for (size_t i = 0; i < rsr_cryptex_privileged_count(cx); i++) {
		unsigned mode = rsr_cryptex_privileged_mode(cx, i);
		printf("%s%s %04o%s%s%s", i ? "\n              " : "", rsr_cryptex_privileged_path(cx, i), mode,
		       mode & 04000 ? " setuid" : "", mode & 02000 ? " setgid" : "",
		       rsr_cryptex_privileged_caps(cx, i) ? " capabilities" : "");
	}
	printf("\nRoot hash:    %s\n", rsr_cryptex_root_hash_hex(cx));
	printf("Salt:         %s\n", rsr_cryptex_salt_hex(cx));
	printf("Signing key:  %s\n", rsr_cryptex_key_id_hex(cx));
	printf("Files:        %llu files, %llu directories\n", (unsigned long long)rsr_cryptex_file_count(cx),
	       (unsigned long long)rsr_cryptex_directory_count(cx));
	printf("Size:         %s (image %s at offset %llu, hash tree %s)\n", cmd_bytes(rsr_cryptex_file_size(cx), a),
	       cmd_bytes(rsr_cryptex_image_size(cx), b), (unsigned long long)rsr_cryptex_image_offset(cx),
	       cmd_bytes(rsr_cryptex_tree_size(cx), c));
	printf("Timestamp:    %llu\n", (unsigned long long)rsr_cryptex_timestamp(cx));
}

static int cryptex_info(struct cmd_env *env, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"json", no_argument, NULL, 'J'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	bool json = false, oom = false;
	json_t *all = NULL;
	int c, ret = EXIT_OK;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'J':
			json = env->json = true;
			break;
		case 'h':
			printf("Usage: rsr cryptex info FILE.cptx... [--json]\n\n"
			       "Shows what a cryptex's manifest says: name, version, base builds, covered\n"
			       "paths, root hash, salt, sizes, file count and signing key id. It checks the\n"
			       "format but not the signature or blocks: use 'rsr cryptex verify' for that.\n");
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind >= argc)
		return cmd_usage("rsr cryptex info FILE.cptx [--json]");
	if (json && argc - optind > 1 && !(all = json_array()))
		return cmd_error(env, -ENOMEM, "out of memory");
	for (int i = optind; i < argc; i++) {
		struct rsr_cryptex *cx;
		int r = rsr_cryptex_open(env->ctx, argv[i], &cx);

		if (r < 0) {
			ret = cmd_fail(env, r);
			continue;
		}
		if (all) {
			if (json_array_append_new(all, info_json(cx)) < 0) {
				ret = cmd_error(env, -ENOMEM, "%s: out of memory", argv[i]);
				oom = true;
			}
		} else if (json) {
			if (cmd_print_json(env, info_json(cx)) != EXIT_OK)
				ret = EXIT_FAIL;
		} else
			info_text(cx), fputs(i + 1 < argc ? "\n" : "", stdout);
		rsr_cryptex_free(cx);
	}
	/*
	 * A list short of an entry, lost to memory or to a file that failed,
	 * would read as complete: print none (the failure is the error object).
	 */
	if (all && !oom && ret == EXIT_OK && cmd_print_json(env, all) != EXIT_OK)
		ret = EXIT_FAIL;
	else if (all && (oom || ret != EXIT_OK))
		json_decref(all);
	return ret;
}

static int cryptex_export(struct cmd_env *env, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"ddi", required_argument, NULL, 'D'},
	    {"output", required_argument, NULL, 'o'},
	    {"key", required_argument, NULL, 'k'},
	    {"cert", required_argument, NULL, 'c'},
	    {"architecture", required_argument, NULL, 'a'},
	    {"pubkey", required_argument, NULL, 'p'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *in = NULL, *out = NULL, *key = NULL, *cert = NULL, *arch = NULL;
	char *keys[64];
	size_t nkeys = 0;
	struct rsr_keyring *ring = NULL;
	struct rsr_cryptex *cx = NULL;
	int c, r;

	while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
		switch (c) {
		case 'D':
			in = optarg;
			break;
		case 'o':
			out = optarg;
			break;
		case 'k':
			key = optarg;
			break;
		case 'c':
			cert = optarg;
			break;
		case 'a':
			arch = optarg;
			break;
		case 'p':
			if (nkeys >= 64)
				return cmd_usage_error("at most 64 --pubkey options");
			keys[nkeys++] = optarg;
			break;
		case 'h':
			printf(
			    "Usage: rsr cryptex export --ddi FILE.cptx -o OUT.raw --key VERITY.key --cert VERITY.crt\n"
			    "                          [--architecture x86-64|arm64] [--pubkey KEY.pub...]\n\n"
			    "Writes the cryptex as a Discoverable Disk Image: a GPT disk with the same EROFS\n"
			    "image as its root partition, the hash tree as its verity partition and the\n"
			    "root hash with a PKCS#7 signature as its verity signature partition, for\n"
			    "systemd-dissect and systemd-sysext. The root hash stays the cryptex's.\n\n"
			    "      --ddi FILE.cptx        the cryptex to export\n"
			    "  -o, --output OUT.raw       the image to write\n"
			    "      --key VERITY.key       private key (PEM, RSA or ECDSA) that signs the root hash\n"
			    "      --cert VERITY.crt      its X.509 certificate (PEM), which systems trust\n"
			    "      --architecture ARCH    partition types for x86-64 or arm64 (default: this build's)\n"
			    "      --pubkey KEY.pub       check the cryptex's signature first; repeatable\n\n"
			    "Every block is checked against the signed root hash first. See rsr-cryptex(1).\n");
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind != argc || !in || !out || !key || !cert)
		return cmd_usage("rsr cryptex export --ddi FILE.cptx -o OUT.raw --key VERITY.key --cert VERITY.crt");
	if (nkeys && (c = load_keyring(env, keys, nkeys, &ring)) != EXIT_OK)
		return c;
	r = rsr_cryptex_open_trusted(env->ctx, in, ring, &cx);
	if (r == 0) {
		cmd_progress_enable(env);
		r = rsr_cryptex_export_ddi(env->ctx, cx, out, arch, key, cert);
		cmd_progress_done(env);
	}
	rsr_keyring_free(ring);
	if (r < 0) {
		rsr_cryptex_free(cx);
		return cmd_fail(env, r);
	}
	if (!env->quiet)
		printf("%s: %s %s as a Discoverable Disk Image, root hash %s\n", out, rsr_cryptex_name(cx),
		       rsr_cryptex_version(cx), rsr_cryptex_root_hash_hex(cx));
	rsr_cryptex_free(cx);
	return EXIT_OK;
}

int cmd_cryptex(struct cmd_env *env, int argc, char **argv)
{
	static const struct verb verbs[] = {
	    {"build", cryptex_build, "build a signed cryptex from a directory"},
	    {"verify", cryptex_verify, "check a cryptex's signature and every block"},
	    {"info", cryptex_info, "show what a cryptex holds"},
	    {"export", cryptex_export, "write a cryptex as a Discoverable Disk Image"},
	    {NULL, NULL, NULL},
	};
	return cmd_dispatch(env, "cryptex", verbs, argc, argv);
}
