/* SPDX-License-Identifier: MIT */
/*
 * Transport ops table: how the engine moves page runs and control messages
 * between primary and secondary. Implemented by transports/tcp, /rdma and
 * /ofi; chosen at run time by name (--transport=). Modelled on Redis's
 * connection.h: each operation is one sentence of contract.
 *
 * A connection is used by one thread at a time. Every operation returns 0 (or
 * a count) or a negative errno: -ETIMEDOUT when a timeout expired,
 * -ECONNRESET when the peer is gone (failure detection relies on it),
 * -EBADMSG when the peer sent something malformed (nothing was written to the
 * destination region beyond the bounds registered with reg_dst).
 */
#ifndef KEMARI_XPORT_H
#define KEMARI_XPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kemari/dirty.h"

struct kemari_xport_ops;

/* Generic handle; backends embed it and recover themselves with container_of. */
struct kemari_xport {
	const struct kemari_xport_ops *ops;
};

struct kemari_xport_opts {
	const char *provider; /* ofi: provider name, NULL = best */
	unsigned int connect_timeout_ms;
	/*
	 * Encrypt the connection (transports with KEMARI_XPORT_CAP_TLS):
	 * TLS 1.3 keyed by this external pre-shared key, both sides the
	 * same; NULL: in the clear.
	 */
	const uint8_t *tls_psk;
	unsigned int tls_psk_len;
};

/* A received control message; payload stays valid until the next recv. */
struct kemari_msg {
	uint16_t type; /* enum kemari_msg_type (wire.h) */
	uint64_t epoch;
	uint32_t len;
	const void *payload;
};

/*
 * Capabilities. ONESIDED: pushes land in the receive buffers without the
 * receiver's involvement (RDMA), so a sender must not push into buffers the
 * receiver is still reading; stream transports (tcp) queue later pushes
 * behind earlier messages and need no such care.
 */
#define KEMARI_XPORT_CAP_ONESIDED 0x1
/* Can encrypt its connections (kemari_xport_opts.tls_psk). */
#define KEMARI_XPORT_CAP_TLS 0x2

/*
 * Blocking. Every wait is bounded, and each operation says by what: a
 * timeout the caller gives (accept and recv: -ETIMEDOUT when it expires;
 * connect: the reason it could not connect), or how long the network, the
 * peer's transport or (for a credit) the peer's engine may go without
 * progress, after which the connection fails with -ECONNRESET rather than
 * hang.
 */
struct kemari_xport_ops {
	const char *name;
	unsigned int caps; /* KEMARI_XPORT_CAP_* */
	/*
	 * Bind and listen on addr ("HOST:PORT"); returns a listener. Does not
	 * wait for anything remote.
	 */
	int (*listen)(struct kemari_xport **out, const char *addr,
		      const struct kemari_xport_opts *opts);
	/*
	 * Wait up to timeout_ms (-1: forever) for one peer on a listener;
	 * -ETIMEDOUT when none came. A request that came in time is then set
	 * up, which may take up to 10 s more (TLS, or the RDMA handshake).
	 */
	int (*accept)(struct kemari_xport *listener, struct kemari_xport **conn,
		      int timeout_ms);
	/*
	 * Connect to a listening peer, retrying until opts->connect_timeout_ms
	 * has passed (the attempt under way then may take a few seconds
	 * more to fail).
	 */
	int (*connect)(struct kemari_xport **out, const char *addr,
		       const struct kemari_xport_opts *opts);
	/*
	 * Register the region pushes read from (primary's guest RAM), once.
	 * Pinning takes time in proportion to len; one-sided transports then
	 * send a transport message, which may wait as send does.
	 */
	int (*reg_src)(struct kemari_xport *x, void *base, uint64_t len);
	/*
	 * Register the receive buffers pushes land in (secondary), once,
	 * before the peer pushes; for one-sided transports this also tells
	 * the peer where to write (a message that may wait as send does).
	 */
	int (*reg_dst)(struct kemari_xport *x, void *base, uint64_t len);
	/*
	 * Push page runs: the bytes of each run leave the source region at
	 * pfn * 4096 and land at dst_off + pfn * 4096 of the peer's receive
	 * buffers. dst_off: 0 on a stream transport (tcp refuses anything
	 * else); a one-sided receiver keeps two banks of receive buffers
	 * (core/secondary.c) and the sender names the bank with it. May return before they arrived; the source pages must not
	 * change until the next flush returns. Blocks while the transport's
	 * window is full (tcp: the socket buffer; rdma, ofi: the send queue
	 * or 8 MiB of writes in flight) until the network drains it: at most
	 * 5 s (tcp), 10 s (ofi) or 30 s (rdma) without progress.
	 */
	int (*push)(struct kemari_xport *x, const struct kemari_run *runs,
		    size_t n, uint64_t dst_off);
	/*
	 * Order point: every push issued before flush is visible at the peer
	 * before any control message sent after it, and the source pages may
	 * change again once flush returns. Waits for the local completion of
	 * every push (tcp: none; ofi: 10 s, rdma: 30 s without progress).
	 */
	int (*flush)(struct kemari_xport *x);
	/*
	 * Send one control message (len <= max_msg); returns once it is
	 * queued, not when it arrived. Waits only for room to queue it:
	 * tcp, for the socket buffer (5 s without progress); rdma, for a
	 * receive the peer posted (a credit: the peer's transport reposts it
	 * as the peer's engine reads, up to 30 s, then -ECONNRESET); ofi,
	 * for a credit up to 2 s, then it queues the message in a backlog
	 * that later calls drain (-ENOBUFS past 64 MiB), and for a send
	 * buffer up to 10 s.
	 */
	int (*send)(struct kemari_xport *x, uint16_t type, uint64_t epoch,
		    const void *payload, uint32_t len);
	/*
	 * Wait up to timeout_ms (0: poll, -1: forever) for the next control
	 * message; pushed page data is placed into the receive buffers on
	 * the way, never returned. The payload stays valid until the next
	 * recv on this connection.
	 */
	int (*recv)(struct kemari_xport *x, struct kemari_msg *m,
		    int timeout_ms);
	/* Largest control payload this connection carries; never blocks. */
	uint32_t (*max_msg)(struct kemari_xport *x);
	/*
	 * Tear down; pending pushes are dropped. Messages sent just before
	 * are given up to 1 s to leave (ofi); never longer.
	 */
	void (*close)(struct kemari_xport *x);
};

