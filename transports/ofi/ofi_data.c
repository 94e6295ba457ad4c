// SPDX-License-Identifier: MIT
/*
 * The libfabric transport's data path: control messages under credits
 * (with the backlog), page runs as RMA writes planned by transports/common,
 * completions and the waits on them. The connection itself is ofi_cm.c's;
 * the design is described there.
 */
#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_eq.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_rma.h>

#include "ctrl.h"
#include "kemari/kemari.h"
#include "kemari/wire.h"
#include "ofi.h"

#define OFI_BACKLOG_MAX (64u << 20)
#define OFI_HOT_NS 2000000	/* a recv this soon after a send: a pause */
#define OFI_CREDIT_WAIT_MS 2000 /* a send waits this long for a credit */
#define OFI_GONE_MS 500	/* RDM: how long a failed operation waits to
			 * see the peer's socket close */

/* What a transmit wait waits for. */
enum ofi_wait {
	OFI_WAIT_SLOT, /* a free send buffer */
	OFI_WAIT_ROOM, /* room in the transmit queue */
	OFI_WAIT_DONE, /* any completion (room, bytes in flight) */
	OFI_WAIT_ALL,  /* every operation completed */
};

/* Mark the connection broken; later calls repeat the reason. */
int ofi__die(struct ofi_xport *t, int err, const char *fmt, ...)
{
	char why[sizeof(t->fail.why)];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	xp_fail__die(&t->fail, err, "%s", why);
	return xp_fail__dead(&t->fail);
}

int ofi__lost(struct ofi_xport *t, const char *why)
{
	xp_fail__lost(&t->fail, t->addr, why);
	return xp_fail__dead(&t->fail);
}

int ofi__check(struct ofi_xport *t)
{
	return xp_fail__dead(&t->fail);
}

/* --- transmit completions ----------------------------------------------- */

static int ofi__cq_error(struct ofi_xport *t, struct fid_cq *cq, bool tx)
{
	struct fi_cq_err_entry e;
	char buf[128];
	ssize_t r;

	memset(&e, 0, sizeof(e));
	r = fi_cq_readerr(cq, &e, 0);
	if (r < 0)
		return ofi__lost(t, "completion queue error (unreadable)");
	if (!tx && e.err == FI_ETRUNC)
		return ofi__die(t, -EBADMSG,
				"replication stream: a message larger than the "
				"%zu-byte receive buffer from %s",
				t->frame, t->addr);
	if (e.err == FI_ECANCELED)
		return ofi__lost(t,
				 "operations flushed (the peer disconnected)");
	/* RDM: a dead peer's operations fail before its socket closes. */
	if (t->rdm && ofi_rdm__peer_gone(t, OFI_GONE_MS))
		return ofi__lost(t, "closed by the peer");
	snprintf(
		buf, sizeof(buf), "%s %s (%s)",
		tx ? "transmit failed:" : "receive failed:", fi_strerror(e.err),
		fi_cq_strerror(cq, e.prov_errno, e.err_data, NULL, 0));
	return ofi__lost(t, buf);
}

void ofi__tx_complete(struct ofi_xport *t, struct ofi_txctx *c)
{
	/* In order: one completion retires everything posted before it. */
	xp_sq__complete(&t->sq, c->seq);
	if (c->slot >= 0)
		t->txfree[t->ntxfree++] = c->slot;
	t->tx_progress_ns = kemari_now_ns();
}

static int ofi__reap_tx(struct ofi_xport *t)
{
	struct fi_cq_data_entry c[16];

	for (;;) {
		ssize_t r = fi_cq_read(t->txcq, c, KEMARI_ARRAY_SIZE(c));

		if (r == -FI_EAGAIN)
			return 0;
		if (r == -FI_EAVAIL)
			return ofi__cq_error(t, t->txcq, true);
		if (r < 0)
			return ofi__lost(t, ofi__strerror(r));
		for (ssize_t i = 0; i < r; i++)
			ofi__tx_complete(t, c[i].op_context);
	}
}

