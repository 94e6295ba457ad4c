/* SPDX-License-Identifier: MIT */
/*
 * virtio-blk (legacy) over a file descriptor: pread/pwrite between the
 * file and guest buffers, fdatasync for FLUSH. Requests are served
 * synchronously when the queue is processed, in order: a completion is in
 * the used ring only once its data reached the file (pwrite returned) or,
 * for FLUSH, stable storage (fdatasync returned).
 */
#ifndef KEMARI_HV_KVM_VIRTIO_BLK_H
#define KEMARI_HV_KVM_VIRTIO_BLK_H

#include <stdbool.h>
#include <stdint.h>

#include "pci.h"

#define VIRTIO_BLK_F_SIZE_MAX 1
#define VIRTIO_BLK_F_SEG_MAX 2
#define VIRTIO_BLK_F_RO 5
#define VIRTIO_BLK_F_BLK_SIZE 6
#define VIRTIO_BLK_F_FLUSH 9

#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8

#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_S_UNSUPP 2

#define VIRTIO_BLK_ID_BYTES 20
#define KVM_VIRTIO_BLK_SECTOR 512
#define KVM_VIRTIO_BLK_SIZE_MAX (1U << 20)

/* Config offsets (legacy struct virtio_blk_config). */
#define VIRTIO_BLK_CFG_CAPACITY 0
#define VIRTIO_BLK_CFG_SIZE_MAX 8
#define VIRTIO_BLK_CFG_SEG_MAX 12
#define VIRTIO_BLK_CFG_BLK_SIZE 20
#define KVM_VIRTIO_BLK_CONFIG_LEN 60

struct kvm_virtio_blk;

struct kvm_virtio_blk_params {
	int fd;		     /* the disk; stays the caller's to close */
	const char *serial;  /* GET_ID answer, up to 20 bytes; NULL: "" */
	bool read_only;	     /* offer VIRTIO_BLK_F_RO, fail T_OUT */
	uint16_t queue_size; /* 0: 256 */
};

struct kvm_virtio_blk_stats {
	uint64_t reads, writes, flushes, get_ids;
	uint64_t io_errors, unsupported;
};

/*
 * A block device over p->fd (a regular file or a block device; capacity
 * is its size in 512-byte sectors, rounded down) in guest memory mem.
 * p->fd < 0: no file yet (capacity 0) until kvm_virtio_blk__set_fd.
 */
int kvm_virtio_blk__create(struct kvm_virtio_blk **out,
			   const struct kvm_virtio_blk_params *p,
			   const struct kvm_gmem *mem);
/* Serve from fd from now on (the caller's to close), capacity its size;
 * before the guest runs, or it sees the capacity change unannounced. */
int kvm_virtio_blk__set_fd(struct kvm_virtio_blk *b, int fd);
void kvm_virtio_blk__destroy(struct kvm_virtio_blk *b);

/* The transport: register its pio ops, fill its PCI config, tap it. */
struct kvm_virtio_pci *kvm_virtio_blk__pci(struct kvm_virtio_blk *b);

uint64_t kvm_virtio_blk__capacity(const struct kvm_virtio_blk *b);
void kvm_virtio_blk__stats(const struct kvm_virtio_blk *b,
			   struct kvm_virtio_blk_stats *st);

#endif
