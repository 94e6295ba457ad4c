// SPDX-License-Identifier: MIT
/*
 * The rdma transport's data path: control frames in and out under credits,
 * page runs as chained RDMA WRITEs, completions and the waits on them. The
 * connection itself is rdma_cm.c's; the design is described there.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "ctrl.h"
#include "kemari/kemari.h"
#include "kemari/wire.h"
#include "rdma.h"

#define RDMA_BATCH XP_BATCH /* WRITEs per post list */

/* ---- errors ------------------------------------------------------------ */

void rdma__lost(struct rdma_xport *t, const char *why)
{
	xp_fail__lost(&t->fail, t->addr, why);
}

/* ---- queues ------------------------------------------------------------ */

static uint8_t *rdma__rslot(struct rdma_xport *t, uint32_t i)
{
	return t->ctrl + (size_t)i * t->stride;
}

static uint8_t *rdma__sslot(struct rdma_xport *t, uint32_t i)
{
	return t->ctrl + (size_t)(RDMA_SLOTS + i) * t->stride;
}

static uint32_t *rdma__credit_src(struct rdma_xport *t)
{
	return (uint32_t *)(t->ctrl +
			    (size_t)(RDMA_SLOTS + RDMA_SEND_SLOTS) * t->stride);
}

static uint8_t *rdma__commit_slot(struct rdma_xport *t, uint32_t i)
{
	return t->rw + (size_t)i * RDMA_COMMIT_SLOT;
}

static uint32_t *rdma__credit_word(struct rdma_xport *t)
{
	return (uint32_t *)(t->rw + (size_t)RDMA_SLOTS * RDMA_COMMIT_SLOT);
}

int rdma__post_recv(struct rdma_xport *t, uint32_t slot)
{
	struct ibv_sge sge = {
		.addr = (uintptr_t)rdma__rslot(t, slot),
		.length = t->stride,
		.lkey = t->ctrl_mr->lkey,
	};
	struct ibv_recv_wr wr = { .wr_id = RDMA_RECV_TAG | slot,
				  .sg_list = &sge,
				  .num_sge = 1 },
			   *bad;
	int err = ibv_post_recv(t->qp, &wr, &bad);

	if (err) {
		rdma__lost(t, "cannot post a receive");
		return xp_fail__dead(&t->fail);
	}
	xp_credit__lend(&t->cr);
	return 0;
}

static uint32_t rdma__credits(struct rdma_xport *t)
{
	uint32_t w = atomic_load_explicit(
		(_Atomic uint32_t *)rdma__credit_word(t), memory_order_acquire);

	xp_credit__granted(&t->cr, w);
	return xp_credit__avail(&t->cr);
}

/*
 * Tell the peer about reposted receives by writing our count into its
 * credit word: consumes none of its receives. force: any owed credit.
 */
static void rdma__advertise(struct rdma_xport *t, bool force)
{
	struct ibv_send_wr wr, *bad;
	struct ibv_sge sge;

	if (!t->connected || t->fail.dead || !t->peer_rw_known ||
	    !xp_credit__due(&t->cr, force) || !xp_sq__room(&t->sq))
		return;
	atomic_store_explicit((_Atomic uint32_t *)rdma__credit_src(t),
			      t->cr.lent, memory_order_release);
	sge = (struct ibv_sge){ .addr = (uintptr_t)rdma__credit_src(t),
				.length = sizeof(uint32_t),
				.lkey = t->ctrl_mr->lkey };
	memset(&wr, 0, sizeof(wr));
	wr.wr_id = t->sq.posted;
	wr.opcode = IBV_WR_RDMA_WRITE;
	wr.sg_list = &sge;
	wr.num_sge = 1;
	wr.wr.rdma.remote_addr =
		t->peer_rw + (uint64_t)t->peer_slots * t->peer_commit;
	wr.wr.rdma.rkey = t->peer_rkey;
	if (xp_sq__post(&t->sq, sge.length, true))
		wr.send_flags = IBV_SEND_SIGNALED;
	if (ibv_post_send(t->qp, &wr, &bad)) {
		rdma__lost(t, "cannot post a credit update");
		return;
	}
	xp_credit__told(&t->cr);
}

/* ---- arriving messages ------------------------------------------------- */

