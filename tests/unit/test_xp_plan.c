// SPDX-License-Identifier: MIT
/*
 * The one-sided transports' planner (transports/common/plan.c), without a
 * device or provider: how runs become writes under the message size,
 * memory region bounds and segment limit, as RDMA WRITEs (one remote range
 * each) and as libfabric RMA writes (an iovec per segment), and how post
 * lists fill the send queue without overrunning it while asking for few
 * completions. The send queue is driven against a model NIC that completes
 * requests in order at random moments and reports only the signalled ones,
 * as hardware does.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdlib.h>
#include <string.h>

#include "../../transports/common/plan.h"

#define MiB (1ULL << 20)
#define GiB (1ULL << 30)
#define PAGES(bytes) ((uint32_t)((bytes) / 4096))

static const struct xp_limits flat = {
	.max_bytes = 8 * MiB,
	.max_segs = 1,
	.lpiece = 0,
	.rpiece = 0,
	.one_remote = true,
};

/* Plan all of runs; the number of work requests, each stored in out. */
static size_t plan_all(const struct kemari_run *runs, size_t n,
		       const struct xp_limits *l, struct xp_write *out,
		       size_t max)
{
	struct xp_cursor c;
	size_t k = 0;

	xp_plan__start(&c, runs, n, 0);
	while (k < max && xp_plan__next(&c, l, &out[k]))
		k++;
	cr_assert(xp_plan__finished(&c), "more than %zu requests", max);
	return k;
}

Test(xp_plan, one_gib_run_is_split_at_the_message_size)
{
	struct kemari_run r = { .pfn = 0, .npages = PAGES(GiB) };
	static struct xp_write wr[256];
	size_t n = plan_all(&r, 1, &flat, wr, 256);

	cr_assert(eq(sz, n, 128));
	for (size_t i = 0; i < n; i++) {
		cr_assert(eq(u64, wr[i].off, i * 8 * MiB));
		cr_assert(eq(u64, wr[i].len, 8 * MiB));
		cr_assert(eq(u32, wr[i].nseg, 1));
		cr_assert(eq(u64, wr[i].seg[0].off, i * 8 * MiB));
		cr_assert(eq(u32, wr[i].seg[0].len, (uint32_t)(8 * MiB)));
	}
}

Test(xp_plan, a_message_size_above_the_run_takes_it_whole)
{
	/* rxe's max_msg_sz is 2 GiB: 3 GiB is two requests. */
	struct xp_limits l = flat;
	struct kemari_run r = { .pfn = 16, .npages = PAGES(3 * GiB) };
	struct xp_write wr[4];

	l.max_bytes = 2 * GiB;
	cr_assert(eq(sz, plan_all(&r, 1, &l, wr, 4), 2));
	cr_assert(eq(u64, wr[0].off, 16 * 4096));
	cr_assert(eq(u64, wr[0].len, 2 * GiB));
	cr_assert(eq(u32, wr[0].seg[0].len, (uint32_t)(2 * GiB)));
	cr_assert(eq(u64, wr[1].off, 16 * 4096 + 2 * GiB));
	cr_assert(eq(u64, wr[1].len, GiB));
}

Test(xp_plan, adjacent_runs_share_a_request)
{
	struct kemari_run r[] = {
		{ .pfn = 0, .npages = 1 },
		{ .pfn = 1, .npages = 2 },
		{ .pfn = 5, .npages = 1 },
		{ .pfn = 6, .npages = 0 }, /* empty: skipped */
		{ .pfn = 6, .npages = 4 },
	};
	struct xp_write wr[8];

	cr_assert(eq(sz, plan_all(r, 5, &flat, wr, 8), 2));
	cr_assert(eq(u64, wr[0].off, 0));
	cr_assert(eq(u64, wr[0].len, 3 * 4096));
	cr_assert(eq(u64, wr[1].off, 5 * 4096));
	cr_assert(eq(u64, wr[1].len, 5 * 4096));
	cr_assert(eq(u32, wr[1].nseg, 1));
}

