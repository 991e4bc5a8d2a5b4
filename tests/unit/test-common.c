/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Unit tests of the common helpers: errors, hex, atomic files, parallel-for. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>

#include "internal.h"

static void test_strerror(void **state)
{
	assert_string_equal(rsr_strerror(RSR_E_DIGEST), "content does not match its hash");
	assert_string_equal(rsr_strerror(-ENOENT), strerror(ENOENT));
	assert_string_equal(rsr_strerror(-99999), "unknown error");
}

static void test_error_message(void **state)
{
	struct rsr_ctx *ctx;

	assert_int_equal(rsr_ctx_new(&ctx), 0);
	assert_string_equal(rsr_ctx_error(ctx), "no error");
	assert_int_equal(rsr_error(ctx, RSR_E_FORMAT, "x: bad %d", 7), RSR_E_FORMAT);
	assert_string_equal(rsr_ctx_error(ctx), "x: bad 7");
	assert_int_equal(rsr_error_prefix(ctx, RSR_E_FORMAT, "file %s", "f"), RSR_E_FORMAT);
	assert_string_equal(rsr_ctx_error(ctx), "file f: x: bad 7");
	rsr_error_errno(ctx, -ENOENT, "open %s", "g");
	assert_string_equal(rsr_ctx_error(ctx), "open g: No such file or directory");
	rsr_ctx_free(ctx);
}

/* A progress label is the operation and the last component of the path, never a directory. */
static void test_progress_label(void **state)
{
	char buf[24];

	(void)state;
	assert_string_equal(rsr_progress_label(buf, sizeof(buf), "hashing", "dev/var/lib/rsr/tuf/d/x.rsrp"),
			    "hashing x.rsrp");
	assert_string_equal(rsr_progress_label(buf, sizeof(buf), "verifying", "a.cptx"), "verifying a.cptx");
	assert_string_equal(rsr_progress_label(buf, sizeof(buf), "hashing", "dir/"), "hashing");
	assert_string_equal(rsr_progress_label(buf, sizeof(buf), "downloading", "/a-rather-long-file-name.rsrp"),
			    "downloading a-rather-lo");
}

static void test_hex(void **state)
{
	uint8_t in[4] = {0x00, 0xab, 0x7f, 0xff}, out[4];
	char hex[9];

	rsr_hex_encode(in, 4, hex);
	assert_string_equal(hex, "00ab7fff");
	assert_true(rsr_hex_decode("00AB7fff", out, 4));
	assert_memory_equal(in, out, 4);
	assert_false(rsr_hex_decode("00ab7ff", out, 4));
	assert_false(rsr_hex_decode("00ab7fff0", out, 4));
	assert_false(rsr_hex_decode("00ab7fgf", out, 4));
}

static void test_atomic(void **state)
{
	struct rsr_ctx *ctx;
	char dir[] = "/tmp/rsr-test-XXXXXX", path[64];
	char *buf;
	size_t len;
	struct stat st;
	struct rsr_atomic_file *af;

	assert_int_equal(rsr_ctx_new(&ctx), 0);
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/f", dir);
	assert_int_equal(rsr_write_file_atomic(ctx, path, "one", 3, 0640), 0);
	assert_int_equal(rsr_read_file(ctx, path, 100, &buf, &len), 0);
	assert_int_equal(len, 3);
	assert_string_equal(buf, "one");
	free(buf);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0640);
	/* An aborted replacement leaves the old file and no temporary. */
	assert_int_equal(rsr_atomic_open(ctx, path, 0644, &af), 0);
	assert_int_equal(rsr_write_all(af->fd, "two", 3), 0);
	rsr_atomic_abort(af);
	assert_int_equal(rsr_read_file(ctx, path, 100, &buf, &len), 0);
	assert_string_equal(buf, "one");
	free(buf);
	/* Bounded read refuses a larger file. */
	assert_int_equal(rsr_read_file(ctx, path, 2, &buf, &len), RSR_E_LIMIT);
	unlink(path);
	assert_int_equal(rmdir(dir), 0); /* fails if a temporary was left */
	rsr_ctx_free(ctx);
}

