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
 * SGE limits, selective signalling) is in batch.c, the checks of what the
 * peer sends while connecting and setting up in ctrl.c.
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
 * KEMARI_RDMA_COMMIT=send (to test that path).
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
 * were delivered. A malformed frame is -EBADMSG.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <infiniband/verbs.h>
#include <netinet/in.h>
#include <poll.h>
#include <rdma/rdma_cma.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "batch.h"
#include "ctrl.h"
#include "kemari/kemari.h"
#include "kemari/wire.h"
#include "kemari/xport.h"

#define RDMA_SLOTS 16	  /* receives posted for the peer */
#define RDMA_SEND_SLOTS 8 /* staged control sends in flight */
#define RDMA_MSG_MAX KEMARI_MSG_MAX
#define RDMA_COMMIT_SLOT 128   /* bytes per commit slot (frame + payload) */
#define RDMA_COPY_MAX 512      /* payloads up to this are copied on arrival */
#define RDMA_BACKLOG 240       /* copied messages waiting for recv */
#define RDMA_SQ_DEPTH 256      /* send queue, if the device allows */
#define RDMA_SIGNAL_EVERY 16   /* selective signalling period */
#define RDMA_BATCH 64	       /* WRITEs per post list */
#define RDMA_WR_MAX (1u << 20) /* bytes per WRITE */
#define RDMA_INFLIGHT_MAX (8ULL << 20)
#define RDMA_SPIN_NS 1000000ULL /* busy-poll this long after activity */
#define RDMA_STALL_MS 30000	/* no progress for this long: peer gone */
#define RDMA_ESTABLISH_MS 10000 /* accept: CM handshake completion */
#define RDMA_RESOLVE_MS 2000
#define RDMA_RECV_TAG (1ULL << 63)

struct rdma_region {
	uint8_t *base;
	uint64_t len;
	uint64_t piece;
	uint32_t n;
	struct ibv_mr **mr;
};

struct rdma_peer_region {
	uint64_t len;
	uint64_t piece;
	uint32_t n;
	struct rdma_remote *mr;
};

/*
 * An arrived control message: copied (slot -1), or still where it landed,
 * holding receive slot `slot` until recv is done with it.
 */
struct rdma_entry {
	int32_t slot;
	struct kemari_wire_hdr h;
	const uint8_t *payload;
	uint8_t data[RDMA_COPY_MAX];
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

	/* Credits (wrapping counters) and the receive order. */
	uint32_t sent;	      /* messages that consumed a peer receive */
	uint32_t peer_posted; /* receives the peer posted, as last heard */
	uint32_t posted;      /* receives we posted */
	uint32_t advertised;  /* ... as last told to the peer */
	uint32_t nrecv;	      /* messages received: picks the commit slot */

	struct rdma_entry *q; /* arrived messages, FIFO */
	uint32_t qcap, qhead, qtail;
	bool held; /* q[qhead] was returned by recv and is still in use */

	struct rdma_sq sq;
	struct rdma_limits lim;
	uint64_t push_end;  /* seq after the last WRITE posted */
	uint64_t wait_mark; /* sq.done when a wait for a completion began */
	bool use_imm;

	struct rdma_region src, dst;
	struct rdma_peer_region pdst;

	int dead; /* sticky: -ECONNRESET and why */
	int bad;  /* sticky: -EBADMSG and bad_why */
	char why[256];
	char bad_why[256];
	const char *gone; /* a CM event said the peer is gone */
	uint64_t last_activity_ns;
	uint64_t cm_polled_ns; /* the CM channel is a syscall: not every spin */
};

extern const struct kemari_xport_ops kemari_xport_rdma;

static _Atomic uint64_t rdma_pinned; /* bytes this process registered */

static struct rdma_xport *to_rdma(struct kemari_xport *x)
{
	return kemari_container_of(x, struct rdma_xport, x);
}

static uint64_t rdma__deadline(int timeout_ms)
{
	if (timeout_ms < 0)
		return UINT64_MAX;
	return kemari_now_ns() + (uint64_t)timeout_ms * 1000000ULL;
}

static int rdma__ms_left(uint64_t deadline)
{
	uint64_t now = kemari_now_ns();

	if (deadline == UINT64_MAX)
		return -1;
	if (now >= deadline)
		return 0;
	return (int)KEMARI_MIN((deadline - now + 999999) / 1000000,
			       (uint64_t)INT32_MAX);
}

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

