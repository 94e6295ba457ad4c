// SPDX-License-Identifier: MIT
/*
 * libfabric transport: connected FI_EP_MSG endpoints with FI_MSG | FI_RMA,
 * set up through a passive endpoint and an event queue (fi_listen,
 * fi_connect, fi_accept). Page runs are one-sided RMA writes from the
 * registered source (guest RAM) to the same offset of the receiver's
 * registered region; control messages are sends into pre-posted receive
 * buffers under credit flow control.
 *
 * Memory registration follows the domain's mr_mode: FI_MR_LOCAL registers
 * the local buffers and passes their descriptors, FI_MR_VIRT_ADDR makes the
 * writer address the receiver's region by virtual address (offsets from 0
 * otherwise), FI_MR_PROV_KEY takes the provider's key (ours otherwise),
 * FI_MR_ENDPOINT binds each region to the endpoint. The receiver advertises
 * "base, key, length" in a transport-private KEMARI_MSG_XPORT message from
 * reg_dst; the writer adds byte offsets to that base and never needs to
 * know the receiver's mr_mode.
 *
 * Ordering (flush): every provider this was run on (verbs, tcp, sockets)
 * promises FI_ORDER_SAW on both sides, i.e. a send is placed at the target
 * after the RMA writes posted before it, so flush only waits for the
 * writes' local completions (after which the source may change), and the
 * commit sent after flush cannot overtake them. A provider without SAW gets
 * its writes posted with FI_DELIVERY_COMPLETE instead, so that the local
 * completion flush waits for already means "placed at the target". FI_FENCE
 * was not chosen: on verbs it only orders after RDMA reads and atomics.
 *
 * Flow control: each side posts window + 2 receive buffers and tells the
 * peer its window in the connection data; a data message costs a credit,
 * credits come back in batches (XPORT credit messages, which need none:
 * the two spare buffers absorb them, see ofi_credit__due). A send without
 * credit waits up to OFI_CREDIT_WAIT_MS for one, so a burst is delivered
 * even if the sender makes no further call; after that it goes to a
 * backlog that any later call drains, so two sides that both stop reading
 * cannot deadlock.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

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
#include "kemari/xport.h"
#include "ofi_plan.h"

#define OFI_API FI_VERSION(1, 10)
#define OFI_MSG_MAX (64u * 1024)   /* control payload per message */
#define OFI_WINDOW 32		   /* receive credits we lend the peer */
#define OFI_TX_SLOTS 16		   /* registered send buffers */
#define OFI_TX_DEPTH_MAX 1024	   /* outstanding transmit operations */
#define OFI_WRITE_MAX (4ULL << 20) /* bytes per RMA write */
#define OFI_BACKLOG_MAX (64u << 20)
#define OFI_STALL_MS 10000 /* no transmit completion this long: peer gone */
#define OFI_SLICE_MS 100   /* blocking waits look at the EQ this often */
/*
 * Busy-poll before sleeping, with a provider whose queues are the
 * hardware's (verbs): polling its CQ is polling the device. A software
 * provider (tcp, sockets, net) moves data in its own progress thread or in
 * the wait of fi_cq_sread: a caller that spins only takes that thread's
 * CPU. Measured with the synthetic guest over ofi:tcp on two cores: an
 * empty epoch's pause p50 1691-2168 us spinning, 198-327 us blocking.
 */
#define OFI_SPIN_NS 20000	/* busy-poll before sleeping */
#define OFI_HOT_SPIN_NS 1000000 /* ... right after a send (a pause) */
#define OFI_HOT_NS 2000000
#define OFI_ACCEPT_MS 10000
#define OFI_CLOSE_MS 1000	/* close lets sent messages leave this long */
#define OFI_CREDIT_WAIT_MS 2000 /* a send waits this long for a credit */

/* Our keys where the provider lets us pick (unique per domain). */
enum { OFI_KEY_RX = 1, OFI_KEY_TX, OFI_KEY_SRC, OFI_KEY_DST };

/*
 * A listener and the connections it accepted share one fabric. It keeps
 * the fi_info it was opened from: providers may point into it (sockets
 * does, from its connection thread) for as long as the fabric lives.
 */
struct ofi_fabric {
	struct fid_fabric *fab;
	struct fi_info *info;
	atomic_int refs;
};

struct ofi_txctx {
	struct fi_context2 ctx; /* FI_CONTEXT(2) mode: provider scratch */
	uint64_t seq;
	uint64_t bytes;	    /* this operation's */
	uint64_t bytes_end; /* all posted up to and including it */
	int slot; /* send buffer to free on completion, -1 for writes */
};

/* What a transmit wait waits for. */
enum ofi_wait {
	OFI_WAIT_SLOT,	/* a free send buffer */
	OFI_WAIT_ROOM,	/* room in the transmit queue */
	OFI_WAIT_WRITE, /* room, and bytes more fit in the byte window */
	OFI_WAIT_ALL,	/* every operation completed */
};

struct ofi_rxbuf {
	struct fi_context2 ctx;
	uint8_t *data;
};

struct ofi_pending {
	struct ofi_pending *next;
	uint32_t len; /* sealed frame bytes */
	uint8_t frame[];
};

struct ofi_xport {
	struct kemari_xport x;
	bool listener;
	char addr[64]; /* the peer (or our listening address) */
	char prov[32];
	struct ofi_fabric *fab;
	struct fi_info *info;
	struct fid_eq *eq;
	struct fid_pep *pep;
	struct fid_domain *dom;
	struct fid_ep *ep;
	struct fid_cq *txcq, *rxcq;
	bool connected;

	struct ofi_mr_use mru;
	struct ofi_limits lim;
	bool selective; /* transmit completions in order: signal some */
	uint64_t write_flags;
	uint32_t max_msg;
	size_t frame;		       /* header + max_msg */
	uint64_t spin_ns, hot_spin_ns; /* 0: block at once (software) */

	/* transmit side */
	uint32_t depth;
	struct ofi_txctx *txc;
	uint64_t tx_posted, tx_done;
	uint64_t tx_bytes, tx_bytes_done;
	uint64_t tx_progress_ns;
	uint8_t *txbuf;
	struct fid_mr *txmr;
	void *txdesc;
	int txfree[OFI_TX_SLOTS];
	int ntxfree;
	uint32_t credits;
	struct ofi_pending *bl_head, *bl_tail;
	size_t bl_bytes;
	uint64_t last_tx_ns;

	/* receive side */
	uint32_t window, nrx;
	struct ofi_rxbuf *rx;
	uint8_t *rxbuf;
	struct fid_mr *rxmr;
	void *rxdesc;
	uint32_t *ready; /* ring of received, undelivered buffers */
	uint32_t ready_head, ready_n;
	int held; /* buffer the caller's payload points into */
	uint32_t owed;