/* --- receive side ------------------------------------------------------- */

int ofi__post_rx(struct ofi_xport *t, uint32_t i)
{
	struct iovec iov = { t->rx[i].data, t->frame };
	void *desc = t->rxdesc;
	struct fi_msg msg = {
		.msg_iov = &iov,
		.desc = &desc,
		.iov_count = 1,
		.addr = FI_ADDR_UNSPEC, /* RDM: from anyone; MSG: ignored */
		.context = &t->rx[i].ctx,
	};
	ssize_t r;

	do {
		r = fi_recvmsg(t->ep, &msg, 0);
	} while (r == -FI_EAGAIN && !ofi__reap_tx(t));
	if (r)
		return t->fail.dead ? t->fail.dead
				    : ofi__lost(t, ofi__strerror(r));
	if (t->rdm)
		t->rxorder[t->rxtail++ % t->nrx] = i;
	return 0;
}

static int ofi__send_credit(struct ofi_xport *t);

/* A data buffer was consumed: repost it and pay the credit back. */
static int ofi__consumed(struct ofi_xport *t, uint32_t i)
{
	int err = ofi__post_rx(t, i);

	if (err)
		return err;
	xp_credit__lend(&t->cr);
	return xp_credit__due(&t->cr, false) ? ofi__send_credit(t) : 0;
}

static int ofi__absorb(struct ofi_xport *t, uint32_t i,
		       const struct kemari_wire_hdr *h)
{
	struct ofi_xp xp;
	int err;

	if (ofi_ctrl__xp(t->rx[i].data + sizeof(*h), h->len, &xp))
		return ofi__die(
			t, -EBADMSG,
			"replication stream: malformed transport message of %u bytes from %s",
			h->len, t->addr);
	switch (xp.op) {
	case OFI_XP_CREDIT:
		if (xp_credit__grant(&t->cr, xp.credits, OFI_WINDOW_MAX))
			return ofi__die(t, -EBADMSG,
					"replication stream: %s returned %u "
					"credits on top of %u",
					t->addr, xp.credits,
					xp_credit__avail(&t->cr));
		/* Credit messages cost no credit: repost, nothing owed. */
		return ofi__post_rx(t, i);
	case OFI_XP_REGION:
		/* One remote region: offsets are added to its base. */
		if (xp_region__set(&t->pdst, xp.len, 0, 1,
				   &(struct xp_remote){ .addr = xp.base,
							.key = xp.key }))
			return ofi__die(t, -ENOMEM, "out of memory");
		err = ofi__consumed(t, i);
		return err;
	case OFI_XP_LINK:
		/* Costs no credit: one of the spare buffers (nrx). */
		t->linked = true;
		return ofi__post_rx(t, i);
	default:
		return ofi__die(
			t, -EBADMSG,
			"replication stream: unknown transport message %u from %s",
			xp.op, t->addr);
	}
}

/*
 * A frame that arrived in buffer i (len bytes): checked, then absorbed
 * or queued; last (the peer is gone): what does not check out is dropped
 * in silence, transport messages too.
 */
static int ofi__rx_frame(struct ofi_xport *t, uint32_t i, size_t len, bool last)
{
	const uint8_t *data = t->rx[i].data;
	struct kemari_wire_hdr h;
	int err;

	if (last) {
		if (len < sizeof(h))
			return 0;
		memcpy(&h, data, sizeof(h));
		if (h.magic != KEMARI_WIRE_MAGIC ||
		    h.type == KEMARI_MSG_XPORT || h.len > t->max_msg ||
		    sizeof(h) + h.len != len ||
		    kemari_wire__check_crc(&h, data + sizeof(h)))
			return 0;
		xp_ctrlq__push(&t->q, &h, data + sizeof(h), i);
		return 0;
	}
	err = kemari_wire__check_frame(data, len, t->max_msg, &h);
	if (err)
		return ofi__die(t, err, "%s", kemari_last_error(err));
	if (h.type == KEMARI_MSG_XPORT)
		return ofi__absorb(t, i, &h);
	xp_ctrlq__push(&t->q, &h, data + sizeof(h), i);
	return 0;
}

