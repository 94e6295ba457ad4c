// SPDX-License-Identifier: MIT
/*
 * virtio-net, legacy: every buffer starts with the 10-byte virtio_net_hdr
 * (no MRG_RXBUF, so no num_buffers field). Transmit strips it and writes
 * the rest as one frame; receive prepends a zeroed one. A frame goes into
 * one posted buffer or is dropped, like a NIC out of descriptors.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "kemari/kemari.h"
#include "net.h"

#define NET_QUEUE_SIZE 256
#define NET_ETH_HLEN 14

struct kvm_virtio_net {
	struct kvm_virtio_pci vp;
	int fd;
	uint8_t config[KVM_VIRTIO_NET_CONFIG_LEN];
	struct kvm_virtio_net_stats stats;
	struct kvm_vq_chain chain;
	struct iovec iov[KVM_VQ_MAX_SEGS];
	uint8_t frame[KVM_VIRTIO_NET_MAX_FRAME];
};

static struct kvm_virtio_net *net__of(struct kvm_virtio_pci *vp)
{
	return kemari_container_of(vp, struct kvm_virtio_net, vp);
}

/* The readable part of the chain after the header, as iovecs. */
static int net__tx_iov(struct kvm_virtio_net *n)
{
	const struct kvm_vq_chain *c = &n->chain;
	size_t skip = KVM_VIRTIO_NET_HDR_LEN;
	int cnt = 0;

	for (unsigned int i = 0; i < c->nr_out; i++) {
		const struct kvm_vq_seg *s = &c->seg[i];

		if (skip >= s->len) {
			skip -= s->len;
			continue;
		}
		n->iov[cnt].iov_base = s->ptr + skip;
		n->iov[cnt].iov_len = s->len - skip;
		cnt++;
		skip = 0;
	}
	return cnt;
}

/* One frame out; a full or failing fd drops it, as a wire would. */
static void net__tx_one(struct kvm_virtio_net *n)
{
	size_t len = n->chain.out_len - KVM_VIRTIO_NET_HDR_LEN;
	int cnt = net__tx_iov(n);
	ssize_t w;

	if (len < NET_ETH_HLEN || len > KVM_VIRTIO_NET_MAX_FRAME) {
		n->stats.tx_dropped++;
		return;
	}
	do {
		w = writev(n->fd, n->iov, cnt);
	} while (w < 0 && errno == EINTR);
	if (w < 0)
		n->stats.tx_dropped++;
	else
		n->stats.tx_frames++;
}

static int net__tx(struct kvm_virtio_net *n)
{
	struct kvm_virtio_pci *vp = &n->vp;
	struct kvm_vq *vq = kvm_virtio_pci__vq(vp, KVM_VIRTIO_NET_TXQ);
	unsigned int done = 0;

	while (kvm_vq__pop(vq, vp->mem, &n->chain) == 1) {
		if (n->chain.out_len < KVM_VIRTIO_NET_HDR_LEN) {
			kvm_virtio_pci__fail(vp);
			break;
		}
		net__tx_one(n);
		if (kvm_vq__push(vq, vp->mem, n->chain.head, 0))
			break;
		done++;
	}
	if (done)
		kvm_virtio_pci__signal(vp, KVM_VIRTIO_NET_TXQ);
	return 0;
}

static int net__queue(struct kvm_virtio_pci *vp, unsigned int q)
{
	/* A kick on the receive queue only says buffers were posted; they
	 * are taken when a frame arrives (kvm_virtio_net__rx). */
	if (q == KVM_VIRTIO_NET_TXQ)
		return net__tx(net__of(vp));
	return 0;
}

static const struct kvm_virtio_dev_ops net__ops = {
	.queue = net__queue,
};

