// SPDX-License-Identifier: MIT
/*
 * Takeover announcement frames (see announce.h): RARP as QEMU's
 * qemu_announce_self sends it, a gratuitous ARP request, and the guest's
 * address from the kernel command line.
 */
#include <errno.h>
#include <linux/if_arp.h>
#include <linux/if_ether.h>
#include <string.h>

#include "announce.h"

_Static_assert(KVM_ANNOUNCE_FRAME_LEN == ETH_ZLEN, "minimum frame length");

/* Gaps of 50, 100, 150 and 200 ms: all sent half a second after takeover. */
static const unsigned int announce_delay_ms[KVM_ANNOUNCE_ROUNDS] = {
	0, 50, 150, 300, 500,
};

unsigned int kvm_announce__delay_ms(unsigned int round)
{
	if (round >= KVM_ANNOUNCE_ROUNDS)
		return announce_delay_ms[KVM_ANNOUNCE_ROUNDS - 1];
	return announce_delay_ms[round];
}

static void put_be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

/*
 * Broadcast Ethernet header and an Ethernet/IPv4 ARP body; sender and
 * target protocol addresses are already in network byte order.
 */
static size_t announce__frame(uint8_t *buf, size_t cap, uint16_t ethertype,
			      uint16_t op, const uint8_t mac[6],
			      const uint8_t tha[6], uint32_t ip_be)
{
	uint8_t *arp = buf + ETH_HLEN;

	if (cap < KVM_ANNOUNCE_FRAME_LEN)
		return 0;
	memset(buf, 0, KVM_ANNOUNCE_FRAME_LEN);
	memset(buf, 0xff, ETH_ALEN);
	memcpy(buf + ETH_ALEN, mac, ETH_ALEN);
	put_be16(buf + 12, ethertype);
	put_be16(arp, ARPHRD_ETHER);
	put_be16(arp + 2, ETH_P_IP);
	arp[4] = ETH_ALEN;
	arp[5] = 4;
	put_be16(arp + 6, op);
	memcpy(arp + 8, mac, 6);
	memcpy(arp + 14, &ip_be, 4);
	memcpy(arp + 18, tha, 6);
	memcpy(arp + 24, &ip_be, 4);
	return KVM_ANNOUNCE_FRAME_LEN;
}

size_t kvm_announce__rarp(uint8_t *buf, size_t cap, const uint8_t mac[6])
{
	return announce__frame(buf, cap, ETH_P_RARP, ARPOP_RREQUEST, mac, mac,
			       0);
}

size_t kvm_announce__garp(uint8_t *buf, size_t cap, const uint8_t mac[6],
			  uint32_t ip_be)
{
	static const uint8_t zero[6];

	return announce__frame(buf, cap, ETH_P_ARP, ARPOP_REQUEST, mac, zero,
			       ip_be);
}

static int is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* A decimal number up to max in [*p, end), no leading zero (as inet_pton). */
static int announce__num(const char **p, const char *end, unsigned int max,
			 unsigned int *out)
{
	const char *s = *p;
	unsigned int v = 0;
	int n = 0;

	while (s < end && *s >= '0' && *s <= '9' && n < 4) {
		v = v * 10 + (unsigned int)(*s++ - '0');
		n++;
	}
	if (!n || n > 3 || (n > 1 && **p == '0') || v > max)
		return -EINVAL;
	*p = s;
	*out = v;
	return 0;
}

static int announce__parse_ip(const char *s, const char *end, uint32_t *ip_be)
{
	uint8_t b[4];
	unsigned int v;

	for (int i = 0; i < 4; i++) {
		if (i && (s == end || *s++ != '.'))
			return -EINVAL;
		if (announce__num(&s, end, 255, &v))
			return -EINVAL;
		b[i] = (uint8_t)v;
	}
	if (s < end && *s == '/') {
		s++;
		if (announce__num(&s, end, 32, &v))
			return -EINVAL;
	}
	if (s != end)
		return -EINVAL;
	memcpy(ip_be, b, 4);
	return 0;
}

int kvm_announce__cmdline_ip(const char *cmdline, uint32_t *ip_be)
{
	static const char key[] = "kemari.ip=";
	const char *s = cmdline, *val = NULL, *val_end = NULL;

	if (!cmdline)
		return -ENOENT;
	while (*s) {
		const char *w;

		while (is_space(*s))
			s++;
		w = s;
		while (*s && !is_space(*s))
			s++;
		if ((size_t)(s - w) >= sizeof(key) - 1 &&
		    !memcmp(w, key, sizeof(key) - 1)) {
			val = w + sizeof(key) - 1;
			val_end = s;
		}
	}
	if (!val)
		return -ENOENT;
	return announce__parse_ip(val, val_end, ip_be);
}
