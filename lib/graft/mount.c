/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The kernel side of grafting: read-only loop devices (LOOP_CONFIGURE),
 * dm-verity where device-mapper exists, EROFS and overlayfs mounts through
 * the new mount API, and the mount-beneath swap that leaves no gap.
 */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/dm-ioctl.h>
#include <linux/loop.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "graft-internal.h"

/* Newer than the C library headers of Debian 12. */
#ifndef MOVE_MOUNT_BENEATH
#define MOVE_MOUNT_BENEATH 0x00000200
#endif
#ifndef STATX_ATTR_MOUNT_ROOT
#define STATX_ATTR_MOUNT_ROOT 0x00002000
#endif

/* Reads the messages the kernel left on a filesystem context into log, "" if none. */
static void fs_log(int fsfd, char *log, size_t size)
{
	char line[256];
	ssize_t n;

	log[0] = '\0';
	while (fsfd >= 0 && (n = read(fsfd, line, sizeof(line) - 1)) > 0) {
		line[n] = '\0';
		if (strlen(log) + (size_t)n + 3 < size) {
			if (log[0])
				strcat(log, "; ");
			strcat(log, line);
		}
	}
}

/* Records a failure of a filesystem context with the kernel's own messages, if any. */
static int fs_error_log(struct rsr_ctx *ctx, int err, const char *what, const char *log)
{
	errno = -err;
	return rsr_error(ctx, err, "%s: %s%s%s%s", what, strerror(-err), log[0] ? " (" : "", log, log[0] ? ")" : "");
}

static int fs_error(struct rsr_ctx *ctx, int fsfd, int err, const char *what)
{
	char log[512];

	fs_log(fsfd, log, sizeof(log));
	return fs_error_log(ctx, err, what, log);
}

bool graft_verity_available(void)
{
	return access("/dev/mapper/control", F_OK) == 0;
}