Test(xp_plan, local_regions_become_sges_up_to_the_limit)
{
	/* 1 MiB local regions, 2 SGEs: at most 2 MiB per request. */
	struct xp_limits l = flat;
	struct kemari_run r = { .pfn = PAGES(MiB / 2),
				.npages = PAGES(4 * MiB) };
	struct xp_write wr[8];

	l.max_bytes = 16 * MiB;
	l.lpiece = MiB;
	l.max_segs = 2;
	cr_assert(eq(sz, plan_all(&r, 1, &l, wr, 8), 3));
	/* [0.5, 2): 0.5 MiB of region 0, 1 MiB of region 1 */
	cr_assert(eq(u64, wr[0].off, MiB / 2));
	cr_assert(eq(u64, wr[0].len, MiB + MiB / 2));
	cr_assert(eq(u32, wr[0].nseg, 2));
	cr_assert(eq(u32, wr[0].seg[0].mr, 0));
	cr_assert(eq(u32, wr[0].seg[0].len, (uint32_t)(MiB / 2)));
	cr_assert(eq(u32, wr[0].seg[1].mr, 1));
	cr_assert(eq(u64, wr[0].seg[1].off, MiB));
	cr_assert(eq(u32, wr[0].seg[1].len, (uint32_t)MiB));
	/* [2, 4): regions 2 and 3 */
	cr_assert(eq(u64, wr[1].off, 2 * MiB));
	cr_assert(eq(u64, wr[1].len, 2 * MiB));
	cr_assert(eq(u32, wr[1].seg[0].mr, 2));
	cr_assert(eq(u32, wr[1].seg[1].mr, 3));
	/* [4, 4.5) */
	cr_assert(eq(u64, wr[2].off, 4 * MiB));
	cr_assert(eq(u64, wr[2].len, MiB / 2));
	cr_assert(eq(u32, wr[2].nseg, 1));
	cr_assert(eq(u32, wr[2].seg[0].mr, 4));
}

Test(xp_plan, a_request_never_crosses_a_remote_region)
{
	struct xp_limits l = flat;
	struct kemari_run r = { .pfn = PAGES(MiB / 2),
				.npages = PAGES(2 * MiB) };
	struct xp_write wr[8];

	l.max_bytes = 16 * MiB;
	l.rpiece = MiB;
	cr_assert(eq(sz, plan_all(&r, 1, &l, wr, 8), 3));
	cr_assert(eq(u64, wr[0].off, MiB / 2));
	cr_assert(eq(u64, wr[0].len, MiB / 2));
	cr_assert(eq(u32, wr[0].rmr, 0));
	cr_assert(eq(u64, wr[1].off, MiB));
	cr_assert(eq(u64, wr[1].len, MiB));
	cr_assert(eq(u32, wr[1].rmr, 1));
	cr_assert(eq(u64, wr[2].off, 2 * MiB));
	cr_assert(eq(u64, wr[2].len, MiB / 2));
	cr_assert(eq(u32, wr[2].rmr, 2));
}

/*
 * A bank offset (the receiver's second bank) moves the remote side only:
 * remote region boundaries are taken at bias + offset, the local offsets
 * stay those of the runs. Bank at 1.25 MiB, remote regions of 1 MiB: the
 * run at local 0.5 MiB .. 2.5 MiB lands at 1.75 .. 3.75 MiB remotely.
 */
Test(xp_plan, a_bank_offset_moves_remote_region_boundaries)
{
	struct xp_limits l = flat;
	struct kemari_run r = { .pfn = PAGES(MiB / 2),
				.npages = PAGES(2 * MiB) };
	struct xp_write wr[8];
	struct xp_cursor c;
	size_t k = 0;

	l.max_bytes = 16 * MiB;
	l.rpiece = MiB;
	xp_plan__start(&c, &r, 1, MiB + MiB / 4);
	while (k < 8 && xp_plan__next(&c, &l, &wr[k]))
		k++;
	cr_assert(eq(sz, k, 3));
	cr_assert(eq(u64, wr[0].off, MiB / 2));
	cr_assert(eq(u64, wr[0].len, MiB / 4));
	cr_assert(eq(u32, wr[0].rmr, 1));
	cr_assert(eq(u64, wr[1].off, MiB / 2 + MiB / 4));
	cr_assert(eq(u64, wr[1].len, MiB));
	cr_assert(eq(u32, wr[1].rmr, 2));
	cr_assert(eq(u64, wr[2].off, MiB + MiB * 3 / 4));
	cr_assert(eq(u64, wr[2].len, MiB * 3 / 4));
	cr_assert(eq(u32, wr[2].rmr, 3));
	for (size_t i = 0; i < k; i++) {
		cr_assert(eq(u64, wr[i].bias, MiB + MiB / 4));
		cr_assert(eq(u64, wr[i].seg[0].off, wr[i].off));
	}
}