static void rdma__absorb_xport(struct rdma_xport *t,
			       const struct kemari_wire_hdr *h, const void *p)
{
	struct rdma_ctrl_xport m;
	struct xp_remote *r;

	if (rdma_ctrl__xport(p, h->len, &m))
		goto bad;
	if (m.kind == RDMA_XPORT_RW) {
		/* Once: a second one would move the peer's slots under us. */
		if (t->peer_rw_known)
			goto bad;
		t->peer_rw = m.rw.addr;
		t->peer_rkey = m.rw.rkey;
		t->peer_rw_known = true;
		return;
	}
	r = calloc(m.di.n, sizeof(*r));
	if (!r) {
		xp_fail__die(&t->fail, -ENOMEM, "out of memory");
		return;
	}
	for (uint32_t i = 0; i < m.di.n; i++) {
		struct rdma_remote rr;

		memcpy(&rr, (const uint8_t *)m.mr + i * sizeof(rr), sizeof(rr));
		r[i] = (struct xp_remote){ .addr = rr.addr, .key = rr.rkey };
	}
	if (xp_region__set(&t->pdst, m.di.len, m.di.piece, m.di.n, r))
		xp_fail__die(&t->fail, -ENOMEM, "out of memory");
	free(r);
	return;
bad:
	xp_fail__malformed(
		&t->fail,
		kemari_err(
			-EBADMSG,
			"replication stream: malformed RDMA setup message (%u bytes)",
			h->len));
}

/*
 * Queue a message that consumed receive slot `slot`: a small one is copied
 * and its slot goes back at once (credit for the peer).
 */
static void rdma__enqueue(struct rdma_xport *t, const struct kemari_wire_hdr *h,
			  const uint8_t *payload, uint32_t slot)
{
	if (xp_ctrlq__push(&t->q, h, payload, slot))
		rdma__post_recv(t, slot);
}

static void rdma__on_recv(struct rdma_xport *t, const struct ibv_wc *wc)
{
	uint32_t slot = (uint32_t)(wc->wr_id & ~RDMA_RECV_TAG);
	uint32_t idx = t->nrecv++ % RDMA_SLOTS;
	const struct kemari_wire_hdr *h;
	struct kemari_wire_hdr hdr;
	int err;

	if (slot >= RDMA_SLOTS)
		return;
	if (xp_fail__failed(&t->fail)) {
		rdma__post_recv(t, slot);
		return;
	}
	/* A failed check's reason is the one xp_fail__malformed keeps. */
	kemari_err_clear();
	if (wc->opcode == IBV_WC_RECV_RDMA_WITH_IMM) {
		/* A commit: its frame is in the commit slot, not the receive. */
		uint8_t *c = rdma__commit_slot(t, idx);

		h = (const struct kemari_wire_hdr *)c;
		err = kemari_wire__check_hdr(h, RDMA_COMMIT_SLOT - sizeof(*h));
		err = err ?: kemari_wire__check_crc(h, h + 1);
		if (!err && (uint32_t)h->epoch != ntohl(wc->imm_data))
			err = kemari_err(-EBADMSG,
					 "replication stream: commit of epoch "
					 "%llu announced as epoch %u",
					 (unsigned long long)h->epoch,
					 ntohl(wc->imm_data));
		if (!err) {
			/* The slot is ours until this receive is reposted. */
			rdma__enqueue(t, h, (const uint8_t *)(h + 1), slot);
			return;
		}
		xp_fail__malformed(&t->fail, err);
		rdma__post_recv(t, slot);
		return;
	}
	if (wc->wc_flags & IBV_WC_WITH_IMM)
		xp_credit__granted(&t->cr, ntohl(wc->imm_data));
	h = (const struct kemari_wire_hdr *)rdma__rslot(t, slot);
	err = kemari_wire__check_frame(h, wc->byte_len, t->max_msg, &hdr);
	if (err) {
		xp_fail__malformed(&t->fail, err);
		rdma__post_recv(t, slot);
	} else if (h->type == KEMARI_MSG_XPORT) {
		rdma__absorb_xport(t, h, h + 1);
		rdma__post_recv(t, slot);
	} else {
		rdma__enqueue(t, h, (const uint8_t *)(h + 1), slot);
	}
}

