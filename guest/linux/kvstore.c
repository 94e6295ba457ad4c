// SPDX-License-Identifier: MIT
/*
 * kemari-kvstore: the kvstore service (docs/kvstore.md) as a Linux program,
 * for the stock-kernel guest image (scripts/linux-guest.sh, docs/
 * linux-guest.md). Protocol, state and write-ahead log are guest/kv/'s,
 * shared with the freestanding guest; this file is only the glue to a block
 * device (or file), UDP and TCP.
 *
 *   kemari-kvstore [--disk=PATH] [--port=N] [--bind=ADDR]   serve
 *   kemari-kvstore --ping [--port=N] [--bind=ADDR]          probe a server
 *
 * One thread, one poll loop. Per round: every datagram and every complete
 * TCP line that has arrived (up to KV_BATCH_MAX) is executed as one batch
 * whose log records reach the disk with one pwrite + one fdatasync; only
 * then do the replies leave, the freestanding guest's per-burst rule.
 *
 * TCP carries the same messages, one request per '\n'-terminated line and
 * one reply per line, in request order. A line without a readable client-id
 * gets no reply, as such a datagram does. Lines longer than KVSRV_LINE_MAX
 * close the connection.
 *
 * Exit status: 0 after SIGTERM/SIGINT, 1 on a runtime or startup error
 * (one line on stderr), 2 on a usage error.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../kv/wal.h"

/* Log I/O unit, as in the freestanding guest: 256 KiB. */
#define KVSRV_IO_SECTORS 512
/* The largest request datagram: the freestanding guest's KEMARI_NET_MTU. */
#define KVSRV_DGRAM_MAX 2048
/* TCP input buffered per connection: a request line must fit. */
#define KVSRV_LINE_MAX 4096
/* A connection with this many reply bytes unsent is not read from until
 * its client catches up. */
#define KVSRV_OUT_HIGH (64 * 1024)
#define KVSRV_CONN_MAX 4096
/* Connections accepted per round, so that a connect storm cannot starve
 * the requests already waiting. */
#define KVSRV_ACCEPT_BURST 64

_Static_assert(KVSRV_LINE_MAX >= KVSRV_DGRAM_MAX, "a line holds a request");

#define kvsrv__err(...) fprintf(stderr, "kemari-kvstore: error: " __VA_ARGS__)
#define kvsrv__log(...) fprintf(stderr, "kemari-kvstore: " __VA_ARGS__)

struct kvsrv_conn {
	int fd;
	bool eof;	/* the peer sends nothing more */
	bool dead;	/* close at the end of this round */
	size_t in_len;	/* bytes in in[] */
	size_t taken;	/* bytes of in[] the current batch points into */
	size_t out_len; /* reply bytes not yet written */
	size_t out_cap;
	char *out;
	char peer[INET6_ADDRSTRLEN + 8];
	char in[KVSRV_LINE_MAX];
};

/* Where the reply of a batch slot goes: a connection, or a datagram. */
struct kvsrv_src {
	struct kvsrv_conn *conn;
	struct sockaddr_storage peer;
	socklen_t peer_len;
};

struct kvsrv_disk {
	int fd;
	const char *path;
	uint64_t capacity; /* sectors */
};

struct kvsrv {
	struct kvsrv_disk disk;
	int udp, tcp;
	struct kvsrv_conn **conn;
	uint32_t nconn, conn_cap;
	uint32_t rotor; /* the connection whose lines go first next round */
	bool accept_paused;
	bool io_failing;
	uint32_t n; /* slots of the batch being gathered */
	struct kv_req in[KV_BATCH_MAX];
	struct kvsrv_src src[KV_BATCH_MAX];
	struct pollfd *pfd;
	uint32_t pfd_cap;
};

/* Big, so static. */
static struct kv_state kvsrv__state;
static struct wal kvsrv__wal;
static uint8_t kvsrv__io[KVSRV_IO_SECTORS * WAL_SECTOR]
	__attribute__((aligned(4096)));
static char kvsrv__dgram[KV_BATCH_MAX][KVSRV_DGRAM_MAX];
static struct kv_result kvsrv__out[KV_BATCH_MAX];

static volatile sig_atomic_t kvsrv__stop;