/*
 * One receive completion. Buffers fill in the order they were posted, but
 * an RDM provider may complete them out of order (rxm: a large message
 * read from the sender completes after small ones behind it): RDM takes
 * frames in posting order (rxorder), holding completions that come early.
 */
static int ofi__rx_done(struct ofi_xport *t, const struct fi_cq_data_entry *c,
			fi_addr_t src, bool last)
{
	struct ofi_rxbuf *b = c->op_context;
	uint32_t i = (uint32_t)(b - t->rx);

	if (!t->rdm)
		return ofi__rx_frame(t, i, c->len, last);
	/*
	 * Only the peer's messages count: an RDM endpoint takes messages
	 * from anyone who knows its name (rxm: its address and port), and
	 * the peer alone proved the key. A stranger's is dropped (its
	 * buffer reposted, in its turn), with one line the first time.
	 */
	if (src != t->peer) {
		if (!t->strangers++)
			kemari_warn("ofi: dropped a message to the connection "
				    "with %s from another sender (libfabric "
				    "provider %s): something else sends to "
				    "this endpoint",
				    t->addr, t->prov);
		t->rxlen[i] = OFI_RX_STRANGER;
	} else {
		t->rxlen[i] = (uint32_t)c->len + 1;
	}
	while (t->rxhead != t->rxtail &&
	       t->rxlen[t->rxorder[t->rxhead % t->nrx]]) {
		uint32_t j = t->rxorder[t->rxhead++ % t->nrx];
		uint32_t got = t->rxlen[j];
		int err;

		t->rxlen[j] = 0;
		err = got == OFI_RX_STRANGER
			      ? (last ? 0 : ofi__post_rx(t, j))
			      : ofi__rx_frame(t, j, got - 1, last);
		if (err)
			return err;
	}
	return 0;
}

static int ofi__rx_one(struct ofi_xport *t, const struct fi_cq_data_entry *c,
		       fi_addr_t src)
{
	return ofi__rx_done(t, c, src, false);
}

/* Receive completions and their senders (RDM; MSG has one peer). */
static ssize_t ofi__rx_read(struct ofi_xport *t, struct fi_cq_data_entry *c,
			    size_t n, fi_addr_t *src)
{
	if (t->rdm)
		return fi_cq_readfrom(t->rxcq, c, n, src);
	for (size_t k = 0; k < n; k++)
		src[k] = FI_ADDR_UNSPEC;
	return fi_cq_read(t->rxcq, c, n);
}

static int ofi__reap_rx(struct ofi_xport *t)
{
	struct fi_cq_data_entry c[16];
	fi_addr_t src[16];

	for (;;) {
		ssize_t r = ofi__rx_read(t, c, KEMARI_ARRAY_SIZE(c), src);

		if (r == -FI_EAGAIN)
			return 0;
		if (r == -FI_EAVAIL)
			return ofi__cq_error(t, t->rxcq, false);
		if (r < 0)
			return ofi__lost(t, ofi__strerror(r));
		for (ssize_t k = 0; k < r; k++) {
			int err = ofi__rx_one(t, &c[k], src[k]);

			if (err)
				return err;
		}
	}
}

/*
 * Connection-management events of an established connection; RDM has
 * none: its bootstrap socket says whether the peer is there.
 */
static int ofi__check_eq(struct ofi_xport *t)
{
	struct {
		struct fi_eq_cm_entry e;
		uint8_t data[64];
	} ev;
	struct fi_eq_err_entry ee;
	uint32_t type;
	ssize_t r;

	if (t->rdm)
		return ofi_rdm__alive(t);
	r = fi_eq_read(t->eq, &type, &ev, sizeof(ev), 0);

	if (r == -FI_EAGAIN)
		return 0;
	if (r == -FI_EAVAIL) {
		memset(&ee, 0, sizeof(ee));
		fi_eq_readerr(t->eq, &ee, 0);
		return ofi__lost(t, fi_strerror(ee.err));
	}
	if (r < 0)
		return ofi__lost(t, ofi__strerror(r));
	if (type == FI_SHUTDOWN) {
		/* recv still delivers what arrived before (collect_last). */
		t->connected = false;
		return ofi__lost(t, "closed by the peer");
	}
	return 0;
}

