/* SPDX-License-Identifier: MIT */
/*
 * The libfabric transport's private header: the connection, shared by its
 * provider choice (ofi_prov.c), connection management (ofi_cm.c: FI_EP_MSG
 * and what both kinds share; ofi_rdm.c: FI_EP_RDM's bootstrap socket and
 * address vector) and data path (ofi_data.c). The fabric-neutral
 * machinery (control queue, credits, sticky failure, the peer's region,
 * the write planner) is transports/common's.
 */
#ifndef KEMARI_OFI_H
#define KEMARI_OFI_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <rdma/fabric.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_eq.h>

#include "../common/credit.h"
#include "../common/ctrlq.h"
#include "../common/fail.h"
#include "../common/plan.h"
#include "../common/region.h"
#include "kemari/kemari.h"
#include "kemari/xport.h"

#define OFI_API FI_VERSION(1, 10)
#define OFI_TX_SLOTS 16	   /* registered send buffers */
#define OFI_STALL_MS 10000 /* no transmit completion this long: peer gone */
#define OFI_SLICE_MS 100   /* blocking waits look at the EQ this often */

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
	int slot; /* send buffer to free on completion, -1 for writes */
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

/* How a domain's mr_mode shapes registrations and remote addressing. */
struct ofi_mr_use {
	bool local;	/* FI_MR_LOCAL: register local buffers, pass desc */
	bool virt_addr; /* FI_MR_VIRT_ADDR: peer addresses by our VA */
	bool prov_key;	/* FI_MR_PROV_KEY: the provider picks the key */
	bool endpoint;	/* FI_MR_ENDPOINT: bind each MR to the ep, enable */
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

	/*
	 * FI_EP_RDM (ofi_prov__rdm): no connection, an address vector holds
	 * the peer, and the bootstrap TCP socket the hellos travelled over
	 * stays open as the connection's liveness (a listener's: the
	 * listening socket). FI_EP_MSG: peer is FI_ADDR_UNSPEC, boot_fd -1.
	 */
	bool rdm;
	struct fid_av *av;
	fi_addr_t peer;
	int boot_fd;
	uint64_t boot_check_ns; /* when the socket was last looked at */
	bool collected;		/* the last messages were waited for */
	bool linked;		/* the peer's OFI_XP_LINK arrived */

	struct ofi_mr_use mru;
	struct xp_limits lim;
	bool selective; /* transmit completions in order: signal some */
	uint64_t write_flags;
	uint32_t max_msg;
	size_t frame;		       /* header + max_msg */
	uint64_t spin_ns, hot_spin_ns; /* 0: block at once (software) */
	bool cq_poll; /* CQs without a trusted wait: ofi__cq_sread polls */

	/* transmit side */
	uint32_t depth;
	struct xp_sq sq;
	struct ofi_txctx *txc;
	uint64_t wait_mark; /* sq.done when a wait for a completion began */
	uint64_t tx_progress_ns;
	uint8_t *txbuf;
	struct fid_mr *txmr;
	void *txdesc;
	int txfree[OFI_TX_SLOTS];
	int ntxfree;
	struct xp_credit cr;
	struct ofi_pending *bl_head, *bl_tail;
	size_t bl_bytes;
	uint64_t last_tx_ns;

	/* receive side */
	uint32_t window, nrx;
	struct ofi_rxbuf *rx;
	uint8_t *rxbuf;
	struct fid_mr *rxmr;
	void *rxdesc;
	struct xp_ctrlq q; /* received, undelivered buffers; one held */
	/*
	 * RDM: buffers in posting order, completed lengths + 1 (0: not yet;
	 * OFI_RX_STRANGER: from a sender other than the peer, dropped).
	 */
	uint32_t *rxorder, *rxlen;
	uint32_t rxhead, rxtail;
	uint64_t strangers; /* messages dropped for their sender */

	/* regions */
	uint8_t *src;
	uint64_t src_len;
	struct fid_mr *srcmr;
	void *srcdesc;
	uint8_t *dst;
	uint64_t dst_len;
	struct fid_mr *dstmr;
	uint64_t pinned; /* bytes registered on this connection */
	struct xp_region pdst;

	/* a broken connection stays broken, with its first reason */
	struct xp_fail fail;
};

static inline struct ofi_xport *to_ofi(struct kemari_xport *x)
{
	return kemari_container_of(x, struct ofi_xport, x);
}

/* ofi_prov.c: provider choice, and the pure rules it follows */
struct ofi_mr_use ofi_mr__use(uint64_t mr_mode);
/*
 * The base the writer adds byte offsets to: our virtual address under
 * FI_MR_VIRT_ADDR, 0 otherwise (offsets from the start of the MR). The
 * receiver advertises it, so the writer never needs the receiver's mode.
 */
uint64_t ofi_mr__base(const struct ofi_mr_use *u, const void *va);
/* The key to request at registration (ignored under FI_MR_PROV_KEY). */
uint64_t ofi_mr__requested_key(const struct ofi_mr_use *u, uint64_t ours);
/*
 * Default provider order: real RDMA first, then the kernel-socket ones.
 * Negative: cannot serve a connected FI_EP_MSG endpoint with RMA between
 * hosts (shm is host-local, udp has no RMA, "x;ofi_rxm" and efa are RDM:
 * those only when named, ofi_prov__rdm),
 * or not at this address: rdma_cm maps a loopback address to the first
 * RDMA device, so verbs listens and resolves there, but its fi_connect
 * fails (ENODEV).
 */
