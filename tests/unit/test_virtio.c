// SPDX-License-Identifier: MIT
/*
 * virtio device models (hv/kvm/virtio) against a plain buffer as guest
 * RAM, a recording INTx sink and a dirty-range recorder. The test plays
 * the guest driver: it lays out rings and buffers in that RAM the way
 * Linux's legacy virtio_pci and virtio_ring do, and talks to the register
 * block through a port I/O bus.
 *
 * Every device write must be reported dirty: tests snapshot RAM before an
 * operation and check afterwards that each changed byte lies in a range
 * the device recorded.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../hv/kvm/virtio/blk.h"
#include "../../hv/kvm/virtio/net.h"
#include "../../hv/kvm/virtio/pci.h"
#include "../../hv/kvm/virtio/ring.h"

#define RAM_SIZE (4ULL << 20)
#define MAX_DIRTY 8192
#define BUF_BASE 0x100000ULL
#define IO_BASE 0xc040
#define GSI 11
#define QSIZE 256
#define PFN_Q0 0x10
#define PFN_Q1 0x20

/* ---- guest RAM with a dirty recorder ------------------------------------ */

struct ram {
	struct kvm_gmem mem;
	uint8_t *shadow;
	struct {
		uint64_t gpa, len;
	} dirty[MAX_DIRTY];
	unsigned int ndirty;
	bool overflow;
	uint64_t next_buf;
};

static struct ram ram_a, ram_b;
static struct ram *G = &ram_a;

static void rec_dirty(void *ctx, uint64_t gpa, uint64_t len)
{
	struct ram *r = ctx;

	if (r->ndirty == MAX_DIRTY) {
		r->overflow = true;
		return;
	}
	r->dirty[r->ndirty].gpa = gpa;
	r->dirty[r->ndirty].len = len;
	r->ndirty++;
}

static void ram_init(struct ram *r)
{
	r->mem.ram = aligned_alloc(4096, RAM_SIZE);
	r->shadow = malloc(RAM_SIZE);
	cr_assert(ne(ptr, r->mem.ram, NULL));
	cr_assert(ne(ptr, r->shadow, NULL));
	memset(r->mem.ram, 0, RAM_SIZE);
	r->mem.ram_size = RAM_SIZE;
	r->mem.mark_dirty = rec_dirty;
	r->mem.ctx = r;
	r->next_buf = BUF_BASE;
}

static void ram_fini(struct ram *r)
{
	free(r->mem.ram);
	free(r->shadow);
}

/* Start watching: what changes from here must be recorded dirty. */
static void snap(void)
{
	memcpy(G->shadow, G->mem.ram, RAM_SIZE);
	G->ndirty = 0;
	G->overflow = false;
}

/* Returns how many bytes changed; fails on any unrecorded change. */
static uint64_t check_dirty(void)
{
	uint8_t *cov = calloc(RAM_SIZE / 8, 1);
	uint64_t changed = 0, uncovered = 0, first = 0;

	cr_assert(ne(ptr, cov, NULL));
	cr_assert(eq(int, G->overflow, 0));
	for (unsigned int i = 0; i < G->ndirty; i++) {
		uint64_t gpa = G->dirty[i].gpa, len = G->dirty[i].len;

		cr_assert(le(u64, len, RAM_SIZE));
		cr_assert(le(u64, gpa, RAM_SIZE - len),
			  "dirty range %#llx+%llu outside RAM",
			  (unsigned long long)gpa, (unsigned long long)len);
		for (uint64_t o = gpa; o < gpa + len; o++)
			cov[o / 8] |= (uint8_t)(1u << (o % 8));
	}
	for (uint64_t o = 0; o < RAM_SIZE; o++) {
		if (G->mem.ram[o] == G->shadow[o])
			continue;
		changed++;
		if (!(cov[o / 8] & (1u << (o % 8))) && !uncovered++)
			first = o;
	}
	free(cov);
	cr_assert(eq(u64, uncovered, 0),
		  "%llu changed bytes not marked dirty, first at %#llx",
		  (unsigned long long)uncovered, (unsigned long long)first);
	return changed;
}

static uint8_t *gp(uint64_t gpa)
{
	return G->mem.ram + gpa;
}

static void w8(uint64_t gpa, uint8_t v)
{
	*gp(gpa) = v;
}

static void w16(uint64_t gpa, uint16_t v)
{
	for (int i = 0; i < 2; i++)
		gp(gpa)[i] = (uint8_t)(v >> (8 * i));
}

static void w32(uint64_t gpa, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		gp(gpa)[i] = (uint8_t)(v >> (8 * i));
}

static void w64(uint64_t gpa, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		gp(gpa)[i] = (uint8_t)(v >> (8 * i));
}

static uint8_t r8(uint64_t gpa)
{
	return *gp(gpa);
}

static uint16_t r16(uint64_t gpa)
{
	return (uint16_t)(gp(gpa)[0] | gp(gpa)[1] << 8);
}

static uint32_t r32(uint64_t gpa)
{
	uint32_t v = 0;

	for (int i = 0; i < 4; i++)
		v |= (uint32_t)gp(gpa)[i] << (8 * i);
	return v;
}

static uint64_t galloc(uint64_t len)
{
	uint64_t gpa = G->next_buf;

	G->next_buf = (G->next_buf + len + 15) & ~15ULL;
	cr_assert(le(u64, G->next_buf, RAM_SIZE));
	return gpa;
}

/* ---- the guest's view of a split ring ----------------------------------- */

struct gq {
	uint64_t base;
	uint16_t size;
	uint16_t avail;
};

static void gq_init(struct gq *q, uint32_t pfn, uint16_t size)
{
	q->base = (uint64_t)pfn << 12;
	q->size = size;
	q->avail = 0;
}

static uint64_t gq_avail(const struct gq *q)
{
	return q->base + 16ULL * q->size;
}

static uint64_t gq_used(const struct gq *q)
{
	return q->base +
	       ((16ULL * q->size + 6 + 2ULL * q->size + 4095) & ~4095ULL);
}

static void put_desc(uint64_t gpa, uint64_t addr, uint32_t len, uint16_t flags,
		     uint16_t next)
{
	w64(gpa, addr);
	w32(gpa + 8, len);
	w16(gpa + 12, flags);
	w16(gpa + 14, next);
}

static void g_desc(const struct gq *q, uint16_t i, uint64_t addr, uint32_t len,
		   uint16_t flags, uint16_t next)
{
	put_desc(q->base + 16ULL * i, addr, len, flags, next);
}

static void g_post(struct gq *q, uint16_t head)
{
	w16(gq_avail(q) + 4 + 2ULL * (q->avail % q->size), head);
	q->avail++;
	w16(gq_avail(q) + 2, q->avail);
}

static uint16_t g_used_idx(const struct gq *q)
{
	return r16(gq_used(q) + 2);
}

static uint32_t g_used_id(const struct gq *q, uint16_t i)
{
	return r32(gq_used(q) + 4 + 8ULL * (i % q->size));
}

static uint32_t g_used_len(const struct gq *q, uint16_t i)
{
	return r32(gq_used(q) + 8 + 8ULL * (i % q->size));
}

static void g_set_used_event(const struct gq *q, uint16_t v)
{
	w16(gq_avail(q) + 4 + 2ULL * q->size, v);
}

static uint16_t g_avail_event(const struct gq *q)
{
	return r16(gq_used(q) + 4 + 8ULL * q->size);
}

/* ---- INTx sink and port I/O --------------------------------------------- */

struct irq_rec {
	struct kvm_irq irq;
	int level;
	unsigned int raises, lowers, last_gsi;
	void (*on_raise)(void);
};

static struct irq_rec IRQ;
static struct kvm_pio_bus BUS;
static uint16_t BASE = IO_BASE;

static void irq_set(void *ctx, unsigned int gsi, int level)
{
	struct irq_rec *r = ctx;

	r->last_gsi = gsi;
	if (level && !r->level) {
		r->raises++;
		r->level = level;
		if (r->on_raise)
			r->on_raise();
	}
	if (!level && r->level)
		r->lowers++;
	r->level = level;
}

static void pio_out(uint16_t port, uint32_t v, unsigned int size)
{
	uint8_t d[4];
	bool claimed = false;

	for (unsigned int i = 0; i < 4; i++)
		d[i] = (uint8_t)(v >> (8 * i));
	cr_assert(
		eq(int, kvm_pio__io(&BUS, port, false, d, size, &claimed), 0));
	cr_assert(eq(int, claimed, 1));
}

static uint32_t pio_in(uint16_t port, unsigned int size)
{
	uint8_t d[4] = { 0 };
	bool claimed = false;
	uint32_t v = 0;

	cr_assert(eq(int, kvm_pio__io(&BUS, port, true, d, size, &claimed), 0));
	cr_assert(eq(int, claimed, 1));
	for (unsigned int i = 0; i < size; i++)
		v |= (uint32_t)d[i] << (8 * i);
	return v;
}

static void reg_w(uint16_t off, uint32_t v, unsigned int size)
{
	pio_out((uint16_t)(BASE + off), v, size);
}

static uint32_t reg_r(uint16_t off, unsigned int size)
{
	return pio_in((uint16_t)(BASE + off), size);
}

static void attach(struct kvm_virtio_pci *vp)
{
	IRQ.irq.set = irq_set;
	IRQ.irq.ctx = &IRQ;
	kvm_virtio_pci__set_irq(vp, &IRQ.irq, GSI);
	kvm_virtio_pci__set_base(vp, BASE);
	cr_assert(eq(int,
		     kvm_pio__register(&BUS, BASE, kvm_virtio_pci__bar_size(vp),
				       &kvm_virtio_pci__pio_ops, vp),
		     0));
}

/*
 * What Linux's legacy virtio_pci and virtio core do at probe: reset (and
 * read back), ACKNOWLEDGE, DRIVER, features, each queue's size and PFN,
 * DRIVER_OK (unless told not to). Returns the host features.
 */
static uint32_t linux_probe(unsigned int nq, const uint32_t *pfn,
			    uint32_t accept, bool driver_ok)
{
	uint32_t host;

	reg_w(VIRTIO_PCI_STATUS, 0, 1);
	cr_assert(eq(u32, reg_r(VIRTIO_PCI_STATUS, 1), 0));
	reg_w(VIRTIO_PCI_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE, 1);
	reg_w(VIRTIO_PCI_STATUS,
	      VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER, 1);
	host = reg_r(VIRTIO_PCI_HOST_FEATURES, 4);
	reg_w(VIRTIO_PCI_GUEST_FEATURES, host & accept, 4);
	cr_assert(eq(u32, reg_r(VIRTIO_PCI_GUEST_FEATURES, 4), host & accept));
	for (unsigned int q = 0; q < nq; q++) {
		reg_w(VIRTIO_PCI_QUEUE_SEL, q, 2);
		cr_assert(eq(u32, reg_r(VIRTIO_PCI_QUEUE_NUM, 2), QSIZE));
		cr_assert(eq(u32, reg_r(VIRTIO_PCI_QUEUE_PFN, 4), 0));
		reg_w(VIRTIO_PCI_QUEUE_PFN, pfn[q], 4);
		cr_assert(eq(u32, reg_r(VIRTIO_PCI_QUEUE_PFN, 4), pfn[q]));
	}
	if (driver_ok)
		reg_w(VIRTIO_PCI_STATUS,
		      VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER |
			      VIRTIO_CONFIG_S_DRIVER_OK,
		      1);
	return host;
}