static void rdma__on_wc(struct rdma_xport *t, const struct ibv_wc *wc)
{
	if (wc->status != IBV_WC_SUCCESS) {
		if (wc->wr_id & RDMA_RECV_TAG &&
		    wc->status == IBV_WC_LOC_LEN_ERR) {
			kemari_err_clear();
			xp_fail__malformed(
				&t->fail,
				kemari_err(
					-EBADMSG,
					"replication stream: a control message "
					"longer than the %u-byte receive buffer",
					t->stride));
		} else if (wc->status == IBV_WC_WR_FLUSH_ERR) {
			rdma__lost(t, t->gone ? t->gone
					      : "the queue pair was shut down");
		} else if (wc->status == IBV_WC_RETRY_EXC_ERR) {
			rdma__lost(t, "transport retry counter exceeded (the "
				      "peer does not answer)");
		} else {
			rdma__lost(t, ibv_wc_status_str(wc->status));
		}
		return;
	}
	if (wc->wr_id & RDMA_RECV_TAG)
		rdma__on_recv(t, wc);
	else
		xp_sq__complete(&t->sq, wc->wr_id);
}

static void rdma__cm_poll(struct rdma_xport *t)
{
	struct rdma_cm_event *ev;

	while (!rdma_get_cm_event(t->ech, &ev)) {
		if (ev->event == RDMA_CM_EVENT_DISCONNECTED)
			t->gone = "the peer disconnected";
		else if (ev->event == RDMA_CM_EVENT_DEVICE_REMOVAL)
			t->gone = "the RDMA device was removed";
		rdma_ack_cm_event(ev);
	}
}

/* Reap completions and CM events without blocking; count of completions. */
int rdma__progress(struct rdma_xport *t)
{
	struct ibv_wc wc[32];
	uint64_t now = kemari_now_ns();
	int n, total = 0;

	if (now - t->cm_polled_ns >= 100000) {
		rdma__cm_poll(t);
		t->cm_polled_ns = now;
	}
	while ((n = ibv_poll_cq(t->cq, (int)KEMARI_ARRAY_SIZE(wc), wc)) > 0) {
		for (int i = 0; i < n; i++)
			rdma__on_wc(t, &wc[i]);
		total += n;
	}
	if (n < 0)
		rdma__lost(t, "polling the completion queue failed");
	/* After the completions that arrived before it. */
	if (t->gone)
		rdma__lost(t, t->gone);
	rdma__advertise(t, false);
	if (total)
		t->last_activity_ns = kemari_now_ns();
	return total;
}

/* Sleep until a completion or CM event, or ms (-1: forever). */
static void rdma__block(struct rdma_xport *t, int ms)
{
	struct pollfd p[2] = { { .fd = t->cch->fd, .events = POLLIN },
			       { .fd = t->ech->fd, .events = POLLIN } };
	struct ibv_cq *cq;
	void *ctx;

	if (ibv_req_notify_cq(t->cq, 0) || rdma__progress(t))
		return; /* completions raced with arming: handled */
	if (t->fail.dead || poll(p, 2, ms) <= 0)
		return;
	if (p[1].revents & POLLIN)
		t->cm_polled_ns = 0; /* look at it on the next progress */
	if ((p[0].revents & POLLIN) && !ibv_get_cq_event(t->cch, &cq, &ctx) &&
	    ++t->cq_events >= 64) {
		ibv_ack_cq_events(t->cq, t->cq_events);
		t->cq_events = 0;
	}
}

/* Make progress until ready(t) holds; bounded by RDMA_STALL_MS. */
static int rdma__wait(struct rdma_xport *t, bool (*ready)(struct rdma_xport *t),
		      const char *what)
{
	uint64_t t0 = kemari_now_ns();

	for (;;) {
		uint64_t now;

		rdma__progress(t);
		if (t->fail.dead)
			return xp_fail__dead(&t->fail);
		if (ready(t))
			return 0;
		now = kemari_now_ns();
		if (now - t0 > RDMA_STALL_MS * 1000000ULL) {
			xp_fail__die(&t->fail, -ECONNRESET,
				     "connection to %s lost: %s for %d s",
				     t->addr, what, RDMA_STALL_MS / 1000);
			return xp_fail__dead(&t->fail);
		}
		/* Credit words arrive without an event: short sleeps. */
		if (now - t0 > RDMA_SPIN_NS)
			rdma__block(t, 1);
		else
			sched_yield();
	}
}

