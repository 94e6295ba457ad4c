// SPDX-License-Identifier: MIT
/*
 * TCP transport. Page runs leave straight from guest RAM (writev of a frame
 * header, the run descriptors, and one iovec per run into RAM) and land
 * straight in the receive buffers (readv at their offsets): no staging copy
 * on either side. Every run is bounds-checked against the registered
 * receive region before a byte of it is read. TCP_NODELAY, since every
 * epoch ends with a small commit whose latency is the pause time.
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

#include "kemari/kemari.h"
#include "kemari/wire.h"
#include "kemari/xport.h"

#define TCP_IOV_BATCH 512 /* runs per PAGES frame, below IOV_MAX */
#define TCP_STALL_MS 5000 /* a frame half-sent for this long: peer gone */

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
};

extern const struct kemari_xport_ops kemari_xport_tcp;

static struct tcp_xport *to_tcp(struct kemari_xport *x)
{
	return kemari_container_of(x, struct tcp_xport, x);
}

static int tcp__new(struct tcp_xport **out, int fd, const char *addr)
{
	struct tcp_xport *t = calloc(1, sizeof(*t));

	if (!t)
		return -ENOMEM;
	t->x.ops = &kemari_xport_tcp;
	t->fd = fd;
	snprintf(t->addr, sizeof(t->addr), "%s", addr);
	t->rbuf = malloc(KEMARI_MSG_MAX);
	t->iov = calloc(TCP_IOV_BATCH + 2, sizeof(*t->iov));
	if (!t->rbuf || !t->iov) {
		free(t->rbuf);
		free(t->iov);
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

/*
 * Write all of iov[0..n), advancing through partial writes. more: another
 * frame follows at once (MSG_MORE), so an epoch's pages, run list and
 * state leave in full segments and only its commit pushes them out —
 * TCP_NODELAY otherwise sends every small frame as its own segment.
 */
static int tcp__writev_all(struct tcp_xport *t, struct iovec *iov, int n,
			   bool more)
{
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
		     size_t n)
{
	struct tcp_xport *t = to_tcp(x);
	struct kemari_wire_hdr h;

	if (!t->src)
		return kemari_err(-EINVAL, "internal: push before reg_src");
	while (n) {
		size_t k = KEMARI_MIN(n, (size_t)TCP_IOV_BATCH);
		uint32_t dlen = (uint32_t)(k * sizeof(*runs));
		int iovn = 0, err;

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
	 * before it, and writev returned only after copying from RAM.
	 */
	(void)x;
	return 0;
}

static int tcp__send(struct kemari_xport *x, uint16_t type, uint64_t epoch,
		     const void *payload, uint32_t len)
{
	struct tcp_xport *t = to_tcp(x);
	struct kemari_wire_hdr h;
	struct iovec iov[2];
	bool more;

	if (len > KEMARI_MSG_MAX)
		return kemari_err(-EMSGSIZE,
				  "internal: %u-byte control message", len);
	kemari_wire__seal(&h, type, epoch, payload, len);
	iov[0] = (struct iovec){ &h, sizeof(h) };
	iov[1] = (struct iovec){ (void *)payload, len };
	/* These always precede an epoch's COMMIT. */
	more = type == KEMARI_MSG_RUNS || type == KEMARI_MSG_CPU_STATE ||
	       type == KEMARI_MSG_DEV_STATE;
	return tcp__writev_all(t, iov, len ? 2 : 1, more);
}

/* Wait until fd is readable; 0, -ETIMEDOUT, or -errno. */
static int tcp__wait(struct tcp_xport *t, int timeout_ms)
{
	struct pollfd p = { .fd = t->fd, .events = POLLIN };
	int r = poll(&p, 1, timeout_ms);

	if (r < 0)
		return errno == EINTR ? -ETIMEDOUT : -errno;
	return r ? 0 : -ETIMEDOUT;
}

/* Read all of iov[0..n) (frame bodies: the peer sends them whole). */
static int tcp__readv_all(struct tcp_xport *t, struct iovec *iov, int n)
{
	for (;;) {
		ssize_t r;

		/* A zero-length read would look like end of stream. */
		while (n > 0 && iov->iov_len == 0) {
			iov++;
			n--;
		}
		if (n == 0)
			break;
		r = readv(t->fd, iov, KEMARI_MIN(n, IOV_MAX));

		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				goto wait;
			return tcp__lost(t, -errno);
		}
		if (r == 0)
			return tcp__lost(t, 0);
		while (n > 0 && (size_t)r >= iov->iov_len) {
			r -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + r;
			iov->iov_len -= (size_t)r;
		}
		continue;
	wait:
		if (tcp__wait(t, TCP_STALL_MS))
			return tcp__lost(t, -ETIMEDOUT);
	}
	return 0;
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

static int tcp__recv(struct kemari_xport *x, struct kemari_msg *m,
		     int timeout_ms)
{
	struct tcp_xport *t = to_tcp(x);
	struct kemari_wire_hdr h;
	int err;

	for (;;) {
		err = tcp__wait(t, timeout_ms);
		if (err)
			return err;
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

static uint32_t tcp__max_msg(struct kemari_xport *x)
{
	(void)x;
	return KEMARI_MSG_MAX;
}

static void tcp__close(struct kemari_xport *x)
{
	struct tcp_xport *t = to_tcp(x);

	if (t->fd >= 0)
		close(t->fd);
	free(t->rbuf);
	free(t->iov);
	free(t);
}

const struct kemari_xport_ops kemari_xport_tcp = {
	.name = "tcp",
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