static void setup(void)
{
	ram_init(&ram_a);
	ram_init(&ram_b);
	G = &ram_a;
	memset(&IRQ, 0, sizeof(IRQ));
	memset(&BUS, 0, sizeof(BUS));
	BASE = IO_BASE;
}

static void teardown(void)
{
	ram_fini(&ram_a);
	ram_fini(&ram_b);
}

/* ---- virtio_ring: the queue alone --------------------------------------- */

static struct kvm_vq_chain CH;

static void ring_setup(struct kvm_vq *vq, struct gq *q, uint16_t size,
		       uint32_t features)
{
	cr_assert(eq(int, kvm_vq__init(vq, size), 0));
	kvm_vq__set_features(vq, features);
	cr_assert(eq(int, kvm_vq__set_pfn(vq, &G->mem, PFN_Q0), 0));
	gq_init(q, PFN_Q0, size);
}

Test(virtio_ring, legacy_layout_and_sizes, .init = setup, .fini = teardown)
{
	struct kvm_vq vq;

	/* ALIGN(16n + 2(3 + n), 4096) + 2 * 3 + 8n, as vring_size() */
	cr_assert(eq(u64, kvm_vq__ring_bytes(256), 8192 + 6 + 2048));
	cr_assert(eq(u64, kvm_vq__ring_bytes(1), 4096 + 6 + 8));
	cr_assert(eq(u64, kvm_vq__ring_bytes(1024), 20480 + 6 + 8192));
	cr_assert(eq(int, kvm_vq__init(&vq, 0), -EINVAL));
	cr_assert(eq(int, kvm_vq__init(&vq, 3), -EINVAL));
	cr_assert(eq(int, kvm_vq__init(&vq, 2048), -EINVAL));
	cr_assert(eq(int, kvm_vq__init(&vq, 1024), 0));
	/* A disabled queue is empty, not broken. */
	cr_assert(eq(int, kvm_vq__pop(&vq, &G->mem, &CH), 0));
	/* A ring running past the end of RAM breaks the queue. */
	cr_assert(eq(int,
		     kvm_vq__set_pfn(&vq, &G->mem,
				     (uint32_t)(RAM_SIZE >> 12) - 2),
		     -EFAULT));
	cr_assert(eq(int, vq.broken, 1));
	cr_assert(eq(int, kvm_vq__pop(&vq, &G->mem, &CH), -EIO));
	cr_assert(eq(int, kvm_vq__push(&vq, &G->mem, 0, 0), -EIO));
	/* PFN 0 (Linux's del_vq) clears it. */
	cr_assert(eq(int, kvm_vq__set_pfn(&vq, &G->mem, 0), 0));
	cr_assert(eq(int, vq.broken, 0));
}

Test(virtio_ring, pop_gathers_segments_push_marks_dirty, .init = setup,
     .fini = teardown)
{
	struct kvm_vq vq;
	struct gq q;
	uint64_t a = galloc(100), b = galloc(50), c = galloc(200);
	uint8_t src[150], dst[150], out[200];

	ring_setup(&vq, &q, 8, 0);
	for (unsigned int i = 0; i < sizeof(src); i++)
		src[i] = (uint8_t)(i * 5 + 1);
	memcpy(gp(a), src, 100);
	memcpy(gp(b), src + 100, 50);
	/* Out of index order on purpose: 2 -> 5 -> 1. */
	g_desc(&q, 2, a, 100, VIRTQ_DESC_F_NEXT, 5);
	g_desc(&q, 5, b, 50, VIRTQ_DESC_F_NEXT, 1);
	g_desc(&q, 1, c, 200, VIRTQ_DESC_F_WRITE, 0);
	g_post(&q, 2);

	snap();
	cr_assert(eq(int, kvm_vq__pop(&vq, &G->mem, &CH), 1));
	cr_assert(eq(u16, CH.head, 2));
	cr_assert(eq(u16, CH.nr_out, 2));
	cr_assert(eq(u16, CH.nr_in, 1));
	cr_assert(eq(u32, CH.out_len, 150));
	cr_assert(eq(u32, CH.in_len, 200));
	cr_assert(eq(ptr, CH.seg[0].ptr, gp(a)));
	cr_assert(eq(ptr, CH.seg[2].ptr, gp(c)));
	cr_assert(eq(int, CH.seg[2].write, 1));
	cr_assert(eq(sz, kvm_vq__chain_read(&CH, 0, dst, sizeof(dst)), 150));
	cr_assert(eq(int, memcmp(dst, src, sizeof(src)), 0));
	/* Reads past the readable part stop there. */
	cr_assert(eq(sz, kvm_vq__chain_read(&CH, 140, dst, 50), 10));
	memset(out, 0x5a, sizeof(out));
	cr_assert(eq(sz, kvm_vq__chain_write(&G->mem, &CH, 10, out, 500), 190));
	cr_assert(eq(int, kvm_vq__push(&vq, &G->mem, CH.head, 200), 0));
	cr_assert(gt(u64, check_dirty(), 190));
	cr_assert(eq(u16, g_used_idx(&q), 1));
	cr_assert(eq(u32, g_used_id(&q, 0), 2));
	cr_assert(eq(u32, g_used_len(&q, 0), 200));
	cr_assert(eq(u8, r8(c + 9), 0));
	cr_assert(eq(u8, r8(c + 10), 0x5a));
	cr_assert(eq(int, kvm_vq__pop(&vq, &G->mem, &CH), 0));
	/* A head the device never took is refused. */
	cr_assert(eq(int, kvm_vq__push(&vq, &G->mem, 8, 0), -EINVAL));
}

