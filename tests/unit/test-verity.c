/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of the dm-verity hash tree: layout, known root hashes computed
 * by `veritysetup format --no-superblock` (cryptsetup 2.6), and detection of
 * every kind of damage.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/utsname.h>

#include "internal.h"
#include "verity.h"

static const uint8_t salt[32] = {0,  1,	 2,  3,	 4,  5,	 6,  7,	 8,  9,	 10, 11, 12, 13, 14, 15,
				 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31};

/* Root hashes printed by: veritysetup format --no-superblock --salt=0001..1f
 * --data-block-size=4096 --hash-block-size=4096 DATA HASH */
static const struct {
	uint64_t blocks;
	const char *root;
} vectors[] = {
    {1, "d57dc029892030486781c8a6155a53e6e6662940cc95886a9a378f49f5301345"},
    {2, "945090169dc9ece20c3d4d6d96829be3243d37cffe47bef8192affb228cdc9cc"},
    {127, "5a88ca94865deb43c34efd01650d91d86d0543e79afb5173f3d696c1e88cebef"},
    {128, "3f8d0c5d3604fcb3fec5cd7a50b6a0ebd4212763a6c1af16fcdd3d9c97256b76"},
    {129, "43136847ee1db3fda4a54b0418b4eb9d4c756132760a8aad9109dd60ad1ff7ef"},
    {16385, "dde834fe5929cd06dd7b8b26808932dd6304c963c85e8ec87f5bdfcbcea84218"},
};

/* The same data the vectors were made from. */
static int make_data(uint64_t blocks, char *path)
{
	const size_t bs = 4096;
	uint8_t *buf = malloc(bs);
	int fd = mkstemp(path);

	assert_non_null(buf);
	assert_true(fd >= 0);
	for (uint64_t i = 0; i < blocks; i++) {
		for (uint64_t j = 0; j < bs; j++)
			buf[j] = (uint8_t)((((i * 131 + j) * UINT64_C(2654435761)) >> 13) & 0xff);
		assert_int_equal(rsr_write_all(fd, buf, bs), 0);
	}
	free(buf);
	return fd;
}

static void test_layout(void **state)
{
	struct rsr_verity_layout l;

	assert_int_equal(rsr_verity_layout(0, &l), -EINVAL);
	assert_int_equal(rsr_verity_layout(1, &l), 0);
	assert_int_equal(l.levels, 0);
	assert_int_equal(l.tree_blocks, 0);
	assert_int_equal(rsr_verity_layout(128, &l), 0);
	assert_int_equal(l.levels, 1);
	assert_int_equal(l.tree_blocks, 1);
	assert_int_equal(rsr_verity_layout(129, &l), 0);
	assert_int_equal(l.levels, 2);
	assert_int_equal(l.level_blocks[0], 2);
	assert_int_equal(l.level_blocks[1], 1);
	/* The top level comes first, the leaves last. */
	assert_int_equal(l.level_offset[1], 0);
	assert_int_equal(l.level_offset[0], 1);
	assert_int_equal(rsr_verity_layout(16385, &l), 0);
	assert_int_equal(l.levels, 3);
	assert_int_equal(l.level_blocks[0], 129);
	assert_int_equal(l.level_blocks[1], 2);
	assert_int_equal(l.level_blocks[2], 1);
	assert_int_equal(l.tree_blocks, 132);
}

static void test_vectors(void **state)
{
	struct rsr_ctx *ctx;

	assert_int_equal(rsr_ctx_new(&ctx), 0);
	for (size_t v = 0; v < ARRAY_SIZE(vectors); v++) {
		for (unsigned threads = 1; threads <= 3; threads += 2) {
			char path[] = "/tmp/rsr-verity-XXXXXX", hex[65];
			int fd = make_data(vectors[v].blocks, path);
			uint8_t *tree, root[32];

			rsr_ctx_set_threads(ctx, threads);
			assert_int_equal(rsr_verity_build(ctx, fd, 0, vectors[v].blocks, salt, 32, &tree, root), 0);
			rsr_hex_encode(root, 32, hex);
			assert_string_equal(hex, vectors[v].root);
			free(tree);
			close(fd);
			unlink(path);
		}
	}
	rsr_ctx_free(ctx);
}

