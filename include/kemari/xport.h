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

struct kemari_xport_ops {
	const char *name;
	unsigned int caps; /* KEMARI_XPORT_CAP_* */
	/* Bind and listen on addr ("HOST:PORT"); returns a listener. */
	int (*listen)(struct kemari_xport **out, const char *addr,
		      const struct kemari_xport_opts *opts);
	/* Wait up to timeout_ms (-1: forever) for one peer on a listener. */
	int (*accept)(struct kemari_xport *listener, struct kemari_xport **conn,
		      int timeout_ms);
	/* Connect to a listening peer, retrying until the connect timeout. */
	int (*connect)(struct kemari_xport **out, const char *addr,
		       const struct kemari_xport_opts *opts);
	/* Register the region pushes read from (primary's guest RAM), once. */
	int (*reg_src)(struct kemari_xport *x, void *base, uint64_t len);
	/*
	 * Register the receive buffers pushes land in (secondary), once,
	 * before the peer pushes; for one-sided transports this also tells
	 * the peer where to write.
	 */
	int (*reg_dst)(struct kemari_xport *x, void *base, uint64_t len);
	/*
	 * Push page runs: the bytes of each run leave the source region at
	 * pfn * 4096 and land at the same offset of the peer's receive
	 * buffers. May return before they arrived; the source pages must not
	 * change until the next flush returns.
	 */
	int (*push)(struct kemari_xport *x, const struct kemari_run *runs,
		    size_t n);
	/*
	 * Order point: every push issued before flush is visible at the peer
	 * before any control message sent after it, and the source pages may
	 * change again once flush returns.
	 */
	int (*flush)(struct kemari_xport *x);
	/* Send one control message (len <= max_msg) and do not wait for it. */
	int (*send)(struct kemari_xport *x, uint16_t type, uint64_t epoch,
		    const void *payload, uint32_t len);
	/*
	 * Wait up to timeout_ms (0: poll, -1: forever) for the next control
	 * message; pushed page data is placed into the receive buffers on
	 * the way, never returned.
	 */
	int (*recv)(struct kemari_xport *x, struct kemari_msg *m,
		    int timeout_ms);
	/* Largest control payload this connection carries. */
	uint32_t (*max_msg)(struct kemari_xport *x);
	/* Tear down; pending pushes are dropped. */
	void (*close)(struct kemari_xport *x);
};

/* Registered transports; NULL-terminated (backends/backends.c). */
extern const struct kemari_xport_ops *const kemari_xport_backends[];
const struct kemari_xport_ops *kemari_xport_find(const char *name);

/* An operation a backend lacks points here. */
int kemari_xport__enosys(void);

#endif
