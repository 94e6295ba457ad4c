// SPDX-License-Identifier: MIT
/*
 * The one-sided transports' shared machinery (transports/common/), without
 * a device or provider: receive credits in wrapping counters and their
 * batched return, the control queue with its held slot (copy or keep,
 * never more than it holds), sticky failure (the first reason wins, a
 * malformed frame reported before a death), the peer's advertised region,
 * and the test knobs' parsing.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <string.h>

#include "../../transports/common/credit.h"
#include "../../transports/common/ctrlq.h"
#include "../../transports/common/fail.h"
#include "../../transports/common/region.h"
#include "../../transports/rdma/ctrl.h"
#include "kemari/testcfg.h"

/* --- credits --------------------------------------------------------------- */

Test(xp_credit, counters_wrap)
{
	struct xp_credit c;

	xp_credit__init(&c, 5, 8);
	c.sent = 0xfffffffeU;
	cr_assert(eq(u32, xp_credit__avail(&c), 7));
	c.granted = c.sent = 16;
	cr_assert(eq(u32, xp_credit__avail(&c), 0));
	cr_assert(eq(u32, xp_credit__later(0xfffffff0U, 3), 3));
	cr_assert(eq(u32, xp_credit__later(3, 0xfffffff0U), 3));
	cr_assert(eq(u32, xp_credit__later(16, 0), 16));
	cr_assert(eq(u32, xp_credit__later(16, 20), 20));
}

Test(xp_credit, an_older_total_does_not_take_credits_back)
{
	struct xp_credit c;

	xp_credit__init(&c, 16, 8);
	xp_credit__granted(&c, 24);
	cr_assert(eq(u32, xp_credit__avail(&c), 24));
	xp_credit__granted(&c, 20); /* a stale immediate */
	cr_assert(eq(u32, xp_credit__avail(&c), 24));
	for (int i = 0; i < 24; i++)
		xp_credit__take(&c);
	cr_assert(eq(u32, xp_credit__avail(&c), 0));
}

Test(xp_credit, returns_in_batches_or_when_forced)
{
	struct xp_credit c;

	/* ofi: a window of 32 returns 16 at a time */
	xp_credit__init(&c, 32, 16);
	cr_assert(not(xp_credit__due(&c, false)));
	cr_assert(not(xp_credit__due(&c, true)), "nothing owed");
	for (int i = 0; i < 15; i++)
		xp_credit__lend(&c);
	cr_assert(not(xp_credit__due(&c, false)));
	cr_assert(xp_credit__due(&c, true));
	xp_credit__lend(&c);
	cr_assert(xp_credit__due(&c, false));
	cr_assert(eq(u32, xp_credit__owed(&c), 16));
	xp_credit__told(&c);
	cr_assert(eq(u32, xp_credit__owed(&c), 0));
	/* a window of 1 returns every credit at once */
	xp_credit__init(&c, 1, 0);
	xp_credit__lend(&c);
	cr_assert(xp_credit__due(&c, false));
}

Test(xp_credit, too_many_returned_is_malformed)
{
	struct xp_credit c;

	xp_credit__init(&c, 32, 16);
	cr_assert(eq(int, xp_credit__grant(&c, 4096 - 32, 4096), 0));
	cr_assert(eq(u32, xp_credit__avail(&c), 4096));
	cr_assert(eq(int, xp_credit__grant(&c, 1, 4096), -EBADMSG));
	cr_assert(eq(u32, xp_credit__avail(&c), 4096), "nothing taken");
	cr_assert(eq(int, xp_credit__grant(&c, UINT32_MAX, 4096), -EBADMSG));
}

/* --- the control queue ------------------------------------------------------ */

static struct kemari_wire_hdr hdr(uint16_t type, uint32_t len)
{
	struct kemari_wire_hdr h;

	memset(&h, 0, sizeof(h));
	h.type = type;
	h.epoch = 1000 + type;
	h.len = len;
	return h;
}