/* ---- regions ----------------------------------------------------------- */

/*
 * The commit slots and credit word, registered for remote writes and
 * advertised once: from reg_src or reg_dst, i.e. after the engine has
 * authenticated the peer, never at connection time.
 */
static int rdma__open_rw(struct rdma_xport *t)
{
	struct rdma_rw_info rw = { .kind = RDMA_XPORT_RW };
	int err;

	if (t->rw_mr)
		return 0;
	t->rw_mr =
		rdma__reg_mr(t, t->rw, t->rw_len,
			     IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE,
			     "commit slots", true, &err);
	if (!t->rw_mr)
		return err;
	rw.rkey = t->rw_mr->rkey;
	rw.addr = (uintptr_t)t->rw;
	return rdma__send_frame(t, KEMARI_MSG_XPORT, 0, &rw, sizeof(rw));
}

int rdma__reg_src(struct kemari_xport *x, void *base, uint64_t len)
{
	struct rdma_xport *t = to_rdma(x);
	int err = rdma__open_rw(t);

	/* Read by the NIC only: no write access, no copy-on-write break. */
	return err
		       ?: rdma__region_init(t, &t->src, base, len, 0, false,
					    "guest RAM");
}

int rdma__reg_dst(struct kemari_xport *x, void *base, uint64_t len)
{
	struct rdma_xport *t = to_rdma(x);
	struct rdma_dst_info di;
	uint8_t *msg;
	size_t mlen;
	int err;

	err = rdma__open_rw(t);
	err = err
		      ?: rdma__region_init(t, &t->dst, base, len,
					   IBV_ACCESS_LOCAL_WRITE |
						   IBV_ACCESS_REMOTE_WRITE,
					   true, "receive buffers");
	if (err)
		return err;
	mlen = sizeof(di) + (size_t)t->dst.n * sizeof(struct rdma_remote);
	if (mlen > t->max_msg)
		return kemari_err(-E2BIG,
				  "receive buffers need %u RDMA regions, more "
				  "than one message describes",
				  t->dst.n);
	msg = calloc(1, mlen);
	if (!msg)
		return -ENOMEM;
	di = (struct rdma_dst_info){ .kind = RDMA_XPORT_DST,
				     .n = t->dst.n,
				     .len = len,
				     .piece = t->dst.piece };
	memcpy(msg, &di, sizeof(di));
	for (uint32_t i = 0; i < t->dst.n; i++) {
		struct rdma_remote r = { .addr = (uintptr_t)t->dst.mr[i]->addr,
					 .rkey = t->dst.mr[i]->rkey };

		memcpy(msg + sizeof(di) + i * sizeof(r), &r, sizeof(r));
	}
	err = rdma__send_frame(t, KEMARI_MSG_XPORT, 0, msg, (uint32_t)mlen);
	free(msg);
	return err;
}

/* A completion arrived since the wait began (freeing room, bytes). */
/* ---- pushes ------------------------------------------------------------ */

/* A completion arrived since the wait began (freeing room, bytes). */
static bool rdma__completed(struct rdma_xport *t)
{
	return t->sq.done != t->wait_mark;
}

/* The post list of k planned WRITEs. */
static int rdma__post_writes(struct rdma_xport *t, const struct xp_write *plan,
			     uint32_t k)
{
	struct ibv_send_wr wr[RDMA_BATCH], *bad;
	struct ibv_sge sge[RDMA_BATCH][RDMA_MAX_SGE];

	for (uint32_t j = 0; j < k; j++) {
		const struct xp_write *p = &plan[j];

		for (uint32_t s = 0; s < p->nseg; s++)
			sge[j][s] = (struct ibv_sge){
				.addr = (uintptr_t)(t->src.base +
						    p->seg[s].off),
				.length = (uint32_t)p->seg[s].len,
				.lkey = t->src.mr[p->seg[s].mr]->lkey,
			};
		memset(&wr[j], 0, sizeof(wr[j]));
		wr[j].wr_id = p->seq;
		wr[j].next = p->more ? &wr[j + 1] : NULL;
		wr[j].sg_list = sge[j];
		wr[j].num_sge = (int)p->nseg;
		wr[j].opcode = IBV_WR_RDMA_WRITE;
		wr[j].send_flags = p->signaled ? IBV_SEND_SIGNALED : 0;
		wr[j].wr.rdma.remote_addr =
			xp_region__addr(&t->pdst, p->rmr, p->bias + p->off);
		wr[j].wr.rdma.rkey = (uint32_t)xp_region__key(&t->pdst, p->rmr);
	}
	if (ibv_post_send(t->qp, wr, &bad)) {
		rdma__lost(t, "cannot post RDMA writes");
		return xp_fail__dead(&t->fail);
	}
	return 0;
}

