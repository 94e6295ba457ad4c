// SPDX-License-Identifier: MIT
/* The receive region a peer advertised (see region.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "region.h"

int xp_region__set(struct xp_region *g, uint64_t len, uint64_t piece,
		   uint32_t n, const struct xp_remote *r)
{
	struct xp_remote *copy = malloc((size_t)n * sizeof(*copy));

	if (!copy)
		return -ENOMEM;
	memcpy(copy, r, (size_t)n * sizeof(*copy));
	free(g->r);
	*g = (struct xp_region){
		.known = true, .len = len, .piece = piece, .n = n, .r = copy
	};
	return 0;
}

void xp_region__fini(struct xp_region *g)
{
	free(g->r);
	memset(g, 0, sizeof(*g));
}

uint64_t xp_region__addr(const struct xp_region *g, uint32_t rmr, uint64_t off)
{
	return g->r[rmr].addr + (off - (uint64_t)rmr * g->piece);
}

uint64_t xp_region__key(const struct xp_region *g, uint32_t rmr)
{
	return g->r[rmr].key;
}