/* --- sending ------------------------------------------------------------ */

/* The context of the next operation (seq: the send queue's next). */
static struct ofi_txctx *ofi__txctx(struct ofi_xport *t, uint64_t seq, int slot)
{
	struct ofi_txctx *c = &t->txc[seq % t->sq.depth];

	c->seq = seq;
	c->slot = slot;
	return c;
}

static bool ofi__tx_ready(const struct ofi_xport *t, enum ofi_wait w)
{
	switch (w) {
	case OFI_WAIT_SLOT:
		return t->ntxfree > 0;
	case OFI_WAIT_ROOM:
		return xp_sq__room(&t->sq) > 0;
	case OFI_WAIT_DONE:
		return t->sq.done != t->wait_mark;
	case OFI_WAIT_ALL:
	default:
		return xp_sq__idle(&t->sq);
	}
}

/*
 * Wait for transmit completions until w holds: they are local, so this
 * never waits on the peer's application.
 */
static int ofi__wait_tx(struct ofi_xport *t, enum ofi_wait w)
{
	uint64_t t0 = kemari_now_ns();

	t->tx_progress_ns = t0;
	for (;;) {
		struct fi_cq_data_entry c;
		uint64_t now;
		ssize_t r;
		int err = ofi__reap_tx(t);

		err = err ?: ofi__check_eq(t);
		if (err)
			return err;
		if (ofi__tx_ready(t, w))
			return 0;
		now = kemari_now_ns();
		if (now - t->tx_progress_ns > OFI_STALL_MS * 1000000ULL)
			return ofi__lost(t, "no transmit completion for 10 s");
		if (now - t0 < t->hot_spin_ns)
			continue;
		r = ofi__cq_sread(t, t->txcq, &c, NULL, OFI_SLICE_MS);
		if (r == 1)
			ofi__tx_complete(t, c.op_context);
		else if (r == -FI_EAVAIL)
			return ofi__cq_error(t, t->txcq, true);
		else if (r < 0 && r != -FI_EAGAIN && r != -FI_EINTR)
			return ofi__lost(t, ofi__strerror(r));
	}
}

/* Post a sealed frame from send buffer slot (always completes: frees it). */
static int ofi__post_send(struct ofi_xport *t, int slot, uint32_t len)
{
	struct iovec iov = { t->txbuf + (size_t)slot * t->frame, len };
	void *desc = t->txdesc;
	struct fi_msg msg = {
		.msg_iov = &iov,
		.desc = &desc,
		.iov_count = 1,
		.addr = t->peer,
	};
	uint64_t t0 = kemari_now_ns();
	ssize_t r;
	int err;

	for (;;) {
		if (!xp_sq__room(&t->sq)) {
			err = ofi__wait_tx(t, OFI_WAIT_ROOM);
			if (err)
				return err;
		}
		msg.context = &ofi__txctx(t, t->sq.posted, slot)->ctx;
		r = fi_sendmsg(t->ep, &msg, FI_COMPLETION);
		if (r != -FI_EAGAIN)
			break;
		err = ofi__reap_tx(t);
		err = err ?: ofi__check_eq(t);
		if (err)
			return err;
		if (kemari_now_ns() - t0 > OFI_STALL_MS * 1000000ULL)
			return ofi__lost(t,
					 "the provider took no send for 10 s");
	}
	if (r)
		return ofi__lost(t, ofi__strerror(r));
	xp_sq__post(&t->sq, len, true); /* signalled: frees its slot */
	t->last_tx_ns = kemari_now_ns();
	return 0;
}