static void kvsrv__on_stop(int sig)
{
	(void)sig;
	kvsrv__stop = 1;
}

/* --- the log's device ---------------------------------------------------- */

static int kvsrv__disk_read(void *ctx, uint64_t sector, uint32_t nsect,
			    void *buf)
{
	struct kvsrv_disk *d = ctx;
	size_t len = (size_t)nsect * WAL_SECTOR, done = 0;
	off_t off = (off_t)(sector * WAL_SECTOR);

	while (done < len) {
		ssize_t r = pread(d->fd, (char *)buf + done, len - done,
				  off + (off_t)done);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -EIO; /* past the end: the device shrank */
		done += (size_t)r;
	}
	return 0;
}

/* The write is durable when this returns 0 with flush: fdatasync also
 * makes the device flush its volatile cache (a virtio-blk FLUSH). */
static int kvsrv__disk_write(void *ctx, uint64_t sector, uint32_t nsect,
			     const void *buf, bool flush)
{
	struct kvsrv_disk *d = ctx;
	size_t len = (size_t)nsect * WAL_SECTOR, done = 0;
	off_t off = (off_t)(sector * WAL_SECTOR);

	while (done < len) {
		ssize_t r = pwrite(d->fd, (const char *)buf + done, len - done,
				   off + (off_t)done);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -EIO;
		done += (size_t)r;
	}
	while (flush && fdatasync(d->fd)) {
		if (errno != EINTR)
			return -errno;
	}
	return 0;
}

static const struct wal_dev_ops kvsrv__disk_ops = {
	.read = kvsrv__disk_read,
	.write = kvsrv__disk_write,
};

static int kvsrv__disk_open(struct kvsrv_disk *d, const char *path)
{
	struct stat st;
	uint64_t bytes;

	d->path = path;
	d->fd = open(path, O_RDWR | O_CLOEXEC);
	if (d->fd < 0) {
		kvsrv__err("disk %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (fstat(d->fd, &st)) {
		kvsrv__err("disk %s: %s\n", path, strerror(errno));
		goto err_close;
	}
	if (S_ISBLK(st.st_mode)) {
		if (ioctl(d->fd, BLKGETSIZE64, &bytes)) {
			kvsrv__err("disk %s: cannot read its size: %s\n", path,
				   strerror(errno));
			goto err_close;
		}
	} else if (S_ISREG(st.st_mode)) {
		bytes = (uint64_t)st.st_size;
	} else {
		kvsrv__err("disk %s: neither a block device nor a file\n",
			   path);
		goto err_close;
	}
	/* Two servers appending to one log would corrupt it. */
	if (flock(d->fd, LOCK_EX | LOCK_NB)) {
		if (errno == EWOULDBLOCK)
			kvsrv__err(
				"disk %s: in use by another kemari-kvstore\n",
				path);
		else
			kvsrv__err("disk %s: cannot lock it: %s\n", path,
				   strerror(errno));
		goto err_close;
	}
	d->capacity = bytes / WAL_SECTOR;
	if (d->capacity < WAL_MIN_SECTORS) {
		kvsrv__err("disk %s: %" PRIu64
			   " bytes, the log needs at least %d\n",
			   path, bytes, WAL_MIN_SECTORS * WAL_SECTOR);
		goto err_close;
	}
	return 0;

err_close:
	close(d->fd);
	d->fd = -1;
	return -1;
}

static int kvsrv__log_open(struct kvsrv_disk *d)
{
	int ret;

	ret = wal__init(&kvsrv__wal, &kvsrv__disk_ops, d, d->capacity,
			kvsrv__io, KVSRV_IO_SECTORS);
	if (!ret)
		ret = wal__open(&kvsrv__wal, &kvsrv__state);
	switch (ret) {
	case 0:
		return 0;
	case -EINVAL:
		kvsrv__err(
			"disk %s: holds something other than a kvstore log (it must be all zeroes or a kvstore disk of this size)\n",
			d->path);
		break;
	case -ENOSPC:
		kvsrv__err(
			"disk %s: its log holds more keys than this build's tables (%d)\n",
			d->path, KV_MAX_KEYS);
		break;
	default:
		kvsrv__err("disk %s: cannot read the log: %s\n", d->path,
			   strerror(-ret));
	}
	return -1;
}

/* --- addresses and sockets ------------------------------------------------ */

static int kvsrv__addr(const char *text, uint16_t port,
		       struct sockaddr_storage *ss, socklen_t *len)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, text, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		*len = sizeof(*sin);
		return 0;
	}
	if (inet_pton(AF_INET6, text, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		*len = sizeof(*sin6);
		return 0;
	}
	return -EINVAL;
}

