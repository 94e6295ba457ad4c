/* SPDX-License-Identifier: MIT */
/*
 * virtio-net (legacy) over a TAP-like file descriptor: one read() is one
 * received Ethernet frame, one write() one sent frame. The fd carries
 * bare frames: open the TAP with IFF_TAP | IFF_NO_PI and WITHOUT
 * IFF_VNET_HDR (no TUNSETVNETHDRSZ, no TUNSETOFFLOAD). The device adds
 * and strips the guest's 10-byte struct virtio_net_hdr itself: neither
 * VIRTIO_NET_F_MRG_RXBUF nor any offload is offered, so the header is the
 * legacy 10 bytes and always "no checksum, no GSO".
 *
 * Queue 0 receives, queue 1 transmits. No control queue.
 */
#ifndef KEMARI_HV_KVM_VIRTIO_NET_H
#define KEMARI_HV_KVM_VIRTIO_NET_H

#include <stdbool.h>
#include <stdint.h>

#include "pci.h"

#define VIRTIO_NET_F_MAC 5
#define VIRTIO_NET_F_STATUS 16
#define VIRTIO_NET_S_LINK_UP 1

#define KVM_VIRTIO_NET_HDR_LEN 10
#define KVM_VIRTIO_NET_RXQ 0
#define KVM_VIRTIO_NET_TXQ 1
/* The largest frame moved: 64 KiB plus an Ethernet and VLAN header. */
#define KVM_VIRTIO_NET_MAX_FRAME (65535 + 14 + 4)
/* Frames taken from the fd per kvm_virtio_net__rx() call. */
#define KVM_VIRTIO_NET_RX_BUDGET 64

/* Config offsets (legacy struct virtio_net_config). */
#define VIRTIO_NET_CFG_MAC 0
#define VIRTIO_NET_CFG_STATUS 6
#define KVM_VIRTIO_NET_CONFIG_LEN 8

struct kvm_virtio_net;

struct kvm_virtio_net_params {
	int fd;		     /* made O_NONBLOCK; stays the caller's to close */
	uint8_t mac[6];	     /* the guest's MAC (VIRTIO_NET_F_MAC) */
	uint16_t queue_size; /* 0: 256 */
};

struct kvm_virtio_net_stats {
	uint64_t rx_frames, rx_dropped; /* dropped: no (big enough) buffer */
	uint64_t tx_frames, tx_dropped; /* dropped: fd refused it */
};

int kvm_virtio_net__create(struct kvm_virtio_net **out,
			   const struct kvm_virtio_net_params *p,
			   const struct kvm_gmem *mem);
void kvm_virtio_net__destroy(struct kvm_virtio_net *n);

struct kvm_virtio_pci *kvm_virtio_net__pci(struct kvm_virtio_net *n);

/*
 * Move frames waiting on the fd into posted RX buffers (call with the
 * device lock held when the fd is readable). Never blocks. A frame with no
 * buffer to take it, or arriving before DRIVER_OK, is read and dropped.
 * Returns the number of frames taken from the fd (at most
 * KVM_VIRTIO_NET_RX_BUDGET: call again while the fd stays readable), or
 * a negative errno if reading the fd failed.
 */
int kvm_virtio_net__rx(struct kvm_virtio_net *n);

/* Link state in config (VIRTIO_NET_F_STATUS), with a config interrupt. */
void kvm_virtio_net__set_link(struct kvm_virtio_net *n, bool up);

void kvm_virtio_net__stats(const struct kvm_virtio_net *n,
			   struct kvm_virtio_net_stats *st);

#endif
