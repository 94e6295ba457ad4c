/* SPDX-License-Identifier: MIT */
/*
 * RDMA transport arithmetic, free of verbs so that it is unit-tested without
 * a device (tests/unit/test_rdma_batch.c):
 *
 * - planning: page runs become RDMA WRITE work requests. A request writes one
 *   contiguous remote range inside one remote memory region, at most the
 *   device's message size; its local side is split into SGEs at local
 *   memory-region boundaries, at most the QP's SGE limit. Adjacent runs
 *   share a request.
 * - the send queue: how many requests may be posted now (never more than the
 *   queue holds) and which of them ask for a completion: every Nth, and the
 *   last of every post list, so that whatever is outstanding ends in a
 *   signalled request and waiting for room (or for bytes in flight to
 *   drain) always ends.
 * - credits: the peer's posted receive count against our sent count, in
 *   wrapping 32-bit arithmetic.
 */
#ifndef KEMARI_RDMA_BATCH_H
#define KEMARI_RDMA_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kemari/dirty.h"

#define RDMA_MAX_SGE 4 /* SGEs per WRITE we ever build */

struct rdma_limits {
	uint64_t max_msg;      /* bytes per work request */
	uint32_t max_sge;      /* SGEs per work request, 1..RDMA_MAX_SGE */
	uint64_t lpiece;       /* bytes per local memory region */
	uint64_t rpiece;       /* bytes per remote memory region */
	uint64_t inflight_max; /* posted but uncompleted bytes, 0: no bound */
};

struct rdma_sge_plan {
	uint64_t off; /* byte offset in the local region */
	uint32_t len;
	uint32_t mr; /* local memory region index */
};

struct rdma_wr_plan {
	uint64_t seq; /* send queue sequence number */
	uint64_t off; /* byte offset, the same on both sides */
	uint64_t len;
	uint32_t rmr; /* remote memory region index */
	uint32_t nsge;
	bool signaled;
	struct rdma_sge_plan sge[RDMA_MAX_SGE];
};

/* Position in a run list: run i, of which done bytes are planned. */
struct rdma_cursor {
	const struct kemari_run *runs;
	size_t n;
	size_t i;
	uint64_t done;
};

void rdma_plan__start(struct rdma_cursor *c, const struct kemari_run *runs,
		      size_t n);
static inline bool rdma_plan__finished(const struct rdma_cursor *c)
{
	return c->i >= c->n;
}
/* The next work request of the runs; false once they are all planned. */
bool rdma_plan__next(struct rdma_cursor *c, const struct rdma_limits *l,
		     struct rdma_wr_plan *wr);
/*
 * Index of the first run that is empty or reaches past len bytes, or n when
 * every run is inside: checked before anything is posted.
 */
size_t rdma_plan__bad_run(const struct kemari_run *runs, size_t n,
			  uint64_t len);

/* Send queue accounting (a QP completes its send queue in order). */
struct rdma_sq {
	uint32_t depth;	       /* work requests the queue holds */
	uint32_t every;	       /* ask for a completion at least this often */
	uint32_t unsig;	       /* unsignalled requests since the last signal */
	uint64_t posted;       /* requests posted: the next one's seq */
	uint64_t done;	       /* every request before this seq completed */
	uint64_t bytes_posted; /* cumulative bytes of posted requests */
	uint64_t bytes_done;   /* ... of completed ones */
	uint64_t *cum;	       /* bytes_posted after seq, at seq % depth */
};

int rdma_sq__init(struct rdma_sq *q, uint32_t depth, uint32_t every);
void rdma_sq__fini(struct rdma_sq *q);
static inline uint32_t rdma_sq__room(const struct rdma_sq *q)
{
	return q->depth - (uint32_t)(q->posted - q->done);
}
static inline uint64_t rdma_sq__inflight(const struct rdma_sq *q)
{
	return q->bytes_posted - q->bytes_done;
}
/*
 * Account for the next request of a post list (the caller made sure there
 * is room); returns whether it must be signalled. last: it ends the post
 * list.
 */
bool rdma_sq__post(struct rdma_sq *q, uint64_t bytes, bool last);
/* The signalled request seq completed, and with it every one before it. */
void rdma_sq__complete(struct rdma_sq *q, uint64_t seq);

/*
 * Plan the next post list of WRITEs: at most max requests, never more than
 * the queue's room, and within l->inflight_max bytes in flight (one request
 * always goes when nothing is in flight). Returns the count, 0 when nothing
 * may be posted before a completion (or the runs are done).
 */
uint32_t rdma_batch__fill(struct rdma_sq *q, struct rdma_cursor *c,
			  const struct rdma_limits *l, struct rdma_wr_plan *wr,
			  uint32_t max);

/* Receive credits: the peer posted peer_posted receives, we sent sent. */
static inline uint32_t rdma_credit__avail(uint32_t peer_posted, uint32_t sent)
{
	return peer_posted - sent;
}
/* The later of two wrapping counters. */
static inline uint32_t rdma_credit__later(uint32_t cur, uint32_t seen)
{
	return (int32_t)(seen - cur) > 0 ? seen : cur;
}

#endif