/* The receive region is checked bias bytes in: both banks must hold it. */
Test(xp_plan, the_check_counts_the_bank_offset)
{
	struct kemari_run r = { .pfn = 10, .npages = 6 }; /* pages 10..15 */
	size_t bad = 99;

	cr_assert(eq(int, xp_plan__check(&r, 1, 16 * 4096, 32 * 4096, 0, &bad),
		     XP_INSIDE));
	cr_assert(eq(int,
		     xp_plan__check(&r, 1, 16 * 4096, 32 * 4096, 16 * 4096,
				    &bad),
		     XP_INSIDE));
	cr_assert(eq(int,
		     xp_plan__check(&r, 1, 16 * 4096, 32 * 4096, 17 * 4096,
				    &bad),
		     XP_OUTSIDE_DST));
	cr_assert(eq(sz, bad, 0));
	/* Past the region, or not page-aligned: nothing fits. */
	cr_assert(eq(int,
		     xp_plan__check(&r, 1, 16 * 4096, 32 * 4096, 32 * 4096,
				    &bad),
		     XP_OUTSIDE_DST));
	cr_assert(eq(int,
		     xp_plan__check(&r, 1, 16 * 4096, 32 * 4096, 100, &bad),
		     XP_OUTSIDE_DST));
	cr_assert(eq(int, xp_plan__check(NULL, 0, 0, 32 * 4096, 0, &bad),
		     XP_INSIDE));
}

Test(xp_plan, bad_runs_are_found_before_anything_is_posted)
{
	struct kemari_run ok[] = { { .pfn = 0, .npages = 1 },
				   { .pfn = 255, .npages = 1 } };
	struct kemari_run past[] = { { .pfn = 0, .npages = 1 },
				     { .pfn = 255, .npages = 2 } };
	struct kemari_run empty[] = { { .pfn = 3, .npages = 0 } };
	struct kemari_run wrap[] = { { .pfn = UINT64_MAX - 1, .npages = 4 } };

	cr_assert(eq(sz, xp_plan__bad_run(ok, 2, 256 * 4096), 2));
	cr_assert(eq(sz, xp_plan__bad_run(past, 2, 256 * 4096), 1));
	cr_assert(eq(sz, xp_plan__bad_run(empty, 1, 256 * 4096), 0));
	cr_assert(eq(sz, xp_plan__bad_run(wrap, 1, 256 * 4096), 0));
	cr_assert(eq(sz, xp_plan__bad_run(NULL, 0, 0), 0));
}

/* --- the send queue against a model NIC ----------------------------------- */

struct nic {
	struct xp_sq q;
	uint64_t hw_done; /* requests the NIC finished, in order */
	bool *sig;	  /* by seq: was it signalled */
	size_t cap;
	unsigned long completions;
};

static void nic_init(struct nic *n, uint32_t depth, uint32_t every, size_t cap)
{
	memset(n, 0, sizeof(*n));
	cr_assert(eq(int, xp_sq__init(&n->q, depth, every, true), 0));
	n->sig = calloc(cap, sizeof(*n->sig));
	n->cap = cap;
}

static void nic_fini(struct nic *n)
{
	xp_sq__fini(&n->q);
	free(n->sig);
}

/* The NIC finishes up to k more requests; signalled ones are reported. */
static void nic_run(struct nic *n, uint64_t k)
{
	while (k-- && n->hw_done < n->q.posted) {
		uint64_t seq = n->hw_done++;

		if (n->sig[seq]) {
			xp_sq__complete(&n->q, seq);
			n->completions++;
		}
	}
}

/* Some signalled request is outstanding: waiting for a completion ends. */
static bool nic_can_report(const struct nic *n)
{
	for (uint64_t s = n->q.done; s < n->q.posted; s++)
		if (n->sig[s])
			return true;
	return false;
}