Test(xp_ctrlq, small_frames_are_copied_large_ones_keep_their_slot)
{
	static uint8_t slot[4][1024];
	struct xp_ctrlq q;
	struct kemari_wire_hdr h;
	struct kemari_msg m;

	cr_assert(eq(int, xp_ctrlq__init(&q, 4, 8, 512), 0));
	memset(slot[0], 'a', sizeof(slot[0]));
	memset(slot[1], 'b', sizeof(slot[1]));
	h = hdr(1, 512);
	cr_assert(xp_ctrlq__push(&q, &h, slot[0], 0), "copied");
	h = hdr(2, 513);
	cr_assert(not(xp_ctrlq__push(&q, &h, slot[1], 1)), "kept");
	memset(slot[0], 'x', sizeof(slot[0])); /* the slot went back */
	cr_assert(eq(u32, xp_ctrlq__len(&q), 2));
	cr_assert(eq(int, xp_ctrlq__release(&q), -1), "nothing held yet");

	cr_assert(xp_ctrlq__peek(&q, &m));
	cr_assert(eq(u16, m.type, 1));
	cr_assert(eq(u64, m.epoch, 1001));
	cr_assert(eq(u32, m.len, 512));
	cr_assert(eq(u8, ((const uint8_t *)m.payload)[511], 'a'));
	/* peeking again returns the same, still held */
	cr_assert(xp_ctrlq__peek(&q, &m));
	cr_assert(eq(u16, m.type, 1));
	cr_assert(eq(int, xp_ctrlq__release(&q), -1), "a copy keeps no slot");

	cr_assert(xp_ctrlq__peek(&q, &m));
	cr_assert(eq(u16, m.type, 2));
	cr_assert(eq(ptr, (void *)m.payload, (void *)slot[1]));
	cr_assert(eq(int, xp_ctrlq__release(&q), 1), "its slot goes back");
	cr_assert(not(xp_ctrlq__peek(&q, &m)));
	cr_assert(eq(u32, xp_ctrlq__len(&q), 0));
	xp_ctrlq__fini(&q);
}

Test(xp_ctrlq, copies_stop_where_only_the_slots_room_is_left)
{
	static uint8_t payload[16];
	struct xp_ctrlq q;
	struct kemari_wire_hdr h = hdr(7, 16);
	struct kemari_msg m;
	int copied = 0;

	/* 2 slots, 3 copies: the fourth small frame keeps its slot */
	cr_assert(eq(int, xp_ctrlq__init(&q, 2, 3, 512), 0));
	for (uint32_t i = 0; i < 5; i++)
		copied += xp_ctrlq__push(&q, &h, payload, i % 2);
	cr_assert(eq(int, copied, 3));
	cr_assert(eq(u32, xp_ctrlq__len(&q), 5), "never more than it holds");
	for (uint32_t i = 0; i < 5; i++) {
		cr_assert(xp_ctrlq__peek(&q, &m));
		cr_assert(eq(int, xp_ctrlq__release(&q) >= 0, i >= 3));
	}
	xp_ctrlq__fini(&q);
}

Test(xp_ctrlq, without_copies_every_frame_keeps_its_slot_in_order)
{
	static uint8_t buf[3][64];
	struct xp_ctrlq q;
	struct kemari_msg m;

	cr_assert(eq(int, xp_ctrlq__init(&q, 3, 0, 0), 0));
	for (uint32_t round = 0; round < 10; round++) {
		for (uint32_t i = 0; i < 3; i++) {
			struct kemari_wire_hdr h = hdr((uint16_t)i, 0);

			cr_assert(not(xp_ctrlq__push(&q, &h, buf[i], 2 - i)));
		}
		for (uint32_t i = 0; i < 3; i++) {
			cr_assert(xp_ctrlq__peek(&q, &m));
			cr_assert(eq(u16, m.type, (uint16_t)i));
			cr_assert(eq(int, xp_ctrlq__release(&q), (int)(2 - i)));
		}
	}
	xp_ctrlq__fini(&q);
}