int ofi_prov__rank(const char *name, bool loopback);
/*
 * Whether a provider is used through FI_EP_RDM endpoints: shm, efa and
 * every layered name ("tcp;ofi_rxm", "verbs;ofi_rxm"); the others, and
 * the default choice (NULL), through FI_EP_MSG.
 */
bool ofi_prov__rdm(const char *name);
/* 127.0.0.0/8, host byte order. */
bool ofi_addr__loopback(uint32_t ip);
const char *ofi__strerror(ssize_t ret);
int ofi__errno(ssize_t ret);
struct fi_info *ofi__hints(const char *prov, bool rdm);
int ofi__candidates(struct fi_info **list, struct fi_info **cand, size_t max,
		    size_t *n, const char *prov, const char *host,
		    const char *port, bool source);
int ofi__split_addr(const char *addr, char *host, size_t hlen, char *port,
		    size_t plen);

/* ofi_cm.c */
int ofi__fabric_open(struct ofi_fabric **out, struct fi_info *info);
struct ofi_xport *ofi__alloc(const char *addr, const struct fi_info *i);
void ofi__free(struct ofi_xport *t);
int ofi__conn_setup(struct ofi_xport *t, struct fi_info *info);
int ofi__reg(struct ofi_xport *t, void *base, uint64_t len, uint64_t access,
	     uint64_t key, const char *what, struct fid_mr **mr);
void ofi__dereg(struct fid_mr **mr);

/* ofi_rdm.c: FI_EP_RDM's listen, accept and connect, and its liveness */
int ofi_rdm__listen(struct kemari_xport **out, const char *addr,
		    const struct kemari_xport_opts *opts);
int ofi_rdm__accept(struct ofi_xport *l, struct kemari_xport **conn,
		    int timeout_ms);
int ofi_rdm__connect(struct kemari_xport **out, const char *addr,
		     const struct kemari_xport_opts *opts);
/*
 * The peer is still there: its bootstrap socket is open (looked at once
 * a millisecond at most); else the connection is lost, -ECONNRESET.
 */
int ofi_rdm__alive(struct ofi_xport *t);
/*
 * Whether the peer's bootstrap socket ends (end of file or an error)
 * within ms: the peer process is gone. A peer killed by SIGKILL loses
 * its memory before the kernel closes its sockets, so a completion error
 * (shm: the copy from a vanished process) can come first.
 */
bool ofi_rdm__peer_gone(struct ofi_xport *t, int ms);
/*
 * The key to ask for the receive region (where the provider lets us
 * pick): random, since an RDM endpoint takes writes from anyone who knows
 * its name and the key.
 */
uint64_t ofi_rdm__dst_key(const struct ofi_xport *t);
/*
 * Bytes a provider sends eagerly (0: no limit we know of). rxm moves
 * larger messages by rendezvous or in segments, which go on only while
 * the sender's application calls into it (manual progress): a control
 * message must arrive even when its sender makes no further call, so
 * they are kept below this.
 */
uint64_t ofi_rdm__eager(const char *prov);

/* ofi_data.c */
#define OFI_RX_STRANGER UINT32_MAX
int ofi__die(struct ofi_xport *t, int err, const char *fmt, ...)
	KEMARI_PRINTF(3, 4);
int ofi__lost(struct ofi_xport *t, const char *why);
int ofi__check(struct ofi_xport *t);
int ofi__post_rx(struct ofi_xport *t, uint32_t i);
/*
 * One completion within ms (fi_cq_sread, or polled: cq_poll); src, where
 * not NULL, gets its sender (RDM receive queues: FI_SOURCE).
 */
ssize_t ofi__cq_sread(struct ofi_xport *t, struct fid_cq *cq,
		      struct fi_cq_data_entry *c, fi_addr_t *src, int ms);
int ofi__progress(struct ofi_xport *t);
void ofi__tx_complete(struct ofi_xport *t, struct ofi_txctx *c);
int ofi__reg_src(struct kemari_xport *x, void *base, uint64_t len);
int ofi__reg_dst(struct kemari_xport *x, void *base, uint64_t len);
int ofi__push(struct kemari_xport *x, const struct kemari_run *runs, size_t n,
	      uint64_t dst_off);
int ofi__flush(struct kemari_xport *x);
int ofi__send(struct kemari_xport *x, uint16_t type, uint64_t epoch,
	      const void *payload, uint32_t len);
int ofi__recv(struct kemari_xport *x, struct kemari_msg *m, int timeout_ms);
uint32_t ofi__max_msg(struct kemari_xport *x);
/*
 * RDM: send OFI_XP_LINK and wait up to timeout_ms for the peer's, driving
 * progress meanwhile (what shm needs before it takes sends).
 */
int ofi__link(struct ofi_xport *t, int timeout_ms);

#endif
