// SPDX-License-Identifier: MIT
/*
 * dirtier guest: a benchmark workload with a known dirty rate. Each round
 * writes the round number into K distinct pages of a W-page working set and
 * then performs one output event (a block write or a datagram), the point at
 * which a Kemari-style VMM must have synchronised the secondary.
 *
 * Boot args: pages=K (16) ws=W (4096, clamped to free RAM) event=disk|net
 * (disk) dst=A.B.C.D:PORT (127.0.0.1:9) rounds=R (0 = forever).
 */
#include "rt/rt.h"

#define DIRTIER_PAGE 4096ULL
/* Pages of free RAM left alone at the end, so nothing sits on the edge. */
#define DIRTIER_MARGIN_PAGES 16ULL

struct dirtier {
	struct kemari_bootinfo *bi;
	uint64_t pages, ws, rounds;
	bool net;
	uint64_t dst;	   /* KEMARI_NET_ADDR */
	uint64_t base;	   /* first page of the working set */
	uint64_t capacity; /* block: sectors */
	struct rt_queue q;
};

static uint8_t dirtier__sector[KEMARI_SECTOR_SIZE]
	__attribute__((aligned(512)));
static char dirtier__dgram[64];

static uint64_t dirtier__arg_u64(const struct kemari_bootinfo *bi,
				 const char *key, uint64_t def)
{
	const char *v = rt__arg(bi, key);
	uint64_t n;

	if (!v)
		return def;
	if (rt__parse_u64(v, strlen(v), &n))
		guest_panic("dirtier: %s=%s is not a number", key, v);
	return n;
}

/* "A.B.C.D:PORT" -> KEMARI_NET_ADDR, or -EINVAL. */
static int dirtier__parse_dst(const char *s, uint64_t *addr)
{
	uint32_t ip = 0;
	uint64_t v;
	int part;

	for (part = 0; part < 5; part++) {
		char sep = part < 3 ? '.' : part == 3 ? ':' : '\0';
		size_t len = 0;

		while (s[len] && s[len] != sep)
			len++;
		if (s[len] != sep || rt__parse_u64(s, len, &v))
			return -EINVAL;
		if (part < 4) {
			if (v > 255)
				return -EINVAL;
			ip = ip << 8 | (uint32_t)v;
		} else if (v == 0 || v > 65535) {
			return -EINVAL;
		}
		s += len + (sep ? 1 : 0);
	}
	*addr = KEMARI_NET_ADDR(ip, v);
	return 0;
}

static void dirtier__setup(struct dirtier *d, struct kemari_bootinfo *bi)
{
	const struct kemari_bootinfo_dev *dev;
	const char *event = rt__arg(bi, "event");
	const char *dst = rt__arg(bi, "dst");
	uint64_t free_pages = 0;

	d->bi = bi;
	d->pages = dirtier__arg_u64(bi, "pages", 16);
	d->ws = dirtier__arg_u64(bi, "ws", 4096);
	d->rounds = dirtier__arg_u64(bi, "rounds", 0);

	if (!event || !strcmp(event, "disk"))
		d->net = false;
	else if (!strcmp(event, "net"))
		d->net = true;
	else
		guest_panic("dirtier: event=%s (want disk or net)", event);
	if (dirtier__parse_dst(dst ? dst : "127.0.0.1:9", &d->dst))
		guest_panic("dirtier: dst=%s (want A.B.C.D:PORT)", dst);

	d->base = (bi->image_end + DIRTIER_PAGE - 1) & ~(DIRTIER_PAGE - 1);
	if (bi->ram_size > d->base)
		free_pages = (bi->ram_size - d->base) / DIRTIER_PAGE;
	free_pages = free_pages > DIRTIER_MARGIN_PAGES
			     ? free_pages - DIRTIER_MARGIN_PAGES
			     : 0;
	d->ws = RT_MIN(d->ws, free_pages);
	if (d->pages > d->ws) {
		if (!d->ws)
			guest_panic("dirtier: no free RAM for a working set");
		d->pages = d->ws; /* the pages of a round must be distinct */
	}

	dev = rt__find_dev(bi, d->net ? KEMARI_DEV_NET : KEMARI_DEV_BLOCK);
	if (!dev || rt__queue_init(&d->q, dev, 0))
		guest_panic("dirtier: no usable %s device",
			    d->net ? "net" : "block");
	d->capacity = dev->capacity;
	if (!d->net && !d->capacity)
		guest_panic("dirtier: block device has no sectors");
}

/*
 * Touch K pages spread evenly over the working set: page i of round r is
 * i * stride + r % stride, so the K pages are distinct and successive rounds
 * walk through the whole set.
 */
static void dirtier__dirty(const struct dirtier *d, uint64_t round)
{
	uint64_t stride, off, i;

	if (!d->pages)
		return;
	stride = d->ws / d->pages;
	off = round % stride;
	for (i = 0; i < d->pages; i++) {
		uint64_t page = i * stride + off;
		volatile uint64_t *p =
			(volatile uint64_t *)(uintptr_t)(d->base +
							 page * DIRTIER_PAGE);

		*p = round;
	}
}

static void dirtier__event(struct dirtier *d, uint64_t round)
{
	struct kemari_req req = { .id = round };
	struct kemari_rsp rsp;

	if (d->net) {
		int n = rt__snprintf(dirtier__dgram, sizeof(dirtier__dgram),
				     "dirtier round %lu", (unsigned long)round);

		req.gpa = (uintptr_t)dirtier__dgram;
		req.len = (uint32_t)n;
		req.arg = d->dst;
	} else {
		memcpy(dirtier__sector, &round, sizeof(round));
		req.gpa = (uintptr_t)dirtier__sector;
		req.len = 1;
		req.op = KEMARI_BLK_WRITE;
		req.arg = round % d->capacity;
	}
	if (rt__queue_post(&d->q, &req))
		guest_panic("dirtier: queue full");
	rt__queue_kick(&d->q);
	rt__queue_wait(&d->q, &rsp);
	if (rsp.status && !d->net)
		guest_panic("dirtier: block write failed (%d)", rsp.status);
}

int guest_main(struct kemari_bootinfo *bi)
{
	struct dirtier d;
	uint64_t round;

	if (bi->magic != KEMARI_BOOTINFO_MAGIC ||
	    bi->version != KEMARI_ABI_VERSION)
		guest_panic("dirtier: bad boot info");
	dirtier__setup(&d, bi);
	rt__printf("dirtier: %lu pages/round over %lu, event %s, rounds %lu\n",
		   (unsigned long)d.pages, (unsigned long)d.ws,
		   d.net ? "net" : "disk", (unsigned long)d.rounds);

	/* Rounds count from 1 so that every dirtied word changes from the
	 * zero the VMM handed us. */
	for (round = 1; !d.rounds || round <= d.rounds; round++) {
		dirtier__dirty(&d, round);
		dirtier__event(&d, round);
		bi->stats[KEMARI_STAT_ROUNDS]++;
	}
	return 0;
}
