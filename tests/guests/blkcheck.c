// SPDX-License-Identifier: MIT
/*
 * Test guest: a block round trip. Writes a pattern to sectors 8..15 from one
 * buffer, flushes, reads them back into another buffer it never writes
 * itself (so only the VMM's dirty bitmap can report that page), compares,
 * and exits 0 on a match. stats[1] = guest-physical address of that buffer.
 * Boot arg seed=N varies the pattern.
 */
#include "rt/rt.h"

#define NSECT 8

static uint8_t wbuf[NSECT * KEMARI_SECTOR_SIZE] __attribute__((aligned(4096)));
static uint8_t rbuf[NSECT * KEMARI_SECTOR_SIZE] __attribute__((aligned(4096)));

static int io(struct rt_queue *q, uint32_t op, void *buf, uint32_t n,
	      uint64_t sector)
{
	struct kemari_req req = { .id = op,
				  .gpa = (uint64_t)(uintptr_t)buf,
				  .len = n,
				  .op = op,
				  .arg = sector };
	struct kemari_rsp rsp;

	if (rt__queue_post(q, &req))
		return -1;
	rt__queue_kick(q);
	rt__queue_wait(q, &rsp);
	return rsp.status;
}

int guest_main(struct kemari_bootinfo *bi)
{
	const struct kemari_bootinfo_dev *dev =
		rt__find_dev(bi, KEMARI_DEV_BLOCK);
	const char *s = rt__arg(bi, "seed");
	uint64_t seed = 1;
	struct rt_queue q;

	if (!dev || rt__queue_init(&q, dev, 0))
		guest_panic("blkcheck: no block device");
	if (s)
		rt__parse_u64(s, strlen(s), &seed);
	for (uint32_t i = 0; i < sizeof(wbuf); i++)
		wbuf[i] = (uint8_t)(seed * 131 + i * 7);
	bi->stats[1] = (uint64_t)(uintptr_t)rbuf;
	if (io(&q, KEMARI_BLK_WRITE, wbuf, NSECT, 8))
		guest_panic("blkcheck: write failed");
	if (io(&q, KEMARI_BLK_FLUSH, NULL, 0, 0))
		guest_panic("blkcheck: flush failed");
	if (io(&q, KEMARI_BLK_READ, rbuf, NSECT, 8))
		guest_panic("blkcheck: read failed");
	if (memcmp(wbuf, rbuf, sizeof(wbuf))) {
		rt__printf("blkcheck: data mismatch\n");
		return 2;
	}
	rt__printf("blkcheck: ok\n");
	return 0;
}