/* --- sticky failure ------------------------------------------------------------ */

Test(xp_fail, the_first_death_wins_and_repeats)
{
	struct xp_fail f;

	memset(&f, 0, sizeof(f));
	cr_assert(eq(int, xp_fail__dead(&f), 0));
	cr_assert(not(xp_fail__failed(&f)));
	xp_fail__lost(&f, "10.0.0.2:7400", "the peer disconnected");
	xp_fail__die(&f, -EIO, "later");
	for (int i = 0; i < 2; i++) {
		kemari_err_clear();
		cr_assert(eq(int, xp_fail__dead(&f), -ECONNRESET));
		cr_assert(eq(str, (char *)kemari_last_error(-ECONNRESET),
			     "connection to 10.0.0.2:7400 lost: the peer "
			     "disconnected"));
	}
}

Test(xp_fail, a_malformed_frame_is_reported_before_the_death)
{
	struct xp_fail f;

	memset(&f, 0, sizeof(f));
	kemari_err_clear();
	xp_fail__malformed(&f, kemari_err(-EBADMSG, "replication stream: bad"));
	xp_fail__malformed(&f, kemari_err(-EBADMSG, "another"));
	xp_fail__lost(&f, "peer", "gone");
	cr_assert(xp_fail__failed(&f));
	kemari_err_clear();
	cr_assert(eq(int, xp_fail__report(&f), -EBADMSG));
	cr_assert(eq(str, (char *)kemari_last_error(-EBADMSG),
		     "replication stream: bad"));
	kemari_err_clear();
	cr_assert(eq(int, xp_fail__dead(&f), -ECONNRESET));
}

/* --- the peer's region --------------------------------------------------------- */

Test(xp_region, offsets_map_into_their_remote_piece)
{
	struct xp_remote r[3] = { { 0x10000, 11 },
				  { 0x90000, 12 },
				  { 0x50000, 13 } };
	struct xp_region g;

	memset(&g, 0, sizeof(g));
	cr_assert(eq(int, xp_region__set(&g, 9 * 4096, 4 * 4096, 3, r), 0));
	r[0].addr = 0; /* copied */
	cr_assert(g.known);
	cr_assert(eq(u64, xp_region__addr(&g, 0, 4096), 0x10000 + 4096));
	cr_assert(eq(u64, xp_region__addr(&g, 1, 5 * 4096), 0x90000 + 4096));
	cr_assert(eq(u64, xp_region__addr(&g, 2, 8 * 4096), 0x50000));
	cr_assert(eq(u64, xp_region__key(&g, 1), 12));
	/* one region (ofi): offsets from its base */
	cr_assert(eq(int,
		     xp_region__set(&g, 1 << 20, 0, 1,
				    &(struct xp_remote){ 0x7000, 99 }),
		     0));
	cr_assert(eq(u64, xp_region__addr(&g, 0, 12345), 0x7000 + 12345));
	cr_assert(eq(u64, g.len, 1 << 20));
	xp_region__fini(&g);
	cr_assert(not(g.known));
}

/* --- test knobs ------------------------------------------------------------------ */

/* The environment the parser sees: NAME=VALUE pairs, NULL-terminated. */
static const char *const *knob_env;

static const char *knob(const char *name)
{
	size_t n = strlen(name);

	for (unsigned int i = 0; knob_env && knob_env[i]; i++)
		if (!strncmp(knob_env[i], name, n) && knob_env[i][n] == '=')
			return knob_env[i] + n + 1;
	return NULL;
}

static void parse(struct kemari_testcfg *c, const char *const *envp)
{
	knob_env = envp;
	kemari_testcfg__parse(c, knob);
}

