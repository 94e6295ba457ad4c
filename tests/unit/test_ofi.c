// SPDX-License-Identifier: MIT
/*
 * The libfabric transport's arithmetic (transports/ofi/ofi_plan.h), without
 * a provider: runs cut into writes by size and iovec limits, FI_MORE and
 * completion flags within a batch, mr_mode -> descriptors/addresses/keys,
 * credit returns and the default provider order.
 */
#if __has_include(<rdma/fabric.h>)
#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "../../transports/ofi/ofi_plan.h"

#define PG KEMARI_PAGE_SIZE

/* Plan every write of runs[] under l; returns the number of writes. */
static unsigned int plan(const struct kemari_run *runs, size_t n,
			 struct ofi_limits l,
			 struct ofi_seg out[][OFI_MAX_SEGS], unsigned int *nseg,
			 unsigned int max)
{
	struct ofi_split s;
	unsigned int w = 0, k;

	ofi_split__init(&s, runs, n);
	while ((k = ofi_split__next(&s, &l, out[w])) != 0) {
		nseg[w++] = k;
		cr_assert(le(u32, w, max));
	}
	return w;
}

static void seg_is(const struct ofi_seg *s, uint64_t off, uint64_t len)
{
	cr_assert(eq(u64, s->off, off));
	cr_assert(eq(u64, s->len, len));
}

Test(ofi_limits, clip_to_ours_and_whole_pages)
{
	struct ofi_limits l = ofi_limits__make(UINT64_MAX, 4, 4, 4 << 20);

	cr_assert(eq(u64, l.max_bytes, 4 << 20));
	cr_assert(eq(u32, l.max_segs, 4));
	/* verbs over rxe: rma_iov_limit 1, 8 MiB messages */
	l = ofi_limits__make(8 << 20, 4, 1, 4 << 20);
	cr_assert(eq(u64, l.max_bytes, 4 << 20));
	cr_assert(eq(u32, l.max_segs, 1));
	/* odd sizes round down to pages; a tiny one still moves a page */
	l = ofi_limits__make(3 * PG + 100, 64, 64, 4 << 20);
	cr_assert(eq(u64, l.max_bytes, 3 * PG));
	cr_assert(eq(u32, l.max_segs, OFI_MAX_SEGS));
	l = ofi_limits__make(100, 0, 0, 4 << 20);
	cr_assert(eq(u64, l.max_bytes, PG));
	cr_assert(eq(u32, l.max_segs, 1));
}

Test(ofi_split, long_run_splits_by_max_bytes)
{
	struct kemari_run r = { .pfn = 10, .npages = 10 };
	struct ofi_limits l = { .max_bytes = 4 * PG, .max_segs = 4 };
	struct ofi_seg w[8][OFI_MAX_SEGS];
	unsigned int nseg[8];

	cr_assert(eq(u32, plan(&r, 1, l, w, nseg, 8), 3));
	cr_assert(eq(u32, nseg[0], 1));
	seg_is(&w[0][0], 10 * PG, 4 * PG);
	seg_is(&w[1][0], 14 * PG, 4 * PG);
	cr_assert(eq(u32, nseg[2], 1));
	seg_is(&w[2][0], 18 * PG, 2 * PG);
}

Test(ofi_split, small_runs_gather_up_to_the_iov_limit)
{
	struct kemari_run r[7];
	struct ofi_limits l = { .max_bytes = 1 << 20, .max_segs = 3 };
	struct ofi_seg w[8][OFI_MAX_SEGS];
	unsigned int nseg[8];

	for (unsigned int i = 0; i < 7; i++)
		r[i] = (struct kemari_run){ .pfn = 2 * i + 1, .npages = 1 };
	cr_assert(eq(u32, plan(r, 7, l, w, nseg, 8), 3));
	cr_assert(eq(u32, nseg[0], 3));
	cr_assert(eq(u32, nseg[1], 3));
	cr_assert(eq(u32, nseg[2], 1));
	seg_is(&w[0][0], 1 * PG, PG);
	seg_is(&w[0][2], 5 * PG, PG);
	seg_is(&w[1][0], 7 * PG, PG);
	seg_is(&w[2][0], 13 * PG, PG);
}

Test(ofi_split, one_segment_per_write_when_rma_iov_limit_is_1)
{
	struct kemari_run r[3] = { { .pfn = 0, .npages = 1 },
				   { .pfn = 5, .npages = 3 },
				   { .pfn = 9, .npages = 1 } };
	struct ofi_limits l = ofi_limits__make(8 << 20, 4, 1, 4 << 20);
	struct ofi_seg w[8][OFI_MAX_SEGS];
	unsigned int nseg[8];

	cr_assert(eq(u32, plan(r, 3, l, w, nseg, 8), 3));
	for (int i = 0; i < 3; i++)
		cr_assert(eq(u32, nseg[i], 1));
	seg_is(&w[1][0], 5 * PG, 3 * PG);
}