int rdma__push(struct kemari_xport *x, const struct kemari_run *runs, size_t n,
	       uint64_t dst_off)
{
	struct rdma_xport *t = to_rdma(x);
	struct xp_write plan[RDMA_BATCH];
	struct xp_limits lim = t->lim;
	struct xp_cursor c;
	size_t i;

	if (t->fail.dead)
		return xp_fail__dead(&t->fail);
	if (!t->src.n)
		return kemari_err(-EINVAL, "internal: push before reg_src");
	if (!t->pdst.known) {
		/* The peer's setup message may still be in the queue. */
		rdma__progress(t);
		if (!t->pdst.known)
			return kemari_err(-EINVAL,
					  "internal: push before the peer "
					  "registered its receive buffers");
	}
	switch (xp_plan__check(runs, n, t->src.len, t->pdst.len, dst_off,
			       &i)) {
	case XP_OUTSIDE_SRC:
		return kemari_err(-ERANGE,
				  "internal: run %llu+%u outside guest RAM",
				  (unsigned long long)runs[i].pfn,
				  runs[i].npages);
	case XP_OUTSIDE_DST:
		return kemari_err(
			-ERANGE,
			"run of %u pages at page %llu is past the secondary's "
			"%llu-page receive buffers: not sent",
			runs[i].npages, (unsigned long long)runs[i].pfn,
			(unsigned long long)(t->pdst.len / KEMARI_PAGE_SIZE));
	case XP_INSIDE:
		break;
	}
	lim.lpiece = t->src.piece;
	lim.rpiece = t->pdst.piece;
	xp_plan__start(&c, runs, n, dst_off);
	while (!xp_plan__finished(&c)) {
		uint32_t k = xp_plan__fill(&t->sq, &c, &lim, plan, RDMA_BATCH);
		int err;

		if (!k) {
			/* Something is outstanding, its last one signalled. */
			t->wait_mark = t->sq.done;
			err = rdma__wait(t, rdma__completed,
					 "no RDMA write completed");
			if (err)
				return err;
			continue;
		}
		err = rdma__post_writes(t, plan, k);
		if (err)
			return err;
		t->push_end = t->sq.posted;
		t->last_activity_ns = kemari_now_ns();
		rdma__progress(t);
		if (t->fail.dead)
			return xp_fail__dead(&t->fail);
	}
	return 0;
}

static bool rdma__flushed(struct rdma_xport *t)
{
	return t->sq.done >= t->push_end;
}

int rdma__flush(struct kemari_xport *x)
{
	struct rdma_xport *t = to_rdma(x);

	if (t->fail.dead)
		return xp_fail__dead(&t->fail);
	/* The pages are placed before any later send (RC order); waiting
	 * here is for the source: the NIC has read it once WRITEs complete. */
	return rdma__wait(t, rdma__flushed, "no RDMA write completed");
}

/* ---- control messages -------------------------------------------------- */

static int rdma__free_sslot(struct rdma_xport *t)
{
	for (unsigned int k = 0; k < RDMA_SEND_SLOTS; k++) {
		unsigned int i = (t->snext + k) % RDMA_SEND_SLOTS;
		struct rdma_send_slot *s = &t->sslot[i];

		if (!s->busy || s->seq < t->sq.done) {
			s->busy = false;
			return (int)i;
		}
	}
	return -1;
}

static bool rdma__can_send(struct rdma_xport *t)
{
	return rdma__credits(t) > 0 && xp_sq__room(&t->sq) > 0 &&
	       rdma__free_sslot(t) >= 0;
}

