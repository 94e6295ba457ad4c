// SPDX-License-Identifier: MIT
/*
 * The libfabric transport's control data (transports/ofi/ctrl.c), free of
 * libfabric: the FI_EP_RDM hello both sides exchange over the bootstrap
 * socket (a Kemari RDM peer's, whole, for one of the windows we accept)
 * and the transport messages it adds (OFI_XP_LINK).
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "../../transports/ofi/ctrl.h"

/* A hello as it travels: the fixed part, then alen address bytes. */
static size_t wire_hello(uint8_t *out, uint32_t magic, uint16_t version,
			 uint32_t window, const char *prov, uint16_t alen)
{
	struct ofi_hello h = { .magic = magic,
			       .version = version,
			       .addrlen = alen,
			       .window = window };

	snprintf(h.prov, sizeof(h.prov), "%s", prov);
	memcpy(out, &h, OFI_HELLO_HDR);
	for (uint16_t i = 0; i < alen; i++)
		out[OFI_HELLO_HDR + i] = (uint8_t)(i * 7 + 1);
	return OFI_HELLO_HDR + alen;
}

Test(ofi_hello, a_whole_hello_is_taken_with_its_address)
{
	uint8_t w[sizeof(struct ofi_hello)];
	size_t n = wire_hello(w, OFI_HELLO_MAGIC, OFI_HELLO_VERSION, 32,
			      "tcp;ofi_rxm", 16);
	struct ofi_hello h;

	cr_assert(eq(sz, n, ofi_ctrl__hello_len(16)));
	cr_assert(eq(int, ofi_ctrl__hello(w, n, &h), 0));
	cr_assert(eq(u32, h.window, 32));
	cr_assert(eq(u16, h.addrlen, 16));
	cr_assert(eq(str, h.prov, "tcp;ofi_rxm"));
	cr_assert(eq(int, memcmp(h.addr, w + OFI_HELLO_HDR, 16), 0));
	n = wire_hello(w, OFI_HELLO_MAGIC, OFI_HELLO_VERSION, OFI_WINDOW_MAX,
		       "shm", OFI_HELLO_ADDR_MAX);
	cr_assert(eq(int, ofi_ctrl__hello(w, n, &h), 0));
}

Test(ofi_hello, an_msg_peer_or_garbage_is_not_a_hello)
{
	struct ofi_cm cm = { .magic = OFI_CM_MAGIC, .window = 32 };
	uint8_t w[sizeof(struct ofi_hello)];
	struct ofi_hello h;
	size_t n;

	/* The FI_EP_MSG connection data: refused at its magic. */
	cr_assert(eq(int, ofi_ctrl__hello(&cm, sizeof(cm), &h), -EPROTO));
	n = wire_hello(w, OFI_CM_MAGIC, OFI_HELLO_VERSION, 32, "shm", 8);
	cr_assert(eq(int, ofi_ctrl__hello(w, n, &h), -EPROTO));
	memset(w, 0xa5, sizeof(w));
	cr_assert(eq(int, ofi_ctrl__hello(w, sizeof(w), &h), -EPROTO));
	cr_assert(eq(int, ofi_ctrl__hello(NULL, 0, &h), -EPROTO));
	cr_assert(eq(int, ofi_ctrl__hello(w, 3, &h), -EPROTO));
}

Test(ofi_hello, bad_fields_are_refused)
{
	uint8_t w[sizeof(struct ofi_hello) + 8];
	struct ofi_hello h;
	size_t n;

	n = wire_hello(w, OFI_HELLO_MAGIC, OFI_HELLO_VERSION + 1, 32, "shm", 8);
	cr_assert(eq(int, ofi_ctrl__hello(w, n, &h), -EPROTO), "version");
	n = wire_hello(w, OFI_HELLO_MAGIC, OFI_HELLO_VERSION, 0, "shm", 8);
	cr_assert(eq(int, ofi_ctrl__hello(w, n, &h), -EPROTO), "window 0");
	n = wire_hello(w, OFI_HELLO_MAGIC, OFI_HELLO_VERSION,
		       OFI_WINDOW_MAX + 1, "shm", 8);
	cr_assert(eq(int, ofi_ctrl__hello(w, n, &h), -EPROTO), "window");
	n = wire_hello(w, OFI_HELLO_MAGIC, OFI_HELLO_VERSION, 32, "shm", 0);
	cr_assert(eq(int, ofi_ctrl__hello(w, n, &h), -EPROTO), "no address");
	n = wire_hello(w, OFI_HELLO_MAGIC, OFI_HELLO_VERSION, 32, "", 8);
	cr_assert(eq(int, ofi_ctrl__hello(w, n, &h), -EPROTO), "no provider");
}

Test(ofi_hello, length_must_be_exact_and_names_terminated)
{
	uint8_t w[sizeof(struct ofi_hello) + 8];
	struct ofi_hello h;
	size_t n =
		wire_hello(w, OFI_HELLO_MAGIC, OFI_HELLO_VERSION, 32, "shm", 8);

	cr_assert(eq(int, ofi_ctrl__hello(w, n - 1, &h), -EPROTO), "short");
	cr_assert(eq(int, ofi_ctrl__hello(w, n + 1, &h), -EPROTO), "long");
	/* An address longer than any we carry, whatever the length says. */
	memcpy(&h, w, OFI_HELLO_HDR);
	h.addrlen = OFI_HELLO_ADDR_MAX + 1;
	memcpy(w, &h, OFI_HELLO_HDR);
	cr_assert(eq(int,
		     ofi_ctrl__hello(w, ofi_ctrl__hello_len(h.addrlen), &h),
		     -EPROTO));
	/* A provider name without its NUL. */
	n = wire_hello(w, OFI_HELLO_MAGIC, OFI_HELLO_VERSION, 32, "shm", 8);
	memset(w + offsetof(struct ofi_hello, prov), 'x', OFI_HELLO_PROV_MAX);
	cr_assert(eq(int, ofi_ctrl__hello(w, n, &h), -EPROTO));
}

Test(ofi_xp, the_link_message_is_known)
{
	struct ofi_xp xp = { .op = OFI_XP_LINK }, got;

	cr_assert(eq(int, ofi_ctrl__xp(&xp, sizeof(xp), &got), 0));
	cr_assert(eq(u32, got.op, OFI_XP_LINK));
	xp.op = OFI_XP_LINK + 1;
	cr_assert(eq(int, ofi_ctrl__xp(&xp, sizeof(xp), &got), -EBADMSG));
}
