// SPDX-License-Identifier: MIT
/* Core building blocks: dirty sets and runs, wire frames, TLV, parsing. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kemari/buf.h"
#include "kemari/dirty.h"
#include "kemari/engine.h"
#include "kemari/hv.h"
#include "kemari/kemari.h"
#include "kemari/wire.h"
#include "kemari/xport.h"

extern const struct kemari_hv_ops kemari_hv_synth;

Test(dirty, marks_dedupe_and_coalesce_into_sorted_runs)
{
	struct kemari_dirty d;
	struct kemari_run *runs = NULL;
	size_t cap = 0;
	uint64_t order[] = { 9, 3, 4, 5, 100, 3, 8, 10, 200, 199 };
	long n;

	cr_assert(eq(int, kemari_dirty__init(&d, 256), 0));
	for (unsigned int i = 0; i < sizeof(order) / sizeof(order[0]); i++)
		cr_assert(eq(int, kemari_dirty__mark(&d, order[i]), 0));
	cr_assert(eq(int, kemari_dirty__mark(&d, 256), -ERANGE));
	cr_assert(eq(u64, d.count, 9));
	n = kemari_dirty__runs(&d, &runs, &cap, 0);
	cr_assert(eq(long, n, 4));
	cr_assert(eq(u64, runs[0].pfn, 3));
	cr_assert(eq(u32, runs[0].npages, 3));
	cr_assert(eq(u64, runs[1].pfn, 8));
	cr_assert(eq(u32, runs[1].npages, 3));
	cr_assert(eq(u64, runs[2].pfn, 100));
	cr_assert(eq(u32, runs[2].npages, 1));
	cr_assert(eq(u64, runs[3].pfn, 199));
	cr_assert(eq(u32, runs[3].npages, 2));
	/* A cap on run length splits long runs. */
	n = kemari_dirty__runs(&d, &runs, &cap, 2);
	cr_assert(eq(long, n, 6));
	kemari_dirty__clear(&d);
	cr_assert(eq(u64, d.count, 0));
	cr_assert(not(kemari_dirty__test(&d, 3)));
	free(runs);
	kemari_dirty__fini(&d);
}

Test(dirty, bitmap_merge_and_mark_all)
{
	struct kemari_dirty d;
	uint64_t bm[2] = { 0x8000000000000001ULL, 0x2 };
	struct kemari_run *runs = NULL;
	size_t cap = 0;

	cr_assert(eq(int, kemari_dirty__init(&d, 128), 0));
	kemari_dirty__mark_bitmap(&d, bm, 0, 128);
	cr_assert(eq(u64, d.count, 3));
	cr_assert(kemari_dirty__test(&d, 0));
	cr_assert(kemari_dirty__test(&d, 63));
	cr_assert(kemari_dirty__test(&d, 65));
	kemari_dirty__mark_all(&d);
	cr_assert(eq(u64, d.count, 128));
	cr_assert(eq(long, kemari_dirty__runs(&d, &runs, &cap, 0), 1));
	cr_assert(eq(u32, runs[0].npages, 128));
	free(runs);
	kemari_dirty__fini(&d);
}

Test(wire, seal_and_check)
{
	struct kemari_wire_hdr h;
	char p[] = "payload";

	kemari_wire__seal(&h, KEMARI_MSG_RUNS, 42, p, sizeof(p));
	cr_assert(eq(int, kemari_wire__check_hdr(&h, KEMARI_MSG_MAX), 0));
	cr_assert(eq(int, kemari_wire__check_crc(&h, p), 0));
	p[0] ^= 1;
	kemari_err_clear();
	cr_assert(eq(int, kemari_wire__check_crc(&h, p), -EBADMSG));
	cr_assert(eq(
		str, (char *)kemari_last_error(-EBADMSG),
		"replication stream: checksum mismatch in a RUNS frame of epoch 42 (corrupt stream)"));
	h.len = KEMARI_MSG_MAX + 1;
	cr_assert(
		eq(int, kemari_wire__check_hdr(&h, KEMARI_MSG_MAX), -EBADMSG));
	h.magic = 0x20544547;
	kemari_err_clear();
	cr_assert(
		eq(int, kemari_wire__check_hdr(&h, KEMARI_MSG_MAX), -EBADMSG));
	cr_assert(eq(
		str, (char *)kemari_last_error(-EBADMSG),
		"replication stream: bad frame magic 0x20544547 (not a Kemari peer, or the stream is corrupt)"));
}

