// SPDX-License-Identifier: MIT
/*
 * RDMA transport arithmetic without a device (transports/rdma/batch.c): how
 * runs become WRITE work requests under the device's message size, memory
 * region bounds and SGE limit, and how post lists fill the send queue
 * without overrunning it while asking for few completions. The send queue
 * is driven against a model NIC that completes requests in order at random
 * moments and reports only the signalled ones, as hardware does.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdlib.h>
#include <string.h>

#include "../../transports/rdma/batch.h"

#define MiB (1ULL << 20)
#define GiB (1ULL << 30)
#define PAGES(bytes) ((uint32_t)((bytes) / 4096))

static const struct rdma_limits flat = {
	.max_msg = 8 * MiB,
	.max_sge = 1,
	.lpiece = UINT64_MAX,
	.rpiece = UINT64_MAX,
};

/* Plan all of runs; the number of work requests, each stored in out. */
static size_t plan_all(const struct kemari_run *runs, size_t n,
		       const struct rdma_limits *l, struct rdma_wr_plan *out,
		       size_t max)
{
	struct rdma_cursor c;
	size_t k = 0;

	rdma_plan__start(&c, runs, n);
	while (k < max && rdma_plan__next(&c, l, &out[k]))
		k++;
	cr_assert(rdma_plan__finished(&c), "more than %zu requests", max);
	return k;
}

Test(rdma_batch, one_gib_run_is_split_at_the_message_size)
{
	struct kemari_run r = { .pfn = 0, .npages = PAGES(GiB) };
	static struct rdma_wr_plan wr[256];
	size_t n = plan_all(&r, 1, &flat, wr, 256);

	cr_assert(eq(sz, n, 128));
	for (size_t i = 0; i < n; i++) {
		cr_assert(eq(u64, wr[i].off, i * 8 * MiB));
		cr_assert(eq(u64, wr[i].len, 8 * MiB));
		cr_assert(eq(u32, wr[i].nsge, 1));
		cr_assert(eq(u64, wr[i].sge[0].off, i * 8 * MiB));
		cr_assert(eq(u32, wr[i].sge[0].len, (uint32_t)(8 * MiB)));
	}
}

Test(rdma_batch, a_message_size_above_the_run_takes_it_whole)
{
	/* rxe's max_msg_sz is 2 GiB: 3 GiB is two requests. */
	struct rdma_limits l = flat;
	struct kemari_run r = { .pfn = 16, .npages = PAGES(3 * GiB) };
	struct rdma_wr_plan wr[4];

	l.max_msg = 2 * GiB;
	cr_assert(eq(sz, plan_all(&r, 1, &l, wr, 4), 2));
	cr_assert(eq(u64, wr[0].off, 16 * 4096));
	cr_assert(eq(u64, wr[0].len, 2 * GiB));
	cr_assert(eq(u32, wr[0].sge[0].len, (uint32_t)(2 * GiB)));
	cr_assert(eq(u64, wr[1].off, 16 * 4096 + 2 * GiB));
	cr_assert(eq(u64, wr[1].len, GiB));
}

Test(rdma_batch, adjacent_runs_share_a_request)
{
	struct kemari_run r[] = {
		{ .pfn = 0, .npages = 1 },
		{ .pfn = 1, .npages = 2 },
		{ .pfn = 5, .npages = 1 },
		{ .pfn = 6, .npages = 0 }, /* empty: skipped */
		{ .pfn = 6, .npages = 4 },
	};
	struct rdma_wr_plan wr[8];

	cr_assert(eq(sz, plan_all(r, 5, &flat, wr, 8), 2));
	cr_assert(eq(u64, wr[0].off, 0));
	cr_assert(eq(u64, wr[0].len, 3 * 4096));
	cr_assert(eq(u64, wr[1].off, 5 * 4096));
	cr_assert(eq(u64, wr[1].len, 5 * 4096));
	cr_assert(eq(u32, wr[1].nsge, 1));
}