/*
 * Remember the connection's first failure (it may be found while reaping
 * completions for another call); operations report it from then on.
 */
static void rdma__die(struct rdma_xport *t, int err, const char *fmt, ...)
	KEMARI_PRINTF(3, 4);
static void rdma__die(struct rdma_xport *t, int err, const char *fmt, ...)
{
	va_list ap;

	if (t->dead)
		return;
	t->dead = err;
	va_start(ap, fmt);
	vsnprintf(t->why, sizeof(t->why), fmt, ap);
	va_end(ap);
}

static void rdma__lost(struct rdma_xport *t, const char *why)
{
	rdma__die(t, -ECONNRESET, "connection to %s lost: %s", t->addr, why);
}

static int rdma__dead(struct rdma_xport *t)
{
	return kemari_err(t->dead, "%s", t->why);
}

/*
 * A malformed frame: keep kemari_wire's reason (the checks ran right after
 * a kemari_err_clear), deliver it after the good messages before it.
 */
static void rdma__malformed(struct rdma_xport *t, int err)
{
	if (t->bad)
		return;
	t->bad = err;
	snprintf(t->bad_why, sizeof(t->bad_why), "%s", kemari_last_error(err));
}

/* A stream that went bad or died: the same error every time. */
static int rdma__broken(struct rdma_xport *t)
{
	if (t->bad)
		return kemari_err(t->bad, "%s", t->bad_why);
	return rdma__dead(t);
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
static struct ibv_mr *rdma__reg_mr(struct rdma_xport *t, void *p, uint64_t len,
				   int access, const char *what, bool setup,
				   int *err)
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
 * Test knob KEMARI_RDMA_MR_MAX=SRC[,DST]: register the source (and the
 * receive buffers) in regions of at most that size, as a device with a
 * small max_mr_size would; different sizes make requests span several
 * local regions (SGEs) and split at remote ones.
 */
static uint64_t rdma__mr_knob(bool dst)
{
	const char *knob = getenv("KEMARI_RDMA_MR_MAX");
	const char *comma;
	char first[32];
	uint64_t k;

	if (!knob || !*knob)
		return 0;
	comma = strchr(knob, ',');
	if (dst && comma)
		return kemari_parse_size(comma + 1, &k) ? 0 : k;
	snprintf(first, sizeof(first), "%.*s",
		 comma ? (int)(comma - knob) : (int)strlen(knob), knob);
	return kemari_parse_size(first, &k) ? 0 : k;
}

/* Register [base, base + len) in regions of at most max_mr_size. */
static int rdma__region_init(struct rdma_xport *t, struct rdma_region *r,
			     void *base, uint64_t len, int access, bool dst,
			     const char *what)
{
	struct ibv_device_attr da;
	uint64_t piece = len, knob = rdma__mr_knob(dst);
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

static int rdma__post_recv(struct rdma_xport *t, uint32_t slot)
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
		return rdma__dead(t);
	}
	t->posted++;
	return 0;
}

static uint32_t rdma__credits(struct rdma_xport *t)
{
	uint32_t w = atomic_load_explicit(
		(_Atomic uint32_t *)rdma__credit_word(t), memory_order_acquire);

	t->peer_posted = rdma_credit__later(t->peer_posted, w);
	return rdma_credit__avail(t->peer_posted, t->sent);
}

/*
 * Tell the peer about reposted receives by writing our count into its
 * credit word: consumes none of its receives. force: any owed credit.
 */
static void rdma__advertise(struct rdma_xport *t, bool force)
{
	uint32_t owed = t->posted - t->advertised;
	struct ibv_send_wr wr, *bad;
	struct ibv_sge sge;

	if (!t->connected || t->dead || !t->peer_rw_known || !owed ||
	    (!force && owed < RDMA_SLOTS / 2) || !rdma_sq__room(&t->sq))
		return;
	atomic_store_explicit((_Atomic uint32_t *)rdma__credit_src(t),
			      t->posted, memory_order_release);
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
	if (rdma_sq__post(&t->sq, sge.length, true))
		wr.send_flags = IBV_SEND_SIGNALED;
	if (ibv_post_send(t->qp, &wr, &bad)) {
		rdma__lost(t, "cannot post a credit update");
		return;
	}
	t->advertised = t->posted;
}

