/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of image patches: the checked-in vectors, round trips of
 * generated images, two-input and full-replacement patches, every kind of
 * corruption (which must fail cleanly and leave no file), cancellation,
 * the bit-exact deflate re-encoder, and projections (format version 3).
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
#include <zstd.h>

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

/* ---- projections (format version 3) ---- */

/*
 * Every rule of docs/formats/patch.md "Projections", with the expected bytes
 * worked out by hand: an input of two blocks holding one field of each kind
 * (and fields that must stay), one region, three steps.
 */
#define PV 0x400000u /* the address of input offset 0 */
static void put_rel(uint8_t *in, uint8_t *want, uint64_t q, int64_t old_rel, int64_t new_rel)
{
	rsr_put_le32(in + q, (uint32_t)(int32_t)old_rel);
	rsr_put_le32(want + q, (uint32_t)(int32_t)new_rel);
}
static void put_abs(uint8_t *in, uint8_t *want, uint64_t q, uint64_t old_v, uint64_t new_v)
{
	rsr_put_le64(in + q, old_v);
	rsr_put_le64(want + q, new_v);
}

static void proj_fixture(uint8_t *in, uint8_t *want, struct proj *pj)
{
	static struct proj_range ranges[] = {
	    {PK_CODE_X86_64, 0x000, 0x800, PV + 0x000}, {PK_ABS64, 0x800, 0x20, PV + 0x800},
	    {PK_RELA64, 0x820, 0x30, PV + 0x820},	{PK_SYM64, 0x850, 0x18, PV + 0x850},
	    {PK_EHHDR, 0x880, 0x14, PV + 0x880},	{PK_EHFRAME, 0x8a0, 0x20, PV + 0x8a0},
	    {PK_CODE_X86_64, 0xff8, 0x18, PV + 0xff8},
	};
	/* d(a) = 0 below PV + 0x400, 16 up to PV + 0x1000, -32 from there */
	static struct proj_step steps[] = {{PV, 0}, {PV + 0x400, 16}, {PV + 0x1000, -32}};
	static struct proj_region g = {.start = 0, .size = 8192, .lo = PV, .hi = PV + 0x2000};

	memset(in, 0, 8192);
	/* call (E8) forward over a step: +16 */
	in[0x100] = 0xe8;
	put_rel(in, want, 0x101, 0x500 - 0x105, 0x500 - 0x105 + 16);
	/* lea rax, [rip + x] (48 8D 05) back to unshifted data: -16 */
	memcpy(in + 0x600, "\x48\x8d\x05", 3);
	put_rel(in, want, 0x603, 0x200 - 0x607, 0x200 - 0x607 - 16);
	/* jmp (E9) outside the region: stays */
	in[0x700] = 0xe9;
	put_rel(in, want, 0x701, 0x100000 - 0x705, 0x100000 - 0x705);
	/* je (0F 84) into the -32 part: -48 */
	memcpy(in + 0x780, "\x0f\x84", 2);
	put_rel(in, want, 0x782, 0x1100 - 0x786, 0x1100 - 0x786 - 48);
	/* 64-bit addresses: two in the region, one not an address, one at the region's end */
	put_abs(in, want, 0x800, PV + 0x450, PV + 0x460);
	put_abs(in, want, 0x808, 0x12, 0x12);
	put_abs(in, want, 0x810, PV + 0x1800, PV + 0x17e0);
	put_abs(in, want, 0x818, PV + 0x2000, PV + 0x2000);
	/* Rela: RELATIVE (both words move), then GLOB_DAT (its addend stays) */
	put_abs(in, want, 0x820, PV + 0x810, PV + 0x820);
	rsr_put_le32(in + 0x828, 8);
	put_abs(in, want, 0x830, PV + 0x700, PV + 0x710);
	put_abs(in, want, 0x838, PV + 0x300, PV + 0x300);
	rsr_put_le32(in + 0x840, 6);
	put_abs(in, want, 0x848, PV + 0x700, PV + 0x700);
	/* Elf64_Sym st_value */
	put_abs(in, want, 0x858, PV + 0x900, PV + 0x910);
	/* .eh_frame_hdr fields relative to the section (whose own shift is 16) */
	put_rel(in, want, 0x88c, 0x100 - 0x880, 0x100 - 0x880 - 16);
	put_rel(in, want, 0x890, 0x1200 - 0x880, 0x1200 - 0x880 - 48);
	/* .eh_frame: a CIE (id 0, stays), an FDE whose pc_begin moves, the terminator */
	rsr_put_le32(in + 0x8a0, 8);
	rsr_put_le32(in + 0x8a8, 0x100 - 0x8a8); /* inside the CIE: not a pc_begin */
	rsr_put_le32(in + 0x8ac, 12);
	rsr_put_le32(in + 0x8b0, 0x10);
	put_rel(in, want, 0x8b4, 0x100 - 0x8b4, 0x100 - 0x8b4 - 16);
	rsr_put_le32(in + 0x8b8, 0x40);
	/* A call whose field crosses the block boundary stays; the next block scans afresh. */
	in[0xffc] = 0xe8;
	put_rel(in, want, 0xffd, 0x100 - 0x1001, 0x100 - 0x1001);
	in[0x1004] = 0xe8;
	put_rel(in, want, 0x1005, 0x500 - 0x1009, 0x500 - 0x1009 + 16 + 32);
	/* The bytes not set above stay as they are. */
	for (size_t i = 0; i < 8192; i++)
		if (!want[i])
			want[i] = in[i];
	memcpy(want + 0x8a8, in + 0x8a8, 4);
	memcpy(want + 0x828, in + 0x828, 4);
	memcpy(want + 0x840, in + 0x840, 4);
	g.ranges = ranges;
	g.n_ranges = sizeof(ranges) / sizeof(ranges[0]);
	g.steps = steps;
	g.n_steps = sizeof(steps) / sizeof(steps[0]);
	*pj = (struct proj){.regions = &g, .n = 1};
}

