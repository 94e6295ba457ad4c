// SPDX-License-Identifier: MIT
/*
 * Replication frames as the secondary's tcp transport reads them
 * (transports/tcp/tcp.c: header, checksum, control payloads, PAGES run
 * lists and their data landing in the receive buffers), over a stream
 * socket. Input: the byte stream, read as frames: a frame whose header
 * has flags 0 gets its checksum computed here (so the fuzzer reaches what
 * lies behind it; other flags keep the checksum as given), and a PAGES
 * frame whose runs total at most FUZZ_RAM_PAGES pages is followed by their
 * page data, made here. The stream ends with the input.
 *
 * One connection is accepted once, over loopback; each input then gets a
 * socketpair of its own, put in place of that connection's socket (dup3
 * onto the descriptor the transport reads), so the same tcp.c code reads
 * every input from its first byte to its end of stream, with nothing left
 * of the input before: tcp.c keeps no state between frames but the socket
 * and its receive stage, which the error ending each input empties (each
 * input is read until recv fails). A connection per input made the harness ten times slower (its
 * 256 KiB receive buffer alone is an mmap and a munmap under ASan).
 *
 * Beyond the sanitizers: the receive buffers sit between inaccessible
 * guard pages, and a message delivered is exactly one sent.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sanitizer/asan_interface.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "kemari/buf.h"
#include "kemari/kemari.h"
#include "kemari/wire.h"
#include "kemari/xport.h"

#define PG KEMARI_PAGE_SIZE
#define FUZZ_STREAM_MAX (512u * 1024) /* fits the socket buffer */
#define FUZZ_SNDBUF (4 << 20)
#define FUZZ_SNDBUF_DEFAULT (64u * 1024)
#define FUZZ_FD_SCAN 1024

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
extern const struct kemari_xport_ops kemari_xport_tcp;

static struct kemari_xport *conn;
static int conn_fd = -1; /* the socket conn reads: each input's goes here */
static uint8_t *dst;
static uint8_t *stream;

/*
 * Nothing on the path fuzzed allocates, so ASan's quarantine holds only
 * libFuzzer's copies of past inputs; recycling them through the default
 * 256 MiB (page faults, fills) took 15 to 25% of the time.
 */
const char *__asan_default_options(void)
{
	return "quarantine_size_mb=16";
}

static bool same_sin(const struct sockaddr_in *a, const struct sockaddr_in *b)
{
	return a->sin_family == AF_INET && b->sin_family == AF_INET &&
	       a->sin_port == b->sin_port &&
	       a->sin_addr.s_addr == b->sin_addr.s_addr;
}

/* The descriptor whose ends are fd's, reversed: the accepted socket. */
static int peer_fd(int fd)
{
	struct sockaddr_in me, peer;
	socklen_t ml = sizeof(me), pl = sizeof(peer);
	int found = -1;

	if (getsockname(fd, (struct sockaddr *)&me, &ml) ||
	    getpeername(fd, (struct sockaddr *)&peer, &pl))
		abort();
	for (int i = 0; i < FUZZ_FD_SCAN; i++) {
		struct sockaddr_in a, b;
		socklen_t al = sizeof(a), bl = sizeof(b);

		if (i == fd || getsockname(i, (struct sockaddr *)&a, &al) ||
		    getpeername(i, (struct sockaddr *)&b, &bl) ||
		    al != sizeof(a) || bl != sizeof(b))
			continue;
		if (same_sin(&a, &peer) && same_sin(&b, &me)) {
			if (found >= 0)
				abort();
			found = i;
		}
	}
	if (found < 0)
		abort();
	return found;
}

/*
 * stream[0..len) as the whole of a fresh connection to conn, its writing
 * end already closed (the reader gets every byte, then the end of the
 * stream); what does not fit the socket buffer is cut.
 */
static void feed(size_t len)
{
	int sv[2], buf = FUZZ_SNDBUF;
	size_t off = 0;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) ||
	    dup3(sv[0], conn_fd, O_CLOEXEC) < 0)
		abort();
	close(sv[0]);
	/* The default buffer holds this much: a syscall less per input. */
	if (len > FUZZ_SNDBUF_DEFAULT)
		setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
	while (off < len) {
		ssize_t n = send(sv[1], stream + off, len - off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n <= 0)
			break; /* the buffer is full: the rest is cut */
		off += (size_t)n;
	}
	close(sv[1]);
}