/* Post a list: record signals, check the list's shape. */
static void nic_post(struct nic *n, const struct xp_write *wr, uint32_t k,
		     uint32_t room_before)
{
	cr_assert(le(u32, k, room_before), "list of %u with room %u", k,
		  room_before);
	cr_assert(le(u64, n->q.posted - n->hw_done, n->q.depth),
		  "send queue overrun");
	cr_assert(wr[k - 1].signaled, "last of a list unsignalled");
	for (uint32_t i = 0; i < k; i++) {
		cr_assert(lt(u64, wr[i].seq, n->cap));
		n->sig[wr[i].seq] = wr[i].signaled;
	}
}

static void check_signal_spacing(const struct nic *n, uint32_t every)
{
	uint32_t run = 0;

	for (uint64_t s = 0; s < n->q.posted; s++) {
		run = n->sig[s] ? 0 : run + 1;
		cr_assert(lt(u32, run, every),
			  "%u unsignalled requests in a row at %llu", run,
			  (unsigned long long)s);
	}
}

Test(xp_plan, lists_never_exceed_the_free_send_queue)
{
	static struct kemari_run runs[3000];
	struct xp_write wr[64];
	struct xp_cursor c;
	struct nic n;
	uint64_t next_off = 0;

	srand(1);
	for (unsigned int i = 0; i < 3000; i++)
		runs[i] = (struct kemari_run){ .pfn = 2 * i + 1, .npages = 1 };
	nic_init(&n, 64, 16, 4096);
	xp_plan__start(&c, runs, 3000, 0);
	while (!xp_plan__finished(&c)) {
		uint32_t room = xp_sq__room(&n.q);
		uint32_t k = xp_plan__fill(&n.q, &c, &flat, wr, 64);

		if (!k) {
			cr_assert(eq(u32, room, 0));
			cr_assert(nic_can_report(&n),
				  "queue full and no completion will come");
			nic_run(&n, 1 + (uint64_t)rand() % 40);
			continue;
		}
		nic_post(&n, wr, k, room);
		for (uint32_t i = 0; i < k; i++) {
			cr_assert(eq(u64, wr[i].off, next_off * 4096 + 4096));
			cr_assert(eq(u64, wr[i].len, 4096));
			next_off += 2;
		}
		nic_run(&n, (uint64_t)rand() % 80);
	}
	cr_assert(eq(u64, n.q.posted, 3000));
	nic_run(&n, UINT64_MAX);
	cr_assert(eq(u64, n.q.done, 3000), "the last request was signalled");
	check_signal_spacing(&n, 16);
	/* Selective: far fewer completions than requests. */
	cr_assert(lt(u64, n.completions, 3000 / 8));
	nic_fini(&n);
}

Test(xp_plan, every_nth_and_the_last_of_each_list_are_signalled)
{
	struct nic n;
	uint64_t s = 0;

	nic_init(&n, 256, 16, 256);
	/* Lists of 40, 3, 1 and 16 requests. */
	for (uint32_t len = 0; len < 4; len++) {
		static const uint32_t k[] = { 40, 3, 1, 16 };
		uint64_t first = s;

		for (uint32_t i = 0; i < k[len]; i++, s++)
			n.sig[s] = xp_sq__post(&n.q, 4096, i + 1 == k[len]);
		for (uint64_t j = first; j < s; j++) {
			bool want = j + 1 == s || (j - first + 1) % 16 == 0;

			cr_assert(eq(int, n.sig[j], want), "seq %llu",
				  (unsigned long long)j);
		}
	}
	nic_fini(&n);
}

Test(xp_plan, bytes_in_flight_stay_bounded)
{
	/* 64 MiB in 1 MiB requests, at most 4 MiB in flight. */
	struct xp_limits l = flat;
	struct kemari_run r = { .pfn = 0, .npages = PAGES(64 * MiB) };
	struct xp_write wr[64];
	struct xp_cursor c;
	struct nic n;

	srand(2);
	l.max_bytes = MiB;
	l.inflight_max = 4 * MiB;
	nic_init(&n, 256, 16, 256);
	xp_plan__start(&c, &r, 1, 0);
	while (!xp_plan__finished(&c)) {
		uint32_t room = xp_sq__room(&n.q);
		uint32_t k = xp_plan__fill(&n.q, &c, &l, wr, 64);

		cr_assert(le(u64, xp_sq__inflight(&n.q), 4 * MiB));
		if (!k) {
			cr_assert(gt(u64, xp_sq__inflight(&n.q), 0));
			cr_assert(nic_can_report(&n));
			nic_run(&n, 1 + (uint64_t)rand() % 3);
			continue;
		}
		nic_post(&n, wr, k, room);
	}
	cr_assert(eq(u64, n.q.posted, 64));
	cr_assert(eq(u64, n.q.bytes_posted, 64 * MiB));
	nic_run(&n, UINT64_MAX);
	cr_assert(eq(u64, n.q.bytes_done, 64 * MiB));
	nic_fini(&n);
}

