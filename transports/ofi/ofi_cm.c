// SPDX-License-Identifier: MIT
/*
 * libfabric transport: connected FI_EP_MSG endpoints with FI_MSG | FI_RMA,
 * set up through a passive endpoint and an event queue (fi_listen,
 * fi_connect, fi_accept); or, for the providers ofi_prov__rdm names (shm,
 * efa, "tcp;ofi_rxm", "verbs;ofi_rxm"), unconnected FI_EP_RDM endpoints
 * with an address vector, set up over a bootstrap TCP socket that stays
 * open as their liveness signal (ofi_rdm.c; the rest is shared). Page
 * runs are one-sided RMA writes from the registered source (guest RAM) to
 * the same offset of the receiver's registered region; control messages
 * are sends into pre-posted receive buffers under credit flow control.
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
 * Ordering (flush): the MSG providers this was run on (verbs, tcp,
 * sockets) and rxm promise FI_ORDER_SAW on both sides, i.e. a send is
 * placed at the target after the RMA writes posted before it, so flush
 * only waits for the writes' local completions (after which the source may
 * change), and the commit sent after flush cannot overtake them. A
 * provider without SAW (shm) gets its writes posted with
 * FI_DELIVERY_COMPLETE instead, so that the local completion flush waits
 * for already means "placed at the target". FI_FENCE
 * was not chosen: on verbs it only orders after RDMA reads and atomics.
 *
 * Flow control: each side posts window + 2 receive buffers and tells the
 * peer its window in the connection data; a data message costs a credit,
 * credits come back in batches (XPORT credit messages, which need none:
 * the two spare buffers absorb them, see OFI_CREDIT_RESERVE). A send without
 * credit waits up to OFI_CREDIT_WAIT_MS for one, so a burst is delivered
 * even if the sender makes no further call; after that it goes to a
 * backlog that any later call drains, so two sides that both stop reading
 * cannot deadlock.
 *
 * What is not libfabric's (the control queue with its held buffer, the
 * credit window, sticky failure, the peer's region, the write planner with
 * its in-flight limit) is transports/common's. This file is the
 * connection: fabric, endpoint, registration, setup and teardown;
 * ofi_prov.c chooses the provider, ofi_data.c is the data path.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
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

#include "kemari/testcfg.h"
#include "ctrl.h"
#include "kemari/kemari.h"
#include "kemari/wire.h"
#include "ofi.h"

#define OFI_MSG_MAX (64u * 1024)   /* control payload per message */
#define OFI_WINDOW 32		   /* receive credits we lend the peer */
#define OFI_TX_DEPTH_MAX 1024	   /* outstanding transmit operations */
#define OFI_WRITE_MAX (4ULL << 20) /* bytes per RMA write */
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
#define OFI_ACCEPT_MS 10000
#define OFI_CLOSE_MS 1000 /* close lets sent messages leave this long */
/*
 * Receive credits: the receiver returns credits in batches of half the
 * window, so at most two credit messages are ever unabsorbed at the sender
 * (each carries >= window / 2 of the window's total), which is why two
 * receive buffers beyond the window are reserved for them.
 */
#define OFI_CREDIT_RESERVE 2

extern const struct kemari_xport_ops kemari_xport_ofi;

/* --- fabric reference -------------------------------------------------- */

int ofi__fabric_open(struct ofi_fabric **out, struct fi_info *info)
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

/* --- memory registration ------------------------------------------------ */

int ofi__reg(struct ofi_xport *t, void *base, uint64_t len, uint64_t access,
	     uint64_t key, const char *what, struct fid_mr **mr)
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

void ofi__dereg(struct fid_mr **mr)
{
	if (*mr)
		fi_close(&(*mr)->fid);
	*mr = NULL;
}

/* --- connection setup --------------------------------------------------- */

void ofi__free(struct ofi_xport *t)
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
	if (t->av)
		fi_close(&t->av->fid);
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
	xp_sq__fini(&t->sq);
	xp_ctrlq__fini(&t->q);
	xp_region__fini(&t->pdst);
	/* RDM: the peer sees the end of the connection from here on. */
	if (t->boot_fd >= 0)
		close(t->boot_fd);
	free(t->txbuf);
	free(t->rx);
	free(t->rxorder);
	free(t->rxlen);
	free(t->rxbuf);
	free(t);
}

struct ofi_xport *ofi__alloc(const char *addr, const struct fi_info *i)
{
	struct ofi_xport *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->x.ops = &kemari_xport_ofi;
	t->rdm = i->ep_attr->type == FI_EP_RDM;
	t->peer = FI_ADDR_UNSPEC;
	t->boot_fd = -1;
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
	uint32_t spare;

