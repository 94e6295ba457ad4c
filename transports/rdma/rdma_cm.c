// SPDX-License-Identifier: MIT
/*
 * RDMA transport (rdma-core): librdmacm sets up one reliable-connected QP,
 * libibverbs moves the data.
 *
 * Pages. The secondary registers its RAM-sized receive buffers once
 * (REMOTE_WRITE) and tells the primary where they are (a KEMARI_MSG_XPORT
 * message that the primary's transport absorbs); the primary registers guest
 * RAM once. A push turns page runs into RDMA WRITEs to the same offsets,
 * posted as chained lists, one ibv_post_send per list. Every run is checked
 * against the local region and the peer's advertised one before anything is
 * posted. The arithmetic (splitting at the message size and region bounds,
 * SGE limits, selective signalling, the in-flight limit) is
 * transports/common's planner, the checks of what the peer sends while
 * connecting and setting up in ctrl.c.
 *
 * Signalling. A WRITE asks for a completion every RDMA_SIGNAL_EVERY
 * requests and at the end of each post list (at most RDMA_BATCH long and
 * never more than the send queue's free room): whatever is outstanding thus
 * ends in a signalled request, so waiting for room always ends, and one
 * completion retires everything before it. Control sends are single-request
 * lists, so signalled (their staging slot comes back with the completion).
 * Bytes in flight are bounded, so a long push paces itself like a socket
 * write and the engine's heartbeats keep flowing.
 *
 * Control messages are framed with struct kemari_wire_hdr (CRC-checked) and
 * travel as SEND_WITH_IMM into receive slots posted in advance. Credits: the
 * sender never sends more than the peer has posted. The immediate of every
 * SEND piggybacks our own count of posted receives; when many reposts are
 * unannounced (or before sleeping) that count is also RDMA-written into a
 * credit word of the peer, which consumes no receive and so cannot deadlock.
 * Small messages are copied out of their slot on arrival (the slot goes back
 * at once), so a primary busy pushing still takes the secondary's heartbeats.
 *
 * Commit. A COMMIT is one WRITE_WITH_IMM: its frame lands in a commit slot
 * the receiver advertised (slot = message number modulo the receive
 * slots, so credits also guard the slot), the immediate carries
 * the epoch's low 32 bits and consumes a posted receive; the receiver checks
 * frame and immediate and hands the engine an ordinary KEMARI_MSG_COMMIT.
 * Devices without immediate data (iWARP) send it as a plain SEND; so does
 * the test knob KEMARI_RDMA_COMMIT=send (include/kemari/testcfg.h).
 *
 * Ordering and flush. RC places all WRITE data before a later SEND or
 * WRITE_WITH_IMM completes at the responder, so a commit can never overtake
 * its pages. Flush still waits until every WRITE completed locally: that is
 * when the NIC has read the source pages, which the contract promises may
 * change once flush returns. Today's engine would be safe without it (it
 * resumes the guest only after the ack, which implies the pages were read),
 * but an engine that resumes earlier would not; the wait overlaps the
 * RUNS/state sends posted before it, so it costs little.
 *
 * Nothing remote-writable before the engine trusts the peer. The CM
 * handshake carries no address or rkey: the commit slots and the credit
 * word are registered for remote writes, and advertised in an XPORT
 * message, only by reg_src or reg_dst, which the engine calls once the
 * peer has proven the key (core/auth.c). Until then control messages are
 * plain SENDs and credits return only in their immediates, enough for
 * the handshake's few messages each way.
 *
 * Failure. A completion error or a CM DISCONNECTED/DEVICE_REMOVAL event is
 * the peer's failure: -ECONNRESET, after the messages that arrived before it
 * were delivered. A malformed frame is -EBADMSG. Both are sticky
 * (common/fail.h).
 *
 * This file is the connection: setup, teardown, memory registration and
 * the region adverts; rdma_data.c is the data path.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "kemari/testcfg.h"
#include "ctrl.h"
#include "kemari/kemari.h"
#include "kemari/wire.h"
#include "rdma.h"

#define RDMA_MSG_MAX KEMARI_MSG_MAX
#define RDMA_SQ_DEPTH 256	/* send queue, if the device allows */
#define RDMA_SIGNAL_EVERY 16	/* selective signalling period */
#define RDMA_WR_MAX (1u << 20)	/* bytes per WRITE */
#define RDMA_ESTABLISH_MS 10000 /* accept: CM handshake completion */
#define RDMA_RESOLVE_MS 2000