Test(ofi_split, touching_runs_merge_into_one_segment)
{
	struct kemari_run r[4] = { { .pfn = 4, .npages = 2 },
				   { .pfn = 6, .npages = 1 },
				   { .pfn = 7, .npages = 3 },
				   { .pfn = 20, .npages = 1 } };
	struct ofi_limits l = { .max_bytes = 1 << 20, .max_segs = 1 };
	struct ofi_seg w[8][OFI_MAX_SEGS];
	unsigned int nseg[8];

	cr_assert(eq(u32, plan(r, 4, l, w, nseg, 8), 2));
	seg_is(&w[0][0], 4 * PG, 6 * PG);
	seg_is(&w[1][0], 20 * PG, PG);
}

Test(ofi_split, byte_budget_spans_runs_and_splits_the_one_it_ends_in)
{
	struct kemari_run r[2] = { { .pfn = 0, .npages = 3 },
				   { .pfn = 10, .npages = 3 } };
	struct ofi_limits l = { .max_bytes = 4 * PG, .max_segs = 4 };
	struct ofi_seg w[8][OFI_MAX_SEGS];
	unsigned int nseg[8];

	cr_assert(eq(u32, plan(r, 2, l, w, nseg, 8), 2));
	cr_assert(eq(u32, nseg[0], 2));
	seg_is(&w[0][0], 0, 3 * PG);
	seg_is(&w[0][1], 10 * PG, PG);
	cr_assert(eq(u32, nseg[1], 1));
	seg_is(&w[1][0], 11 * PG, 2 * PG);
}

Test(ofi_split, whole_region_total_is_exact)
{
	struct kemari_run r = { .pfn = 0, .npages = 8192 }; /* 32 MiB */
	struct ofi_limits l = ofi_limits__make(UINT64_MAX, 4, 4, 4 << 20);
	struct ofi_seg w[16][OFI_MAX_SEGS];
	unsigned int nseg[16];
	uint64_t total = 0, next = 0;
	unsigned int n = plan(&r, 1, l, w, nseg, 16);

	cr_assert(eq(u32, n, 8));
	for (unsigned int i = 0; i < n; i++) {
		cr_assert(eq(u32, nseg[i], 1));
		cr_assert(eq(u64, w[i][0].off, next));
		next += w[i][0].len;
		total += w[i][0].len;
	}
	cr_assert(eq(u64, total, 8192 * PG));
}

Test(ofi_split, no_runs_no_writes)
{
	struct ofi_limits l = { .max_bytes = PG, .max_segs = 1 };
	struct ofi_seg w[1][OFI_MAX_SEGS];
	unsigned int nseg[1];

	cr_assert(eq(u32, plan(NULL, 0, l, w, nseg, 1), 0));
}

Test(ofi_runs, first_outside_checks_end_overflow_and_empty)
{
	struct kemari_run ok[2] = { { .pfn = 0, .npages = 1 },
				    { .pfn = 15, .npages = 1 } };
	struct kemari_run past[2] = { { .pfn = 0, .npages = 1 },
				      { .pfn = 15, .npages = 2 } };
	struct kemari_run wrap = { .pfn = UINT64_MAX / PG, .npages = 2 };
	struct kemari_run empty = { .pfn = 3, .npages = 0 };

	cr_assert(eq(sz, ofi_runs__first_outside(ok, 2, 16 * PG), 2));
	cr_assert(eq(sz, ofi_runs__first_outside(past, 2, 16 * PG), 1));
	cr_assert(eq(sz, ofi_runs__first_outside(&wrap, 1, 16 * PG), 0));
	cr_assert(eq(sz, ofi_runs__first_outside(&empty, 1, 16 * PG), 0));
	/* a partial last page does not count */
	cr_assert(eq(sz, ofi_runs__first_outside(ok, 2, 16 * PG - 1), 1));
}

Test(ofi_batch, more_on_all_but_last_selective_signals)
{
	unsigned int f[5];

	for (uint64_t s = 0; s < 5; s++)
		f[s] = ofi_batch__flags(s == 4, 101 + s, 4, true);
	cr_assert(eq(u32, f[0], OFI_OP_MORE)); /* seq 101 */
	cr_assert(eq(u32, f[1], OFI_OP_MORE));
	cr_assert(eq(u32, f[2], OFI_OP_MORE));
	cr_assert(eq(u32, f[3], OFI_OP_MORE | OFI_OP_SIGNAL)); /* seq 104 */
	cr_assert(eq(u32, f[4], OFI_OP_SIGNAL));	       /* last */
}

Test(ofi_batch, unordered_completions_signal_every_write)
{
	cr_assert(eq(u32, ofi_batch__flags(false, 7, 64, false),
		     OFI_OP_MORE | OFI_OP_SIGNAL));
	cr_assert(eq(u32, ofi_batch__flags(true, 7, 64, false), OFI_OP_SIGNAL));
}

static void mr_is(struct ofi_mr_use u, int local, int virt, int prov, int ep)
{
	cr_assert(eq(int, u.local, local));
	cr_assert(eq(int, u.virt_addr, virt));
	cr_assert(eq(int, u.prov_key, prov));
	cr_assert(eq(int, u.endpoint, ep));
}