	/* Test knob: behave as if the provider did not promise SAW. */
	if (kemari_testcfg__get()->ofi_no_saw)
		order &= ~FI_ORDER_SAW;
	t->mru = ofi_mr__use(i->domain_attr->mr_mode);
	t->lim =
		xp_limits__clip(i->ep_attr->max_msg_size, i->tx_attr->iov_limit,
				i->tx_attr->rma_iov_limit, OFI_WRITE_MAX);
	t->lim.inflight_max = XP_INFLIGHT_MAX;
	t->selective = i->tx_attr->comp_order & FI_ORDER_STRICT;
	t->write_flags = (order & FI_ORDER_SAW) ? 0 : FI_DELIVERY_COMPLETE;
	t->max_msg = (uint32_t)KEMARI_MIN((uint64_t)OFI_MSG_MAX,
					  i->ep_attr->max_msg_size - hdr);
	if (t->rdm && ofi_rdm__eager(t->prov) > hdr + 4096)
		t->max_msg = (uint32_t)KEMARI_MIN(
			(uint64_t)t->max_msg, ofi_rdm__eager(t->prov) - hdr);
	t->frame = hdr + t->max_msg;
	t->depth = (uint32_t)KEMARI_MIN((size_t)OFI_TX_DEPTH_MAX,
					i->tx_attr->size);
	/* shm 1.17: fi_cq_sread ignores its timeout when nothing comes. */
	t->cq_poll = !strcmp(t->prov, "shm");
	if (!strncmp(t->prov, "verbs", 5)) {
		t->spin_ns = OFI_SPIN_NS;
		t->hot_spin_ns = OFI_HOT_SPIN_NS;
	}
	/* RDM: one more receive for the peer's OFI_XP_LINK. */
	spare = OFI_CREDIT_RESERVE + (t->rdm ? 1 : 0);
	t->window = OFI_WINDOW;
	if (i->rx_attr->size && i->rx_attr->size < OFI_WINDOW + spare)
		t->window = (uint32_t)KEMARI_MAX((size_t)2,
						 i->rx_attr->size - spare);
	t->nrx = t->window + spare;
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
 * fi_accept (MSG), or for the peer's address (RDM: an address vector
 * instead of the event queue). Errors here are local (resources), never
 * the peer's absence.
 */
int ofi__conn_setup(struct ofi_xport *t, struct fi_info *info)
{
	struct fi_eq_attr eqa = { .size = 16, .wait_obj = FI_WAIT_UNSPEC };
	struct fi_cq_attr cqa = { .format = FI_CQ_FORMAT_DATA,
				  .wait_obj = FI_WAIT_UNSPEC };
	struct fi_av_attr ava = { .type = FI_AV_TABLE, .count = 2 };
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
	if (t->rdm) {
		step = "fi_av_open";
		ret = fi_av_open(t->dom, &ava, &t->av, NULL);
	} else {
		step = "fi_eq_open";
		ret = fi_eq_open(t->fab->fab, &eqa, &t->eq, NULL);
	}
	if (ret)
		goto err;
	step = "fi_cq_open";
	cqa.size = t->depth;
	if (t->cq_poll)
		cqa.wait_obj = FI_WAIT_NONE;
	ret = fi_cq_open(t->dom, &cqa, &t->txcq, NULL);
	if (ret && cqa.wait_obj != FI_WAIT_NONE) {
		/* No wait objects (efa): poll (ofi__cq_sread). */
		t->cq_poll = true;
		cqa.wait_obj = FI_WAIT_NONE;
		ret = fi_cq_open(t->dom, &cqa, &t->txcq, NULL);
	}
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
	ret = fi_ep_bind(t->ep, t->rdm ? &t->av->fid : &t->eq->fid, 0);
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
	if (t->rdm) {
		t->rxorder = calloc(t->nrx, sizeof(*t->rxorder));
		t->rxlen = calloc(t->nrx, sizeof(*t->rxlen));
		if (!t->rxorder || !t->rxlen)
			return -ENOMEM;
	}
	if (!t->txc || !t->txbuf || !t->rx || !t->rxbuf)
		return -ENOMEM;
	/*
	 * With selective completion (the provider completes in order,
	 * FI_ORDER_STRICT) a quarter of the queue at most goes unsignalled;
	 * otherwise every write asks and completions are counted one by one.
	 * Received messages wait in their buffers (no copies); credits go
	 * back in half windows.
	 */
	ret = xp_sq__init(&t->sq, t->depth, KEMARI_MAX(1u, t->depth / 4),
			  t->selective);
	ret = ret ?: xp_ctrlq__init(&t->q, t->nrx, 0, 0);
	if (ret)
		return ret;
	xp_credit__init(&t->cr, 0, KEMARI_MAX(1u, t->window / 2));
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
	xp_credit__granted(&t->cr, cm.window);
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

	if (opts && ofi_prov__rdm(opts->provider))
		return ofi_rdm__listen(out, addr, opts);
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

	if (l->rdm)
		return ofi_rdm__accept(l, conn, timeout_ms);
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
		xp_credit__granted(&t->cr, peer.window);
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

	if (ofi_prov__rdm(opts->provider))
		return ofi_rdm__connect(out, addr, opts);
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
		/*
		 * Reset: the listener is not this provider's (a secondary
		 * with an FI_EP_RDM --provider closes what is not its hello).
		 */
		if (err == -ECONNRESET) {
			err = kemari_err_override(
				-EPROTO,
				"cannot connect to the secondary at %s with "
				"libfabric provider %s: it closed the connection "
				"(a secondary with another --provider, e.g. an "
				"FI_EP_RDM one such as shm?): use the same "
				"--provider on both sides",
				addr, cand[0]->fabric_attr->prov_name);
			break;
		}
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
	/* RDM: the bootstrap socket closes after this, in ofi__free. */
	while (!t->listener && t->ep && !t->fail.dead &&
	       (t->bl_head || !xp_sq__idle(&t->sq)) &&
	       kemari_now_ns() < until) {
		struct fi_cq_data_entry c;

		if (ofi__progress(t))
			break;
		if (ofi__cq_sread(t, t->txcq, &c, NULL, 10) == 1)
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