extern const struct kemari_xport_ops kemari_xport_rdma;

static _Atomic uint64_t rdma_pinned; /* bytes this process registered */

static int rdma__nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -errno;
	return 0;
}

/* ---- errors ------------------------------------------------------------ */

static int rdma__no_device(void)
{
	return kemari_err(
		-ENODEV,
		"no RDMA device: load rdma_rxe or use --transport=tcp");
}

static int rdma__have_device(void)
{
	struct ibv_device **l;
	int n = 0;

	l = ibv_get_device_list(&n);
	if (l)
		ibv_free_device_list(l);
	return l && n > 0 ? 0 : rdma__no_device();
}

/* ---- memory registration ---------------------------------------------- */

/*
 * The kernel refuses to pin past RLIMIT_MEMLOCK (without CAP_IPC_LOCK):
 * say so, with what is pinned so far; the connection's control buffers are
 * registered before guest RAM or the receive buffers, which come on top.
 */
static int rdma__reg_err(int err, uint64_t len, const char *what,
			 bool more_to_come)
{
	struct rlimit rl;

	if ((err == -ENOMEM || err == -EAGAIN || err == -EPERM) &&
	    !getrlimit(RLIMIT_MEMLOCK, &rl) && rl.rlim_cur != RLIM_INFINITY) {
		uint64_t need = atomic_load(&rdma_pinned) + len;

		return kemari_err(
			-ENOMEM,
			"cannot register %llu MiB of %s for RDMA: the "
			"locked-memory limit RLIMIT_MEMLOCK is %llu KiB and %llu "
			"MiB are needed%s; raise it (ulimit -l unlimited, or "
			"LimitMEMLOCK=infinity in a systemd unit)",
			(unsigned long long)(len >> 20), what,
			(unsigned long long)(rl.rlim_cur >> 10),
			(unsigned long long)((need + (1 << 20) - 1) >> 20),
			more_to_come ? ", plus --mem for guest RAM" : "");
	}
	return kemari_err(err, "cannot register %llu MiB of %s for RDMA: %s",
			  (unsigned long long)(len >> 20), what,
			  strerror(-err));
}

/* setup: connection buffers, registered before guest RAM/receive buffers */
struct ibv_mr *rdma__reg_mr(struct rdma_xport *t, void *p, uint64_t len,
			    int access, const char *what, bool setup, int *err)
{
	struct ibv_mr *mr = ibv_reg_mr(t->pd, p, len, access);

	if (!mr) {
		*err = rdma__reg_err(errno ? -errno : -ENOMEM, len, what,
				     setup);
		return NULL;
	}
	atomic_fetch_add(&rdma_pinned, len);
	return mr;
}

static void rdma__dereg_mr(struct ibv_mr *mr)
{
	if (!mr)
		return;
	atomic_fetch_sub(&rdma_pinned, mr->length);
	ibv_dereg_mr(mr);
}

static void rdma__region_fini(struct rdma_region *r)
{
	for (uint32_t i = 0; r->mr && i < r->n; i++)
		rdma__dereg_mr(r->mr[i]);
	free(r->mr);
	memset(r, 0, sizeof(*r));
}

/*
 * Register [base, base + len) in regions of at most max_mr_size, or of the
 * test knob KEMARI_RDMA_MR_MAX's size (include/kemari/testcfg.h).
 */
