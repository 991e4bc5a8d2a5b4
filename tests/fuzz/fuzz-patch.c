/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libFuzzer target for the patch parser and interpreter. The input is taken
 * as a patch whose digest is set right first (so that mutations reach past
 * the digest check into the tables and the operations), then parsed, decoded
 * and run against a patterned input of the declared size. The same bytes are
 * also fed to the deflate decoder, whose output must re-encode exactly.
 */
#include <stdio.h>

#include "internal.h"
#include "../../lib/patch/format.h"
#include "rsr/patch.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_IN (1u << 20)
#define MAX_OUT (1u << 20)

/* Earlier output, for HASH operations: a pattern (the fuzzer only checks that nothing is read out of bounds). */
static int read_prior(void *arg, uint64_t off, void *buf, size_t len)
{
	uint8_t *b = buf;
	for (size_t i = 0; i < len; i++)
		b[i] = (uint8_t)(off + i);
	return 0;
}

/*
 * The patcher's fill step: identity ranges must lie in the chunk, in order,
 * not touching (adjacent ones are merged), and inside the input at the same
 * offsets; anything else aborts.
 */
struct fill_check {
	const struct patch_chunk_view *v;
	const uint8_t *in;
	uint64_t in_size;
	uint8_t *out;
};

static int fill_check(void *arg, const struct patch_range *r, size_t n, bool out_read)
{
	struct fill_check *f = arg;
	uint64_t end = 0;

	for (size_t i = 0; i < n; i++) {
		if (r[i].len == 0 || r[i].off < end || (i && r[i].off == end) || r[i].off > f->v->out_size ||
		    r[i].len > f->v->out_size - r[i].off || f->v->out_offset + r[i].off + r[i].len > f->in_size) {
			fprintf(stderr, "identity range %zu (%llu+%llu) is not a valid range\n", i,
				(unsigned long long)r[i].off, (unsigned long long)r[i].len);
			abort();
		}
		memcpy(f->out + r[i].off, f->in + f->v->out_offset + r[i].off, (size_t)r[i].len);
		end = r[i].off + r[i].len;
	}
	return 0;
}

static void run_patch(struct rsr_ctx *ctx, const uint8_t *buf, size_t len)
{
	struct rsr_patch *p;

	if (rsr_patch_load(ctx, buf, len, &p) < 0)
		return;
	for (uint32_t s = 0; s < p->n_sets; s++) {
		struct rsr_patch_stats st;
		uint64_t in_size = p->n_inputs ? rsr_patch_input_size(p, s) : 0;
		uint8_t *in;

		(void)rsr_patch_stats(ctx, p, s, &st);
		if (in_size > MAX_IN)
			continue;
		in = malloc(in_size + 1);
		if (!in)
			break;
		for (uint64_t i = 0; i < in_size; i++)
			in[i] = (uint8_t)(i * 7 + (i >> 12));
		for (uint32_t c = 0; c < p->n_chunks; c++) {
			struct patch_chunk_view v;
			const char *why = NULL;
			uint8_t *out;

			patch_chunk_get(p, s, c, &v);
			if (v.out_size > MAX_OUT || v.payload_size > MAX_OUT)
				continue;
			out = malloc(v.out_size);
			if (!out)
				break;
			{
				/* Plain, and with identity copies left to a fill function: the same result. */
				uint8_t *again = malloc(v.out_size);
				struct fill_check f = {.v = &v, .in = in, .in_size = in_size, .out = again};
				int r1, r2;

				if (again) {
					r1 = patch_run_chunk(p, s, c, in_size ? in : NULL, in_size, out, read_prior,
							     NULL, NULL, &why);
					r2 = patch_run_chunk_fill(p, s, c, in_size ? in : NULL, in_size, again,
								  read_prior, NULL, fill_check, &f, &why);
					if (r1 != r2 || (r1 == 0 && memcmp(out, again, v.out_size) != 0)) {
						fprintf(stderr, "chunk %u: filled run differs (%d, %d)\n", c, r1, r2);
						abort();
					}
					free(again);
				}
			}
			free(out);
		}
		free(in);
	}
	rsr_patch_free(p);
}

static void run_deflate(const uint8_t *data, size_t size)
{
	struct buf tok = {0};
	size_t used;
	uint8_t *again;

	if (deflate_decode(data, size, 1u << 22, &tok, &used) != 0)
		return;
	again = malloc(used ? used : 1);
	if (!again || deflate_encode(tok.p, tok.len, again, used) != 0 || memcmp(again, data, used) != 0) {
		fprintf(stderr, "deflate stream of %zu bytes does not re-encode exactly\n", used);
		abort();
	}
	free(again);
	buf_free(&tok);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rsr_ctx *ctx;
	uint8_t *buf;

	if (rsr_ctx_new(&ctx) < 0)
		return 0;
	rsr_ctx_set_threads(ctx, 1);
	buf = malloc(size ? size : 1);
	if (buf) {
		memcpy(buf, data, size);
		if (size >= sizeof(struct patch_header)) {
			struct patch_header *h = (struct patch_header *)buf;
			struct patch_piece rest = {buf + sizeof(*h), size - sizeof(*h)};
			patch_digest(h, &rest, 1, h->patch_sha256);
		}
		run_patch(ctx, buf, size);
		free(buf);
	}
	run_deflate(data, size);
	rsr_ctx_free(ctx);
	return 0;
}
