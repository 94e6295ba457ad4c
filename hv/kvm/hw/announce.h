/* SPDX-License-Identifier: MIT */
/*
 * The guest's MAC announced on the secondary's TAP at takeover, as QEMU
 * does after a migration: until a frame with the guest's MAC as source
 * leaves the new port, the bridge keeps forwarding to the dead primary's
 * TAP and peers keep their ARP entries. A RARP frame (what switches learn
 * from) and, when the guest's address is known, a gratuitous ARP (what
 * hosts on the segment update their caches from) per round, in a few
 * rounds with growing gaps since any single frame may be lost.
 *
 * Only pure frame building and parsing here: the platform (pc.c) writes
 * the frames and keeps the schedule.
 */
#ifndef KEMARI_HV_KVM_HW_ANNOUNCE_H
#define KEMARI_HV_KVM_HW_ANNOUNCE_H

#include <stddef.h>
#include <stdint.h>

/* Ethernet's minimum frame without the FCS: both frames are padded to it. */
#define KVM_ANNOUNCE_FRAME_LEN 60
#define KVM_ANNOUNCE_ROUNDS 5

/* Round i (0 .. KVM_ANNOUNCE_ROUNDS - 1) is due this long after takeover. */
unsigned int kvm_announce__delay_ms(unsigned int round);

/*
 * A broadcast RARP "request reverse" (op 3) from mac, sender and target
 * hardware address mac, both protocol addresses 0, into buf. Returns the
 * frame's length (KVM_ANNOUNCE_FRAME_LEN), or 0 if cap is smaller.
 */
size_t kvm_announce__rarp(uint8_t *buf, size_t cap, const uint8_t mac[6]);

/*
 * A broadcast gratuitous ARP request (op 1) from mac for ip_be (network
 * byte order) as both sender and target address, target hardware address
 * 0, into buf. Returns the frame's length, or 0 if cap is smaller.
 */
size_t kvm_announce__garp(uint8_t *buf, size_t cap, const uint8_t mac[6],
			  uint32_t ip_be);

/*
 * The guest's IPv4 address from a kernel command line's word
 * kemari.ip=A.B.C.D or kemari.ip=A.B.C.D/PREFIX (the last such word wins,
 * as in the guest's init), into *ip_be in network byte order. cmdline may
 * be NULL. Returns 0, -ENOENT without such a word, -EINVAL if its value
 * is malformed (*ip_be then untouched).
 */
int kvm_announce__cmdline_ip(const char *cmdline, uint32_t *ip_be);

#endif