int rdma__send_frame(struct rdma_xport *t, uint16_t type, uint64_t epoch,
		     const void *payload, uint32_t len)
{
	struct kemari_wire_hdr *h;
	struct ibv_send_wr wr, *bad;
	struct ibv_sge sge;
	bool commit;
	int slot, err;

	if (t->fail.dead)
		return xp_fail__dead(&t->fail);
	if (len > t->max_msg)
		return kemari_err(-EMSGSIZE,
				  "internal: %u-byte control message", len);
	if (!rdma__can_send(t)) {
		err = rdma__wait(t, rdma__can_send,
				 "the peer took no control message");
		if (err)
			return err;
	}
	slot = rdma__free_sslot(t);
	h = (struct kemari_wire_hdr *)rdma__sslot(t, (uint32_t)slot);
	if (len)
		memcpy(h + 1, payload, len);
	kemari_wire__seal(h, type, epoch, h + 1, len);
	sge = (struct ibv_sge){ .addr = (uintptr_t)h,
				.length = (uint32_t)sizeof(*h) + len,
				.lkey = t->ctrl_mr->lkey };
	memset(&wr, 0, sizeof(wr));
	wr.wr_id = t->sq.posted;
	wr.sg_list = &sge;
	wr.num_sge = 1;
	/* Before the peer advertised its commit slots: a plain SEND. */
	commit = type == KEMARI_MSG_COMMIT && t->use_imm && t->peer_rw_known &&
		 sge.length <= t->peer_commit;
	if (commit) {
		/* Into commit slot (message number mod slots), imm = epoch. */
		wr.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
		wr.imm_data = htonl((uint32_t)epoch);
		wr.wr.rdma.remote_addr =
			t->peer_rw +
			(uint64_t)(t->cr.sent % t->peer_slots) * t->peer_commit;
		wr.wr.rdma.rkey = t->peer_rkey;
	} else {
		/* The immediate piggybacks our posted-receive count. */
		wr.opcode = IBV_WR_SEND_WITH_IMM;
		wr.imm_data = htonl(t->cr.lent);
	}
	xp_sq__post(&t->sq, sge.length, true);
	wr.send_flags = IBV_SEND_SIGNALED;
	if (ibv_post_send(t->qp, &wr, &bad)) {
		rdma__lost(t, "cannot post a control message");
		return xp_fail__dead(&t->fail);
	}
	if (!commit)
		xp_credit__told(&t->cr);
	t->sslot[slot] =
		(struct rdma_send_slot){ .seq = wr.wr_id, .busy = true };
	t->snext = (unsigned int)(slot + 1) % RDMA_SEND_SLOTS;
	xp_credit__take(&t->cr);
	t->last_activity_ns = kemari_now_ns();
	return 0;
}

int rdma__send(struct kemari_xport *x, uint16_t type, uint64_t epoch,
	       const void *payload, uint32_t len)
{
	return rdma__send_frame(to_rdma(x), type, epoch, payload, len);
}

int rdma__recv(struct kemari_xport *x, struct kemari_msg *m, int timeout_ms)
{
	struct rdma_xport *t = to_rdma(x);
	uint64_t deadline = rdma__deadline(timeout_ms);
	int32_t slot = xp_ctrlq__release(&t->q);

	/* The message recv returned last is done with: its slot goes back. */
	if (slot >= 0)
		rdma__post_recv(t, (uint32_t)slot);
	for (;;) {
		uint64_t now;

		rdma__progress(t);
		if (xp_ctrlq__peek(&t->q, m))
			return 0;
		if (xp_fail__failed(&t->fail))
			return xp_fail__report(&t->fail);
		now = kemari_now_ns();
		if (now >= deadline)
			return -ETIMEDOUT;
		/* In a pause messages follow each other closely: spin (but
		 * let a peer or guest thread sharing this CPU run). */
		if (now - t->last_activity_ns < RDMA_SPIN_NS) {
			sched_yield();
			continue;
		}
		/* About to sleep: let a peer short of credit go on. */
		rdma__advertise(t, true);
		rdma__block(t, rdma__ms_left(deadline));
	}
}

uint32_t rdma__max_msg(struct kemari_xport *x)
{
	return to_rdma(x)->max_msg;
}
