/* SPDX-License-Identifier: MIT */
/*
 * The receive region a peer advertised (tests/unit/test_xp_common.c): where
 * pushes land, in one or more remote memory regions of `piece` bytes each
 * (the last may be shorter), each with its own address and key. How the
 * advert travels is the transport's wire format (rdma/ctrl.h,
 * ofi/ctrl.h); what it says is this.
 */
#ifndef KEMARI_XP_REGION_H
#define KEMARI_XP_REGION_H

#include <stdbool.h>
#include <stdint.h>

struct xp_remote {
	uint64_t addr; /* what the writer adds offsets in the piece to */
	uint64_t key;
};

struct xp_region {
	bool known;
	uint64_t len;	/* bytes */
	uint64_t piece; /* bytes per remote region, 0: one region */
	uint32_t n;
	struct xp_remote *r;
};

/*
 * Take an advert of n regions (r[], copied) of piece bytes covering len:
 * 0, or -ENOMEM with the old advert kept.
 */
int xp_region__set(struct xp_region *g, uint64_t len, uint64_t piece,
		   uint32_t n, const struct xp_remote *r);
void xp_region__fini(struct xp_region *g);
/* The remote address of byte off, inside remote region rmr. */
uint64_t xp_region__addr(const struct xp_region *g, uint32_t rmr, uint64_t off);
/* The key of remote region rmr. */
uint64_t xp_region__key(const struct xp_region *g, uint32_t rmr);

#endif
