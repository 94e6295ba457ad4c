/* SPDX-License-Identifier: MIT */
/*
 * Dirty-page set: what changed in guest RAM since the last collection.
 *
 * A bitmap for O(1) de-duplication plus the list of set page frame numbers, so
 * that turning the set into runs costs O(dirty), not O(RAM). Hypervisor
 * backends fill it (kemari_dirty__mark*), the engine turns it into runs.
 */
#ifndef KEMARI_DIRTY_H
#define KEMARI_DIRTY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A run of consecutive guest pages: [pfn, pfn + npages). */
struct kemari_run {
	uint64_t pfn;
	uint32_t npages;
	uint32_t reserved;
};

struct kemari_dirty {
	uint64_t npages;  /* pages of guest RAM covered */
	uint64_t *bitmap; /* one bit per page */
	uint64_t *pfns;	  /* set pages, in marking order */
	uint64_t count;	  /* number of entries in pfns */
};

int kemari_dirty__init(struct kemari_dirty *d, uint64_t npages);
void kemari_dirty__fini(struct kemari_dirty *d);

/* Mark one page; out-of-range pfns are ignored and reported with -ERANGE. */
int kemari_dirty__mark(struct kemari_dirty *d, uint64_t pfn);
/* Mark every page whose bit is set in a bitmap covering [base, base + n). */
void kemari_dirty__mark_bitmap(struct kemari_dirty *d, const uint64_t *bm,
			       uint64_t base, uint64_t n);
/* Mark all pages (full sync). */
void kemari_dirty__mark_all(struct kemari_dirty *d);
static inline bool kemari_dirty__test(const struct kemari_dirty *d,
				      uint64_t pfn)
{
	return pfn < d->npages && (d->bitmap[pfn / 64] >> (pfn % 64)) & 1;
}

/*
 * Sort the set and coalesce adjacent pages into runs of at most max_pages
 * pages (0: unlimited). *runs is (re)allocated by the callee and owned by the
 * caller; returns the number of runs or a negative errno.
 */
long kemari_dirty__runs(struct kemari_dirty *d, struct kemari_run **runs,
			size_t *cap, uint32_t max_pages);
/* Empty the set in O(count). */
void kemari_dirty__clear(struct kemari_dirty *d);

#endif