static void test_projection_rules(void **state)
{
	uint8_t *in = calloc(1, 8192), *want = calloc(1, 8192), *got = malloc(8192);
	struct proj fix, pj = {0};
	struct buf enc = {0};
	const char *why = NULL;

	assert_non_null(in);
	assert_non_null(want);
	assert_non_null(got);
	proj_fixture(in, want, &fix);
	/* Through its encoding, as a patch carries it. */
	proj_encode(&fix, &enc);
	assert_false(enc.oom);
	assert_int_equal(proj_parse(enc.p, enc.len, 8192, &pj, &why), 0);
	assert_int_equal(pj.n, 1);
	assert_int_equal(pj.regions[0].n_ranges, 7);
	assert_int_equal(pj.regions[0].n_steps, 3);
	proj_block(&pj, in, 8192, 0, got);
	proj_block(&pj, in, 8192, 4096, got + 4096);
	for (size_t i = 0; i < 8192; i++)
		if (got[i] != want[i])
			fail_msg("projected byte %#zx is %#x, expected %#x", i, got[i], want[i]);
	/* Any range read piecewise gives the same bytes. */
	memset(got, 0, 8192);
	for (size_t off = 0; off < 8192;) {
		size_t n = RSR_MIN(8192 - off, (size_t)(1 + (off * 7919) % 1500));
		proj_read(&pj, in, 8192, off, n, got + off);
		off += n;
	}
	assert_memory_equal(got, want, 8192);
	proj_free(&pj);

	/*
	 * Shifts at the ends of 64 bits (a patch may say anything): results out
	 * of 32 bits leave their fields, without overflowing on the way.
	 */
	{
		struct proj_step ext[] = {{PV, INT64_MAX}, {PV + 0x400, INT64_MIN}, {PV + 0x1000, INT64_MAX}};
		struct proj_region g = fix.regions[0];
		struct proj pe = {.regions = &g, .n = 1};
		g.steps = ext;
		proj_block(&pe, in, 8192, 0, got);
		assert_memory_equal(got + 0x101, in + 0x101, 4); /* d(t) - d(v(q)) = INT64_MIN - INT64_MAX */
		assert_memory_equal(got + 0x782, in + 0x782, 4);
		ext[1].delta = ext[2].delta = INT64_MAX; /* the same shift everywhere: no change */
		proj_block(&pe, in, 8192, 0, got);
		assert_memory_equal(got + 0x101, in + 0x101, 4);
		assert_memory_equal(got + 0x603, in + 0x603, 4);
	}
	/* Every truncation of the description, and the input too small for it, are refused. */
	for (size_t n = 0; n < enc.len; n++) {
		why = NULL;
		assert_int_equal(proj_parse(enc.p, n, 8192, &pj, &why), RSR_E_FORMAT);
		assert_non_null(why);
	}
	assert_int_equal(proj_parse(enc.p, enc.len, 8191, &pj, &why), RSR_E_FORMAT);
	/* An unknown kind; steps out of order. */
	{
		struct proj_range r = fix.regions[0].ranges[0];
		fix.regions[0].ranges[0].kind = 7;
		buf_free(&enc);
		proj_encode(&fix, &enc);
		assert_int_equal(proj_parse(enc.p, enc.len, 8192, &pj, &why), RSR_E_FORMAT);
		assert_string_equal(why, "unknown projection kind");
		fix.regions[0].ranges[0] = r;
	}
	{
		struct proj_step st = fix.regions[0].steps[1];
		fix.regions[0].steps[1].vaddr = fix.regions[0].steps[0].vaddr;
		buf_free(&enc);
		proj_encode(&fix, &enc);
		assert_int_equal(proj_parse(enc.p, enc.len, 8192, &pj, &why), RSR_E_FORMAT);
		assert_string_equal(why, "projection steps out of order");
		fix.regions[0].steps[1] = st;
	}
	assert_int_equal(pj.n, 0);
	buf_free(&enc);
	free(in);
	free(want);
	free(got);
}