static int ofi__slot(struct ofi_xport *t, int *slot)
{
	int err = t->ntxfree ? 0 : ofi__wait_tx(t, OFI_WAIT_SLOT);

	if (!err)
		*slot = t->txfree[--t->ntxfree];
	return err;
}

static int ofi__send_frame(struct ofi_xport *t, uint16_t type, uint64_t epoch,
			   const void *payload, uint32_t len)
{
	struct kemari_wire_hdr h;
	uint8_t *f;
	int slot, err = ofi__slot(t, &slot);

	if (err)
		return err;
	f = t->txbuf + (size_t)slot * t->frame;
	kemari_wire__seal(&h, type, epoch, payload, len);
	memcpy(f, &h, sizeof(h));
	if (len)
		memcpy(f + sizeof(h), payload, len);
	return ofi__post_send(t, slot, (uint32_t)sizeof(h) + len);
}

static int ofi__send_credit(struct ofi_xport *t)
{
	struct ofi_xp xp = { .op = OFI_XP_CREDIT,
			     .credits = xp_credit__owed(&t->cr) };
	int err = ofi__send_frame(t, KEMARI_MSG_XPORT, 0, &xp, sizeof(xp));

	if (!err)
		xp_credit__told(&t->cr);
	return err;
}

/* Send what waited for credits, in order, as far as credits allow. */
static int ofi__drain(struct ofi_xport *t)
{
	while (t->bl_head && xp_credit__avail(&t->cr) > 0) {
		struct ofi_pending *p = t->bl_head;
		int slot, err = ofi__slot(t, &slot);

		if (err)
			return err;
		memcpy(t->txbuf + (size_t)slot * t->frame, p->frame, p->len);
		err = ofi__post_send(t, slot, p->len);
		if (err)
			return err;
		xp_credit__take(&t->cr);
		t->bl_head = p->next;
		if (!t->bl_head)
			t->bl_tail = NULL;
		t->bl_bytes -= p->len;
		free(p);
	}
	return 0;
}

/* Everything that costs nothing to look at: completions, events, backlog. */
int ofi__progress(struct ofi_xport *t)
{
	int err = ofi__reap_tx(t);

	err = err ?: ofi__reap_rx(t);
	err = err ?: ofi__check_eq(t);
	return err ?: ofi__drain(t);
}

static int ofi__backlog(struct ofi_xport *t, uint16_t type, uint64_t epoch,
			const void *payload, uint32_t len)
{
	struct kemari_wire_hdr h;
	struct ofi_pending *p;

	if (t->bl_bytes + sizeof(h) + len > OFI_BACKLOG_MAX)
		return kemari_err(-ENOBUFS,
				  "%s has not read a control message for a "
				  "long time (%zu bytes waiting for credits)",
				  t->addr, t->bl_bytes);
	p = malloc(sizeof(*p) + sizeof(h) + len);
	if (!p)
		return -ENOMEM;
	kemari_wire__seal(&h, type, epoch, payload, len);
	memcpy(p->frame, &h, sizeof(h));
	if (len)
		memcpy(p->frame + sizeof(h), payload, len);
	p->len = (uint32_t)sizeof(h) + len;
	p->next = NULL;
	if (t->bl_tail)
		t->bl_tail->next = p;
	else
		t->bl_head = p;
	t->bl_tail = p;
	t->bl_bytes += p->len;
	return 0;
}

int ofi__reg_src(struct kemari_xport *x, void *base, uint64_t len)
{
	struct ofi_xport *t = to_ofi(x);
	int err = ofi__check(t);

	if (err)
		return err;
	if (t->src)
		return kemari_err(-EBUSY, "internal: reg_src twice");
	/* Without FI_MR_LOCAL the provider reads unregistered memory. */
	if (t->mru.local) {
		err = ofi__reg(t, base, len, FI_WRITE, OFI_KEY_SRC, "guest RAM",
			       &t->srcmr);
		if (err)
			return err;
		t->srcdesc = fi_mr_desc(t->srcmr);
	}
	t->src = base;
	t->src_len = len;
	return 0;
}