/* ---- arriving messages ------------------------------------------------- */

static void rdma__absorb_xport(struct rdma_xport *t,
			       const struct kemari_wire_hdr *h, const void *p)
{
	struct rdma_ctrl_xport m;
	struct rdma_remote *mr;

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
	mr = malloc((size_t)m.di.n * sizeof(*mr));
	if (!mr) {
		rdma__die(t, -ENOMEM, "out of memory");
		return;
	}
	memcpy(mr, m.mr, (size_t)m.di.n * sizeof(*mr));
	free(t->pdst.mr);
	t->pdst = (struct rdma_peer_region){
		.len = m.di.len, .piece = m.di.piece, .n = m.di.n, .mr = mr
	};
	return;
bad:
	rdma__malformed(
		t,
		kemari_err(
			-EBADMSG,
			"replication stream: malformed RDMA setup message (%u bytes)",
			h->len));
}

/*
 * Queue a message that consumed receive slot `slot`. Small ones are copied
 * while there is backlog room and the slot goes back at once (credit for
 * the peer); the others keep the slot, at most RDMA_SLOTS of them, so the
 * queue never holds more than qcap entries.
 */
static void rdma__enqueue(struct rdma_xport *t, const struct kemari_wire_hdr *h,
			  const uint8_t *payload, uint32_t slot)
{
	struct rdma_entry *e = &t->q[t->qtail % t->qcap];
	uint32_t used = t->qtail - t->qhead;

	e->h = *h;
	if (h->len <= RDMA_COPY_MAX && used < t->qcap - RDMA_SLOTS) {
		memcpy(e->data, payload, h->len);
		e->payload = e->data;
		e->slot = -1;
		rdma__post_recv(t, slot);
	} else {
		e->payload = payload;
		e->slot = (int32_t)slot;
	}
	t->qtail++;
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
	if (t->bad || t->dead) {
		rdma__post_recv(t, slot);
		return;
	}
	/* A failed check's reason is the one rdma__malformed keeps. */
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
		rdma__malformed(t, err);
		rdma__post_recv(t, slot);
		return;
	}
	if (wc->wc_flags & IBV_WC_WITH_IMM)
		t->peer_posted =
			rdma_credit__later(t->peer_posted, ntohl(wc->imm_data));
	h = (const struct kemari_wire_hdr *)rdma__rslot(t, slot);
	err = kemari_wire__check_frame(h, wc->byte_len, t->max_msg, &hdr);
	if (err) {
		rdma__malformed(t, err);
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
			rdma__malformed(
				t,
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
		rdma_sq__complete(&t->sq, wc->wr_id);
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
static int rdma__progress(struct rdma_xport *t)
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
	if (t->dead || poll(p, 2, ms) <= 0)
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
		if (t->dead)
			return rdma__dead(t);
		if (ready(t))
			return 0;
		now = kemari_now_ns();
		if (now - t0 > RDMA_STALL_MS * 1000000ULL) {
			rdma__die(t, -ECONNRESET,
				  "connection to %s lost: %s for %d s", t->addr,
				  what, RDMA_STALL_MS / 1000);
			return rdma__dead(t);
		}
		/* Credit words arrive without an event: short sleeps. */
		if (now - t0 > RDMA_SPIN_NS)
			rdma__block(t, 1);
		else
			sched_yield();
	}
}

/* ---- connection setup -------------------------------------------------- */

