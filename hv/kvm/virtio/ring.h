/* SPDX-License-Identifier: MIT */
/*
 * Split virtqueue, legacy layout (virtio 1.x spec 2.7 and its "Legacy
 * Interfaces: A Note on Virtqueue Layout"): the driver gives a page frame
 * number; the descriptor table starts there, the available ring follows
 * it, the used ring starts at the next 4096-byte boundary.
 *
 * The guest is not trusted: every index and address it supplies is
 * checked, and a structural violation marks the queue broken (the device
 * then sets NEEDS_RESET and stops serving it). The device never reads or
 * writes outside guest RAM whatever the ring holds.
 *
 * struct kvm_vq is the whole state of a queue: plain data, copied as is
 * into a checkpoint. Nothing in it points into host memory; every access
 * resolves its guest address through kvm_gmem__ptr().
 */
#ifndef KEMARI_HV_KVM_VIRTIO_RING_H
#define KEMARI_HV_KVM_VIRTIO_RING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../hw/hw.h"

#define KVM_VQ_MAX_SIZE 1024
/* Longest chain the device accepts (direct and indirect together). */
#define KVM_VQ_MAX_SEGS 1024
#define KVM_VQ_ALIGN 4096
#define KVM_VQ_PFN_SHIFT 12

#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_DESC_F_INDIRECT 4
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1

#define VIRTIO_RING_F_INDIRECT_DESC 28
#define VIRTIO_RING_F_EVENT_IDX 29

/* Saved and restored as is: see kvm_vq__reattach() for the way back. */
struct kvm_vq {
	uint32_t pfn;		 /* 0: queue not set up */
	uint16_t size;		 /* fixed by the device; a power of two */
	uint16_t last_avail;	 /* next avail ring slot to take */
	uint16_t used_idx;	 /* shadow of used->idx (the device owns it) */
	uint16_t signalled_used; /* used_idx at the last notify decision */
	uint8_t signalled_valid;
	uint8_t event_idx; /* VIRTIO_RING_F_EVENT_IDX negotiated */
	uint8_t indirect;  /* VIRTIO_RING_F_INDIRECT_DESC negotiated */
	uint8_t broken;	   /* a violation was seen: serve nothing */
};

/* One guest buffer of a chain, already bounds-checked. */
struct kvm_vq_seg {
	uint8_t *ptr;
	uint64_t gpa;
	uint32_t len;
	uint8_t write; /* device-writable */
};

/*
 * A popped chain: seg[0, nr_out) are driver-readable, then
 * seg[nr_out, nr_out + nr_in) device-writable (the order the spec
 * demands, and pop enforces).
 */
struct kvm_vq_chain {
	uint16_t head;
	uint16_t nr_out, nr_in;
	uint32_t out_len, in_len;
	struct kvm_vq_seg seg[KVM_VQ_MAX_SEGS];
};

/* Bytes of a legacy ring of size entries (descriptors to used ring end). */
uint64_t kvm_vq__ring_bytes(uint16_t size);

/* A fresh, disabled queue of size entries (power of two, <= 1024). */
int kvm_vq__init(struct kvm_vq *vq, uint16_t size);

/*
 * Driver wrote QUEUE_PFN. pfn 0 disables the queue. Indices restart at 0.
 * -EFAULT (and the queue is broken) if the ring is not inside RAM.
 */
int kvm_vq__set_pfn(struct kvm_vq *vq, const struct kvm_gmem *m, uint32_t pfn);

/* Negotiated features that change the ring protocol. */
void kvm_vq__set_features(struct kvm_vq *vq, uint32_t features);

static inline bool kvm_vq__ready(const struct kvm_vq *vq)
{
	return vq->pfn && !vq->broken;
}

/*
 * Take the next available chain into *c. Returns 1, 0 when the ring is
 * empty, or -EIO when the queue is (now) broken. With EVENT_IDX an empty
 * ring publishes avail_event (marked dirty) so the driver kicks again for
 * the next buffer.
 */
int kvm_vq__pop(struct kvm_vq *vq, const struct kvm_gmem *m,
		struct kvm_vq_chain *c);

/* Give the chain taken last back (a device that could not use it yet). */
void kvm_vq__unpop(struct kvm_vq *vq);

/*
 * Return chain head with len bytes written by the device: the element,
 * then (release-ordered) used->idx, both marked dirty. -EIO if the queue
 * is not usable.
 */
int kvm_vq__push(struct kvm_vq *vq, const struct kvm_gmem *m, uint16_t head,
		 uint32_t len);

/*
 * After one or more pushes: must the driver be interrupted? Honours
 * used_event with EVENT_IDX, VIRTQ_AVAIL_F_NO_INTERRUPT without.
 */
bool kvm_vq__should_notify(struct kvm_vq *vq, const struct kvm_gmem *m);

/*
 * After a restore: take the indices from guest memory, the replica's
 * truth. Devices here complete chains in order and synchronously, so what
 * was taken but not returned at the checkpoint starts again at used->idx
 * (re-issued, not lost). Returns the number of chains now available, or
 * -EIO if the ring is unusable (the queue is then broken).
 */
int kvm_vq__reattach(struct kvm_vq *vq, const struct kvm_gmem *m);

/* Copy up to len bytes from offset off of the chain's readable part. */
size_t kvm_vq__chain_read(const struct kvm_vq_chain *c, size_t off, void *dst,
			  size_t len);
/* Copy up to len bytes into the writable part at off, marking it dirty. */
size_t kvm_vq__chain_write(const struct kvm_gmem *m,
			   const struct kvm_vq_chain *c, size_t off,
			   const void *src, size_t len);

#endif
