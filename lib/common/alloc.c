/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Large working buffers (hashing, patching, matching). The first touch of
 * every page of a fresh buffer is a page fault, and wherever filling page
 * tables is expensive, under a hypervisor that shadows them, a fault costs
 * more than hashing the page: on the second benchmark machine 8 MiB of fresh
 * 4 KiB pages took 29 ms to touch and 0.7 ms as 2 MiB pages
 * (bench/RESULTS.md). So buffers of 512 KiB or more are aligned to 2 MiB,
 * rounded up to a multiple of it, and marked for transparent huge pages,
 * which makes one fault of every 512. A kernel without them ignores the
 * advice and the buffer is an ordinary one. Allocated with aligned_alloc, so
 * free() releases them and allocation failure is the usual NULL.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

#define HUGE_SIZE ((size_t)2 << 20)

void *rsr_alloc_large(size_t n)
{
	size_t rounded;
	void *p;

	if (n < (HUGE_SIZE >> 2))
		return malloc(n ? n : 1);
	if (n > SIZE_MAX - HUGE_SIZE)
		return NULL;
	rounded = (n + HUGE_SIZE - 1) & ~(HUGE_SIZE - 1);
	p = aligned_alloc(HUGE_SIZE, rounded);
	if (p)
		(void)madvise(p, rounded, MADV_HUGEPAGE); /* advice: EINVAL without THP */
	return p;
}

void *rsr_calloc_large(size_t n, size_t size)
{
	void *p;

	if (size && n > SIZE_MAX / size)
		return NULL;
	p = rsr_alloc_large(n * size);
	if (p)
		memset(p, 0, n * size);
	return p;
}