Test(rdma_batch, local_regions_become_sges_up_to_the_limit)
{
	/* 1 MiB local regions, 2 SGEs: at most 2 MiB per request. */
	struct rdma_limits l = flat;
	struct kemari_run r = { .pfn = PAGES(MiB / 2),
				.npages = PAGES(4 * MiB) };
	struct rdma_wr_plan wr[8];

	l.max_msg = 16 * MiB;
	l.lpiece = MiB;
	l.max_sge = 2;
	cr_assert(eq(sz, plan_all(&r, 1, &l, wr, 8), 3));
	/* [0.5, 2): 0.5 MiB of region 0, 1 MiB of region 1 */
	cr_assert(eq(u64, wr[0].off, MiB / 2));
	cr_assert(eq(u64, wr[0].len, MiB + MiB / 2));
	cr_assert(eq(u32, wr[0].nsge, 2));
	cr_assert(eq(u32, wr[0].sge[0].mr, 0));
	cr_assert(eq(u32, wr[0].sge[0].len, (uint32_t)(MiB / 2)));
	cr_assert(eq(u32, wr[0].sge[1].mr, 1));
	cr_assert(eq(u64, wr[0].sge[1].off, MiB));
	cr_assert(eq(u32, wr[0].sge[1].len, (uint32_t)MiB));
	/* [2, 4): regions 2 and 3 */
	cr_assert(eq(u64, wr[1].off, 2 * MiB));
	cr_assert(eq(u64, wr[1].len, 2 * MiB));
	cr_assert(eq(u32, wr[1].sge[0].mr, 2));
	cr_assert(eq(u32, wr[1].sge[1].mr, 3));
	/* [4, 4.5) */
	cr_assert(eq(u64, wr[2].off, 4 * MiB));
	cr_assert(eq(u64, wr[2].len, MiB / 2));
	cr_assert(eq(u32, wr[2].nsge, 1));
	cr_assert(eq(u32, wr[2].sge[0].mr, 4));
}