static int ofi__queue(struct ofi_xport *t, uint16_t type, uint64_t epoch,
		      const void *payload, uint32_t len)
{
	int err = ofi__progress(t);

	if (err)
		return err;
	/*
	 * Without credit, wait a while for the peer to read (a sender that
	 * makes no further call must still see its messages delivered); a
	 * peer that does not read meanwhile (it may be sending to us just
	 * as hard) gets the message in the backlog, which any later call
	 * drains, so two sides that both stop reading cannot deadlock.
	 */
	if (t->bl_head || !xp_credit__avail(&t->cr)) {
		uint64_t end =
			kemari_now_ns() + OFI_CREDIT_WAIT_MS * 1000000ULL;

		while (!err && (t->bl_head || !xp_credit__avail(&t->cr)) &&
		       kemari_now_ns() < end) {
			sched_yield();
			err = ofi__progress(t);
		}
		if (err)
			return err;
	}
	if (t->bl_head || !xp_credit__avail(&t->cr))
		return ofi__backlog(t, type, epoch, payload, len);
	err = ofi__send_frame(t, type, epoch, payload, len);
	if (!err)
		xp_credit__take(&t->cr);
	return err;
}

int ofi__reg_dst(struct kemari_xport *x, void *base, uint64_t len)
{
	struct ofi_xport *t = to_ofi(x);
	struct ofi_xp xp = { .op = OFI_XP_REGION };
	int err = ofi__check(t);

	if (err)
		return err;
	if (t->dst)
		return kemari_err(-EBUSY, "internal: reg_dst twice");
	err = ofi__reg(t, base, len, FI_REMOTE_WRITE,
		       t->rdm ? ofi_rdm__dst_key(t) : OFI_KEY_DST,
		       "receive buffers", &t->dstmr);
	if (err)
		return err;
	xp.key = fi_mr_key(t->dstmr);
	if (xp.key == FI_KEY_NOTAVAIL) {
		ofi__dereg(&t->dstmr);
		return kemari_err(
			-ENOTSUP,
			"libfabric provider %s wants raw memory keys (FI_MR_RAW), "
			"which Kemari does not handle: use another --provider",
			t->prov);
	}
	xp.base = ofi_mr__base(&t->mru, base);
	xp.len = len;
	t->dst = base;
	t->dst_len = len;
	/* Ahead of any message the engine sends next (WELCOME). */
	return ofi__queue(t, KEMARI_MSG_XPORT, 0, &xp, sizeof(xp));
}

/* One planned write; last: no FI_MORE, and a completion, whatever the plan. */
static ssize_t ofi__post_write(struct ofi_xport *t, const struct xp_write *w,
			       bool last)
{
	struct iovec iov[XP_MAX_SEGS];
	void *desc[XP_MAX_SEGS];
	struct fi_rma_iov rma[XP_MAX_SEGS];
	struct fi_msg_rma msg = {
		.msg_iov = iov,
		.desc = desc,
		.iov_count = w->nseg,
		.rma_iov = rma,
		.rma_iov_count = w->nseg,
		.addr = t->peer,
		.context = &ofi__txctx(t, w->seq, -1)->ctx,
	};
	uint64_t flags = t->write_flags;

	for (unsigned int j = 0; j < w->nseg; j++) {
		iov[j].iov_base = t->src + w->seg[j].off;
		iov[j].iov_len = w->seg[j].len;
		desc[j] = t->srcdesc;
		rma[j].addr =
			xp_region__addr(&t->pdst, 0, w->bias + w->seg[j].off);
		rma[j].len = w->seg[j].len;
		rma[j].key = xp_region__key(&t->pdst, 0);
	}
	/*
	 * FI_MORE on all but the last of a batch: the provider may hold a
	 * write flagged FI_MORE until one without it arrives, so a batch
	 * always ends unflagged before we wait for anything.
	 */
	if (w->more && !last)
		flags |= FI_MORE;
	if (w->signaled || last)
		flags |= FI_COMPLETION;
	return fi_writemsg(t->ep, &msg, flags);
}