/* Registered transports; NULL-terminated (backends/backends.c). */
extern const struct kemari_xport_ops *const kemari_xport_backends[];
const struct kemari_xport_ops *kemari_xport_find(const char *name);

/*
 * An operation a backend lacks points at the stub of its signature
 * (backends/backends.c), never NULL or a cast: each fails with -ENOSYS
 * (max_msg: 0; close: frees nothing).
 */
int kemari_xport__enosys_listen(struct kemari_xport **out, const char *addr,
				const struct kemari_xport_opts *opts);
int kemari_xport__enosys_accept(struct kemari_xport *listener,
				struct kemari_xport **conn, int timeout_ms);
int kemari_xport__enosys_reg(struct kemari_xport *x, void *base, uint64_t len);
int kemari_xport__enosys_push(struct kemari_xport *x,
			      const struct kemari_run *runs, size_t n,
			      uint64_t dst_off);
int kemari_xport__enosys_flush(struct kemari_xport *x);
int kemari_xport__enosys_send(struct kemari_xport *x, uint16_t type,
			      uint64_t epoch, const void *payload,
			      uint32_t len);
int kemari_xport__enosys_recv(struct kemari_xport *x, struct kemari_msg *m,
			      int timeout_ms);
uint32_t kemari_xport__enosys_max_msg(struct kemari_xport *x);
void kemari_xport__enosys_close(struct kemari_xport *x);

/*
 * How the engine calls a transport: one small wrapper per operation, so
 * that the contract above is read where it is used (Redis's connWrite and
 * friends). Buffers stay the caller's; each blocks as its operation says.
 */

/* Listen on addr with transport ops; *out is the listener. */
static inline int kemari_xport__listen(const struct kemari_xport_ops *ops,
				       struct kemari_xport **out,
				       const char *addr,
				       const struct kemari_xport_opts *opts)
{
	return ops->listen(out, addr, opts);
}

/* One peer within timeout_ms (-1: forever), or -ETIMEDOUT. */
static inline int kemari_xport__accept(struct kemari_xport *listener,
				       struct kemari_xport **conn,
				       int timeout_ms)
{
	return listener->ops->accept(listener, conn, timeout_ms);
}

/* Connect with transport ops, retrying until the connect timeout. */
static inline int kemari_xport__connect(const struct kemari_xport_ops *ops,
					struct kemari_xport **out,
					const char *addr,
					const struct kemari_xport_opts *opts)
{
	return ops->connect(out, addr, opts);
}

/* Register guest RAM as the source of pushes, once. */
static inline int kemari_xport__reg_src(struct kemari_xport *x, void *base,
					uint64_t len)
{
	return x->ops->reg_src(x, base, len);
}

/* Register the receive buffers pushes land in, once, and advertise them. */
static inline int kemari_xport__reg_dst(struct kemari_xport *x, void *base,
					uint64_t len)
{
	return x->ops->reg_dst(x, base, len);
}

/*
 * Queue runs for the peer, landing dst_off bytes into its receive buffers
 * (a bank; 0 on stream transports); the pages stay unchanged until the next
 * flush.
 */
static inline int kemari_xport__push(struct kemari_xport *x,
				     const struct kemari_run *runs, size_t n,
				     uint64_t dst_off)
{
	return x->ops->push(x, runs, n, dst_off);
}

/* Order point: pushes before it land before messages after it. */
static inline int kemari_xport__flush(struct kemari_xport *x)
{
	return x->ops->flush(x);
}

/* Queue one control message; payload is copied before this returns. */
static inline int kemari_xport__send(struct kemari_xport *x, uint16_t type,
				     uint64_t epoch, const void *payload,
				     uint32_t len)
{
	return x->ops->send(x, type, epoch, payload, len);
}

/* The next control message within timeout_ms; valid until the next recv. */
static inline int kemari_xport__recv(struct kemari_xport *x,
				     struct kemari_msg *m, int timeout_ms)
{
	return x->ops->recv(x, m, timeout_ms);
}

/* Largest control payload of this connection. */
static inline uint32_t kemari_xport__max_msg(struct kemari_xport *x)
{
	return x->ops->max_msg(x);
}

/* Whether this connection's transport has a KEMARI_XPORT_CAP_* bit. */
static inline bool kemari_xport__has(const struct kemari_xport *x,
				     unsigned int cap)
{
	return x->ops->caps & cap;
}

/* Tear the connection (or listener) down; x is gone after this. */
static inline void kemari_xport__close(struct kemari_xport *x)
{
	x->ops->close(x);
}

#endif