/* Runs a chunk of `ctrl` (and all-zero differences for n bytes) over the fixture's input. */
static int run_proj_chunk(uint32_t version, const struct buf *ctrl, uint64_t n_diff, const uint8_t *in, uint8_t *out,
			  const char **why)
{
	struct buf pl = {0}, runs = {0};
	struct patch_chunk_view v = {.version = version, .out_offset = 0, .out_size = 8192};
	size_t bound;
	uint8_t *frame;
	int r;

	if (n_diff) {
		buf_varint(&runs, n_diff);
		buf_varint(&runs, 0);
	}
	buf_varint(&pl, ctrl->len);
	buf_varint(&pl, runs.len);
	buf_varint(&pl, 0);
	buf_varint(&pl, 0);
	buf_put(&pl, ctrl->p, ctrl->len);
	buf_put(&pl, runs.p, runs.len);
	assert_false(pl.oom);
	bound = ZSTD_compressBound(pl.len);
	frame = malloc(bound);
	assert_non_null(frame);
	v.comp_size = (uint32_t)ZSTD_compress(frame, bound, pl.p, pl.len, 3);
	v.payload_size = (uint32_t)pl.len;
	r = patch_run_frame(frame, &v, in, 8192, out, NULL, NULL, NULL, why);
	free(frame);
	buf_free(&pl);
	buf_free(&runs);
	return r;
}

/* PROJECT, PCOPY and PADD in a chunk: what they produce, and where they are refused. */
static void test_projection_ops(void **state)
{
	uint8_t *in = calloc(1, 8192), *want = calloc(1, 8192), *out = malloc(8192);
	struct proj fix;
	struct buf desc = {0}, ctrl = {0};
	const char *why = NULL;

	assert_non_null(in);
	assert_non_null(want);
	assert_non_null(out);
	proj_fixture(in, want, &fix);
	proj_encode(&fix, &desc);
	/* PROJECT; PADD of the first 5000 bytes (zero differences); PCOPY of the rest. */
	buf_byte(&ctrl, OP_PROJECT);
	buf_varint(&ctrl, desc.len);
	buf_put(&ctrl, desc.p, desc.len);
	buf_byte(&ctrl, OP_PADD);
	buf_svarint(&ctrl, 0);
	buf_varint(&ctrl, 5000);
	buf_byte(&ctrl, OP_PCOPY);
	buf_svarint(&ctrl, 0);
	buf_varint(&ctrl, 8192 - 5000);
	assert_int_equal(run_proj_chunk(3, &ctrl, 5000, in, out, &why), 0);
	assert_memory_equal(out, want, 8192);
	/* A version 2 patch has no projections. */
	assert_int_equal(run_proj_chunk(2, &ctrl, 5000, in, out, &why), RSR_E_FORMAT);
	assert_string_equal(why, "unknown operation");
	/* PCOPY before any PROJECT. */
	buf_free(&ctrl);
	buf_byte(&ctrl, OP_PCOPY);
	buf_svarint(&ctrl, 0);
	buf_varint(&ctrl, 8192);
	assert_int_equal(run_proj_chunk(3, &ctrl, 0, in, out, &why), RSR_E_FORMAT);
	assert_string_equal(why, "projected operation without a projection");
	/* A PROJECT whose length passes the end of the operations. */
	buf_free(&ctrl);
	buf_byte(&ctrl, OP_PROJECT);
	buf_varint(&ctrl, desc.len + 1);
	buf_put(&ctrl, desc.p, desc.len);
	assert_int_equal(run_proj_chunk(3, &ctrl, 0, in, out, &why), RSR_E_FORMAT);
	assert_string_equal(why, "bad projection operation");
	buf_free(&ctrl);
	buf_free(&desc);
	free(in);
	free(want);
	free(out);
}

