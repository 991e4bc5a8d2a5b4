/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Runs a fuzz target over every file of its corpus directory without
 * libFuzzer, so that the normal test suite (and its sanitizer build) replays
 * the corpus. Usage: fuzz-regress [DIR]; default RSR_FUZZ_CORPUS.
 */
#include <dirent.h>
#include <stdio.h>

#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : RSR_FUZZ_CORPUS;
	struct rsr_ctx *ctx;
	struct dirent *e;
	DIR *d = opendir(dir);
	int n = 0;

	if (!d) {
		fprintf(stderr, "%s: cannot open the corpus\n", dir);
		return 1;
	}
	if (rsr_ctx_new(&ctx) < 0)
		return 1;
	while ((e = readdir(d))) {
		char path[4096];
		char *buf;
		size_t len;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (rsr_read_file(ctx, path, 64u << 20, &buf, &len) < 0) {
			fprintf(stderr, "%s\n", rsr_ctx_error(ctx));
			return 1;
		}
		LLVMFuzzerTestOneInput((const uint8_t *)buf, len);
		free(buf);
		n++;
	}
	closedir(d);
	rsr_ctx_free(ctx);
	printf("%d inputs of %s replayed\n", n, dir);
	return n > 0 ? 0 : 1;
}
