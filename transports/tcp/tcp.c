// SPDX-License-Identifier: MIT
/*
 * TCP transport. Page runs leave straight from guest RAM (writev of a frame
 * header, the run descriptors, and one iovec per run into RAM) and land
 * straight in the receive buffers (readv at their offsets): no staging copy
 * on either side. Every run is bounds-checked against the registered
 * receive region before a byte of it is read. TCP_NODELAY, since every
 * epoch ends with a small commit whose latency is the pause time.
 *
 * System calls are the cost of a small epoch here (1.4-1.6 us each on a
 * paravirtualized host, measured: more than the engine's own work of a
 * 16-page epoch), so both ends count them. The sender gathers the small
 * frames that precede a commit (run list, vCPU and device state, small
 * page runs) in a send stage and writes them with the commit in one
 * sendmsg; the receiver reads what the socket holds into a receive stage
 * (64 KiB at a time) and parses frames from it, reading large page data
 * straight into the receive buffers. An epoch of a few pages is then one
 * sendmsg on the primary and one poll and one recvmsg on the secondary.
 *
 * With a pre-shared key (--tls) the connection is TLS 1.3 through OpenSSL
 * (external PSK with (EC)DHE, so past epochs stay secret even if the key
 * leaks later; no certificates). The socket is then non-blocking and every
 * byte goes through SSL_read/SSL_write: small pieces are gathered into one
 * record, page runs are written from guest RAM as they are.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "kemari/kemari.h"
#include "kemari/wire.h"
#include "kemari/xport.h"

#define TCP_IOV_BATCH 512 /* runs per PAGES frame, below IOV_MAX */
#define TCP_STALL_MS 5000 /* a frame half-sent for this long: peer gone */
#define TCP_TX_STAGE 16384 /* small pieces gathered into one write/record */
#define TCP_RX_STAGE (64u * 1024) /* read at once; frames parsed from it */
#define TCP_RX_DIRECT 16384 /* this much or more: read straight into place */
#define TCP_TLS_HANDSHAKE_MS 10000

struct tcp_xport {
	struct kemari_xport x;
	int fd;
	bool listener;
	char addr[64];
	uint8_t *src;
	uint64_t src_len;
	uint8_t *dst;
	uint64_t dst_len;
	uint8_t *rbuf; /* control payloads and run descriptors */
	struct iovec *iov;
	/* TLS: the key (listeners hand it to what they accept) and state. */
	uint8_t psk[64];
	unsigned int psk_len;
	SSL_CTX *ctx;
	SSL *ssl;
	/* Send stage: bytes of frames sent with more, not yet written. */
	uint8_t *stage;
	size_t staged;
	/* Receive stage: bytes read, [rx_off, rx_end) not yet consumed. */
	uint8_t *rx;
	uint32_t rx_off, rx_end;
};

extern const struct kemari_xport_ops kemari_xport_tcp;

static struct tcp_xport *to_tcp(struct kemari_xport *x)
{
	return kemari_container_of(x, struct tcp_xport, x);
}

static void tcp__close(struct kemari_xport *x);
static int tcp__tls_start(struct tcp_xport *t, bool client, const uint8_t *psk,
			  unsigned int psk_len);

static int tcp__new(struct tcp_xport **out, int fd, const char *addr)
{
	struct tcp_xport *t = calloc(1, sizeof(*t));

	if (!t)
		return -ENOMEM;
	t->x.ops = &kemari_xport_tcp;
	t->fd = fd;
	snprintf(t->addr, sizeof(t->addr), "%s", addr);
	t->rbuf = malloc(KEMARI_MSG_MAX);
	/* A PAGES frame: the stage's slot, header, run list, one per run. */
	t->iov = calloc(TCP_IOV_BATCH + 3, sizeof(*t->iov));
	t->stage = malloc(TCP_TX_STAGE);
	t->rx = malloc(TCP_RX_STAGE);
	if (!t->rbuf || !t->iov || !t->stage || !t->rx) {
		free(t->rbuf);
		free(t->iov);
		free(t->stage);
		free(t->rx);
		free(t);
		return -ENOMEM;
	}
	*out = t;
	return 0;
}