int rdma__region_init(struct rdma_xport *t, struct rdma_region *r, void *base,
		      uint64_t len, int access, bool dst, const char *what)
{
	struct ibv_device_attr da;
	const struct kemari_testcfg *tc = kemari_testcfg__get();
	uint64_t piece = len,
		 knob = dst ? tc->rdma_mr_max_dst : tc->rdma_mr_max_src;
	int err = 0;

	rdma__region_fini(r);
	if (!len || len % KEMARI_PAGE_SIZE)
		return kemari_err(-EINVAL, "internal: %llu-byte %s region",
				  (unsigned long long)len, what);
	if (!ibv_query_device(t->id->verbs, &da) && da.max_mr_size)
		piece = KEMARI_MIN(piece, da.max_mr_size);
	if (knob)
		piece = KEMARI_MIN(piece, knob);
	piece = KEMARI_MAX(piece / KEMARI_PAGE_SIZE * KEMARI_PAGE_SIZE,
			   KEMARI_PAGE_SIZE);
	r->n = (uint32_t)((len + piece - 1) / piece);
	r->mr = calloc(r->n, sizeof(*r->mr));
	if (!r->mr)
		return -ENOMEM;
	r->base = base;
	r->len = len;
	r->piece = piece;
	for (uint32_t i = 0; i < r->n; i++) {
		uint64_t off = (uint64_t)i * piece;

		r->mr[i] = rdma__reg_mr(t, r->base + off,
					KEMARI_MIN(piece, len - off), access,
					what, false, &err);
		if (!r->mr[i]) {
			rdma__region_fini(r);
			return err;
		}
	}
	return 0;
}

/* ---- connection setup -------------------------------------------------- */

static int rdma__new(struct rdma_xport **out, const char *addr)
{
	struct rdma_xport *t = calloc(1, sizeof(*t));

	if (!t)
		return -ENOMEM;
	t->x.ops = &kemari_xport_rdma;
	/* The peer's receives come with its handshake; ours go back in
	 * batches of half the slots. */
	xp_credit__init(&t->cr, 0, RDMA_SLOTS / 2);
	snprintf(t->addr, sizeof(t->addr), "%s", addr);
	*out = t;
	return 0;
}

/* Tear down what rdma__conn_init built (each part may be missing). */
static void rdma__conn_fini(struct rdma_xport *t)
{
	if (t->qp)
		rdma_destroy_qp(t->id);
	t->qp = NULL;
	if (t->cq) {
		if (t->cq_events)
			ibv_ack_cq_events(t->cq, t->cq_events);
		ibv_destroy_cq(t->cq);
	}
	t->cq = NULL;
	t->cq_events = 0;
	if (t->cch)
		ibv_destroy_comp_channel(t->cch);
	t->cch = NULL;
	rdma__region_fini(&t->src);
	rdma__region_fini(&t->dst);
	xp_region__fini(&t->pdst);
	rdma__dereg_mr(t->rw_mr);
	rdma__dereg_mr(t->ctrl_mr);
	t->rw_mr = t->ctrl_mr = NULL;
	if (t->rw)
		munmap(t->rw, t->rw_len);
	if (t->ctrl)
		munmap(t->ctrl, t->ctrl_len);
	t->rw = t->ctrl = NULL;
	if (t->pd)
		ibv_dealloc_pd(t->pd);
	t->pd = NULL;
	xp_sq__fini(&t->sq);
	xp_ctrlq__fini(&t->q);
}

static void rdma__free(struct rdma_xport *t)
{
	rdma__conn_fini(t);
	if (t->id)
		rdma_destroy_id(t->id);
	if (t->ech)
		rdma_destroy_event_channel(t->ech);
	free(t);
}

/*
 * Protection domain, completion channel and queue, the QP, the control
 * buffers, and every receive posted: all before the CM handshake, so the
 * peer may send the moment it is connected.
 */