	/* regions */
	uint8_t *src;
	uint64_t src_len;
	struct fid_mr *srcmr;
	void *srcdesc;
	uint8_t *dst;
	uint64_t dst_len;
	struct fid_mr *dstmr;
	uint64_t pinned; /* bytes registered on this connection */
	bool peer_known;
	uint64_t peer_base, peer_key, peer_len;

	/* a broken connection stays broken, with its first reason */
	int dead;
	char why[320];
};

extern const struct kemari_xport_ops kemari_xport_ofi;

static struct ofi_xport *to_ofi(struct kemari_xport *x)
{
	return kemari_container_of(x, struct ofi_xport, x);
}

static const char *ofi__strerror(ssize_t ret)
{
	return fi_strerror((int)(ret < 0 ? -ret : ret));
}

/* libfabric returns -FI_E*; those below 256 are errnos, the rest are not. */
static int ofi__errno(ssize_t ret)
{
	int e = (int)(ret < 0 ? -ret : ret);

	if (e == FI_ETRUNC)
		return -EMSGSIZE;
	return e > 0 && e < 256 ? -e : -EIO;
}

/* Mark the connection broken; later calls repeat the reason. */
KEMARI_PRINTF(3, 4)
static int ofi__die(struct ofi_xport *t, int err, const char *fmt, ...)
{
	va_list ap;

	if (!t->dead) {
		va_start(ap, fmt);
		vsnprintf(t->why, sizeof(t->why), fmt, ap);
		va_end(ap);
		t->dead = err;
	}
	return kemari_err(t->dead, "%s", t->why);
}

static int ofi__lost(struct ofi_xport *t, const char *why)
{
	return ofi__die(t, -ECONNRESET, "connection to %s lost: %s", t->addr,
			why);
}

static int ofi__check(struct ofi_xport *t)
{
	return t->dead ? kemari_err(t->dead, "%s", t->why) : 0;
}

/* --- fabric reference -------------------------------------------------- */

static int ofi__fabric_open(struct ofi_fabric **out, struct fi_info *info)
{
	struct ofi_fabric *f = calloc(1, sizeof(*f));
	int ret;

	if (!f)
		return -ENOMEM;
	f->info = fi_dupinfo(info);
	if (!f->info) {
		free(f);
		return -ENOMEM;
	}
	ret = fi_fabric(f->info->fabric_attr, &f->fab, NULL);
	if (ret) {
		fi_freeinfo(f->info);
		free(f);
		return kemari_err(ofi__errno(ret),
				  "libfabric provider %s: fi_fabric: %s",
				  info->fabric_attr->prov_name,
				  ofi__strerror(ret));
	}
	atomic_init(&f->refs, 1);
	*out = f;
	return 0;
}

static struct ofi_fabric *ofi__fabric_get(struct ofi_fabric *f)
{
	atomic_fetch_add(&f->refs, 1);
	return f;
}

static void ofi__fabric_put(struct ofi_fabric *f)
{
	if (f && atomic_fetch_sub(&f->refs, 1) == 1) {
		fi_close(&f->fab->fid);
		fi_freeinfo(f->info);
		free(f);
	}
}

/* --- provider choice ---------------------------------------------------- */

static struct fi_info *ofi__hints(const char *prov)
{
	struct fi_info *h = fi_allocinfo();

	if (!h)
		return NULL;
	h->caps = FI_MSG | FI_RMA;
	/*
	 * Modes we cope with: every operation gets its own fi_context2, and
	 * we never send remote CQ data, so FI_RX_CQ_DATA (verbs) costs
	 * nothing.
	 */
	h->mode = FI_CONTEXT | FI_CONTEXT2 | FI_RX_CQ_DATA;
	h->addr_format = FI_SOCKADDR_IN;
	h->ep_attr->type = FI_EP_MSG;
	h->domain_attr->mr_mode = FI_MR_LOCAL | FI_MR_VIRT_ADDR |
				  FI_MR_ALLOCATED | FI_MR_PROV_KEY |
				  FI_MR_ENDPOINT;
	if (prov) {
		h->fabric_attr->prov_name = strdup(prov);
		if (!h->fabric_attr->prov_name) {
			fi_freeinfo(h);
			return NULL;
		}
	}
	return h;
}

/* Comma-separated names of the providers in list (each once). */
static void ofi__names(const struct fi_info *list, char *out, size_t len)
{
	size_t n = 0;

	out[0] = 0;
	for (const struct fi_info *i = list; i; i = i->next) {
		const char *nm = i->fabric_attr->prov_name;
		bool seen = false;

		for (const struct fi_info *j = list; j != i; j = j->next)
			seen |= !strcmp(j->fabric_attr->prov_name, nm);
		if (!seen && n < len)
			n += (size_t)snprintf(out + n, len - n, "%s%s",
					      n ? ", " : "", nm);
	}
}

static int ofi__no_provider(const char *prov, const char *host,
			    const char *port, uint64_t flags)
{
	struct fi_info *h = ofi__hints(NULL), *all = NULL;
	char have[256] = "none";
	int ret;

	if (!h)
		return -ENOMEM;
	ret = fi_getinfo(OFI_API, host, port, flags, h, &all);
	fi_freeinfo(h);
	if (!ret && all)
		ofi__names(all, have, sizeof(have));
	fi_freeinfo(all);
	if (prov)
		return kemari_err(
			-ENOENT,
			"libfabric provider '%s' not available for FI_EP_MSG with "
			"RMA at %s (have: %s): use --provider=NAME",
			prov, host, have);
	return kemari_err(
		-ENOENT,
		"no libfabric provider can do FI_EP_MSG with RMA at %s (have: %s): "
		"check the address, or use --transport=tcp",
		host, have);
}

/*
 * Usable fi_info entries for host:port, best first, one per provider:
 * the named provider only, or by ofi_prov__rank (verbs unless loopback,
 * tcp, sockets, others; never shm, udp or RDM layers). *list owns the entries.
 */
static int ofi__candidates(struct fi_info **list, struct fi_info **cand,
			   size_t max, size_t *n, const char *prov,
			   const char *host, const char *port, bool source)
{
	uint64_t flags = source ? FI_SOURCE : 0;
	struct fi_info *h = ofi__hints(prov);
	struct in_addr a = { 0 };
	bool loopback;
	int ret;

	inet_pton(AF_INET, host, &a);
	loopback = ofi_addr__loopback(ntohl(a.s_addr));
	*n = 0;
	*list = NULL;
	if (prov && !*prov) {
		/* An empty --provider= means the default choice. */
		fi_freeinfo(h);
		prov = NULL;
		h = ofi__hints(NULL);
	}
	if (!h)
		return -ENOMEM;
	ret = fi_getinfo(OFI_API, host, port, flags, h, list);
	fi_freeinfo(h);
	if (ret == -FI_ENODATA || (!ret && !*list))
		return ofi__no_provider(prov, host, port, flags);
	if (ret)
		return kemari_err(ofi__errno(ret), "fi_getinfo(%s:%s): %s",
				  host, port, ofi__strerror(ret));
	for (int rank = 0; rank <= 3 && *n < max; rank++) {
		for (struct fi_info *i = *list; i && *n < max; i = i->next) {
			const char *nm = i->fabric_attr->prov_name;
			bool dup = false;

			if (!prov && ofi_prov__rank(nm, loopback) != rank)
				continue;
			if (prov && rank > 0)
				break;
			if (i->ep_attr->type != FI_EP_MSG ||
			    (i->caps & (FI_MSG | FI_RMA)) != (FI_MSG | FI_RMA))
				continue;
			for (size_t k = 0; k < *n; k++)
				dup |= !strcmp(cand[k]->fabric_attr->prov_name,
					       nm);
			if (!dup)
				cand[(*n)++] = i;
		}
	}
	if (*n == 0) {
		fi_freeinfo(*list);
		*list = NULL;
		return ofi__no_provider(prov, host, port, flags);
	}
	return 0;
}

