// SPDX-License-Identifier: MIT
/*
 * Net device: datagrams over a UDP socket bound to the service address.
 * Queue 0 transmits (each request names its destination); queue 1 holds
 * receive buffers the guest posted, filled straight from the socket with the
 * source address in the response. A secondary binds the address only when it
 * takes over (defer_bind), since the primary holds it until then.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../kvm.h"
#include "kemari/kemari.h"

#define NET_TX 0
#define NET_RX 1

struct kvm_net {
	struct kvm_dev dev;
	int fd;
	char *spec;
	uint32_t ip;
	uint16_t port;
	uint64_t tx_packets, rx_packets, tx_errors;
};

/* How long a takeover waits for the service address to come free. */
#define NET_TAKEOVER_BIND_NS (30ULL * 1000000000ULL)

static int kvm_net__bind(struct kvm_net *n)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	int one = 1;

	n->fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (n->fd < 0)
		return kemari_err(-errno, "net: socket: %s", strerror(errno));
	setsockopt(n->fd, SOL_SOCKET, SO_BROADCAST, &one, sizeof(one));
	sa.sin_addr.s_addr = htonl(n->ip);
	sa.sin_port = htons(n->port);
	if (bind(n->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int err = -errno;

		close(n->fd);
		n->fd = -1;
		if (err == -EADDRINUSE)
			return kemari_err(
				err,
				"net %s: address already in use (another kemari-run or service holds it): stop it or choose another --net port",
				n->spec);
		return kemari_err(err, "net %s: cannot bind: %s", n->spec,
				  strerror(-err));
	}
	return 0;
}

static int kvm_net__tx(struct kvm_net *n)
{
	struct kemari_ring *r = kvm_dev__ring(&n->dev, NET_TX);
	const struct kemari_req *slot;

	while ((slot = kvm_ring__peek(&n->dev, r))) {
		struct kemari_req req = *slot;
		struct kemari_rsp rsp = { .id = req.id };
		const void *data = kvm_vm__gpa(n->dev.vm, req.gpa, req.len);
		struct sockaddr_in to = { .sin_family = AF_INET };

		to.sin_addr.s_addr = htonl(KEMARI_NET_IP(req.arg));
		to.sin_port = htons(KEMARI_NET_PORT(req.arg));
		if (!data) {
			rsp.status = -EFAULT;
		} else if (req.len > KEMARI_NET_MTU) {
			rsp.status = -EMSGSIZE;
		} else if (n->fd < 0) {
			rsp.status = -ENETDOWN;
		} else if (sendto(n->fd, data, req.len, 0,
				  (struct sockaddr *)&to, sizeof(to)) < 0) {
			/* UDP: a full buffer or unreachable peer drops it. */
			rsp.status = -errno;
		} else {
			rsp.len = req.len;
		}
		if (rsp.status)
			n->tx_errors++;
		else
			n->tx_packets++;
		kvm_ring__respond(&n->dev, r, &rsp);
	}
	return 0;
}

static int kvm_net__input(struct kvm_dev *dev)
{
	struct kvm_net *n = kemari_container_of(dev, struct kvm_net, dev);
	struct kemari_ring *r = kvm_dev__ring(dev, NET_RX);
	const struct kemari_req *slot;
	int delivered = 0;

	if (n->fd < 0)
		return 0;
	while ((slot = kvm_ring__peek(dev, r))) {
		struct kemari_req req = *slot;
		struct kemari_rsp rsp = { .id = req.id };
		uint32_t cap = KEMARI_MIN(req.len, (uint32_t)KEMARI_NET_MTU);
		void *buf = kvm_vm__gpa(dev->vm, req.gpa, cap);
		struct sockaddr_in from;
		socklen_t flen = sizeof(from);
		ssize_t got;

		if (!buf) {
			rsp.status = -EFAULT;
			kvm_ring__respond(dev, r, &rsp);
			continue;
		}
		got = recvfrom(n->fd, buf, cap, MSG_DONTWAIT | MSG_TRUNC,
			       (struct sockaddr *)&from, &flen);
		if (got < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK ||
			    errno == EINTR)
				break;
			continue; /* ICMP errors from earlier sends */
		}
		/* Backend writes are invisible to KVM's dirty log. */
		kvm_vm__mark_dirty(dev->vm, req.gpa, cap);
		if ((size_t)got > cap) {
			rsp.status = -EMSGSIZE;
			got = cap;
		}
		rsp.len = (uint32_t)got;
		rsp.arg = KEMARI_NET_ADDR(ntohl(from.sin_addr.s_addr),
					  ntohs(from.sin_port));
		kvm_ring__respond(dev, r, &rsp);
		n->rx_packets++;
		delivered++;
	}
	return delivered;
}

