/* SPDX-License-Identifier: MIT */
/*
 * The arithmetic of the libfabric transport, kept apart from libfabric calls
 * so that tests/unit/test_ofi.c can check it without a provider: how page
 * runs become RMA writes within a provider's limits, which writes of a batch
 * carry FI_MORE or ask for a completion, how a memory registration's mode
 * decides descriptors, addresses and keys, how receive credits flow, and
 * which provider is the default.
 */
#ifndef KEMARI_OFI_PLAN_H
#define KEMARI_OFI_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <rdma/fabric.h>

#include "kemari/dirty.h"
#include "kemari/kemari.h"

#define OFI_MAX_SEGS 16 /* iovecs per write we ever build */
#define OFI_BATCH 64	/* writes between two doorbells */
/*
 * Bytes of writes in flight at most: a push returns once its writes are
 * queued, so without a bound the initial sync would queue all of RAM and a
 * heartbeat sent after it would wait behind all of it (tcp's socket buffer
 * is the same bound for the tcp transport). Plenty for RDMA bandwidth.
 */
#define OFI_INFLIGHT_MAX (8ULL << 20)

/* One piece of a write: the same byte range of source and destination. */
struct ofi_seg {
	uint64_t off;
	uint64_t len;
};

/* What one write may carry: the provider's limits, clipped by ours. */
struct ofi_limits {
	uint64_t max_bytes;    /* ep_attr->max_msg_size, capped */
	unsigned int max_segs; /* min(tx iov_limit, rma_iov_limit), capped */
};

static inline struct ofi_limits ofi_limits__make(uint64_t max_msg_size,
						 size_t iov_limit,
						 size_t rma_iov_limit,
						 uint64_t cap_bytes)
{
	struct ofi_limits l;
	size_t segs = KEMARI_MIN(iov_limit, rma_iov_limit);

	/* A provider reporting 0 still moves one iovec per operation. */
	l.max_segs = (unsigned int)KEMARI_MAX(
		(size_t)1, KEMARI_MIN(segs, (size_t)OFI_MAX_SEGS));
	l.max_bytes = KEMARI_MIN(max_msg_size, cap_bytes);
	/* Whole pages per write keep every split page-aligned. */
	l.max_bytes &= ~(KEMARI_PAGE_SIZE - 1);
	if (l.max_bytes == 0)
		l.max_bytes = KEMARI_PAGE_SIZE;
	return l;
}

/*
 * The first run that does not fit in [0, len) bytes (or is empty), or n when
 * all fit. Pushes check every run against both regions before posting any.
 */
static inline size_t ofi_runs__first_outside(const struct kemari_run *r,
					     size_t n, uint64_t len)
{
	uint64_t pages = len / KEMARI_PAGE_SIZE;

	for (size_t i = 0; i < n; i++)
		if (r[i].npages == 0 || r[i].pfn >= pages ||
		    r[i].npages > pages - r[i].pfn)
			return i;
	return n;
}

/*
 * Cursor that cuts runs into writes: a write gathers up to max_segs
 * segments and max_bytes bytes; a run longer than that is split, and runs
 * that touch (pfn + npages == next pfn) are merged into one segment.
 */
struct ofi_split {
	const struct kemari_run *runs;
	size_t n;
	size_t i;      /* current run */
	uint64_t done; /* bytes of runs[i] already planned */
};

static inline void ofi_split__init(struct ofi_split *s,
				   const struct kemari_run *runs, size_t n)
{
	s->runs = runs;
	s->n = n;
	s->i = 0;
	s->done = 0;
}

/* Plan the next write into seg[]; returns its segment count, 0 when done. */
static inline unsigned int ofi_split__next(struct ofi_split *s,
					   const struct ofi_limits *l,
					   struct ofi_seg *seg)
{
	uint64_t budget = l->max_bytes;
	unsigned int k = 0;

	while (s->i < s->n && budget > 0) {
		const struct kemari_run *r = &s->runs[s->i];
		uint64_t off = r->pfn * KEMARI_PAGE_SIZE + s->done;
		uint64_t left =
			(uint64_t)r->npages * KEMARI_PAGE_SIZE - s->done;
		uint64_t take = KEMARI_MIN(left, budget);

		if (k > 0 && seg[k - 1].off + seg[k - 1].len == off) {
			seg[k - 1].len += take; /* touches the last one */
		} else {
			if (k == l->max_segs)
				break;
			seg[k].off = off;
			seg[k].len = take;
			k++;
		}
		budget -= take;
		s->done += take;
		if (s->done == (uint64_t)r->npages * KEMARI_PAGE_SIZE) {
			s->i++;
			s->done = 0;
		}
	}
	return k;
}

/*
 * Flags of one write within a batch. FI_MORE on all but the last: the
 * provider may hold a write flagged FI_MORE until one without it arrives,
 * so a batch always ends unflagged before we wait for anything. With
 * selective completion (the provider completes in order, FI_ORDER_STRICT),
 * only the last write of a batch and every signal_every-th write ask for a
 * completion: one completion then retires all earlier work. Otherwise every
 * write asks, and completions are counted one by one.
 */