static void test_mkdir_p(void **state)
{
	struct rsr_ctx *ctx;
	char dir[] = "/tmp/rsr-mkdir-XXXXXX", path[96], file[96];
	struct stat st;
	int fd;

	assert_int_equal(rsr_ctx_new(&ctx), 0);
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/a//b/c/", dir);
	assert_int_equal(rsr_mkdir_p_at(ctx, AT_FDCWD, path, NULL), 0);
	assert_int_equal(rsr_mkdir_p_at(ctx, AT_FDCWD, path, NULL), 0); /* existing is fine */
	snprintf(path, sizeof(path), "%s/a/b/c", dir);
	assert_int_equal(stat(path, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	fd = open(dir, O_RDONLY | O_DIRECTORY);
	assert_int_equal(rsr_mkdir_p_at(ctx, fd, "x/y", NULL), 0);
	snprintf(file, sizeof(file), "%s/x/y/f", dir);
	close(open(file, O_WRONLY | O_CREAT, 0644));
	/* A file in the way is an error that names the path. */
	assert_int_equal(rsr_mkdir_p_at(ctx, fd, "x/y/f/z", "root:"), -ENOTDIR);
	assert_non_null(strstr(rsr_ctx_error(ctx), "root:x/y/f/z"));
	close(fd);
	snprintf(path, sizeof(path), "rm -rf '%s'", dir);
	assert_int_equal(system(path), 0);
	rsr_ctx_free(ctx);
}

/* The device lock: nested takes share one lock, a second context is refused
 * or waits as long as it is told, and the lock stays inside the root. */
static void test_lock(void **state)
{
	struct rsr_ctx *a, *b;
	struct rsr_lock *l1, *l2, *l3;
	char dir[] = "/tmp/rsr-lock-XXXXXX", path[128], cmd[160];
	struct stat st;
	time_t t0;
	int rootfd;

	assert_int_equal(rsr_ctx_new(&a), 0);
	assert_int_equal(rsr_ctx_new(&b), 0);
	assert_non_null(mkdtemp(dir));
	rootfd = open(dir, O_RDONLY | O_DIRECTORY);
	assert_true(rootfd >= 0);

	assert_int_equal(rsr_lock_take(a, rootfd, dir, &l1), 0);
	snprintf(path, sizeof(path), "%s/var/lib/rsr/lock", dir);
	assert_int_equal(lstat(path, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0600);
	/* The same context again: the same lock, no deadlock. */
	assert_int_equal(rsr_lock_take(a, rootfd, dir, &l2), 0);
	assert_ptr_equal(l1, l2);
	/* Another context: refused at once, naming this process. */
	assert_int_equal(rsr_ctx_get_lock_wait(b), 0);
	assert_int_equal(rsr_lock_take(b, rootfd, dir, &l3), RSR_E_BUSY);
	snprintf(cmd, sizeof(cmd), "(pid %d: ", (int)getpid());
	assert_non_null(strstr(rsr_ctx_error(b), cmd));
	assert_non_null(strstr(rsr_ctx_error(b), "try again when it ends"));
	/* A bounded wait ends with a message that says how long it waited. */
	rsr_ctx_set_lock_wait(b, 1);
	t0 = time(NULL);
	assert_int_equal(rsr_lock_take(b, rootfd, dir, &l3), RSR_E_BUSY);
	assert_true(time(NULL) - t0 >= 1);
	assert_non_null(strstr(rsr_ctx_error(b), "after 1 s of waiting"));
	/* Released once per take: still held after the first release. */
	rsr_lock_release(l2);
	assert_int_equal(rsr_lock_take(b, rootfd, dir, &l3), RSR_E_BUSY);
	rsr_lock_release(l1);
	assert_int_equal(rsr_lock_take(b, rootfd, dir, &l3), 0);
	rsr_lock_release(l3);
	rsr_ctx_set_lock_wait(b, -5);
	assert_int_equal(rsr_ctx_get_lock_wait(b), -1);

	/* A lock file with a wider mode is narrowed; one that is not a file is refused. */
	assert_int_equal(chmod(path, 0666), 0);
	assert_int_equal(rsr_lock_take(a, rootfd, dir, &l1), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	rsr_lock_release(l1);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(mkdir(path, 0700), 0);
	assert_int_equal(rsr_lock_take(a, rootfd, dir, &l1), -EISDIR);
	assert_int_equal(rmdir(path), 0);
	assert_int_equal(symlink("/tmp", path), 0);
	assert_true(rsr_lock_take(a, rootfd, dir, &l1) < 0);
	assert_int_equal(unlink(path), 0);

	/* A symbolic link on the way out of the root is not followed. */
	snprintf(cmd, sizeof(cmd), "rm -rf '%s/var' && ln -s /tmp '%s/var'", dir, dir);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(rsr_lock_take(a, rootfd, dir, &l1), RSR_E_STATE);
	assert_non_null(strstr(rsr_ctx_error(a), "not a directory"));

	/* Freeing a context releases what it still holds. */
	snprintf(cmd, sizeof(cmd), "rm -f '%s/var'", dir);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(rsr_lock_take(a, rootfd, dir, &l1), 0);
	rsr_ctx_free(a);
	rsr_ctx_set_lock_wait(b, 0);
	assert_int_equal(rsr_lock_take(b, rootfd, dir, &l3), 0);
	rsr_lock_release(l3);

	close(rootfd);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
	rsr_ctx_free(b);
}

struct sum {
	uint64_t vals[1000];
};

static int add_fn(void *arg, size_t i, unsigned worker)
{
	struct sum *s = arg;
	s->vals[i] = i * i;
	return i == 777 ? -EIO : 0;
}

static int sq_fn(void *arg, size_t i, unsigned worker)
{
	struct sum *s = arg;
	s->vals[i] = i * i;
	return 0;
}

static void test_parallel(void **state)
{
	struct sum s = {{0}};

	assert_int_equal(rsr_parallel_for(4, 1000, sq_fn, &s), 0);
	for (size_t i = 0; i < 1000; i++)
		assert_int_equal(s.vals[i], i * i);
	assert_int_equal(rsr_parallel_for(4, 1000, add_fn, &s), -EIO);
	assert_int_equal(rsr_parallel_for(1, 1000, add_fn, &s), -EIO);
	assert_int_equal(rsr_parallel_for(3, 0, add_fn, &s), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_strerror), cmocka_unit_test(test_error_message),
	    cmocka_unit_test(test_hex),	     cmocka_unit_test(test_progress_label),
	    cmocka_unit_test(test_atomic),   cmocka_unit_test(test_parallel),
	    cmocka_unit_test(test_mkdir_p),  cmocka_unit_test(test_lock),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