/* Copies an image with the first byte of its ELF header changed, so that the differ finds no ELF file. */
static void unelf(const char *from, const char *to)
{
	size_t len;
	uint8_t *b = read_all(from, &len);
	b[0] ^= 0xff;
	write_file(to, b, len);
	free(b);
}

static off_t file_size(const char *path)
{
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	return st.st_size;
}

/*
 * The version 3 vector applies; the differ finds the ELF file, writes
 * version 3, and the patch is much smaller than the one it makes of the
 * same bytes when it cannot tell they are an ELF file.
 */
static void test_projection_differ(void **state)
{
	struct rsr_ctx *ctx;
	struct rsr_patch *p;
	const char *old = DATA "/elf-old.img", *unold, *unnew;

	assert_int_equal(rsr_ctx_new(&ctx), 0);
	assert_int_equal(rsr_patch_open(ctx, DATA "/v3-elf.rsrp", &p), 0);
	assert_int_equal(rsr_patch_version(p), 3);
	rsr_patch_free(p);
	assert_int_equal(rsr_patch_apply(ctx, old, DATA "/v3-elf.rsrp", tpath("out")), RSR_PATCH_APPLIED);
	assert_true(same_file(tpath("out"), DATA "/elf-new.img"));
	unlink(tpath("out"));

	assert_int_equal(rsr_patch_create(ctx, &old, 1, DATA "/elf-new.img", tpath("p3"), NULL, NULL), 0);
	assert_int_equal(rsr_patch_open(ctx, tpath("p3"), &p), 0);
	assert_int_equal(rsr_patch_version(p), 3);
	rsr_patch_free(p);
	assert_int_equal(rsr_patch_apply(ctx, old, tpath("p3"), tpath("out")), RSR_PATCH_APPLIED);
	assert_true(same_file(tpath("out"), DATA "/elf-new.img"));
	unlink(tpath("out"));

	unold = tpath("unelf-old.img"); /* tpath() recycles its buffers: used at once */
	unnew = tpath("unelf-new.img");
	unelf(old, unold);
	unelf(DATA "/elf-new.img", unnew);
	assert_int_equal(rsr_patch_create(ctx, &unold, 1, unnew, tpath("p2"), NULL, NULL), 0);
	assert_int_equal(rsr_patch_open(ctx, tpath("p2"), &p), 0);
	assert_int_equal(rsr_patch_version(p), 2);
	rsr_patch_free(p);
	print_message("ELF vector: %lld bytes with projections, %lld without\n", (long long)file_size(tpath("p3")),
		      (long long)file_size(tpath("p2")));
	assert_true(file_size(tpath("p3")) * 100 < file_size(tpath("p2")) * 85);
	unlink(tpath("p2"));
	unlink(tpath("p3"));
	unlink(tpath("unelf-old.img"));
	unlink(tpath("unelf-new.img"));
	assert_int_equal(count_files(), 0);
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
	    cmocka_unit_test(test_projection_rules),
	    cmocka_unit_test(test_projection_ops),
	    cmocka_unit_test_setup_teardown(test_projection_differ, setup, teardown),
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
