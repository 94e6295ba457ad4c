// SPDX-License-Identifier: MIT
/*
 * Split virtqueue over guest RAM. Every guest-supplied index is checked
 * against the table it indexes, every buffer resolved by kvm_gmem__ptr(),
 * and each descriptor is copied out of guest memory once, so a vCPU
 * rewriting it meanwhile cannot make the checked and the used values
 * differ.
 */
#include <endian.h>
#include <errno.h>
#include <string.h>

#include "ring.h"

struct vq_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

#define VQ_DESC_SIZE 16

static uint64_t vq__desc_gpa(const struct kvm_vq *vq)
{
	return (uint64_t)vq->pfn << KVM_VQ_PFN_SHIFT;
}

/* flags, idx, ring[size], used_event */
static uint64_t vq__avail_gpa(const struct kvm_vq *vq)
{
	return vq__desc_gpa(vq) + (uint64_t)VQ_DESC_SIZE * vq->size;
}

/* flags, idx, ring[size] of (id, len), avail_event */
static uint64_t vq__used_off(uint16_t size)
{
	uint64_t avail_end = (uint64_t)VQ_DESC_SIZE * size + 2 * (3 + size);

	return (avail_end + KVM_VQ_ALIGN - 1) & ~(uint64_t)(KVM_VQ_ALIGN - 1);
}

static uint64_t vq__used_gpa(const struct kvm_vq *vq)
{
	return vq__desc_gpa(vq) + vq__used_off(vq->size);
}

uint64_t kvm_vq__ring_bytes(uint16_t size)
{
	return vq__used_off(size) + 2 * 3 + 8 * (uint64_t)size;
}

static int vq__fail(struct kvm_vq *vq)
{
	vq->broken = 1;
	return -EIO;
}

static uint16_t *vq__u16(const struct kvm_gmem *m, uint64_t gpa)
{
	return kvm_gmem__ptr(m, gpa, sizeof(uint16_t));
}

int kvm_vq__init(struct kvm_vq *vq, uint16_t size)
{
	memset(vq, 0, sizeof(*vq));
	if (!size || size > KVM_VQ_MAX_SIZE || (size & (size - 1)))
		return -EINVAL;
	vq->size = size;
	return 0;
}

int kvm_vq__set_pfn(struct kvm_vq *vq, const struct kvm_gmem *m, uint32_t pfn)
{
	vq->pfn = pfn;
	vq->last_avail = 0;
	vq->used_idx = 0;
	vq->signalled_used = 0;
	vq->signalled_valid = 0;
	vq->broken = 0;
	if (!pfn)
		return 0;
	if (!kvm_gmem__ptr(m, vq__desc_gpa(vq), kvm_vq__ring_bytes(vq->size))) {
		vq->broken = 1;
		return -EFAULT;
	}
	return 0;
}

void kvm_vq__set_features(struct kvm_vq *vq, uint32_t features)
{
	vq->event_idx = !!(features & (1U << VIRTIO_RING_F_EVENT_IDX));
	vq->indirect = !!(features & (1U << VIRTIO_RING_F_INDIRECT_DESC));
}

static int vq__read_desc(const struct kvm_gmem *m, uint64_t table, uint32_t idx,
			 struct vq_desc *d)
{
	const uint8_t *p = kvm_gmem__ptr(
		m, table + (uint64_t)idx * VQ_DESC_SIZE, VQ_DESC_SIZE);
	struct vq_desc raw;

	if (!p)
		return -EFAULT;
	memcpy(&raw, p, sizeof(raw));
	d->addr = le64toh(raw.addr);
	d->len = le32toh(raw.len);
	d->flags = le16toh(raw.flags);
	d->next = le16toh(raw.next);
	return 0;
}

static int vq__add_seg(const struct kvm_gmem *m, struct kvm_vq_chain *c,
		       const struct vq_desc *d)
{
	unsigned int n = (unsigned int)c->nr_out + c->nr_in;
	struct kvm_vq_seg *s;
	uint8_t *p;

	if (n >= KVM_VQ_MAX_SEGS)
		return -E2BIG;
	p = kvm_gmem__ptr(m, d->addr, d->len);
	if (!p)
		return -EFAULT;
	if (d->flags & VIRTQ_DESC_F_WRITE) {
		if (d->len > UINT32_MAX - c->in_len)
			return -EOVERFLOW;
		c->in_len += d->len;
		c->nr_in++;
	} else {
		/* Readable after writable: the spec forbids it and a device
		 * splitting "request" from "response" by position would be
		 * fooled. */
		if (c->nr_in)
			return -EINVAL;
		if (d->len > UINT32_MAX - c->out_len)
			return -EOVERFLOW;
		c->out_len += d->len;
		c->nr_out++;
	}
	s = &c->seg[n];
	s->ptr = p;
	s->gpa = d->addr;
	s->len = d->len;
	s->write = !!(d->flags & VIRTQ_DESC_F_WRITE);
	return 0;
}