#define OFI_OP_MORE 0x1
#define OFI_OP_SIGNAL 0x2

static inline unsigned int ofi_batch__flags(bool last, uint64_t seq,
					    unsigned int signal_every,
					    bool selective)
{
	unsigned int f = last ? 0 : OFI_OP_MORE;

	if (!selective || last || (signal_every && seq % signal_every == 0))
		f |= OFI_OP_SIGNAL;
	return f;
}

static inline uint64_t ofi_segs__bytes(const struct ofi_seg *seg,
				       unsigned int k)
{
	uint64_t n = 0;

	for (unsigned int i = 0; i < k; i++)
		n += seg[i].len;
	return n;
}

/* Whether bytes more may be posted with inflight bytes outstanding. */
static inline bool ofi_inflight__fits(uint64_t inflight, uint64_t bytes,
				      uint64_t window)
{
	return inflight == 0 || inflight + bytes <= window;
}

/*
 * Whether the write about to be posted ends its batch (goes without
 * FI_MORE, asks for a completion): nothing follows it (next_bytes 0), or
 * the next write will have to wait for the transmit queue (room_after) or
 * the byte window, or the batch is long enough.
 */
static inline bool ofi_batch__ends(uint64_t next_bytes, uint64_t room_after,
				   unsigned int in_batch,
				   uint64_t inflight_after, uint64_t window)
{
	return next_bytes == 0 || room_after == 0 ||
	       in_batch + 1 >= OFI_BATCH ||
	       !ofi_inflight__fits(inflight_after, next_bytes, window);
}

/* How a domain's mr_mode shapes registrations and remote addressing. */
struct ofi_mr_use {
	bool local;	/* FI_MR_LOCAL: register local buffers, pass desc */
	bool virt_addr; /* FI_MR_VIRT_ADDR: peer addresses by our VA */
	bool prov_key;	/* FI_MR_PROV_KEY: the provider picks the key */
	bool endpoint;	/* FI_MR_ENDPOINT: bind each MR to the ep, enable */
};

static inline struct ofi_mr_use ofi_mr__use(uint64_t mr_mode)
{
	/* FI_MR_BASIC (API < 1.5 style) means all three of these. */
	bool basic = mr_mode & FI_MR_BASIC;
	struct ofi_mr_use u = {
		.local = basic || (mr_mode & FI_MR_LOCAL),
		.virt_addr = basic || (mr_mode & FI_MR_VIRT_ADDR),
		.prov_key = basic || (mr_mode & FI_MR_PROV_KEY),
		.endpoint = mr_mode & FI_MR_ENDPOINT,
	};

	return u;
}

/*
 * The base the writer adds byte offsets to: our virtual address under
 * FI_MR_VIRT_ADDR, 0 otherwise (offsets from the start of the MR). The
 * receiver advertises it, so the writer never needs the receiver's mode.
 */
static inline uint64_t ofi_mr__base(const struct ofi_mr_use *u, const void *va)
{
	return u->virt_addr ? (uint64_t)(uintptr_t)va : 0;
}

/* The key to request at registration (ignored under FI_MR_PROV_KEY). */
static inline uint64_t ofi_mr__requested_key(const struct ofi_mr_use *u,
					     uint64_t ours)
{
	return u->prov_key ? 0 : ours;
}

/*
 * Receive credits: the receiver returns credits in batches of half the
 * window, so at most two credit messages are ever unabsorbed at the sender
 * (each carries >= window / 2 of the window's total), which is why two
 * receive buffers beyond the window are reserved for them.
 */
#define OFI_CREDIT_RESERVE 2

static inline bool ofi_credit__due(uint32_t owed, uint32_t window)
{
	return owed > 0 && owed >= KEMARI_MAX(1u, window / 2);
}

/*
 * Default provider order: real RDMA first, then the kernel-socket ones.
 * Negative: cannot serve a connected FI_EP_MSG endpoint with RMA between
 * hosts (shm is host-local, udp has no RMA, "x;ofi_rxm" are RDM layers),
 * or not at this address: rdma_cm maps a loopback address to the first
 * RDMA device, so verbs listens and resolves there, but its fi_connect
 * fails (ENODEV).
 */
static inline int ofi_prov__rank(const char *name, bool loopback)
{
	static const char *const order[] = { "verbs", "tcp", "sockets" };

	if (!name || strchr(name, ';') || !strncmp(name, "ofi_", 4) ||
	    !strcmp(name, "shm") || !strcmp(name, "udp") ||
	    (loopback && !strcmp(name, "verbs")))
		return -1;
	for (size_t i = 0; i < KEMARI_ARRAY_SIZE(order); i++)
		if (!strcmp(name, order[i]))
			return (int)i;
	return (int)KEMARI_ARRAY_SIZE(order);
}

/* 127.0.0.0/8, host byte order. */
static inline bool ofi_addr__loopback(uint32_t ip)
{
	return (ip >> 24) == 127;
}

#endif
