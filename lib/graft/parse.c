/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Small parsers of the graft module: os-release, /proc/PID/maps lines,
 * /proc/PID/cgroup, and the names slots and covered directories may have.
 */
#include <ctype.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/sysmacros.h>

#include "graft-internal.h"

/* Unquotes an os-release value in place (shell-like: "..." with \ escapes, or '...'). */
static void unquote(char *v)
{
	char *w = v, q = 0;

	if (*v == '"' || *v == '\'')
		q = *v++;
	for (; *v; v++) {
		if (q && *v == q)
			break;
		if (q == '"' && *v == '\\' && v[1])
			v++;
		*w++ = *v;
	}
	*w = '\0';
}

int rsr_graft_parse_os_release(const char *buf, size_t len, char **ret_name, char **ret_version, char **ret_build)
{
	_cleanup_free_ char *copy = strndup(buf, len);
	const char *keys[] = {"PRETTY_NAME", "NAME", "VERSION_ID", "VERSION", "BUILD_ID", "IMAGE_VERSION"};
	char *vals[ARRAY_SIZE(keys)] = {0};
	char *save = NULL, *name = NULL, *version = NULL, *build = NULL;
	int r = 0;

	if (!copy)
		return -ENOMEM;
	for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *eq;
		while (isspace((unsigned char)*line))
			line++;
		if (*line == '#' || !(eq = strchr(line, '=')))
			continue;
		*eq = '\0';
		for (char *e = eq + strlen(eq + 1); e > eq && isspace((unsigned char)e[0]);)
			*e-- = '\0';
		unquote(eq + 1);
		for (size_t i = 0; i < ARRAY_SIZE(keys); i++)
			if (!strcmp(line, keys[i]) && eq[1])
				vals[i] = eq + 1;
	}
	name = vals[0] ? strdup(vals[0]) : vals[1] ? strdup(vals[1]) : NULL;
	version = vals[2] ? strdup(vals[2]) : vals[3] ? strdup(vals[3]) : NULL;
	/* The build a cryptex names: BUILD_ID, else IMAGE_VERSION, else VERSION_ID. */
	build = vals[4] ? strdup(vals[4]) : vals[5] ? strdup(vals[5]) : vals[2] ? strdup(vals[2]) : NULL;
	if ((!name && (vals[0] || vals[1])) || (!version && (vals[2] || vals[3])) ||
	    (!build && (vals[4] || vals[5] || vals[2])))
		r = -ENOMEM;
	if (r < 0) {
		free(name);
		free(version);
		free(build);
		return r;
	}
	*ret_name = name;
	*ret_version = version;
	*ret_build = build;
	return 0;
}

bool graft_parse_maps_line(char *line, dev_t *ret_dev, uint64_t *ret_ino, char **ret_path)
{
	unsigned long long ino;
	unsigned ma, mi;
	int pos = 0;
	char *path, *nl;

	/* start-end perms offset MAJ:MIN inode   path */
	if (sscanf(line, "%*x-%*x %*s %*x %x:%x %llu %n", &ma, &mi, &ino, &pos) != 3 || pos == 0)
		return false;
	path = line + pos;
	while (*path == ' ')
		path++;
	if (ino == 0 || *path != '/')
		return false;
	nl = strchr(path, '\n');
	if (nl)
		*nl = '\0';
	/* The kernel marks unlinked files; the mapping still holds the old file. */
	size_t n = strlen(path);
	if (n > 10 && !strcmp(path + n - 10, " (deleted)"))
		path[n - 10] = '\0';
	*ret_dev = makedev(ma, mi);
	*ret_ino = ino;
	*ret_path = path;
	return true;
}

static bool is_unit_name(const char *s, size_t n)
{
	static const char *suffixes[] = {".service", ".scope", ".socket", ".mount", ".swap"};

	for (size_t i = 0; i < ARRAY_SIZE(suffixes); i++) {
		size_t l = strlen(suffixes[i]);
		if (n > l && !memcmp(s + n - l, suffixes[i], l))
			return true;
	}
	return false;
}