static void flip(int fd, uint64_t off)
{
	uint8_t b;

	assert_int_equal(rsr_pread_all(fd, &b, 1, off), 0);
	b ^= 0x10;
	assert_int_equal(rsr_pwrite_all(fd, &b, 1, off), 0);
}

/* Data then tree in one file, as in a cryptex; damage each part and check the message. */
static void test_detects_damage(void **state)
{
	struct rsr_ctx *ctx;
	const uint64_t blocks = 16385;
	char path[] = "/tmp/rsr-verity-XXXXXX";
	int fd = make_data(blocks, path);
	uint8_t *tree, root[32];
	struct rsr_verity_layout l;
	uint64_t tree_off = blocks * 4096;

	assert_int_equal(rsr_ctx_new(&ctx), 0);
	assert_int_equal(rsr_verity_build(ctx, fd, 0, blocks, salt, 32, &tree, root), 0);
	assert_int_equal(rsr_verity_layout(blocks, &l), 0);
	assert_int_equal(rsr_pwrite_all(fd, tree, l.tree_blocks * 4096, tree_off), 0);
	free(tree);
	assert_int_equal(rsr_verity_verify(ctx, fd, 0, blocks, tree_off, salt, 32, root, "t", "t"), 0);

	/* A data block: named by its index. */
	flip(fd, 12345 * 4096 + 7);
	assert_int_equal(rsr_verity_verify(ctx, fd, 0, blocks, tree_off, salt, 32, root, "t", "t"), RSR_E_DIGEST);
	assert_non_null(strstr(rsr_ctx_error(ctx), "data block 12345 of 16385"));
	flip(fd, 12345 * 4096 + 7);

	/* A leaf hash block. */
	flip(fd, tree_off + l.level_offset[0] * 4096 + 5 * 4096 + 3);
	assert_int_equal(rsr_verity_verify(ctx, fd, 0, blocks, tree_off, salt, 32, root, "t", "t"), RSR_E_DIGEST);
	assert_non_null(strstr(rsr_ctx_error(ctx), "level 0 block 5"));
	flip(fd, tree_off + l.level_offset[0] * 4096 + 5 * 4096 + 3);

	/* Padding after the last leaf hash. */
	flip(fd, tree_off + (l.level_offset[0] + l.level_blocks[0]) * 4096 - 1);
	assert_int_equal(rsr_verity_verify(ctx, fd, 0, blocks, tree_off, salt, 32, root, "t", "t"), RSR_E_DIGEST);
	flip(fd, tree_off + (l.level_offset[0] + l.level_blocks[0]) * 4096 - 1);

	/* The top block. */
	flip(fd, tree_off + 1);
	assert_int_equal(rsr_verity_verify(ctx, fd, 0, blocks, tree_off, salt, 32, root, "t", "t"), RSR_E_DIGEST);
	assert_non_null(strstr(rsr_ctx_error(ctx), "signed root hash"));
	flip(fd, tree_off + 1);

	/* Another salt or root. */
	root[0] ^= 1;
	assert_int_equal(rsr_verity_verify(ctx, fd, 0, blocks, tree_off, salt, 32, root, "t", "t"), RSR_E_DIGEST);
	root[0] ^= 1;
	assert_int_equal(rsr_verity_verify(ctx, fd, 0, blocks, tree_off, salt, 31, root, "t", "t"), RSR_E_DIGEST);

	/* A truncated tree. */
	assert_int_equal(ftruncate(fd, (off_t)(tree_off + 4096)), 0);
	assert_int_equal(rsr_verity_verify(ctx, fd, 0, blocks, tree_off, salt, 32, root, "t", "t"), RSR_E_FORMAT);

	assert_int_equal(rsr_verity_verify(ctx, fd, 0, blocks, tree_off, salt, 32, root, "t", "t") < 0, 1);
	close(fd);
	unlink(path);
	rsr_ctx_free(ctx);
}