Test(wire, crc32c_known_vector)
{
	/* The standard CRC32C check value of "123456789". */
	cr_assert(eq(u32, kemari_crc32c(0, "123456789", 9), 0xe3069283));
	/* Chaining equals one pass. */
	cr_assert(eq(u32,
		     kemari_crc32c(kemari_crc32c(0, "1234", 4), "56789", 5),
		     0xe3069283));
}

Test(tlv, round_trip_and_malformed)
{
	struct kemari_buf b = { 0 };
	struct kemari_tlv_iter it;
	const void *v;
	uint32_t tag, len;

	cr_assert(eq(int, kemari_tlv__put(&b, 7, "abc", 3), 0));
	cr_assert(eq(int, kemari_tlv__put(&b, 9, "0123456789", 10), 0));
	cr_assert(eq(sz, b.len, 8 + 8 + 8 + 16));
	it = (struct kemari_tlv_iter){ b.data, b.len };
	cr_assert(eq(int, kemari_tlv__next(&it, &tag, &v, &len), 1));
	cr_assert(eq(u32, tag, 7));
	cr_assert(eq(u32, len, 3));
	cr_assert(eq(int, memcmp(v, "abc", 3), 0));
	cr_assert(eq(int, kemari_tlv__next(&it, &tag, &v, &len), 1));
	cr_assert(eq(u32, tag, 9));
	cr_assert(eq(int, kemari_tlv__next(&it, &tag, &v, &len), 0));
	/* A length running past the end is refused, not read. */
	it = (struct kemari_tlv_iter){ b.data, b.len - 1 };
	cr_assert(eq(int, kemari_tlv__next(&it, &tag, &v, &len), 1));
	cr_assert(eq(int, kemari_tlv__next(&it, &tag, &v, &len), -EBADMSG));
	kemari_buf__fini(&b);
}

Test(parse, sizes)
{
	uint64_t v;

	cr_assert(eq(int, kemari_parse_size("64M", &v), 0));
	cr_assert(eq(u64, v, 64ULL << 20));
	cr_assert(eq(int, kemari_parse_size("4G", &v), 0));
	cr_assert(eq(u64, v, 4ULL << 30));
	cr_assert(eq(int, kemari_parse_size("512k", &v), 0));
	cr_assert(eq(u64, v, 512ULL << 10));
	cr_assert(eq(int, kemari_parse_size("1GiB", &v), 0));
	cr_assert(eq(u64, v, 1ULL << 30));
	cr_assert(eq(int, kemari_parse_size("4096", &v), 0));
	cr_assert(eq(u64, v, 4096));
	cr_assert(eq(int, kemari_parse_size("12X", &v), -EINVAL));
	cr_assert(eq(int, kemari_parse_size("", &v), -EINVAL));
	cr_assert(eq(int, kemari_parse_size("-1M", &v), -EINVAL));
	cr_assert(eq(int, kemari_parse_size("99999999999999G", &v), -ERANGE));
}

Test(parse, hostport)
{
	uint32_t ip;
	uint16_t port;

	cr_assert(eq(int, kemari_parse_hostport("127.0.0.1:7500", &ip, &port),
		     0));
	cr_assert(eq(u32, ip, 0x7f000001));
	cr_assert(eq(u16, port, 7500));
	cr_assert(eq(int, kemari_parse_hostport("localhost:1", &ip, &port), 0));
	cr_assert(eq(u32, ip, 0x7f000001));
	cr_assert(
		eq(int, kemari_parse_hostport("1.2.3.4", &ip, &port), -EINVAL));
	cr_assert(eq(int, kemari_parse_hostport("1.2.3.4:70000", &ip, &port),
		     -EINVAL));
	cr_assert(
		eq(int, kemari_parse_hostport("host:80", &ip, &port), -EINVAL));
}