static void tcp__tune(int fd)
{
	int one = 1, buf = 4 << 20;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
}

static int tcp__listen(struct kemari_xport **out, const char *addr,
		       const struct kemari_xport_opts *opts)
{
	struct sockaddr_in sa;
	struct tcp_xport *t;
	int fd, one = 1, err;

	(void)opts;
	err = kemari_parse_sockaddr(addr, &sa);
	if (err)
		return err;
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return kemari_err(-errno, "socket: %s", strerror(errno));
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(fd, 4) < 0) {
		err = -errno;
		close(fd);
		if (err == -EADDRINUSE)
			return kemari_err(
				err,
				"cannot listen on %s: address already in use (another secondary?): stop it or choose another --listen port",
				addr);
		return kemari_err(err, "cannot listen on %s: %s", addr,
				  strerror(-err));
	}
	err = tcp__new(&t, fd, addr);
	if (err) {
		close(fd);
		return err;
	}
	t->listener = true;
	if (opts && opts->tls_psk) {
		if (opts->tls_psk_len == 0 || opts->tls_psk_len > sizeof(t->psk)) {
			tcp__close(&t->x);
			return kemari_err(-EINVAL, "internal: %u-byte TLS key",
					  opts->tls_psk_len);
		}
		memcpy(t->psk, opts->tls_psk, opts->tls_psk_len);
		t->psk_len = opts->tls_psk_len;
	}
	*out = &t->x;
	return 0;
}

static int tcp__accept(struct kemari_xport *lx, struct kemari_xport **conn,
		       int timeout_ms)
{
	struct tcp_xport *l = to_tcp(lx), *t;
	struct pollfd p = { .fd = l->fd, .events = POLLIN };
	struct sockaddr_in peer;
	socklen_t plen = sizeof(peer);
	char name[64];
	int fd, r, err;

	r = poll(&p, 1, timeout_ms);
	if (r < 0)
		return errno == EINTR ? -ETIMEDOUT : -errno;
	if (r == 0)
		return -ETIMEDOUT;
	fd = accept4(l->fd, (struct sockaddr *)&peer, &plen, SOCK_CLOEXEC);
	if (fd < 0)
		return errno == EINTR ? -ETIMEDOUT : -errno;
	tcp__tune(fd);
	snprintf(name, sizeof(name), "%s:%u", inet_ntoa(peer.sin_addr),
		 ntohs(peer.sin_port));
	err = tcp__new(&t, fd, name);
	if (err) {
		close(fd);
		return err;
	}
	if (l->psk_len) {
		err = tcp__tls_start(t, false, l->psk, l->psk_len);
		if (err) {
			tcp__close(&t->x);
			return err;
		}
	}
	*conn = &t->x;
	return 0;
}

static int tcp__connect(struct kemari_xport **out, const char *addr,
			const struct kemari_xport_opts *opts)
{
	uint64_t deadline = kemari_now_ns() +
			    (uint64_t)opts->connect_timeout_ms * 1000000ULL;
	struct sockaddr_in sa;
	struct tcp_xport *t;
	int fd, err;

	err = kemari_parse_sockaddr(addr, &sa);
	if (err)
		return err;
	/* The secondary may still be starting: retry until the deadline. */
	for (;;) {
		fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return kemari_err(-errno, "socket: %s",
					  strerror(errno));
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			break;
		err = -errno;
		close(fd);
		if (kemari_now_ns() >= deadline ||
		    (err != -ECONNREFUSED && err != -EAGAIN &&
		     err != -ETIMEDOUT && err != -EINTR))
			return kemari_err(
				err,
				"cannot reach the secondary at %s: %s (start it first, or check --peer)",
				addr, strerror(-err));
		usleep(50000);
	}
	tcp__tune(fd);
	err = tcp__new(&t, fd, addr);
	if (err) {
		close(fd);
		return err;
	}
	if (opts->tls_psk) {
		err = tcp__tls_start(t, true, opts->tls_psk, opts->tls_psk_len);
		if (err) {
			tcp__close(&t->x);
			return err;
		}
	}
	*out = &t->x;
	return 0;
}

