/* SPDX-License-Identifier: MIT */
/*
 * The transports' test knobs, in one place: read from the environment once,
 * the first time a connection is set up, never on a data path. Each makes a
 * transport behave as a device or provider it cannot test on here would.
 *
 * KEMARI_RDMA_MR_MAX=SRC[,DST]  rdma: register guest RAM (and the receive
 *     buffers) in memory regions of at most that size, as a device with a
 *     small max_mr_size would; different sizes make writes span several
 *     local regions (SGEs) and split at remote ones.
 * KEMARI_RDMA_COMMIT=send  rdma: send the COMMIT as a plain SEND, as on a
 *     device without immediate data (iWARP).
 * KEMARI_OFI_NO_SAW  ofi: act as if the provider did not order sends after
 *     writes (FI_ORDER_SAW), which exercises FI_DELIVERY_COMPLETE writes.
 */
#ifndef KEMARI_XP_TESTCFG_H
#define KEMARI_XP_TESTCFG_H

#include <stdbool.h>
#include <stdint.h>

struct xp_testcfg {
	uint64_t rdma_mr_max_src; /* 0: no limit of ours */
	uint64_t rdma_mr_max_dst;
	bool rdma_commit_send;
	bool ofi_no_saw;
};

/* The knobs, read on the first call. */
const struct xp_testcfg *xp_testcfg__get(void);
/* Parse the knobs from these values (NULL: unset); for tests. */
void xp_testcfg__parse(struct xp_testcfg *c, const char *mr_max,
		       const char *commit, const char *no_saw);

#endif