Test(parse, faults)
{
	enum kemari_fault f;
	uint64_t e;

	cr_assert(eq(int, kemari_fault__parse("mid-push:17", &f, &e), 0));
	cr_assert(eq(int, f, KEMARI_FAULT_MID_PUSH));
	cr_assert(eq(u64, e, 17));
	cr_assert(eq(int, kemari_fault__parse("sync", &f, &e), 0));
	cr_assert(eq(int, f, KEMARI_FAULT_SYNC));
	cr_assert(eq(int, kemari_fault__parse("after-ack:x", &f, &e), -EINVAL));
	cr_assert(eq(int, kemari_fault__parse("later", &f, &e), -EINVAL));
	/* Armed by a signal: the first epoch begun after SIGUSR2. */
	cr_assert(eq(int, kemari_fault__parse("after-commit:SIGUSR2", &f, &e),
		     0));
	cr_assert(eq(int, f, KEMARI_FAULT_AFTER_COMMIT));
	cr_assert(eq(u64, e, KEMARI_FAULT_ON_SIGNAL));
	cr_assert(eq(int, kemari_fault__parse("after-ack:SIGUSR1", &f, &e),
		     -EINVAL));
}

/* hv.h: every op of every registered hypervisor backend is present (a stub
 * where the backend lacks it), so core calls them without asking. */
Test(hv_ops, every_backend_fills_every_op)
{
	unsigned int n = 0;

	for (unsigned int i = 0; kemari_hv_backends[i]; i++, n++) {
		const struct kemari_hv_ops *o = kemari_hv_backends[i];
		const void *ops[] = {
			o->create,	  o->destroy,	    o->load_guest,
			o->map_ram,	  o->run,	    o->stop,
			o->pause,	  o->resume,	    o->dirty_start,
			o->collect_dirty, o->save_cpu,	    o->load_cpu,
			o->save_dev,	  o->load_dev,	    o->reattach,
			o->open_disk,	  o->detach,	    o->flush,
			o->guest_stat,	  o->crash,	    o->tsc_khz,
		};

		cr_assert(eq(sz, sizeof(ops) / sizeof(ops[0]),
			     (sizeof(*o) - sizeof(o->name)) / sizeof(void *)),
			  "hv.h gained an op this test does not list");
		for (unsigned int j = 0; j < sizeof(ops) / sizeof(ops[0]); j++)
			cr_expect(ops[j] != NULL, "%s: op %u is NULL", o->name,
				  j);
	}
	cr_assert(eq(uint, n, 2)); /* kvm, synth */
}

Test(hv_ops, stubs_say_what_is_missing)
{
	struct kemari_hv hv = { .ops = &kemari_hv_synth };
	uint32_t khz = 7;
	bool scale = true;
	uint64_t v = 9;

	cr_assert(eq(int, kemari_hv__no_open_disk(&hv), 0));
	cr_assert(eq(int, kemari_hv__no_tsc_khz(&hv, &khz, &scale), 0));
	cr_assert(eq(u32, khz, 0));
	cr_assert(not(scale));
	cr_assert(eq(int, kemari_hv__no_guest_stat(&hv, 3, &v), -ENOENT));
	cr_assert(eq(u64, v, 0));
	cr_assert(eq(int, kemari_hv__no_detach(&hv), -ENOTSUP));
	cr_assert(eq(str, (char *)kemari_last_error(-ENOTSUP),
		     "the synth hypervisor cannot let go of its guest's service addresses: no planned switchover with it"));
	kemari_err_clear();
}

/* xport.h: every op of every registered transport is present (a typed stub
 * where the transport lacks it), so core calls them without asking. */
Test(xport_ops, every_backend_fills_every_op)
{
	unsigned int n = 0;

	for (unsigned int i = 0; kemari_xport_backends[i]; i++, n++) {
		const struct kemari_xport_ops *o = kemari_xport_backends[i];
		const void *ops[] = {
			o->listen, o->accept, o->connect, o->reg_src,
			o->reg_dst, o->push,   o->flush,   o->send,
			o->recv,   o->max_msg, o->close,
		};

		for (unsigned int j = 0; j < sizeof(ops) / sizeof(ops[0]); j++)
			cr_expect(ops[j] != NULL, "%s: op %u is NULL", o->name,
				  j);
	}
	cr_assert(ge(uint, n, 1)); /* tcp at least */
	cr_assert(eq(ptr, (void *)kemari_xport_find("tcp"),
		     (void *)kemari_xport_backends[0]));
}