static int ofi__split_addr(const char *addr, char *host, size_t hlen,
			   char *port, size_t plen)
{
	struct sockaddr_in sa;
	int err = kemari_parse_sockaddr(addr, &sa);

	if (err)
		return err;
	snprintf(host, hlen, "%s", inet_ntoa(sa.sin_addr));
	snprintf(port, plen, "%u", ntohs(sa.sin_port));
	return 0;
}

/* --- memory registration ------------------------------------------------ */

static int ofi__reg(struct ofi_xport *t, void *base, uint64_t len,
		    uint64_t access, uint64_t key, const char *what,
		    struct fid_mr **mr)
{
	struct rlimit rl;
	int ret;

	ret = fi_mr_reg(t->dom, base, len, access, 0,
			ofi_mr__requested_key(&t->mru, key), 0, mr, NULL);
	if (!ret && t->mru.endpoint) {
		ret = fi_mr_bind(*mr, &t->ep->fid, 0);
		ret = ret ?: fi_mr_enable(*mr);
		if (ret) {
			fi_close(&(*mr)->fid);
			*mr = NULL;
		}
	}
	if (!ret) {
		t->pinned += len;
		return 0;
	}
	*mr = NULL;
	/* Providers that pin (verbs) fail here when memlock is short. */
	if (!getrlimit(RLIMIT_MEMLOCK, &rl) && rl.rlim_cur != RLIM_INFINITY &&
	    rl.rlim_cur < t->pinned + len)
		return kemari_err(
			-ENOMEM,
			"cannot register %llu KiB of %s with libfabric provider "
			"%s: the locked-memory limit RLIMIT_MEMLOCK is %llu KiB, "
			"this connection needs at least %llu KiB: run 'ulimit -l "
			"unlimited' (or raise memlock in "
			"/etc/security/limits.conf)",
			(unsigned long long)(len >> 10), what, t->prov,
			(unsigned long long)(rl.rlim_cur >> 10),
			(unsigned long long)((t->pinned + len) >> 10));
	return kemari_err(
		ofi__errno(ret),
		"cannot register %llu KiB of %s with libfabric provider %s: %s",
		(unsigned long long)(len >> 10), what, t->prov,
		ofi__strerror(ret));
}

static void ofi__dereg(struct fid_mr **mr)
{
	if (*mr)
		fi_close(&(*mr)->fid);
	*mr = NULL;
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
	snprintf(
		buf, sizeof(buf), "%s %s (%s)",
		tx ? "transmit failed:" : "receive failed:", fi_strerror(e.err),
		fi_cq_strerror(cq, e.prov_errno, e.err_data, NULL, 0));
	return ofi__lost(t, buf);
}

static void ofi__tx_complete(struct ofi_xport *t, struct ofi_txctx *c)
{
	/* In order: one completion retires everything posted before it. */
	if (t->selective) {
		t->tx_done = c->seq + 1;
		t->tx_bytes_done = c->bytes_end;
	} else {
		t->tx_done++;
		t->tx_bytes_done += c->bytes;
	}
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

static int ofi__post_rx(struct ofi_xport *t, uint32_t i)
{
	struct iovec iov = { t->rx[i].data, t->frame };
	void *desc = t->rxdesc;
	struct fi_msg msg = {
		.msg_iov = &iov,
		.desc = &desc,
		.iov_count = 1,
		.context = &t->rx[i].ctx,
	};
	ssize_t r;

	do {
		r = fi_recvmsg(t->ep, &msg, 0);
	} while (r == -FI_EAGAIN && !ofi__reap_tx(t));
	if (r)
		return t->dead ? t->dead : ofi__lost(t, ofi__strerror(r));
	return 0;
}

static int ofi__send_credit(struct ofi_xport *t);

/* A data buffer was consumed: repost it and pay the credit back. */
static int ofi__consumed(struct ofi_xport *t, uint32_t i)
{
	int err = ofi__post_rx(t, i);

	if (err)
		return err;
	t->owed++;
	return ofi_credit__due(t->owed, t->window) ? ofi__send_credit(t) : 0;
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
		if (xp.credits > OFI_WINDOW_MAX - t->credits)
			return ofi__die(t, -EBADMSG,
					"replication stream: %s returned %u "
					"credits on top of %u",
					t->addr, xp.credits, t->credits);
		t->credits += xp.credits;
		/* Credit messages cost no credit: repost, nothing owed. */
		return ofi__post_rx(t, i);
	case OFI_XP_REGION:
		t->peer_base = xp.base;
		t->peer_key = xp.key;
		t->peer_len = xp.len;
		t->peer_known = true;
		err = ofi__consumed(t, i);
		return err;
	default:
		return ofi__die(
			t, -EBADMSG,
			"replication stream: unknown transport message %u from %s",
			xp.op, t->addr);
	}
}

/* One receive completion: check the frame, absorb it or queue it. */
static int ofi__rx_one(struct ofi_xport *t, const struct fi_cq_data_entry *c)
{
	struct ofi_rxbuf *b = c->op_context;
	uint32_t i = (uint32_t)(b - t->rx);
	struct kemari_wire_hdr h;
	int err;

	err = kemari_wire__check_frame(b->data, c->len, t->max_msg, &h);
	if (err)
		return ofi__die(t, err, "%s", kemari_last_error(err));
	if (h.type == KEMARI_MSG_XPORT)
		return ofi__absorb(t, i, &h);
	t->ready[(t->ready_head + t->ready_n++) % t->nrx] = i;
	return 0;
}

static int ofi__reap_rx(struct ofi_xport *t)
{
	struct fi_cq_data_entry c[16];

	for (;;) {
		ssize_t r = fi_cq_read(t->rxcq, c, KEMARI_ARRAY_SIZE(c));

		if (r == -FI_EAGAIN)
			return 0;
		if (r == -FI_EAVAIL)
			return ofi__cq_error(t, t->rxcq, false);
		if (r < 0)
			return ofi__lost(t, ofi__strerror(r));
		for (ssize_t k = 0; k < r; k++) {
			int err = ofi__rx_one(t, &c[k]);

			if (err)
				return err;
		}
	}
}