Test(virtio_ring, hostile_chains_break_the_queue, .init = setup,
     .fini = teardown)
{
	struct kvm_vq vq;
	struct gq q;
	uint64_t buf = galloc(64);

	/* A -> B -> A */
	ring_setup(&vq, &q, 8, 0);
	g_desc(&q, 0, buf, 16, VIRTQ_DESC_F_NEXT, 1);
	g_desc(&q, 1, buf, 16, VIRTQ_DESC_F_NEXT, 0);
	g_post(&q, 0);
	cr_assert(eq(int, kvm_vq__pop(&vq, &G->mem, &CH), -EIO));
	cr_assert(eq(int, vq.broken, 1));
	cr_assert(eq(int, kvm_vq__pop(&vq, &G->mem, &CH), -EIO));

	/* next beyond the table */
	memset(gp(PFN_Q0 << 12), 0, 4 * 4096);
	ring_setup(&vq, &q, 8, 0);
	g_desc(&q, 0, buf, 16, VIRTQ_DESC_F_NEXT, 8);
	g_post(&q, 0);
	cr_assert(eq(int, kvm_vq__pop(&vq, &G->mem, &CH), -EIO));

	/* head beyond the table */
	memset(gp(PFN_Q0 << 12), 0, 4 * 4096);
	ring_setup(&vq, &q, 8, 0);
	g_post(&q, 9);
	cr_assert(eq(int, kvm_vq__pop(&vq, &G->mem, &CH), -EIO));

	/* the driver claims more new entries than the ring holds */
	memset(gp(PFN_Q0 << 12), 0, 4 * 4096);
	ring_setup(&vq, &q, 8, 0);
	w16(gq_avail(&q) + 2, 9);
	cr_assert(eq(int, kvm_vq__pop(&vq, &G->mem, &CH), -EIO));

	/* writable before readable */
	memset(gp(PFN_Q0 << 12), 0, 4 * 4096);
	ring_setup(&vq, &q, 8, 0);
	g_desc(&q, 0, buf, 16, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
	g_desc(&q, 1, buf, 16, 0, 0);
	g_post(&q, 0);
	cr_assert(eq(int, kvm_vq__pop(&vq, &G->mem, &CH), -EIO));

	/* a chain longer than the ring without a loop in index order:
	 * 0 -> 1 -> ... -> 7 -> 0 is caught at the ninth descriptor */
	memset(gp(PFN_Q0 << 12), 0, 4 * 4096);
	ring_setup(&vq, &q, 8, 0);
	for (uint16_t i = 0; i < 8; i++)
		g_desc(&q, i, buf, 1, VIRTQ_DESC_F_NEXT,
		       (uint16_t)((i + 1) % 8));
	g_post(&q, 0);
	cr_assert(eq(int, kvm_vq__pop(&vq, &G->mem, &CH), -EIO));
	cr_assert(eq(u16, CH.nr_out, 8));

	/* a zero-length buffer is legal for the ring (the device judges) */
	memset(gp(PFN_Q0 << 12), 0, 4 * 4096);
	ring_setup(&vq, &q, 8, 0);
	g_desc(&q, 0, buf, 0, 0, 0);
	g_post(&q, 0);
	cr_assert(eq(int, kvm_vq__pop(&vq, &G->mem, &CH), 1));
	cr_assert(eq(u32, CH.out_len, 0));
}

/* Fill table[0, n) with a chain of readable 1-byte buffers. */
static void long_table(uint64_t table, unsigned int n, uint64_t buf)
{
	for (unsigned int i = 0; i < n; i++)
		put_desc(table + 16ULL * i, buf, 1,
			 i + 1 < n ? VIRTQ_DESC_F_NEXT : 0, (uint16_t)(i + 1));
}

Test(virtio_ring, indirect_limits, .init = setup, .fini = teardown)
{
	struct kvm_vq vq;
	struct gq q;
	uint64_t buf = galloc(16), table = galloc(1100 * 16),
		 inner = galloc(16), outer = galloc(16);

	/* Exactly KVM_VQ_MAX_SEGS through one indirect table: fine. */
	ring_setup(&vq, &q, 8, 1U << VIRTIO_RING_F_INDIRECT_DESC);
	long_table(table, KVM_VQ_MAX_SEGS, buf);
	g_desc(&q, 0, table, KVM_VQ_MAX_SEGS * 16, VIRTQ_DESC_F_INDIRECT, 0);
	g_post(&q, 0);
	cr_assert(eq(int, kvm_vq__pop(&vq, &G->mem, &CH), 1));
	cr_assert(eq(u16, CH.nr_out, KVM_VQ_MAX_SEGS));

	/* One direct descriptor more: too long. */
	g_desc(&q, 1, buf, 1, VIRTQ_DESC_F_NEXT, 2);
	g_desc(&q, 2, table, KVM_VQ_MAX_SEGS * 16, VIRTQ_DESC_F_INDIRECT, 0);
	g_post(&q, 1);
	cr_assert(eq(int, kvm_vq__pop(&vq, &G->mem, &CH), -EIO));

	/* A table bigger than the device takes, even if the chain in it
	 * is short. */
	memset(gp(PFN_Q0 << 12), 0, 4 * 4096);
	ring_setup(&vq, &q, 8, 1U << VIRTIO_RING_F_INDIRECT_DESC);
	long_table(table, 2, buf);
	g_desc(&q, 0, table, (KVM_VQ_MAX_SEGS + 1) * 16, VIRTQ_DESC_F_INDIRECT,
	       0);
	g_post(&q, 0);
	cr_assert(eq(int, kvm_vq__pop(&vq, &G->mem, &CH), -EIO));

	/* A table naming another table, even a well-formed one. */
	memset(gp(PFN_Q0 << 12), 0, 4 * 4096);
	ring_setup(&vq, &q, 8, 1U << VIRTIO_RING_F_INDIRECT_DESC);
	put_desc(inner, buf, 1, 0, 0);
	put_desc(outer, inner, 16, VIRTQ_DESC_F_INDIRECT, 0);
	g_desc(&q, 0, outer, 16, VIRTQ_DESC_F_INDIRECT, 0);
	g_post(&q, 0);
	cr_assert(eq(int, kvm_vq__pop(&vq, &G->mem, &CH), -EIO));

	/* 1024 buffers of all of RAM: 4 GiB does not fit a u32 length. */
	memset(gp(PFN_Q0 << 12), 0, 4 * 4096);
	ring_setup(&vq, &q, 8, 1U << VIRTIO_RING_F_INDIRECT_DESC);
	for (unsigned int i = 0; i < 1024; i++)
		put_desc(table + 16ULL * i, 0, (uint32_t)RAM_SIZE,
			 i < 1023 ? VIRTQ_DESC_F_NEXT : 0, (uint16_t)(i + 1));
	g_desc(&q, 0, table, 1024 * 16, VIRTQ_DESC_F_INDIRECT, 0);
	g_post(&q, 0);
	cr_assert(eq(int, kvm_vq__pop(&vq, &G->mem, &CH), -EIO));
	/* ... nor as device-writable buffers. */
	memset(gp(PFN_Q0 << 12), 0, 4 * 4096);
	ring_setup(&vq, &q, 8, 1U << VIRTIO_RING_F_INDIRECT_DESC);
	for (unsigned int i = 0; i < 1024; i++)
		w16(table + 16ULL * i + 12,
		    (uint16_t)(r16(table + 16ULL * i + 12) |
			       VIRTQ_DESC_F_WRITE));
	g_desc(&q, 0, table, 1024 * 16, VIRTQ_DESC_F_INDIRECT, 0);
	g_post(&q, 0);
	cr_assert(eq(int, kvm_vq__pop(&vq, &G->mem, &CH), -EIO));

	/* A table running off the end of RAM, even if the entry used is
	 * inside. */
	memset(gp(PFN_Q0 << 12), 0, 4 * 4096);
	ring_setup(&vq, &q, 8, 1U << VIRTIO_RING_F_INDIRECT_DESC);
	put_desc(RAM_SIZE - 16, buf, 1, 0, 0);
	g_desc(&q, 0, RAM_SIZE - 16, 32, VIRTQ_DESC_F_INDIRECT, 0);
	g_post(&q, 0);
	cr_assert(eq(int, kvm_vq__pop(&vq, &G->mem, &CH), -EIO));

	/* Indirect without the feature. */
	memset(gp(PFN_Q0 << 12), 0, 4 * 4096);
	ring_setup(&vq, &q, 8, 0);
	g_desc(&q, 0, inner, 16, VIRTQ_DESC_F_INDIRECT, 0);
	g_post(&q, 0);
	cr_assert(eq(int, kvm_vq__pop(&vq, &G->mem, &CH), -EIO));
}

Test(virtio_ring, event_idx_suppresses_interrupts, .init = setup,
     .fini = teardown)
{
	struct kvm_vq vq;
	struct gq q;

	ring_setup(&vq, &q, 8, 1U << VIRTIO_RING_F_EVENT_IDX);
	/* The first decision after setup always interrupts. */
	cr_assert(eq(int, kvm_vq__push(&vq, &G->mem, 0, 0), 0));
	cr_assert(eq(int, kvm_vq__should_notify(&vq, &G->mem), 1));
	/* used_event 0 already passed: 1 -> 2 does not cross it. */
	cr_assert(eq(int, kvm_vq__push(&vq, &G->mem, 0, 0), 0));
	cr_assert(eq(int, kvm_vq__should_notify(&vq, &G->mem), 0));
	/* used_event 2: 2 -> 3 crosses it. */
	g_set_used_event(&q, 2);
	cr_assert(eq(int, kvm_vq__push(&vq, &G->mem, 0, 0), 0));
	cr_assert(eq(int, kvm_vq__should_notify(&vq, &G->mem), 1));
	/* used_event 3 inside a batch 3 -> 5. */
	g_set_used_event(&q, 3);
	cr_assert(eq(int, kvm_vq__push(&vq, &G->mem, 0, 0), 0));
	cr_assert(eq(int, kvm_vq__push(&vq, &G->mem, 0, 0), 0));
	cr_assert(eq(int, kvm_vq__should_notify(&vq, &G->mem), 1));
	/* used_event far ahead: quiet. */
	g_set_used_event(&q, 100);
	cr_assert(eq(int, kvm_vq__push(&vq, &G->mem, 0, 0), 0));
	cr_assert(eq(int, kvm_vq__should_notify(&vq, &G->mem), 0));
	/* NO_INTERRUPT means nothing with EVENT_IDX. */
	w16(gq_avail(&q), VIRTQ_AVAIL_F_NO_INTERRUPT);
	g_set_used_event(&q, 6);
	cr_assert(eq(int, kvm_vq__push(&vq, &G->mem, 0, 0), 0));
	cr_assert(eq(int, kvm_vq__should_notify(&vq, &G->mem), 1));
}

Test(virtio_ring, no_interrupt_flag_without_event_idx, .init = setup,
     .fini = teardown)
{
	struct kvm_vq vq;
	struct gq q;

	ring_setup(&vq, &q, 8, 0);
	cr_assert(eq(int, kvm_vq__push(&vq, &G->mem, 0, 0), 0));
	cr_assert(eq(int, kvm_vq__should_notify(&vq, &G->mem), 1));
	w16(gq_avail(&q), VIRTQ_AVAIL_F_NO_INTERRUPT);
	cr_assert(eq(int, kvm_vq__push(&vq, &G->mem, 0, 0), 0));
	cr_assert(eq(int, kvm_vq__should_notify(&vq, &G->mem), 0));
	w16(gq_avail(&q), 0);
	cr_assert(eq(int, kvm_vq__push(&vq, &G->mem, 0, 0), 0));
	cr_assert(eq(int, kvm_vq__should_notify(&vq, &G->mem), 1));
}

Test(virtio_ring, empty_pop_publishes_avail_event, .init = setup,
     .fini = teardown)
{
	struct kvm_vq vq;
	struct gq q;
	uint64_t buf = galloc(16);

	ring_setup(&vq, &q, 8, 1U << VIRTIO_RING_F_EVENT_IDX);
	g_desc(&q, 0, buf, 16, 0, 0);
	g_desc(&q, 1, buf, 16, 0, 0);
	g_post(&q, 0);
	g_post(&q, 1);
	snap();
	cr_assert(eq(int, kvm_vq__pop(&vq, &G->mem, &CH), 1));
	cr_assert(eq(int, kvm_vq__pop(&vq, &G->mem, &CH), 1));
	cr_assert(eq(int, kvm_vq__pop(&vq, &G->mem, &CH), 0));
	cr_assert(eq(u16, g_avail_event(&q), 2));
	cr_assert(eq(u64, check_dirty(), 1));
	/* Unchanged on a second empty pop: no needless dirty page. */
	snap();
	cr_assert(eq(int, kvm_vq__pop(&vq, &G->mem, &CH), 0));
	cr_assert(eq(u32, G->ndirty, 0));
}

Test(virtio_ring, unpop_gives_the_chain_back, .init = setup, .fini = teardown)
{
	struct kvm_vq vq;
	struct gq q;
	uint64_t buf = galloc(16);

	ring_setup(&vq, &q, 8, 0);
	g_desc(&q, 3, buf, 16, VIRTQ_DESC_F_WRITE, 0);
	g_post(&q, 3);
	cr_assert(eq(int, kvm_vq__pop(&vq, &G->mem, &CH), 1));
	kvm_vq__unpop(&vq);
	cr_assert(eq(int, kvm_vq__pop(&vq, &G->mem, &CH), 1));
	cr_assert(eq(u16, CH.head, 3));
	cr_assert(eq(int, kvm_vq__pop(&vq, &G->mem, &CH), 0));
}

Test(virtio_ring, reattach_reissues_what_was_in_flight, .init = setup,
     .fini = teardown)
{
	struct kvm_vq vq, saved, back;
	struct gq q;
	uint64_t buf = galloc(16);

	ring_setup(&vq, &q, 8, 0);
	for (uint16_t i = 0; i < 3; i++) {
		g_desc(&q, i, buf, 16, VIRTQ_DESC_F_WRITE, 0);
		g_post(&q, i);
	}
	cr_assert(eq(int, kvm_vq__pop(&vq, &G->mem, &CH), 1));
	cr_assert(eq(int, kvm_vq__push(&vq, &G->mem, CH.head, 0), 0));
	/* Chain 1 taken, not returned, when the checkpoint is cut. */
	cr_assert(eq(int, kvm_vq__pop(&vq, &G->mem, &CH), 1));
	saved = vq; /* plain data: this is the whole checkpoint */

	back = saved;
	cr_assert(eq(int, kvm_vq__reattach(&back, &G->mem), 2));
	cr_assert(eq(u16, back.last_avail, 1));
	cr_assert(eq(u16, back.used_idx, 1));
	cr_assert(eq(int, kvm_vq__pop(&back, &G->mem, &CH), 1));
	cr_assert(eq(u16, CH.head, 1));
	cr_assert(eq(int, kvm_vq__pop(&back, &G->mem, &CH), 1));
	cr_assert(eq(u16, CH.head, 2));

	/* Indices that cannot be: used ahead of avail by more than a ring. */
	back = saved;
	w16(gq_used(&q) + 2, 100);
	cr_assert(eq(int, kvm_vq__reattach(&back, &G->mem), -EIO));
	cr_assert(eq(int, back.broken, 1));
}

/* ---- virtio_pci: the transport ------------------------------------------ */

static int BLK_FD = -1;
static struct kvm_virtio_blk *BLK;
static struct kvm_virtio_pci *VP;
static struct gq Q0, Q1;

#define ALL_FEATURES 0xffffffffu

static int blk_file(uint64_t bytes)
{
	char path[] = "/tmp/kemari-virtio-XXXXXX";
	int fd = mkstemp(path);

	cr_assert(ge(int, fd, 0));
	unlink(path);
	cr_assert(eq(int, ftruncate(fd, (off_t)bytes), 0));
	return fd;
}

static void blk_up_opts(uint32_t accept, bool read_only)
{
	struct kvm_virtio_blk_params p = {
		.serial = "kemari-disk-0001",
		.read_only = read_only,
	};
	uint32_t pfn[] = { PFN_Q0 };

	BLK_FD = blk_file(1 << 20);
	p.fd = BLK_FD;
	cr_assert(eq(int, kvm_virtio_blk__create(&BLK, &p, &G->mem), 0));
	VP = kvm_virtio_blk__pci(BLK);
	attach(VP);
	linux_probe(1, pfn, accept, true);
	gq_init(&Q0, PFN_Q0, QSIZE);
}

static void blk_up(void)
{
	blk_up_opts(ALL_FEATURES, false);
}

static void blk_down(void)
{
	kvm_virtio_blk__destroy(BLK);
	close(BLK_FD);
}

/* header / data / status, descriptors head, head + 1, head + 2 */
static void blk_req(struct gq *q, uint16_t head, uint32_t type, uint64_t sector,
		    uint64_t data, uint32_t dlen, bool dwrite, uint64_t status)
{
	uint64_t hdr = galloc(16);
	uint16_t i = head;

	w32(hdr, type);
	w32(hdr + 4, 0);
	w64(hdr + 8, sector);
	g_desc(q, i, hdr, 16, VIRTQ_DESC_F_NEXT, (uint16_t)(i + 1));
	i++;
	if (dlen) {
		g_desc(q, i, data, dlen,
		       VIRTQ_DESC_F_NEXT | (dwrite ? VIRTQ_DESC_F_WRITE : 0),
		       (uint16_t)(i + 1));
		i++;
	}
	g_desc(q, i, status, 1, VIRTQ_DESC_F_WRITE, 0);
	g_post(q, head);
}

static void kick(uint16_t q)
{
	reg_w(VIRTIO_PCI_QUEUE_NOTIFY, q, 2);
}

static uint8_t status_reg(void)
{
	return (uint8_t)reg_r(VIRTIO_PCI_STATUS, 1);
}

Test(virtio_pci, config_space_is_legacy_transitional, .init = setup,
     .fini = teardown)
{
	struct kvm_virtio_net_params np = { .mac = { 0x52, 0x54, 0, 1, 2, 3 } };
	struct kvm_virtio_net *net;
	uint8_t cfg[256];
	int sv[2];

	blk_up();
	cr_assert(eq(int, kvm_virtio_pci__fill_config(VP, cfg, 10), 0));
	cr_assert(eq(u16, (uint16_t)(cfg[0] | cfg[1] << 8), 0x1af4));
	cr_assert(eq(u16, (uint16_t)(cfg[2] | cfg[3] << 8), 0x1001));
	cr_assert(eq(u8, cfg[0x08], 0));    /* legacy ABI revision */
	cr_assert(eq(u8, cfg[0x0b], 0x01)); /* mass storage */
	cr_assert(eq(u8, cfg[0x0e], 0));    /* type 0 header */
	cr_assert(eq(u32,
		     (uint32_t)cfg[0x10] | (uint32_t)cfg[0x11] << 8 |
			     (uint32_t)cfg[0x12] << 16 |
			     (uint32_t)cfg[0x13] << 24,
		     IO_BASE | 1));
	cr_assert(eq(u16, (uint16_t)(cfg[0x2c] | cfg[0x2d] << 8), 0x1af4));
	cr_assert(eq(u16, (uint16_t)(cfg[0x2e] | cfg[0x2f] << 8),
		     VIRTIO_ID_BLOCK));
	cr_assert(eq(u8, cfg[0x06] & 0x10, 0)); /* no capability list */
	cr_assert(eq(u8, cfg[0x34], 0));
	cr_assert(eq(u8, cfg[0x3c], 10));
	cr_assert(eq(u8, cfg[0x3d], 1)); /* INTA# */
	/* Registers and the 60-byte blk config in a power-of-two BAR. */
	cr_assert(eq(u16, kvm_virtio_pci__bar_size(VP), 128));

	cr_assert(eq(int, socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0));
	np.fd = sv[0];
	cr_assert(eq(int, kvm_virtio_net__create(&net, &np, &G->mem), 0));
	cr_assert(eq(int,
		     kvm_virtio_pci__fill_config(kvm_virtio_net__pci(net), cfg,
						 11),
		     0));
	cr_assert(eq(u16, (uint16_t)(cfg[2] | cfg[3] << 8), 0x1000));
	cr_assert(eq(u8, cfg[0x0b], 0x02));
	cr_assert(
		eq(u16, (uint16_t)(cfg[0x2e] | cfg[0x2f] << 8), VIRTIO_ID_NET));
	cr_assert(eq(u16, kvm_virtio_pci__bar_size(kvm_virtio_net__pci(net)),
		     32));
	kvm_virtio_net__destroy(net);
	close(sv[0]);
	close(sv[1]);
	blk_down();
}

Test(virtio_pci, linux_legacy_register_sequence, .init = setup,
     .fini = teardown)
{
	uint32_t host;

	blk_up();
	/* linux_probe() above checked sizes, PFN read-back, features. */
	host = reg_r(VIRTIO_PCI_HOST_FEATURES, 4);
	cr_assert(ne(u32, host & (1U << VIRTIO_BLK_F_FLUSH), 0));
	cr_assert(ne(u32, host & (1U << VIRTIO_BLK_F_SEG_MAX), 0));
	cr_assert(ne(u32, host & (1U << VIRTIO_BLK_F_BLK_SIZE), 0));
	cr_assert(ne(u32, host & (1U << VIRTIO_RING_F_EVENT_IDX), 0));
	cr_assert(eq(u32, host & (1U << 27), 0)); /* no ANY_LAYOUT */
	cr_assert(eq(u32, reg_r(VIRTIO_PCI_GUEST_FEATURES, 4), host));
	cr_assert(eq(u32, status_reg(), 7));
	/* Only offered features stick. */
	reg_w(VIRTIO_PCI_GUEST_FEATURES, 1U << 31 | 1U << VIRTIO_BLK_F_FLUSH,
	      4);
	cr_assert(eq(u32, reg_r(VIRTIO_PCI_GUEST_FEATURES, 4),
		     1U << VIRTIO_BLK_F_FLUSH));
	/* A queue that does not exist has size 0 (Linux: -ENOENT). */
	reg_w(VIRTIO_PCI_QUEUE_SEL, 1, 2);
	cr_assert(eq(u32, reg_r(VIRTIO_PCI_QUEUE_NUM, 2), 0));
	reg_w(VIRTIO_PCI_QUEUE_PFN, 0x30, 4);
	cr_assert(eq(u32, reg_r(VIRTIO_PCI_QUEUE_PFN, 4), 0));
	/* Device config, byte by byte as vp_get() reads it. */
	uint64_t cap = 0;
	for (unsigned int i = 0; i < 8; i++)
		cap |= (uint64_t)reg_r(VIRTIO_PCI_CONFIG_OFF + i, 1) << (8 * i);
	cr_assert(eq(u64, cap, 2048));
	cr_assert(eq(u32,
		     reg_r(VIRTIO_PCI_CONFIG_OFF + VIRTIO_BLK_CFG_SEG_MAX, 4),
		     QSIZE - 2));
	cr_assert(eq(u32,
		     reg_r(VIRTIO_PCI_CONFIG_OFF + VIRTIO_BLK_CFG_BLK_SIZE, 4),
		     512));
	cr_assert(eq(u32, reg_r(VIRTIO_PCI_CONFIG_OFF + 60, 4), 0));
	/* The header's status register is the device's, not writable by
	 * odd widths. */
	reg_w(VIRTIO_PCI_STATUS, 0, 2);
	cr_assert(eq(u32, status_reg(), 7));
	/* Linux's remove path: PFN 0 per queue, then reset. */
	reg_w(VIRTIO_PCI_QUEUE_SEL, 0, 2);
	reg_w(VIRTIO_PCI_QUEUE_PFN, 0, 4);
	cr_assert(eq(u32, reg_r(VIRTIO_PCI_QUEUE_PFN, 4), 0));
	reg_w(VIRTIO_PCI_STATUS, 0, 1);
	cr_assert(eq(u32, status_reg(), 0));
	cr_assert(eq(u32, reg_r(VIRTIO_PCI_GUEST_FEATURES, 4), 0));
	blk_down();
}

Test(virtio_pci, registers_follow_the_bar, .init = setup, .fini = teardown)
{
	bool claimed = true;
	uint8_t d[4];

	blk_up();
	cr_assert(eq(int, kvm_pio__move(&BUS, VP, IO_BASE, 0xd000, 128), 0));
	kvm_virtio_pci__set_base(VP, 0xd000);
	BASE = 0xd000;
	cr_assert(eq(u32, status_reg(), 7));
	reg_w(VIRTIO_PCI_QUEUE_SEL, 0, 2);
	cr_assert(eq(u32, reg_r(VIRTIO_PCI_QUEUE_PFN, 4), PFN_Q0));
	cr_assert(eq(int,
		     kvm_pio__io(&BUS, IO_BASE + VIRTIO_PCI_STATUS, true, d, 1,
				 &claimed),
		     0));
	cr_assert(eq(int, claimed, 0));
	blk_down();
}

struct tap {
	unsigned int calls, q;
	struct kvm_virtio_pci *vp;
	int ret;
};

static int tap_notify(struct kvm_virtio_pci *vp, unsigned int q, void *ctx)
{
	struct tap *t = ctx;

	t->calls++;
	t->q = q;
	t->vp = vp;
	return t->ret;
}

Test(virtio_pci, notify_is_a_distinct_tap, .init = setup, .fini = teardown)
{
	struct tap t = { 0 };
	uint64_t data = galloc(512), st = galloc(1);
	uint8_t file[512];
	bool claimed;
	uint8_t d[2] = { 0, 0 };

	blk_up();
	memset(gp(data), 0xa5, 512);
	kvm_virtio_pci__set_notify(VP, tap_notify, &t);
	blk_req(&Q0, 0, VIRTIO_BLK_T_OUT, 0, data, 512, false, st);
	kick(0);
	/* Held: the device has not seen the request. */
	cr_assert(eq(u32, t.calls, 1));
	cr_assert(eq(u32, t.q, 0));
	cr_assert(eq(ptr, t.vp, VP));
	cr_assert(eq(u16, g_used_idx(&Q0), 0));
	cr_assert(eq(long, pread(BLK_FD, file, 512, 0), 512));
	cr_assert(eq(u8, file[0], 0));
	cr_assert(eq(u32, IRQ.raises, 0));
	/* A queue the device does not have never reaches the tap. */
	kick(5);
	cr_assert(eq(u32, t.calls, 1));
	/* Released. */
	cr_assert(eq(int, kvm_virtio_pci__process(VP, 0), 0));
	cr_assert(eq(u16, g_used_idx(&Q0), 1));
	cr_assert(eq(long, pread(BLK_FD, file, 512, 0), 512));
	cr_assert(eq(u8, file[0], 0xa5));
	cr_assert(eq(u32, IRQ.raises, 1));
	/* A VMM failure in the tap stops the VM through the port access. */
	t.ret = -EIO;
	cr_assert(eq(int,
		     kvm_pio__io(&BUS, IO_BASE + VIRTIO_PCI_QUEUE_NOTIFY, false,
				 d, 2, &claimed),
		     -EIO));
	blk_down();
}

Test(virtio_pci, isr_read_clears_and_lowers_intx, .init = setup,
     .fini = teardown)
{
	blk_up();
	cr_assert(eq(int, IRQ.level, 0));
	kvm_virtio_pci__interrupt(VP, VIRTIO_PCI_ISR_QUEUE);
	cr_assert(eq(int, IRQ.level, 1));
	cr_assert(eq(u32, IRQ.last_gsi, GSI));
	/* Held while ISR != 0: a second cause does not re-edge. */
	kvm_virtio_pci__config_changed(VP);
	cr_assert(eq(u32, IRQ.raises, 1));
	cr_assert(eq(u32, reg_r(VIRTIO_PCI_ISR, 1), 3));
	cr_assert(eq(int, IRQ.level, 0));
	cr_assert(eq(u32, IRQ.lowers, 1));
	cr_assert(eq(u32, reg_r(VIRTIO_PCI_ISR, 1), 0));
	blk_down();
}

Test(virtio_pci, status_zero_resets_everything, .init = setup, .fini = teardown)
{
	blk_up();
	kvm_virtio_pci__fail(VP);
	cr_assert(eq(u32, status_reg(), 7 | VIRTIO_CONFIG_S_NEEDS_RESET));
	cr_assert(eq(int, IRQ.level, 1));
	/* The driver cannot clear NEEDS_RESET except by resetting. */
	reg_w(VIRTIO_PCI_STATUS, 7, 1);
	cr_assert(eq(u32, status_reg(), 7 | VIRTIO_CONFIG_S_NEEDS_RESET));
	reg_w(VIRTIO_PCI_STATUS, 0, 1);
	cr_assert(eq(u32, status_reg(), 0));
	cr_assert(eq(int, IRQ.level, 0));
	cr_assert(eq(u32, reg_r(VIRTIO_PCI_ISR, 1), 0));
	reg_w(VIRTIO_PCI_QUEUE_SEL, 0, 2);
	cr_assert(eq(u32, reg_r(VIRTIO_PCI_QUEUE_PFN, 4), 0));
	cr_assert(eq(u32, reg_r(VIRTIO_PCI_QUEUE_NUM, 2), QSIZE));
	blk_down();
}

Test(virtio_pci, save_load_reattach_reissues_a_held_kick, .init = setup,
     .fini = teardown)
{
	struct kvm_virtio_blk_params p = { .serial = "x" };
	struct kvm_virtio_pci_state st, bad;
	struct kvm_virtio_blk *replica;
	struct kvm_virtio_pci *rvp;
	struct tap t = { 0 };
	uint64_t data = galloc(1024), status = galloc(1);
	uint32_t pending = 0;
	uint8_t file[1024];

	blk_up();
	for (unsigned int i = 0; i < 1024; i++)
		w8(data + i, (uint8_t)(i ^ 0x3c));
	kvm_virtio_pci__set_notify(VP, tap_notify, &t);
	blk_req(&Q0, 0, VIRTIO_BLK_T_OUT, 8, data, 1024, false, status);
	kick(0);
	cr_assert(eq(u32, t.calls, 1));
	/* Checkpoint at the tap: device state plus RAM. */
	kvm_virtio_pci__save(VP, &st);
	memcpy(ram_b.mem.ram, ram_a.mem.ram, RAM_SIZE);

	/* Takeover: a fresh device over the replica RAM and the disk. */
	G = &ram_b;
	p.fd = BLK_FD;
	cr_assert(eq(int, kvm_virtio_blk__create(&replica, &p, &G->mem), 0));
	rvp = kvm_virtio_blk__pci(replica);
	bad = st;
	bad.device_type = VIRTIO_ID_NET;
	cr_assert(eq(int, kvm_virtio_pci__load(rvp, &bad), -EINVAL));
	bad = st;
	bad.vq[0].size = 128;
	cr_assert(eq(int, kvm_virtio_pci__load(rvp, &bad), -EINVAL));
	cr_assert(eq(int, kvm_virtio_pci__load(rvp, &st), 0));
	cr_assert(eq(u32, rvp->st.status, 7));
	cr_assert(eq(int, kvm_virtio_pci__reattach(rvp, &pending), 0));
	cr_assert(eq(u32, pending, 1));
	snap();
	cr_assert(eq(int, kvm_virtio_pci__kick(rvp, 0), 0));
	check_dirty();
	cr_assert(eq(u16, g_used_idx(&Q0), 1));
	cr_assert(eq(u8, r8(status), VIRTIO_BLK_S_OK));
	cr_assert(eq(long, pread(BLK_FD, file, 1024, 8 * 512), 1024));
	cr_assert(eq(int, memcmp(file, gp(data), 1024), 0));
	/* The primary's RAM never saw it. */
	cr_assert(eq(u8, ram_a.mem.ram[gq_used(&Q0) + 2], 0));

	/* An ISR that was pending at the checkpoint is asserted again. */
	st.isr = VIRTIO_PCI_ISR_QUEUE;
	kvm_virtio_pci__set_irq(rvp, &IRQ.irq, GSI);
	IRQ.level = 0;
	cr_assert(eq(int, kvm_virtio_pci__load(rvp, &st), 0));
	cr_assert(eq(int, IRQ.level, 1));
	kvm_virtio_blk__destroy(replica);
	G = &ram_a;
	blk_down();
}

/* ---- virtio_blk ---------------------------------------------------------- */

static uint8_t EXPECT[1024];
static int SEEN_AT_IRQ = -1;

/* Completion only after the data reached the file. */
static void file_has_data_at_irq(void)
{
	uint8_t now[1024];

	SEEN_AT_IRQ = pread(BLK_FD, now, sizeof(now), 3 * 512) ==
			      (ssize_t)sizeof(now) &&
		      !memcmp(now, EXPECT, sizeof(now));
}

Test(virtio_blk, write_then_read_round_trip, .init = setup, .fini = teardown)
{
	uint64_t data = galloc(1024), st = galloc(1), rd = galloc(1024),
		 st2 = galloc(1);
	uint8_t file[1024];
	struct kvm_virtio_blk_stats s;

	blk_up();
	for (unsigned int i = 0; i < sizeof(EXPECT); i++)
		EXPECT[i] = (uint8_t)(i * 7 + 3);
	memcpy(gp(data), EXPECT, sizeof(EXPECT));
	w8(st, 0xff);
	blk_req(&Q0, 0, VIRTIO_BLK_T_OUT, 3, data, 1024, false, st);
	IRQ.on_raise = file_has_data_at_irq;
	snap();
	kick(0);
	cr_assert(gt(u64, check_dirty(), 0));
	cr_assert(eq(int, SEEN_AT_IRQ, 1));
	cr_assert(eq(u16, g_used_idx(&Q0), 1));
	cr_assert(eq(u32, g_used_id(&Q0, 0), 0));
	cr_assert(eq(u32, g_used_len(&Q0, 0), 1));
	cr_assert(eq(u8, r8(st), VIRTIO_BLK_S_OK));
	cr_assert(eq(long, pread(BLK_FD, file, 1024, 3 * 512), 1024));
	cr_assert(eq(int, memcmp(file, EXPECT, 1024), 0));
	/* Nothing beyond the request's sectors. */
	cr_assert(eq(long, pread(BLK_FD, file, 512, 5 * 512), 512));
	cr_assert(eq(u8, file[0], 0));
	cr_assert(eq(u32, reg_r(VIRTIO_PCI_ISR, 1), VIRTIO_PCI_ISR_QUEUE));
	cr_assert(eq(int, IRQ.level, 0));

	IRQ.on_raise = NULL;
	memset(gp(rd), 0xee, 1024);
	w8(st2, 0xff);
	blk_req(&Q0, 3, VIRTIO_BLK_T_IN, 3, rd, 1024, true, st2);
	snap();
	kick(0);
	cr_assert(ge(u64, check_dirty(), 1024));
	cr_assert(eq(u16, g_used_idx(&Q0), 2));
	cr_assert(eq(u32, g_used_id(&Q0, 1), 3));
	cr_assert(eq(u32, g_used_len(&Q0, 1), 1025));
	cr_assert(eq(u8, r8(st2), VIRTIO_BLK_S_OK));
	cr_assert(eq(int, memcmp(gp(rd), EXPECT, 1024), 0));
	kvm_virtio_blk__stats(BLK, &s);
	cr_assert(eq(u64, s.writes, 1));
	cr_assert(eq(u64, s.reads, 1));
	blk_down();
}

Test(virtio_blk, scattered_read_into_many_segments, .init = setup,
     .fini = teardown)
{
	uint64_t hdr = galloc(16), st = galloc(1), seg[4];
	uint8_t pattern[2048];

	blk_up();
	for (unsigned int i = 0; i < sizeof(pattern); i++)
		pattern[i] = (uint8_t)(i * 13);
	cr_assert(eq(long, pwrite(BLK_FD, pattern, 2048, 100 * 512), 2048));
	/* 2048 bytes as 100 + 900 + 548 + 500 */
	uint32_t lens[4] = { 100, 900, 548, 500 };
	w32(hdr, VIRTIO_BLK_T_IN);
	w64(hdr + 8, 100);
	g_desc(&Q0, 10, hdr, 16, VIRTQ_DESC_F_NEXT, 20);
	for (unsigned int i = 0; i < 4; i++) {
		seg[i] = galloc(lens[i]);
		g_desc(&Q0, (uint16_t)(20 + i), seg[i], lens[i],
		       VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT,
		       (uint16_t)(21 + i));
	}
	g_desc(&Q0, 24, st, 1, VIRTQ_DESC_F_WRITE, 0);
	g_post(&Q0, 10);
	snap();
	kick(0);
	cr_assert(ge(u64, check_dirty(), 2000));
	cr_assert(eq(u8, r8(st), VIRTIO_BLK_S_OK));
	cr_assert(eq(u32, g_used_len(&Q0, 0), 2049));
	unsigned int off = 0;
	for (unsigned int i = 0; i < 4; i++) {
		cr_assert(
			eq(int, memcmp(gp(seg[i]), pattern + off, lens[i]), 0));
		off += lens[i];
	}
	blk_down();
}

Test(virtio_blk, flush_get_id_and_failed_requests, .init = setup,
     .fini = teardown)
{
	uint64_t st[8], id = galloc(20), shortid = galloc(8),
			data = galloc(1024);
	struct kvm_virtio_blk_stats s;

	blk_up();
	for (unsigned int i = 0; i < 8; i++) {
		st[i] = galloc(1);
		w8(st[i], 0xff);
	}
	blk_req(&Q0, 0, VIRTIO_BLK_T_FLUSH, 0, 0, 0, false, st[0]);
	blk_req(&Q0, 3, VIRTIO_BLK_T_GET_ID, 0, id, 20, true, st[1]);
	blk_req(&Q0, 6, VIRTIO_BLK_T_GET_ID, 0, shortid, 8, true, st[2]);
	blk_req(&Q0, 9, 11 /* DISCARD: not offered */, 0, data, 16, false,
		st[3]);
	/* Past the end (2048 sectors), across the end, not whole sectors. */
	blk_req(&Q0, 12, VIRTIO_BLK_T_IN, 2048, data, 512, true, st[4]);
	blk_req(&Q0, 15, VIRTIO_BLK_T_OUT, 2047, data, 1024, false, st[5]);
	blk_req(&Q0, 18, VIRTIO_BLK_T_OUT, 0, data, 100, false, st[6]);
	blk_req(&Q0, 21, VIRTIO_BLK_T_IN, UINT64_MAX, data, 512, true, st[7]);
	snap();
	kick(0);
	check_dirty();
	cr_assert(eq(u16, g_used_idx(&Q0), 8));
	cr_assert(eq(u8, r8(st[0]), VIRTIO_BLK_S_OK));
	cr_assert(eq(u8, r8(st[1]), VIRTIO_BLK_S_OK));
	cr_assert(eq(int, memcmp(gp(id), "kemari-disk-0001\0\0\0\0", 20), 0));
	cr_assert(eq(u32, g_used_len(&Q0, 1), 21));
	cr_assert(eq(u8, r8(st[2]), VIRTIO_BLK_S_OK));
	cr_assert(eq(int, memcmp(gp(shortid), "kemari-d", 8), 0));
	cr_assert(eq(u8, r8(shortid + 8), 0));
	cr_assert(eq(u8, r8(st[3]), VIRTIO_BLK_S_UNSUPP));
	cr_assert(eq(u8, r8(st[4]), VIRTIO_BLK_S_IOERR));
	cr_assert(eq(u8, r8(st[5]), VIRTIO_BLK_S_IOERR));
	cr_assert(eq(u8, r8(st[6]), VIRTIO_BLK_S_IOERR));
	cr_assert(eq(u8, r8(st[7]), VIRTIO_BLK_S_IOERR));
	/* Failed requests are still completions: the device is fine. */
	cr_assert(eq(u32, status_reg(), 7));
	kvm_virtio_blk__stats(BLK, &s);
	cr_assert(eq(u64, s.flushes, 1));
	cr_assert(eq(u64, s.get_ids, 2));
	cr_assert(eq(u64, s.unsupported, 1));
	cr_assert(eq(u64, s.io_errors, 4));
	cr_assert(eq(u64, s.writes, 0));
	/* One kick, eight completions, one interrupt. */
	cr_assert(eq(u32, IRQ.raises, 1));
	blk_down();
}

Test(virtio_blk, read_only_disk_refuses_writes, .init = setup, .fini = teardown)
{
	uint64_t data = galloc(512), st = galloc(1);

	blk_up_opts(ALL_FEATURES, true);
	cr_assert(
		ne(u32,
		   reg_r(VIRTIO_PCI_HOST_FEATURES, 4) & (1U << VIRTIO_BLK_F_RO),
		   0));
	memset(gp(data), 1, 512);
	blk_req(&Q0, 0, VIRTIO_BLK_T_OUT, 0, data, 512, false, st);
	kick(0);
	cr_assert(eq(u8, r8(st), VIRTIO_BLK_S_IOERR));
	blk_down();
}

/*
 * A secondary's disk (defer_disk): the device is plugged without a file
 * (capacity 0) and gets it after the handshake; the capacity the guest
 * reads is then the file's, and requests reach the file.
 */
Test(virtio_blk, deferred_disk_gets_its_file_later, .init = setup,
     .fini = teardown)
{
	struct kvm_virtio_blk_params p = { .fd = -1 };
	uint64_t data = galloc(512), st = galloc(1), cap = 0;
	uint32_t pfn[] = { PFN_Q0 };
	uint8_t file[512];

	cr_assert(eq(int, kvm_virtio_blk__create(&BLK, &p, &G->mem), 0));
	cr_assert(eq(u64, kvm_virtio_blk__capacity(BLK), 0));
	BLK_FD = blk_file(1 << 20);
	cr_assert(eq(int, kvm_virtio_blk__set_fd(BLK, BLK_FD), 0));
	cr_assert(eq(u64, kvm_virtio_blk__capacity(BLK), 2048));
	VP = kvm_virtio_blk__pci(BLK);
	attach(VP);
	linux_probe(1, pfn, ALL_FEATURES, true);
	gq_init(&Q0, PFN_Q0, QSIZE);
	for (unsigned int i = 0; i < 8; i++)
		cap |= (uint64_t)reg_r(VIRTIO_PCI_CONFIG_OFF + i, 1) << (8 * i);
	cr_assert(eq(u64, cap, 2048));
	memset(gp(data), 0x5a, 512);
	w8(st, 0xff);
	blk_req(&Q0, 0, VIRTIO_BLK_T_OUT, 2047, data, 512, false, st);
	kick(0);
	cr_assert(eq(u8, r8(st), VIRTIO_BLK_S_OK));
	cr_assert(eq(long, pread(BLK_FD, file, 512, 2047 * 512), 512));
	cr_assert(eq(u8, file[0], 0x5a));
	cr_assert(eq(u8, file[511], 0x5a));
	/* Not a file or block device: refused, the old one kept. */
	cr_assert(eq(int, kvm_virtio_blk__set_fd(BLK, -1), -EBADF));
	cr_assert(eq(u64, kvm_virtio_blk__capacity(BLK), 2048));
	blk_down();
}

Test(virtio_blk, event_idx_and_avail_event_at_the_device, .init = setup,
     .fini = teardown)
{
	uint64_t st = galloc(1);

	blk_up();
	/* First batch of three: one interrupt for the lot. */
	for (uint16_t i = 0; i < 3; i++)
		blk_req(&Q0, (uint16_t)(2 * i), VIRTIO_BLK_T_FLUSH, 0, 0, 0,
			false, st);
	kick(0);
	cr_assert(eq(u16, g_used_idx(&Q0), 3));
	cr_assert(eq(u32, IRQ.raises, 1));
	/* The device asks to be kicked for entry 3 next. */
	cr_assert(eq(u16, g_avail_event(&Q0), 3));
	reg_r(VIRTIO_PCI_ISR, 1);
	/* The driver wants no interrupt before used entry 10. */
	g_set_used_event(&Q0, 10);
	blk_req(&Q0, 0, VIRTIO_BLK_T_FLUSH, 0, 0, 0, false, st);
	kick(0);
	cr_assert(eq(u16, g_used_idx(&Q0), 4));
	cr_assert(eq(u32, IRQ.raises, 1));
	cr_assert(eq(u16, g_avail_event(&Q0), 4));
	/* ... now it wants one at entry 4, which 4 -> 5 passes. */
	g_set_used_event(&Q0, 4);
	blk_req(&Q0, 0, VIRTIO_BLK_T_FLUSH, 0, 0, 0, false, st);
	kick(0);
	cr_assert(eq(u16, g_used_idx(&Q0), 5));
	cr_assert(eq(u32, IRQ.raises, 2));
	blk_down();
}

Test(virtio_blk, no_interrupt_flag_without_event_idx, .init = setup,
     .fini = teardown)
{
	uint64_t st = galloc(1);

	blk_up_opts(~(1U << VIRTIO_RING_F_EVENT_IDX), false);
	w16(gq_avail(&Q0), VIRTQ_AVAIL_F_NO_INTERRUPT);
	blk_req(&Q0, 0, VIRTIO_BLK_T_FLUSH, 0, 0, 0, false, st);
	kick(0);
	cr_assert(eq(u16, g_used_idx(&Q0), 1));
	cr_assert(eq(u32, IRQ.raises, 0));
	/* Without EVENT_IDX the device never writes avail_event. */
	cr_assert(eq(u16, g_avail_event(&Q0), 0));
	w16(gq_avail(&Q0), 0);
	blk_req(&Q0, 0, VIRTIO_BLK_T_FLUSH, 0, 0, 0, false, st);
	kick(0);
	cr_assert(eq(u32, IRQ.raises, 1));
	blk_down();
}

/*
 * A hostile chain: the device must end in NEEDS_RESET with a config
 * interrupt, complete nothing, touch nothing outside RAM (the sanitizer
 * build proves that), ignore later kicks, and work again after a reset.
 */
static void hostile(void (*build)(void), uint32_t accept)
{
	uint32_t pfn[] = { PFN_Q0 };
	uint64_t data = galloc(512), st = galloc(1);

	blk_up_opts(accept, false);
	build();
	snap();
	kick(0);
	check_dirty();
	cr_assert(eq(u32, status_reg() & VIRTIO_CONFIG_S_NEEDS_RESET,
		     VIRTIO_CONFIG_S_NEEDS_RESET));
	cr_assert(eq(u16, g_used_idx(&Q0), 0));
	cr_assert(eq(int, IRQ.level, 1));
	cr_assert(eq(u32, reg_r(VIRTIO_PCI_ISR, 1) & VIRTIO_PCI_ISR_CONFIG,
		     VIRTIO_PCI_ISR_CONFIG));
	kick(0);
	cr_assert(eq(u16, g_used_idx(&Q0), 0));

	/* The driver resets and starts over on a clean ring. */
	memset(gp(PFN_Q0 << 12), 0, kvm_vq__ring_bytes(QSIZE));
	linux_probe(1, pfn, accept, true);
	gq_init(&Q0, PFN_Q0, QSIZE);
	blk_req(&Q0, 0, VIRTIO_BLK_T_IN, 0, data, 512, true, st);
	kick(0);
	cr_assert(eq(u16, g_used_idx(&Q0), 1));
	cr_assert(eq(u8, r8(st), VIRTIO_BLK_S_OK));
	cr_assert(eq(u32, status_reg(), 7));
	blk_down();
}

static uint64_t hdr_buf(uint32_t type)
{
	uint64_t h = galloc(16);

	w32(h, type);
	return h;
}

static void build_loop(void)
{
	uint64_t h = hdr_buf(VIRTIO_BLK_T_IN);

	g_desc(&Q0, 0, h, 16, VIRTQ_DESC_F_NEXT, 1);
	g_desc(&Q0, 1, h, 16, VIRTQ_DESC_F_NEXT, 0);
	g_post(&Q0, 0);
}

static void build_next_out_of_range(void)
{
	g_desc(&Q0, 0, hdr_buf(VIRTIO_BLK_T_IN), 16, VIRTQ_DESC_F_NEXT, QSIZE);
	g_post(&Q0, 0);
}

static void build_head_out_of_range(void)
{
	g_post(&Q0, QSIZE + 44);
}

static void build_avail_jump(void)
{
	w16(gq_avail(&Q0) + 2, QSIZE + 1);
}

static void build_addr_outside_ram(void)
{
	g_desc(&Q0, 0, hdr_buf(VIRTIO_BLK_T_IN), 16, VIRTQ_DESC_F_NEXT, 1);
	g_desc(&Q0, 1, RAM_SIZE - 8, 16, VIRTQ_DESC_F_WRITE, 0);
	g_post(&Q0, 0);
}

static void build_addr_in_pci_hole(void)
{
	g_desc(&Q0, 0, hdr_buf(VIRTIO_BLK_T_IN), 16, VIRTQ_DESC_F_NEXT, 1);
	g_desc(&Q0, 1, 3ULL << 30, 1, VIRTQ_DESC_F_WRITE, 0);
	g_post(&Q0, 0);
}

static void build_addr_len_wraps(void)
{
	g_desc(&Q0, 0, 0xfffffffffffff000ULL, 0x2000, VIRTQ_DESC_F_NEXT, 1);
	g_desc(&Q0, 1, galloc(1), 1, VIRTQ_DESC_F_WRITE, 0);
	g_post(&Q0, 0);
}

/* 1024 readable buffers of all of RAM: 4 GiB, more than a u32 length. */
static void build_total_len_overflow(void)
{
	uint64_t table = galloc(1024 * 16);

	for (unsigned int i = 0; i < 1024; i++)
		put_desc(table + 16ULL * i, 0, (uint32_t)RAM_SIZE,
			 i < 1023 ? VIRTQ_DESC_F_NEXT : 0, (uint16_t)(i + 1));
	g_desc(&Q0, 0, table, 1024 * 16, VIRTQ_DESC_F_INDIRECT, 0);
	g_post(&Q0, 0);
}

static void build_too_many_segments(void)
{
	uint64_t table = galloc(1024 * 16), h = hdr_buf(VIRTIO_BLK_T_IN);

	for (unsigned int i = 0; i < 1024; i++)
		put_desc(table + 16ULL * i, h, 16,
			 i < 1023 ? VIRTQ_DESC_F_NEXT : 0, (uint16_t)(i + 1));
	g_desc(&Q0, 0, h, 16, VIRTQ_DESC_F_NEXT, 1);
	g_desc(&Q0, 1, table, 1024 * 16, VIRTQ_DESC_F_INDIRECT, 0);
	g_post(&Q0, 0);
}

/* The inner table holds a valid request: only the nesting is wrong. */
static void build_indirect_in_indirect(void)
{
	uint64_t outer = galloc(16), inner = galloc(48);

	put_desc(inner, hdr_buf(VIRTIO_BLK_T_IN), 16, VIRTQ_DESC_F_NEXT, 1);
	put_desc(inner + 16, galloc(512), 512,
		 VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 2);
	put_desc(inner + 32, galloc(1), 1, VIRTQ_DESC_F_WRITE, 0);
	put_desc(outer, inner, 48, VIRTQ_DESC_F_INDIRECT, 0);
	g_desc(&Q0, 0, outer, 16, VIRTQ_DESC_F_INDIRECT, 0);
	g_post(&Q0, 0);
}

static void build_indirect_outside_ram(void)
{
	g_desc(&Q0, 0, RAM_SIZE - 16, 32, VIRTQ_DESC_F_INDIRECT, 0);
	g_post(&Q0, 0);
}

static void build_indirect_bad_len(void)
{
	uint64_t table = galloc(48);

	put_desc(table, hdr_buf(VIRTIO_BLK_T_IN), 16, 0, 0);
	g_desc(&Q0, 0, table, 24, VIRTQ_DESC_F_INDIRECT, 0);
	g_post(&Q0, 0);
}

static void build_indirect_loop(void)
{
	uint64_t table = galloc(48), h = hdr_buf(VIRTIO_BLK_T_IN);

	put_desc(table, h, 16, VIRTQ_DESC_F_NEXT, 1);
	put_desc(table + 16, h, 16, VIRTQ_DESC_F_NEXT, 2);
	put_desc(table + 32, h, 16, VIRTQ_DESC_F_NEXT, 0);
	g_desc(&Q0, 0, table, 48, VIRTQ_DESC_F_INDIRECT, 0);
	g_post(&Q0, 0);
}

static void build_indirect_next_out_of_table(void)
{
	uint64_t table = galloc(32);

	put_desc(table, hdr_buf(VIRTIO_BLK_T_IN), 16, VIRTQ_DESC_F_NEXT, 2);
	put_desc(table + 16, galloc(1), 1, VIRTQ_DESC_F_WRITE, 0);
	g_desc(&Q0, 0, table, 32, VIRTQ_DESC_F_INDIRECT, 0);
	g_post(&Q0, 0);
}

static void build_indirect_with_next(void)
{
	uint64_t table = galloc(16);

	put_desc(table, hdr_buf(VIRTIO_BLK_T_IN), 16, 0, 0);
	g_desc(&Q0, 0, table, 16, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, 1);
	g_desc(&Q0, 1, galloc(1), 1, VIRTQ_DESC_F_WRITE, 0);
	g_post(&Q0, 0);
}

static void build_indirect_good(void)
{
	uint64_t table = galloc(48);

	put_desc(table, hdr_buf(VIRTIO_BLK_T_IN), 16, VIRTQ_DESC_F_NEXT, 1);
	put_desc(table + 16, galloc(512), 512,
		 VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 2);
	put_desc(table + 32, galloc(1), 1, VIRTQ_DESC_F_WRITE, 0);
	g_desc(&Q0, 0, table, 48, VIRTQ_DESC_F_INDIRECT, 0);
	g_post(&Q0, 0);
}

static void build_zero_length_chain(void)
{
	g_desc(&Q0, 0, galloc(16), 0, 0, 0);
	g_post(&Q0, 0);
}

static void build_no_status(void)
{
	g_desc(&Q0, 0, hdr_buf(VIRTIO_BLK_T_FLUSH), 16, 0, 0);
	g_post(&Q0, 0);
}

static void build_status_two_bytes(void)
{
	g_desc(&Q0, 0, hdr_buf(VIRTIO_BLK_T_FLUSH), 16, VIRTQ_DESC_F_NEXT, 1);
	g_desc(&Q0, 1, galloc(2), 2, VIRTQ_DESC_F_WRITE, 0);
	g_post(&Q0, 0);
}

static void build_writable_before_readable(void)
{
	g_desc(&Q0, 0, galloc(1), 1, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
	g_desc(&Q0, 1, hdr_buf(VIRTIO_BLK_T_FLUSH), 16, 0, 0);
	g_post(&Q0, 0);
}

static void build_ring_outside_ram(void)
{
	reg_w(VIRTIO_PCI_QUEUE_SEL, 0, 2);
	reg_w(VIRTIO_PCI_QUEUE_PFN, (uint32_t)(RAM_SIZE >> 12) - 1, 4);
}

#define HOSTILE(name, accept)                                                  \
	Test(virtio_blk, hostile_##name, .init = setup, .fini = teardown)      \
	{                                                                      \
		hostile(build_##name, accept);                                 \
	}

HOSTILE(loop, ALL_FEATURES)
HOSTILE(next_out_of_range, ALL_FEATURES)
HOSTILE(head_out_of_range, ALL_FEATURES)
HOSTILE(avail_jump, ALL_FEATURES)
HOSTILE(addr_outside_ram, ALL_FEATURES)
HOSTILE(addr_in_pci_hole, ALL_FEATURES)
HOSTILE(addr_len_wraps, ALL_FEATURES)
HOSTILE(total_len_overflow, ALL_FEATURES)
HOSTILE(too_many_segments, ALL_FEATURES)
HOSTILE(indirect_in_indirect, ALL_FEATURES)
HOSTILE(indirect_outside_ram, ALL_FEATURES)
HOSTILE(indirect_bad_len, ALL_FEATURES)
HOSTILE(indirect_loop, ALL_FEATURES)
HOSTILE(indirect_next_out_of_table, ALL_FEATURES)
HOSTILE(indirect_with_next, ALL_FEATURES)
HOSTILE(zero_length_chain, ALL_FEATURES)
HOSTILE(no_status, ALL_FEATURES)
HOSTILE(status_two_bytes, ALL_FEATURES)
HOSTILE(writable_before_readable, ALL_FEATURES)
HOSTILE(ring_outside_ram, ALL_FEATURES)
/* A well-formed indirect chain the driver was never allowed to send. */
HOSTILE(indirect_good, ~(1U << VIRTIO_RING_F_INDIRECT_DESC))

Test(virtio_blk, indirect_chain_when_negotiated, .init = setup,
     .fini = teardown)
{
	blk_up();
	build_indirect_good();
	snap();
	kick(0);
	check_dirty();
	cr_assert(eq(u16, g_used_idx(&Q0), 1));
	cr_assert(eq(u32, g_used_len(&Q0, 0), 513));
	cr_assert(eq(u32, status_reg(), 7));
	blk_down();
}

/* ---- virtio_net ---------------------------------------------------------- */

static struct kvm_virtio_net *NET;
static int SV[2];
static const uint8_t MAC[6] = { 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 };

static void net_up_opts(bool driver_ok)
{
	struct kvm_virtio_net_params p = { 0 };
	uint32_t pfn[] = { PFN_Q0, PFN_Q1 };

	cr_assert(eq(int, socketpair(AF_UNIX, SOCK_SEQPACKET, 0, SV), 0));
	p.fd = SV[0];
	memcpy(p.mac, MAC, 6);
	cr_assert(eq(int, kvm_virtio_net__create(&NET, &p, &G->mem), 0));
	VP = kvm_virtio_net__pci(NET);
	attach(VP);
	linux_probe(2, pfn, ALL_FEATURES, driver_ok);
	gq_init(&Q0, PFN_Q0, QSIZE);
	gq_init(&Q1, PFN_Q1, QSIZE);
}

static void net_up(void)
{
	net_up_opts(true);
}

static void net_down(void)
{
	kvm_virtio_net__destroy(NET);
	close(SV[0]);
	close(SV[1]);
}

static void frame(uint8_t *f, size_t len, uint8_t seed)
{
	for (size_t i = 0; i < len; i++)
		f[i] = (uint8_t)(seed + i * 3);
}

Test(virtio_net, config_and_features, .init = setup, .fini = teardown,
     .timeout = 10)
{
	uint32_t host;

	net_up();
	host = reg_r(VIRTIO_PCI_HOST_FEATURES, 4);
	cr_assert(ne(u32, host & (1U << VIRTIO_NET_F_MAC), 0));
	cr_assert(ne(u32, host & (1U << VIRTIO_NET_F_STATUS), 0));
	cr_assert(eq(u32, host & (1U << 15), 0)); /* no MRG_RXBUF */
	cr_assert(eq(u32, host & 1U, 0));	  /* no CSUM */
	for (unsigned int i = 0; i < 6; i++)
		cr_assert(eq(u32, reg_r(VIRTIO_PCI_CONFIG_OFF + i, 1), MAC[i]));
	cr_assert(eq(u32,
		     reg_r(VIRTIO_PCI_CONFIG_OFF + VIRTIO_NET_CFG_STATUS, 2),
		     VIRTIO_NET_S_LINK_UP));
	kvm_virtio_net__set_link(NET, false);
	cr_assert(eq(u32,
		     reg_r(VIRTIO_PCI_CONFIG_OFF + VIRTIO_NET_CFG_STATUS, 2),
		     0));
	cr_assert(eq(u32, reg_r(VIRTIO_PCI_ISR, 1), VIRTIO_PCI_ISR_CONFIG));
	net_down();
}

Test(virtio_net, tx_strips_the_header, .init = setup, .fini = teardown,
     .timeout = 10)
{
	uint64_t hdr = galloc(10), f = galloc(60), one = galloc(10 + 64),
		 parts = galloc(10 + 100);
	uint8_t want[100], got[200];
	struct kvm_virtio_net_stats s;

	net_up();
	/* Header and frame in two descriptors, as Linux's legacy driver. */
	w8(hdr, 0x55); /* whatever the guest puts there stays here */
	frame(gp(f), 60, 1);
	g_desc(&Q1, 0, hdr, 10, VIRTQ_DESC_F_NEXT, 1);
	g_desc(&Q1, 1, f, 60, 0, 0);
	g_post(&Q1, 0);
	snap();
	kick(KVM_VIRTIO_NET_TXQ);
	check_dirty();
	cr_assert(eq(long, recv(SV[1], got, sizeof(got), MSG_DONTWAIT), 60));
	cr_assert(eq(int, memcmp(got, gp(f), 60), 0));
	cr_assert(eq(u16, g_used_idx(&Q1), 1));
	cr_assert(eq(u32, g_used_len(&Q1, 0), 0));
	cr_assert(eq(u32, IRQ.raises, 1));

	/* Header and frame in one buffer. */
	frame(gp(one + 10), 64, 9);
	g_desc(&Q1, 2, one, 74, 0, 0);
	g_post(&Q1, 2);
	/* Header split 4 + 6 and the frame in three pieces. */
	frame(want, 100, 77);
	memcpy(gp(parts + 10), want, 100);
	g_desc(&Q1, 3, parts, 4, VIRTQ_DESC_F_NEXT, 4);
	g_desc(&Q1, 4, parts + 4, 6 + 30, VIRTQ_DESC_F_NEXT, 5);
	g_desc(&Q1, 5, parts + 40, 50, VIRTQ_DESC_F_NEXT, 6);
	g_desc(&Q1, 6, parts + 90, 20, 0, 0);
	g_post(&Q1, 3);
	kick(KVM_VIRTIO_NET_TXQ);
	cr_assert(eq(long, recv(SV[1], got, sizeof(got), MSG_DONTWAIT), 64));
	cr_assert(eq(int, memcmp(got, gp(one + 10), 64), 0));
	cr_assert(eq(long, recv(SV[1], got, sizeof(got), MSG_DONTWAIT), 100));
	cr_assert(eq(int, memcmp(got, want, 100), 0));
	cr_assert(eq(long, recv(SV[1], got, sizeof(got), MSG_DONTWAIT), -1));
	cr_assert(eq(u16, g_used_idx(&Q1), 3));
	kvm_virtio_net__stats(NET, &s);
	cr_assert(eq(u64, s.tx_frames, 3));
	net_down();
}

Test(virtio_net, tx_without_header_needs_reset, .init = setup, .fini = teardown,
     .timeout = 10)
{
	uint8_t got[64];

	net_up();
	g_desc(&Q1, 0, galloc(4), 4, 0, 0);
	g_post(&Q1, 0);
	kick(KVM_VIRTIO_NET_TXQ);
	cr_assert(eq(u32, status_reg() & VIRTIO_CONFIG_S_NEEDS_RESET,
		     VIRTIO_CONFIG_S_NEEDS_RESET));
	cr_assert(eq(u16, g_used_idx(&Q1), 0));
	cr_assert(eq(long, recv(SV[1], got, sizeof(got), MSG_DONTWAIT), -1));
	net_down();
}

Test(virtio_net, rx_adds_the_header, .init = setup, .fini = teardown,
     .timeout = 10)
{
	uint64_t buf = galloc(10 + 1518);
	uint8_t f[98], zero[10] = { 0 };
	struct kvm_virtio_net_stats s;

	net_up();
	memset(gp(buf), 0xaa, 10 + 1518);
	g_desc(&Q0, 7, buf, 10 + 1518, VIRTQ_DESC_F_WRITE, 0);
	g_post(&Q0, 7);
	frame(f, sizeof(f), 42);
	cr_assert(eq(long, send(SV[1], f, sizeof(f), 0), (long)sizeof(f)));
	snap();
	cr_assert(eq(int, kvm_virtio_net__rx(NET), 1));
	cr_assert(ge(u64, check_dirty(), sizeof(f)));
	cr_assert(eq(u16, g_used_idx(&Q0), 1));
	cr_assert(eq(u32, g_used_id(&Q0, 0), 7));
	cr_assert(eq(u32, g_used_len(&Q0, 0), 10 + sizeof(f)));
	cr_assert(eq(int, memcmp(gp(buf), zero, 10), 0));
	cr_assert(eq(int, memcmp(gp(buf + 10), f, sizeof(f)), 0));
	cr_assert(eq(u8, r8(buf + 10 + sizeof(f)), 0xaa));
	cr_assert(eq(u32, IRQ.raises, 1));
	/* Nothing waiting: returns at once. */
	cr_assert(eq(int, kvm_virtio_net__rx(NET), 0));
	kvm_virtio_net__stats(NET, &s);
	cr_assert(eq(u64, s.rx_frames, 1));
	cr_assert(eq(u64, s.rx_dropped, 0));
	net_down();
}

Test(virtio_net, rx_without_buffer_drops_and_does_not_block, .init = setup,
     .fini = teardown, .timeout = 10)
{
	uint64_t buf = galloc(10 + 1518);
	uint8_t f[60];
	struct kvm_virtio_net_stats s;

	net_up();
	frame(f, sizeof(f), 1);
	cr_assert(eq(long, send(SV[1], f, sizeof(f), 0), (long)sizeof(f)));
	snap();
	cr_assert(eq(int, kvm_virtio_net__rx(NET), 1));
	cr_assert(eq(u64, check_dirty(), 0));
	cr_assert(eq(u16, g_used_idx(&Q0), 0));
	cr_assert(eq(u32, IRQ.raises, 0));
	cr_assert(eq(int, kvm_virtio_net__rx(NET), 0));
	kvm_virtio_net__stats(NET, &s);
	cr_assert(eq(u64, s.rx_dropped, 1));
	/* The dropped frame is gone; the next one lands in the new buffer. */
	g_desc(&Q0, 0, buf, 10 + 1518, VIRTQ_DESC_F_WRITE, 0);
	g_post(&Q0, 0);
	frame(f, sizeof(f), 2);
	cr_assert(eq(long, send(SV[1], f, sizeof(f), 0), (long)sizeof(f)));
	cr_assert(eq(int, kvm_virtio_net__rx(NET), 1));
	cr_assert(eq(u16, g_used_idx(&Q0), 1));
	cr_assert(eq(u8, r8(buf + 10), 2));
	net_down();
}

Test(virtio_net, rx_frame_too_big_keeps_the_buffer, .init = setup,
     .fini = teardown, .timeout = 10)
{
	uint64_t buf = galloc(10 + 32);
	uint8_t big[60], small[20];
	struct kvm_virtio_net_stats s;

	net_up();
	g_desc(&Q0, 0, buf, 10 + 32, VIRTQ_DESC_F_WRITE, 0);
	g_post(&Q0, 0);
	frame(big, sizeof(big), 1);
	frame(small, sizeof(small), 9);
	cr_assert(
		eq(long, send(SV[1], big, sizeof(big), 0), (long)sizeof(big)));
	cr_assert(eq(long, send(SV[1], small, sizeof(small), 0),
		     (long)sizeof(small)));
	snap();
	cr_assert(eq(int, kvm_virtio_net__rx(NET), 2));
	check_dirty();
	cr_assert(eq(u16, g_used_idx(&Q0), 1));
	cr_assert(eq(u32, g_used_len(&Q0, 0), 10 + sizeof(small)));
	cr_assert(eq(int, memcmp(gp(buf + 10), small, sizeof(small)), 0));
	kvm_virtio_net__stats(NET, &s);
	cr_assert(eq(u64, s.rx_dropped, 1));
	cr_assert(eq(u64, s.rx_frames, 1));
	net_down();
}

Test(virtio_net, rx_into_a_hostile_ring_needs_reset, .init = setup,
     .fini = teardown, .timeout = 10)
{
	uint8_t f[60];

	net_up();
	/* A device-writable buffer that runs past the end of RAM. */
	g_desc(&Q0, 0, RAM_SIZE - 100, 1600, VIRTQ_DESC_F_WRITE, 0);
	g_post(&Q0, 0);
	frame(f, sizeof(f), 1);
	cr_assert(eq(long, send(SV[1], f, sizeof(f), 0), (long)sizeof(f)));
	cr_assert(eq(long, send(SV[1], f, sizeof(f), 0), (long)sizeof(f)));
	snap();
	cr_assert(eq(int, kvm_virtio_net__rx(NET), 2));
	cr_assert(eq(u64, check_dirty(), 0));
	cr_assert(eq(u16, g_used_idx(&Q0), 0));
	cr_assert(eq(u32, status_reg() & VIRTIO_CONFIG_S_NEEDS_RESET,
		     VIRTIO_CONFIG_S_NEEDS_RESET));
	net_down();
}

Test(virtio_net, rx_before_driver_ok_drops, .init = setup, .fini = teardown,
     .timeout = 10)
{
	uint64_t buf = galloc(10 + 1518);
	uint8_t f[60];

	net_up_opts(false);
	g_desc(&Q0, 0, buf, 10 + 1518, VIRTQ_DESC_F_WRITE, 0);
	g_post(&Q0, 0);
	frame(f, sizeof(f), 1);
	cr_assert(eq(long, send(SV[1], f, sizeof(f), 0), (long)sizeof(f)));
	cr_assert(eq(int, kvm_virtio_net__rx(NET), 1));
	cr_assert(eq(u16, g_used_idx(&Q0), 0));
	net_down();
}

Test(virtio_net, rx_and_tx_of_many_frames_with_event_idx, .init = setup,
     .fini = teardown, .timeout = 10)
{
	uint8_t f[200], got[300];
	uint64_t bufs = galloc(8 * (10 + 200));

	net_up();
	/* The driver only wants an interrupt after the 8th used entry. */
	g_set_used_event(&Q0, 7);
	for (uint16_t i = 0; i < 8; i++) {
		g_desc(&Q0, i, bufs + i * 210ULL, 210, VIRTQ_DESC_F_WRITE, 0);
		g_post(&Q0, i);
	}
	for (unsigned int i = 0; i < 8; i++) {
		frame(f, sizeof(f), (uint8_t)i);
		cr_assert(eq(long, send(SV[1], f, sizeof(f), 0), 200));
	}
	snap();
	cr_assert(eq(int, kvm_virtio_net__rx(NET), 8));
	check_dirty();
	cr_assert(eq(u16, g_used_idx(&Q0), 8));
	/* First decision after setup: one interrupt for the batch. */
	cr_assert(eq(u32, IRQ.raises, 1));
	for (unsigned int i = 0; i < 8; i++)
		cr_assert(eq(u8, r8(bufs + i * 210ULL + 10), (uint8_t)i));
	/* Loop the frames back out through TX. */
	for (uint16_t i = 0; i < 8; i++) {
		g_desc(&Q1, i, bufs + i * 210ULL, 210, 0, 0);
		g_post(&Q1, i);
	}
	kick(KVM_VIRTIO_NET_TXQ);
	for (unsigned int i = 0; i < 8; i++) {
		cr_assert(eq(long, recv(SV[1], got, sizeof(got), MSG_DONTWAIT),
			     200));
		cr_assert(eq(u8, got[0], (uint8_t)i));
	}
	net_down();
}
