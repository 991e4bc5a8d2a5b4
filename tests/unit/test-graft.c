/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of the graft module's parsers and device-state handling that
 * need no mounts: os-release, /proc maps and cgroup lines, names, device
 * numbers, and install/uninstall/status on a scratch root with no keys.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <cmocka.h>

#include "../../lib/graft/graft-internal.h"

static void test_os_release(void **state)
{
	const char *a = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME='Debian 12'\nVERSION_ID=\"12\"\n# BUILD_ID=no\n"
			"  BUILD_ID = ignored\nBUILD_ID=\"2026.11\\\"x\"  \nIMAGE_VERSION=9\n";
	char *name, *version, *build;

	assert_int_equal(rsr_graft_parse_os_release(a, strlen(a), &name, &version, &build), 0);
	assert_string_equal(name, "Debian 12");
	assert_string_equal(version, "12");
	assert_string_equal(build, "2026.11\"x");
	free(name), free(version), free(build);

	/* No BUILD_ID: IMAGE_VERSION, else VERSION_ID. */
	const char *b = "NAME=x\nVERSION_ID=12\nIMAGE_VERSION=1.2.3\n";
	assert_int_equal(rsr_graft_parse_os_release(b, strlen(b), &name, &version, &build), 0);
	assert_string_equal(name, "x");
	assert_string_equal(build, "1.2.3");
	free(name), free(version), free(build);
	const char *c = "NAME=x\nVERSION=\"12 (bookworm)\"\nVERSION_ID=12";
	assert_int_equal(rsr_graft_parse_os_release(c, strlen(c), &name, &version, &build), 0);
	assert_string_equal(version, "12");
	assert_string_equal(build, "12");
	free(name), free(version), free(build);

	/* Nothing usable; also a buffer that is not NUL-terminated. */
	const char d[] = {'B', 'U', 'I', 'L', 'D', '_', 'I', 'D', '='};
	assert_int_equal(rsr_graft_parse_os_release(d, sizeof(d), &name, &version, &build), 0);
	assert_null(name);
	assert_null(version);
	assert_null(build);
	assert_int_equal(rsr_graft_parse_os_release("", 0, &name, &version, &build), 0);
	assert_null(build);
}

static void test_maps_line(void **state)
{
	char l1[] = "7f2a1c000000-7f2a1c0c5000 r--p 00000000 fe:00 14884871                   "
		    "/usr/lib/x86_64-linux-gnu/libcrypto.so.3\n";
	char l2[] = "55cbe6720000-55cbe6722000 r-xp 00002000 00:27 60   /lib/x (deleted)\n";
	char l3[] = "7ffd5b1f0000-7ffd5b211000 rw-p 00000000 00:00 0                          [stack]\n";
	char l4[] = "7ffd5b1f0000-7ffd5b211000 rw-p 00000000 00:00 0\n";
	char l5[] = "garbage\n";
	char l6[] = "1000-2000 r--p 00000000 103:1ff 42 /with space/name\n";
	dev_t dev;
	uint64_t ino;
	char *path;

	assert_true(graft_parse_maps_line(l1, &dev, &ino, &path));
	assert_int_equal(major(dev), 0xfe);
	assert_int_equal(minor(dev), 0);
	assert_int_equal(ino, 14884871);
	assert_string_equal(path, "/usr/lib/x86_64-linux-gnu/libcrypto.so.3");
	assert_true(graft_parse_maps_line(l2, &dev, &ino, &path));
	assert_int_equal(minor(dev), 0x27);
	assert_string_equal(path, "/lib/x");
	assert_false(graft_parse_maps_line(l3, &dev, &ino, &path));
	assert_false(graft_parse_maps_line(l4, &dev, &ino, &path));
	assert_false(graft_parse_maps_line(l5, &dev, &ino, &path));
	assert_true(graft_parse_maps_line(l6, &dev, &ino, &path));
	assert_int_equal(major(dev), 0x103);
	assert_int_equal(minor(dev), 0x1ff);
	assert_string_equal(path, "/with space/name");
}

static void expect_unit_system(const char *cgroup, const char *unit, bool system)
{
	bool sys = !system;
	char *u = graft_unit_from_cgroup(cgroup, &sys);
	assert_true(sys == system);
	if (!unit) {
		assert_null(u);
		return;
	}
	assert_non_null(u);
	assert_string_equal(u, unit);
	free(u);
	/* Without the flag, the same unit. */
	u = graft_unit_from_cgroup(cgroup, NULL);
	assert_string_equal(u, unit);
	free(u);
}

static void expect_unit(const char *cgroup, const char *unit)
{
	expect_unit_system(cgroup, unit, unit && !strncmp(cgroup, "0::/system.slice/", 17));
}