/* Connection-management events of an established connection. */
static int ofi__check_eq(struct ofi_xport *t)
{
	struct {
		struct fi_eq_cm_entry e;
		uint8_t data[64];
	} ev;
	struct fi_eq_err_entry ee;
	uint32_t type;
	ssize_t r = fi_eq_read(t->eq, &type, &ev, sizeof(ev), 0);

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

static uint64_t ofi__room(const struct ofi_xport *t)
{
	return t->depth - (t->tx_posted - t->tx_done);
}

static struct ofi_txctx *ofi__txctx(struct ofi_xport *t, int slot,
				    uint64_t bytes)
{
	struct ofi_txctx *c = &t->txc[t->tx_posted % t->depth];

	c->seq = t->tx_posted;
	c->bytes = bytes;
	c->bytes_end = t->tx_bytes + bytes;
	c->slot = slot;
	return c;
}

/* The operation whose context ofi__txctx just filled was posted. */
static void ofi__posted(struct ofi_xport *t, uint64_t bytes)
{
	t->tx_posted++;
	t->tx_bytes += bytes;
}

static bool ofi__tx_ready(const struct ofi_xport *t, enum ofi_wait w,
			  uint64_t bytes)
{
	switch (w) {
	case OFI_WAIT_SLOT:
		return t->ntxfree > 0;
	case OFI_WAIT_ROOM:
		return ofi__room(t) > 0;
	case OFI_WAIT_WRITE:
		return ofi__room(t) > 0 &&
		       ofi_inflight__fits(t->tx_bytes - t->tx_bytes_done, bytes,
					  OFI_INFLIGHT_MAX);
	case OFI_WAIT_ALL:
	default:
		return t->tx_done == t->tx_posted;
	}
}

/*
 * Wait for transmit completions until w holds: they are local, so this
 * never waits on the peer's application.
 */
static int ofi__wait_tx(struct ofi_xport *t, enum ofi_wait w, uint64_t bytes)
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
		if (ofi__tx_ready(t, w, bytes))
			return 0;
		now = kemari_now_ns();
		if (now - t->tx_progress_ns > OFI_STALL_MS * 1000000ULL)
			return ofi__lost(t, "no transmit completion for 10 s");
		if (now - t0 < t->hot_spin_ns)
			continue;
		r = fi_cq_sread(t->txcq, &c, 1, NULL, OFI_SLICE_MS);
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
	};
	uint64_t t0 = kemari_now_ns();
	ssize_t r;
	int err;

	for (;;) {
		if (!ofi__room(t)) {
			err = ofi__wait_tx(t, OFI_WAIT_ROOM, 0);
			if (err)
				return err;
		}
		msg.context = &ofi__txctx(t, slot, len)->ctx;
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
	ofi__posted(t, len);
	t->last_tx_ns = kemari_now_ns();
	return 0;
}

static int ofi__slot(struct ofi_xport *t, int *slot)
{
	int err = t->ntxfree ? 0 : ofi__wait_tx(t, OFI_WAIT_SLOT, 0);

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
	struct ofi_xp xp = { .op = OFI_XP_CREDIT, .credits = t->owed };
	int err = ofi__send_frame(t, KEMARI_MSG_XPORT, 0, &xp, sizeof(xp));

	if (!err)
		t->owed = 0;
	return err;
}

/* Send what waited for credits, in order, as far as credits allow. */
static int ofi__drain(struct ofi_xport *t)
{
	while (t->bl_head && t->credits > 0) {
		struct ofi_pending *p = t->bl_head;
		int slot, err = ofi__slot(t, &slot);

		if (err)
			return err;
		memcpy(t->txbuf + (size_t)slot * t->frame, p->frame, p->len);
		err = ofi__post_send(t, slot, p->len);
		if (err)
			return err;
		t->credits--;
		t->bl_head = p->next;
		if (!t->bl_head)
			t->bl_tail = NULL;
		t->bl_bytes -= p->len;
		free(p);
	}
	return 0;
}

/* Everything that costs nothing to look at: completions, events, backlog. */
static int ofi__progress(struct ofi_xport *t)
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

/* --- connection setup --------------------------------------------------- */

static void ofi__free(struct ofi_xport *t)
{
	struct ofi_pending *p;

	if (t->ep && t->connected)
		fi_shutdown(t->ep, 0);
	if (t->mru.endpoint) {
		/* Regions bound to the endpoint go before it. */
		ofi__dereg(&t->srcmr);
		ofi__dereg(&t->dstmr);
		ofi__dereg(&t->txmr);
		ofi__dereg(&t->rxmr);
	}
	if (t->ep)
		fi_close(&t->ep->fid);
	ofi__dereg(&t->srcmr);
	ofi__dereg(&t->dstmr);
	ofi__dereg(&t->txmr);
	ofi__dereg(&t->rxmr);
	if (t->pep)
		fi_close(&t->pep->fid);
	if (t->txcq)
		fi_close(&t->txcq->fid);
	if (t->rxcq)
		fi_close(&t->rxcq->fid);
	if (t->eq)
		fi_close(&t->eq->fid);
	if (t->dom)
		fi_close(&t->dom->fid);
	ofi__fabric_put(t->fab);
	fi_freeinfo(t->info);
	while ((p = t->bl_head)) {
		t->bl_head = p->next;
		free(p);
	}
	free(t->txc);
	free(t->txbuf);
	free(t->rx);
	free(t->rxbuf);
	free(t->ready);
	free(t);
}

static struct ofi_xport *ofi__alloc(const char *addr, const struct fi_info *i)
{
	struct ofi_xport *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->x.ops = &kemari_xport_ofi;
	t->held = -1;
	snprintf(t->addr, sizeof(t->addr), "%s", addr);
	snprintf(t->prov, sizeof(t->prov), "%s", i->fabric_attr->prov_name);
	return t;
}