static int tcp__reg_src(struct kemari_xport *x, void *base, uint64_t len)
{
	struct tcp_xport *t = to_tcp(x);

	t->src = base;
	t->src_len = len;
	return 0;
}

static int tcp__reg_dst(struct kemari_xport *x, void *base, uint64_t len)
{
	struct tcp_xport *t = to_tcp(x);

	t->dst = base;
	t->dst_len = len;
	return 0;
}

static int tcp__lost(struct tcp_xport *t, int err)
{
	return kemari_err(-ECONNRESET, "connection to %s lost: %s", t->addr,
			  err ? strerror(-err) : "closed by the peer");
}

/* ---- TLS (--tls) --------------------------------------------------- */

/* OpenSSL's reason for the last failure, for one line. */
static const char *tcp__tls_why(void)
{
	static __thread char buf[160];
	unsigned long e = ERR_get_error();

	if (!e)
		return "connection closed";
	ERR_error_string_n(e, buf, sizeof(buf));
	ERR_clear_error();
	return buf;
}

/*
 * The peer's socket ended with a bare FIN, no close_notify: what a peer
 * killed with nothing unread sends (OpenSSL 3 reports it as an error,
 * "unexpected eof while reading"). Frames are length-prefixed, so nothing
 * can be cut unnoticed: the connection is lost as when the peer closes it.
 */
static bool tcp__tls_bare_eof(int ssl_err)
{
#ifdef SSL_R_UNEXPECTED_EOF_WHILE_READING
	return ssl_err == SSL_ERROR_SSL &&
	       ERR_GET_REASON(ERR_peek_error()) ==
		       SSL_R_UNEXPECTED_EOF_WHILE_READING;
#else
	(void)ssl_err;
	return false;
#endif
}

/* Wait for the socket to allow what OpenSSL asked for; 0 or -ETIMEDOUT. */
static int tcp__tls_wait(struct tcp_xport *t, int ssl_err, int timeout_ms)
{
	struct pollfd p = { .fd = t->fd,
			    .events = ssl_err == SSL_ERROR_WANT_WRITE ? POLLOUT
								       : POLLIN };
	int r;

	do
		r = poll(&p, 1, timeout_ms);
	while (r < 0 && errno == EINTR);
	return r > 0 ? 0 : -ETIMEDOUT;
}

static const unsigned char tcp__tls_id[] = "kemari";
/* TLS_AES_128_GCM_SHA256: the PSK's hash must match its suite. */
static const unsigned char tcp__tls_suite[2] = { 0x13, 0x01 };

static SSL_SESSION *tcp__tls_session(SSL *ssl)
{
	struct tcp_xport *t = SSL_get_app_data(ssl);
	const SSL_CIPHER *c = SSL_CIPHER_find(ssl, tcp__tls_suite);
	SSL_SESSION *s = SSL_SESSION_new();

	if (!s || !c || !SSL_SESSION_set1_master_key(s, t->psk, t->psk_len) ||
	    !SSL_SESSION_set_cipher(s, c) ||
	    !SSL_SESSION_set_protocol_version(s, TLS1_3_VERSION)) {
		SSL_SESSION_free(s);
		return NULL;
	}
	return s;
}

static int tcp__tls_use_psk(SSL *ssl, const EVP_MD *md,
			    const unsigned char **id, size_t *idlen,
			    SSL_SESSION **sess)
{
	(void)md;
	*sess = tcp__tls_session(ssl);
	*id = tcp__tls_id;
	*idlen = sizeof(tcp__tls_id) - 1;
	return *sess != NULL;
}

