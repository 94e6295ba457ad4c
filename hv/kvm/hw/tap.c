// SPDX-License-Identifier: MIT
/*
 * --net=tap:IFNAME[,bridge=BR][,mac=MAC]: the TAP device behind a Linux
 * guest's virtio-net. Created (or opened, if it exists and is ours to
 * attach) through /dev/net/tun as IFF_TAP | IFF_NO_PI without a vnet
 * header (the device model adds and strips the guest's header), brought
 * up, and optionally enslaved to an existing bridge.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../kvm.h"
#include "kemari/kemari.h"

/* 52:54:00 is the locally used KVM/QEMU prefix; "KM" and 1. */
static const uint8_t kvm_tap_default_mac[6] = { 0x52, 0x54, 0x00,
						0x4b, 0x4d, 0x01 };

static int kvm_tap__parse_mac(const char *s, uint8_t mac[6])
{
	unsigned int b[6];
	char tail;

	if (sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3],
		   &b[4], &b[5], &tail) != 6)
		return -EINVAL;
	for (int i = 0; i < 6; i++)
		mac[i] = (uint8_t)b[i];
	/* A unicast address: bit 0 of the first byte clear. */
	return mac[0] & 1 ? -EINVAL : 0;
}

int kvm_tap__parse(const char *spec, struct kvm_tap_cfg *c)
{
	char buf[256], *save = NULL, *tok;

	memset(c, 0, sizeof(*c));
	memcpy(c->mac, kvm_tap_default_mac, 6);
	if (strncmp(spec, "tap:", 4) || strlen(spec) >= sizeof(buf))
		goto bad;
	snprintf(buf, sizeof(buf), "%s", spec + 4);
	tok = strtok_r(buf, ",", &save);
	if (!tok || strlen(tok) >= IFNAMSIZ)
		goto bad;
	snprintf(c->ifname, sizeof(c->ifname), "%s", tok);
	while ((tok = strtok_r(NULL, ",", &save))) {
		if (!strncmp(tok, "bridge=", 7) && tok[7] &&
		    strlen(tok + 7) < IFNAMSIZ)
			snprintf(c->bridge, sizeof(c->bridge), "%s", tok + 7);
		else if (!strncmp(tok, "mac=", 4) &&
			 !kvm_tap__parse_mac(tok + 4, c->mac))
			continue;
		else
			goto bad;
	}
	return 0;
bad:
	return kemari_err(
		-EINVAL,
		"--net=%s: expected tap:IFNAME[,bridge=BRIDGE][,mac=52:54:00:xx:xx:xx] (or udp:HOST:PORT for a freestanding guest)",
		spec);
}

static int kvm_tap__ifreq(int sock, unsigned long req, struct ifreq *ifr,
			  const char *what, const char *name)
{
	if (ioctl(sock, req, ifr) < 0)
		return kemari_err(-errno, "TAP %s: %s: %s", name, what,
				  strerror(errno));
	return 0;
}

int kvm_tap__open(const struct kvm_tap_cfg *c, int *out)
{
	struct ifreq ifr;
	int fd, sock, err;

	fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return kemari_err(
			-errno,
			"TAP %s: cannot open /dev/net/tun: %s (load the tun module, run as root)",
			c->ifname, strerror(errno));
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", c->ifname);
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		err = kemari_err(
			-errno,
			"TAP %s cannot be created: %s (root or CAP_NET_ADMIN needed; an existing interface of that name must be a TAP)",
			c->ifname, strerror(errno));
		goto err_close;
	}
	sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (sock < 0) {
		err = -errno;
		goto err_close;
	}
	err = kvm_tap__ifreq(sock, SIOCGIFFLAGS, &ifr, "reading its flags",
			     c->ifname);
	if (!err) {
		ifr.ifr_flags |= IFF_UP;
		err = kvm_tap__ifreq(sock, SIOCSIFFLAGS, &ifr, "bringing it up",
				     c->ifname);
	}
	if (!err && c->bridge[0]) {
		struct ifreq br;

		memset(&br, 0, sizeof(br));
		snprintf(br.ifr_name, sizeof(br.ifr_name), "%s", c->bridge);
		br.ifr_ifindex = (int)if_nametoindex(c->ifname);
		if (ioctl(sock, SIOCBRADDIF, &br) < 0 && errno != EBUSY)
			err = kemari_err(
				-errno,
				"TAP %s: cannot join bridge %s: %s (create it first: ip link add %s type bridge)",
				c->ifname, c->bridge, strerror(errno),
				c->bridge);
	}
	close(sock);
	if (err)
		goto err_close;
	*out = fd;
	return 0;

err_close:
	close(fd);
	return err;
}