/* Post a batch of planned writes, retrying while the provider is full. */
static int ofi__post_writes(struct ofi_xport *t, const struct xp_write *w,
			    uint32_t k)
{
	for (uint32_t j = 0; j < k; j++) {
		uint64_t t0 = kemari_now_ns();
		bool last = false;
		ssize_t r;
		int err;

		for (;;) {
			r = ofi__post_write(t, &w[j], last);
			if (r != -FI_EAGAIN)
				break;
			/* Writes held back by FI_MORE go out with this one. */
			last = true;
			err = ofi__reap_tx(t);
			err = err ?: ofi__check_eq(t);
			if (err)
				return err;
			if (kemari_now_ns() - t0 > OFI_STALL_MS * 1000000ULL)
				return ofi__lost(
					t,
					"the provider took no write for 10 s");
		}
		if (r)
			return ofi__lost(t, ofi__strerror(r));
	}
	return 0;
}

int ofi__push(struct kemari_xport *x, const struct kemari_run *runs, size_t n,
	      uint64_t dst_off)
{
	struct ofi_xport *t = to_ofi(x);
	struct xp_write plan[XP_BATCH];
	struct xp_cursor c;
	size_t bad;
	int err = ofi__check(t);

	if (err)
		return err;
	if (!t->src)
		return kemari_err(-EINVAL, "internal: push before reg_src");
	err = ofi__progress(t);
	if (err)
		return err;
	if (!t->pdst.known)
		return kemari_err(-ENOTCONN,
				  "internal: push to %s before it announced "
				  "its receive region (reg_dst)",
				  t->addr);
	/* Every run is checked against both regions before any is posted. */
	switch (xp_plan__check(runs, n, t->src_len, t->pdst.len, dst_off,
			       &bad)) {
	case XP_INSIDE:
		break;
	case XP_OUTSIDE_SRC:
		return kemari_err(
			-ERANGE,
			"internal: run of %u pages at page %llu is outside the "
			"%llu-page guest RAM; nothing was pushed",
			runs[bad].npages, (unsigned long long)runs[bad].pfn,
			(unsigned long long)(t->src_len / KEMARI_PAGE_SIZE));
	case XP_OUTSIDE_DST:
		return kemari_err(
			-ERANGE,
			"run of %u pages at page %llu is past the end of the "
			"%llu-page receive region %s registered; nothing was "
			"pushed",
			runs[bad].npages, (unsigned long long)runs[bad].pfn,
			(unsigned long long)(t->pdst.len / KEMARI_PAGE_SIZE),
			t->addr);
	}
	xp_plan__start(&c, runs, n, dst_off);
	while (!xp_plan__finished(&c)) {
		uint32_t k = xp_plan__fill(&t->sq, &c, &t->lim, plan, XP_BATCH);

		if (!k) {
			/* The queue or the byte window is full: it drains. */
			t->wait_mark = t->sq.done;
			err = ofi__wait_tx(t, OFI_WAIT_DONE);
		} else {
			err = ofi__post_writes(t, plan, k);
		}
		if (err)
			return err;
	}
	return 0;
}

int ofi__flush(struct kemari_xport *x)
{
	struct ofi_xport *t = to_ofi(x);
	int err = ofi__check(t);

	if (err)
		return err;
	/*
	 * Local completion of every write: the source may change. Sends
	 * posted from now on are placed after these writes at the peer
	 * (FI_ORDER_SAW), or the writes were delivery-complete already.
	 */
	return ofi__wait_tx(t, OFI_WAIT_ALL);
}

int ofi__send(struct kemari_xport *x, uint16_t type, uint64_t epoch,
	      const void *payload, uint32_t len)
{
	struct ofi_xport *t = to_ofi(x);
	int err = ofi__check(t);

	if (err)
		return err;
	if (len > t->max_msg)
		return kemari_err(-EMSGSIZE,
				  "internal: %u-byte control message (the ofi "
				  "transport carries %u)",
				  len, t->max_msg);
	return ofi__queue(t, type, epoch, payload, len);
}