static int tcp__tls_find_psk(SSL *ssl, const unsigned char *id, size_t idlen,
			     SSL_SESSION **sess)
{
	*sess = NULL;
	if (idlen != sizeof(tcp__tls_id) - 1 ||
	    memcmp(id, tcp__tls_id, idlen) != 0)
		return 1; /* not ours: the handshake fails without a PSK */
	*sess = tcp__tls_session(ssl);
	return *sess != NULL;
}

/*
 * Turn a fresh connection into TLS 1.3 with the pre-shared key; the
 * handshake may take TCP_TLS_HANDSHAKE_MS. A peer in the clear, or with
 * another key, fails here with one line.
 */
static int tcp__tls_start(struct tcp_xport *t, bool client, const uint8_t *psk,
			  unsigned int psk_len)
{
	uint64_t deadline =
		kemari_now_ns() + (uint64_t)TCP_TLS_HANDSHAKE_MS * 1000000ULL;
	int fl;

	if (psk_len == 0 || psk_len > sizeof(t->psk))
		return kemari_err(-EINVAL, "internal: %u-byte TLS key",
				  psk_len);
	memcpy(t->psk, psk, psk_len);
	t->psk_len = psk_len;
	t->ctx = SSL_CTX_new(client ? TLS_client_method() : TLS_server_method());
	if (!t->ctx)
		return -ENOMEM;
	SSL_CTX_set_min_proto_version(t->ctx, TLS1_3_VERSION);
	SSL_CTX_set_max_proto_version(t->ctx, TLS1_3_VERSION);
	SSL_CTX_set_ciphersuites(t->ctx, "TLS_AES_128_GCM_SHA256");
	/* One connection, no resumption: no tickets to send or keep. */
	SSL_CTX_set_num_tickets(t->ctx, 0);
	SSL_CTX_set_session_cache_mode(t->ctx, SSL_SESS_CACHE_OFF);
	if (client)
		SSL_CTX_set_psk_use_session_callback(t->ctx, tcp__tls_use_psk);
	else
		SSL_CTX_set_psk_find_session_callback(t->ctx,
						      tcp__tls_find_psk);
	t->ssl = SSL_new(t->ctx);
	if (!t->ssl)
		return -ENOMEM;
	SSL_set_app_data(t->ssl, t);
	fl = fcntl(t->fd, F_GETFL);
	if (fl < 0 || fcntl(t->fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
	    !SSL_set_fd(t->ssl, t->fd))
		return kemari_err(-errno ? -errno : -EIO,
				  "TLS with %s: cannot set up the socket",
				  t->addr);
	for (;;) {
		int r = client ? SSL_connect(t->ssl) : SSL_accept(t->ssl);
		int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(t->ssl, r);
		uint64_t now = kemari_now_ns();

		if (r == 1)
			return 0;
		if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) &&
		    now < deadline &&
		    !tcp__tls_wait(t, e,
				   (int)((deadline - now) / 1000000ULL) + 1))
			continue;
		return kemari_err(
			-EACCES,
			"TLS handshake with %s failed (%s): both sides need --tls and the same --auth-key",
			t->addr,
			e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE
				? "timed out"
				: tcp__tls_why());
	}
}

/* SSL_write all of buf, waiting on the socket as OpenSSL asks. */
static int tcp__tls_write(struct tcp_xport *t, const void *buf, size_t len)
{
	while (len) {
		size_t w = 0;
		int r = SSL_write_ex(t->ssl, buf, len, &w);

		if (r == 1) {
			buf = (const uint8_t *)buf + w;
			len -= w;
			continue;
		}
		r = SSL_get_error(t->ssl, r);
		if (r == SSL_ERROR_WANT_WRITE || r == SSL_ERROR_WANT_READ) {
			if (tcp__tls_wait(t, r, TCP_STALL_MS))
				return tcp__lost(t, -ETIMEDOUT);
			continue;
		}
		/* The peer gone (EPIPE, ECONNRESET): lost, in its words. */
		if (r == SSL_ERROR_SYSCALL && errno) {
			int e = errno;

			ERR_clear_error();
			return tcp__lost(t, -e);
		}
		kemari_err(-ECONNRESET, "TLS write to %s: %s", t->addr,
			   tcp__tls_why());
		return tcp__lost(t, -ECONNRESET);
	}
	return 0;
}