Test(xp_plan, no_overrun_across_many_mixed_lists)
{
	/* Long random mix of WRITE lists and single control sends. */
	static struct kemari_run runs[20000];
	struct xp_write wr[64];
	struct xp_cursor c;
	struct nic n;
	unsigned long sends = 0;

	srand(3);
	for (unsigned int i = 0; i < 20000; i++)
		runs[i] =
			(struct kemari_run){ .pfn = 3ULL * i,
					     .npages = 1 + (uint32_t)(i % 3) };
	nic_init(&n, 100, 16, 40000);
	xp_plan__start(&c, runs, 20000, 0);
	while (!xp_plan__finished(&c)) {
		uint32_t room = xp_sq__room(&n.q);

		if (rand() % 7 == 0 && room) {
			uint64_t seq = n.q.posted;

			n.sig[seq] = xp_sq__post(&n.q, 64, true);
			cr_assert(n.sig[seq]);
			sends++;
		} else {
			uint32_t max = 1 + (uint32_t)rand() % 64;
			uint32_t k = xp_plan__fill(&n.q, &c, &flat, wr, max);

			if (k)
				nic_post(&n, wr, k, room);
			else
				cr_assert(nic_can_report(&n));
		}
		cr_assert(le(u64, n.q.posted - n.q.done, n.q.depth));
		nic_run(&n, (uint64_t)rand() % 50);
	}
	nic_run(&n, UINT64_MAX);
	cr_assert(eq(u64, n.q.done, n.q.posted));
	cr_assert(gt(u64, sends, 0));
	check_signal_spacing(&n, 16);
	nic_fini(&n);
}

/* --- libfabric's shape: an iovec per segment, any remote offsets ---------- */

#define PG 4096ULL

/* Plan every write of runs[] under l (not one_remote); the write count. */
static unsigned int plan_rma(const struct kemari_run *runs, size_t n,
			     struct xp_limits l, struct xp_write *out,
			     unsigned int max)
{
	struct xp_cursor c;
	unsigned int w = 0;

	xp_plan__start(&c, runs, n, 0);
	while (w < max && xp_plan__next(&c, &l, &out[w]))
		w++;
	cr_assert(xp_plan__finished(&c), "more than %u writes", max);
	return w;
}

static void seg_is(const struct xp_seg *s, uint64_t off, uint64_t len)
{
	cr_assert(eq(u64, s->off, off));
	cr_assert(eq(u64, s->len, len));
}

Test(xp_limits, clip_to_ours_and_whole_pages)
{
	struct xp_limits l = xp_limits__clip(UINT64_MAX, 4, 4, 4 << 20);

	cr_assert(eq(u64, l.max_bytes, 4 << 20));
	cr_assert(eq(u32, l.max_segs, 4));
	/* verbs over rxe: rma_iov_limit 1, 8 MiB messages */
	l = xp_limits__clip(8 << 20, 4, 1, 4 << 20);
	cr_assert(eq(u64, l.max_bytes, 4 << 20));
	cr_assert(eq(u32, l.max_segs, 1));
	/* odd sizes round down to pages; a tiny one still moves a page */
	l = xp_limits__clip(3 * PG + 100, 64, 64, 4 << 20);
	cr_assert(eq(u64, l.max_bytes, 3 * PG));
	cr_assert(eq(u32, l.max_segs, XP_MAX_SEGS));
	l = xp_limits__clip(100, 0, 0, 4 << 20);
	cr_assert(eq(u64, l.max_bytes, PG));
	cr_assert(eq(u32, l.max_segs, 1));
	cr_assert(not(l.one_remote));
}