/* Limits and modes of this connection, from the provider's answer. */
static void ofi__attrs(struct ofi_xport *t)
{
	const struct fi_info *i = t->info;
	uint64_t order = i->tx_attr->msg_order & i->rx_attr->msg_order;
	uint64_t hdr = sizeof(struct kemari_wire_hdr);

	/* Test hook: behave as if the provider did not promise SAW. */
	if (getenv("KEMARI_OFI_NO_SAW"))
		order &= ~FI_ORDER_SAW;
	t->mru = ofi_mr__use(i->domain_attr->mr_mode);
	t->lim = ofi_limits__make(i->ep_attr->max_msg_size,
				  i->tx_attr->iov_limit,
				  i->tx_attr->rma_iov_limit, OFI_WRITE_MAX);
	t->selective = i->tx_attr->comp_order & FI_ORDER_STRICT;
	t->write_flags = (order & FI_ORDER_SAW) ? 0 : FI_DELIVERY_COMPLETE;
	t->max_msg = (uint32_t)KEMARI_MIN((uint64_t)OFI_MSG_MAX,
					  i->ep_attr->max_msg_size - hdr);
	t->frame = hdr + t->max_msg;
	t->depth = (uint32_t)KEMARI_MIN((size_t)OFI_TX_DEPTH_MAX,
					i->tx_attr->size);
	if (!strncmp(t->prov, "verbs", 5)) {
		t->spin_ns = OFI_SPIN_NS;
		t->hot_spin_ns = OFI_HOT_SPIN_NS;
	}
	t->window = OFI_WINDOW;
	if (i->rx_attr->size &&
	    i->rx_attr->size < OFI_WINDOW + OFI_CREDIT_RESERVE)
		t->window = (uint32_t)KEMARI_MAX(
			(size_t)2, i->rx_attr->size - OFI_CREDIT_RESERVE);
	t->nrx = t->window + OFI_CREDIT_RESERVE;
	kemari_debug("ofi: %s: provider %s, mr_mode%s%s%s%s, %s, %u-deep tx, "
		     "%llu-byte/%u-iov writes",
		     t->addr, t->prov, t->mru.local ? " local" : "",
		     t->mru.virt_addr ? " virt_addr" : "",
		     t->mru.prov_key ? " prov_key" : "",
		     t->mru.endpoint ? " endpoint" : "",
		     t->write_flags ? "delivery-complete writes"
				    : "sends ordered after writes (SAW)",
		     t->depth, (unsigned long long)t->lim.max_bytes,
		     t->lim.max_segs);
}

/*
 * Domain, endpoint, queues and buffers for one connection from info (which
 * t takes over), with every receive buffer posted: ready for fi_connect or
 * fi_accept. Errors here are local (resources), never the peer's absence.
 */
static int ofi__conn_setup(struct ofi_xport *t, struct fi_info *info)
{
	struct fi_eq_attr eqa = { .size = 16, .wait_obj = FI_WAIT_UNSPEC };
	struct fi_cq_attr cqa = { .format = FI_CQ_FORMAT_DATA,
				  .wait_obj = FI_WAIT_UNSPEC };
	const char *step;
	int ret;

	t->info = info;
	ofi__attrs(t);
	if (t->depth < 4 || t->lim.max_segs < 1)
		return kemari_err(-EINVAL,
				  "libfabric provider %s: transmit queue of %u "
				  "entries is too small",
				  t->prov, t->depth);
	step = "fi_domain";
	ret = fi_domain(t->fab->fab, info, &t->dom, NULL);
	if (ret)
		goto err;
	step = "fi_eq_open";
	ret = fi_eq_open(t->fab->fab, &eqa, &t->eq, NULL);
	if (ret)
		goto err;
	step = "fi_cq_open";
	cqa.size = t->depth;
	ret = fi_cq_open(t->dom, &cqa, &t->txcq, NULL);
	if (ret)
		goto err;
	cqa.size = t->nrx;
	ret = fi_cq_open(t->dom, &cqa, &t->rxcq, NULL);
	if (ret)
		goto err;
	step = "fi_endpoint";
	ret = fi_endpoint(t->dom, info, &t->ep, NULL);
	if (ret)
		goto err;
	step = "fi_ep_bind";
	ret = fi_ep_bind(t->ep, &t->eq->fid, 0);
	ret = ret
		      ?: fi_ep_bind(t->ep, &t->txcq->fid,
				    FI_TRANSMIT | FI_SELECTIVE_COMPLETION);
	ret = ret ?: fi_ep_bind(t->ep, &t->rxcq->fid, FI_RECV);
	if (ret)
		goto err;
	step = "fi_enable";
	ret = fi_enable(t->ep);
	if (ret)
		goto err;

	t->txc = calloc(t->depth, sizeof(*t->txc));
	t->txbuf = aligned_alloc(4096, KEMARI_ALIGN_UP(OFI_TX_SLOTS * t->frame,
						       4096));
	t->rx = calloc(t->nrx, sizeof(*t->rx));
	t->rxbuf =
		aligned_alloc(4096, KEMARI_ALIGN_UP(t->nrx * t->frame, 4096));
	t->ready = calloc(t->nrx, sizeof(*t->ready));
	if (!t->txc || !t->txbuf || !t->rx || !t->rxbuf || !t->ready)
		return -ENOMEM;
	if (t->mru.local) {
		ret = ofi__reg(t, t->txbuf, OFI_TX_SLOTS * t->frame, FI_SEND,
			       OFI_KEY_TX, "send buffers", &t->txmr);
		ret = ret
			      ?: ofi__reg(t, t->rxbuf, t->nrx * t->frame,
					  FI_RECV, OFI_KEY_RX,
					  "receive buffers", &t->rxmr);
		if (ret)
			return ret;
		t->txdesc = fi_mr_desc(t->txmr);
		t->rxdesc = fi_mr_desc(t->rxmr);
	}
	for (int s = 0; s < OFI_TX_SLOTS; s++)
		t->txfree[t->ntxfree++] = OFI_TX_SLOTS - 1 - s;
	for (uint32_t i = 0; i < t->nrx; i++) {
		t->rx[i].data = t->rxbuf + (size_t)i * t->frame;
		ret = ofi__post_rx(t, i);
		if (ret)
			return ret;
	}
	t->tx_progress_ns = t->last_tx_ns = kemari_now_ns();
	return 0;
err:
	return kemari_err(ofi__errno(ret), "libfabric provider %s: %s: %s",
			  t->prov, step, ofi__strerror(ret));
}

/*
 * Wait for the connection's FI_CONNECTED; the connecting side takes the
 * peer's window from the accept's connection data (the accepting side had
 * it in the request). -ETIMEDOUT, or the refusal's -errno (message set).
 */
static int ofi__wait_connected(struct ofi_xport *t, int timeout_ms,
			       bool want_cm)
{
	struct {
		struct fi_eq_cm_entry e;
		uint8_t data[256];
	} ev;
	struct fi_eq_err_entry ee;
	uint64_t deadline = kemari_now_ns() + (uint64_t)timeout_ms * 1000000ULL;
	struct ofi_cm cm;
	uint32_t type;
	ssize_t r;

	/*
	 * fi_eq_sread may come back early with nothing (a signal, a wakeup
	 * meant for the provider): giving up then would abandon a connection
	 * the peer is accepting, so only our own deadline ends the wait.
	 */
	for (;;) {
		uint64_t now = kemari_now_ns();

		if (now >= deadline)
			return kemari_err(-ETIMEDOUT, "no answer within %d ms",
					  timeout_ms);
		r = fi_eq_sread(t->eq, &type, &ev, sizeof(ev),
				(int)((deadline - now) / 1000000 + 1), 0);
		if (r != -FI_EAGAIN && r != -FI_EINTR)
			break;
	}
	if (r == -FI_EAVAIL) {
		memset(&ee, 0, sizeof(ee));
		fi_eq_readerr(t->eq, &ee, 0);
		return kemari_err(ee.err ? -ee.err : -ECONNREFUSED, "%s",
				  ee.err == FI_ECONNREFUSED
					  ? "connection refused"
					  : fi_strerror(ee.err));
	}
	if (r < 0)
		return kemari_err(ofi__errno(r), "%s", ofi__strerror(r));
	if (type != FI_CONNECTED)
		return kemari_err(-ECONNRESET, "connection event %u", type);
	t->connected = true;
	if (!want_cm)
		return 0;
	if ((size_t)r < sizeof(ev.e) + sizeof(cm))
		return kemari_err(-EPROTO, "the peer sent no Kemari connection "
					   "data (not a Kemari peer?)");
	if (ofi_ctrl__cm(ev.data, (size_t)r - sizeof(ev.e), &cm))
		return kemari_err(-EPROTO,
				  "the peer's connection data is not Kemari's");
	t->credits = cm.window;
	return 0;
}