static int tcp__tls_flush_stage(struct tcp_xport *t)
{
	int err = t->staged ? tcp__tls_write(t, t->stage, t->staged) : 0;

	t->staged = 0;
	return err;
}

/*
 * Frame headers, run lists and control payloads are gathered into one
 * record; page runs (4 KiB and more) go out from guest RAM directly. The
 * gathered bytes leave at the latest with the next frame sent without
 * more, e.g. an epoch's COMMIT, so order is kept.
 */
static int tcp__tls_writev(struct tcp_xport *t, struct iovec *iov, int n,
			   bool more)
{
	for (int i = 0; i < n; i++) {
		const uint8_t *p = iov[i].iov_base;
		size_t len = iov[i].iov_len;
		int err;

		if (len >= KEMARI_PAGE_SIZE) {
			err = tcp__tls_flush_stage(t);
			err = err ?: tcp__tls_write(t, p, len);
			if (err)
				return err;
			continue;
		}
		if (t->staged + len > TCP_TX_STAGE) {
			err = tcp__tls_flush_stage(t);
			if (err)
				return err;
		}
		memcpy(t->stage + t->staged, p, len);
		t->staged += len;
	}
	return more ? 0 : tcp__tls_flush_stage(t);
}

/*
 * Write iov[1..n) after the bytes staged so far; iov[0] is the send
 * stage's slot, filled here. more: another frame follows at once. Small
 * frames with more are only staged (their bytes copied: the caller may
 * change its buffers on return), so an epoch's run list, state and small
 * page runs leave with its commit in one sendmsg; anything else goes out
 * now, the staged bytes first, with MSG_MORE when more follows, so
 * TCP_NODELAY does not send each frame as its own segment.
 */
static int tcp__writev_all(struct tcp_xport *t, struct iovec *iov, int n,
			   bool more)
{
	size_t len = 0;

	if (t->ssl)
		return tcp__tls_writev(t, iov + 1, n - 1, more);
	for (int i = 1; i < n; i++)
		len += iov[i].iov_len;
	if (more && len <= TCP_TX_STAGE - t->staged) {
		for (int i = 1; i < n; i++) {
			memcpy(t->stage + t->staged, iov[i].iov_base,
			       iov[i].iov_len);
			t->staged += iov[i].iov_len;
		}
		return 0;
	}
	iov[0] = (struct iovec){ t->stage, t->staged };
	t->staged = 0;
	while (n > 0) {
		struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)n };
		ssize_t w = sendmsg(t->fd, &mh,
				    MSG_NOSIGNAL | (more ? MSG_MORE : 0));

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return tcp__lost(t, -errno);
		}
		while (n > 0 && (size_t)w >= iov->iov_len) {
			w -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + w;
			iov->iov_len -= (size_t)w;
		}
	}
	return 0;
}

