// SPDX-License-Identifier: MIT
/*
 * Fuzz tests, run natively in make check (seeded: a failure names the seed
 * that reproduces it; KEMARI_FUZZ_SEED and KEMARI_FUZZ_ROUNDS override).
 *
 * replication_stream: the secondary's side of the tcp transport reads
 * streams that are valid frames (control messages, page runs with data)
 * with, from some random point on, damage: a flipped bit, a truncation, a
 * random length, runs outside guest RAM, raw garbage. The receive buffers
 * sit between inaccessible guard pages. Exact outcomes: every message
 * before the damage arrives unchanged, every page run before it lands
 * exactly, nothing after it is delivered as a message, the stream ends in
 * an error, and no byte outside the runs sent changes.
 *
 * kvstore_datagrams: random and mutated datagrams into the kvstore's
 * protocol handler (the guest's own sources, built natively): no crash, and
 * every reply is well formed and within the reply size.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kemari/kemari.h"
#include "kemari/wire.h"
#include "kemari/xport.h"
#include "kv/kvcore.h"

#define PG KEMARI_PAGE_SIZE
#define RAM_PAGES 64u
#define MAX_FRAMES 24

static unsigned int env_uint(const char *k, unsigned int def)
{
	const char *v = getenv(k);

	return v && *v ? (unsigned int)strtoul(v, NULL, 0) : def;
}

static uint32_t rnd(uint64_t *s)
{
	*s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
	return (uint32_t)(*s >> 33);
}

/* --- replication stream over tcp --------------------------------------- */

struct frame {
	bool pages;
	uint16_t type;
	uint64_t epoch;
	uint32_t len; /* control payload bytes, or number of runs */
	uint8_t payload[512];
	struct kemari_run runs[4];
};

struct stream {
	uint8_t *bytes;
	size_t len, cap;
	size_t damage_at; /* byte offset of the damage; len: none */
	/* The damaged frame's original runs may have landed in part. */
	const struct frame *partial;
	struct frame frames[MAX_FRAMES];
	size_t frame_end[MAX_FRAMES]; /* byte offset after each frame */
	unsigned int nframes;
};

static void put(struct stream *s, const void *p, size_t n)
{
	if (s->len + n > s->cap) {
		s->cap = (s->len + n) * 2;
		s->bytes = realloc(s->bytes, s->cap);
		cr_assert(s->bytes != NULL);
	}
	memcpy(s->bytes + s->len, p, n);
	s->len += n;
}

/* Page content a run carries: a function of page number and seed. */
static uint8_t page_byte(uint64_t seed, uint64_t pfn, size_t i)
{
	return (uint8_t)(seed * 131 + pfn * 7 + i * 13 + 1);
}

static void add_frame(struct stream *s, uint64_t *r, uint64_t seed)
{
	struct frame *f = &s->frames[s->nframes];
	struct kemari_wire_hdr h;

	memset(f, 0, sizeof(*f));
	f->epoch = rnd(r);
	if (rnd(r) % 3 == 0) {
		uint64_t next = rnd(r) % RAM_PAGES;

		f->pages = true;
		f->len = 1 + rnd(r) % 4;
		for (uint32_t i = 0; i < f->len; i++) {
			uint32_t room;

			if (next >= RAM_PAGES)
				next = rnd(r) % RAM_PAGES;
			room = (uint32_t)(RAM_PAGES - next);
			f->runs[i].pfn = next;
			f->runs[i].npages = 1 + rnd(r) % KEMARI_MIN(room, 3u);
			next += f->runs[i].npages + rnd(r) % 4;
		}
		kemari_wire__seal(&h, KEMARI_MSG_PAGES, 0, f->runs,
				  f->len * sizeof(f->runs[0]));
		put(s, &h, sizeof(h));
		put(s, f->runs, f->len * sizeof(f->runs[0]));
		for (uint32_t i = 0; i < f->len; i++)
			for (uint32_t p = 0; p < f->runs[i].npages; p++) {
				uint8_t pg[PG];

				for (size_t k = 0; k < PG; k++)
					pg[k] = page_byte(
						seed, f->runs[i].pfn + p, k);
				put(s, pg, PG);
			}
	} else {
		static const uint16_t types[] = {
			KEMARI_MSG_RUNS,      KEMARI_MSG_CPU_STATE,
			KEMARI_MSG_DEV_STATE, KEMARI_MSG_COMMIT,
			KEMARI_MSG_HEARTBEAT, KEMARI_MSG_ACK,
		};

		f->type = types[rnd(r) % KEMARI_ARRAY_SIZE(types)];
		f->len = rnd(r) % sizeof(f->payload);
		for (uint32_t i = 0; i < f->len; i++)
			f->payload[i] = (uint8_t)rnd(r);
		kemari_wire__seal(&h, f->type, f->epoch, f->payload, f->len);
		put(s, &h, sizeof(h));
		put(s, f->payload, f->len);
	}
	s->frame_end[s->nframes++] = s->len;
}

