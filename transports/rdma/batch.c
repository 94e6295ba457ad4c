// SPDX-License-Identifier: MIT
/*
 * RDMA work request planning and send queue accounting (see batch.h). Pure
 * arithmetic: compiled into every build, with or without rdma-core.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "kemari/kemari.h"

static uint64_t run_bytes(const struct kemari_run *r)
{
	return (uint64_t)r->npages * KEMARI_PAGE_SIZE;
}

static void cursor_skip_empty(struct rdma_cursor *c)
{
	while (c->i < c->n && c->done >= run_bytes(&c->runs[c->i])) {
		c->i++;
		c->done = 0;
	}
}

void rdma_plan__start(struct rdma_cursor *c, const struct kemari_run *runs,
		      size_t n)
{
	c->runs = runs;
	c->n = runs ? n : 0;
	c->i = 0;
	c->done = 0;
	cursor_skip_empty(c);
}

size_t rdma_plan__bad_run(const struct kemari_run *runs, size_t n, uint64_t len)
{
	uint64_t pages = len / KEMARI_PAGE_SIZE;

	for (size_t i = 0; i < n; i++)
		if (!runs[i].npages || runs[i].pfn >= pages ||
		    runs[i].npages > pages - runs[i].pfn)
			return i;
	return n;
}

bool rdma_plan__next(struct rdma_cursor *c, const struct rdma_limits *l,
		     struct rdma_wr_plan *wr)
{
	if (rdma_plan__finished(c))
		return false;
	memset(wr, 0, sizeof(*wr));
	wr->off = c->runs[c->i].pfn * KEMARI_PAGE_SIZE + c->done;
	wr->rmr = (uint32_t)(wr->off / l->rpiece);
	while (!rdma_plan__finished(c)) {
		const struct kemari_run *r = &c->runs[c->i];
		uint64_t pos = r->pfn * KEMARI_PAGE_SIZE + c->done;
		uint64_t take = run_bytes(r) - c->done;
		uint32_t lmr = (uint32_t)(pos / l->lpiece);
		struct rdma_sge_plan *s =
			wr->nsge ? &wr->sge[wr->nsge - 1] : NULL;

		/* Only a contiguous continuation joins this request. */
		if (pos != wr->off + wr->len)
			break;
		take = KEMARI_MIN(take, l->max_msg - wr->len);
		take = KEMARI_MIN(take, l->rpiece - pos % l->rpiece);
		take = KEMARI_MIN(take, l->lpiece - pos % l->lpiece);
		if (s && s->mr == lmr) {
			s->len += (uint32_t)take;
		} else {
			if (wr->nsge == l->max_sge)
				break;
			s = &wr->sge[wr->nsge++];
			*s = (struct rdma_sge_plan){ .off = pos,
						     .len = (uint32_t)take,
						     .mr = lmr };
		}
		wr->len += take;
		c->done += take;
		cursor_skip_empty(c);
		/* Full, or at the end of the remote region: stop here. */
		if (wr->len == l->max_msg || (pos + take) % l->rpiece == 0)
			break;
	}
	return true;
}

int rdma_sq__init(struct rdma_sq *q, uint32_t depth, uint32_t every)
{
	memset(q, 0, sizeof(*q));
	if (!depth)
		return -EINVAL;
	q->cum = calloc(depth, sizeof(*q->cum));
	if (!q->cum)
		return -ENOMEM;
	q->depth = depth;
	q->every = KEMARI_MAX(1u, KEMARI_MIN(every, depth));
	return 0;
}

void rdma_sq__fini(struct rdma_sq *q)
{
	free(q->cum);
	q->cum = NULL;
}

bool rdma_sq__post(struct rdma_sq *q, uint64_t bytes, bool last)
{
	bool sig;

	q->bytes_posted += bytes;
	q->cum[q->posted % q->depth] = q->bytes_posted;
	q->posted++;
	/*
	 * Every Nth bounds the completions a long list waits for; the last
	 * of each list is signalled, so the newest outstanding request always
	 * reports, and with it (in order) everything before it.
	 */
	sig = last || q->unsig + 1 >= q->every;
	q->unsig = sig ? 0 : q->unsig + 1;
	return sig;
}

void rdma_sq__complete(struct rdma_sq *q, uint64_t seq)
{
	if (seq < q->done || seq >= q->posted)
		return; /* stale or foreign: completions arrive in order */
	q->bytes_done = q->cum[seq % q->depth];
	q->done = seq + 1;
}

uint32_t rdma_batch__fill(struct rdma_sq *q, struct rdma_cursor *c,
			  const struct rdma_limits *l, struct rdma_wr_plan *wr,
			  uint32_t max)
{
	uint32_t k = 0, room = rdma_sq__room(q);
	uint64_t inflight = rdma_sq__inflight(q);

	max = KEMARI_MIN(max, room);
	while (k < max) {
		struct rdma_cursor save = *c;

		if (!rdma_plan__next(c, l, &wr[k]))
			break;
		if (l->inflight_max && inflight &&
		    inflight + wr[k].len > l->inflight_max) {
			*c = save; /* waits for completions */
			break;
		}
		inflight += wr[k].len;
		k++;
	}
	for (uint32_t i = 0; i < k; i++) {
		wr[i].seq = q->posted;
		wr[i].signaled = rdma_sq__post(q, wr[i].len, i + 1 == k);
	}
	return k;
}