/* --- ops ---------------------------------------------------------------- */

/*
 * Whether a plain TCP socket cannot bind addr: socket-based providers do
 * not all say EADDRINUSE when their listen fails for that reason.
 */
static bool ofi__port_busy(const char *addr)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	uint32_t ip;
	uint16_t port;
	bool busy;
	int fd, one = 1;

	if (kemari_parse_hostport(addr, &ip, &port))
		return false;
	sa.sin_addr.s_addr = htonl(ip);
	sa.sin_port = htons(port);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	busy = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 &&
	       errno == EADDRINUSE;
	close(fd);
	return busy;
}

static int ofi__listen_one(struct ofi_xport *t, struct fi_info *info)
{
	struct fi_eq_attr eqa = { .size = 64, .wait_obj = FI_WAIT_UNSPEC };
	const char *step = "fi_fabric";
	int ret;

	ret = ofi__fabric_open(&t->fab, info);
	if (ret)
		return ret;
	step = "fi_eq_open";
	ret = fi_eq_open(t->fab->fab, &eqa, &t->eq, NULL);
	if (ret)
		goto err;
	step = "fi_passive_ep";
	ret = fi_passive_ep(t->fab->fab, info, &t->pep, NULL);
	if (ret)
		goto err;
	step = "fi_pep_bind";
	ret = fi_pep_bind(t->pep, &t->eq->fid, 0);
	if (ret)
		goto err;
	step = "fi_listen";
	ret = fi_listen(t->pep);
	if (ret)
		goto err;
	return 0;
err:
	if (ret == -FI_EADDRINUSE ||
	    (info->ep_attr->protocol == FI_PROTO_SOCK_TCP &&
	     ofi__port_busy(t->addr)))
		return kemari_err(
			-EADDRINUSE,
			"cannot listen on %s: address already in use (another "
			"secondary?): stop it or choose another --listen port",
			t->addr);
	return kemari_err(
		ofi__errno(ret),
		"cannot listen on %s with libfabric provider %s: %s: %s",
		t->addr, t->prov, step, ofi__strerror(ret));
}

static int ofi__listen(struct kemari_xport **out, const char *addr,
		       const struct kemari_xport_opts *opts)
{
	struct fi_info *list, *cand[8];
	char host[64], port[8];
	size_t n;
	int err;

	err = ofi__split_addr(addr, host, sizeof(host), port, sizeof(port));
	err = err
		      ?: ofi__candidates(&list, cand, KEMARI_ARRAY_SIZE(cand),
					 &n, opts ? opts->provider : NULL, host,
					 port, true);
	if (err)
		return err;
	/* The best provider that can listen here; its error if none can. */
	for (size_t i = 0; i < n; i++) {
		struct ofi_xport *t = ofi__alloc(addr, cand[i]);

		if (!t) {
			err = -ENOMEM;
			break;
		}
		t->listener = true;
		if (i > 0)
			kemari_err_clear();
		/* The passive endpoint may point into its info: keep it. */
		t->info = fi_dupinfo(cand[i]);
		err = t->info ? ofi__listen_one(t, t->info) : -ENOMEM;
		if (!err) {
			fi_freeinfo(list);
			kemari_info(
				"ofi: listening on %s with libfabric provider %s",
				addr, t->prov);
			*out = &t->x;
			return 0;
		}
		ofi__free(t);
		if (err == -EADDRINUSE)
			break;
	}
	fi_freeinfo(list);
	return err;
}

static void ofi__peer_name(char *out, size_t len, const struct fi_info *info)
{
	const struct sockaddr_in *sa = info->dest_addr;

	if (info->addr_format == FI_SOCKADDR_IN && sa &&
	    info->dest_addrlen >= sizeof(*sa))
		snprintf(out, len, "%s:%u", inet_ntoa(sa->sin_addr),
			 ntohs(sa->sin_port));
	else
		snprintf(out, len, "the primary");
}

static int ofi__accept(struct kemari_xport *lx, struct kemari_xport **conn,
		       int timeout_ms)
{
	struct ofi_xport *l = to_ofi(lx);
	uint64_t deadline = kemari_now_ns() + (uint64_t)timeout_ms * 1000000ULL;
	struct ofi_cm cm = { .magic = OFI_CM_MAGIC };

	for (;;) {
		struct {
			struct fi_eq_cm_entry e;
			uint8_t data[256];
		} ev;
		struct fi_eq_err_entry ee;
		struct ofi_xport *t;
		struct ofi_cm peer;
		char name[64];
		uint32_t type;
		int left = -1, err;
		ssize_t r;

		if (timeout_ms >= 0) {
			uint64_t now = kemari_now_ns();

			if (now >= deadline)
				return -ETIMEDOUT;
			left = (int)((deadline - now + 999999) / 1000000);
		}
		r = fi_eq_sread(l->eq, &type, &ev, sizeof(ev), left, 0);
		if (r == -FI_EAGAIN || r == -FI_EINTR)
			continue;
		if (r == -FI_EAVAIL) {
			memset(&ee, 0, sizeof(ee));
			fi_eq_readerr(l->eq, &ee, 0);
			kemari_debug("ofi: listener event error: %s",
				     fi_strerror(ee.err));
			continue;
		}
		if (r < 0)
			return kemari_err(ofi__errno(r), "accept on %s: %s",
					  l->addr, ofi__strerror(r));
		if (type != FI_CONNREQ)
			continue;
		ofi__peer_name(name, sizeof(name), ev.e.info);
		if ((size_t)r < sizeof(ev.e) ||
		    ofi_ctrl__cm(ev.data, (size_t)r - sizeof(ev.e), &peer)) {
			kemari_warn("ofi: refusing a connection from %s: not a "
				    "Kemari peer",
				    name);
			fi_reject(l->pep, ev.e.info->handle, NULL, 0);
			fi_freeinfo(ev.e.info);
			continue;
		}
		t = ofi__alloc(name, ev.e.info);
		if (!t) {
			fi_reject(l->pep, ev.e.info->handle, NULL, 0);
			fi_freeinfo(ev.e.info);
			return -ENOMEM;
		}
		t->fab = ofi__fabric_get(l->fab);
		err = ofi__conn_setup(t, ev.e.info);
		if (err) {
			fi_reject(l->pep, ev.e.info->handle, NULL, 0);
			ofi__free(t);
			/* Out of memory (or memlock) will not get better. */
			if (err == -ENOMEM)
				return err;
			/*
			 * A request the primary gave up on meanwhile (verbs:
			 * fi_enable fails on its dead CM id): not fatal to
			 * the listener, wait for the next.
			 */
			kemari_warn("ofi: connection request from %s could not "
				    "be set up: %s",
				    name, kemari_last_error(err));
			kemari_err_clear();
			continue;
		}
		cm.window = t->window;
		r = fi_accept(t->ep, &cm, sizeof(cm));
		err = r ? kemari_err(ofi__errno(r), "fi_accept: %s",
				     ofi__strerror(r))
			: ofi__wait_connected(t, OFI_ACCEPT_MS, false);
		if (err) {
			/* The primary went away half-way: wait for the next. */
			kemari_warn("ofi: connection from %s failed: %s", name,
				    kemari_last_error(err));
			kemari_err_clear();
			ofi__free(t);
			continue;
		}
		t->credits = peer.window;
		*conn = &t->x;
		return 0;
	}
}

