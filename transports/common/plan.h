/* SPDX-License-Identifier: MIT */
/*
 * The one-sided transports' run-to-write planner, free of verbs and
 * libfabric (tests/unit/test_xp_plan.c), shared by rdma and ofi:
 *
 * - planning: page runs become writes. A write carries at most max_bytes
 *   and max_segs segments; a segment is one byte range, at the remote
 *   offset bias + its local one (bias: the receiver's bank, a multiple of
 *   the page size), inside one local memory region (lpiece) and one remote
 *   one (rpiece). Touching runs share a segment. one_remote: every segment of
 *   a write continues the one before it (RDMA WRITE: one remote address).
 * - the send queue: how many operations may be posted now (never more than
 *   the queue holds) and which of them ask for a completion: every Nth and
 *   the last of every post list, so that whatever is outstanding ends in a
 *   signalled operation and waiting for room (or for bytes in flight to
 *   drain) always ends.
 * - the in-flight limit: posted but uncompleted bytes stay under
 *   inflight_max (one write always goes when nothing is in flight), so a
 *   long push paces itself like a socket write and control messages (the
 *   engine's heartbeats) never queue behind all of RAM.
 */
#ifndef KEMARI_XP_PLAN_H
#define KEMARI_XP_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kemari/dirty.h"

#define XP_MAX_SEGS 16 /* segments per write we ever build */
#define XP_BATCH 64    /* writes per post list */
/*
 * Bytes of writes in flight at most: a push returns once its writes are
 * queued, so without a bound the initial sync would queue all of RAM and a
 * heartbeat sent after it would wait behind all of it (tcp's socket buffer
 * is the same bound for the tcp transport). Plenty for RDMA bandwidth.
 */
#define XP_INFLIGHT_MAX (8ULL << 20)

struct xp_limits {
	uint64_t max_bytes;    /* bytes per write */
	uint32_t max_segs;     /* segments per write, 1..XP_MAX_SEGS */
	uint64_t lpiece;       /* bytes per local memory region, 0: one */
	uint64_t rpiece;       /* bytes per remote memory region, 0: one */
	bool one_remote;       /* a write is one contiguous remote range */
	uint64_t inflight_max; /* posted but uncompleted bytes, 0: no bound */
};

/*
 * Limits from a provider's answer: at most cap bytes and XP_MAX_SEGS
 * segments, whole pages per write (every split stays page-aligned), and
 * one segment even where the provider reports an iovec limit of 0.
 */
struct xp_limits xp_limits__clip(uint64_t max_msg_size, size_t iov_limit,
				 size_t rma_iov_limit, uint64_t cap);

struct xp_seg {
	uint64_t off; /* local byte offset; remote: bias + off */
	uint64_t len;
	uint32_t mr; /* local memory region index */
};

struct xp_write {
	uint64_t seq; /* send queue sequence number */
	uint64_t off;  /* of the first segment */
	uint64_t bias; /* remote offset - local offset, every segment */
	uint64_t len;  /* bytes, all segments */
	uint32_t rmr; /* remote memory region of the first segment */
	uint32_t nseg;
	bool signaled; /* asks for a completion */
	bool more;     /* another write of the same post list follows */
	struct xp_seg seg[XP_MAX_SEGS];
};

/*
 * Position in a run list: run i, of which done bytes are planned; the runs
 * land bias bytes further into the remote region than they are locally.
 */
struct xp_cursor {
	const struct kemari_run *runs;
	size_t n;
	size_t i;
	uint64_t done;
	uint64_t bias;
};

void xp_plan__start(struct xp_cursor *c, const struct kemari_run *runs,
		    size_t n, uint64_t bias);
bool xp_plan__finished(const struct xp_cursor *c);
/* The next write of the runs; false once they are all planned. */
bool xp_plan__next(struct xp_cursor *c, const struct xp_limits *l,
		   struct xp_write *w);
/*
 * Index of the first run that is empty or reaches past len bytes, or n when
 * every run is inside: checked against both regions before anything is
 * posted.
 */
size_t xp_plan__bad_run(const struct kemari_run *runs, size_t n, uint64_t len);

enum xp_outside { XP_INSIDE, XP_OUTSIDE_SRC, XP_OUTSIDE_DST };
/*
 * The run bounds check of a push, before anything is posted: whether every
 * run fits the local source (src_len bytes) and then, bias bytes in, the
 * peer's receive region (dst_len); if not, which one it misses and *bad
 * the first run that does (0 when the bias alone is past the region). The
 * caller says so in its own words.
 */
enum xp_outside xp_plan__check(const struct kemari_run *runs, size_t n,
			       uint64_t src_len, uint64_t dst_len,
			       uint64_t bias, size_t *bad);

/*
 * Send queue accounting. ordered: the provider completes operations in
 * order, so one completion retires everything before it and only some
 * operations ask for one; otherwise every operation asks and completions
 * are counted one by one.
 */
struct xp_sq {
	uint32_t depth;	       /* operations the queue holds */
	uint32_t every;	       /* ask for a completion at least this often */
	uint32_t unsig;	       /* unsignalled operations since the last */
	bool ordered;	       /* completions arrive in order */
	uint64_t posted;       /* operations posted: the next one's seq */
	uint64_t done;	       /* ordered: every one before this completed */
	uint64_t bytes_posted; /* cumulative bytes of posted operations */
	uint64_t bytes_done;   /* ... of completed ones */
	uint64_t *cum;	       /* bytes_posted after seq, at seq % depth */
};

int xp_sq__init(struct xp_sq *q, uint32_t depth, uint32_t every, bool ordered);
void xp_sq__fini(struct xp_sq *q);
uint32_t xp_sq__room(const struct xp_sq *q);
uint64_t xp_sq__inflight(const struct xp_sq *q);
/* Nothing posted is outstanding. */
bool xp_sq__idle(const struct xp_sq *q);
/*
 * Account for the next operation of a post list (the caller made sure there
 * is room); returns whether it must ask for a completion. last: it ends the
 * post list.
 */
bool xp_sq__post(struct xp_sq *q, uint64_t bytes, bool last);
/*
 * The signalled operation seq completed: ordered, with it every one before
 * it; otherwise that one alone.
 */
void xp_sq__complete(struct xp_sq *q, uint64_t seq);

/*
 * Plan the next post list of writes: at most max, never more than the
 * queue's room, and within l->inflight_max bytes in flight. Every write but
 * the last has `more`; the last is signalled. Returns the count, 0 when
 * nothing may be posted before a completion (or the runs are done).
 */
uint32_t xp_plan__fill(struct xp_sq *q, struct xp_cursor *c,
		       const struct xp_limits *l, struct xp_write *w,
		       uint32_t max);

#endif
