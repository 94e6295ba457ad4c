// SPDX-License-Identifier: MIT
/*
 * Run-to-write planning and send queue accounting of the one-sided
 * transports (see plan.h). Pure arithmetic: compiled into every build, with
 * or without rdma-core and libfabric.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kemari/kemari.h"
#include "plan.h"

struct xp_limits xp_limits__clip(uint64_t max_msg_size, size_t iov_limit,
				 size_t rma_iov_limit, uint64_t cap)
{
	struct xp_limits l = { 0 };
	size_t segs = KEMARI_MIN(iov_limit, rma_iov_limit);

	/* A provider reporting 0 still moves one iovec per operation. */
	l.max_segs = (uint32_t)KEMARI_MAX(
		(size_t)1, KEMARI_MIN(segs, (size_t)XP_MAX_SEGS));
	l.max_bytes = KEMARI_MIN(max_msg_size, cap);
	/* Whole pages per write keep every split page-aligned. */
	l.max_bytes &= ~(KEMARI_PAGE_SIZE - 1);
	if (l.max_bytes == 0)
		l.max_bytes = KEMARI_PAGE_SIZE;
	return l;
}

static uint64_t run_bytes(const struct kemari_run *r)
{
	return (uint64_t)r->npages * KEMARI_PAGE_SIZE;
}

static void cursor_skip_empty(struct xp_cursor *c)
{
	while (c->i < c->n && c->done >= run_bytes(&c->runs[c->i])) {
		c->i++;
		c->done = 0;
	}
}

void xp_plan__start(struct xp_cursor *c, const struct kemari_run *runs,
		    size_t n, uint64_t bias)
{
	c->bias = bias;
	c->runs = runs;
	c->n = runs ? n : 0;
	c->i = 0;
	c->done = 0;
	cursor_skip_empty(c);
}

bool xp_plan__finished(const struct xp_cursor *c)
{
	return c->i >= c->n;
}

size_t xp_plan__bad_run(const struct kemari_run *runs, size_t n, uint64_t len)
{
	uint64_t pages = len / KEMARI_PAGE_SIZE;

	for (size_t i = 0; i < n; i++)
		if (!runs[i].npages || runs[i].pfn >= pages ||
		    runs[i].npages > pages - runs[i].pfn)
			return i;
	return n;
}

enum xp_outside xp_plan__check(const struct kemari_run *runs, size_t n,
			       uint64_t src_len, uint64_t dst_len,
			       uint64_t bias, size_t *bad)
{
	*bad = xp_plan__bad_run(runs, n, src_len);
	if (*bad < n)
		return XP_OUTSIDE_SRC;
	if (bias % KEMARI_PAGE_SIZE || bias >= dst_len) {
		*bad = 0;
		return n ? XP_OUTSIDE_DST : XP_INSIDE;
	}
	*bad = xp_plan__bad_run(runs, n, dst_len - bias);
	return *bad < n ? XP_OUTSIDE_DST : XP_INSIDE;
}

/* Bytes from pos to the end of its piece (0: one piece, no end). */
static uint64_t piece_left(uint64_t pos, uint64_t piece)
{
	return piece ? piece - pos % piece : UINT64_MAX;
}

static uint32_t piece_of(uint64_t pos, uint64_t piece)
{
	return piece ? (uint32_t)(pos / piece) : 0;
}