static int ofi__connect(struct kemari_xport **out, const char *addr,
			const struct kemari_xport_opts *opts)
{
	uint64_t deadline = kemari_now_ns() +
			    (uint64_t)opts->connect_timeout_ms * 1000000ULL;
	struct ofi_cm cm = { .magic = OFI_CM_MAGIC };
	struct fi_info *list, *cand[1];
	char host[64], port[8];
	size_t n;
	int err;

	err = ofi__split_addr(addr, host, sizeof(host), port, sizeof(port));
	err = err
		      ?: ofi__candidates(&list, cand, 1, &n, opts->provider,
					 host, port, false);
	if (err)
		return err;
	/*
	 * Only the best provider, the one the secondary listens with: a
	 * fallback would knock at the same TCP port in another provider's
	 * connection protocol. The secondary may still be starting: retry
	 * until the deadline.
	 */
	for (;;) {
		struct ofi_xport *t = ofi__alloc(addr, cand[0]);
		uint64_t now = kemari_now_ns();
		int left = 1;
		ssize_t r;

		if (!t) {
			err = -ENOMEM;
			break;
		}
		if (now < deadline)
			left = (int)((deadline - now) / 1000000 + 1);
		t->info = fi_dupinfo(cand[0]);
		err = t->info ? ofi__fabric_open(&t->fab, t->info) : -ENOMEM;
		err = err ?: ofi__conn_setup(t, t->info);
		if (err) {
			/* Local resources: retrying will not help. */
			ofi__free(t);
			break;
		}
		kemari_err_clear();
		cm.window = t->window;
		r = fi_connect(t->ep, t->info->dest_addr, &cm, sizeof(cm));
		err = r ? kemari_err(ofi__errno(r), "fi_connect: %s",
				     ofi__strerror(r))
			: ofi__wait_connected(t, left, true);
		if (!err) {
			kemari_debug("ofi: connected to %s with libfabric "
				     "provider %s",
				     addr, t->prov);
			*out = &t->x;
			break;
		}
		ofi__free(t);
		/* Refused: not listening yet. Anything else is worth a line. */
		if (err != -ECONNREFUSED && err != -ETIMEDOUT && err != -EPROTO)
			kemari_warn("ofi: connecting to %s: %s; retrying", addr,
				    kemari_last_error(err));
		/* EPROTO: something answered, but not Kemari. */
		if (err == -EPROTO || kemari_now_ns() >= deadline) {
			char why[256];

			snprintf(why, sizeof(why), "%s",
				 kemari_last_error(err));
			err = kemari_err_override(
				err,
				"cannot reach the secondary at %s: %s (libfabric "
				"provider %s) (start it first, or check --peer)",
				addr, why, cand[0]->fabric_attr->prov_name);
			break;
		}
		usleep(50000);
	}
	fi_freeinfo(list);
	return err;
}

static int ofi__reg_src(struct kemari_xport *x, void *base, uint64_t len)
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
	if (t->bl_head || t->credits == 0) {
		uint64_t end =
			kemari_now_ns() + OFI_CREDIT_WAIT_MS * 1000000ULL;

		while (!err && (t->bl_head || t->credits == 0) &&
		       kemari_now_ns() < end) {
			sched_yield();
			err = ofi__progress(t);
		}
		if (err)
			return err;
	}
	if (t->bl_head || t->credits == 0)
		return ofi__backlog(t, type, epoch, payload, len);
	err = ofi__send_frame(t, type, epoch, payload, len);
	if (!err)
		t->credits--;
	return err;
}

