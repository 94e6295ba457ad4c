// SPDX-License-Identifier: MIT
/*
 * The message transports' control data: a whole frame as rdma and ofi
 * receive it (kemari_wire__check_frame), the rdma transport's CM private
 * data and KEMARI_MSG_XPORT messages (transports/rdma/ctrl.c), the ofi
 * transport's connection data (FI_EP_MSG), its FI_EP_RDM hello and its
 * transport messages (transports/ofi/ctrl.c). Input: one byte choosing the decoder, then its
 * bytes; a frame whose header has flags 0 gets its checksum computed here.
 *
 * Beyond the sanitizers: what a decoder accepts is what its users rely
 * on (a frame's length is exact, the regions an rdma peer lists cover its
 * length, ofi credits and windows are in range, a hello's address fits
 * and its length is exact).
 */
#include <stdlib.h>
#include <string.h>

#include "../../../transports/ofi/ctrl.h"
#include "../../../transports/rdma/ctrl.h"
#include "harness.h"
#include "kemari/buf.h"
#include "kemari/kemari.h"
#include "kemari/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { T_FRAME, T_RDMA_HS, T_RDMA_XPORT, T_OFI_CM, T_OFI_XP, T_OFI_HELLO, T_N };

#define FUZZ_FRAME_MAX 4096 /* a receive slot's payload */

static void frame(const uint8_t *p, size_t len)
{
	struct kemari_wire_hdr h;
	uint8_t *buf = malloc(len ? len : 1);

	if (!buf)
		abort();
	memcpy(buf, p, len);
	if (len >= sizeof(h)) {
		memcpy(&h, buf, sizeof(h));
		if (h.flags == 0 && h.len == len - sizeof(h)) {
			kemari_wire__seal(&h, h.type, h.epoch, buf + sizeof(h),
					  h.len);
			memcpy(buf, &h, sizeof(h));
		}
	}
	if (!kemari_wire__check_frame(buf, len, FUZZ_FRAME_MAX, &h) &&
	    (h.len != len - sizeof(h) || h.len > FUZZ_FRAME_MAX))
		abort();
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rdma_ctrl_xport m;
	struct rdma_hs hs;
	struct ofi_cm cm;
	struct ofi_xp xp;
	struct ofi_hello hello;

	if (size < 1)
		return 0;
	switch (data[0] % T_N) {
	case T_FRAME:
		frame(data + 1, size - 1);
		break;
	case T_RDMA_HS:
		if (!rdma_ctrl__hs(data + 1, size - 1, &hs) &&
		    (!hs.slots || hs.max_msg < 4096))
			abort();
		break;
	case T_RDMA_XPORT:
		if (size - 1 > UINT32_MAX ||
		    rdma_ctrl__xport(data + 1, (uint32_t)(size - 1), &m))
			break;
		if (m.kind == RDMA_XPORT_DST) {
			/* The listed regions are all there and cover len. */
			struct rdma_remote last;

			memcpy(&last,
			       (const uint8_t *)m.mr +
				       (m.di.n - 1) * sizeof(last),
			       sizeof(last));
			if ((m.di.n - 1) * m.di.piece >= m.di.len ||
			    m.di.n * m.di.piece < m.di.len)
				abort();
		}
		break;
	case T_OFI_CM:
		if (!ofi_ctrl__cm(data + 1, size - 1, &cm) &&
		    (!cm.window || cm.window > OFI_WINDOW_MAX))
			abort();
		break;
	case T_OFI_XP:
		if (size - 1 <= UINT32_MAX &&
		    !ofi_ctrl__xp(data + 1, (uint32_t)(size - 1), &xp) &&
		    xp.op == OFI_XP_CREDIT && !xp.credits)
			abort();
		break;
	case T_OFI_HELLO:
		if (!ofi_ctrl__hello(data + 1, size - 1, &hello) &&
		    (hello.magic != OFI_HELLO_MAGIC || !hello.window ||
		     hello.window > OFI_WINDOW_MAX || !hello.addrlen ||
		     hello.addrlen > OFI_HELLO_ADDR_MAX ||
		     ofi_ctrl__hello_len(hello.addrlen) != size - 1 ||
		     !memchr(hello.prov, 0, sizeof(hello.prov)) ||
		     memcmp(hello.addr, data + 1 + OFI_HELLO_HDR,
			    hello.addrlen)))
			abort();
		break;
	}
	kemari_err_clear();
	return 0;
}

static void seed(const char *name, uint8_t target, const void *p, size_t len)
{
	struct kemari_buf b = { 0 };

	if (kemari_buf__append(&b, &target, 1) ||
	    kemari_buf__append(&b, p, len))
		abort();
	fuzz__seed(name, b.data, b.len);
	kemari_buf__fini(&b);
}

void fuzz_seeds(void)
{
	struct rdma_hs hs = { .magic = RDMA_HS_MAGIC,
			      .version = RDMA_HS_VERSION,
			      .slots = 64,
			      .max_msg = 65536,
			      .commit_size = 256 };
	struct rdma_rw_info rw = { .kind = RDMA_XPORT_RW,
				   .rkey = 7,
				   .addr = 0x10000 };
	struct {
		struct rdma_dst_info di;
		struct rdma_remote mr[3];
	} dst = { .di = { .kind = RDMA_XPORT_DST,
			  .n = 3,
			  .len = 10 << 12,
			  .piece = 4 << 12 } };
	struct ofi_cm cm = { .magic = OFI_CM_MAGIC, .window = 32 };
	struct ofi_xp credit = { .op = OFI_XP_CREDIT, .credits = 16 },
		      region = { .op = OFI_XP_REGION, .len = 1 << 20 },
		      link = { .op = OFI_XP_LINK };
	struct ofi_hello hello = { .magic = OFI_HELLO_MAGIC,
				   .version = OFI_HELLO_VERSION,
				   .addrlen = 16,
				   .window = 32,
				   .prov = "tcp;ofi_rxm",
				   .addr = { 2, 0, 0x9c, 0x40, 127, 0, 0, 1 } };
	struct {
		struct kemari_wire_hdr h;
		uint8_t payload[16];
	} f = { .h = { .magic = KEMARI_WIRE_MAGIC,
		       .type = KEMARI_MSG_HEARTBEAT,
		       .len = 16 } };

	seed("frame", T_FRAME, &f, sizeof(f));
	seed("rdma-hs", T_RDMA_HS, &hs, sizeof(hs));
	seed("rdma-rw", T_RDMA_XPORT, &rw, sizeof(rw));
	seed("rdma-dst", T_RDMA_XPORT, &dst, sizeof(dst));
	seed("ofi-cm", T_OFI_CM, &cm, sizeof(cm));
	seed("ofi-credit", T_OFI_XP, &credit, sizeof(credit));
	seed("ofi-region", T_OFI_XP, &region, sizeof(region));
	seed("ofi-link", T_OFI_XP, &link, sizeof(link));
	seed("ofi-hello", T_OFI_HELLO, &hello, ofi_ctrl__hello_len(16));
}