static void kvsrv__addr_str(const struct sockaddr_storage *ss, char *buf,
			    size_t cap)
{
	char ip[INET6_ADDRSTRLEN] = "?";
	uint16_t port = 0;

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const void *)ss;

		inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip));
		port = ntohs(sin->sin_port);
		snprintf(buf, cap, "%s:%u", ip, port);
	} else {
		const struct sockaddr_in6 *sin6 = (const void *)ss;

		inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof(ip));
		port = ntohs(sin6->sin6_port);
		snprintf(buf, cap, "[%s]:%u", ip, port);
	}
}

static int kvsrv__listen(int type, const struct sockaddr_storage *ss,
			 socklen_t len, const char *bind_text, uint16_t port)
{
	const char *proto = type == SOCK_STREAM ? "TCP" : "UDP";
	int fd, one = 1;

	fd = socket(ss->ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		kvsrv__err("%s socket: %s\n", proto, strerror(errno));
		return -1;
	}
	/* TCP only: lets a restarted server bind while old connections sit
	 * in TIME_WAIT. For UDP it would let two servers share the port. */
	if (type == SOCK_STREAM &&
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)))
		goto err_close;
	if (bind(fd, (const struct sockaddr *)ss, len)) {
		if (errno == EADDRINUSE)
			kvsrv__err("%s port %u on %s is in use\n", proto, port,
				   bind_text);
		else
			kvsrv__err("%s bind to %s port %u: %s\n", proto,
				   bind_text, port, strerror(errno));
		goto err_close;
	}
	if (type == SOCK_STREAM && listen(fd, 512)) {
		kvsrv__err("TCP listen on %s port %u: %s\n", bind_text, port,
			   strerror(errno));
		goto err_close;
	}
	return fd;

err_close:
	close(fd);
	return -1;
}

/* --- TCP connections ----------------------------------------------------- */