Test(rdma_batch, a_request_never_crosses_a_remote_region)
{
	struct rdma_limits l = flat;
	struct kemari_run r = { .pfn = PAGES(MiB / 2),
				.npages = PAGES(2 * MiB) };
	struct rdma_wr_plan wr[8];

	l.max_msg = 16 * MiB;
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

Test(rdma_batch, bad_runs_are_found_before_anything_is_posted)
{
	struct kemari_run ok[] = { { .pfn = 0, .npages = 1 },
				   { .pfn = 255, .npages = 1 } };
	struct kemari_run past[] = { { .pfn = 0, .npages = 1 },
				     { .pfn = 255, .npages = 2 } };
	struct kemari_run empty[] = { { .pfn = 3, .npages = 0 } };
	struct kemari_run wrap[] = { { .pfn = UINT64_MAX - 1, .npages = 4 } };

	cr_assert(eq(sz, rdma_plan__bad_run(ok, 2, 256 * 4096), 2));
	cr_assert(eq(sz, rdma_plan__bad_run(past, 2, 256 * 4096), 1));
	cr_assert(eq(sz, rdma_plan__bad_run(empty, 1, 256 * 4096), 0));
	cr_assert(eq(sz, rdma_plan__bad_run(wrap, 1, 256 * 4096), 0));
	cr_assert(eq(sz, rdma_plan__bad_run(NULL, 0, 0), 0));
}

/* --- the send queue against a model NIC ----------------------------------- */

struct nic {
	struct rdma_sq q;
	uint64_t hw_done; /* requests the NIC finished, in order */
	bool *sig;	  /* by seq: was it signalled */
	size_t cap;
	unsigned long completions;
};

static void nic_init(struct nic *n, uint32_t depth, uint32_t every, size_t cap)
{
	memset(n, 0, sizeof(*n));
	cr_assert(eq(int, rdma_sq__init(&n->q, depth, every), 0));
	n->sig = calloc(cap, sizeof(*n->sig));
	n->cap = cap;
}

static void nic_fini(struct nic *n)
{
	rdma_sq__fini(&n->q);
	free(n->sig);
}

/* The NIC finishes up to k more requests; signalled ones are reported. */
static void nic_run(struct nic *n, uint64_t k)
{
	while (k-- && n->hw_done < n->q.posted) {
		uint64_t seq = n->hw_done++;

		if (n->sig[seq]) {
			rdma_sq__complete(&n->q, seq);
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
static void nic_post(struct nic *n, const struct rdma_wr_plan *wr, uint32_t k,
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

Test(rdma_batch, lists_never_exceed_the_free_send_queue)
{
	static struct kemari_run runs[3000];
	struct rdma_wr_plan wr[64];
	struct rdma_cursor c;
	struct nic n;
	uint64_t next_off = 0;

	srand(1);
	for (unsigned int i = 0; i < 3000; i++)
		runs[i] = (struct kemari_run){ .pfn = 2 * i + 1, .npages = 1 };
	nic_init(&n, 64, 16, 4096);
	rdma_plan__start(&c, runs, 3000);
	while (!rdma_plan__finished(&c)) {
		uint32_t room = rdma_sq__room(&n.q);
		uint32_t k = rdma_batch__fill(&n.q, &c, &flat, wr, 64);

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

Test(rdma_batch, every_nth_and_the_last_of_each_list_are_signalled)
{
	struct nic n;
	uint64_t s = 0;

	nic_init(&n, 256, 16, 256);
	/* Lists of 40, 3, 1 and 16 requests. */
	for (uint32_t len = 0; len < 4; len++) {
		static const uint32_t k[] = { 40, 3, 1, 16 };
		uint64_t first = s;

		for (uint32_t i = 0; i < k[len]; i++, s++)
			n.sig[s] = rdma_sq__post(&n.q, 4096, i + 1 == k[len]);
		for (uint64_t j = first; j < s; j++) {
			bool want = j + 1 == s || (j - first + 1) % 16 == 0;

			cr_assert(eq(int, n.sig[j], want), "seq %llu",
				  (unsigned long long)j);
		}
	}
	nic_fini(&n);
}

Test(rdma_batch, bytes_in_flight_stay_bounded)
{
	/* 64 MiB in 1 MiB requests, at most 4 MiB in flight. */
	struct rdma_limits l = flat;
	struct kemari_run r = { .pfn = 0, .npages = PAGES(64 * MiB) };
	struct rdma_wr_plan wr[64];
	struct rdma_cursor c;
	struct nic n;

	srand(2);
	l.max_msg = MiB;
	l.inflight_max = 4 * MiB;
	nic_init(&n, 256, 16, 256);
	rdma_plan__start(&c, &r, 1);
	while (!rdma_plan__finished(&c)) {
		uint32_t room = rdma_sq__room(&n.q);
		uint32_t k = rdma_batch__fill(&n.q, &c, &l, wr, 64);

		cr_assert(le(u64, rdma_sq__inflight(&n.q), 4 * MiB));
		if (!k) {
			cr_assert(gt(u64, rdma_sq__inflight(&n.q), 0));
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

Test(rdma_batch, no_overrun_across_many_mixed_lists)
{
	/* Long random mix of WRITE lists and single control sends. */
	static struct kemari_run runs[20000];
	struct rdma_wr_plan wr[64];
	struct rdma_cursor c;
	struct nic n;
	unsigned long sends = 0;

	srand(3);
	for (unsigned int i = 0; i < 20000; i++)
		runs[i] =
			(struct kemari_run){ .pfn = 3ULL * i,
					     .npages = 1 + (uint32_t)(i % 3) };
	nic_init(&n, 100, 16, 40000);
	rdma_plan__start(&c, runs, 20000);
	while (!rdma_plan__finished(&c)) {
		uint32_t room = rdma_sq__room(&n.q);

		if (rand() % 7 == 0 && room) {
			uint64_t seq = n.q.posted;

			n.sig[seq] = rdma_sq__post(&n.q, 64, true);
			cr_assert(n.sig[seq]);
			sends++;
		} else {
			uint32_t max = 1 + (uint32_t)rand() % 64;
			uint32_t k = rdma_batch__fill(&n.q, &c, &flat, wr, max);

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

Test(rdma_batch, credits_wrap)
{
	cr_assert(eq(u32, rdma_credit__avail(5, 0xfffffffeU), 7));
	cr_assert(eq(u32, rdma_credit__avail(16, 16), 0));
	cr_assert(eq(u32, rdma_credit__later(0xfffffff0U, 3), 3));
	cr_assert(eq(u32, rdma_credit__later(3, 0xfffffff0U), 3));
	cr_assert(eq(u32, rdma_credit__later(16, 0), 16));
	cr_assert(eq(u32, rdma_credit__later(16, 20), 20));
}