/*
 * The peer is gone: pick up data messages that arrived before the end.
 * RDM learns of the end from its bootstrap socket, which may overtake the
 * last messages inside the provider: those get a short while (once).
 */
static void ofi__collect_last(struct ofi_xport *t)
{
	int waits = t->rdm && !t->collected ? 5 : 0;
	struct fi_cq_data_entry c;
	fi_addr_t src;

	t->collected = true;
	for (;;) {
		ssize_t r = ofi__rx_read(t, &c, 1, &src);

		while (r != 1 && waits > 0) {
			waits--;
			r = ofi__cq_sread(t, t->rxcq, &c, &src, 10);
		}
		if (r != 1)
			break;
		ofi__rx_done(t, &c, src, true);
	}
}

int ofi__recv(struct kemari_xport *x, struct kemari_msg *m, int timeout_ms)
{
	struct ofi_xport *t = to_ofi(x);
	uint64_t now = kemari_now_ns(), deadline, spin;

	deadline = now + (uint64_t)KEMARI_MAX(timeout_ms, 0) * 1000000ULL;
	/* Right after a send we are in an exchange (a pause): spin longer. */
	spin = now +
	       (now - t->last_tx_ns < OFI_HOT_NS ? t->hot_spin_ns : t->spin_ns);
	int32_t held = xp_ctrlq__release(&t->q);

	/* The buffer recv returned last goes back, and with it a credit. */
	if (held >= 0 && !t->fail.dead)
		ofi__consumed(t, (uint32_t)held);
	for (;;) {
		struct fi_cq_data_entry c;
		fi_addr_t src = FI_ADDR_UNSPEC;
		ssize_t r;
		int ms;

		if (!t->fail.dead)
			ofi__progress(t);
		if (t->fail.dead && !xp_ctrlq__len(&t->q))
			ofi__collect_last(t);
		if (xp_ctrlq__peek(&t->q, m))
			return 0;
		if (t->fail.dead)
			return ofi__check(t);
		now = kemari_now_ns();
		if (timeout_ms == 0 || (timeout_ms > 0 && now >= deadline))
			return -ETIMEDOUT;
		if (now < spin)
			continue;
		ms = OFI_SLICE_MS;
		if (timeout_ms > 0)
			ms = (int)KEMARI_MIN((uint64_t)ms,
					     (deadline - now) / 1000000 + 1);
		r = ofi__cq_sread(t, t->rxcq, &c, t->rdm ? &src : NULL, ms);
		if (r == 1)
			ofi__rx_one(t, &c, src);
		else if (r == -FI_EAVAIL)
			ofi__cq_error(t, t->rxcq, false);
		else if (r < 0 && r != -FI_EAGAIN && r != -FI_EINTR)
			ofi__lost(t, ofi__strerror(r));
	}
}

int ofi__link(struct ofi_xport *t, int timeout_ms)
{
	struct ofi_xp xp = { .op = OFI_XP_LINK };
	uint64_t deadline = kemari_now_ns() + (uint64_t)timeout_ms * 1000000ULL;
	int err = ofi__send_frame(t, KEMARI_MSG_XPORT, 0, &xp, sizeof(xp));

	while (!err && !t->linked) {
		struct fi_cq_data_entry c;
		fi_addr_t src;
		ssize_t r;

		if (kemari_now_ns() >= deadline)
			return kemari_err(-ETIMEDOUT,
					  "%s did not answer over libfabric "
					  "provider %s within %d ms",
					  t->addr, t->prov, timeout_ms);
		r = ofi__cq_sread(t, t->rxcq, &c, &src, 10);
		if (r == 1)
			err = ofi__rx_one(t, &c, src);
		else if (r == -FI_EAVAIL)
			err = ofi__cq_error(t, t->rxcq, false);
		err = err ?: ofi__progress(t);
	}
	return err;
}

uint32_t ofi__max_msg(struct kemari_xport *x)
{
	return to_ofi(x)->max_msg;
}