/* Remembers how many windows the last pass hashed in place, from its debug line. */
static void count_in_place(void *ud, enum rsr_log_level level, const char *msg)
{
	unsigned long long n, total;
	const char *p = strstr(msg, ": ");

	if (p && sscanf(p, ": %llu of %llu windows hashed in place", &n, &total) == 2)
		*(long long *)ud = (long long)n;
}

/*
 * Whether the kernel maps the first 2 MiB of fd with one huge page, asked
 * without rsr: a fresh aligned mapping is touched, and /proc/self/smaps
 * says how much of it is FilePmdMapped.
 */
static bool kernel_maps_huge(int fd)
{
	const size_t w = RSR_VIEW_WINDOW;
	uint8_t *reserve = mmap(NULL, 2 * w, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), *base;
	unsigned long start, end, kb = 0;
	bool in_vma = false;
	char line[256];
	FILE *f;

	assert_true(reserve != MAP_FAILED);
	base = (uint8_t *)(((uintptr_t)reserve + w - 1) & ~(uintptr_t)(w - 1));
	assert_true(mmap(base, w, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0) == base);
	(void)madvise(base, w, MADV_HUGEPAGE);
	(void)*(volatile uint8_t *)base;
	f = fopen("/proc/self/smaps", "re");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx-%lx ", &start, &end) == 2)
			in_vma = start == (uintptr_t)base;
		else if (in_vma && sscanf(line, "FilePmdMapped: %lu kB", &kb) == 1)
			break;
	}
	fclose(f);
	munmap(reserve, 2 * w);
	return kb > 0;
}

/* rsr asks PAGEMAP_SCAN, which Linux has from 6.7, whether a window is one huge page. */
static bool kernel_has_pagemap_scan(void)
{
	struct utsname u;
	int major = 0, minor = 0;

	return uname(&u) == 0 && sscanf(u.release, "%d.%d", &major, &minor) == 2 &&
	       (major > 6 || (major == 6 && minor >= 7));
}

/*
 * The 16385 blocks of the vectors, written at data_off in whole 2 MiB
 * windows of the file (as `rsr cryptex build` writes), then the tree after
 * them. Where the kernel has large folios for /tmp's filesystem, the page
 * cache holds each window in one huge folio and the passes hash them in
 * place; the root, the verdict and the index of a damaged block must be
 * the same as when they read.
 */