bool xp_plan__next(struct xp_cursor *c, const struct xp_limits *l,
		   struct xp_write *w)
{
	if (xp_plan__finished(c))
		return false;
	memset(w, 0, sizeof(*w));
	w->off = c->runs[c->i].pfn * KEMARI_PAGE_SIZE + c->done;
	w->bias = c->bias;
	w->rmr = piece_of(c->bias + w->off, l->rpiece);
	while (!xp_plan__finished(c) && w->len < l->max_bytes) {
		const struct kemari_run *r = &c->runs[c->i];
		uint64_t pos = r->pfn * KEMARI_PAGE_SIZE + c->done;
		uint64_t rpos = c->bias + pos; /* remote */
		uint64_t take = run_bytes(r) - c->done;
		uint32_t lmr = piece_of(pos, l->lpiece);
		struct xp_seg *s = w->nseg ? &w->seg[w->nseg - 1] : NULL;
		bool touches = s && s->off + s->len == pos;

		/* One remote range: only a contiguous continuation joins. */
		if (l->one_remote && s && !touches)
			break;
		take = KEMARI_MIN(take, l->max_bytes - w->len);
		take = KEMARI_MIN(take, piece_left(rpos, l->rpiece));
		take = KEMARI_MIN(take, piece_left(pos, l->lpiece));
		if (touches && s->mr == lmr &&
		    (!l->rpiece || piece_of(c->bias + s->off, l->rpiece) ==
					   piece_of(rpos, l->rpiece))) {
			s->len += take;
		} else {
			if (w->nseg == l->max_segs)
				break;
			s = &w->seg[w->nseg++];
			*s = (struct xp_seg){ .off = pos,
					      .len = take,
					      .mr = lmr };
		}
		w->len += take;
		c->done += take;
		cursor_skip_empty(c);
		/* At the end of a remote region a one-range write ends. */
		if (l->one_remote && l->rpiece &&
		    (rpos + take) % l->rpiece == 0)
			break;
	}
	return true;
}

int xp_sq__init(struct xp_sq *q, uint32_t depth, uint32_t every, bool ordered)
{
	memset(q, 0, sizeof(*q));
	if (!depth)
		return -EINVAL;
	/* cum[] by slot, then each slot's own bytes */
	q->cum = calloc(2 * (size_t)depth, sizeof(*q->cum));
	if (!q->cum)
		return -ENOMEM;
	q->depth = depth;
	q->every = ordered ? KEMARI_MAX(1u, KEMARI_MIN(every, depth)) : 1;
	q->ordered = ordered;
	return 0;
}

void xp_sq__fini(struct xp_sq *q)
{
	free(q->cum);
	q->cum = NULL;
}

uint32_t xp_sq__room(const struct xp_sq *q)
{
	return q->depth - (uint32_t)(q->posted - q->done);
}

uint64_t xp_sq__inflight(const struct xp_sq *q)
{
	return q->bytes_posted - q->bytes_done;
}

bool xp_sq__idle(const struct xp_sq *q)
{
	return q->done == q->posted;
}

bool xp_sq__post(struct xp_sq *q, uint64_t bytes, bool last)
{
	uint64_t slot = q->posted % q->depth;
	bool sig;

	q->bytes_posted += bytes;
	q->cum[slot] = q->bytes_posted;
	q->cum[q->depth + slot] = bytes;
	q->posted++;
	/*
	 * Every Nth bounds the completions a long list waits for; the last
	 * of each list is signalled, so the newest outstanding operation
	 * always reports, and with it (in order) everything before it.
	 */
	sig = last || q->unsig + 1 >= q->every;
	q->unsig = sig ? 0 : q->unsig + 1;
	return sig;
}

void xp_sq__complete(struct xp_sq *q, uint64_t seq)
{
	if (!q->ordered) {
		if (q->done < q->posted) {
			q->done++;
			q->bytes_done += q->cum[q->depth + seq % q->depth];
		}
		return;
	}
	if (seq < q->done || seq >= q->posted)
		return; /* stale or foreign: completions arrive in order */
	q->bytes_done = q->cum[seq % q->depth];
	q->done = seq + 1;
}

uint32_t xp_plan__fill(struct xp_sq *q, struct xp_cursor *c,
		       const struct xp_limits *l, struct xp_write *w,
		       uint32_t max)
{
	uint32_t k = 0, room = xp_sq__room(q);
	uint64_t inflight = xp_sq__inflight(q);

	max = KEMARI_MIN(max, room);
	while (k < max) {
		struct xp_cursor save = *c;

		if (!xp_plan__next(c, l, &w[k]))
			break;
		if (l->inflight_max && inflight &&
		    inflight + w[k].len > l->inflight_max) {
			*c = save; /* waits for completions */
			break;
		}
		inflight += w[k].len;
		k++;
	}
	for (uint32_t i = 0; i < k; i++) {
		w[i].seq = q->posted;
		w[i].more = i + 1 < k;
		w[i].signaled = xp_sq__post(q, w[i].len, i + 1 == k);
	}
	return k;
}