static int tcp__push(struct kemari_xport *x, const struct kemari_run *runs,
		     size_t n, uint64_t dst_off)
{
	struct tcp_xport *t = to_tcp(x);
	struct kemari_wire_hdr h;

	if (!t->src)
		return kemari_err(-EINVAL, "internal: push before reg_src");
	/* A stream needs no banks: later pushes queue behind this one. */
	if (dst_off)
		return kemari_err(-EINVAL,
				  "internal: tcp push with a bank offset");
	while (n) {
		size_t k = KEMARI_MIN(n, (size_t)TCP_IOV_BATCH);
		uint32_t dlen = (uint32_t)(k * sizeof(*runs));
		int iovn = 1, err; /* t->iov[0]: the send stage */

		kemari_wire__seal(&h, KEMARI_MSG_PAGES, 0, runs, dlen);
		t->iov[iovn++] = (struct iovec){ &h, sizeof(h) };
		t->iov[iovn++] = (struct iovec){ (void *)runs, dlen };
		for (size_t i = 0; i < k; i++) {
			uint64_t off = runs[i].pfn * KEMARI_PAGE_SIZE;
			uint64_t len =
				(uint64_t)runs[i].npages * KEMARI_PAGE_SIZE;

			if (off > t->src_len || len > t->src_len - off)
				return kemari_err(
					-ERANGE,
					"internal: run %llu+%u outside guest RAM",
					(unsigned long long)runs[i].pfn,
					runs[i].npages);
			t->iov[iovn++] = (struct iovec){ t->src + off, len };
		}
		err = tcp__writev_all(t, t->iov, iovn, true);
		if (err)
			return err;
		runs += k;
		n -= k;
	}
	return 0;
}

static int tcp__flush(struct kemari_xport *x)
{
	/*
	 * One ordered stream: data written before a control message arrives
	 * before it, and push returned only after copying from RAM (into the
	 * socket, or into the send stage that leaves before that message).
	 */
	(void)x;
	return 0;
}

static int tcp__send(struct kemari_xport *x, uint16_t type, uint64_t epoch,
		     const void *payload, uint32_t len)
{
	struct tcp_xport *t = to_tcp(x);
	struct kemari_wire_hdr h;
	struct iovec iov[3]; /* iov[0]: the send stage */
	bool more;

	if (len > KEMARI_MSG_MAX)
		return kemari_err(-EMSGSIZE,
				  "internal: %u-byte control message", len);
	kemari_wire__seal(&h, type, epoch, payload, len);
	iov[1] = (struct iovec){ &h, sizeof(h) };
	iov[2] = (struct iovec){ (void *)payload, len };
	/* These always precede an epoch's COMMIT. */
	more = type == KEMARI_MSG_RUNS || type == KEMARI_MSG_CPU_STATE ||
	       type == KEMARI_MSG_DEV_STATE;
	return tcp__writev_all(t, iov, len ? 3 : 2, more);
}

/* Wait until fd is readable; 0, -ETIMEDOUT, or -errno. */
static int tcp__wait(struct tcp_xport *t, int timeout_ms)
{
	struct pollfd p = { .fd = t->fd, .events = POLLIN };
	int r;

	/* TLS: bytes OpenSSL already holds are readable too. */
	if (t->ssl && SSL_has_pending(t->ssl))
		return 0;
	r = poll(&p, 1, timeout_ms);

	if (r < 0)
		return errno == EINTR ? -ETIMEDOUT : -errno;
	return r ? 0 : -ETIMEDOUT;
}

/*
 * Read what the connection has, at least one byte, into iov[0..n) (its
 * first entry not empty). Called inside a frame only (the peer sends
 * frames whole): a peer, or a link, that stops mid-frame would otherwise
 * hold this side here for good, neither failing over nor noticing the
 * silence, so each piece is waited for at most TCP_STALL_MS. The count,
 * or -ECONNRESET.
 */
