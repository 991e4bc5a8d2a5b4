/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of image patches: the checked-in vectors, round trips of
 * generated images, two-input and full-replacement patches, every kind of
 * corruption (which must fail cleanly and leave no file), cancellation, and
 * the bit-exact deflate re-encoder.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "../../lib/patch/format.h"
#include "rsr/patch.h"

#define DATA RSR_TEST_DATA "/patch"

static char tmpdir[64];

static int setup(void **state)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/rsr-patch-XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
	DIR *d = opendir(tmpdir);
	struct dirent *e;
	char p[512];

	while (d && (e = readdir(d)))
		if (e->d_name[0] != '.' || (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))) {
			snprintf(p, sizeof(p), "%s/%s", tmpdir, e->d_name);
			unlink(p);
		}
	if (d)
		closedir(d);
	rmdir(tmpdir);
	return 0;
}

static const char *tpath(const char *name)
{
	static char bufs[16][512];
	static int n;
	char *b = bufs[n++ % 16];
	snprintf(b, 512, "%s/%s", tmpdir, name);
	return b;
}

static void write_file(const char *path, const void *buf, size_t len)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(buf, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

static uint8_t *read_all(const char *path, size_t *len)
{
	struct rsr_ctx *ctx;
	char *buf;

	assert_int_equal(rsr_ctx_new(&ctx), 0);
	assert_int_equal(rsr_read_file(ctx, path, 1u << 30, &buf, len), 0);
	rsr_ctx_free(ctx);
	return (uint8_t *)buf;
}

static bool same_file(const char *a, const char *b)
{
	size_t la, lb;
	uint8_t *x = read_all(a, &la), *y = read_all(b, &lb);
	bool same = la == lb && memcmp(x, y, la) == 0;
	free(x);
	free(y);
	return same;
}

/* Number of entries in the scratch directory (temporary files included). */
static int count_files(void)
{
	DIR *d = opendir(tmpdir);
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

static void test_vectors(void **state)
{
	struct rsr_ctx *ctx;

	assert_int_equal(rsr_ctx_new(&ctx), 0);
	assert_int_equal(rsr_patch_apply(ctx, DATA "/old.img", DATA "/v2-delta.rsrp", tpath("out")), RSR_PATCH_APPLIED);
	assert_true(same_file(tpath("out"), DATA "/new.img"));
	unlink(tpath("out"));
	assert_int_equal(rsr_patch_apply(ctx, NULL, DATA "/v2-full.rsrp", tpath("out")), RSR_PATCH_APPLIED);
	assert_true(same_file(tpath("out"), DATA "/new.img"));
	unlink(tpath("out"));
	/* A two-input patch, from each input. */
	assert_int_equal(rsr_patch_apply(ctx, DATA "/old.img", DATA "/v2-two.rsrp", tpath("out")), RSR_PATCH_APPLIED);
	assert_true(same_file(tpath("out"), DATA "/new.img"));
	unlink(tpath("out"));
	assert_int_equal(rsr_patch_apply(ctx, DATA "/old2.img", DATA "/v2-two.rsrp", tpath("out")), RSR_PATCH_APPLIED);
	assert_true(same_file(tpath("out"), DATA "/new.img"));
	/* Already correct: left alone. */
	assert_int_equal(rsr_patch_apply(ctx, DATA "/old2.img", DATA "/v2-two.rsrp", tpath("out")),
			 RSR_PATCH_UP_TO_DATE);
	unlink(tpath("out"));
	/* A full replacement takes no input, a delta needs one. */
	assert_int_equal(rsr_patch_apply(ctx, DATA "/old.img", DATA "/v2-full.rsrp", tpath("out")), -EINVAL);
	assert_int_equal(rsr_patch_apply(ctx, NULL, DATA "/v2-delta.rsrp", tpath("out")), RSR_E_MISMATCH);
	assert_int_equal(count_files(), 0);
	rsr_ctx_free(ctx);
}

static void test_stats(void **state)
{
	struct rsr_ctx *ctx;
	struct rsr_patch *p;
	struct rsr_patch_stats st;

	assert_int_equal(rsr_ctx_new(&ctx), 0);
	assert_int_equal(rsr_patch_open(ctx, DATA "/v2-delta.rsrp", &p), 0);
	assert_int_equal(rsr_patch_input_count(p), 1);
	assert_int_equal(rsr_patch_output_size(p), 40960);
	assert_int_equal(rsr_patch_chunk_count(p), 5);
	assert_int_equal(rsr_patch_stats(ctx, p, 0, &st), 0);
	assert_int_equal(st.deflate_ops, 1);
	/* Every output byte is counted once. */
	assert_int_equal(st.copy_bytes + st.add_bytes + st.literal_bytes + st.deflate_bytes + st.hash_bytes, 40960);
	assert_int_equal(rsr_patch_stats(ctx, p, 1, &st), -EINVAL);
	rsr_patch_free(p);
	rsr_ctx_free(ctx);
}

/* Deterministic pseudo-random bytes. */
static uint64_t rng_state;
static uint8_t rnd8(void)
{
	rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
	return (uint8_t)(rng_state >> 56);
}

/* Applies tpath("p") to "a" and "r" to "b" and checks that they give "b" and "a". */
static void apply_both_ways(struct rsr_ctx *ctx)
{
	assert_int_equal(rsr_patch_apply(ctx, tpath("a"), tpath("p"), tpath("out")), RSR_PATCH_APPLIED);
	assert_true(same_file(tpath("out"), tpath("b")));
	unlink(tpath("out"));
	assert_int_equal(rsr_patch_apply(ctx, tpath("b"), tpath("r"), tpath("out")), RSR_PATCH_APPLIED);
	assert_true(same_file(tpath("out"), tpath("a")));
	unlink(tpath("out"));
}

static void remove_pair(void)
{
	static const char *const names[] = {"p", "r", "a", "b"};
	for (size_t i = 0; i < ARRAY_SIZE(names); i++)
		unlink(tpath(names[i]));
}

static void roundtrip(size_t old_len, size_t new_len, uint32_t chunk, unsigned threads)
{
	struct rsr_ctx *ctx;
	struct rsr_patch_create_opts o = {.level = 3, .chunk_size = chunk};
	uint8_t *a = malloc(old_len + 1), *b = malloc(new_len + 1);
	const char *olds[1] = {tpath("a")};

	for (size_t i = 0; i < old_len; i++)
		a[i] = (i / 4096) % 3 == 0 ? 0 : rnd8();
	for (size_t i = 0; i < new_len; i++) {
		size_t src = (i + 4096 + 7) % (old_len ? old_len : 1);
		b[i] = old_len && i % 5000 < 4000 ? a[src] : rnd8();
		if (old_len && i % 700 == 0)
			b[i] += 3;
	}
	write_file(tpath("a"), a, old_len);
	write_file(tpath("b"), b, new_len);
	assert_int_equal(rsr_ctx_new(&ctx), 0);
	rsr_ctx_set_threads(ctx, threads);
	if (rsr_patch_create(ctx, olds, 1, tpath("b"), tpath("p"), tpath("r"), &o) != 0)
		fail_msg("create: %s", rsr_ctx_error(ctx));
	apply_both_ways(ctx);
	rsr_ctx_free(ctx);
	free(a);
	free(b);
	remove_pair();
}

static void test_roundtrip(void **state)
{
	rng_state = 42;
	roundtrip(100000, 120000, 16384, 2);
	roundtrip(4096 * 10, 4096 * 10 - 17, 4096, 1);
	roundtrip(0, 5000, 4096, 2);
	roundtrip(5000, 0, 4096, 2);
	roundtrip(1, 1, 4096, 1);
	roundtrip(300000, 300000, 65536, 3);
}

/*
 * Images of several 1 MiB pieces, mostly unchanged at the same offsets (the
 * patcher then takes an output piece's digest from the input piece it
 * equals), with chunk boundaries inside pieces, chunks smaller than a piece,
 * and inputs longer than the output (pieces only hashed) and shorter. The
 * output must be right and its digest the documented one, and a bit flipped
 * in any part of the input, also past the output's end, must be refused.
 */
static void pieces_case(size_t old_len, size_t new_len, uint32_t chunk, unsigned threads)
{
	struct rsr_ctx *ctx;
	struct rsr_patch_create_opts o = {.level = 1, .chunk_size = chunk};
	uint8_t *a = malloc(old_len), *b = malloc(new_len);
	const char *olds[1] = {tpath("a")};
	struct rsr_patch *p;
	uint8_t d[32];
	size_t flips[3] = {0, old_len / 2, old_len - 1};

	for (size_t i = 0; i < old_len; i++)
		a[i] = (i / 4096) % 5 ? rnd8() : 0;
	for (size_t i = 0; i < new_len; i++)
		b[i] = i < old_len ? a[i] : rnd8();
	for (size_t i = 1500000; i + 64 < new_len; i += 2500000)
		memset(b + i, 0x5a, 64); /* a change in every third piece or so */
	write_file(tpath("a"), a, old_len);
	write_file(tpath("b"), b, new_len);
	assert_int_equal(rsr_ctx_new(&ctx), 0);
	rsr_ctx_set_threads(ctx, threads);
	if (rsr_patch_create(ctx, olds, 1, tpath("b"), tpath("p"), tpath("r"), &o) != 0)
		fail_msg("create: %s", rsr_ctx_error(ctx));
	apply_both_ways(ctx);
	assert_int_equal(rsr_patch_open(ctx, tpath("p"), &p), 0);
	assert_int_equal(rsr_patch_digest_file(ctx, tpath("b"), d), 0);
	assert_memory_equal(d, rsr_patch_output_digest(p), 32);
	assert_int_equal(rsr_patch_digest_file(ctx, tpath("a"), d), 0);
	assert_memory_equal(d, rsr_patch_input_digest(p, 0), 32);
	rsr_patch_free(p);
	for (size_t k = 0; k < ARRAY_SIZE(flips); k++) {
		a[flips[k]] ^= 0x10;
		write_file(tpath("a"), a, old_len);
		assert_int_equal(rsr_patch_apply(ctx, tpath("a"), tpath("p"), tpath("out")), RSR_E_MISMATCH);
		assert_int_equal(count_files(), 4); /* a, b, p, r: no output, no temporary file */
		a[flips[k]] ^= 0x10;
	}
	rsr_ctx_free(ctx);
	free(a);
	free(b);
	remove_pair();
}

static void test_pieces(void **state)
{
	rng_state = 7;
	pieces_case((5u << 20) + 12345, (3u << 20) + 999, 393216, 2);
	pieces_case((3u << 20) + 999, (5u << 20) + 12345, 393216, 3);
	pieces_case(6u << 20, 6u << 20, 1536u << 10, 1);
	pieces_case((4u << 20) + 1, (4u << 20) + 1, 0, 2);
}

/*
 * An image with a two-level hash tree over its data (top level first, as
 * dm-verity stores it) and its salt in hex: the patch must compute the changed
 * entries instead of carrying them, also across chunks.
 */
static size_t tree_image(uint8_t *img, const uint8_t *data, size_t nblocks, const uint8_t salt[32])
{
	size_t data_len = nblocks * 4096, lvl0, n0 = (nblocks * 32 + 4095) / 4096, top, off;
	char hex[65];

	memcpy(img, data, data_len);
	/* level 1 (one block) first, then level 0 */
	top = data_len;
	lvl0 = top + 4096;
	memset(img + top, 0, 4096 * (1 + n0));
	for (size_t b = 0; b < nblocks; b++) {
		uint8_t buf[32 + 4096];
		memcpy(buf, salt, 32);
		memcpy(buf + 32, data + b * 4096, 4096);
		rsr_sha256(buf, sizeof(buf), img + lvl0 + 32 * b);
	}
	for (size_t b = 0; b < n0; b++) {
		uint8_t buf[32 + 4096];
		memcpy(buf, salt, 32);
		memcpy(buf + 32, img + lvl0 + 4096 * b, 4096);
		rsr_sha256(buf, sizeof(buf), img + top + 32 * b);
	}
	off = lvl0 + 4096 * n0;
	rsr_hex_encode(salt, 32, hex);
	off += (size_t)sprintf((char *)img + off, "{\"salt\":\"%s\"}", hex);
	return off;
}

static void test_hash_tree(void **state)
{
	struct rsr_ctx *ctx;
	const size_t nblocks = 300;
	uint8_t *data = malloc(nblocks * 4096), *a = malloc(nblocks * 4096 + 8 * 4096),
		*b = malloc(nblocks * 4096 + 8 * 4096), salt[32];
	size_t la, lb;
	char a_path[512];
	const char *olds[1];
	struct rsr_patch *p;
	struct rsr_patch_stats st;
	struct rsr_patch_create_opts o = {.level = 3, .chunk_size = 65536};

	rng_state = 99;
	for (size_t i = 0; i < nblocks * 4096; i++)
		data[i] = rnd8();
	memset(salt, 0x5a, 32);
	la = tree_image(a, data, nblocks, salt);
	for (size_t k = 0; k < 40; k++)
		data[k * 30011 % (nblocks * 4096)] ^= 0x11;
	lb = tree_image(b, data, nblocks, salt);
	write_file(tpath("a"), a, la);
	write_file(tpath("b"), b, lb);
	snprintf(a_path, sizeof(a_path), "%s", tpath("a"));
	olds[0] = a_path;
	assert_int_equal(rsr_ctx_new(&ctx), 0);
	for (int threads = 1; threads <= 2; threads++) {
		rsr_ctx_set_threads(ctx, (unsigned)threads);
		assert_int_equal(rsr_patch_create(ctx, olds, 1, tpath("b"), tpath("p"), NULL, &o), 0);
		/* Reproducible: the same patch whatever the number of threads. */
		if (threads == 1)
			assert_int_equal(rename(tpath("p"), tpath("p1")), 0);
		else
			assert_true(same_file(tpath("p"), tpath("p1")));
		if (threads == 1)
			assert_int_equal(rsr_patch_create(ctx, olds, 1, tpath("b"), tpath("p"), NULL, &o), 0);
		assert_int_equal(rsr_patch_open(ctx, tpath("p"), &p), 0);
		assert_true(rsr_patch_chunk_count(p) > 10);
		assert_int_equal(rsr_patch_stats(ctx, p, 0, &st), 0);
		assert_true(st.hash_ops > 0);
		assert_true(st.hash_bytes >= 40 * 32);
		rsr_patch_free(p);
		assert_int_equal(rsr_patch_apply(ctx, tpath("a"), tpath("p"), tpath("out")), RSR_PATCH_APPLIED);
		assert_true(same_file(tpath("out"), tpath("b")));
		unlink(tpath("out"));
	}
	/* One chunk: the sources are in the chunk itself. */
	o.chunk_size = 4u << 20;
	assert_int_equal(rsr_patch_create(ctx, olds, 1, tpath("b"), tpath("p"), NULL, &o), 0);
	assert_int_equal(rsr_patch_apply(ctx, tpath("a"), tpath("p"), tpath("out")), RSR_PATCH_APPLIED);
	assert_true(same_file(tpath("out"), tpath("b")));
	rsr_ctx_free(ctx);
	free(data);
	free(a);
	free(b);
}

/* An input of the right size but the wrong content, found while the output is already being made. */
static void test_wrong_input_same_size(void **state)
{
	struct rsr_ctx *ctx;
	const size_t len = 6u << 20;
	uint8_t *a = malloc(len), *b = malloc(len);
	char a_path[512];
	const char *olds[1] = {a_path};
	struct rsr_patch_create_opts o = {.level = 1};

	rng_state = 5;
	for (size_t i = 0; i < len; i++)
		a[i] = (i / 4096) % 7 ? rnd8() : 0;
	memcpy(b, a, len);
	for (size_t i = 0; i < len; i += 100000)
		b[i] ^= 0xff;
	snprintf(a_path, sizeof(a_path), "%s", tpath("a"));
	write_file(a_path, a, len);
	write_file(tpath("b"), b, len);
	assert_int_equal(rsr_ctx_new(&ctx), 0);
	rsr_ctx_set_threads(ctx, 2);
	assert_int_equal(rsr_patch_create(ctx, olds, 1, tpath("b"), tpath("p"), NULL, &o), 0);
	a[len / 2] ^= 1; /* same size, one bit off */
	write_file(tpath("c"), a, len);
	assert_int_equal(rsr_patch_apply(ctx, tpath("c"), tpath("p"), tpath("out")), RSR_E_MISMATCH);
	assert_non_null(strstr(rsr_ctx_error(ctx), "has digest"));
	assert_int_equal(count_files(), 4); /* a, b, c, p: no output, no temporary file */
	assert_int_equal(rsr_patch_apply(ctx, a_path, tpath("p"), tpath("out")), RSR_PATCH_APPLIED);
	assert_true(same_file(tpath("out"), tpath("b")));
	rsr_ctx_free(ctx);
	free(a);
	free(b);
}

static void test_create_errors(void **state)
{
	struct rsr_ctx *ctx;
	const char *two[2] = {DATA "/old.img", DATA "/old.img"};
	struct rsr_patch_create_opts o = {.level = 30};

	assert_int_equal(rsr_ctx_new(&ctx), 0);
	assert_int_equal(rsr_patch_create(ctx, two, 2, DATA "/new.img", tpath("p"), NULL, NULL), -EINVAL);
	assert_int_equal(rsr_patch_create(ctx, two, 1, DATA "/new.img", tpath("p"), NULL, &o), -EINVAL);
	assert_int_equal(rsr_patch_create(ctx, two, 1, DATA "/missing.img", tpath("p"), NULL, NULL), -ENOENT);
	assert_int_equal(rsr_patch_create(ctx, two, 2, DATA "/new.img", tpath("p"), tpath("r"), NULL), -EINVAL);
	assert_int_equal(count_files(), 0);
	rsr_ctx_free(ctx);
}

/* Applies a damaged copy of v2-delta; it must fail with `want` and leave nothing behind. */
static void expect_broken(struct rsr_ctx *ctx, const uint8_t *buf, size_t len, int want)
{
	int r;

	write_file(tpath("bad.rsrp"), buf, len);
	r = rsr_patch_apply(ctx, DATA "/old.img", tpath("bad.rsrp"), tpath("out"));
	if (r != want)
		fail_msg("damaged patch: got %d (%s), expected %d", r, rsr_ctx_error(ctx), want);
	assert_true(strlen(rsr_ctx_error(ctx)) > 10);
	unlink(tpath("bad.rsrp"));
	assert_int_equal(count_files(), 0);
}

static void test_corruption(void **state)
{
	struct rsr_ctx *ctx;
	size_t len;
	uint8_t *orig = read_all(DATA "/v2-delta.rsrp", &len), *buf = malloc(len);

	assert_int_equal(rsr_ctx_new(&ctx), 0);

	/* A flipped bit anywhere: header, tables, chunk data. */
	for (size_t i = 0; i < len; i++) {
		memcpy(buf, orig, len);
		buf[i] ^= (uint8_t)(1u << (i % 8));
		expect_broken(ctx, buf, len, RSR_E_FORMAT);
		if (i >= 16 && !strstr(rsr_ctx_error(ctx), "corrupt"))
			fail_msg("byte %zu: %s", i, rsr_ctx_error(ctx));
	}
	/* Truncation. */
	for (size_t l = 0; l < len; l += (l < 200 ? 1 : 37))
		expect_broken(ctx, orig, l, l == 0 ? RSR_E_FORMAT : RSR_E_FORMAT);
	/* A wrong output digest, with the patch digest made to match. */
	memcpy(buf, orig, len);
	buf[offsetof(struct patch_header, output_digest)] ^= 1;
	{
		struct patch_header *h = (struct patch_header *)buf;
		uint8_t d[32];
		struct patch_piece rest = {buf + sizeof(*h), len - sizeof(*h)};
		patch_digest(h, &rest, 1, d);
		memcpy(h->patch_sha256, d, 32);
	}
	expect_broken(ctx, buf, len, RSR_E_DIGEST);
	assert_non_null(strstr(rsr_ctx_error(ctx), "output digest"));
	/* A wrong input names both digests. */
	{
		int r = rsr_patch_apply(ctx, DATA "/old2.img", DATA "/v2-delta.rsrp", tpath("out"));
		assert_int_equal(r, RSR_E_MISMATCH);
		assert_non_null(strstr(rsr_ctx_error(ctx), "06f4e34c088e4543"));
		assert_non_null(strstr(rsr_ctx_error(ctx), "57173f6c1afece47"));
		assert_int_equal(count_files(), 0);
	}
	free(buf);
	free(orig);
	rsr_ctx_free(ctx);
}

static int cancel_cb(void *data, const char *what, uint64_t done, uint64_t total)
{
	int *calls = data;
	return ++*calls >= 2;
}

static void test_cancel(void **state)
{
	struct rsr_ctx *ctx;
	int calls = 0;

	assert_int_equal(rsr_ctx_new(&ctx), 0);
	rsr_ctx_set_threads(ctx, 2);
	rsr_ctx_set_progress(ctx, cancel_cb, &calls);
	assert_int_equal(rsr_patch_apply(ctx, DATA "/old.img", DATA "/v2-delta.rsrp", tpath("out")), RSR_E_CANCELED);
	assert_int_equal(count_files(), 0);
	rsr_ctx_free(ctx);
}

static void test_deflate(void **state)
{
	size_t len, hl, used;
	uint8_t *img = read_all(DATA "/new.img", &len), *out;
	struct buf tok = {0};
	size_t off = 0;

	/* The gzip member sits on a block boundary after the code and text blocks. */
	for (off = 0; off < len && !gzip_header_len(img + off, len - off); off += 4096)
		;
	assert_true(off < len);
	hl = gzip_header_len(img + off, len - off);
	assert_int_equal(hl, 10);
	assert_int_equal(deflate_decode(img + off + hl, len - off - hl, 1u << 20, &tok, &used), 0);
	out = malloc(used);
	assert_int_equal(deflate_encode(tok.p, tok.len, out, used), 0);
	assert_memory_equal(out, img + off + hl, used);
	/* One byte too few or too many is refused. */
	assert_int_equal(deflate_encode(tok.p, tok.len, out, used - 1), RSR_E_FORMAT);
	/* Damaged tokens never write out of bounds (ASan checks) and mostly fail. */
	rng_state = 7;
	for (int i = 0; i < 2000; i++) {
		uint8_t *t = malloc(tok.len);
		memcpy(t, tok.p, tok.len);
		t[rnd8() * 256u % tok.len] ^= (uint8_t)(1 + rnd8() % 255);
		(void)deflate_encode(t, tok.len, out, used);
		free(t);
	}
	/* Garbage is not a deflate stream. */
	assert_int_equal(deflate_decode((const uint8_t *)"\xff\xff\xff\xff", 4, 1024, &tok, &used), RSR_E_FORMAT);
	buf_free(&tok);
	free(out);
	free(img);
}

/*
 * A patch whose header declares `chunks` chunks of 64 MiB, all pointing at
 * one empty frame: valid tables, an enormous declared output.
 */
static void write_enormous(const char *path, uint32_t chunks)
{
	size_t len = sizeof(struct patch_header) + sizeof(struct patch_input) +
		     (size_t)chunks * (sizeof(struct patch_extent) + sizeof(struct patch_chunk));
	uint8_t *buf = calloc(1, len);
	struct patch_header *h = (struct patch_header *)buf;
	struct patch_input *in = (struct patch_input *)(h + 1);
	struct patch_extent *ext = (struct patch_extent *)(in + 1);
	struct patch_piece rest = {buf + sizeof(*h), len - sizeof(*h)};
	struct stat st;
	struct rsr_ctx *ctx;

	assert_non_null(buf);
	memcpy(h->magic, PATCH_MAGIC, 8);
	rsr_put_le32(h->version, PATCH_VERSION);
	rsr_put_le32(h->header_size, sizeof(*h));
	rsr_put_le64(h->output_size, (uint64_t)chunks * PATCH_MAX_CHUNK_OUT);
	rsr_put_le32(h->n_inputs, 1);
	rsr_put_le32(h->n_chunks, chunks);
	rsr_put_le32(h->chunk_size, PATCH_MAX_CHUNK_OUT);
	assert_int_equal(rsr_ctx_new(&ctx), 0);
	assert_int_equal(rsr_patch_digest_file(ctx, DATA "/old.img", in->digest), 0);
	rsr_ctx_free(ctx);
	assert_int_equal(stat(DATA "/old.img", &st), 0);
	rsr_put_le64(in->size, (uint64_t)st.st_size);
	for (uint32_t c = 0; c < chunks; c++) {
		rsr_put_le64(ext[c].out_offset, (uint64_t)c * PATCH_MAX_CHUNK_OUT);
		rsr_put_le32(ext[c].out_size, PATCH_MAX_CHUNK_OUT);
	}
	assert_int_equal(patch_digest(h, &rest, 1, h->patch_sha256), 0);
	write_file(path, buf, len);
	free(buf);
}

/*
 * A header that declares more output than readers accept is refused when the
 * patch is opened; one within the limit that the output's filesystem cannot
 * hold is refused before the output is sized, and neither allocates by what
 * it declares.
 */
static void test_enormous(void **state)
{
	struct rsr_ctx *ctx;
	struct rsr_patch *p = NULL;
	struct statvfs vfs;
	struct rusage ru0, ru1;
	const uint32_t over = (uint32_t)(PATCH_MAX_OUTPUT / PATCH_MAX_CHUNK_OUT) + 1;
	const uint32_t under = (uint32_t)(PATCH_MAX_OUTPUT / PATCH_MAX_CHUNK_OUT) - 1;

	assert_int_equal(rsr_ctx_new(&ctx), 0);
	rsr_ctx_set_threads(ctx, 2);
	write_enormous(tpath("over.rsrp"), over);
	assert_int_equal(rsr_patch_open(ctx, tpath("over.rsrp"), &p), RSR_E_LIMIT);
	assert_null(p);
	assert_non_null(strstr(rsr_ctx_error(ctx), "declares an output of 274945015808 bytes"));
	assert_int_equal(rsr_patch_apply(ctx, DATA "/old.img", tpath("over.rsrp"), tpath("out")), RSR_E_LIMIT);
	unlink(tpath("over.rsrp"));

	write_enormous(tpath("under.rsrp"), under);
	assert_int_equal(rsr_patch_open(ctx, tpath("under.rsrp"), &p), 0);
	rsr_patch_free(p);
	assert_int_equal(statvfs(tmpdir, &vfs), 0);
	if ((uint64_t)vfs.f_bfree * vfs.f_frsize < (uint64_t)under * PATCH_MAX_CHUNK_OUT) {
		assert_int_equal(getrusage(RUSAGE_SELF, &ru0), 0);
		assert_int_equal(rsr_patch_apply(ctx, DATA "/old.img", tpath("under.rsrp"), tpath("out")), -ENOSPC);
		assert_int_equal(getrusage(RUSAGE_SELF, &ru1), 0);
		assert_non_null(strstr(rsr_ctx_error(ctx), "its output of 274810798080 bytes does not fit"));
		assert_non_null(strstr(rsr_ctx_error(ctx), "No space left on device"));
		assert_true(ru1.ru_maxrss - ru0.ru_maxrss < 64 * 1024); /* KiB */
	} else {
		print_message("%s has more than 256 GiB free: the free-space check is not run\n", tmpdir);
	}
	unlink(tpath("under.rsrp"));
	assert_int_equal(count_files(), 0);
	rsr_ctx_free(ctx);
}

/* Touches the input while the patch is applied. */
static int touch_cb(void *data, const char *what, uint64_t done, uint64_t total)
{
	(void)what;
	(void)done;
	(void)total;
	return utimensat(AT_FDCWD, data, NULL, 0) < 0 ? -1 : 0;
}

/* An input written while the patch runs (its ctime moves) is refused. */
static void test_input_changed(void **state)
{
	struct rsr_ctx *ctx;
	size_t len;
	uint8_t *old = read_all(DATA "/old.img", &len);
	char in[512];
	struct timespec pause = {0, 30 * 1000 * 1000};

	snprintf(in, sizeof(in), "%s", tpath("in"));
	write_file(in, old, len);
	nanosleep(&pause, NULL); /* past the timestamp granularity of the write */
	assert_int_equal(rsr_ctx_new(&ctx), 0);
	rsr_ctx_set_progress(ctx, touch_cb, in);
	assert_int_equal(rsr_patch_apply(ctx, in, DATA "/v2-delta.rsrp", tpath("out")), RSR_E_MISMATCH);
	assert_non_null(strstr(rsr_ctx_error(ctx), "changed while the patch was applied"));
	assert_int_equal(count_files(), 1); /* in: no output, no temporary file */
	rsr_ctx_set_progress(ctx, NULL, NULL);
	assert_int_equal(rsr_patch_apply(ctx, in, DATA "/v2-delta.rsrp", tpath("out")), RSR_PATCH_APPLIED);
	assert_true(same_file(tpath("out"), DATA "/new.img"));
	rsr_ctx_free(ctx);
	free(old);
}

/* Shared extents of fd in [off, off + len), from FIEMAP. */
static uint64_t shared_bytes(int fd, uint64_t off, uint64_t len)
{
	struct fiemap *m = calloc(1, sizeof(*m) + 256 * sizeof(struct fiemap_extent));
	uint64_t n = 0;

	assert_non_null(m);
	m->fm_start = off;
	m->fm_length = len;
	m->fm_flags = FIEMAP_FLAG_SYNC;
	m->fm_extent_count = 256;
	assert_int_equal(ioctl(fd, FS_IOC_FIEMAP, m), 0);
	for (unsigned i = 0; i < m->fm_mapped_extents; i++)
		if (m->fm_extents[i].fe_flags & FIEMAP_EXTENT_SHARED) {
			/* Only the part inside the range counts. */
			uint64_t s = RSR_MAX(m->fm_extents[i].fe_logical, off);
			uint64_t e = RSR_MIN(m->fm_extents[i].fe_logical + m->fm_extents[i].fe_length, off + len);
			n += e > s ? e - s : 0;
		}
	free(m);
	return n;
}

/*
 * On a filesystem that shares extents (RSR_TEST_CLONE_DIR names a directory
 * on XFS or btrfs), the unchanged pieces of the output share the input's
 * blocks and the output is still exact. Skipped without it.
 */
static void test_clone(void **state)
{
	const char *dir = getenv("RSR_TEST_CLONE_DIR");
	const size_t len = 12u << 20;
	uint8_t *a, *b;
	char pa[512], pb[512], pp[512], po[512];
	const char *olds[1] = {pa};
	struct rsr_patch_create_opts o = {.level = 1};
	struct rsr_ctx *ctx;
	int fd;

	if (!dir) {
		print_message("RSR_TEST_CLONE_DIR not set: sharing extents is not tested\n");
		skip();
	}
	a = malloc(len);
	b = malloc(len);
	rng_state = 11;
	for (size_t i = 0; i < len; i++)
		a[i] = rnd8();
	memcpy(b, a, len);
	memset(b + (5u << 20) + 100, 0x33, 5000); /* one changed piece of twelve */
	snprintf(pa, sizeof(pa), "%s/clone-a", dir);
	snprintf(pb, sizeof(pb), "%s/clone-b", dir);
	snprintf(pp, sizeof(pp), "%s/clone-p", dir);
	snprintf(po, sizeof(po), "%s/clone-out", dir);
	write_file(pa, a, len);
	write_file(pb, b, len);
	assert_int_equal(rsr_ctx_new(&ctx), 0);
	rsr_ctx_set_threads(ctx, 2);
	assert_int_equal(rsr_patch_create(ctx, olds, 1, pb, pp, NULL, &o), 0);
	unlink(po);
	assert_int_equal(rsr_patch_apply(ctx, pa, pp, po), RSR_PATCH_APPLIED);
	assert_true(same_file(po, pb));
	fd = open(po, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	/* Eleven unchanged pieces shared, the changed one written. */
	assert_int_equal(shared_bytes(fd, 0, len), 11u << 20);
	assert_int_equal(shared_bytes(fd, 5u << 20, 1u << 20), 0);
	close(fd);
	rsr_ctx_free(ctx);
	unlink(pa);
	unlink(pb);
	unlink(pp);
	unlink(po);
	free(a);
	free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_vectors, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stats, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pieces, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_hash_tree, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_wrong_input_same_size, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_create_errors, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_corruption, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_deflate, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_enormous, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_input_changed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_clone, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
