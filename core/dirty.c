// SPDX-License-Identifier: MIT
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kemari/dirty.h"

int kemari_dirty__init(struct kemari_dirty *d, uint64_t npages)
{
	memset(d, 0, sizeof(*d));
	d->npages = npages;
	d->bitmap = calloc((npages + 63) / 64, sizeof(uint64_t));
	d->pfns = malloc(npages * sizeof(uint64_t));
	if (!d->bitmap || !d->pfns) {
		kemari_dirty__fini(d);
		return -ENOMEM;
	}
	return 0;
}

void kemari_dirty__fini(struct kemari_dirty *d)
{
	free(d->bitmap);
	free(d->pfns);
	d->bitmap = NULL;
	d->pfns = NULL;
	d->count = 0;
}

int kemari_dirty__mark(struct kemari_dirty *d, uint64_t pfn)
{
	uint64_t bit;

	if (pfn >= d->npages)
		return -ERANGE;
	bit = 1ULL << (pfn % 64);
	if (!(d->bitmap[pfn / 64] & bit)) {
		d->bitmap[pfn / 64] |= bit;
		d->pfns[d->count++] = pfn;
	}
	return 0;
}

void kemari_dirty__mark_bitmap(struct kemari_dirty *d, const uint64_t *bm,
			       uint64_t base, uint64_t n)
{
	for (uint64_t w = 0; w < (n + 63) / 64; w++) {
		uint64_t v = bm[w];

		while (v) {
			uint64_t pfn = base + w * 64 + __builtin_ctzll(v);

			v &= v - 1;
			if (pfn < base + n)
				kemari_dirty__mark(d, pfn);
		}
	}
}

void kemari_dirty__mark_all(struct kemari_dirty *d)
{
	for (uint64_t pfn = 0; pfn < d->npages; pfn++)
		kemari_dirty__mark(d, pfn);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

long kemari_dirty__runs(struct kemari_dirty *d, struct kemari_run **runs,
			size_t *cap, uint32_t max_pages)
{
	size_t n = 0;

	if (!max_pages)
		max_pages = UINT32_MAX;
	/*
	 * Marking order is arbitrary (dirty rings interleave vCPUs); sort so
	 * neighbours coalesce. The set is usually small, so this stays
	 * O(dirty log dirty) and never walks the whole bitmap.
	 */
	qsort(d->pfns, d->count, sizeof(uint64_t), cmp_u64);
	for (uint64_t i = 0; i < d->count; i++) {
		uint64_t pfn = d->pfns[i];

		if (n && (*runs)[n - 1].pfn + (*runs)[n - 1].npages == pfn &&
		    (*runs)[n - 1].npages < max_pages) {
			(*runs)[n - 1].npages++;
			continue;
		}
		if (n == *cap) {
			size_t ncap = *cap ? *cap * 2 : 64;
			struct kemari_run *r =
				realloc(*runs, ncap * sizeof(*r));

			if (!r)
				return -ENOMEM;
			*runs = r;
			*cap = ncap;
		}
		(*runs)[n].pfn = pfn;
		(*runs)[n].npages = 1;
		(*runs)[n].reserved = 0;
		n++;
	}
	return (long)n;
}

void kemari_dirty__clear(struct kemari_dirty *d)
{
	if (d->count > d->npages / 64) {
		memset(d->bitmap, 0, (d->npages + 63) / 64 * sizeof(uint64_t));
	} else {
		for (uint64_t i = 0; i < d->count; i++)
			d->bitmap[d->pfns[i] / 64] = 0;
	}
	d->count = 0;
}