/*
 * Follow the chain from head. A direct chain visits at most size
 * descriptors and an indirect table at most its own entry count: one more
 * means a loop. An indirect descriptor ends the direct part (it may not
 * carry NEXT) and may not appear inside a table.
 */
static int vq__walk(struct kvm_vq *vq, const struct kvm_gmem *m, uint16_t head,
		    struct kvm_vq_chain *c)
{
	uint64_t table = vq__desc_gpa(vq);
	uint32_t tsize = vq->size, idx = head, seen = 0;
	bool indirect = false;
	struct vq_desc d;

	c->head = head;
	c->nr_out = c->nr_in = 0;
	c->out_len = c->in_len = 0;
	if (head >= vq->size)
		return vq__fail(vq);
	for (;;) {
		if (++seen > tsize)
			return vq__fail(vq);
		if (vq__read_desc(m, table, idx, &d))
			return vq__fail(vq);
		if (d.flags & VIRTQ_DESC_F_INDIRECT) {
			if (indirect || !vq->indirect ||
			    (d.flags & VIRTQ_DESC_F_NEXT))
				return vq__fail(vq);
			if (!d.len || d.len % VQ_DESC_SIZE ||
			    d.len / VQ_DESC_SIZE > KVM_VQ_MAX_SEGS)
				return vq__fail(vq);
			if (!kvm_gmem__ptr(m, d.addr, d.len))
				return vq__fail(vq);
			table = d.addr;
			tsize = d.len / VQ_DESC_SIZE;
			idx = 0;
			seen = 0;
			indirect = true;
			continue;
		}
		if (vq__add_seg(m, c, &d))
			return vq__fail(vq);
		if (!(d.flags & VIRTQ_DESC_F_NEXT))
			return 0;
		idx = d.next;
		if (idx >= tsize)
			return vq__fail(vq);
	}
}

/* Tell the driver (EVENT_IDX) to kick for the entry at last_avail. */
static int vq__publish_avail_event(struct kvm_vq *vq, const struct kvm_gmem *m)
{
	uint64_t gpa = vq__used_gpa(vq) + 4 + 8 * (uint64_t)vq->size;
	uint16_t *ev = vq__u16(m, gpa);

	if (!ev)
		return vq__fail(vq);
	if (le16toh(__atomic_load_n(ev, __ATOMIC_RELAXED)) != vq->last_avail) {
		__atomic_store_n(ev, htole16(vq->last_avail), __ATOMIC_RELAXED);
		kvm_gmem__dirty(m, gpa, sizeof(*ev));
	}
	return 0;
}

int kvm_vq__pop(struct kvm_vq *vq, const struct kvm_gmem *m,
		struct kvm_vq_chain *c)
{
	uint64_t avail_gpa = vq__avail_gpa(vq);
	const uint16_t *idxp, *slot;
	uint16_t avail, head;
	int ret;

	if (vq->broken)
		return -EIO;
	if (!vq->pfn)
		return 0;
	idxp = vq__u16(m, avail_gpa + 2);
	if (!idxp)
		return vq__fail(vq);
	/* Acquire: the ring slot and descriptors are read after idx. */
	avail = le16toh(__atomic_load_n(idxp, __ATOMIC_ACQUIRE));
	if (avail == vq->last_avail) {
		if (!vq->event_idx)
			return 0;
		ret = vq__publish_avail_event(vq, m);
		if (ret)
			return ret;
		/* The driver adds a buffer, then reads avail_event; we wrote
		 * avail_event, now re-read idx: a full barrier on both sides
		 * means one of us sees the other and no kick is lost. */
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		avail = le16toh(__atomic_load_n(idxp, __ATOMIC_ACQUIRE));
		if (avail == vq->last_avail)
			return 0;
	}
	if ((uint16_t)(avail - vq->last_avail) > vq->size)
		return vq__fail(vq);
	slot = vq__u16(m,
		       avail_gpa + 4 +
			       2 * (uint64_t)(vq->last_avail & (vq->size - 1)));
	if (!slot)
		return vq__fail(vq);
	head = le16toh(__atomic_load_n(slot, __ATOMIC_RELAXED));
	ret = vq__walk(vq, m, head, c);
	if (ret)
		return ret;
	vq->last_avail++;
	return 1;
}

void kvm_vq__unpop(struct kvm_vq *vq)
{
	vq->last_avail--;
}