/* Damage the stream at or after byte `at` (inside the last frame). */
static void damage(struct stream *s, uint64_t *r, size_t start)
{
	size_t flen = s->len - start;
	struct kemari_wire_hdr h;

	if (s->frames[s->nframes - 1].pages)
		s->partial = &s->frames[s->nframes - 1];

	switch (rnd(r) % 5) {
	case 0: /* one flipped bit in the last frame's header or run list */
		s->damage_at = start + rnd(r) % KEMARI_MIN(flen, 64u);
		s->bytes[s->damage_at] ^= (uint8_t)(1u << (rnd(r) % 8));
		break;
	case 1: /* truncated */
		s->damage_at = start;
		s->len = start + rnd(r) % flen;
		break;
	case 2: /* a header with a random length, valid otherwise */
		memcpy(&h, s->bytes + start, sizeof(h));
		h.len = rnd(r);
		h.crc = 0;
		s->damage_at = start;
		memcpy(s->bytes + start, &h, sizeof(h));
		break;
	case 3: { /* a sealed PAGES frame whose run leaves guest RAM */
		struct kemari_run run = { .pfn = RAM_PAGES - 2 + rnd(r) % 4 };

		/* Crosses the end of guest RAM by one or two pages. */
		run.npages = (uint32_t)(RAM_PAGES + 1 + rnd(r) % 2 -
					KEMARI_MIN(run.pfn, RAM_PAGES));

		s->len = start;
		s->damage_at = start;
		s->partial = NULL; /* nothing of it may land */
		kemari_wire__seal(&h, KEMARI_MSG_PAGES, 0, &run, sizeof(run));
		put(s, &h, sizeof(h));
		put(s, &run, sizeof(run));
		for (uint32_t p = 0; p < run.npages; p++) {
			uint8_t pg[PG];

			memset(pg, 0x5a, sizeof(pg));
			put(s, pg, PG);
		}
		break;
	}
	default: /* garbage instead of the frame */
		s->partial = NULL;
		s->len = start;
		s->damage_at = start;
		for (unsigned int i = 0; i < 16 + rnd(r) % 200; i++) {
			uint8_t b = (uint8_t)rnd(r);

			put(s, &b, 1);
		}
		break;
	}
}

struct writer {
	int fd;
	const struct stream *s;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	size_t off = 0;

	while (off < w->s->len) {
		ssize_t n = send(w->fd, w->s->bytes + off, w->s->len - off,
				 MSG_NOSIGNAL);

		if (n <= 0)
			break; /* the receiver dropped us: fine */
		off += (size_t)n;
	}
	shutdown(w->fd, SHUT_WR);
	return NULL;
}

static int connect_to(uint16_t port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa.sin_port = htons(port);
	cr_assert(fd >= 0);
	cr_assert(eq(int, connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0));
	return fd;
}

