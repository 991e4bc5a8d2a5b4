/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A cryptex as a Discoverable Disk Image (the UAPI group's DDI): a GPT disk
 * with the same EROFS image as a root partition, its hash tree behind a
 * dm-verity superblock as the root verity partition, and the root hash with
 * a PKCS#7 signature as the root verity signature partition, so that
 * systemd-dissect and systemd-sysext take it. Layout: docs/formats/ddi.md.
 */
#include <assert.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/pkcs7.h>
#include <openssl/x509.h>
#include <zlib.h>

#include "image-internal.h"

#define SECTOR 512
#define GPT_ENTRIES 128
#define GPT_ENTRY_SIZE 128
#define GPT_TABLE_SECTORS (GPT_ENTRIES * GPT_ENTRY_SIZE / SECTOR) /* 32 */
#define FIRST_PARTITION (UINT64_C(1) << 20)			  /* 1 MiB, as partitioning tools align */
#define ALIGN 4096
#define SIGNATURE_MAX (1u << 20)
#define ATTR_READ_ONLY (UINT64_C(1) << 60) /* DPS: partition flag bit 60 */

struct gpt_header {
	uint8_t signature[8]; /* "EFI PART" */
	uint8_t revision[4];  /* 1.0 */
	uint8_t header_size[4];
	uint8_t header_crc[4];
	uint8_t reserved[4];
	uint8_t my_lba[8];
	uint8_t alternate_lba[8];
	uint8_t first_usable_lba[8];
	uint8_t last_usable_lba[8];
	uint8_t disk_guid[16];
	uint8_t entries_lba[8];
	uint8_t n_entries[4];
	uint8_t entry_size[4];
	uint8_t entries_crc[4];
};
static_assert(sizeof(struct gpt_header) == 92, "GPT header is 92 bytes");

struct gpt_entry {
	uint8_t type_guid[16];
	uint8_t unique_guid[16];
	uint8_t first_lba[8];
	uint8_t last_lba[8]; /* inclusive */
	uint8_t attributes[8];
	uint8_t name[72]; /* UTF-16LE */
};
static_assert(sizeof(struct gpt_entry) == GPT_ENTRY_SIZE, "GPT entry is 128 bytes");

/* The dm-verity superblock as cryptsetup writes it (version 1, at the start of the hash device). */
struct verity_sb {
	uint8_t signature[8]; /* "verity\0\0" */
	uint8_t version[4];
	uint8_t hash_type[4];
	uint8_t uuid[16];
	uint8_t algorithm[32];
	uint8_t data_block_size[4];
	uint8_t hash_block_size[4];
	uint8_t data_blocks[8];
	uint8_t salt_size[2];
	uint8_t pad1[6];
	uint8_t salt[256];
	uint8_t pad2[168];
};
static_assert(sizeof(struct verity_sb) == 512, "verity superblock is 512 bytes");

/* Partition types of the Discoverable Partitions Specification: root, root verity, root verity signature. */
static const struct {
	const char *name;
	const char *types[3];
} arches[] = {
    {"x86-64",
     {"4f68bce3-e8cd-4db1-96e7-fbcaf984b709", "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5",
      "41092b05-9fc8-4523-994f-2def0408b176"}},
    {"arm64",
     {"b921b045-1df0-41c3-af44-4c6f280d3fae", "df3300ce-d69f-4c92-978c-9bfb0f38d820",
      "6db69de6-29f4-4758-a7a5-962190f00ce3"}},
};

#if defined(__x86_64__)
#define NATIVE_ARCH "x86-64"
#elif defined(__aarch64__)
#define NATIVE_ARCH "arm64"
#else
#define NATIVE_ARCH ""
#endif

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

/* A GUID in its text order (16 bytes) to the GPT's on-disk order: first three fields little-endian. */
static void guid_to_disk(const uint8_t b[16], uint8_t out[16])
{
	static const uint8_t order[16] = {3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15};
	for (int i = 0; i < 16; i++)
		out[i] = b[order[i]];
}

static bool guid_parse(const char *s, uint8_t out[16])
{
	char hex[33];
	size_t n = 0;

	for (const char *p = s; *p && n < 32; p++)
		if (*p != '-')
			hex[n++] = *p;
	hex[n] = '\0';
	return n == 32 && rsr_hex_decode(hex, out, 16);
}

/* A stable GUID (RFC 9562 version 8) from a label and the root hash, so the same cryptex gives the same disk. */
static int derive_guid(const char *label, const uint8_t root_hash[32], uint8_t out[16])
{
	uint8_t buf[96], d[32];
	size_t n = (size_t)snprintf((char *)buf, 64, "rsr-ddi-%s", label) + 1;
	int r;

	memcpy(buf + n, root_hash, 32);
	r = rsr_sha256(buf, n + 32, d);
	if (r < 0)
		return r;
	d[6] = (uint8_t)((d[6] & 0x0f) | 0x80);
	d[8] = (uint8_t)((d[8] & 0x3f) | 0x80);
	memcpy(out, d, 16);
	return 0;
}

static void set_entry(struct gpt_entry *e, const char *type, const uint8_t guid[16], uint64_t off, uint64_t size,
		      const char *name)
{
	uint8_t t[16];

	guid_parse(type, t);
	guid_to_disk(t, e->type_guid);
	guid_to_disk(guid, e->unique_guid);
	rsr_put_le64(e->first_lba, off / SECTOR);
	rsr_put_le64(e->last_lba, (off + size) / SECTOR - 1);
	rsr_put_le64(e->attributes, ATTR_READ_ONLY);
	for (size_t i = 0; name[i] && i < sizeof(e->name) / 2; i++)
		rsr_put_le16(e->name + 2 * i, (uint8_t)name[i]);
}

/* The signature partition: {"rootHash", "certificateFingerprint", "signature"} padded with NUL to 4096. */
static int make_signature(struct rsr_ctx *ctx, const char *root_hex, const char *key_path, const char *cert_path,
			  char **ret, size_t *ret_len)
{
	BIO *kb = NULL, *cb = NULL, *data = NULL;
	EVP_PKEY *pkey = NULL;
	X509 *cert = NULL;
	PKCS7 *p7 = NULL;
	unsigned char *der = NULL, fp[EVP_MAX_MD_SIZE];
	unsigned fp_len = 0;
	char fp_hex[2 * EVP_MAX_MD_SIZE + 1];
	_cleanup_free_ char *b64 = NULL, *text = NULL;
	int der_len, r = 0;
	json_t *j = NULL;
	bool ok = true;

	if (rsr_crypto_init() < 0)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	if (!(kb = BIO_new_file(key_path, "r")) || !(pkey = PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL))) {
		r = rsr_error(ctx, RSR_E_KEY, "%s: not a private key in PEM form", key_path);
		goto out;
	}
	if (!(cb = BIO_new_file(cert_path, "r")) || !(cert = PEM_read_bio_X509(cb, NULL, NULL, NULL))) {
		r = rsr_error(ctx, RSR_E_KEY, "%s: not an X.509 certificate in PEM form", cert_path);
		goto out;
	}
	if (X509_check_private_key(cert, pkey) != 1) {
		r = rsr_error(ctx, RSR_E_KEY, "%s: the certificate is not for the key %s", cert_path, key_path);
		goto out;
	}
	/* What the kernel's dm-verity checks: a detached signature of the root hash as hex text. */
	if (!(data = BIO_new_mem_buf(root_hex, (int)strlen(root_hex))) ||
	    !(p7 = PKCS7_sign(cert, pkey, NULL, data, PKCS7_DETACHED | PKCS7_BINARY | PKCS7_NOATTR)) ||
	    (der_len = i2d_PKCS7(p7, &der)) <= 0 || !X509_digest(cert, EVP_sha256(), fp, &fp_len)) {
		r = rsr_error(ctx, RSR_E_KEY, "cannot make a PKCS#7 signature with %s and %s", key_path, cert_path);
		goto out;
	}
	b64 = malloc(4 * ((size_t)der_len + 2) / 3 + 1);
	if (!b64) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	EVP_EncodeBlock((unsigned char *)b64, der, der_len);
	rsr_hex_encode(fp, fp_len, fp_hex);
	j = json_object();
	ok = j != NULL;
	if (ok) {
		rsr_json_set(&ok, j, "rootHash", json_string(root_hex));
		rsr_json_set(&ok, j, "certificateFingerprint", json_string(fp_hex));
		rsr_json_set(&ok, j, "signature", json_string(b64));
	}
	if (!ok || !(text = rsr_json_dumps(j, JSON_COMPACT))) {
		r = rsr_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	{
		size_t len = strlen(text), padded = align_up(len + 1, ALIGN);
		char *buf;
		if (padded > SIGNATURE_MAX) {
			r = rsr_error(ctx, RSR_E_LIMIT, "the signature of %zu bytes is too large", len);
			goto out;
		}
		buf = calloc(1, padded);
		if (!buf) {
			r = rsr_error(ctx, -ENOMEM, "out of memory");
			goto out;
		}
		memcpy(buf, text, len);
		*ret = buf;
		*ret_len = padded;
	}
out:
	json_decref(j);
	OPENSSL_free(der);
	PKCS7_free(p7);
	X509_free(cert);
	EVP_PKEY_free(pkey);
	BIO_free(data);
	BIO_free(cb);
	BIO_free(kb);
	return r;
}

/* The protective MBR, the GPT header at `lba` (primary at 1, backup at the last) and its entries. */
static void make_header(struct gpt_header *h, uint64_t lba, uint64_t alternate, uint64_t entries_lba, uint64_t last_lba,
			const uint8_t disk_guid[16], uint32_t entries_crc)
{
	memset(h, 0, sizeof(*h));
	memcpy(h->signature, "EFI PART", 8);
	rsr_put_le32(h->revision, 0x00010000);
	rsr_put_le32(h->header_size, sizeof(*h));
	rsr_put_le64(h->my_lba, lba);
	rsr_put_le64(h->alternate_lba, alternate);
	rsr_put_le64(h->first_usable_lba, 2 + GPT_TABLE_SECTORS);
	rsr_put_le64(h->last_usable_lba, last_lba - 1 - GPT_TABLE_SECTORS);
	guid_to_disk(disk_guid, h->disk_guid);
	rsr_put_le64(h->entries_lba, entries_lba);
	rsr_put_le32(h->n_entries, GPT_ENTRIES);
	rsr_put_le32(h->entry_size, GPT_ENTRY_SIZE);
	rsr_put_le32(h->entries_crc, entries_crc);
	rsr_put_le32(h->header_crc, (uint32_t)crc32(0, (const Bytef *)h, sizeof(*h)));
}

int rsr_cryptex_export_ddi(struct rsr_ctx *ctx, struct rsr_cryptex *cx, const char *out_path, const char *architecture,
			   const char *key_path, const char *cert_path)
{
	const char *arch = architecture ? architecture : NATIVE_ARCH;
	const char *const *types = NULL;
	uint8_t root_hash[32], salt[256], disk_guid[16], sig_guid[16];
	_cleanup_free_ char *sig = NULL;
	_cleanup_free_ struct gpt_entry *entries = NULL;
	_cleanup_free_ uint8_t *head = NULL;
	struct rsr_atomic_file *af = NULL;
	struct verity_sb sb;
	struct gpt_header h;
	size_t sig_len = 0, salt_len;
	uint64_t image_size = rsr_cryptex_image_size(cx), tree_size = rsr_cryptex_tree_size(cx);
	uint64_t data_off, hash_off, hash_size, sig_off, end, disk_size, last_lba;
	uint32_t entries_crc;
	char name[3][40];
	int fd = rsr_image_cryptex_fd(cx), r;

	for (size_t i = 0; i < ARRAY_SIZE(arches); i++)
		if (!strcmp(arch, arches[i].name))
			types = arches[i].types;
	if (!types)
		return rsr_error(ctx, -EINVAL, "architecture '%s' is not one a DDI can be made for (x86-64, arm64)",
				 arch);
	if (fd < 0)
		return rsr_error(ctx, -EBADF, "%s: not opened from a file", rsr_cryptex_path(cx));
	/* What goes into the image is what the hash tree and the signed root hash say. */
	r = rsr_cryptex_verify_blocks(ctx, cx);
	if (r < 0)
		return r;
	rsr_cryptex_root_hash(cx, root_hash);
	salt_len = strlen(rsr_cryptex_salt_hex(cx)) / 2;
	if (salt_len > sizeof(salt) || !rsr_hex_decode(rsr_cryptex_salt_hex(cx), salt, salt_len))
		return rsr_error(ctx, RSR_E_FORMAT, "%s: salt too long for a verity superblock", rsr_cryptex_path(cx));
	r = make_signature(ctx, rsr_cryptex_root_hash_hex(cx), key_path, cert_path, &sig, &sig_len);
	if (r < 0)
		return r;
	if (derive_guid("disk", root_hash, disk_guid) < 0 || derive_guid("signature", root_hash, sig_guid) < 0)
		return rsr_error(ctx, -ENOMEM, "out of memory");

	data_off = FIRST_PARTITION;
	hash_off = align_up(data_off + image_size, ALIGN);
	hash_size = ALIGN + tree_size; /* the superblock's block, then the tree */
	sig_off = hash_off + hash_size;
	end = sig_off + sig_len;
	disk_size = align_up(end + (1 + GPT_TABLE_SECTORS) * SECTOR, ALIGN);
	last_lba = disk_size / SECTOR - 1;

	entries = calloc(GPT_ENTRIES, sizeof(*entries));
	head = calloc(1, FIRST_PARTITION);
	if (!entries || !head)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	snprintf(name[0], sizeof(name[0]), "%.29s", rsr_cryptex_name(cx));
	snprintf(name[1], sizeof(name[1]), "%.29s-verity", rsr_cryptex_name(cx));
	snprintf(name[2], sizeof(name[2]), "%.25s-verity-sig", rsr_cryptex_name(cx));
	/* DPS: the data partition's UUID is the root hash's first 128 bits, the verity partition's its last. */
	set_entry(&entries[0], types[0], root_hash, data_off, image_size, name[0]);
	set_entry(&entries[1], types[1], root_hash + 16, hash_off, hash_size, name[1]);
	set_entry(&entries[2], types[2], sig_guid, sig_off, sig_len, name[2]);
	entries_crc = (uint32_t)crc32(0, (const Bytef *)entries, GPT_ENTRIES * GPT_ENTRY_SIZE);

	/* Protective MBR: one partition of type 0xEE over the whole disk (UEFI 2.10, 5.2.3). */
	{
		uint8_t *pe = head + 446;
		uint64_t n = last_lba > 0xffffffff ? 0xffffffff : last_lba;
		pe[1] = 0x00, pe[2] = 0x02, pe[3] = 0x00; /* CHS of LBA 1 */
		pe[4] = 0xee;
		pe[5] = pe[6] = pe[7] = 0xff;
		rsr_put_le32(pe + 8, 1);
		rsr_put_le32(pe + 12, (uint32_t)n);
		head[510] = 0x55;
		head[511] = 0xaa;
	}
	make_header(&h, 1, last_lba, 2, last_lba, disk_guid, entries_crc);
	memcpy(head + SECTOR, &h, sizeof(h));
	memcpy(head + 2 * SECTOR, entries, GPT_ENTRIES * GPT_ENTRY_SIZE);

	memset(&sb, 0, sizeof(sb));
	memcpy(sb.signature, "verity\0\0", 8);
	rsr_put_le32(sb.version, 1);
	rsr_put_le32(sb.hash_type, 1);
	memcpy(sb.uuid, root_hash + 16, 16);
	memcpy(sb.algorithm, "sha256", 6);
	rsr_put_le32(sb.data_block_size, RSR_CRYPTEX_BLOCK_SIZE);
	rsr_put_le32(sb.hash_block_size, RSR_CRYPTEX_BLOCK_SIZE);
	rsr_put_le64(sb.data_blocks, rsr_cryptex_data_blocks(cx));
	rsr_put_le16(sb.salt_size, (uint16_t)salt_len);
	memcpy(sb.salt, salt, salt_len);

	r = rsr_atomic_open(ctx, out_path, 0644, &af);
	if (r < 0)
		return r;
	if ((r = ftruncate(af->fd, (off_t)disk_size) < 0 ? -errno : 0) < 0 ||
	    (r = rsr_pwrite_all(af->fd, head, FIRST_PARTITION, 0)) < 0 ||
	    (r = rsr_copy_range(fd, rsr_cryptex_image_offset(cx), af->fd, data_off, image_size)) < 0 ||
	    (r = rsr_pwrite_all(af->fd, &sb, sizeof(sb), hash_off)) < 0 ||
	    (r = rsr_copy_range(fd, rsr_cryptex_tree_offset(cx), af->fd, hash_off + ALIGN, tree_size)) < 0 ||
	    (r = rsr_pwrite_all(af->fd, sig, sig_len, sig_off)) < 0 ||
	    (r = rsr_pwrite_all(af->fd, entries, GPT_ENTRIES * GPT_ENTRY_SIZE,
				(last_lba - GPT_TABLE_SECTORS) * SECTOR)) < 0) {
		rsr_atomic_abort(af);
		return rsr_error_errno(ctx, r, "%s: write", out_path);
	}
	make_header(&h, last_lba, 1, last_lba - GPT_TABLE_SECTORS, last_lba, disk_guid, entries_crc);
	{
		uint8_t sector[SECTOR] = {0};
		memcpy(sector, &h, sizeof(h));
		r = rsr_pwrite_all(af->fd, sector, sizeof(sector), last_lba * SECTOR);
	}
	if (r < 0) {
		rsr_atomic_abort(af);
		return rsr_error_errno(ctx, r, "%s: write", out_path);
	}
	return rsr_atomic_commit(ctx, af);
}