/* Put frame[0, len) into the next RX buffer: 1 delivered, 0 dropped. */
static int net__rx_one(struct kvm_virtio_net *n, size_t len)
{
	static const uint8_t hdr[KVM_VIRTIO_NET_HDR_LEN]; /* no csum, no GSO */
	struct kvm_virtio_pci *vp = &n->vp;
	struct kvm_vq *vq = kvm_virtio_pci__vq(vp, KVM_VIRTIO_NET_RXQ);
	int ret;

	if (!kvm_virtio_pci__driver_ok(vp) || !kvm_vq__ready(vq))
		goto drop;
	ret = kvm_vq__pop(vq, vp->mem, &n->chain);
	if (ret <= 0)
		goto drop; /* none posted, or the ring broke: see rx() */
	if (n->chain.in_len < KVM_VIRTIO_NET_HDR_LEN + len) {
		/* Too small for this frame (the guest sized its buffers for
		 * a smaller MTU): keep the buffer, lose the frame. */
		kvm_vq__unpop(vq);
		goto drop;
	}
	kvm_vq__chain_write(vp->mem, &n->chain, 0, hdr, sizeof(hdr));
	kvm_vq__chain_write(vp->mem, &n->chain, sizeof(hdr), n->frame, len);
	if (kvm_vq__push(vq, vp->mem, n->chain.head,
			 (uint32_t)(sizeof(hdr) + len)))
		goto drop;
	n->stats.rx_frames++;
	return 1;

drop:
	n->stats.rx_dropped++;
	return 0;
}

int kvm_virtio_net__rx(struct kvm_virtio_net *n)
{
	unsigned int delivered = 0;
	int taken = 0, ret = 0;

	while (taken < KVM_VIRTIO_NET_RX_BUDGET) {
		ssize_t len = read(n->fd, n->frame, sizeof(n->frame));

		if (len < 0 && errno == EINTR)
			continue;
		if (len < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				ret = -errno;
			break;
		}
		if (len == 0) { /* the other end is gone (never on a TAP) */
			ret = -EPIPE;
			break;
		}
		taken++;
		delivered += (unsigned int)net__rx_one(n, (size_t)len);
	}
	if (delivered)
		kvm_virtio_pci__signal(&n->vp, KVM_VIRTIO_NET_RXQ);
	/* Not called through kvm_virtio_pci__process(): report a ring the
	 * guest broke here. */
	if (kvm_virtio_pci__vq(&n->vp, KVM_VIRTIO_NET_RXQ)->broken)
		kvm_virtio_pci__fail(&n->vp);
	return taken ? taken : ret;
}

void kvm_virtio_net__set_link(struct kvm_virtio_net *n, bool up)
{
	n->config[VIRTIO_NET_CFG_STATUS] = up ? VIRTIO_NET_S_LINK_UP : 0;
	n->config[VIRTIO_NET_CFG_STATUS + 1] = 0;
	kvm_virtio_pci__config_changed(&n->vp);
}

int kvm_virtio_net__create(struct kvm_virtio_net **out,
			   const struct kvm_virtio_net_params *p,
			   const struct kvm_gmem *mem)
{
	struct kvm_virtio_model model = {
		.ops = &net__ops,
		.device_type = VIRTIO_ID_NET,
		.nqueues = 2,
		.queue_size = p->queue_size ? p->queue_size : NET_QUEUE_SIZE,
		.config_len = KVM_VIRTIO_NET_CONFIG_LEN,
		.host_features = 1U << VIRTIO_NET_F_MAC |
				 1U << VIRTIO_NET_F_STATUS |
				 1U << VIRTIO_RING_F_INDIRECT_DESC |
				 1U << VIRTIO_RING_F_EVENT_IDX,
	};
	struct kvm_virtio_net *n;
	int flags, ret;

	flags = fcntl(p->fd, F_GETFL);
	if (flags < 0)
		return -errno;
	n = calloc(1, sizeof(*n));
	if (!n)
		return -ENOMEM;
	n->fd = p->fd;
	memcpy(n->config + VIRTIO_NET_CFG_MAC, p->mac, 6);
	n->config[VIRTIO_NET_CFG_STATUS] = VIRTIO_NET_S_LINK_UP;
	model.config = n->config;
	ret = kvm_virtio_pci__init(&n->vp, &model, mem);
	if (ret)
		goto err_free;
	/* rx() must never wait for a frame. */
	if (!(flags & O_NONBLOCK) &&
	    fcntl(p->fd, F_SETFL, flags | O_NONBLOCK)) {
		ret = -errno;
		goto err_free;
	}
	*out = n;
	return 0;

err_free:
	free(n);
	return ret;
}

void kvm_virtio_net__destroy(struct kvm_virtio_net *n)
{
	free(n);
}

struct kvm_virtio_pci *kvm_virtio_net__pci(struct kvm_virtio_net *n)
{
	return &n->vp;
}

void kvm_virtio_net__stats(const struct kvm_virtio_net *n,
			   struct kvm_virtio_net_stats *st)
{
	*st = n->stats;
}