static void test_cgroup_unit(void **state)
{
	expect_unit("0::/system.slice/ssh.service\n", "ssh.service");
	expect_unit("0::/user.slice/user-0.slice/session-3.scope\n", "session-3.scope");
	expect_unit("0::/system.slice/app.service/payload/worker\n", "app.service");
	expect_unit("0::/system.slice/a.service/b.scope\n", "b.scope");
	expect_unit("0::/\n", NULL);
	expect_unit("0::/init.scope", "init.scope");
	expect_unit("", NULL);
	/* cgroup v1: systemd's named hierarchy. */
	expect_unit_system("12:memory:/x\n1:name=systemd:/system.slice/cron.service\n", "cron.service", true);
	expect_unit_system("1:name=systemd:/\n0::/system.slice/nginx.service\n", "nginx.service", true);
	expect_unit("4:memory:/process_api/98065\n0::/\n", NULL);
	/*
	 * A user's manager runs its own units: a user's "ssh.service" must not
	 * name the system's, wherever it sits.
	 */
	expect_unit_system("0::/user.slice/user-1000.slice/user@1000.service/app.slice/ssh.service\n", "ssh.service",
			   false);
	expect_unit_system("0::/system.slice/user@1000.service/app.slice/ssh.service\n", "ssh.service", false);
	expect_unit_system("0::/system.slice/x/user@1000.service/ssh.service\n", "ssh.service", false);
	expect_unit_system("0::/machine.slice/ssh.service\n", "ssh.service", false);
	expect_unit_system("0::/system.slice/notuser@1.service\n", "notuser@1.service", true);
}

static void test_names(void **state)
{
	assert_true(graft_slot_name_valid("os"));
	assert_true(graft_slot_name_valid("libssl3"));
	assert_true(graft_slot_name_valid("a-b_c.d"));
	assert_false(graft_slot_name_valid(""));
	assert_false(graft_slot_name_valid(NULL));
	assert_false(graft_slot_name_valid(".hidden"));
	assert_false(graft_slot_name_valid("a/b"));
	assert_false(graft_slot_name_valid("a b"));
	assert_false(graft_slot_name_valid("0123456789012345678901234567890123456789012345678901234567890123456789"));

	assert_true(graft_cover_name_valid("usr"));
	assert_true(graft_cover_name_valid("opt"));
	assert_false(graft_cover_name_valid("run"));
	assert_false(graft_cover_name_valid("etc"));
	assert_false(graft_cover_name_valid("proc"));
	assert_false(graft_cover_name_valid(".."));
	assert_false(graft_cover_name_valid("usr/lib"));
	assert_false(graft_cover_name_valid(""));
}