static ssize_t tcp__read_some(struct tcp_xport *t, struct iovec *iov, int n)
{
	for (;;) {
		struct msghdr mh = { 0 };
		ssize_t r;

		if (t->ssl) {
			size_t got = 0;
			int e = SSL_read_ex(t->ssl, iov->iov_base, iov->iov_len,
					    &got);

			if (e == 1)
				return (ssize_t)got;
			e = SSL_get_error(t->ssl, e);
			if (e == SSL_ERROR_WANT_READ ||
			    e == SSL_ERROR_WANT_WRITE) {
				if (tcp__tls_wait(t, e, TCP_STALL_MS))
					return tcp__lost(t, -ETIMEDOUT);
				continue;
			}
			if (e == SSL_ERROR_ZERO_RETURN ||
			    (e == SSL_ERROR_SYSCALL && !ERR_peek_error()) ||
			    tcp__tls_bare_eof(e)) {
				ERR_clear_error();
				return tcp__lost(t, 0);
			}
			kemari_err(-EBADMSG, "TLS read from %s: %s", t->addr,
				   tcp__tls_why());
			return tcp__lost(t, -EBADMSG);
		}
		mh.msg_iov = iov;
		mh.msg_iovlen = (size_t)KEMARI_MIN(n, IOV_MAX);
		r = recvmsg(t->fd, &mh, MSG_DONTWAIT);
		if (r > 0)
			return r;
		if (r == 0)
			return tcp__lost(t, 0);
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return tcp__lost(t, -errno);
		if (tcp__wait(t, TCP_STALL_MS))
			return tcp__lost(t, -ETIMEDOUT);
	}
}

/* Read what the connection has into the receive stage's free tail. */
static int tcp__rx_fill(struct tcp_xport *t)
{
	uint32_t left = t->rx_end - t->rx_off;
	struct iovec v;
	ssize_t r;

	/* What is left is less than TCP_RX_DIRECT: cheap to move. */
	if (left && t->rx_off)
		memmove(t->rx, t->rx + t->rx_off, left);
	t->rx_off = 0;
	t->rx_end = left;
	v = (struct iovec){ t->rx + left, TCP_RX_STAGE - left };
	r = tcp__read_some(t, &v, 1);
	if (r < 0)
		return (int)r;
	t->rx_end += (uint32_t)r;
	return 0;
}

/*
 * Fill all of iov[0..n) with the frame's next bytes: what the receive
 * stage holds first; then, while what is missing is small, through the
 * stage (one read may bring the frames that follow too); large page data
 * straight into place.
 */
static int tcp__readv_all(struct tcp_xport *t, struct iovec *iov, int n)
{
	for (;;) {
		size_t want = 0;
		ssize_t r;

		while (n > 0 && t->rx_off < t->rx_end) {
			size_t k = KEMARI_MIN(iov->iov_len,
					      (size_t)(t->rx_end - t->rx_off));

			memcpy(iov->iov_base, t->rx + t->rx_off, k);
			t->rx_off += (uint32_t)k;
			iov->iov_base = (uint8_t *)iov->iov_base + k;
			iov->iov_len -= k;
			if (!iov->iov_len) {
				iov++;
				n--;
			}
		}
		/* A zero-length read would look like end of stream. */
		while (n > 0 && iov->iov_len == 0) {
			iov++;
			n--;
		}
		if (n == 0)
			return 0;
		for (int i = 0; i < n && want < TCP_RX_DIRECT; i++)
			want += iov[i].iov_len;
		if (want < TCP_RX_DIRECT) {
			int err = tcp__rx_fill(t);

			if (err)
				return err;
			continue;
		}
		r = tcp__read_some(t, iov, n);
		if (r < 0)
			return (int)r;
		while (n > 0 && (size_t)r >= iov->iov_len) {
			r -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + r;
			iov->iov_len -= (size_t)r;
		}
	}
}

static int tcp__read_all(struct tcp_xport *t, void *buf, size_t len)
{
	struct iovec iov = { buf, len };

	return tcp__readv_all(t, &iov, 1);
}