Test(xp_plan_rma, long_run_splits_by_max_bytes)
{
	struct kemari_run r = { .pfn = 10, .npages = 10 };
	struct xp_limits l = { .max_bytes = 4 * PG, .max_segs = 4 };
	struct xp_write w[8];

	cr_assert(eq(u32, plan_rma(&r, 1, l, w, 8), 3));
	cr_assert(eq(u32, w[0].nseg, 1));
	seg_is(&w[0].seg[0], 10 * PG, 4 * PG);
	seg_is(&w[1].seg[0], 14 * PG, 4 * PG);
	cr_assert(eq(u32, w[2].nseg, 1));
	seg_is(&w[2].seg[0], 18 * PG, 2 * PG);
}

Test(xp_plan_rma, small_runs_gather_up_to_the_iov_limit)
{
	struct kemari_run r[7];
	struct xp_limits l = { .max_bytes = 1 << 20, .max_segs = 3 };
	struct xp_write w[8];

	for (unsigned int i = 0; i < 7; i++)
		r[i] = (struct kemari_run){ .pfn = 2 * i + 1, .npages = 1 };
	cr_assert(eq(u32, plan_rma(r, 7, l, w, 8), 3));
	cr_assert(eq(u32, w[0].nseg, 3));
	cr_assert(eq(u32, w[1].nseg, 3));
	cr_assert(eq(u32, w[2].nseg, 1));
	seg_is(&w[0].seg[0], 1 * PG, PG);
	seg_is(&w[0].seg[2], 5 * PG, PG);
	cr_assert(eq(u64, w[0].len, 3 * PG));
	seg_is(&w[1].seg[0], 7 * PG, PG);
	seg_is(&w[2].seg[0], 13 * PG, PG);
}

Test(xp_plan_rma, one_segment_per_write_when_rma_iov_limit_is_1)
{
	struct kemari_run r[3] = { { .pfn = 0, .npages = 1 },
				   { .pfn = 5, .npages = 3 },
				   { .pfn = 9, .npages = 1 } };
	struct xp_limits l = xp_limits__clip(8 << 20, 4, 1, 4 << 20);
	struct xp_write w[8];

	cr_assert(eq(u32, plan_rma(r, 3, l, w, 8), 3));
	for (int i = 0; i < 3; i++)
		cr_assert(eq(u32, w[i].nseg, 1));
	seg_is(&w[1].seg[0], 5 * PG, 3 * PG);
}

Test(xp_plan_rma, touching_runs_merge_into_one_segment)
{
	struct kemari_run r[4] = { { .pfn = 4, .npages = 2 },
				   { .pfn = 6, .npages = 1 },
				   { .pfn = 7, .npages = 3 },
				   { .pfn = 20, .npages = 1 } };
	struct xp_limits l = { .max_bytes = 1 << 20, .max_segs = 1 };
	struct xp_write w[8];

	cr_assert(eq(u32, plan_rma(r, 4, l, w, 8), 2));
	seg_is(&w[0].seg[0], 4 * PG, 6 * PG);
	seg_is(&w[1].seg[0], 20 * PG, PG);
}

Test(xp_plan_rma, byte_budget_spans_runs_and_splits_the_one_it_ends_in)
{
	struct kemari_run r[2] = { { .pfn = 0, .npages = 3 },
				   { .pfn = 10, .npages = 3 } };
	struct xp_limits l = { .max_bytes = 4 * PG, .max_segs = 4 };
	struct xp_write w[8];

	cr_assert(eq(u32, plan_rma(r, 2, l, w, 8), 2));
	cr_assert(eq(u32, w[0].nseg, 2));
	seg_is(&w[0].seg[0], 0, 3 * PG);
	seg_is(&w[0].seg[1], 10 * PG, PG);
	cr_assert(eq(u32, w[1].nseg, 1));
	seg_is(&w[1].seg[0], 11 * PG, 2 * PG);
}

Test(xp_plan_rma, whole_region_total_is_exact)
{
	struct kemari_run r = { .pfn = 0, .npages = 8192 }; /* 32 MiB */
	struct xp_limits l = xp_limits__clip(UINT64_MAX, 4, 4, 4 << 20);
	struct xp_write w[16];
	uint64_t total = 0, next = 0;
	unsigned int n = plan_rma(&r, 1, l, w, 16);

	cr_assert(eq(u32, n, 8));
	for (unsigned int i = 0; i < n; i++) {
		cr_assert(eq(u32, w[i].nseg, 1));
		cr_assert(eq(u64, w[i].seg[0].off, next));
		next += w[i].seg[0].len;
		total += w[i].seg[0].len;
	}
	cr_assert(eq(u64, total, 8192 * PG));
}