static int rdma__new(struct rdma_xport **out, const char *addr)
{
	struct rdma_xport *t = calloc(1, sizeof(*t));

	if (!t)
		return -ENOMEM;
	t->x.ops = &kemari_xport_rdma;
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
	free(t->pdst.mr);
	memset(&t->pdst, 0, sizeof(t->pdst));
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
	rdma_sq__fini(&t->sq);
	free(t->q);
	t->q = NULL;
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
	err = rdma_sq__init(&t->sq, KEMARI_MIN(depth, qa.cap.max_send_wr),
			    RDMA_SIGNAL_EVERY);
	if (err)
		goto err_fini;
	t->lim = (struct rdma_limits){
		.max_msg = KEMARI_MIN((uint64_t)pa.max_msg_sz, RDMA_WR_MAX),
		.max_sge = KEMARI_MAX(1u, KEMARI_MIN(qa.cap.max_send_sge,
						     (uint32_t)RDMA_MAX_SGE)),
		.inflight_max = RDMA_INFLIGHT_MAX,
	};
	if (!t->lim.max_msg)
		t->lim.max_msg = KEMARI_PAGE_SIZE;

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
	t->qcap = RDMA_SLOTS + RDMA_BACKLOG;
	t->q = calloc(t->qcap, sizeof(*t->q));
	if (!t->q) {
		err = -ENOMEM;
		goto err_fini;
	}
	for (uint32_t i = 0; i < RDMA_SLOTS; i++) {
		err = rdma__post_recv(t, i);
		if (err)
			goto err_fini;
	}
	t->advertised = t->posted;
	{
		const char *c = getenv("KEMARI_RDMA_COMMIT");

		t->use_imm = ctx->device->transport_type == IBV_TRANSPORT_IB &&
			     !(c && !strcmp(c, "send"));
	}
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
	t->peer_posted = hs.slots;
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

/* ---- data path --------------------------------------------------------- */

static int rdma__send_frame(struct rdma_xport *t, uint16_t type, uint64_t epoch,
			    const void *payload, uint32_t len);

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

static int rdma__reg_src(struct kemari_xport *x, void *base, uint64_t len)
{
	struct rdma_xport *t = to_rdma(x);
	int err = rdma__open_rw(t);

	/* Read by the NIC only: no write access, no copy-on-write break. */
	return err
		       ?: rdma__region_init(t, &t->src, base, len, 0, false,
					    "guest RAM");
}

static int rdma__reg_dst(struct kemari_xport *x, void *base, uint64_t len)
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
static bool rdma__completed(struct rdma_xport *t)
{
	return t->sq.done != t->wait_mark;
}

static int rdma__push(struct kemari_xport *x, const struct kemari_run *runs,
		      size_t n)
{
	struct rdma_xport *t = to_rdma(x);
	struct rdma_wr_plan plan[RDMA_BATCH];
	struct ibv_send_wr wr[RDMA_BATCH], *bad;
	struct ibv_sge sge[RDMA_BATCH][RDMA_MAX_SGE];
	struct rdma_limits lim = t->lim;
	struct rdma_cursor c;
	size_t i;

	if (t->dead)
		return rdma__dead(t);
	if (!t->src.n)
		return kemari_err(-EINVAL, "internal: push before reg_src");
	if (!t->pdst.n) {
		/* The peer's setup message may still be in the queue. */
		rdma__progress(t);
		if (!t->pdst.n)
			return kemari_err(-EINVAL,
					  "internal: push before the peer "
					  "registered its receive buffers");
	}
	i = rdma_plan__bad_run(runs, n, t->src.len);
	if (i < n)
		return kemari_err(-ERANGE,
				  "internal: run %llu+%u outside guest RAM",
				  (unsigned long long)runs[i].pfn,
				  runs[i].npages);
	i = rdma_plan__bad_run(runs, n, t->pdst.len);
	if (i < n)
		return kemari_err(
			-ERANGE,
			"run of %u pages at page %llu is past the secondary's "
			"%llu-page receive buffers: not sent",
			runs[i].npages, (unsigned long long)runs[i].pfn,
			(unsigned long long)(t->pdst.len / KEMARI_PAGE_SIZE));
	lim.lpiece = t->src.piece;
	lim.rpiece = t->pdst.piece;
	rdma_plan__start(&c, runs, n);
	while (!rdma_plan__finished(&c)) {
		uint32_t k =
			rdma_batch__fill(&t->sq, &c, &lim, plan, RDMA_BATCH);

		if (!k) {
			int err;

			/* Something is outstanding, its last one signalled. */
			t->wait_mark = t->sq.done;
			err = rdma__wait(t, rdma__completed,
					 "no RDMA write completed");

			if (err)
				return err;
			continue;
		}
		for (uint32_t j = 0; j < k; j++) {
			const struct rdma_wr_plan *p = &plan[j];
			const struct rdma_remote *r = &t->pdst.mr[p->rmr];

			for (uint32_t s = 0; s < p->nsge; s++)
				sge[j][s] = (struct ibv_sge){
					.addr = (uintptr_t)(t->src.base +
							    p->sge[s].off),
					.length = p->sge[s].len,
					.lkey = t->src.mr[p->sge[s].mr]->lkey,
				};
			memset(&wr[j], 0, sizeof(wr[j]));
			wr[j].wr_id = p->seq;
			wr[j].next = j + 1 < k ? &wr[j + 1] : NULL;
			wr[j].sg_list = sge[j];
			wr[j].num_sge = (int)p->nsge;
			wr[j].opcode = IBV_WR_RDMA_WRITE;
			wr[j].send_flags = p->signaled ? IBV_SEND_SIGNALED : 0;
			wr[j].wr.rdma.remote_addr =
				r->addr +
				(p->off - (uint64_t)p->rmr * lim.rpiece);
			wr[j].wr.rdma.rkey = r->rkey;
		}
		if (ibv_post_send(t->qp, wr, &bad)) {
			rdma__lost(t, "cannot post RDMA writes");
			return rdma__dead(t);
		}
		t->push_end = t->sq.posted;
		t->last_activity_ns = kemari_now_ns();
		rdma__progress(t);
		if (t->dead)
			return rdma__dead(t);
	}
	return 0;
}

static bool rdma__flushed(struct rdma_xport *t)
{
	return t->sq.done >= t->push_end;
}

static int rdma__flush(struct kemari_xport *x)
{
	struct rdma_xport *t = to_rdma(x);

	if (t->dead)
		return rdma__dead(t);
	/* The pages are placed before any later send (RC order); waiting
	 * here is for the source: the NIC has read it once WRITEs complete. */
	return rdma__wait(t, rdma__flushed, "no RDMA write completed");
}

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
	return rdma__credits(t) > 0 && rdma_sq__room(&t->sq) > 0 &&
	       rdma__free_sslot(t) >= 0;
}