static int ofi__reg_dst(struct kemari_xport *x, void *base, uint64_t len)
{
	struct ofi_xport *t = to_ofi(x);
	struct ofi_xp xp = { .op = OFI_XP_REGION };
	int err = ofi__check(t);

	if (err)
		return err;
	if (t->dst)
		return kemari_err(-EBUSY, "internal: reg_dst twice");
	err = ofi__reg(t, base, len, FI_REMOTE_WRITE, OFI_KEY_DST,
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

static ssize_t ofi__post_write(struct ofi_xport *t, const struct ofi_seg *seg,
			       unsigned int k, uint64_t bytes, unsigned int f)
{
	struct iovec iov[OFI_MAX_SEGS];
	void *desc[OFI_MAX_SEGS];
	struct fi_rma_iov rma[OFI_MAX_SEGS];
	struct fi_msg_rma msg = {
		.msg_iov = iov,
		.desc = desc,
		.iov_count = k,
		.rma_iov = rma,
		.rma_iov_count = k,
		.context = &ofi__txctx(t, -1, bytes)->ctx,
	};
	uint64_t flags = t->write_flags;

	for (unsigned int j = 0; j < k; j++) {
		iov[j].iov_base = t->src + seg[j].off;
		iov[j].iov_len = seg[j].len;
		desc[j] = t->srcdesc;
		rma[j].addr = t->peer_base + seg[j].off;
		rma[j].len = seg[j].len;
		rma[j].key = t->peer_key;
	}
	if (f & OFI_OP_MORE)
		flags |= FI_MORE;
	if (f & OFI_OP_SIGNAL)
		flags |= FI_COMPLETION;
	return fi_writemsg(t->ep, &msg, flags);
}

static int ofi__push(struct kemari_xport *x, const struct kemari_run *runs,
		     size_t n)
{
	struct ofi_xport *t = to_ofi(x);
	struct ofi_seg a[OFI_MAX_SEGS], b[OFI_MAX_SEGS], *cur = a, *nxt = b;
	unsigned int every = KEMARI_MAX(1u, t->depth / 4), in_batch = 0;
	unsigned int ncur;
	struct ofi_split s;
	size_t bad;
	int err = ofi__check(t);

	if (err)
		return err;
	if (!t->src)
		return kemari_err(-EINVAL, "internal: push before reg_src");
	err = ofi__progress(t);
	if (err)
		return err;
	if (!t->peer_known)
		return kemari_err(-ENOTCONN,
				  "internal: push to %s before it announced "
				  "its receive region (reg_dst)",
				  t->addr);
	/* Every run is checked against both regions before any is posted. */
	bad = ofi_runs__first_outside(runs, n, t->src_len);
	if (bad < n)
		return kemari_err(
			-ERANGE,
			"internal: run of %u pages at page %llu is outside the "
			"%llu-page guest RAM; nothing was pushed",
			runs[bad].npages, (unsigned long long)runs[bad].pfn,
			(unsigned long long)(t->src_len / KEMARI_PAGE_SIZE));
	bad = ofi_runs__first_outside(runs, n, t->peer_len);
	if (bad < n)
		return kemari_err(
			-ERANGE,
			"run of %u pages at page %llu is past the end of the "
			"%llu-page receive region %s registered; nothing was "
			"pushed",
			runs[bad].npages, (unsigned long long)runs[bad].pfn,
			(unsigned long long)(t->peer_len / KEMARI_PAGE_SIZE),
			t->addr);
	ofi_split__init(&s, runs, n);
	ncur = ofi_split__next(&s, &t->lim, cur);
	while (ncur) {
		uint64_t t0 = kemari_now_ns(),
			 bytes = ofi_segs__bytes(cur, ncur);
		unsigned int nnxt;
		struct ofi_seg *tmp;
		bool last;
		ssize_t r;

		/* The previous write ended its batch if this wait is needed. */
		if (!ofi__tx_ready(t, OFI_WAIT_WRITE, bytes)) {
			err = ofi__wait_tx(t, OFI_WAIT_WRITE, bytes);
			if (err)
				return err;
		}
		nnxt = ofi_split__next(&s, &t->lim, nxt);
		last = ofi_batch__ends(nnxt ? ofi_segs__bytes(nxt, nnxt) : 0,
				       ofi__room(t) - 1, in_batch,
				       t->tx_bytes - t->tx_bytes_done + bytes,
				       OFI_INFLIGHT_MAX);
		for (;;) {
			r = ofi__post_write(t, cur, ncur, bytes,
					    ofi_batch__flags(last, t->tx_posted,
							     every,
							     t->selective));
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
		ofi__posted(t, bytes);
		in_batch = last ? 0 : in_batch + 1;
		tmp = cur;
		cur = nxt;
		nxt = tmp;
		ncur = nnxt;
	}
	return 0;
}

static int ofi__flush(struct kemari_xport *x)
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
	return ofi__wait_tx(t, OFI_WAIT_ALL, 0);
}

static int ofi__send(struct kemari_xport *x, uint16_t type, uint64_t epoch,
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

/* The peer is gone: pick up data messages that arrived before the end. */
static void ofi__collect_last(struct ofi_xport *t)
{
	struct fi_cq_data_entry c;
	struct kemari_wire_hdr h;

	while (fi_cq_read(t->rxcq, &c, 1) == 1) {
		struct ofi_rxbuf *b = c.op_context;

		if (c.len < sizeof(h))
			continue;
		memcpy(&h, b->data, sizeof(h));
		if (h.magic != KEMARI_WIRE_MAGIC ||
		    h.type == KEMARI_MSG_XPORT || h.len > t->max_msg ||
		    sizeof(h) + h.len != c.len ||
		    kemari_wire__check_crc(&h, b->data + sizeof(h)))
			continue;
		t->ready[(t->ready_head + t->ready_n++) % t->nrx] =
			(uint32_t)(b - t->rx);
	}
}

static int ofi__recv(struct kemari_xport *x, struct kemari_msg *m,
		     int timeout_ms)
{
	struct ofi_xport *t = to_ofi(x);
	uint64_t now = kemari_now_ns(), deadline, spin;

	deadline = now + (uint64_t)KEMARI_MAX(timeout_ms, 0) * 1000000ULL;
	/* Right after a send we are in an exchange (a pause): spin longer. */
	spin = now +
	       (now - t->last_tx_ns < OFI_HOT_NS ? t->hot_spin_ns : t->spin_ns);
	if (t->held >= 0 && !t->dead) {
		uint32_t i = (uint32_t)t->held;

		t->held = -1;
		ofi__consumed(t, i);
	}
	for (;;) {
		struct fi_cq_data_entry c;
		struct kemari_wire_hdr h;
		ssize_t r;
		int ms;

		if (!t->dead)
			ofi__progress(t);
		if (t->dead && !t->ready_n)
			ofi__collect_last(t);
		if (t->ready_n) {
			uint32_t i = t->ready[t->ready_head];

			t->ready_head = (t->ready_head + 1) % t->nrx;
			t->ready_n--;
			memcpy(&h, t->rx[i].data, sizeof(h));
			m->type = h.type;
			m->epoch = h.epoch;
			m->len = h.len;
			m->payload = t->rx[i].data + sizeof(h);
			t->held = (int)i;
			return 0;
		}
		if (t->dead)
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
		r = fi_cq_sread(t->rxcq, &c, 1, NULL, ms);
		if (r == 1)
			ofi__rx_one(t, &c);
		else if (r == -FI_EAVAIL)
			ofi__cq_error(t, t->rxcq, false);
		else if (r < 0 && r != -FI_EAGAIN && r != -FI_EINTR)
			ofi__lost(t, ofi__strerror(r));
	}
}

static uint32_t ofi__max_msg(struct kemari_xport *x)
{
	return to_ofi(x)->max_msg;
}

static void ofi__close(struct kemari_xport *x)
{
	struct ofi_xport *t = to_ofi(x);
	uint64_t until = kemari_now_ns() + OFI_CLOSE_MS * 1000000ULL;

	/*
	 * A message sent just before close (REFUSE, BYE) must still arrive,
	 * as it would from a closed socket: closing the endpoint drops what
	 * has not completed. Give it a moment; pushes are not waited for on
	 * their own, but finish on the way.
	 */
	while (!t->listener && t->ep && !t->dead &&
	       (t->bl_head || t->tx_done != t->tx_posted) &&
	       kemari_now_ns() < until) {
		struct fi_cq_data_entry c;

		if (ofi__progress(t))
			break;
		if (fi_cq_sread(t->txcq, &c, 1, NULL, 10) == 1)
			ofi__tx_complete(t, c.op_context);
	}
	ofi__free(t);
}

const struct kemari_xport_ops kemari_xport_ofi = {
	.name = "ofi",
	/* RMA writes land in the receive buffers without the receiver. */
	.caps = KEMARI_XPORT_CAP_ONESIDED,
	.listen = ofi__listen,
	.accept = ofi__accept,
	.connect = ofi__connect,
	.reg_src = ofi__reg_src,
	.reg_dst = ofi__reg_dst,
	.push = ofi__push,
	.flush = ofi__flush,
	.send = ofi__send,
	.recv = ofi__recv,
	.max_msg = ofi__max_msg,
	.close = ofi__close,
};