char *graft_unit_from_cgroup(const char *buf, bool *ret_system)
{
	const char *line = buf, *path = NULL;

	if (ret_system)
		*ret_system = false;

	/* The unified hierarchy ("0::/..."), else systemd's named one (v1). */
	while (line && *line) {
		const char *nl = strchr(line, '\n');
		if (!strncmp(line, "0::", 3)) {
			path = line + 3;
			break;
		}
		if (!path) {
			const char *p = strstr(line, ":name=systemd:");
			if (p && (!nl || p < nl))
				path = p + strlen(":name=systemd:");
		}
		line = nl ? nl + 1 : NULL;
	}
	if (!path)
		return NULL;
	/* The deepest component that is a unit: "system.slice/ssh.service" -> ssh.service. */
	const char *best = NULL;
	size_t best_len = 0;
	for (const char *c = path; *c && *c != '\n';) {
		while (*c == '/')
			c++;
		size_t n = strcspn(c, "/\n");
		if (n && is_unit_name(c, n)) {
			best = c;
			best_len = n;
		}
		c += n;
	}
	/*
	 * Only a unit of the system manager may be restarted as root: one in
	 * system.slice, with no user manager (user@UID.service) on the way, so
	 * a user's own "ssh.service" under user.slice never names the system's.
	 */
	if (ret_system && best && !strncmp(path, "/system.slice/", 14)) {
		bool user = false;
		for (const char *c = path; *c && *c != '\n' && c < best; c++)
			user |= (c == path || c[-1] == '/') && !strncmp(c, "user@", 5);
		*ret_system = !user;
	}
	return best ? strndup(best, best_len) : NULL;
}

char *graft_read_small(const char *path, bool first_line)
{
	char buf[PATH_MAX + 16];
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0 || (n = read(fd, buf, sizeof(buf) - 1)) < 0 || (first_line && n == 0))
		return NULL;
	buf[n] = '\0';
	if (first_line)
		buf[strcspn(buf, "\n")] = '\0';
	return strdup(buf);
}

bool graft_slot_name_valid(const char *s)
{
	return rsr_valid_slot_name(s);
}

int graft_parse_covers(const char *buf, size_t len, char ***ret, size_t *ret_n, size_t *ret_line)
{
	char **v = NULL;
	size_t n = 0, line = 0;
	const char *p = buf, *end = buf + len;

	*ret = NULL;
	*ret_n = 0;
	*ret_line = 0;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p)), *e = nl ? nl : end, *k, *val;
		size_t kl, vl;
		line++;
		/* Trim; skip blank lines and comments. */
		while (p < e && (*p == ' ' || *p == '\t'))
			p++;
		while (e > p && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
			e--;
		if (p == e || *p == '#')
			goto next;
		k = p;
		while (p < e && *p != '=' && *p != ' ' && *p != '\t')
			p++;
		kl = (size_t)(p - k);
		while (p < e && (*p == ' ' || *p == '\t'))
			p++;
		if (p == e || *p != '=' || kl != 5 || strncmp(k, "cover", 5))
			goto bad;
		p++;
		while (p < e && (*p == ' ' || *p == '\t'))
			p++;
		val = p;
		if (val < e && *val == '/')
			val++;
		vl = (size_t)(e - val);
		if (vl == 0 || vl > 255 || memchr(val, '\0', vl))
			goto bad;
		char *name = strndup(val, vl);
		if (!name)
			goto oom;
		if (!graft_cover_name_valid(name)) {
			free(name);
			goto bad;
		}
		char **nv = realloc(v, (n + 1) * sizeof(*v));
		if (!nv) {
			free(name);
			goto oom;
		}
		v = nv;
		v[n++] = name;
	next:
		p = nl ? nl + 1 : end;
	}
	*ret = v;
	*ret_n = n;
	return 0;
bad:
	*ret_line = line;
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
	return -EINVAL;
oom:
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
	return -ENOMEM;
}

bool graft_cover_name_valid(const char *s)
{
	static const char *refused[] = {"run", "proc", "sys", "dev", "tmp", "var", "etc"};

	if (!s || !*s || s[0] == '.' || strchr(s, '/'))
		return false;
	for (size_t i = 0; i < ARRAY_SIZE(refused); i++)
		if (!strcmp(s, refused[i]))
			return false;
	return true;
}
