// SPDX-License-Identifier: MIT
/*
 * Takeover announcement frames (hv/kvm/hw/announce.c): the RARP and
 * gratuitous ARP bytes as they go on the wire, the schedule, and the
 * guest's address from the kernel command line.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <string.h>

#include "../../hv/kvm/hw/announce.h"

static const uint8_t mac[6] = { 0x52, 0x54, 0x00, 0x4b, 0x4d, 0x01 };

static void expect_bytes(const uint8_t *got, const uint8_t *want, size_t len)
{
	for (size_t i = 0; i < len; i++)
		cr_assert(eq(u8, got[i], want[i]), "byte %zu", i);
}

Test(announce, rarp_frame_is_qemus_request_reverse)
{
	static const uint8_t want[KVM_ANNOUNCE_FRAME_LEN] = {
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, /* to: broadcast */
		0x52, 0x54, 0x00, 0x4b, 0x4d, 0x01, /* from: the guest */
		0x80, 0x35,			    /* RARP */
		/* Ethernet/IPv4, hlen 6, plen 4, op 3 (request reverse) */
		0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x03,
		/* sender: the guest's MAC, IP 0 */
		0x52, 0x54, 0x00, 0x4b, 0x4d, 0x01, 0, 0, 0, 0,
		/* target: the same */
		0x52, 0x54, 0x00, 0x4b, 0x4d, 0x01, 0, 0, 0, 0,
		/* padding to 60 bytes: zeros */
	};
	uint8_t buf[128];

	memset(buf, 0xaa, sizeof(buf));
	cr_assert(eq(sz, kvm_announce__rarp(buf, sizeof(buf), mac), 60));
	expect_bytes(buf, want, sizeof(want));
	cr_assert(eq(u8, buf[60], 0xaa), "wrote past the frame");
}

Test(announce, garp_frame_names_the_guest_address_twice)
{
	static const uint8_t want[KVM_ANNOUNCE_FRAME_LEN] = {
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, /* to: broadcast */
		0x52, 0x54, 0x00, 0x4b, 0x4d, 0x01, /* from: the guest */
		0x08, 0x06,			    /* ARP */
		/* Ethernet/IPv4, hlen 6, plen 4, op 1 (request) */
		0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01,
		/* sender: the guest's MAC and 169.254.10.2 */
		0x52, 0x54, 0x00, 0x4b, 0x4d, 0x01, 169, 254, 10, 2,
		/* target: no MAC, the same IP */
		0, 0, 0, 0, 0, 0, 169, 254, 10, 2,
		/* padding to 60 bytes: zeros */
	};
	uint8_t buf[KVM_ANNOUNCE_FRAME_LEN];

	memset(buf, 0xaa, sizeof(buf));
	cr_assert(
		eq(sz,
		   kvm_announce__garp(buf, sizeof(buf), mac, htonl(0xa9fe0a02)),
		   60));
	expect_bytes(buf, want, sizeof(want));
}

Test(announce, short_buffer_gets_nothing)
{
	uint8_t buf[KVM_ANNOUNCE_FRAME_LEN];

	memset(buf, 0xaa, sizeof(buf));
	cr_assert(eq(sz, kvm_announce__rarp(buf, 59, mac), 0));
	cr_assert(eq(sz, kvm_announce__garp(buf, 14, mac, 0), 0));
	cr_assert(eq(u8, buf[0], 0xaa));
}

Test(announce, rounds_at_0_50_150_300_500_ms)
{
	static const unsigned int want[KVM_ANNOUNCE_ROUNDS] = { 0, 50, 150, 300,
								500 };

	for (unsigned int i = 0; i < KVM_ANNOUNCE_ROUNDS; i++)
		cr_assert(eq(uint, kvm_announce__delay_ms(i), want[i]),
			  "round %u", i);
}

static void expect_ip(const char *cmdline, uint32_t host_order)
{
	uint32_t ip = 0;

	cr_assert(eq(int, kvm_announce__cmdline_ip(cmdline, &ip), 0), "%s",
		  cmdline);
	cr_assert(eq(u32, ip, htonl(host_order)), "%s", cmdline);
}

static void expect_err(const char *cmdline, int err)
{
	uint32_t ip = 0x12345678;

	cr_assert(eq(int, kvm_announce__cmdline_ip(cmdline, &ip), err), "%s",
		  cmdline ? cmdline : "(null)");
	cr_assert(eq(u32, ip, 0x12345678), "changed by %s",
		  cmdline ? cmdline : "(null)");
}

Test(announce, cmdline_ip_with_and_without_prefix)
{
	expect_ip("console=ttyS0 acpi=off kemari.ip=169.254.10.2/24",
		  0xa9fe0a02);
	expect_ip("kemari.ip=10.0.2.15 quiet", 0x0a00020f);
	expect_ip("kemari.ip=10.0.2.15/32", 0x0a00020f);
	expect_ip("kemari.ip=0.0.0.0/0", 0);
	expect_ip("\tkemari.ip=255.255.255.255\n", 0xffffffff);
	/* The last word wins, as in the guest's init. */
	expect_ip("kemari.ip=1.2.3.4/8 kemari.ip=5.6.7.8/16", 0x05060708);
}

Test(announce, cmdline_without_the_word)
{
	expect_err(NULL, -ENOENT);
	expect_err("", -ENOENT);
	expect_err("console=ttyS0 acpi=off quiet", -ENOENT);
	/* Only a whole word names it. */
	expect_err("xkemari.ip=10.0.0.1/24", -ENOENT);
	expect_err("kemari.ipx=10.0.0.1 kemari.ip", -ENOENT);
	expect_err("foo.kemari.ip=10.0.0.1", -ENOENT);
	expect_err("KEMARI.IP=10.0.0.1", -ENOENT);
}

Test(announce, cmdline_malformed)
{
	static const char *const bad[] = {
		"kemari.ip=",
		"kemari.ip=300.1.1.1",
		"kemari.ip=1.2.3",
		"kemari.ip=1.2.3.4.5",
		"kemari.ip=1.2.3.4/",
		"kemari.ip=1.2.3.4/33",
		"kemari.ip=1.2.3.4/24x",
		"kemari.ip=1..3.4",
		"kemari.ip=01.2.3.4",
		"kemari.ip=1.2.3.4x",
		"kemari.ip=-1.2.3.4",
		"kemari.ip=1.2.3.1000",
		"kemari.ip=host.example",
		"kemari.ip=1.2.3.4/24 kemari.ip=bad",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		expect_err(bad[i], -EINVAL);
}