static int kvm_net__process(struct kvm_dev *dev, unsigned int q)
{
	struct kvm_net *n = kemari_container_of(dev, struct kvm_net, dev);

	if (q == NET_TX)
		return kvm_net__tx(n);
	kvm_net__input(dev);
	return 0;
}

static int kvm_net__pollfd(struct kvm_dev *dev)
{
	struct kvm_net *n = kemari_container_of(dev, struct kvm_net, dev);
	struct kemari_ring *r = kvm_dev__ring(dev, NET_RX);

	/* Wait for data only when there is a buffer to put it in. */
	return r->req_cons != r->req_prod ? n->fd : -1;
}

static int kvm_net__reattach(struct kvm_dev *dev)
{
	struct kvm_net *n = kemari_container_of(dev, struct kvm_net, dev);
	uint64_t t0 = kemari_now_ns(), deadline = t0 + NET_TAKEOVER_BIND_NS;
	bool told = false;
	int err;

	/*
	 * Taking over the service address: the dead primary's socket lingers
	 * until its process is torn down (seconds, for a big VM on a slow
	 * host), or until a floating address moves over, so keep trying
	 * before giving up.
	 */
	while (n->fd < 0) {
		err = kvm_net__bind(n);
		if (err != -EADDRINUSE || kemari_now_ns() >= deadline)
			return err;
		kemari_err_clear();
		if (!told && kemari_now_ns() - t0 > 1000000000ULL) {
			kemari_warn(
				"net %s: still in use (the failed primary's process is going away?); retrying for up to %llu s",
				n->spec, NET_TAKEOVER_BIND_NS / 1000000000ULL);
			told = true;
		}
		usleep(20000);
	}
	if (told)
		kemari_info("net %s: bound after %.1f s", n->spec,
			    (double)(kemari_now_ns() - t0) / 1e9);
	return 0;
}

/* The service address for the next primary: reattach binds it again. */
static void kvm_net__detach(struct kvm_dev *dev)
{
	struct kvm_net *n = kemari_container_of(dev, struct kvm_net, dev);

	if (n->fd >= 0)
		close(n->fd);
	n->fd = -1;
}

static void kvm_net__destroy(struct kvm_dev *dev)
{
	struct kvm_net *n = kemari_container_of(dev, struct kvm_net, dev);

	if (n->fd >= 0)
		close(n->fd);
	free(n->spec);
	free(n);
}

static const struct kvm_dev_ops kvm_net_ops = {
	.process = kvm_net__process,
	.pollfd = kvm_net__pollfd,
	.input = kvm_net__input,
	.reattach = kvm_net__reattach,
	.detach = kvm_net__detach,
	.destroy = kvm_net__destroy,
};

int kvm_net__create(struct kvm_vm *vm, const char *spec, bool defer_bind)
{
	struct kvm_net *n;
	int err;

	n = calloc(1, sizeof(*n));
	if (!n)
		return -ENOMEM;
	n->fd = -1;
	n->spec = strdup(spec);
	if (strncmp(spec, "udp:", 4) ||
	    kemari_parse_hostport(spec + 4, &n->ip, &n->port)) {
		err = kemari_err(
			-EINVAL,
			"--net=%s: expected udp:IPV4:PORT, e.g. udp:127.0.0.1:7500",
			spec);
		goto err_free;
	}
	if (!defer_bind) {
		err = kvm_net__bind(n);
		if (err)
			goto err_free;
	}
	n->dev.ops = &kvm_net_ops;
	n->dev.kind[NET_TX] = KEMARI_EV_NET_TX;
	n->dev.tapped[NET_TX] = true;
	err = kvm_dev__register(vm, &n->dev, KEMARI_DEV_NET, 2,
				KEMARI_NET_ADDR(n->ip, n->port));
	if (err)
		goto err_close;
	return 0;

err_close:
	if (n->fd >= 0)
		close(n->fd);
err_free:
	free(n->spec);
	free(n);
	return err;
}