int kvm_vq__push(struct kvm_vq *vq, const struct kvm_gmem *m, uint16_t head,
		 uint32_t len)
{
	uint64_t used = vq__used_gpa(vq);
	uint64_t elem =
		used + 4 + 8 * (uint64_t)(vq->used_idx & (vq->size - 1));
	uint32_t v[2] = { htole32(head), htole32(len) };
	uint8_t *p;
	uint16_t *idxp;

	if (!kvm_vq__ready(vq))
		return -EIO;
	if (head >= vq->size)
		return -EINVAL;
	p = kvm_gmem__ptr(m, elem, sizeof(v));
	idxp = vq__u16(m, used + 2);
	if (!p || !idxp)
		return vq__fail(vq);
	memcpy(p, v, sizeof(v));
	kvm_gmem__dirty(m, elem, sizeof(v));
	vq->used_idx++;
	/* Release: the element is visible before the index that covers it. */
	__atomic_store_n(idxp, htole16(vq->used_idx), __ATOMIC_RELEASE);
	kvm_gmem__dirty(m, used + 2, sizeof(*idxp));
	return 0;
}

bool kvm_vq__should_notify(struct kvm_vq *vq, const struct kvm_gmem *m)
{
	uint64_t avail = vq__avail_gpa(vq);
	const uint16_t *p;
	uint16_t old, now, ev;
	bool valid;

	if (!kvm_vq__ready(vq))
		return false;
	/* used->idx is written before the driver's flags/event are read;
	 * the driver does the opposite, so neither misses the other. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (!vq->event_idx) {
		p = vq__u16(m, avail);
		if (!p) {
			vq__fail(vq);
			return false;
		}
		return !(le16toh(__atomic_load_n(p, __ATOMIC_RELAXED)) &
			 VIRTQ_AVAIL_F_NO_INTERRUPT);
	}
	old = vq->signalled_used;
	valid = vq->signalled_valid;
	now = vq->used_idx;
	vq->signalled_used = now;
	vq->signalled_valid = 1;
	if (!valid)
		return true;
	p = vq__u16(m, avail + 4 + 2 * (uint64_t)vq->size);
	if (!p) {
		vq__fail(vq);
		return false;
	}
	ev = le16toh(__atomic_load_n(p, __ATOMIC_RELAXED));
	/* Interrupt if used_event lies in [old, now): vring_need_event. */
	return (uint16_t)(now - ev - 1) < (uint16_t)(now - old);
}

int kvm_vq__reattach(struct kvm_vq *vq, const struct kvm_gmem *m)
{
	const uint16_t *usedp, *availp;
	uint16_t used, avail;

	vq->signalled_valid = 0;
	if (!vq->pfn || vq->broken)
		return vq->broken ? -EIO : 0;
	if (!kvm_gmem__ptr(m, vq__desc_gpa(vq), kvm_vq__ring_bytes(vq->size)))
		return vq__fail(vq);
	usedp = vq__u16(m, vq__used_gpa(vq) + 2);
	availp = vq__u16(m, vq__avail_gpa(vq) + 2);
	used = le16toh(__atomic_load_n(usedp, __ATOMIC_ACQUIRE));
	avail = le16toh(__atomic_load_n(availp, __ATOMIC_ACQUIRE));
	if ((uint16_t)(avail - used) > vq->size)
		return vq__fail(vq);
	vq->used_idx = used;
	vq->last_avail = used;
	return (uint16_t)(avail - used);
}

size_t kvm_vq__chain_read(const struct kvm_vq_chain *c, size_t off, void *dst,
			  size_t len)
{
	uint8_t *out = dst;
	size_t done = 0;

	for (unsigned int i = 0; i < c->nr_out && done < len; i++) {
		const struct kvm_vq_seg *s = &c->seg[i];
		size_t n;

		if (off >= s->len) {
			off -= s->len;
			continue;
		}
		n = s->len - off;
		if (n > len - done)
			n = len - done;
		memcpy(out + done, s->ptr + off, n);
		done += n;
		off = 0;
	}
	return done;
}

size_t kvm_vq__chain_write(const struct kvm_gmem *m,
			   const struct kvm_vq_chain *c, size_t off,
			   const void *src, size_t len)
{
	const uint8_t *in = src;
	size_t done = 0;

	for (unsigned int i = c->nr_out;
	     i < (unsigned int)c->nr_out + c->nr_in && done < len; i++) {
		const struct kvm_vq_seg *s = &c->seg[i];
		size_t n;

		if (off >= s->len) {
			off -= s->len;
			continue;
		}
		n = s->len - off;
		if (n > len - done)
			n = len - done;
		memcpy(s->ptr + off, in + done, n);
		kvm_gmem__dirty(m, s->gpa + off, n);
		done += n;
		off = 0;
	}
	return done;
}