static int rdma__send_frame(struct rdma_xport *t, uint16_t type, uint64_t epoch,
			    const void *payload, uint32_t len)
{
	struct kemari_wire_hdr *h;
	struct ibv_send_wr wr, *bad;
	struct ibv_sge sge;
	bool commit;
	int slot, err;

	if (t->dead)
		return rdma__dead(t);
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
			(uint64_t)(t->sent % t->peer_slots) * t->peer_commit;
		wr.wr.rdma.rkey = t->peer_rkey;
	} else {
		/* The immediate piggybacks our posted-receive count. */
		wr.opcode = IBV_WR_SEND_WITH_IMM;
		wr.imm_data = htonl(t->posted);
	}
	rdma_sq__post(&t->sq, sge.length, true);
	wr.send_flags = IBV_SEND_SIGNALED;
	if (ibv_post_send(t->qp, &wr, &bad)) {
		rdma__lost(t, "cannot post a control message");
		return rdma__dead(t);
	}
	if (!commit)
		t->advertised = t->posted;
	t->sslot[slot] =
		(struct rdma_send_slot){ .seq = wr.wr_id, .busy = true };
	t->snext = (unsigned int)(slot + 1) % RDMA_SEND_SLOTS;
	t->sent++;
	t->last_activity_ns = kemari_now_ns();
	return 0;
}

static int rdma__send(struct kemari_xport *x, uint16_t type, uint64_t epoch,
		      const void *payload, uint32_t len)
{
	return rdma__send_frame(to_rdma(x), type, epoch, payload, len);
}

/* The message recv returned last is done with: its slot goes back. */
static void rdma__release(struct rdma_xport *t)
{
	struct rdma_entry *e;

	if (!t->held)
		return;
	e = &t->q[t->qhead % t->qcap];
	if (e->slot >= 0)
		rdma__post_recv(t, (uint32_t)e->slot);
	t->qhead++;
	t->held = false;
}

static int rdma__recv(struct kemari_xport *x, struct kemari_msg *m,
		      int timeout_ms)
{
	struct rdma_xport *t = to_rdma(x);
	uint64_t deadline = rdma__deadline(timeout_ms);

	rdma__release(t);
	for (;;) {
		uint64_t now;

		rdma__progress(t);
		if (t->qhead != t->qtail) {
			struct rdma_entry *e = &t->q[t->qhead % t->qcap];

			t->held = true;
			m->type = e->h.type;
			m->epoch = e->h.epoch;
			m->len = e->h.len;
			m->payload = e->payload;
			return 0;
		}
		if (t->bad || t->dead)
			return rdma__broken(t);
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

static uint32_t rdma__max_msg(struct kemari_xport *x)
{
	return to_rdma(x)->max_msg;
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
	} else if (t->connected && !t->dead) {
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
