/* SPDX-License-Identifier: MIT */
/*
 * The rdma transport's private header: the connection, shared by its
 * connection management (rdma_cm.c) and its data path (rdma_data.c). The
 * fabric-neutral machinery (control queue, credits, sticky failure, the
 * peer's region, the write planner) is transports/common's.
 */
#ifndef KEMARI_RDMA_H
#define KEMARI_RDMA_H

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>
#include <stdbool.h>
#include <stdint.h>

#include "../common/credit.h"
#include "../common/ctrlq.h"
#include "../common/fail.h"
#include "../common/plan.h"
#include "../common/region.h"
#include "kemari/kemari.h"
#include "kemari/xport.h"

#define RDMA_SLOTS 16		/* receives posted for the peer */
#define RDMA_SEND_SLOTS 8	/* staged control sends in flight */
#define RDMA_MAX_SGE 4		/* SGEs per WRITE we ever build */
#define RDMA_COMMIT_SLOT 128	/* bytes per commit slot (frame + payload) */
#define RDMA_COPY_MAX 512	/* payloads up to this are copied on arrival */
#define RDMA_BACKLOG 240	/* copied messages waiting for recv */
#define RDMA_SPIN_NS 1000000ULL /* busy-poll this long after activity */
#define RDMA_STALL_MS 30000	/* no progress for this long: peer gone */
#define RDMA_RECV_TAG (1ULL << 63)

/* A registered local area, in regions of at most piece bytes. */
struct rdma_region {
	uint8_t *base;
	uint64_t len;
	uint64_t piece;
	uint32_t n;
	struct ibv_mr **mr;
};

struct rdma_send_slot {
	uint64_t seq;
	bool busy;
};

struct rdma_xport {
	struct kemari_xport x;
	bool listener;
	bool connected;
	char addr[64];
	struct rdma_event_channel *ech;
	struct rdma_cm_id *id;
	struct ibv_pd *pd;
	struct ibv_comp_channel *cch;
	struct ibv_cq *cq;
	struct ibv_qp *qp;
	unsigned int cq_events; /* received, not yet acknowledged */

	/* Receive and send slots (local), commit slots + credit word (rw). */
	uint8_t *ctrl;
	size_t ctrl_len;
	struct ibv_mr *ctrl_mr;
	uint8_t *rw;
	size_t rw_len;
	struct ibv_mr *rw_mr;
	uint32_t stride; /* bytes per receive/send slot */
	uint32_t max_msg;
	struct rdma_send_slot sslot[RDMA_SEND_SLOTS];
	unsigned int snext;

	/* The peer, from the CM handshake (and its RW message: peer_rw_known). */
	uint32_t peer_slots;
	uint32_t peer_commit;
	uint64_t peer_rw;
	uint32_t peer_rkey;
	bool peer_rw_known;

	/* Credits: lent is our posted-receive count the peer hears of. */
	struct xp_credit cr;
	uint32_t nrecv; /* messages received: picks the commit slot */
	struct xp_ctrlq q;

	struct xp_sq sq;
	struct xp_limits lim;
	uint64_t push_end;  /* seq after the last WRITE posted */
	uint64_t wait_mark; /* sq.done when a wait for a completion began */
	bool use_imm;

	struct rdma_region src, dst;
	struct xp_region pdst;

	struct xp_fail fail;
	const char *gone; /* a CM event said the peer is gone */
	uint64_t last_activity_ns;
	uint64_t cm_polled_ns; /* the CM channel is a syscall: not every spin */
};

static inline struct rdma_xport *to_rdma(struct kemari_xport *x)
{
	return kemari_container_of(x, struct rdma_xport, x);
}

static inline uint64_t rdma__deadline(int timeout_ms)
{
	if (timeout_ms < 0)
		return UINT64_MAX;
	return kemari_now_ns() + (uint64_t)timeout_ms * 1000000ULL;
}

static inline int rdma__ms_left(uint64_t deadline)
{
	uint64_t now = kemari_now_ns();

	if (deadline == UINT64_MAX)
		return -1;
	if (now >= deadline)
		return 0;
	return (int)KEMARI_MIN((deadline - now + 999999) / 1000000,
			       (uint64_t)INT32_MAX);
}

/* rdma_cm.c */
/* setup: connection buffers, registered before guest RAM/receive buffers */
struct ibv_mr *rdma__reg_mr(struct rdma_xport *t, void *p, uint64_t len,
			    int access, const char *what, bool setup, int *err);
int rdma__region_init(struct rdma_xport *t, struct rdma_region *r, void *base,
		      uint64_t len, int access, bool dst, const char *what);

/* rdma_data.c */
void rdma__lost(struct rdma_xport *t, const char *why);
int rdma__post_recv(struct rdma_xport *t, uint32_t slot);
int rdma__progress(struct rdma_xport *t);
int rdma__send_frame(struct rdma_xport *t, uint16_t type, uint64_t epoch,
		     const void *payload, uint32_t len);
int rdma__push(struct kemari_xport *x, const struct kemari_run *runs, size_t n,
	       uint64_t dst_off);
int rdma__flush(struct kemari_xport *x);
int rdma__send(struct kemari_xport *x, uint16_t type, uint64_t epoch,
	       const void *payload, uint32_t len);
int rdma__recv(struct kemari_xport *x, struct kemari_msg *m, int timeout_ms);
uint32_t rdma__max_msg(struct kemari_xport *x);
int rdma__reg_src(struct kemari_xport *x, void *base, uint64_t len);
int rdma__reg_dst(struct kemari_xport *x, void *base, uint64_t len);

#endif