/* Receive one PAGES frame body straight into the receive buffers. */
static int tcp__recv_pages(struct tcp_xport *t, const struct kemari_wire_hdr *h)
{
	const struct kemari_run *runs = (const struct kemari_run *)t->rbuf;
	size_t k = h->len / sizeof(*runs);
	uint64_t dst_pages = t->dst_len / KEMARI_PAGE_SIZE;
	int err;

	if (h->len % sizeof(*runs) || k > TCP_IOV_BATCH)
		return kemari_err(
			-EBADMSG,
			"replication stream: PAGES frame with a %u-byte run list",
			h->len);
	err = tcp__read_all(t, t->rbuf, h->len);
	if (err)
		return err;
	err = kemari_wire__check_crc(h, t->rbuf);
	if (err)
		return err;
	if (!t->dst)
		return kemari_err(
			-EBADMSG,
			"replication stream: page data before the handshake");
	/* Check every run before reading any data into the buffers. */
	for (size_t i = 0; i < k; i++) {
		if (runs[i].npages == 0 || runs[i].pfn >= dst_pages ||
		    runs[i].npages > dst_pages - runs[i].pfn)
			return kemari_err(
				-EBADMSG,
				"replication stream: run of %u pages at page %llu is outside the %llu-page guest RAM",
				runs[i].npages, (unsigned long long)runs[i].pfn,
				(unsigned long long)dst_pages);
		t->iov[i].iov_base = t->dst + runs[i].pfn * KEMARI_PAGE_SIZE;
		t->iov[i].iov_len = (size_t)runs[i].npages * KEMARI_PAGE_SIZE;
	}
	return tcp__readv_all(t, t->iov, (int)k);
}

static int tcp__recv_one(struct tcp_xport *t, struct kemari_msg *m,
			 int timeout_ms)
{
	struct kemari_wire_hdr h;
	int err;

	for (;;) {
		/* Only an empty stage waits: staged bytes are frames sent. */
		if (t->rx_off == t->rx_end) {
			err = tcp__wait(t, timeout_ms);
			if (err)
				return err;
		}
		err = tcp__read_all(t, &h, sizeof(h));
		if (err)
			return err;
		err = kemari_wire__check_hdr(&h, KEMARI_MSG_MAX);
		if (err)
			return err;
		if (h.type == KEMARI_MSG_PAGES) {
			err = tcp__recv_pages(t, &h);
			if (err)
				return err;
			continue; /* data is not a message; idle timer restarts */
		}
		err = tcp__read_all(t, t->rbuf, h.len);
		if (err)
			return err;
		err = kemari_wire__check_crc(&h, t->rbuf);
		if (err)
			return err;
		m->type = h.type;
		m->epoch = h.epoch;
		m->len = h.len;
		m->payload = t->rbuf;
		return 0;
	}
}

static int tcp__recv(struct kemari_xport *x, struct kemari_msg *m,
		     int timeout_ms)
{
	struct tcp_xport *t = to_tcp(x);
	int err = tcp__recv_one(t, m, timeout_ms);

	/*
	 * A failed read ends the stream: nothing staged is read after it
	 * (a time-out comes only with the stage empty).
	 */
	if (err)
		t->rx_off = t->rx_end = 0;
	return err;
}

static uint32_t tcp__max_msg(struct kemari_xport *x)
{
	(void)x;
	return KEMARI_MSG_MAX;
}

static void tcp__close(struct kemari_xport *x)
{
	struct tcp_xport *t = to_tcp(x);

	if (t->ssl)
		SSL_free(t->ssl);
	if (t->ctx)
		SSL_CTX_free(t->ctx);
	free(t->stage);
	free(t->rx);
	OPENSSL_cleanse(t->psk, sizeof(t->psk));
	if (t->fd >= 0)
		close(t->fd);
	free(t->rbuf);
	free(t->iov);
	free(t);
}

const struct kemari_xport_ops kemari_xport_tcp = {
	.name = "tcp",
	.caps = KEMARI_XPORT_CAP_TLS,
	.listen = tcp__listen,
	.accept = tcp__accept,
	.connect = tcp__connect,
	.reg_src = tcp__reg_src,
	.reg_dst = tcp__reg_dst,
	.push = tcp__push,
	.flush = tcp__flush,
	.send = tcp__send,
	.recv = tcp__recv,
	.max_msg = tcp__max_msg,
	.close = tcp__close,
};
