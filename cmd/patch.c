/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * rsr patch: make, apply and inspect image patches.
 */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "rsr/patch.h"

static void hex32(const uint8_t *d, char out[65])
{
	static const char digits[] = "0123456789abcdef";
	for (int i = 0; i < 32; i++) {
		out[2 * i] = digits[d[i] >> 4];
		out[2 * i + 1] = digits[d[i] & 15];
	}
	out[64] = '\0';
}

static int patch_create(struct cmd_env *env, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"output", required_argument, NULL, 'o'},
	    {"also-from", required_argument, NULL, 'a'},
	    {"reverse", required_argument, NULL, 'r'},
	    {"full", no_argument, NULL, 'f'},
	    {"threads", required_argument, NULL, 'j'},
	    {"level", required_argument, NULL, 'l'},
	    {"chunk-size", required_argument, NULL, 'c'},
	    {"no-deflate", no_argument, NULL, 'D'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct rsr_patch_create_opts o = {0};
	const char *out = NULL, *reverse = NULL, *olds[17];
	size_t n_olds = 0, n_also = 0;
	const char *also[16];
	bool full = false;
	unsigned long long n;
	unsigned threads;
	int c, r;

	while ((c = getopt_long(argc, argv, "o:a:r:fj:l:h", opts, NULL)) != -1) {
		switch (c) {
		case 'o':
			out = optarg;
			break;
		case 'a':
			if (n_also >= 15)
				return cmd_usage_error("at most 15 --also-from inputs");
			also[n_also++] = optarg;
			break;
		case 'r':
			reverse = optarg;
			break;
		case 'f':
			full = true;
			break;
		case 'j':
			if ((r = cmd_threads_option(optarg, &threads)) != EXIT_OK)
				return r;
			rsr_ctx_set_threads(env->ctx, threads);
			break;
		case 'l':
			if (!cmd_parse_uint(optarg, 22, &n) || n == 0)
				return cmd_usage_error("--level takes a number from 1 to 22");
			o.level = (unsigned)n;
			break;
		case 'c':
			if (!cmd_parse_uint(optarg, 32u << 20, &n) || n < 4096)
				return cmd_usage_error("--chunk-size takes a number of bytes from 4096 to 33554432");
			o.chunk_size = (uint32_t)n;
			break;
		case 'D':
			o.no_deflate = true;
			break;
		case 'h':
			printf("Usage: rsr patch create OLD NEW -o PATCH [--also-from OLD2]... [--reverse REV]\n"
			       "       rsr patch create --full NEW -o PATCH\n\n"
			       "Writes a patch that turns OLD (or any --also-from image) into NEW.\n\n"
			       "  -o, --output PATCH     the patch to write\n"
			       "  -a, --also-from OLD2   another accepted input (repeatable)\n"
			       "  -r, --reverse REV      also write the patch from NEW back to OLD\n"
			       "  -f, --full             a full replacement that needs no input\n"
			       "  -j, --threads N        worker threads (default: one per CPU)\n"
			       "  -l, --level N          zstd level 1..22 (default 19)\n"
			       "      --chunk-size N     output bytes per chunk (default: automatic)\n"
			       "      --no-deflate       do not re-encode gzip members\n");
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (!out)
		return cmd_usage_error("rsr patch create: -o PATCH is required");
	if (full) {
		if (argc - optind != 1 || n_also || reverse)
			return cmd_usage("rsr patch create --full NEW -o PATCH");
	} else {
		if (argc - optind != 2)
			return cmd_usage("rsr patch create OLD NEW -o PATCH [--also-from OLD2]...");
		olds[n_olds++] = argv[optind];
		for (size_t i = 0; i < n_also; i++)
			olds[n_olds++] = also[i];
		if (reverse && n_also)
			return cmd_usage_error("--reverse cannot be combined with --also-from");
	}
	cmd_progress_enable(env);
	r = rsr_patch_create(env->ctx, olds, n_olds, argv[argc - 1], out, reverse, &o);
	cmd_progress_done(env);
	if (r < 0)
		return cmd_fail(env, r);
	return EXIT_OK;
}

static int patch_apply(struct cmd_env *env, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"output", required_argument, NULL, 'o'},
	    {"threads", required_argument, NULL, 'j'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *out = NULL;
	unsigned threads;
	int c, r;

	while ((c = getopt_long(argc, argv, "o:j:h", opts, NULL)) != -1) {
		switch (c) {
		case 'o':
			out = optarg;
			break;
		case 'j':
			if ((r = cmd_threads_option(optarg, &threads)) != EXIT_OK)
				return r;
			rsr_ctx_set_threads(env->ctx, threads);
			break;
		case 'h':
			printf("Usage: rsr patch apply [OLD] PATCH -o OUT [--threads N]\n\n"
			       "Checks that OLD is an input PATCH accepts, writes the output to OUT\n"
			       "(through a temporary file, renamed into place once its digest is right)\n"
			       "and leaves an OUT that already has the right content alone.\n");
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (!out || argc - optind < 1 || argc - optind > 2)
		return cmd_usage("rsr patch apply [OLD] PATCH -o OUT");
	cmd_progress_enable(env);
	r = rsr_patch_apply(env->ctx, argc - optind == 2 ? argv[optind] : NULL, argv[argc - 1], out);
	cmd_progress_done(env);
	if (r < 0)
		return cmd_fail(env, r);
	if (!env->quiet && r == RSR_PATCH_UP_TO_DATE)
		fprintf(stderr, "rsr: %s is already up to date\n", out);
	return EXIT_OK;
}

static int patch_info(struct cmd_env *env, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"json", no_argument, NULL, 'J'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct rsr_patch *p;
	bool json = false;
	char h[65], b1[32];
	json_t *root = NULL, *inputs = NULL;
	bool jok = true;
	int c, r, ret = EXIT_OK;
	size_t n_sets;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (c == 'J') {
			json = env->json = true;
			continue;
		}
		if (c == 'h') {
			printf("Usage: rsr patch info PATCH [--json]\n\n"
			       "Shows the inputs a patch accepts, its output, its chunks and the\n"
			       "operations and bytes for each input.\n");
			return EXIT_OK;
		}
		return EXIT_USAGE;
	}
	if (argc - optind != 1)
		return cmd_usage("rsr patch info PATCH [--json]");
	r = rsr_patch_open(env->ctx, argv[optind], &p);
	if (r < 0)
		return cmd_fail(env, r);
	hex32(rsr_patch_output_digest(p), h);
	if (json) {
		root =
		    json_pack("{s:i, s:{s:I, s:s}, s:I, s:I}", "version", (json_int_t)rsr_patch_version(p), "output",
			      "size", (json_int_t)rsr_patch_output_size(p), "digest", h, "chunks",
			      (json_int_t)rsr_patch_chunk_count(p), "chunk_size", (json_int_t)rsr_patch_chunk_size(p));
		inputs = json_array();
		if (!root || !inputs) {
			rsr_patch_free(p);
			json_decref(root);
			json_decref(inputs);
			return cmd_error(env, -ENOMEM, "out of memory");
		}
		cmd_json_set(&jok, root, "full_replacement", json_boolean(rsr_patch_input_count(p) == 0));
	} else {
		printf("version:  %u\n", rsr_patch_version(p));
		printf("output:   %s  %llu bytes (%s)\n", h, (unsigned long long)rsr_patch_output_size(p),
		       cmd_bytes(rsr_patch_output_size(p), b1));
		printf("chunks:   %zu of about %s\n", rsr_patch_chunk_count(p), cmd_bytes(rsr_patch_chunk_size(p), b1));
		if (rsr_patch_input_count(p) == 0)
			printf("inputs:   none (full replacement)\n");
	}
	n_sets = rsr_patch_input_count(p) ? rsr_patch_input_count(p) : 1;
	for (size_t i = 0; i < n_sets; i++) {
		struct rsr_patch_stats st;
		r = rsr_patch_stats(env->ctx, p, i, &st);
		if (r < 0) {
			ret = cmd_fail(env, r);
			break;
		}
		if (rsr_patch_input_count(p))
			hex32(rsr_patch_input_digest(p, i), h);
		if (json) {
			json_t *o = json_pack(
			    "{s:I, s:I, s:{s:I, s:I}, s:{s:I, s:I}, s:{s:I, s:I}, s:{s:I, s:I}, s:{s:I, s:I}}",
			    "compressed_bytes", (json_int_t)st.compressed_bytes, "payload_bytes",
			    (json_int_t)st.payload_bytes, "copy", "ops", (json_int_t)st.copy_ops, "bytes",
			    (json_int_t)st.copy_bytes, "add", "ops", (json_int_t)st.add_ops, "bytes",
			    (json_int_t)st.add_bytes, "literal", "ops", (json_int_t)st.literal_ops, "bytes",
			    (json_int_t)st.literal_bytes, "deflate", "ops", (json_int_t)st.deflate_ops, "bytes",
			    (json_int_t)st.deflate_bytes, "hash", "ops", (json_int_t)st.hash_ops, "bytes",
			    (json_int_t)st.hash_bytes);
			if (o && rsr_patch_input_count(p)) {
				cmd_json_set(&jok, o, "digest", json_string(h));
				cmd_json_set(&jok, o, "size", json_integer((json_int_t)rsr_patch_input_size(p, i)));
			}
			cmd_json_push(&jok, inputs, o);
		} else {
			if (rsr_patch_input_count(p))
				printf("input %zu:  %s  %llu bytes\n", i, h,
				       (unsigned long long)rsr_patch_input_size(p, i));
			else
				printf("operations:\n");
			printf("  compressed %llu bytes, %llu bytes of operations\n",
			       (unsigned long long)st.compressed_bytes, (unsigned long long)st.payload_bytes);
			printf("  copy     %10llu ops %14llu bytes\n", (unsigned long long)st.copy_ops,
			       (unsigned long long)st.copy_bytes);
			printf("  add      %10llu ops %14llu bytes\n", (unsigned long long)st.add_ops,
			       (unsigned long long)st.add_bytes);
			printf("  literal  %10llu ops %14llu bytes\n", (unsigned long long)st.literal_ops,
			       (unsigned long long)st.literal_bytes);
			printf("  deflate  %10llu ops %14llu bytes\n", (unsigned long long)st.deflate_ops,
			       (unsigned long long)st.deflate_bytes);
			printf("  hash     %10llu ops %14llu bytes\n", (unsigned long long)st.hash_ops,
			       (unsigned long long)st.hash_bytes);
		}
	}
	rsr_patch_free(p);
	if (json) {
		if (ret != EXIT_OK) {
			json_decref(root);
			json_decref(inputs);
			return ret;
		}
		cmd_json_set(&jok, root, "inputs", inputs);
		if (!jok) {
			json_decref(root);
			return cmd_error(env, -ENOMEM, "out of memory");
		}
		return cmd_print_json(env, root) != EXIT_OK ? EXIT_FAIL : EXIT_OK;
	}
	return ret;
}

static int patch_digest(struct cmd_env *env, int argc, char **argv)
{
	static const struct option opts[] = {{"json", no_argument, NULL, 'J'}, {"help", no_argument, NULL, 'h'}, {0}};
	bool json = false;
	json_t *root = NULL;
	int c;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (c == 'J') {
			json = env->json = true;
			continue;
		}
		if (c == 'h') {
			printf("Usage: rsr patch digest FILE... [--json]\n\n"
			       "Prints the piece digest by which patches name their inputs and\n"
			       "output (SHA-256 over the SHA-256 of every 1 MiB piece, see\n"
			       "docs/formats/patch.md), one line per file as sha256sum does.\n");
			return EXIT_OK;
		}
		return EXIT_USAGE;
	}
	if (argc - optind < 1)
		return cmd_usage("rsr patch digest FILE... [--json]");
	if (json && !(root = json_object()))
		return cmd_error(env, -ENOMEM, "out of memory");
	for (int i = optind; i < argc; i++) {
		uint8_t d[32];
		char h[65];
		int r = rsr_patch_digest_file(env->ctx, argv[i], d);

		if (r < 0) {
			json_decref(root);
			return cmd_fail(env, r);
		}
		hex32(d, h);
		if (json) {
			if (json_object_set_new(root, argv[i], json_string(h)) < 0) {
				json_decref(root);
				return cmd_error(env, -ENOMEM, "out of memory");
			}
		} else
			printf("%s  %s\n", h, argv[i]);
	}
	return json ? cmd_print_json(env, root) : EXIT_OK;
}

int cmd_patch(struct cmd_env *env, int argc, char **argv)
{
	static const struct verb verbs[] = {
	    {"create", patch_create, "make a patch between images"},
	    {"apply", patch_apply, "apply a patch to an image"},
	    {"info", patch_info, "show what a patch holds"},
	    {"digest", patch_digest, "print the digest patches name an image by"},
	    {NULL, NULL, NULL},
	};
	return cmd_dispatch(env, "patch", verbs, argc, argv);
}
