// SPDX-License-Identifier: MIT
/*
 * Replication frames as the secondary's tcp transport reads them
 * (transports/tcp/tcp.c: header, checksum, control payloads, PAGES run
 * lists and their data landing in the receive buffers), over a real
 * loopback connection. Input: the byte stream, read as frames: a frame
 * whose header has flags 0 gets its checksum computed here (so the
 * fuzzer reaches what lies behind it; other flags keep the checksum as
 * given), and a PAGES frame whose runs total at most FUZZ_RAM_PAGES pages
 * is followed by their page data, made here. The stream ends with the
 * input.
 *
 * Beyond the sanitizers: the receive buffers sit between inaccessible
 * guard pages, and a message delivered is exactly one sent.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
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
#define FUZZ_STREAM_MAX (512u * 1024) /* fits the loopback buffers */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
extern const struct kemari_xport_ops kemari_xport_tcp;

static struct kemari_xport *lst;
static struct sockaddr_in lst_sa;
static uint8_t *dst;
static uint8_t *stream;

static void setup(void)
{
	struct kemari_xport_opts opts = { 0 };
	socklen_t sl = sizeof(lst_sa);
	char addr[32];
	uint8_t *map;
	int fd;

	fuzz__quiet();
	/* A free port: bound and released (the listener rebinds it). */
	fd = socket(AF_INET, SOCK_STREAM, 0);
	lst_sa = (struct sockaddr_in){ .sin_family = AF_INET };
	lst_sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&lst_sa, sizeof(lst_sa)) ||
	    getsockname(fd, (struct sockaddr *)&lst_sa, &sl))
		abort();
	close(fd);
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", ntohs(lst_sa.sin_port));
	if (kemari_xport_tcp.listen(&lst, addr, &opts))
		abort();
	map = mmap(NULL, (FUZZ_RAM_PAGES + 2) * PG, PROT_NONE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	stream = malloc(FUZZ_STREAM_MAX);
	if (map == MAP_FAILED || !stream)
		abort();
	dst = map + PG;
	if (mprotect(dst, FUZZ_RAM_PAGES * PG, PROT_READ | PROT_WRITE))
		abort();
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
				for (uint64_t b = 0; b < pages * PG; b++)
					stream[len + b] = (uint8_t)(b / PG + 1);
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
	struct kemari_xport *c;
	size_t len, off = 0;
	int fd, buf = 4 << 20;

	if (!lst)
		setup();
	len = build(data, size);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		abort();
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
	if (connect(fd, (struct sockaddr *)&lst_sa, sizeof(lst_sa)) ||
	    lst->ops->accept(lst, &c, 5000))
		abort();
	c->ops->reg_dst(c, dst, FUZZ_RAM_PAGES * PG);
	while (off < len) {
		ssize_t n = send(fd, stream + off, len - off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n <= 0)
			break; /* the buffers are full: the rest is cut */
		off += (size_t)n;
	}
	shutdown(fd, SHUT_WR);
	for (;;) {
		struct kemari_msg m;

		if (c->ops->recv(c, &m, 1000))
			break;
		if (m.type == KEMARI_MSG_PAGES || m.len > KEMARI_MSG_MAX ||
		    (m.len && !m.payload))
			abort(); /* not a message anyone sent */
	}
	c->ops->close(c);
	close(fd);
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