static int kvsrv__conn_add(struct kvsrv *s, int fd,
			   const struct sockaddr_storage *peer)
{
	struct kvsrv_conn *c;
	int one = 1;

	if (s->nconn == s->conn_cap) {
		uint32_t cap = s->conn_cap ? s->conn_cap * 2 : 64;
		struct kvsrv_conn **nc = realloc(s->conn, cap * sizeof(*nc));

		if (!nc)
			return -ENOMEM;
		s->conn = nc;
		s->conn_cap = cap;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->fd = fd;
	kvsrv__addr_str(peer, c->peer, sizeof(c->peer));
	s->conn[s->nconn++] = c;
	return 0;
}

static void kvsrv__accept(struct kvsrv *s)
{
	uint32_t i;

	for (i = 0; i < KVSRV_ACCEPT_BURST; i++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		int fd;

		if (s->nconn >= KVSRV_CONN_MAX) {
			s->accept_paused = true;
			return;
		}
		fd = accept4(s->tcp, (struct sockaddr *)&ss, &len,
			     SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0 && (errno == EMFILE || errno == ENFILE ||
			       errno == ENOBUFS || errno == ENOMEM)) {
			kvsrv__log(
				"accept: %s: not accepting until a connection closes\n",
				strerror(errno));
			s->accept_paused = true;
		}
		if (fd < 0)
			return; /* EAGAIN, or a connection that died queued */
		if (kvsrv__conn_add(s, fd, &ss)) {
			close(fd);
			return;
		}
	}
}

static void kvsrv__conn_close(struct kvsrv *s, uint32_t i)
{
	struct kvsrv_conn *c = s->conn[i];

	close(c->fd);
	free(c->out);
	free(c);
	s->conn[i] = s->conn[--s->nconn];
	if (s->rotor >= s->nconn)
		s->rotor = 0;
	s->accept_paused = false;
}

static bool kvsrv__conn_backlogged(const struct kvsrv_conn *c)
{
	return c->out_len >= KVSRV_OUT_HIGH;
}

static void kvsrv__conn_read(struct kvsrv_conn *c)
{
	ssize_t r;

	if (c->eof || c->dead || c->in_len == KVSRV_LINE_MAX ||
	    kvsrv__conn_backlogged(c))
		return;
	r = read(c->fd, c->in + c->in_len, KVSRV_LINE_MAX - c->in_len);
	if (r > 0) {
		c->in_len += (size_t)r;
		if (c->in_len == KVSRV_LINE_MAX &&
		    !memchr(c->in, '\n', c->in_len)) {
			kvsrv__log(
				"tcp %s: request line over %d bytes: closing\n",
				c->peer, KVSRV_LINE_MAX);
			c->dead = true;
		}
	} else if (r == 0) {
		c->eof = true;
	} else if (errno != EAGAIN && errno != EINTR) {
		c->dead = true;
	}
}

/* Write what replies are pending, as far as the socket takes them; a
 * broken connection is marked dead. */
static void kvsrv__conn_flush(struct kvsrv_conn *c)
{
	size_t done = 0;

	while (!c->dead && done < c->out_len) {
		ssize_t r = send(c->fd, c->out + done, c->out_len - done,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (r > 0)
			done += (size_t)r;
		else if (r < 0 && errno == EINTR)
			continue;
		else if (r < 0 && errno == EAGAIN)
			break;
		else
			c->dead = true;
	}
	memmove(c->out, c->out + done, c->out_len - done);
	c->out_len -= done;
}

static int kvsrv__conn_queue(struct kvsrv_conn *c, const char *buf, size_t len)
{
	if (c->out_len + len + 1 > c->out_cap) {
		size_t cap = c->out_cap ? c->out_cap : 4096;
		char *n;

		while (cap < c->out_len + len + 1)
			cap *= 2;
		n = realloc(c->out, cap);
		if (!n)
			return -ENOMEM;
		c->out = n;
		c->out_cap = cap;
	}
	memcpy(c->out + c->out_len, buf, len);
	c->out[c->out_len + len] = '\n';
	c->out_len += len + 1;
	return 0;
}

/* The next request line of c, or false. A last line the peer ended
 * without '\n' counts once the peer has closed its side. */
static bool kvsrv__conn_line(struct kvsrv_conn *c, struct kv_req *req)
{
	const char *p = c->in + c->taken, *nl;
	size_t left = c->in_len - c->taken;

	if (c->dead || !left || kvsrv__conn_backlogged(c))
		return false;
	nl = memchr(p, '\n', left);
	if (nl) {
		req->msg = p;
		req->len = (size_t)(nl - p) + 1;
	} else if (c->eof) {
		req->msg = p;
		req->len = left;
	} else {
		return false;
	}
	c->taken += req->len;
	return true;
}

/* --- the batch ----------------------------------------------------------- */

static void kvsrv__gather_udp(struct kvsrv *s, uint32_t max)
{
	struct mmsghdr mh[KV_BATCH_MAX];
	struct iovec iov[KV_BATCH_MAX];
	uint32_t i, want = RT_MIN(max, KV_BATCH_MAX - s->n);
	int got;

	if (!want)
		return;
	memset(mh, 0, sizeof(mh[0]) * want);
	for (i = 0; i < want; i++) {
		iov[i].iov_base = kvsrv__dgram[s->n + i];
		iov[i].iov_len = KVSRV_DGRAM_MAX;
		mh[i].msg_hdr.msg_name = &s->src[s->n + i].peer;
		mh[i].msg_hdr.msg_namelen = sizeof(s->src[s->n + i].peer);
		mh[i].msg_hdr.msg_iov = &iov[i];
		mh[i].msg_hdr.msg_iovlen = 1;
	}
	got = recvmmsg(s->udp, mh, want, MSG_DONTWAIT, NULL);
	for (i = 0; got > 0 && i < (uint32_t)got; i++) {
		struct kvsrv_src *src = &s->src[s->n];

		src->conn = NULL;
		src->peer_len = mh[i].msg_hdr.msg_namelen;
		s->in[s->n].msg = kvsrv__dgram[s->n];
		/* Too long for the freestanding guest's buffers: dropped
		 * there, so here too (an empty request gets no reply). */
		s->in[s->n].len =
			mh[i].msg_hdr.msg_flags & MSG_TRUNC ? 0 : mh[i].msg_len;
		s->n++;
	}
}

/* Complete lines, one per connection per pass, so that one busy client
 * cannot fill every batch. */
static void kvsrv__gather_tcp(struct kvsrv *s)
{
	bool more = true;
	uint32_t k;

	while (more && s->n < KV_BATCH_MAX) {
		more = false;
		for (k = 0; k < s->nconn && s->n < KV_BATCH_MAX; k++) {
			uint32_t i = (s->rotor + k) % s->nconn;
			struct kvsrv_conn *c = s->conn[i];

			if (!kvsrv__conn_line(c, &s->in[s->n]))
				continue;
			s->src[s->n].conn = c;
			s->n++;
			more = true;
		}
	}
	if (s->nconn)
		s->rotor = (s->rotor + 1) % s->nconn;
}

static void kvsrv__run(struct kvsrv *s)
{
	uint32_t i;
	int ret;

	ret = kv__run_batch(&kvsrv__state, &kvsrv__wal, s->in, kvsrv__out,
			    s->n);
	if (ret < 0 && !s->io_failing)
		kvsrv__log(
			"log commit failed (%s): replying ERR %s until it works\n",
			strerror(-ret), ret == -ENOSPC ? "full" : "io");
	else if (ret >= 0 && s->io_failing)
		kvsrv__log("log commits work again\n");
	s->io_failing = ret < 0;

	/* Only now, with the batch's records durable, may replies leave. */
	for (i = 0; i < s->n; i++) {
		const struct kv_result *r = &kvsrv__out[i];
		struct kvsrv_src *src = &s->src[i];

		if (!r->len)
			continue; /* dropped */
		if (src->conn) {
			if (kvsrv__conn_queue(src->conn, r->reply, r->len))
				src->conn->dead = true;
			continue;
		}
		/* A lost reply is the client's to retry, as on any network. */
		sendto(s->udp, r->reply, r->len, MSG_DONTWAIT,
		       (const struct sockaddr *)&src->peer, src->peer_len);
	}
	s->n = 0;
}

/* After the batch: drop the consumed input, send replies, close what ended. */
static void kvsrv__settle(struct kvsrv *s)
{
	uint32_t i = 0;

	while (i < s->nconn) {
		struct kvsrv_conn *c = s->conn[i];

		memmove(c->in, c->in + c->taken, c->in_len - c->taken);
		c->in_len -= c->taken;
		c->taken = 0;
		if (c->out_len)
			kvsrv__conn_flush(c);
		if (c->dead || (c->eof && !c->in_len && !c->out_len)) {
			kvsrv__conn_close(s, i);
			continue;
		}
		i++;
	}
}

/* True if requests are buffered already, so poll must not wait. */
static bool kvsrv__pending(const struct kvsrv *s)
{
	uint32_t i;

	for (i = 0; i < s->nconn; i++) {
		const struct kvsrv_conn *c = s->conn[i];

		if (c->dead || !c->in_len || kvsrv__conn_backlogged(c))
			continue;
		if (c->eof || memchr(c->in, '\n', c->in_len))
			return true;
	}
	return false;
}

static int kvsrv__poll(struct kvsrv *s)
{
	uint32_t i, n = s->nconn + 2;
	int r;

	if (n > s->pfd_cap) {
		struct pollfd *p = realloc(s->pfd, n * 2 * sizeof(*p));

		if (!p)
			return -ENOMEM;
		s->pfd = p;
		s->pfd_cap = n * 2;
	}
	s->pfd[0] = (struct pollfd){ .fd = s->udp, .events = POLLIN };
	s->pfd[1] = (struct pollfd){
		.fd = s->accept_paused ? -1 : s->tcp,
		.events = POLLIN,
	};
	for (i = 0; i < s->nconn; i++) {
		const struct kvsrv_conn *c = s->conn[i];
		short ev = 0;

		if (!c->eof && c->in_len < KVSRV_LINE_MAX &&
		    !kvsrv__conn_backlogged(c))
			ev |= POLLIN;
		if (c->out_len)
			ev |= POLLOUT;
		s->pfd[i + 2] = (struct pollfd){ .fd = c->fd, .events = ev };
	}
	r = poll(s->pfd, n, kvsrv__pending(s) ? 0 : -1);
	if (r < 0)
		return errno == EINTR ? 0 : -errno;
	/* The pollfds match the connections until anything is accepted or
	 * closed: read and write first. */
	for (i = 0; i < s->nconn; i++) {
		short rev = s->pfd[i + 2].revents;

		if (rev & (POLLIN | POLLHUP | POLLERR))
			kvsrv__conn_read(s->conn[i]);
		if (rev & POLLOUT)
			kvsrv__conn_flush(s->conn[i]);
	}
	if (s->pfd[1].revents & POLLIN)
		kvsrv__accept(s);
	return 0;
}

static int kvsrv__serve(struct kvsrv *s)
{
	while (!kvsrv__stop) {
		bool udp;
		int ret;

		ret = kvsrv__poll(s);
		if (ret) {
			kvsrv__err("poll: %s\n", strerror(-ret));
			return 1;
		}
		udp = s->pfd[0].revents & POLLIN;
		/* Datagrams and lines share the batch, neither starving the
		 * other: half for datagrams, the lines, then datagrams again. */
		if (udp)
			kvsrv__gather_udp(s, KV_BATCH_MAX / 2);
		kvsrv__gather_tcp(s);
		if (udp)
			kvsrv__gather_udp(s, KV_BATCH_MAX);
		if (s->n)
			kvsrv__run(s);
		kvsrv__settle(s);
	}
	return 0;
}

/* --- probe --------------------------------------------------------------- */

static int64_t kvsrv__now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Send a PING over UDP, re-sent every 100 ms, and wait up to timeout_ms for
 * any reply to it (even "ERR stale" means the service answers).
 */
static int kvsrv__ping(const struct sockaddr_storage *to, socklen_t to_len,
		       int timeout_ms)
{
	char msg[128], reply[KVSRV_DGRAM_MAX], where[INET6_ADDRSTRLEN + 8];
	int64_t end = kvsrv__now_ms() + timeout_ms, now;
	struct timespec ts;
	size_t id_len;
	int fd, len;

	clock_gettime(CLOCK_REALTIME, &ts);
	len = snprintf(msg, sizeof(msg), "kemari-ping-%d %" PRIu64 " PING",
		       (int)getpid(),
		       (uint64_t)ts.tv_sec * 1000000u +
			       (uint64_t)ts.tv_nsec / 1000);
	id_len = strcspn(msg, " ");
	kvsrv__addr_str(to, where, sizeof(where));
	fd = socket(to->ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		kvsrv__err("ping: socket: %s\n", strerror(errno));
		return 1;
	}
	while ((now = kvsrv__now_ms()) < end) {
		int64_t slice = RT_MIN(now + 100, end);

		sendto(fd, msg, (size_t)len, 0, (const struct sockaddr *)to,
		       to_len);
		while ((now = kvsrv__now_ms()) < slice) {
			struct pollfd p = { .fd = fd, .events = POLLIN };
			ssize_t r;

			if (poll(&p, 1, (int)(slice - now)) <= 0)
				continue;
			r = recv(fd, reply, sizeof(reply) - 1, 0);
			if (r > (ssize_t)id_len &&
			    !memcmp(reply, msg, id_len) &&
			    reply[id_len] == ' ') {
				char *rest;

				reply[r] = '\0';
				rest = strchr(reply + id_len + 1, ' ');
				printf("%s\n", rest ? rest + 1 : reply);
				close(fd);
				return 0;
			}
			/* Refused (nobody bound yet): wait out the slice. */
			if (r < 0 && errno == ECONNREFUSED) {
				now = kvsrv__now_ms();
				if (slice > now)
					usleep((useconds_t)(slice - now) *
					       1000);
			}
		}
	}
	close(fd);
	kvsrv__err("ping: no reply from %s within %d ms\n", where, timeout_ms);
	return 1;
}

/* --- main ---------------------------------------------------------------- */

static void kvsrv__usage(FILE *f)
{
	fprintf(f,
		"usage: kemari-kvstore [--disk=PATH] [--port=N] [--bind=ADDR]\n"
		"       kemari-kvstore --ping [--port=N] [--bind=ADDR] [--timeout-ms=N]\n"
		"\n"
		"Serves the kvstore protocol (docs/kvstore.md) on UDP and TCP port N\n"
		"(default 7500; TCP: one request per line, one reply per line) at\n"
		"ADDR (default 0.0.0.0; IPv4 or IPv6), with its write-ahead log on\n"
		"PATH (default /dev/vda; a block device, or a file of at least 2 KiB,\n"
		"all zeroes when new). Every update is durable before its reply.\n"
		"Prints 'kvstore: ready, N records replayed, K keys' when serving;\n"
		"exits 0 on SIGTERM or SIGINT.\n"
		"--ping: send a PING over UDP to ADDR (loopback if ADDR is a wildcard)\n"
		"and exit 0 once answered, 1 after --timeout-ms (default 1000).\n");
}

static int kvsrv__port(const char *text, uint16_t *port)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(text, &end, 10);
	if (errno || end == text || *end || !v || v > 65535)
		return -EINVAL;
	*port = (uint16_t)v;
	return 0;
}

static void kvsrv__signals(void)
{
	struct sigaction sa = { .sa_handler = kvsrv__on_stop };
	struct rlimit rl;

	/* No SA_RESTART: the blocked poll must return to see the flag. */
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	/* Room for many clients, as far as the hard limit allows. */
	if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "disk", required_argument, NULL, 'd' },
		{ "port", required_argument, NULL, 'p' },
		{ "bind", required_argument, NULL, 'b' },
		{ "ping", no_argument, NULL, 'P' },
		{ "timeout-ms", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *disk = "/dev/vda", *bind_text = "0.0.0.0";
	struct kvsrv s = { .udp = -1, .tcp = -1 };
	struct sockaddr_storage ss;
	socklen_t ss_len;
	uint16_t port = 7500;
	bool ping = false;
	int ch, ret = 1, timeout_ms = 1000;

	while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (ch) {
		case 'd':
			disk = optarg;
			break;
		case 'p':
			if (kvsrv__port(optarg, &port)) {
				kvsrv__err("--port=%s: expected 1-65535\n",
					   optarg);
				return 2;
			}
			break;
		case 'b':
			bind_text = optarg;
			break;
		case 'P':
			ping = true;
			break;
		case 't':
			timeout_ms = atoi(optarg);
			break;
		case 'h':
			kvsrv__usage(stdout);
			return 0;
		default:
			kvsrv__usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		kvsrv__err("unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	if (kvsrv__addr(bind_text, port, &ss, &ss_len)) {
		kvsrv__err(
			"--bind=%s: expected a numeric IPv4 or IPv6 address\n",
			bind_text);
		return 2;
	}
	if (ping) {
		if (!strcmp(bind_text, "0.0.0.0"))
			kvsrv__addr("127.0.0.1", port, &ss, &ss_len);
		else if (!strcmp(bind_text, "::"))
			kvsrv__addr("::1", port, &ss, &ss_len);
		return kvsrv__ping(&ss, ss_len, timeout_ms);
	}

	/* Replay before binding: a client must not reach a server that
	 * does not hold the log's state yet. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	kvsrv__signals();
	if (kvsrv__disk_open(&s.disk, disk))
		return 1;
	if (kvsrv__log_open(&s.disk))
		goto out_disk;
	s.udp = kvsrv__listen(SOCK_DGRAM, &ss, ss_len, bind_text, port);
	if (s.udp < 0)
		goto out_disk;
	s.tcp = kvsrv__listen(SOCK_STREAM, &ss, ss_len, bind_text, port);
	if (s.tcp < 0)
		goto out_udp;

	printf("kvstore: ready, %" PRIu64 " records replayed, %u keys\n",
	       kvsrv__wal.replayed, kvsrv__state.nkeys);
	ret = kvsrv__serve(&s);
	if (!ret)
		kvsrv__log("stopping\n");

	while (s.nconn)
		kvsrv__conn_close(&s, 0);
	free(s.conn);
	free(s.pfd);
	close(s.tcp);
out_udp:
	close(s.udp);
out_disk:
	close(s.disk.fd);
	return ret;
}