static uint16_t free_port(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert(eq(int, bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0));
	getsockname(fd, (struct sockaddr *)&sa, &sl);
	close(fd);
	return ntohs(sa.sin_port);
}

/* Expected receive buffers: what every run before the damage wrote. */
static void apply_expected(uint8_t *exp, const struct frame *f, uint64_t seed)
{
	for (uint32_t i = 0; i < f->len; i++)
		for (uint32_t p = 0; p < f->runs[i].npages; p++)
			for (size_t k = 0; k < PG; k++)
				exp[(f->runs[i].pfn + p) * PG + k] =
					page_byte(seed, f->runs[i].pfn + p, k);
}

Test(fuzz, replication_stream, .timeout = 600)
{
	unsigned int rounds = env_uint("KEMARI_FUZZ_ROUNDS", 400);
	uint64_t seed0 = env_uint("KEMARI_FUZZ_SEED", (unsigned int)getpid());
	const struct kemari_xport_opts opts = { 0 };
	uint16_t port = free_port();
	struct kemari_xport *lst;
	char addr[32];
	size_t map_len = (RAM_PAGES + 2) * PG;
	uint8_t *map, *dst, *exp = malloc(RAM_PAGES * PG);
	unsigned int damaged = 0, clean = 0;

	snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
	const struct kemari_xport_ops *tcp = kemari_xport_find("tcp");

	cr_assert(tcp != NULL);
	cr_assert(eq(int, tcp->listen(&lst, addr, &opts), 0));
	map = mmap(NULL, map_len, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert(map != MAP_FAILED && exp != NULL);
	mprotect(map, PG, PROT_NONE);
	mprotect(map + map_len - PG, PG, PROT_NONE);
	dst = map + PG;

	for (unsigned int round = 0; round < rounds; round++) {
		uint64_t seed = seed0 * 1000003ULL + round, r = seed;
		struct stream s = { 0 };
		struct writer w;
		struct kemari_xport *c;
		pthread_t tid;
		unsigned int got = 0, n = 1 + rnd(&r) % (MAX_FRAMES - 1);
		bool hurt = rnd(&r) % 4 != 0;
		int err;

		for (unsigned int i = 0; i < n; i++)
			add_frame(&s, &r, seed);
		s.damage_at = s.len;
		if (hurt)
			damage(&s, &r, n > 1 ? s.frame_end[n - 2] : 0);
		memset(dst, 0xee, RAM_PAGES * PG);
		memset(exp, 0xee, RAM_PAGES * PG);

		w.fd = connect_to(port);
		w.s = &s;
		cr_assert(eq(int, lst->ops->accept(lst, &c, 5000), 0));
		cr_assert(eq(int, c->ops->reg_dst(c, dst, RAM_PAGES * PG), 0));
		pthread_create(&tid, NULL, writer_main, &w);
		for (;;) {
			struct kemari_msg m;

			err = c->ops->recv(c, &m, 5000);
			if (err)
				break;
			/* Skip the page frames the transport consumed. */
			while (got < s.nframes && s.frames[got].pages)
				apply_expected(exp, &s.frames[got++], seed);
			cr_assert(lt(u32, got, s.nframes),
				  "seed %llu: a message past the end",
				  (unsigned long long)seed);
			cr_assert(
				le(u64, s.frame_end[got], s.damage_at),
				"seed %llu: frame %u after the damage was delivered",
				(unsigned long long)seed, got);
			cr_assert(eq(u16, m.type, s.frames[got].type),
				  "seed %llu", (unsigned long long)seed);
			cr_assert(eq(u64, m.epoch, s.frames[got].epoch));
			cr_assert(eq(u32, m.len, s.frames[got].len));
			cr_assert(eq(int,
				     memcmp(m.payload, s.frames[got].payload,
					    m.len),
				     0));
			got++;
		}
		/* Page frames intact before the damage landed, nothing else. */
		while (got < s.nframes && s.frames[got].pages &&
		       s.frame_end[got] <= s.damage_at)
			apply_expected(exp, &s.frames[got++], seed);
		c->ops->close(c);
		pthread_join(tid, NULL);
		close(w.fd);

		cr_assert(ne(int, err, 0));
		if (!hurt) {
			/* Clean stream: all of it, then end of stream. */
			cr_assert(
				eq(u32, got, s.nframes),
				"seed %llu: %u of %u frames (next: %s, stream end: %s)",
				(unsigned long long)seed, got, s.nframes,
				s.frames[got].pages ? "pages" : "message",
				kemari_last_error(err));
			clean++;
		} else {
			damaged++;
		}
		/* Bytes no intact run covered are untouched; a damaged run
		 * may have landed in part, but only inside its own pages. */
		for (size_t b = 0; b < RAM_PAGES * PG; b++) {
			bool ok = dst[b] == exp[b];

			for (uint32_t i = 0;
			     !ok && s.partial && i < s.partial->len; i++)
				ok = b / PG >= s.partial->runs[i].pfn &&
				     b / PG < s.partial->runs[i].pfn +
						      s.partial->runs[i].npages;
			cr_assert(
				ok,
				"seed %llu: byte %zu changed (%02x, expected %02x)",
				(unsigned long long)seed, b, dst[b], exp[b]);
		}
		free(s.bytes);
	}
	cr_log_info(
		"replication stream: %u clean and %u damaged streams, seed %llu",
		clean, damaged, (unsigned long long)seed0);
	cr_assert(gt(u32, clean, 0));
	cr_assert(gt(u32, damaged, 0));
	lst->ops->close(lst);
	munmap(map, map_len);
	free(exp);
}

/* --- kvstore datagrams ------------------------------------------------- */

static const char *const words[] = {
	"SET",
	"GET",
	"DEL",
	"INCR",
	"PING",
	"set",
	"INC",
	"",
	" ",
	"k",
	"key",
	"v",
	"0",
	"-1",
	"18446744073709551615",
	"99999999999999999999",
	"c1",
	"7",
	"\t",
	"\n",
	"x x",
};

Test(fuzz, kvstore_datagrams, .timeout = 300)
{
	unsigned int rounds = env_uint("KEMARI_FUZZ_ROUNDS", 400) * 250;
	uint64_t r = env_uint("KEMARI_FUZZ_SEED", (unsigned int)getpid());
	struct kv_state *st = malloc(sizeof(*st));
	struct kv_result *res = malloc(sizeof(*res));
	unsigned int replied = 0;

	cr_assert(st != NULL && res != NULL);
	kv__init(st, KV_MAX_KEYS, KV_MAX_CLIENTS);
	for (unsigned int i = 0; i < rounds; i++) {
		char msg[600];
		size_t len = 0;

		if (rnd(&r) % 2) {
			/* Tokens, sometimes a well-formed request. */
			unsigned int nt = rnd(&r) % 6;

			for (unsigned int t = 0; t < nt; t++) {
				const char *w = words[rnd(&r) %
						      KEMARI_ARRAY_SIZE(words)];
				size_t wl = strlen(w);

				if (len + wl + 1 >= sizeof(msg))
					break;
				memcpy(msg + len, w, wl);
				len += wl;
				if (rnd(&r) % 8)
					msg[len++] = ' ';
			}
		} else {
			len = rnd(&r) % sizeof(msg);
			for (size_t k = 0; k < len; k++)
				msg[k] = (char)rnd(&r);
		}
		if (kv__handle(st, msg, len, res))
			continue; /* dropped: no reply at all */
		replied++;
		cr_assert(le(u32, res->len, KV_REPLY_MAX));
		cr_assert(eq(u32, (uint32_t)strlen(res->reply), res->len),
			  "round %u: reply length", i);
		cr_assert(le(u32, res->prefix_len, res->len));
	}
	cr_log_info("kvstore: %u datagrams, %u answered", rounds, replied);
	cr_assert(gt(u32, replied, 0));
	free(st);
	free(res);
}
