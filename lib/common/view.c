/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Views of a file's page cache, read in place where that is cheaper than a
 * copy.
 *
 * Reading a cached file with pread copies it out of the page cache: about a
 * tenth of the time SHA-256 takes over the same bytes. Mapping the file
 * saves the copy, but each 4 KiB page then costs a page fault, and under
 * some hypervisors that is dearer than the copy (bench/RESULTS.md). Where
 * the kernel holds the file in PMD-size folios (large folios: ext4 from
 * Linux 6.16, XFS, tmpfs with huge pages), one fault maps a whole 2 MiB
 * window, and reading in place wins. rsr_view_window() finds out which,
 * window by window: it asks the kernel to map the window's first page
 * (MADV_POPULATE_READ, which reports an I/O error rather than raising
 * SIGBUS) and then whether the window came in as one huge mapping
 * (PAGEMAP_SCAN, Linux 6.7). The mapping asks for huge pages
 * (MADV_HUGEPAGE), so a window not yet cached is read into one 2 MiB folio.
 *
 * What a mapping cannot do is survive the file shrinking under it: a
 * process that truncates the file while it is read in place gets the reader
 * killed by SIGBUS, where pread would have returned a short count. rsr reads
 * in place only files it has checked the size of, and only for hashing.
 */
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

/* The PAGEMAP_SCAN ioctl (linux/fs.h from Linux 6.7; older headers lack it). */
struct pm_scan_region {
	uint64_t start, end, categories;
};
struct pm_scan_arg {
	uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
	uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
#define PM_SCAN_IOCTL _IOWR('f', 16, struct pm_scan_arg)
#define PM_PAGE_IS_HUGE (UINT64_C(1) << 6)

#define WINDOW RSR_VIEW_WINDOW

static long scan_huge(int pagemap_fd, uintptr_t start, uintptr_t end, struct pm_scan_region *out)
{
	struct pm_scan_arg arg = {
	    .size = sizeof(arg),
	    .start = start,
	    .end = end,
	    .vec = (uintptr_t)out,
	    .vec_len = out ? 1 : 0,
	    .category_mask = PM_PAGE_IS_HUGE,
	    .return_mask = PM_PAGE_IS_HUGE,
	};

	return ioctl(pagemap_fd, PM_SCAN_IOCTL, &arg);
}

void rsr_view_open(struct rsr_view *v, int fd, uint64_t end)
{
	struct stat st;
	uint8_t *reserve, *base;
	size_t len;

	*v = (struct rsr_view){.pagemap_fd = -1};
	if (end == 0 || end > SIZE_MAX - 2 * (uint64_t)WINDOW || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
	    (uint64_t)st.st_size < end)
		return;
	v->pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	/* An empty scan tells whether the kernel has PAGEMAP_SCAN at all. */
	if (v->pagemap_fd < 0 || scan_huge(v->pagemap_fd, 0, 0, NULL) < 0)
		goto fail;
	/* Windows are aligned in the file and in memory, so that each can be one PMD. */
	len = (size_t)((end + WINDOW - 1) & ~(uint64_t)(WINDOW - 1));
	reserve = mmap(NULL, len + WINDOW, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (reserve == MAP_FAILED)
		goto fail;
	base = (uint8_t *)(((uintptr_t)reserve + WINDOW - 1) & ~(uintptr_t)(WINDOW - 1));
	if (mmap(base, len, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED) {
		munmap(reserve, len + WINDOW);
		goto fail;
	}
	if (base > reserve)
		munmap(reserve, (size_t)(base - reserve));
	if (base + len < reserve + len + WINDOW)
		munmap(base + len, (size_t)(reserve + len + WINDOW - (base + len)));
	/* Without transparent huge pages this fails, and no window will be huge. */
	(void)madvise(base, len, MADV_HUGEPAGE);
	v->base = base;
	v->len = len;
	v->size = end;
	return;
fail:
	rsr_view_close(v);
}

const uint8_t *rsr_view_window(struct rsr_view *v, uint64_t off, size_t len)
{
	uint64_t start = off & ~(uint64_t)(WINDOW - 1);
	struct pm_scan_region region = {0};

	if (!v->base || len == 0 || off > v->size || len > v->size - off || off + len > start + WINDOW)
		return NULL;
	/* A file cached in small folios is so throughout, as a rule: stop asking after a few. */
	if (__atomic_load_n(&v->misses, __ATOMIC_RELAXED) >= RSR_VIEW_MAX_MISSES)
		return NULL;
	if (madvise(v->base + (off & ~(uint64_t)4095), 4096, MADV_POPULATE_READ) < 0 ||
	    scan_huge(v->pagemap_fd, (uintptr_t)(v->base + start), (uintptr_t)(v->base + start + WINDOW), &region) !=
		1 ||
	    region.start != (uintptr_t)(v->base + start) || region.end != (uintptr_t)(v->base + start + WINDOW)) {
		__atomic_add_fetch(&v->misses, 1, __ATOMIC_RELAXED);
		return NULL;
	}
	__atomic_store_n(&v->misses, 0, __ATOMIC_RELAXED);
	return v->base + off;
}

void rsr_view_close(struct rsr_view *v)
{
	if (v->base)
		munmap(v->base, v->len);
	if (v->pagemap_fd >= 0)
		close(v->pagemap_fd);
	*v = (struct rsr_view){.pagemap_fd = -1};
}
