/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Hash-tree throughput: builds the dm-verity tree of a file with 1..N
 * threads and prints MB/s, for comparison with `openssl speed -evp sha256
 * -bytes 4096`. Usage: verity-bench FILE [MAX_THREADS] [ROUNDS]
 */
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>

#include "internal.h"
#include "rsr/cryptex.h"
#include "verity.h"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	struct rsr_ctx *ctx;
	struct stat st;
	uint8_t salt[32] = {1}, root[32];
	unsigned max_threads = argc > 2 ? (unsigned)atoi(argv[2]) : 2;
	int rounds = argc > 3 ? atoi(argv[3]) : 5;
	int fd;

	if (argc < 2) {
		fprintf(stderr, "usage: %s FILE [MAX_THREADS] [ROUNDS]\n", argv[0]);
		return 2;
	}
	fd = open(argv[1], O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0 || rsr_ctx_new(&ctx) < 0) {
		perror(argv[1]);
		return 1;
	}
	uint64_t blocks = (uint64_t)st.st_size / 4096;
	for (unsigned t = 1; t <= max_threads; t++) {
		double best = 1e9;
		rsr_ctx_set_threads(ctx, t);
		for (int i = 0; i < rounds; i++) {
			uint8_t *tree;
			double t0 = now();
			if (rsr_verity_build(ctx, fd, 0, blocks, salt, sizeof(salt), &tree, root) < 0) {
				fprintf(stderr, "%s\n", rsr_ctx_error(ctx));
				return 1;
			}
			double dt = now() - t0;
			free(tree);
			if (dt < best)
				best = dt;
		}
		printf("build  threads=%u bytes=%llu best=%.4fs rate=%.0f MB/s\n", t,
		       (unsigned long long)(blocks * 4096), best, (double)blocks * 4096 / best / 1e6);
	}
	/* Verification of a real cryptex file: tree top-down, then every block. */
	struct rsr_cryptex *cx;
	if (rsr_cryptex_open(ctx, argv[1], &cx) < 0)
		goto out;
	for (unsigned t = 1; t <= max_threads; t++) {
		double best = 1e9;
		rsr_ctx_set_threads(ctx, t);
		for (int i = 0; i < rounds; i++) {
			double t0 = now();
			if (rsr_cryptex_verify_blocks(ctx, cx) < 0) {
				fprintf(stderr, "%s\n", rsr_ctx_error(ctx));
				return 1;
			}
			double dt = now() - t0;
			if (dt < best)
				best = dt;
		}
		printf("verify threads=%u bytes=%llu best=%.4fs rate=%.0f MB/s\n", t,
		       (unsigned long long)rsr_cryptex_image_size(cx), best,
		       (double)rsr_cryptex_image_size(cx) / best / 1e6);
	}
	rsr_cryptex_free(cx);
out:
	rsr_ctx_free(ctx);
	close(fd);
	return 0;
}
