/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Patcher throughput inside one process: rsr_patch_apply() with 1..N
 * threads, ROUNDS times each, the output removed before every run; prints
 * the best time and GB/s of output. The whole command adds process start
 * (bench/patch-bench.sh measures that). Usage:
 *   apply-bench OLD PATCH OUT [MAX_THREADS] [ROUNDS]
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "rsr/common.h"
#include "rsr/patch.h"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	unsigned max_threads = argc > 4 ? (unsigned)atoi(argv[4]) : 2;
	int rounds = argc > 5 ? atoi(argv[5]) : 10;
	struct rsr_ctx *ctx;
	struct stat st;

	if (argc < 4) {
		fprintf(stderr, "usage: %s OLD PATCH OUT [MAX_THREADS] [ROUNDS]\n", argv[0]);
		return 2;
	}
	if (rsr_ctx_new(&ctx) < 0) {
		fprintf(stderr, "out of memory\n");
		return 1;
	}
	for (unsigned t = 1; t <= max_threads; t++) {
		double best = 1e9;
		rsr_ctx_set_threads(ctx, t);
		for (int i = 0; i < rounds; i++) {
			double t0;
			if (unlink(argv[3]) < 0 && errno != ENOENT) {
				perror(argv[3]);
				return 1;
			}
			t0 = now();
			if (rsr_patch_apply(ctx, argv[1], argv[2], argv[3]) < 0) {
				fprintf(stderr, "%s\n", rsr_ctx_error(ctx));
				return 1;
			}
			if (now() - t0 < best)
				best = now() - t0;
		}
		if (stat(argv[3], &st) < 0) {
			perror(argv[3]);
			return 1;
		}
		printf("apply threads=%u bytes=%llu best=%.4fs rate=%.2f GB/s\n", t, (unsigned long long)st.st_size,
		       best, (double)st.st_size / best / 1e9);
	}
	unlink(argv[3]);
	rsr_ctx_free(ctx);
	return 0;
}