Test(xp_plan_rma, no_runs_no_writes)
{
	struct xp_limits l = { .max_bytes = PG, .max_segs = 1 };
	struct xp_write w[1];

	cr_assert(eq(u32, plan_rma(NULL, 0, l, w, 1), 0));
}

Test(xp_plan, a_partial_last_page_is_outside)
{
	struct kemari_run ok[2] = { { .pfn = 0, .npages = 1 },
				    { .pfn = 15, .npages = 1 } };

	cr_assert(eq(sz, xp_plan__bad_run(ok, 2, 16 * PG), 2));
	cr_assert(eq(sz, xp_plan__bad_run(ok, 2, 16 * PG - 1), 1));
}

Test(xp_plan, a_post_list_is_chained_by_more_and_ends_signalled)
{
	/* 10 one-page runs apart, one segment a write: 10 writes. */
	struct kemari_run r[10];
	struct xp_limits l = { .max_bytes = PG, .max_segs = 1 };
	struct xp_write w[XP_BATCH];
	struct xp_cursor c;
	struct xp_sq q;
	uint32_t k;

	for (unsigned int i = 0; i < 10; i++)
		r[i] = (struct kemari_run){ .pfn = 2 * i, .npages = 1 };
	cr_assert(eq(int, xp_sq__init(&q, 64, 4, true), 0));
	xp_plan__start(&c, r, 10, 0);
	k = xp_plan__fill(&q, &c, &l, w, XP_BATCH);
	cr_assert(eq(u32, k, 10));
	for (uint32_t i = 0; i < k; i++) {
		cr_assert(eq(int, w[i].more, i + 1 < k));
		cr_assert(eq(u64, w[i].seq, i));
		/* every 4th and the last */
		cr_assert(eq(int, w[i].signaled, (i + 1) % 4 == 0 || i == 9),
			  "write %u", i);
	}
	cr_assert(xp_plan__finished(&c));
	xp_sq__fini(&q);
}

Test(xp_plan, the_byte_window_admits_one_write_when_empty)
{
	/* A write larger than the window still goes when nothing flies. */
	struct kemari_run r = { .pfn = 0, .npages = 4096 }; /* 16 MiB */
	struct xp_limits l = { .max_bytes = 16 * MiB,
			       .max_segs = 1,
			       .inflight_max = 8 * MiB };
	struct xp_write w[4];
	struct xp_cursor c;
	struct xp_sq q;

	cr_assert(eq(int, xp_sq__init(&q, 16, 16, true), 0));
	xp_plan__start(&c, &r, 1, 0);
	cr_assert(eq(u32, xp_plan__fill(&q, &c, &l, w, 4), 1));
	cr_assert(eq(u64, xp_sq__inflight(&q), 16 * MiB));
	xp_sq__fini(&q);
}

Test(xp_sq, unordered_completions_are_counted_one_by_one)
{
	struct xp_sq q;

	cr_assert(eq(int, xp_sq__init(&q, 8, 4, false), 0));
	/* every operation asks for a completion */
	for (int i = 0; i < 5; i++)
		cr_assert(xp_sq__post(&q, 100 * (uint64_t)(i + 1), false));
	cr_assert(eq(u32, xp_sq__room(&q), 3));
	/* the third completes first: its own bytes only */
	xp_sq__complete(&q, 2);
	cr_assert(eq(u64, q.done, 1));
	cr_assert(eq(u64, q.bytes_done, 300));
	xp_sq__complete(&q, 0);
	cr_assert(eq(u64, xp_sq__inflight(&q), 1500 - 400));
	cr_assert(not(xp_sq__idle(&q)));
	xp_sq__complete(&q, 1);
	xp_sq__complete(&q, 4);
	xp_sq__complete(&q, 3);
	cr_assert(xp_sq__idle(&q));
	cr_assert(eq(u64, xp_sq__inflight(&q), 0));
	xp_sq__fini(&q);
}
