/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A program outside the tree, built against the installed librsr with
 * pkg-config --cflags --libs librsr: prints the library version and the
 * name, version and root hash of a cryptex, after checking its signature
 * and every block against a public key.
 */
#include <stdio.h>

#include <rsr/cryptex.h>
#include <rsr/key.h>

int main(int argc, char **argv)
{
	struct rsr_ctx *ctx = NULL;
	struct rsr_keyring *ring = NULL;
	struct rsr_cryptex *cx = NULL;
	int status = 1;

	if (argc != 3) {
		fprintf(stderr, "usage: librsr-user FILE.cptx KEY.pub\n");
		return 2;
	}
	if (rsr_ctx_new(&ctx) < 0 || rsr_keyring_new(&ring) < 0)
		goto out;
	if (rsr_keyring_add_file(ctx, ring, argv[2]) < 0 || rsr_cryptex_open_trusted(ctx, argv[1], ring, &cx) < 0 ||
	    rsr_cryptex_verify_blocks(ctx, cx) < 0) {
		fprintf(stderr, "librsr-user: %s\n", rsr_ctx_error(ctx));
		goto out;
	}
	printf("librsr %s\n%s %s %s\n", rsr_version(), rsr_cryptex_name(cx), rsr_cryptex_version(cx),
	       rsr_cryptex_root_hash_hex(cx));
	status = 0;
out:
	rsr_cryptex_free(cx);
	rsr_keyring_free(ring);
	rsr_ctx_free(ctx);
	return status;
}