static int loop_attach(struct rsr_ctx *ctx, int file_fd, uint64_t off, uint64_t size, const char *label,
		       char ret_dev[64], int *ret_fd, bool *ret_dio)
{
	_cleanup_close_ int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	struct loop_info64 info;

	if (ctl < 0)
		return rsr_error_errno(ctx, -errno, "/dev/loop-control");
	for (int attempt = 0; attempt < 64; attempt++) {
		char dev[64];
		int n = ioctl(ctl, LOOP_CTL_GET_FREE);
		bool dio = true;

		if (n < 0)
			return rsr_error_errno(ctx, -errno, "no free loop device");
		snprintf(dev, sizeof(dev), "/dev/loop%d", n);
		_cleanup_close_ int fd = open(dev, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return rsr_error_errno(ctx, -errno, "%s", dev);
		bool busy = false;
		for (;;) {
			struct loop_config cfg;

			memset(&cfg, 0, sizeof(cfg));
			cfg.fd = (uint32_t)file_fd;
			cfg.block_size = RSR_CRYPTEX_BLOCK_SIZE;
			cfg.info.lo_offset = off;
			cfg.info.lo_sizelimit = size;
			cfg.info.lo_flags = LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR | (dio ? LO_FLAGS_DIRECT_IO : 0);
			snprintf((char *)cfg.info.lo_file_name, LO_NAME_SIZE, "%s", label);
			if (ioctl(fd, LOOP_CONFIGURE, &cfg) == 0)
				break;
			/* Direct I/O needs a backing filesystem that supports it. */
			if ((errno == EINVAL || errno == EOPNOTSUPP) && dio) {
				dio = false;
				continue;
			}
			if (errno == EBUSY) {
				busy = true; /* another process took it first; try the next free one */
				break;
			}
			return rsr_error_errno(ctx, -errno, "%s: cannot attach image", dev);
		}
		if (busy)
			continue;
		if (ioctl(fd, LOOP_GET_STATUS64, &info) < 0)
			return rsr_error_errno(ctx, -errno, "%s: cannot read its status", dev);
		snprintf(ret_dev, 64, "%s", dev);
		*ret_dio = (info.lo_flags & LO_FLAGS_DIRECT_IO) != 0;
		*ret_fd = TAKE_FD(fd);
		return 0;
	}
	return rsr_error(ctx, -EBUSY, "no loop device could be attached (all busy)");
}

/* A dm ioctl buffer: the header, then one target spec and its parameters. */
struct dm_buf {
	struct dm_ioctl io;
	char data[4096];
};

/* A dm ioctl header at the start of a zeroed buffer of `size` bytes. */
static void dm_init_size(void *buf, size_t size, const char *name, uint32_t flags)
{
	struct dm_ioctl io = {0};

	memset(buf, 0, size);
	io.version[0] = DM_VERSION_MAJOR;
	io.data_size = (uint32_t)size;
	io.data_start = sizeof(struct dm_ioctl);
	io.flags = flags;
	snprintf(io.name, sizeof(io.name), "%s", name);
	memcpy(buf, &io, sizeof(io));
}

static void dm_init(struct dm_buf *b, const char *name, uint32_t flags)
{
	dm_init_size(b, sizeof(*b), name, flags);
}

static void dm_remove(int ctl, const char *name, bool deferred)
{
	struct dm_buf b;

	dm_init(&b, name, deferred ? DM_DEFERRED_REMOVE : 0);
	(void)ioctl(ctl, DM_DEV_REMOVE, &b.io);
}

int graft_verity_table(char *buf, size_t size, dev_t dev, uint64_t data_blocks, uint64_t hash_start_block,
		       const char *root_hex, const char *salt_hex)
{
	return snprintf(buf, size, "1 %u:%u %u:%u %d %d %llu %llu sha256 %s %s", major(dev), minor(dev), major(dev),
			minor(dev), RSR_CRYPTEX_BLOCK_SIZE, RSR_CRYPTEX_BLOCK_SIZE, (unsigned long long)data_blocks,
			(unsigned long long)hash_start_block, root_hex, salt_hex && *salt_hex ? salt_hex : "-");
}

/* True if the kernel has the dm "verity" target loaded. */
static bool verity_target_loaded(int ctl)
{
	struct dm_buf b;
	struct dm_target_versions v;
	size_t off, end;

	dm_init(&b, "", 0);
	if (ioctl(ctl, DM_LIST_VERSIONS, &b.io) < 0 || (b.io.flags & DM_BUFFER_FULL_FLAG))
		return false;
	end = b.io.data_size < sizeof(b) ? b.io.data_size : sizeof(b);
	/* Entries: struct dm_target_versions, its NUL-terminated name, then the next at v.next. */
	for (off = b.io.data_start; off + sizeof(v) < end;) {
		const char *name = (const char *)&b + off + offsetof(struct dm_target_versions, name);
		memcpy(&v, (const char *)&b + off, sizeof(v));
		if (memchr(name, '\0', end - off - offsetof(struct dm_target_versions, name)) &&
		    !strcmp(name, "verity"))
			return true;
		if (!v.next)
			break;
		off += v.next;
	}
	return false;
}

/*
 * Creates a read-only dm-verity device over the loop device `loop` that
 * holds the image followed (at hash_start_block) by its hash tree, named
 * `prefix` or, while a device of that name exists (the same image still
 * mounted from an earlier graft), `prefix-2`, `prefix-3`... On success
 * ret_name gets the name. -EOPNOTSUPP when the kernel has no verity target
 * (its module missing); every other failure is an error of its own.
 */
static int verity_create(struct rsr_ctx *ctx, struct rsr_cryptex *cx, const char *prefix, dev_t loop,
			 uint64_t hash_start_block, char ret_name[128], char ret_dev[64], dev_t *ret_devt)
{
	_cleanup_close_ int ctl = open("/dev/mapper/control", O_RDWR | O_CLOEXEC);
	struct dm_buf b;
	struct dm_target_spec *spec;
	const char *salt = rsr_cryptex_salt_hex(cx);
	uint64_t blocks = rsr_cryptex_data_blocks(cx);
	char name[128];
	dev_t dev;
	int n;

	if (ctl < 0)
		return rsr_error_errno(ctx, -errno, "/dev/mapper/control");
	for (unsigned i = 1;; i++) {
		if (i == 1)
			snprintf(name, sizeof(name), "%s", prefix);
		else
			snprintf(name, sizeof(name), "%s-%u", prefix, i);
		dm_init(&b, name, DM_READONLY_FLAG);
		if (ioctl(ctl, DM_DEV_CREATE, &b.io) == 0)
			break;
		if (errno != EBUSY || i == 64)
			return rsr_error_errno(ctx, -errno, "dm-verity device %s", name);
	}
	dev = (dev_t)b.io.dev;

	dm_init(&b, name, DM_READONLY_FLAG);
	b.io.target_count = 1;
	spec = (struct dm_target_spec *)b.data;
	spec->sector_start = 0;
	spec->length = blocks * (RSR_CRYPTEX_BLOCK_SIZE / 512);
	snprintf(spec->target_type, sizeof(spec->target_type), "verity");
	n = graft_verity_table((char *)(spec + 1), sizeof(b.data) - sizeof(*spec), loop, blocks, hash_start_block,
			       rsr_cryptex_root_hash_hex(cx), salt);
	if (n < 0 || (size_t)n >= sizeof(b.data) - sizeof(*spec)) {
		dm_remove(ctl, name, false);
		return rsr_error(ctx, RSR_E_LIMIT, "dm-verity table for %s too long", name);
	}
	spec->next = 0;
	if (ioctl(ctl, DM_TABLE_LOAD, &b.io) < 0) {
		int err = -errno;
		dm_remove(ctl, name, false);
		/* The kernel loads the target's module for the table; without one, EINVAL. */
		if (err == -EINVAL && !verity_target_loaded(ctl))
			return rsr_error(ctx, -EOPNOTSUPP, "this kernel has no dm-verity target");
		return rsr_error_errno(ctx, err, "dm-verity table for %s", name);
	}
	dm_init(&b, name, 0); /* DM_DEV_SUSPEND without the suspend flag resumes */
	if (ioctl(ctl, DM_DEV_SUSPEND, &b.io) < 0) {
		int r = rsr_error_errno(ctx, -errno, "dm-verity device %s: cannot activate", name);
		dm_remove(ctl, name, false);
		return r;
	}
	snprintf(ret_name, 128, "%s", name);
	snprintf(ret_dev, 64, "/dev/dm-%u", minor(dev));
	*ret_devt = dev;
	return 0;
}

int graft_verity_corrupted(dev_t dev, bool *ret_corrupted)
{
	_cleanup_close_ int ctl = open("/dev/mapper/control", O_RDWR | O_CLOEXEC);
	struct dm_target_spec spec;
	struct dm_buf b;
	const char *st;
	size_t end;

	if (ctl < 0)
		return -errno;
	dm_init(&b, "", 0);
	b.io.dev = (uint64_t)dev;
	if (ioctl(ctl, DM_TABLE_STATUS, &b.io) < 0)
		return -errno;
	end = b.io.data_size < sizeof(b) ? b.io.data_size : sizeof(b);
	if (b.io.target_count != 1 || (b.io.flags & DM_BUFFER_FULL_FLAG) || b.io.data_start < sizeof(struct dm_ioctl) ||
	    b.io.data_start + sizeof(spec) >= end)
		return -EPROTO;
	memcpy(&spec, (const char *)&b + b.io.data_start, sizeof(spec));
	if (strncmp(spec.target_type, "verity", sizeof(spec.target_type)))
		return -EPROTO;
	st = (const char *)&b + b.io.data_start + sizeof(spec);
	if (!memchr(st, '\0', end - b.io.data_start - sizeof(spec)))
		return -EPROTO;
	/* "V" while every block read matched the tree, "C" once one did not. */
	*ret_corrupted = st[0] == 'C';
	return 0;
}

/* True if /sys/block/NAME/SUB has an entry (a holder or a slave). */
static bool sysfs_dir_has_entry(const char *name, const char *sub, char *ret_first, size_t size)
{
	char path[PATH_MAX];
	struct dirent *de;
	bool found = false;
	DIR *d;

	snprintf(path, sizeof(path), "/sys/block/%s/%s", name, sub);
	d = opendir(path);
	if (!d)
		return false;
	while (!found && (de = readdir(d)))
		if (de->d_name[0] != '.') {
			found = true;
			if (ret_first)
				snprintf(ret_first, size, "%s", de->d_name);
		}
	closedir(d);
	return found;
}

static int held_add(struct rsr_graft_report *rep, const char *device, const char *name, char *image, int open_count)
{
	struct rsr_graft_held_device *n = realloc(rep->held, (rep->n_held + 1) * sizeof(*n));

	if (!n) {
		free(image);
		return -ENOMEM;
	}
	rep->held = n;
	n = &rep->held[rep->n_held];
	*n = (struct rsr_graft_held_device){
	    .device = strdup(device), .name = name ? strdup(name) : NULL, .image = image, .open_count = open_count};
	rep->n_held++;
	if (!n->device || (name && !n->name))
		return -ENOMEM;
	return 0;
}

/* dm-verity devices named rsr-* over an image of `store` that no mount in `live` is on. */
static int held_verity(const struct dev_set *live, const char *store, struct rsr_graft_report *rep)
{
	_cleanup_close_ int ctl = open("/dev/mapper/control", O_RDWR | O_CLOEXEC);
	/* Room for a few hundred names; a fuller list is said to be cut short. */
	const size_t size = 64 * 1024;
	_cleanup_free_ char *list = NULL;
	struct dm_ioctl io;
	struct dm_buf st;
	size_t off, end;
	int r;

	if (ctl < 0)
		return 0; /* no device-mapper: nothing of ours can be there */
	list = malloc(size);
	if (!list)
		return -ENOMEM;
	dm_init_size(list, size, "", 0);
	if (ioctl(ctl, DM_LIST_DEVICES, list) < 0)
		return 0;
	memcpy(&io, list, sizeof(io));
	if (io.flags & DM_BUFFER_FULL_FLAG)
		return -E2BIG;
	end = io.data_size < size ? io.data_size : size;
	off = io.data_start;
	/* An empty list is one entry with dev 0; entries chain by "next" offsets. */
	while (off >= sizeof(struct dm_ioctl) && off + offsetof(struct dm_name_list, name) < end) {
		struct dm_name_list nl;
		char name[DM_NAME_LEN], dev_name[32], slave[NAME_MAX + 1], path[PATH_MAX];
		const char *np = list + off + offsetof(struct dm_name_list, name);
		size_t room = end - off - offsetof(struct dm_name_list, name);
		dev_t dev;

		memcpy(&nl, list + off, offsetof(struct dm_name_list, name));
		if (nl.dev == 0 || !memchr(np, '\0', room < sizeof(name) ? room : sizeof(name)))
			break;
		snprintf(name, sizeof(name), "%s", np);
		dev = (dev_t)nl.dev;
		if (!strncmp(name, "rsr-", 4) && !dev_set_has(live, dev)) {
			char *image = NULL;
			dm_init(&st, name, 0);
			int open_count = ioctl(ctl, DM_DEV_STATUS, &st.io) == 0 ? st.io.open_count : -1;
			snprintf(dev_name, sizeof(dev_name), "dm-%u", minor(dev));
			if (sysfs_dir_has_entry(dev_name, "slaves", slave, sizeof(slave))) {
				snprintf(path, sizeof(path), "/sys/block/%s/loop/backing_file", slave);
				image = graft_read_small(path, true);
			}
			/* Another root's images (a test's scratch root, say) are not this one's. */
			if (!image || strncmp(image, store, strlen(store))) {
				free(image);
			} else {
				snprintf(path, sizeof(path), "/dev/%s", dev_name);
				r = held_add(rep, path, name, image, open_count);
				if (r < 0)
					return r;
			}
		}
		if (nl.next == 0 || nl.next > end - off)
			break;
		off += nl.next;
	}
	return 0;
}

/* Loop devices labelled rsr:* over an image of `store` that no dm device and no mount in `live` uses. */
static int held_loops(const struct dev_set *live, const char *store, struct rsr_graft_report *rep)
{
	DIR *d = opendir("/sys/block");
	struct dirent *de;
	int r = 0;

	if (!d)
		return 0;
	while (r >= 0 && (de = readdir(d))) {
		char path[PATH_MAX], *image;
		struct loop_info64 info;
		struct stat sb;
		if (strncmp(de->d_name, "loop", 4) || sysfs_dir_has_entry(de->d_name, "holders", NULL, 0))
			continue;
		snprintf(path, sizeof(path), "/sys/block/%s/loop/backing_file", de->d_name);
		image = graft_read_small(path, true);
		if (!image || strncmp(image, store, strlen(store))) {
			free(image);
			continue; /* not bound, or not to this root's images */
		}
		snprintf(path, sizeof(path), "/dev/%s", de->d_name);
		_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
		if (fd < 0 || fstat(fd, &sb) < 0 || dev_set_has(live, sb.st_rdev) ||
		    ioctl(fd, LOOP_GET_STATUS64, &info) < 0 || strncmp((const char *)info.lo_file_name, "rsr:", 4)) {
			free(image);
			continue;
		}
		r = held_add(rep, path, NULL, image, -1);
	}
	closedir(d);
	return r;
}

int graft_list_held(struct rsr_ctx *ctx, const struct rsr_graft *g, struct rsr_graft_report *rep)
{
	_cleanup_free_ char *store = NULL;
	struct dev_set live = {0};
	int r;

	if (asprintf(&store, "%s%s/", g->prefix, RSR_GRAFT_IMAGES_DIR) < 0)
		return rsr_error(ctx, -ENOMEM, "out of memory");
	r = graft_live_mount_devs(&live);
	if (r < 0)
		return rsr_error_errno(ctx, r, "/proc/self/mountinfo");
	r = held_verity(&live, store, rep);
	if (r >= 0)
		r = held_loops(&live, store, rep);
	dev_set_free(&live);
	if (r == -E2BIG)
		return rsr_error(ctx, r, "device-mapper lists more devices than rsr reads (64 KiB of names)");
	return r < 0 ? rsr_error(ctx, r, "out of memory") : 0;
}

static int mount_erofs(struct rsr_ctx *ctx, const char *device, const char *target)
{
	_cleanup_close_ int fs = fsopen("erofs", FSOPEN_CLOEXEC);
	_cleanup_close_ int mnt = -1;
	char what[PATH_MAX + 64];

	snprintf(what, sizeof(what), "mount EROFS %s on %s", device, target);
	if (fs < 0)
		return rsr_error_errno(ctx, -errno, "%s (is EROFS in the kernel?)", what);
	if (fsconfig(fs, FSCONFIG_SET_STRING, "source", device, 0) < 0 ||
	    fsconfig(fs, FSCONFIG_SET_FLAG, "ro", NULL, 0) < 0 || fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
		return fs_error(ctx, fs, -errno, what);
	mnt = fsmount(fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID);
	if (mnt < 0)
		return fs_error(ctx, fs, -errno, what);
	if (move_mount(mnt, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) < 0)
		return rsr_error_errno(ctx, -errno, "%s", what);
	return 0;
}

int graft_mount_image(struct rsr_ctx *ctx, struct rsr_cryptex *cx, int file_fd, const char *target,
		      struct image_mount *ret)
{
	uint64_t img_off = rsr_cryptex_image_offset(cx), img_size = rsr_cryptex_image_size(cx);
	uint64_t tree_off = rsr_cryptex_tree_offset(cx), tree_size = rsr_cryptex_tree_size(cx);
	char label[LO_NAME_SIZE];
	struct image_mount m = {0};
	_cleanup_close_ int loopfd = -1;
	struct stat st;
	int r;

	snprintf(label, sizeof(label), "rsr:%s:%.16s", rsr_cryptex_name(cx), rsr_cryptex_root_hash_hex(cx));
	/*
	 * With dm-verity, one loop device covers the image and the hash tree
	 * after it; dm-verity reads both and checks every block as it is read.
	 */
	if (graft_verity_available() && tree_off >= img_off + img_size && (tree_off - img_off) % 4096 == 0 &&
	    tree_size > 0) {
		char prefix[128], name[128];
		dev_t dmdev;

		r = loop_attach(ctx, file_fd, img_off, tree_off + tree_size - img_off, label, m.device, &loopfd,
				&m.direct_io);
		if (r < 0)
			return r;
		if (fstat(loopfd, &st) < 0)
			return rsr_error_errno(ctx, -errno, "%s", m.device);
		snprintf(prefix, sizeof(prefix), "rsr-%s-%.16s", rsr_cryptex_name(cx), rsr_cryptex_root_hash_hex(cx));
		r = verity_create(ctx, cx, prefix, st.st_rdev, (tree_off - img_off) / 4096, name, m.device, &dmdev);
		if (r >= 0) {
			_cleanup_close_ int ctl = -1;

			r = mount_erofs(ctx, m.device, target);
			ctl = open("/dev/mapper/control", O_RDWR | O_CLOEXEC);
			/* Deferred: the device goes away with the mount that holds it. */
			if (ctl >= 0)
				dm_remove(ctl, name, r >= 0);
			if (r < 0)
				return r;
			m.verity = true;
			goto mounted;
		}
		if (r != -EOPNOTSUPP)
			return r;
		/* No verity target in this kernel: the blocks were verified before. */
		rsr_warn(ctx, "%s; mounting without dm-verity", rsr_ctx_error(ctx));
		rsr_ctx_clear_error(ctx);
		closep(&loopfd);
		loopfd = -1;
	}
	r = loop_attach(ctx, file_fd, img_off, img_size, label, m.device, &loopfd, &m.direct_io);
	if (r < 0)
		return r;
	r = mount_erofs(ctx, m.device, target);
	if (r < 0)
		return r;
mounted:
	if (stat(target, &st) < 0)
		return rsr_error_errno(ctx, -errno, "%s", target);
	m.dev = st.st_dev;
	*ret = m;
	return 0;
}

/*
 * The layers as one "lowerdir" value, uppermost first: ':' separates them
 * and a backslash escapes a ':' or a backslash inside a path. Kernels before 6.5 pass
 * fsconfig parameters on as one comma-separated option string, so a path
 * with a ',' cannot be given to them at all.
 */
static int join_layers(struct rsr_ctx *ctx, const char *const *layers, size_t n_layers, char **ret)
{
	size_t len = 1;
	char *s, *p;

	for (size_t i = 0; i < n_layers; i++) {
		if (strchr(layers[i], ','))
			return rsr_error(ctx, RSR_E_LIMIT,
					 "overlay layer %s: this kernel takes overlay layers only as one option "
					 "string, which cannot hold a ','",
					 layers[i]);
		len += 2 * strlen(layers[i]) + 1;
	}
	if (!(s = p = malloc(len)))
		return rsr_error(ctx, -ENOMEM, "out of memory");
	for (size_t i = 0; i < n_layers; i++) {
		if (i)
			*p++ = ':';
		for (const char *c = layers[i]; *c; c++) {
			if (*c == ':' || *c == '\\')
				*p++ = '\\';
			*p++ = *c;
		}
	}
	*p = '\0';
	*ret = s;
	return 0;
}

/*
 * One try at the overlay: each layer as its own "lowerdir+" parameter
 * (Linux 6.8 and later: no escaping), or all of them in one "lowerdir".
 * *ret_no_plus is set when the kernel may have refused "lowerdir+" itself:
 * unknown to overlayfs' parser (6.5 to 6.7, which says so in the context's
 * log), or passed on in the option string of kernels before 6.5, which fail
 * the create with EINVAL and log only to the kernel's own log.
 */
static int overlay_try(struct rsr_ctx *ctx, const char *const *layers, size_t n_layers, bool plus, int *ret_fd,
		       bool *ret_no_plus)
{
	_cleanup_close_ int fs = fsopen("overlay", FSOPEN_CLOEXEC);
	_cleanup_free_ char *joined = NULL;
	const char *what = "overlay";
	char log[512];
	int mnt, r;

	*ret_no_plus = false;
	if (fs < 0)
		return rsr_error_errno(ctx, -errno, "overlayfs (is it in the kernel?)");
	if (fsconfig(fs, FSCONFIG_SET_STRING, "source", "rsr", 0) < 0)
		return fs_error(ctx, fs, -errno, what);
	if (plus) {
		for (size_t i = 0; i < n_layers; i++)
			if (fsconfig(fs, FSCONFIG_SET_STRING, "lowerdir+", layers[i], 0) < 0) {
				what = layers[i];
				goto failed;
			}
	} else {
		if ((r = join_layers(ctx, layers, n_layers, &joined)) < 0)
			return r;
		if (fsconfig(fs, FSCONFIG_SET_STRING, "lowerdir", joined, 0) < 0)
			goto failed;
	}
	if (fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
		goto failed;
	mnt = fsmount(fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV);
	if (mnt < 0)
		return fs_error(ctx, fs, -errno, what);
	*ret_fd = mnt;
	return 0;
failed:
	r = -errno;
	fs_log(fs, log, sizeof(log));
	*ret_no_plus = plus && r == -EINVAL && (!log[0] || strstr(log, "lowerdir+"));
	return fs_error_log(ctx, r, what, log);
}

int graft_make_overlay(struct rsr_ctx *ctx, const char *const *layers, size_t n_layers, int *ret_fd, bool *ret_plus)
{
	bool no_plus;
	int r;

	*ret_plus = true;
	r = overlay_try(ctx, layers, n_layers, true, ret_fd, &no_plus);
	if (r >= 0 || !no_plus)
		return r;
	rsr_ctx_clear_error(ctx);
	rsr_info(ctx, "overlay: this kernel has no 'lowerdir+' (Linux 6.8 and later); layers go in one 'lowerdir'");
	*ret_plus = false;
	return overlay_try(ctx, layers, n_layers, false, ret_fd, &no_plus);
}

int graft_attach(struct rsr_ctx *ctx, int mnt_fd, const char *target, bool replace, bool *ret_stacked)
{
	*ret_stacked = false;
	if (replace) {
		if (move_mount(mnt_fd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_BENEATH) == 0) {
			/* Both stacks are there; lookups see the old one until it goes. */
			if (umount2(target, MNT_DETACH | UMOUNT_NOFOLLOW) < 0)
				/* The old stack still serves; the new one stays hidden beneath it until ungraft. */
				return rsr_error_errno(ctx, -errno, "%s: cannot detach the previous graft", target);
			return 0;
		}
		if (errno != EINVAL)
			return rsr_error_errno(ctx, -errno, "%s: cannot mount beneath the current graft", target);
		/* Mounting on top is just as gapless; the old stack stays shadowed until ungraft. */
		*ret_stacked = true;
	}
	if (move_mount(mnt_fd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) < 0)
		return rsr_error_errno(ctx, -errno, "%s: cannot mount the graft", target);
	return 0;
}

int graft_bind_private(struct rsr_ctx *ctx, const char *src, const char *target)
{
	_cleanup_close_ int fd = open_tree(AT_FDCWD, src, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
	struct mount_attr attr = {.propagation = MS_PRIVATE};

	if (fd < 0)
		return rsr_error_errno(ctx, -errno, "%s: cannot clone the base directory", src);
	/* Private before it is attached: a later graft on src must not propagate here. */
	if (mount_setattr(fd, "", AT_EMPTY_PATH, &attr, sizeof(attr)) < 0)
		return rsr_error_errno(ctx, -errno, "%s: cannot make the base bind private", src);
	if (move_mount(fd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) < 0)
		return rsr_error_errno(ctx, -errno, "%s: cannot bind the base at %s", src, target);
	return 0;
}

int graft_detach(struct rsr_ctx *ctx, const char *path)
{
	/* At once where nothing uses it; lazily (with its last user) where something does. */
	if (umount2(path, UMOUNT_NOFOLLOW) < 0 && umount2(path, MNT_DETACH | UMOUNT_NOFOLLOW) < 0)
		return rsr_error_errno(ctx, -errno, "%s: cannot detach", path);
	return 0;
}

bool graft_is_mount_point(const char *path)
{
	struct statx stx;

	if (statx(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &stx) < 0)
		return false;
	return (stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) && (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT);
}

int dev_set_add(struct dev_set *s, dev_t d)
{
	if (dev_set_has(s, d))
		return 0;
	if (s->n == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 64;
		dev_t *n = realloc(s->devs, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		s->devs = n;
		s->cap = cap;
	}
	s->devs[s->n++] = d;
	return 0;
}

bool dev_set_has(const struct dev_set *s, dev_t d)
{
	for (size_t i = 0; i < s->n; i++)
		if (s->devs[i] == d)
			return true;
	return false;
}

void dev_set_free(struct dev_set *s)
{
	free(s->devs);
	memset(s, 0, sizeof(*s));
}

int graft_live_mount_devs(struct dev_set *ret)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	struct dev_set s = {0};
	char *line = NULL;
	size_t cap = 0;
	int r = 0;

	if (!f)
		return -errno;
	while (getline(&line, &cap, f) > 0) {
		unsigned id, parent, ma, mi;
		if (sscanf(line, "%u %u %u:%u", &id, &parent, &ma, &mi) == 4 &&
		    (r = dev_set_add(&s, makedev(ma, mi))) < 0)
			break;
	}
	free(line);
	fclose(f);
	if (r < 0) {
		dev_set_free(&s);
		return r;
	}
	*ret = s;
	return 0;
}

void graft_format_dev(dev_t d, char buf[32])
{
	snprintf(buf, 32, "%u:%u", major(d), minor(d));
}

bool graft_parse_dev(const char *s, dev_t *ret)
{
	unsigned ma, mi;
	int n = 0;

	if (!s || sscanf(s, "%u:%u%n", &ma, &mi, &n) != 2 || s[n] != '\0')
		return false;
	*ret = makedev(ma, mi);
	return true;
}