static void expect_covers(const char *conf, int want, size_t want_line, const char *first)
{
	char **v = NULL;
	size_t n = 0, line = 0;
	int r = graft_parse_covers(conf, strlen(conf), &v, &n, &line);

	assert_int_equal(r, want);
	assert_int_equal(line, want_line);
	if (first) {
		assert_true(n > 0);
		assert_string_equal(v[0], first);
	} else {
		assert_int_equal(n, 0);
	}
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static void test_covers_conf(void **state)
{
	expect_covers("", 0, 0, NULL);
	expect_covers("# nothing\n\n   \n", 0, 0, NULL);
	expect_covers("cover = /srv\n", 0, 0, "srv");
	expect_covers("  cover=srv  \r\n# c\ncover = /lib\n", 0, 0, "srv");
	expect_covers("cover = /srv", 0, 0, "srv"); /* no final newline */
	expect_covers("\ncover = /etc\n", -EINVAL, 2, NULL);
	expect_covers("cover = /usr/lib\n", -EINVAL, 1, NULL);
	expect_covers("cover = /..\n", -EINVAL, 1, NULL);
	expect_covers("cover =\n", -EINVAL, 1, NULL);
	expect_covers("covers = /srv\n", -EINVAL, 1, NULL);
	expect_covers("cover /srv\n", -EINVAL, 1, NULL);
	expect_covers("cover = /srv\nbogus\n", -EINVAL, 2, NULL);
}

static void test_dev(void **state)
{
	char buf[32];
	dev_t d;

	graft_format_dev(makedev(7, 3), buf);
	assert_string_equal(buf, "7:3");
	assert_true(graft_parse_dev("259:65536", &d));
	assert_int_equal(major(d), 259);
	assert_int_equal(minor(d), 65536);
	assert_false(graft_parse_dev("7:", &d));
	assert_false(graft_parse_dev("7:3x", &d));
	assert_false(graft_parse_dev("", &d));
	assert_false(graft_parse_dev(NULL, &d));

	struct dev_set s = {0};
	for (unsigned i = 0; i < 200; i++)
		assert_int_equal(dev_set_add(&s, makedev(i, i)), 0);
	assert_int_equal(dev_set_add(&s, makedev(5, 5)), 0);
	assert_int_equal(s.n, 200);
	assert_true(dev_set_has(&s, makedev(199, 199)));
	assert_false(dev_set_has(&s, makedev(1, 2)));
	dev_set_free(&s);

	/* The mounts this process sees include its root. */
	struct stat st;
	assert_int_equal(graft_live_mount_devs(&s), 0);
	assert_int_equal(stat("/", &st), 0);
	assert_true(dev_set_has(&s, st.st_dev));
	dev_set_free(&s);
}

static void test_verity_table(void **state)
{
	char buf[512];
	const char *root = "52dd1945edf4161753fb344929f16efc052477d43010b82cca89de1c90d3c4ff";

	int n = graft_verity_table(buf, sizeof(buf), makedev(7, 3), 1449, 1450, root, "00ff");
	assert_int_equal(n, (int)strlen(buf));
	assert_string_equal(buf, "1 7:3 7:3 4096 4096 1449 1450 sha256 "
				 "52dd1945edf4161753fb344929f16efc052477d43010b82cca89de1c90d3c4ff 00ff");
	graft_verity_table(buf, sizeof(buf), makedev(259, 300), 1, 1, root, "");
	assert_string_equal(buf, "1 259:300 259:300 4096 4096 1 1 sha256 "
				 "52dd1945edf4161753fb344929f16efc052477d43010b82cca89de1c90d3c4ff -");
	/* Too small a buffer is reported, not overrun. */
	assert_true(graft_verity_table(buf, 16, makedev(7, 3), 1, 1, root, "") >= 16);
	assert_int_equal(strlen(buf), 15);
}

static void test_scratch_root(void **state)
{
	char tmpl[] = "/tmp/rsr-graft-unit.XXXXXX";
	char *root = mkdtemp(tmpl), cmd[256];
	struct rsr_ctx *ctx;
	struct rsr_graft *g;
	struct rsr_graft_report *rep;

	assert_non_null(root);
	assert_int_equal(rsr_ctx_new(&ctx), 0);
	/* A missing root is an error naming it. */
	assert_int_equal(rsr_graft_open(ctx, "/nonexistent/rsr-root", &g), -ENOENT);
	assert_non_null(strstr(rsr_ctx_error(ctx), "/nonexistent/rsr-root"));

	assert_int_equal(rsr_graft_open(ctx, root, &g), 0);
	assert_string_equal(rsr_graft_root(g), root);
	/* Nothing installed, nothing grafted: status is empty, and nothing was written. */
	assert_int_equal(rsr_graft_status(ctx, g, &rep), 0);
	assert_int_equal(rep->n_slots, 0);
	assert_int_equal(rep->n_grafted_paths, 0);
	assert_int_equal(rep->n_stale, 0);
	assert_null(rep->base_build);
	rsr_graft_report_free(rep);
	/* A file that is not a cryptex is refused by install. */
	snprintf(cmd, sizeof(cmd), "%s/x.cptx", root);
	FILE *f = fopen(cmd, "w");
	assert_non_null(f);
	fputs("not a cryptex", f);
	fclose(f);
	assert_true(rsr_graft_install(ctx, g, cmd, NULL) < 0);
	assert_int_equal(rsr_graft_uninstall(ctx, g, "os"), -ENOENT);
	assert_int_equal(rsr_graft_uninstall(ctx, g, "../x"), -EINVAL);
	/* Ungraft of nothing writes only the run-time state. */
	assert_int_equal(rsr_graft_deactivate(ctx, g), 0);
	snprintf(cmd, sizeof(cmd), "%s/" RSR_GRAFT_STATE_FILE, root);
	assert_int_equal(access(cmd, F_OK), 0);
	rsr_graft_free(g);

	/* An os-release gives the base identity. */
	snprintf(cmd, sizeof(cmd), "mkdir -p %s/etc && printf 'NAME=t\\nBUILD_ID=b7\\n' >%s/etc/os-release", root,
		 root);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(rsr_graft_open(ctx, root, &g), 0);
	assert_int_equal(rsr_graft_status(ctx, g, &rep), 0);
	assert_string_equal(rep->base_build, "b7");
	assert_string_equal(rep->base_name, "t");
	rsr_graft_report_free(rep);
	rsr_graft_free(g);

	snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
	assert_int_equal(system(cmd), 0);
	rsr_ctx_free(ctx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_os_release),	 cmocka_unit_test(test_maps_line),
	    cmocka_unit_test(test_cgroup_unit),	 cmocka_unit_test(test_names),
	    cmocka_unit_test(test_dev),		 cmocka_unit_test(test_verity_table),
	    cmocka_unit_test(test_scratch_root), cmocka_unit_test(test_covers_conf),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