Test(ofi_batch, ends_when_nothing_follows_or_the_next_would_wait)
{
	const uint64_t W = 8 << 20, M = 1 << 20;

	/* a write in the middle of a long push: more follows, it fits */
	cr_assert(eq(int, ofi_batch__ends(M, 10, 0, 2 * M, W), 0));
	/* the last write of the push */
	cr_assert(eq(int, ofi_batch__ends(0, 10, 0, 2 * M, W), 1));
	/* the queue is full after this one */
	cr_assert(eq(int, ofi_batch__ends(M, 0, 0, 2 * M, W), 1));
	/* the batch is long enough */
	cr_assert(eq(int, ofi_batch__ends(M, 10, OFI_BATCH - 1, 2 * M, W), 1));
	cr_assert(eq(int, ofi_batch__ends(M, 10, OFI_BATCH - 2, 2 * M, W), 0));
	/* the next write would not fit in the byte window */
	cr_assert(eq(int, ofi_batch__ends(M, 10, 0, W - M, W), 0));
	cr_assert(eq(int, ofi_batch__ends(M + 1, 10, 0, W - M, W), 1));
}

Test(ofi_batch, byte_window_admits_one_write_when_empty)
{
	cr_assert(eq(int, ofi_inflight__fits(0, 64 << 20, 8 << 20), 1));
	cr_assert(eq(int, ofi_inflight__fits(4 << 20, 4 << 20, 8 << 20), 1));
	cr_assert(eq(int, ofi_inflight__fits(4 << 20, (4 << 20) + 1, 8 << 20),
		     0));
}

Test(ofi_split, segment_bytes_add_up)
{
	struct ofi_seg seg[3] = { { 0, PG }, { 8 * PG, 3 * PG }, { 0, 0 } };

	cr_assert(eq(u64, ofi_segs__bytes(seg, 3), 4 * PG));
	cr_assert(eq(u64, ofi_segs__bytes(seg, 0), 0));
}

Test(ofi_mr, verbs_mode_uses_descriptors_addresses_and_provider_keys)
{
	struct ofi_mr_use u = ofi_mr__use(FI_MR_LOCAL | FI_MR_VIRT_ADDR |
					  FI_MR_ALLOCATED | FI_MR_PROV_KEY);
	char region[64];

	mr_is(u, 1, 1, 1, 0);
	cr_assert(
		eq(u64, ofi_mr__base(&u, region), (uint64_t)(uintptr_t)region));
	cr_assert(eq(u64, ofi_mr__requested_key(&u, 4), 0));
}

Test(ofi_mr, empty_mode_uses_offsets_and_our_keys)
{
	struct ofi_mr_use u = ofi_mr__use(0);
	char region[64];

	mr_is(u, 0, 0, 0, 0);
	cr_assert(eq(u64, ofi_mr__base(&u, region), 0));
	cr_assert(eq(u64, ofi_mr__requested_key(&u, 4), 4));
}

Test(ofi_mr, endpoint_and_basic_modes)
{
	struct ofi_mr_use u = ofi_mr__use(FI_MR_ENDPOINT | FI_MR_PROV_KEY);

	mr_is(u, 0, 0, 1, 1);
	u = ofi_mr__use(FI_MR_BASIC);
	mr_is(u, 1, 1, 1, 0);
}

Test(ofi_credit, returned_in_half_windows)
{
	cr_assert(not(ofi_credit__due(0, 32)));
	cr_assert(not(ofi_credit__due(15, 32)));
	cr_assert(ofi_credit__due(16, 32));
	cr_assert(ofi_credit__due(32, 32));
	/* a window of 1 returns every credit at once */
	cr_assert(ofi_credit__due(1, 1));
	cr_assert(not(ofi_credit__due(0, 1)));
}

Test(ofi_prov, verbs_then_tcp_then_sockets_never_shm_udp_or_layers)
{
	cr_assert(eq(int, ofi_prov__rank("verbs", false), 0));
	cr_assert(eq(int, ofi_prov__rank("tcp", false), 1));
	cr_assert(eq(int, ofi_prov__rank("sockets", false), 2));
	cr_assert(eq(int, ofi_prov__rank("net", false), 3));
	cr_assert(eq(int, ofi_prov__rank("shm", false), -1));
	cr_assert(eq(int, ofi_prov__rank("udp", false), -1));
	cr_assert(eq(int, ofi_prov__rank("verbs;ofi_rxm", false), -1));
	cr_assert(eq(int, ofi_prov__rank("ofi_rxd", false), -1));
	cr_assert(eq(int, ofi_prov__rank(NULL, false), -1));
}

Test(ofi_prov, no_verbs_on_loopback)
{
	cr_assert(eq(int, ofi_prov__rank("verbs", true), -1));
	cr_assert(eq(int, ofi_prov__rank("tcp", true), 1));
	cr_assert(eq(int, ofi_addr__loopback(0x7f000001), 1));
	cr_assert(eq(int, ofi_addr__loopback(0x7f0a0b0c), 1));
	cr_assert(
		eq(int, ofi_addr__loopback(0xa9fe4d01), 0)); /* 169.254.77.1 */
}
#endif