Test(testcfg, knobs_parse_as_the_engine_vmm_and_transports_read_them)
{
	static const char *const none[] = { NULL };
	static const char *const a[] = { "KEMARI_RDMA_MR_MAX=1M,3M",
					 "KEMARI_RDMA_COMMIT=send",
					 "KEMARI_OFI_NO_SAW=",
					 "KEMARI_TEST_PROTO_VERSION=5",
					 "KEMARI_TEST_TSC_KHZ=2400000",
					 "KEMARI_KVM_DEV=/dev/null",
					 "KEMARI_KVM_LA57=1",
					 NULL };
	static const char *const b[] = { "KEMARI_RDMA_MR_MAX=2M",
					 "KEMARI_RDMA_COMMIT=imm",
					 "KEMARI_KVM_DEV=", NULL };
	static const char *const c3[] = { "KEMARI_RDMA_MR_MAX=junk,4M", NULL };
	struct kemari_testcfg c;

	parse(&c, none);
	cr_assert(eq(u64, c.rdma_mr_max_src, 0));
	cr_assert(eq(u64, c.rdma_mr_max_dst, 0));
	cr_assert(not(c.rdma_commit_send));
	cr_assert(not(c.ofi_no_saw));
	cr_assert(eq(u32, c.proto_version, 0));
	cr_assert(eq(u32, c.tsc_khz, 0));
	cr_assert(eq(ptr, (void *)c.kvm_dev, NULL));
	cr_assert(not(c.kvm_la57), "LA57 hidden unless asked");
	parse(&c, a);
	cr_assert(eq(u64, c.rdma_mr_max_src, 1 << 20));
	cr_assert(eq(u64, c.rdma_mr_max_dst, 3 << 20));
	cr_assert(c.rdma_commit_send);
	cr_assert(c.ofi_no_saw, "set, even empty");
	cr_assert(eq(u32, c.proto_version, 5));
	cr_assert(eq(u32, c.tsc_khz, 2400000));
	cr_assert(eq(str, (char *)c.kvm_dev, "/dev/null"));
	cr_assert(c.kvm_la57);
	parse(&c, b);
	cr_assert(eq(u64, c.rdma_mr_max_src, 2 << 20));
	cr_assert(eq(u64, c.rdma_mr_max_dst, 2 << 20), "one size: both");
	cr_assert(not(c.rdma_commit_send));
	cr_assert(eq(ptr, (void *)c.kvm_dev, NULL), "empty: /dev/kvm");
	parse(&c, c3);
	cr_assert(eq(u64, c.rdma_mr_max_src, 0));
	cr_assert(eq(u64, c.rdma_mr_max_dst, 4 << 20));
}

/* --- rdma's receive-buffer advert --------------------------------------- */

/* Found by fuzz_xport_ctrl: a DST advert of ~1.8e19 bytes in 3 regions of
 * ~8.8e18 passed the region count check while n * piece overflowed. */
Test(rdma_ctrl, an_advert_beyond_256_tib_is_refused)
{
	struct {
		struct rdma_dst_info di;
		struct rdma_remote r[3];
	} msg = { .di = { .kind = RDMA_XPORT_DST,
			  .n = 3,
			  .len = 0xff3f00000000a000ULL,
			  .piece = 0x79d9a7e067000000ULL } };
	struct rdma_ctrl_xport m;

	cr_assert(eq(int, rdma_ctrl__xport(&msg, sizeof(msg), &m), -EBADMSG));
	/* The largest allowed still decodes. */
	msg.di.len = RDMA_DST_LEN_MAX;
	msg.di.piece = RDMA_DST_LEN_MAX / 2;
	msg.di.n = 2;
	cr_assert(eq(int,
		     rdma_ctrl__xport(&msg,
				      sizeof(msg.di) + 2 * sizeof(msg.r[0]), &m),
		     0));
	cr_assert(eq(u64, m.di.len, RDMA_DST_LEN_MAX));
}