static void setup(void)
{
	struct kemari_xport_opts opts = { 0 };
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	struct kemari_xport *lst;
	struct kemari_wire_hdr h;
	struct kemari_msg m;
	char addr[32];
	uint8_t *map;
	int fd;

	fuzz__quiet();
	/* A free port: bound and released (the listener rebinds it). */
	fd = socket(AF_INET, SOCK_STREAM, 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) ||
	    getsockname(fd, (struct sockaddr *)&sa, &sl))
		abort();
	close(fd);
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", ntohs(sa.sin_port));
	if (kemari_xport_tcp.listen(&lst, addr, &opts))
		abort();
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) ||
	    lst->ops->accept(lst, &conn, 5000))
		abort();
	conn_fd = peer_fd(fd);
	close(fd);
	lst->ops->close(lst);
	map = mmap(NULL, (FUZZ_RAM_PAGES + 2) * PG, PROT_NONE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	stream = malloc(FUZZ_STREAM_MAX);
	if (map == MAP_FAILED || !stream)
		abort();
	dst = map + PG;
	if (mprotect(dst, FUZZ_RAM_PAGES * PG, PROT_READ | PROT_WRITE))
		abort();
	conn->ops->reg_dst(conn, dst, FUZZ_RAM_PAGES * PG);
	/* conn reads what is put in place: a heartbeat, then the end. */
	kemari_wire__seal(&h, KEMARI_MSG_HEARTBEAT, 3, NULL, 0);
	memcpy(stream, &h, sizeof(h));
	feed(sizeof(h));
	if (conn->ops->recv(conn, &m, 1000) || m.type != KEMARI_MSG_HEARTBEAT ||
	    m.epoch != 3 || conn->ops->recv(conn, &m, 1000) != -ECONNRESET)
		abort();
	kemari_err_clear();
}

/* The stream the input describes; its length. */
static size_t build(const uint8_t *in, size_t left)
{
	size_t len = 0;

	while (left >= sizeof(struct kemari_wire_hdr)) {
		struct kemari_wire_hdr h;
		size_t body;

		memcpy(&h, in, sizeof(h));
		in += sizeof(h);
		left -= sizeof(h);
		body = KEMARI_MIN((size_t)h.len, left);
		if (len + sizeof(h) + body > FUZZ_STREAM_MAX)
			break;
		if (h.flags == 0 && body == h.len)
			kemari_wire__seal(&h, h.type, h.epoch, in, h.len);
		memcpy(stream + len, &h, sizeof(h));
		memcpy(stream + len + sizeof(h), in, body);
		len += sizeof(h) + body;
		if (h.type == KEMARI_MSG_PAGES &&
		    body % sizeof(struct kemari_run) == 0) {
			uint64_t pages = 0;

			for (size_t i = 0; i < body;
			     i += sizeof(struct kemari_run)) {
				struct kemari_run r;

				memcpy(&r, in + i, sizeof(r));
				pages += r.npages;
			}
			if (pages <= FUZZ_RAM_PAGES &&
			    len + pages * PG <= FUZZ_STREAM_MAX) {
				/* Page i of the frame is filled with i + 1. */
				for (uint64_t i = 0; i < pages; i++)
					memset(stream + len + i * PG,
					       (uint8_t)(i + 1), PG);
				len += pages * PG;
			}
		}
		in += body;
		left -= body;
	}
	/* A trailing partial header: a truncated stream. */
	left = KEMARI_MIN(left, FUZZ_STREAM_MAX - len);
	memcpy(stream + len, in, left);
	return len + left;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!conn)
		setup();
	feed(build(data, size));
	for (;;) {
		struct kemari_msg m;

		if (conn->ops->recv(conn, &m, 1000))
			break;
		if (m.type == KEMARI_MSG_PAGES || m.len > KEMARI_MSG_MAX ||
		    (m.len && !m.payload))
			abort(); /* not a message anyone sent */
	}
	kemari_err_clear();
	return 0;
}

/* A frame for build(): flags 0 (sealed there) unless raw. */
static void seed_frame(struct kemari_buf *b, uint16_t type, uint64_t epoch,
		       const void *p, uint32_t len, bool raw)
{
	struct kemari_wire_hdr h;

	kemari_wire__seal(&h, type, epoch, p, len);
	if (raw)
		h.flags = 1;
	else
		h.crc = 0;
	kemari_buf__append(b, &h, sizeof(h));
	if (len)
		kemari_buf__append(b, p, len);
}

void fuzz_seeds(void)
{
	static const struct kemari_run runs[] = { { .pfn = 1, .npages = 2 },
						  { .pfn = 15, .npages = 1 } };
	struct kemari_hello hello = { .proto_version = KEMARI_PROTO_VERSION,
				      .page_size = KEMARI_PAGE_SIZE };
	struct kemari_commit c = { .nruns = 2, .npages = 3 };
	struct kemari_buf b = { 0 };

	seed_frame(&b, KEMARI_MSG_HELLO, 0, &hello, sizeof(hello), false);
	seed_frame(&b, KEMARI_MSG_PAGES, 0, runs, sizeof(runs), false);
	seed_frame(&b, KEMARI_MSG_RUNS, 7, runs, sizeof(runs), false);
	seed_frame(&b, KEMARI_MSG_CPU_STATE, 7, "cpu", 3, false);
	seed_frame(&b, KEMARI_MSG_COMMIT, 7, &c, sizeof(c), false);
	seed_frame(&b, KEMARI_MSG_HEARTBEAT, 7, NULL, 0, false);
	fuzz__seed("epoch", b.data, b.len);
	kemari_buf__reset(&b);
	seed_frame(&b, KEMARI_MSG_HEARTBEAT, 1, NULL, 0, true);
	seed_frame(&b, KEMARI_MSG_ACK, 1, &c, 8, true);
	fuzz__seed("raw", b.data, b.len);
	kemari_buf__fini(&b);
}