static void in_place_case(uint64_t data_off, bool expect_in_place)
{
	const uint64_t blocks = 16385, window = RSR_VIEW_WINDOW;
	uint64_t end = data_off + blocks * 4096, tree_off = (end + 4095) / 4096 * 4096;
	char path[] = "/tmp/rsr-verity-XXXXXX", hex[65];
	uint8_t *file = calloc(1, (size_t)end), *tree, root[32];
	long long in_place = -1;
	struct rsr_verity_layout l;
	struct rsr_ctx *ctx;
	int fd = mkstemp(path);

	assert_non_null(file);
	assert_true(fd >= 0);
	for (uint64_t i = 0; i < blocks; i++)
		for (uint64_t j = 0; j < 4096; j++)
			file[data_off + i * 4096 + j] =
			    (uint8_t)((((i * 131 + j) * UINT64_C(2654435761)) >> 13) & 0xff);
	for (uint64_t off = 0; off < end; off += window)
		assert_int_equal(rsr_pwrite_all(fd, file + off, (size_t)RSR_MIN(window, end - off), off), 0);
	free(file);

	assert_int_equal(rsr_ctx_new(&ctx), 0);
	rsr_ctx_set_log(ctx, count_in_place, &in_place);
	rsr_ctx_set_log_level(ctx, RSR_LOG_DEBUG);
	rsr_ctx_set_threads(ctx, 2);
	assert_int_equal(rsr_verity_build(ctx, fd, data_off, blocks, salt, 32, &tree, root), 0);
	rsr_hex_encode(root, 32, hex);
	assert_string_equal(hex, vectors[ARRAY_SIZE(vectors) - 1].root);
	assert_true(in_place >= 0);
	if (expect_in_place && in_place == 0) {
		/* Nothing hashed in place is right only where the kernel cannot map the file in huge pages. */
		assert_false(kernel_has_pagemap_scan() && kernel_maps_huge(fd));
		fprintf(stderr,
			"SKIP: the page cache holds %s in small folios (this kernel has no large folios "
			"for /tmp's filesystem, or no PAGEMAP_SCAN): nothing was hashed in place\n",
			path);
		close(fd);
		unlink(path);
		free(tree);
		rsr_ctx_free(ctx);
		skip();
	}
	if (!expect_in_place)
		assert_int_equal(in_place, 0);
	assert_int_equal(rsr_verity_layout(blocks, &l), 0);
	assert_int_equal(rsr_pwrite_all(fd, tree, l.tree_blocks * 4096, tree_off), 0);
	free(tree);

	in_place = -1;
	assert_int_equal(rsr_verity_verify(ctx, fd, data_off, blocks, tree_off, salt, 32, root, "t", "t"), 0);
	assert_true(expect_in_place ? in_place > 0 : in_place == 0);
	/* Damage in the first window (shared with whatever precedes the data) and in a later one. */
	const uint64_t bad[] = {3, 12345};
	for (size_t k = 0; k < ARRAY_SIZE(bad); k++) {
		char want[64];

		flip(fd, data_off + bad[k] * 4096 + 7);
		in_place = -1;
		assert_int_equal(rsr_verity_verify(ctx, fd, data_off, blocks, tree_off, salt, 32, root, "t", "t"),
				 RSR_E_DIGEST);
		snprintf(want, sizeof(want), "data block %llu of 16385", (unsigned long long)bad[k]);
		assert_non_null(strstr(rsr_ctx_error(ctx), want));
		flip(fd, data_off + bad[k] * 4096 + 7);
	}
	assert_int_equal(rsr_verity_verify(ctx, fd, data_off, blocks, tree_off, salt, 32, root, "t", "t"), 0);
	close(fd);
	unlink(path);
	rsr_ctx_free(ctx);
}

static void test_in_place(void **state)
{
	in_place_case(0, true);
}

/* As a cryptex: one 4 KiB page before the data, so the first work item is short. */
static void test_in_place_offset(void **state)
{
	in_place_case(4096, true);
}

/* Blocks that straddle pages are always read. */
static void test_unaligned_offset(void **state)
{
	in_place_case(100, false);
}

static int cancel_cb(void *ud, const char *what, uint64_t done, uint64_t total)
{
	return done > total / 2;
}

static void test_cancel(void **state)
{
	struct rsr_ctx *ctx;
	char path[] = "/tmp/rsr-verity-XXXXXX";
	int fd = make_data(2048, path);
	uint8_t *tree = NULL, root[32];

	assert_int_equal(rsr_ctx_new(&ctx), 0);
	rsr_ctx_set_progress(ctx, cancel_cb, NULL);
	assert_int_equal(rsr_verity_build(ctx, fd, 0, 2048, salt, 32, &tree, root), RSR_E_CANCELED);
	assert_null(tree);
	close(fd);
	unlink(path);
	rsr_ctx_free(ctx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_layout),	    cmocka_unit_test(test_vectors),
	    cmocka_unit_test(test_detects_damage),  cmocka_unit_test(test_in_place),
	    cmocka_unit_test(test_in_place_offset), cmocka_unit_test(test_unaligned_offset),
	    cmocka_unit_test(test_cancel),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