static int rdma__conn_init(struct rdma_xport *t)
{
	struct ibv_context *ctx = t->id->verbs;
	struct ibv_qp_init_attr qa;
	struct ibv_device_attr da;
	struct ibv_port_attr pa;
	uint32_t depth;
	int err;

	if (ibv_query_device(ctx, &da) ||
	    ibv_query_port(ctx, t->id->port_num, &pa))
		return kemari_err(-EIO, "cannot query the RDMA device %s",
				  ibv_get_device_name(ctx->device));
	t->pd = ibv_alloc_pd(ctx);
	if (!t->pd)
		return kemari_err(-ENOMEM, "ibv_alloc_pd failed");
	t->cch = ibv_create_comp_channel(ctx);
	if (!t->cch || rdma__nonblock(t->cch->fd)) {
		err = kemari_err(-EIO, "cannot create a completion channel");
		goto err_fini;
	}
	depth = KEMARI_MIN((uint32_t)RDMA_SQ_DEPTH, (uint32_t)da.max_qp_wr);
	t->cq = ibv_create_cq(
		ctx, KEMARI_MIN((int)(depth + RDMA_SLOTS + 8), da.max_cqe), t,
		t->cch, 0);
	if (!t->cq) {
		err = kemari_err(-errno ?: -ENOMEM,
				 "cannot create a completion queue: %s",
				 strerror(errno));
		goto err_fini;
	}
	memset(&qa, 0, sizeof(qa));
	qa.send_cq = qa.recv_cq = t->cq;
	qa.qp_type = IBV_QPT_RC;
	qa.cap.max_send_wr = depth;
	qa.cap.max_recv_wr = RDMA_SLOTS;
	qa.cap.max_send_sge = (uint32_t)KEMARI_MIN(RDMA_MAX_SGE, da.max_sge);
	qa.cap.max_recv_sge = 1;
	if (rdma_create_qp(t->id, t->pd, &qa)) {
		err = kemari_err(-errno ?: -EIO,
				 "cannot create a queue pair: %s",
				 strerror(errno));
		goto err_fini;
	}
	t->qp = t->id->qp;
	err = xp_sq__init(&t->sq, KEMARI_MIN(depth, qa.cap.max_send_wr),
			  RDMA_SIGNAL_EVERY, true);
	if (err)
		goto err_fini;
	t->lim = (struct xp_limits){
		.max_bytes = KEMARI_MIN((uint64_t)pa.max_msg_sz, RDMA_WR_MAX),
		.max_segs = KEMARI_MAX(1u, KEMARI_MIN(qa.cap.max_send_sge,
						      (uint32_t)RDMA_MAX_SGE)),
		.one_remote = true,
		.inflight_max = XP_INFLIGHT_MAX,
	};
	if (!t->lim.max_bytes)
		t->lim.max_bytes = KEMARI_PAGE_SIZE;

	/* Receive slots, send slots, the credit source word. */
	t->max_msg = RDMA_MSG_MAX;
	t->stride = (uint32_t)KEMARI_ALIGN_UP(
		sizeof(struct kemari_wire_hdr) + t->max_msg, 64);
	t->ctrl_len = KEMARI_ALIGN_UP(
		(size_t)(RDMA_SLOTS + RDMA_SEND_SLOTS) * t->stride + 64,
		KEMARI_PAGE_SIZE);
	t->ctrl = mmap(NULL, t->ctrl_len, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	t->rw_len = KEMARI_ALIGN_UP((size_t)RDMA_SLOTS * RDMA_COMMIT_SLOT + 64,
				    KEMARI_PAGE_SIZE);
	t->rw = mmap(NULL, t->rw_len, PROT_READ | PROT_WRITE,
		     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (t->ctrl == MAP_FAILED || t->rw == MAP_FAILED) {
		if (t->ctrl == MAP_FAILED)
			t->ctrl = NULL;
		if (t->rw == MAP_FAILED)
			t->rw = NULL;
		err = kemari_err(-ENOMEM, "cannot map RDMA control buffers");
		goto err_fini;
	}
	t->ctrl_mr =
		rdma__reg_mr(t, t->ctrl, t->ctrl_len, IBV_ACCESS_LOCAL_WRITE,
			     "control buffers", true, &err);
	if (!t->ctrl_mr)
		goto err_fini;
	err = xp_ctrlq__init(&t->q, RDMA_SLOTS, RDMA_BACKLOG, RDMA_COPY_MAX);
	if (err)
		goto err_fini;
	for (uint32_t i = 0; i < RDMA_SLOTS; i++) {
		err = rdma__post_recv(t, i);
		if (err)
			goto err_fini;
	}
	xp_credit__told(&t->cr);
	t->use_imm = ctx->device->transport_type == IBV_TRANSPORT_IB &&
		     !kemari_testcfg__get()->rdma_commit_send;
	return 0;

err_fini:
	rdma__conn_fini(t);
	return err;
}

static void rdma__hs_fill(struct rdma_xport *t, struct rdma_hs *hs,
			  uint32_t refuse)
{
	memset(hs, 0, sizeof(*hs));
	hs->magic = RDMA_HS_MAGIC;
	hs->version = RDMA_HS_VERSION;
	hs->refuse = refuse;
	if (refuse)
		return;
	hs->slots = RDMA_SLOTS;
	hs->max_msg = t->max_msg;
	hs->commit_size = RDMA_COMMIT_SLOT;
}

/* Take the peer's half of the handshake; false if it is not one of ours. */
static bool rdma__hs_take(struct rdma_xport *t, const void *pd, uint8_t len)
{
	struct rdma_hs hs;

	if (rdma_ctrl__hs(pd, len, &hs))
		return false;
	t->peer_slots = hs.slots;
	xp_credit__granted(&t->cr, hs.slots);
	t->max_msg = KEMARI_MIN(t->max_msg, hs.max_msg);
	t->peer_commit = hs.commit_size;
	return true;
}

static void rdma__conn_param(struct rdma_conn_param *p,
			     const struct rdma_hs *hs)
{
	memset(p, 0, sizeof(*p));
	p->private_data = hs;
	p->private_data_len = sizeof(*hs);
	p->retry_count = 7;
	/* Credits keep every send matched by a posted receive: a receiver
	 * not ready is a bug, and should surface rather than stall. */
	p->rnr_retry_count = 3;
}

/* Next CM event on ch before deadline; the caller acks it. */
static int rdma__cm_wait(struct rdma_event_channel *ch, uint64_t deadline,
			 struct rdma_cm_event **ev)
{
	for (;;) {
		struct pollfd p = { .fd = ch->fd, .events = POLLIN };
		int ms;

		if (!rdma_get_cm_event(ch, ev))
			return 0;
		if (errno != EAGAIN && errno != EINTR)
			return -errno;
		ms = rdma__ms_left(deadline);
		if (!ms)
			return -ETIMEDOUT;
		if (poll(&p, 1, ms) < 0 && errno != EINTR)
			return -errno;
	}
}

static int rdma__channel(struct rdma_event_channel **out)
{
	struct rdma_event_channel *ch = rdma_create_event_channel();

	if (!ch)
		return errno == ENODEV || errno == ENOENT || errno == ENOSYS
			       ? rdma__no_device()
			       : kemari_err(
					 -errno,
					 "cannot open the RDMA connection manager: %s",
					 strerror(errno));
	if (rdma__nonblock(ch->fd)) {
		rdma_destroy_event_channel(ch);
		return kemari_err(-EIO, "cannot set up an RDMA event channel");
	}
	*out = ch;
	return 0;
}

static int rdma__listen(struct kemari_xport **out, const char *addr,
			const struct kemari_xport_opts *opts)
{
	struct sockaddr_in sa;
	struct rdma_xport *t;
	int err;

	(void)opts;
	err = kemari_parse_sockaddr(addr, &sa);
	err = err ?: rdma__have_device();
	err = err ?: rdma__new(&t, addr);
	if (err)
		return err;
	t->listener = true;
	err = rdma__channel(&t->ech);
	if (err)
		goto err_free;
	if (rdma_create_id(t->ech, &t->id, t, RDMA_PS_TCP)) {
		err = kemari_err(-errno, "rdma_create_id: %s", strerror(errno));
		goto err_free;
	}
	if (rdma_bind_addr(t->id, (struct sockaddr *)&sa)) {
		err = -errno;
		if (err == -EADDRINUSE)
			err = kemari_err(err,
					 "cannot listen on %s: address already "
					 "in use (another secondary?): stop it "
					 "or choose another --listen port",
					 addr);
		else if (err == -ENODEV || err == -EADDRNOTAVAIL)
			err = kemari_err(err,
					 "cannot listen on %s: no RDMA device "
					 "serves this address (soft-RoCE: rdma "
					 "link add rxe0 type rxe netdev IFACE)",
					 addr);
		else
			err = kemari_err(err, "cannot listen on %s: %s", addr,
					 strerror(-err));
		goto err_free;
	}
	if (rdma_listen(t->id, 4)) {
		err = kemari_err(-errno, "cannot listen on %s: %s", addr,
				 strerror(errno));
		goto err_free;
	}
	*out = &t->x;
	return 0;

err_free:
	rdma__free(t);
	return err;
}

/* Wait for ESTABLISHED on a connection's own channel. */
static int rdma__established(struct rdma_xport *t, uint64_t deadline,
			     struct rdma_hs *peer, bool *have_peer)
{
	for (;;) {
		struct rdma_cm_event *ev;
		enum rdma_cm_event_type type;
		int err = rdma__cm_wait(t->ech, deadline, &ev);

		if (err)
			return err;
		type = ev->event;
		if (type == RDMA_CM_EVENT_ESTABLISHED && peer) {
			*have_peer =
				rdma__hs_take(t, ev->param.conn.private_data,
					      ev->param.conn.private_data_len);
		} else if (type == RDMA_CM_EVENT_REJECTED && peer &&
			   ev->param.conn.private_data &&
			   ev->param.conn.private_data_len >= sizeof(*peer)) {
			memcpy(peer, ev->param.conn.private_data,
			       sizeof(*peer));
		}
		rdma_ack_cm_event(ev);
		switch (type) {
		case RDMA_CM_EVENT_ESTABLISHED:
			return 0;
		case RDMA_CM_EVENT_REJECTED:
			return -ECONNREFUSED;
		case RDMA_CM_EVENT_UNREACHABLE:
			return -EHOSTUNREACH;
		case RDMA_CM_EVENT_CONNECT_ERROR:
		case RDMA_CM_EVENT_DISCONNECTED:
		case RDMA_CM_EVENT_DEVICE_REMOVAL:
			return -ECONNABORTED;
		default:
			break;
		}
	}
}

/* Set up and accept one connection request; on failure it is rejected. */
static int rdma__accept_one(struct rdma_cm_id *id, const struct rdma_hs *peer,
			    uint8_t peer_len, struct rdma_xport **out)
{
	struct sockaddr_in *pa = (struct sockaddr_in *)rdma_get_peer_addr(id);
	uint32_t refuse = RDMA_REFUSE_RESOURCES;
	struct rdma_conn_param param;
	struct rdma_xport *t;
	struct rdma_hs mine;
	char name[64];
	int err;

	snprintf(name, sizeof(name), "%s:%u", inet_ntoa(pa->sin_addr),
		 ntohs(pa->sin_port));
	err = rdma__new(&t, name);
	if (err)
		goto err_reject;
	t->id = id; /* from here rdma__free destroys it */
	err = rdma__channel(&t->ech);
	if (err)
		goto err_refuse;
	/* Its own channel: the listener's keeps other requests. */
	if (rdma_migrate_id(id, t->ech)) {
		err = kemari_err(-errno, "rdma_migrate_id: %s",
				 strerror(errno));
		goto err_refuse;
	}
	if (!rdma__hs_take(t, peer, peer_len)) {
		refuse = RDMA_REFUSE_HANDSHAKE;
		err = kemari_err(-EPROTO,
				 "refused an RDMA connection from %s: not a "
				 "Kemari primary of this version",
				 name);
		goto err_refuse;
	}
	err = rdma__conn_init(t);
	if (err)
		goto err_refuse;
	rdma__hs_fill(t, &mine, 0);
	rdma__conn_param(&param, &mine);
	if (rdma_accept(id, &param)) {
		err = kemari_err(-errno, "rdma_accept: %s", strerror(errno));
		goto err_refuse;
	}
	err = rdma__established(t, rdma__deadline(RDMA_ESTABLISH_MS), NULL,
				NULL);
	if (err) {
		err = kemari_err(
			err, "the RDMA connection from %s did not complete: %s",
			name, strerror(-err));
		goto err_free;
	}
	t->connected = true;
	t->last_activity_ns = kemari_now_ns();
	*out = t;
	return 0;

err_refuse:
	rdma__hs_fill(t, &mine, refuse);
	rdma_reject(id, &mine, sizeof(mine));
err_free:
	rdma__free(t);
	return err;
err_reject:
	rdma__hs_fill(NULL, &mine, refuse);
	rdma_reject(id, &mine, sizeof(mine));
	rdma_destroy_id(id);
	return err;
}

static int rdma__accept(struct kemari_xport *lx, struct kemari_xport **conn,
			int timeout_ms)
{
	struct rdma_xport *l = to_rdma(lx), *t = NULL;
	uint64_t deadline = rdma__deadline(timeout_ms);

	for (;;) {
		struct rdma_cm_event *ev;
		struct rdma_cm_id *id;
		struct rdma_hs peer;
		uint8_t plen;
		int err = rdma__cm_wait(l->ech, deadline, &ev);

		if (err)
			return err;
		if (ev->event != RDMA_CM_EVENT_CONNECT_REQUEST) {
			rdma_ack_cm_event(ev);
			continue;
		}
		id = ev->id;
		memset(&peer, 0, sizeof(peer));
		plen = ev->param.conn.private_data_len;
		if (ev->param.conn.private_data)
			memcpy(&peer, ev->param.conn.private_data,
			       KEMARI_MIN((size_t)plen, sizeof(peer)));
		rdma_ack_cm_event(ev);
		err = rdma__accept_one(id, &peer, plen, &t);
		if (!err) {
			*conn = &t->x;
			return 0;
		}
		/* One bad attempt does not end the listener: keep waiting. */
		kemari_warn("%s", kemari_last_error(err));
		kemari_err_clear();
	}
}

/*
 * One connection attempt. 0, or -EAGAIN with why filled when it is worth
 * retrying (nobody listening yet, no answer), or a recorded error.
 */
static int rdma__try_connect(const char *addr, struct sockaddr_in *sa,
			     uint64_t deadline, struct rdma_xport **out,
			     char *why, size_t whylen)
{
	uint64_t step = KEMARI_MAX(deadline, rdma__deadline(1000));
	struct rdma_cm_event *ev;
	struct rdma_conn_param param;
	struct rdma_hs mine, peer;
	struct rdma_xport *t;
	bool have_peer = false;
	int err, status;
	enum rdma_cm_event_type type;

	err = rdma__new(&t, addr);
	if (err)
		return err;
	err = rdma__channel(&t->ech);
	if (err)
		goto err_free;
	if (rdma_create_id(t->ech, &t->id, t, RDMA_PS_TCP)) {
		err = kemari_err(-errno, "rdma_create_id: %s", strerror(errno));
		goto err_free;
	}
	/* Address, then route: each answered by an event. */
	for (int stage = 0; stage < 2; stage++) {
		if (stage == 0 ? rdma_resolve_addr(t->id, NULL,
						   (struct sockaddr *)sa,
						   RDMA_RESOLVE_MS)
			       : rdma_resolve_route(t->id, RDMA_RESOLVE_MS)) {
			snprintf(why, whylen, "%s resolution failed: %s",
				 stage ? "route" : "address", strerror(errno));
			err = -EAGAIN;
			goto err_free;
		}
		err = rdma__cm_wait(t->ech, step, &ev);
		if (err) {
			snprintf(why, whylen, "%s resolution: %s",
				 stage ? "route" : "address", strerror(-err));
			err = -EAGAIN;
			goto err_free;
		}
		type = ev->event;
		status = ev->status;
		rdma_ack_cm_event(ev);
		if (type != (stage ? RDMA_CM_EVENT_ROUTE_RESOLVED
				   : RDMA_CM_EVENT_ADDR_RESOLVED)) {
			snprintf(why, whylen, "%s resolution failed (%s%s%s)",
				 stage ? "route" : "address",
				 rdma_event_str(type), status ? ": " : "",
				 status ? strerror(abs(status)) : "");
			err = -EAGAIN;
			goto err_free;
		}
	}
	err = rdma__conn_init(t);
	if (err)
		goto err_free;
	rdma__hs_fill(t, &mine, 0);
	rdma__conn_param(&param, &mine);
	if (rdma_connect(t->id, &param)) {
		snprintf(why, whylen, "rdma_connect: %s", strerror(errno));
		err = -EAGAIN;
		goto err_free;
	}
	memset(&peer, 0, sizeof(peer));
	err = rdma__established(t, step, &peer, &have_peer);
	if (err == -ECONNREFUSED && peer.magic == RDMA_HS_MAGIC &&
	    peer.refuse) {
		err = kemari_err(
			-ECONNREFUSED,
			"the secondary at %s refused the RDMA connection: %s",
			addr,
			peer.refuse == RDMA_REFUSE_HANDSHAKE
				? "another Kemari version (run the same kemari-run on "
				  "both sides)"
				: "it could not set the connection up (see its log)");
		goto err_free;
	}
	if (err) {
		snprintf(
			why, whylen, "%s",
			err == -ECONNREFUSED
				? "connection refused (nobody listening there yet)"
			: err == -ETIMEDOUT
				? "no answer to the connection request"
				: strerror(-err));
		err = -EAGAIN;
		goto err_free;
	}
	if (!have_peer) {
		err = kemari_err(
			-EPROTO,
			"the peer at %s is not a Kemari secondary (RDMA handshake)",
			addr);
		goto err_free;
	}
	t->connected = true;
	t->last_activity_ns = kemari_now_ns();
	*out = t;
	return 0;

err_free:
	rdma__free(t);
	return err;
}

static int rdma__connect(struct kemari_xport **out, const char *addr,
			 const struct kemari_xport_opts *opts)
{
	uint64_t deadline = rdma__deadline((int)KEMARI_MIN(
		opts->connect_timeout_ms, (unsigned int)INT32_MAX));
	struct rdma_xport *t = NULL;
	struct sockaddr_in sa;
	char why[160] = "";
	int err;

	err = kemari_parse_sockaddr(addr, &sa);
	err = err ?: rdma__have_device();
	if (err)
		return err;
	/* The secondary may still be starting: retry until the deadline. */
	for (;;) {
		err = rdma__try_connect(addr, &sa, deadline, &t, why,
					sizeof(why));
		if (!err)
			break;
		if (err != -EAGAIN)
			return err;
		if (kemari_now_ns() >= deadline)
			return kemari_err(
				-ECONNREFUSED,
				"cannot reach the secondary at %s: %s (start it "
				"first, or check --peer)",
				addr, why);
		usleep(50000);
	}
	*out = &t->x;
	return 0;
}

static void rdma__close(struct kemari_xport *x)
{
	struct rdma_xport *t = to_rdma(x);
	struct rdma_cm_event *ev;

	if (t->listener) {
		/* Requests nobody accepted: refuse them, they own an id. */
		while (t->ech && !rdma_get_cm_event(t->ech, &ev)) {
			struct rdma_cm_id *id = ev->id;
			bool req = ev->event == RDMA_CM_EVENT_CONNECT_REQUEST;

			rdma_ack_cm_event(ev);
			if (req) {
				rdma_reject(id, NULL, 0);
				rdma_destroy_id(id);
			}
		}
	} else if (t->connected && !t->fail.dead) {
		rdma_disconnect(t->id);
	}
	rdma__free(t);
}

const struct kemari_xport_ops kemari_xport_rdma = {
	.name = "rdma",
	.caps = KEMARI_XPORT_CAP_ONESIDED,
	.listen = rdma__listen,
	.accept = rdma__accept,
	.connect = rdma__connect,
	.reg_src = rdma__reg_src,
	.reg_dst = rdma__reg_dst,
	.push = rdma__push,
	.flush = rdma__flush,
	.send = rdma__send,
	.recv = rdma__recv,
	.max_msg = rdma__max_msg,
	.close = rdma__close,
};
