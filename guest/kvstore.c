// SPDX-License-Identifier: MIT
/*
 * kvstore guest: the key-value service of kv/ on the net device, with its
 * write-ahead log on the block device. This file is only the device glue;
 * the protocol, state and log live in kv/ and are unit-tested on the host.
 *
 * Per burst of datagrams: execute all, write all their log records with one
 * WRITE + one FLUSH behind one kick, then send all replies behind one kick.
 */
#include "kv/wal.h"
#include "rt/rt.h"

#define KVSTORE_RX_BUFS 32 /* receive buffers kept posted */
/*
 * Log I/O unit: 256 KiB. Every block kick is an output event, which Kemari
 * answers with a checkpoint, so a compaction of a full table (16384 records)
 * should take tens of kicks, not hundreds.
 */
#define KVSTORE_IO_SECTORS 512

_Static_assert(KVSTORE_RX_BUFS <= KV_BATCH_MAX, "a burst must fit a batch");
_Static_assert(KVSTORE_RX_BUFS <= KEMARI_RING_SLOTS, "rx ring too small");

struct kvstore {
	struct kemari_bootinfo *bi;
	struct rt_queue blk;
	struct rt_queue tx; /* net queue 0 */
	struct rt_queue rx; /* net queue 1 */
};

/* Big, so static: the stack is 64 KiB. The VMM hands out zeroed memory. */
static struct kv_state kvstore__state;
static struct wal kvstore__wal;
static uint8_t kvstore__io[KVSTORE_IO_SECTORS * WAL_SECTOR]
	__attribute__((aligned(4096)));
static char kvstore__rxbuf[KVSTORE_RX_BUFS][KEMARI_NET_MTU]
	__attribute__((aligned(4096)));
static struct kv_req kvstore__in[KVSTORE_RX_BUFS];
static struct kv_result kvstore__out[KVSTORE_RX_BUFS];
static uint64_t kvstore__src[KVSTORE_RX_BUFS];
static uint32_t kvstore__rxid[KVSTORE_RX_BUFS];

/*
 * Queue n block requests, kick once and collect their n responses. The
 * queue is idle between calls, so the requests always fit. Returns the first
 * error status, or 0.
 */
static int kvstore__blk_submit(struct rt_queue *q, struct kemari_req *req,
			       uint32_t n)
{
	struct kemari_rsp rsp;
	uint32_t i;
	int ret = 0;

	for (i = 0; i < n; i++) {
		req[i].id = i;
		if (rt__queue_post(q, &req[i]))
			guest_panic("kvstore: block queue full");
	}
	rt__queue_kick(q);
	for (i = 0; i < n; i++) {
		rt__queue_wait(q, &rsp);
		if (rsp.status && !ret)
			ret = rsp.status < 0 ? rsp.status : -EIO;
	}
	return ret;
}

static int kvstore__blk_read(void *ctx, uint64_t sector, uint32_t nsect,
			     void *buf)
{
	struct kvstore *k = ctx;
	struct kemari_req req = {
		.gpa = (uintptr_t)buf,
		.len = nsect,
		.op = KEMARI_BLK_READ,
		.arg = sector,
	};

	return kvstore__blk_submit(&k->blk, &req, 1);
}

static int kvstore__blk_write(void *ctx, uint64_t sector, uint32_t nsect,
			      const void *buf, bool flush)
{
	struct kvstore *k = ctx;
	struct kemari_req req[2] = { { 0 } };
	uint32_t n = 0;

	if (nsect) {
		req[n].gpa = (uintptr_t)buf;
		req[n].len = nsect;
		req[n].op = KEMARI_BLK_WRITE;
		req[n].arg = sector;
		n++;
	}
	if (flush)
		req[n++].op = KEMARI_BLK_FLUSH;
	/* WRITE and FLUSH go out together: the backend completes them in
	 * order, so the flush covers the write. */
	return n ? kvstore__blk_submit(&k->blk, req, n) : 0;
}

static const struct wal_dev_ops kvstore__blk_ops = {
	.read = kvstore__blk_read,
	.write = kvstore__blk_write,
};

static void kvstore__post_rx(struct kvstore *k, uint32_t idx)
{
	struct kemari_req req = {
		.id = idx,
		.gpa = (uintptr_t)kvstore__rxbuf[idx],
		.len = KEMARI_NET_MTU,
	};

	/* The receive queue needs no kick: the backend fills posted buffers
	 * whenever a datagram arrives. */
	if (rt__queue_post(&k->rx, &req))
		guest_panic("kvstore: rx queue full");
}

/* Take every datagram that has arrived, up to one per posted buffer. */
static uint32_t kvstore__collect(struct kvstore *k)
{
	struct kemari_rsp rsp;
	uint32_t n = 0;

	while (n < KVSTORE_RX_BUFS && rt__queue_poll(&k->rx, &rsp)) {
		uint32_t idx = (uint32_t)rsp.id;

		if (idx >= KVSTORE_RX_BUFS)
			guest_panic("kvstore: rx response for unknown buffer");
		if (rsp.status || rsp.len > KEMARI_NET_MTU) {
			kvstore__post_rx(k, idx);
			continue;
		}
		kvstore__in[n].msg = kvstore__rxbuf[idx];
		kvstore__in[n].len = rsp.len;
		kvstore__src[n] = rsp.arg;
		kvstore__rxid[n] = idx;
		n++;
	}
	return n;
}

/* Send the replies of a batch with one kick and wait until all left. */
static uint32_t kvstore__send(struct kvstore *k, uint32_t n)
{
	struct kemari_rsp rsp;
	uint32_t i, sent = 0;

	for (i = 0; i < n; i++) {
		struct kemari_req req = {
			.id = i,
			.gpa = (uintptr_t)kvstore__out[i].reply,
			.len = kvstore__out[i].len,
			.arg = kvstore__src[i],
		};

		if (!req.len)
			continue; /* dropped */
		if (rt__queue_post(&k->tx, &req))
			guest_panic("kvstore: tx queue full");
		sent++;
	}
	if (!sent)
		return 0;
	rt__queue_kick(&k->tx);
	/* The reply buffers are reused by the next batch. A failed send is
	 * the client's loss to retry, like any lost datagram. */
	for (i = 0; i < sent; i++)
		rt__queue_wait(&k->tx, &rsp);
	return sent;
}

static void kvstore__setup(struct kvstore *k, struct kemari_bootinfo *bi)
{
	const struct kemari_bootinfo_dev *net, *blk;
	int ret;

	k->bi = bi;
	net = rt__find_dev(bi, KEMARI_DEV_NET);
	blk = rt__find_dev(bi, KEMARI_DEV_BLOCK);
	if (!net || rt__queue_init(&k->tx, net, 0) ||
	    rt__queue_init(&k->rx, net, 1))
		guest_panic("kvstore: no usable net device");
	if (!blk || rt__queue_init(&k->blk, blk, 0))
		guest_panic("kvstore: no usable block device");

	ret = wal__init(&kvstore__wal, &kvstore__blk_ops, k, blk->capacity,
			kvstore__io, KVSTORE_IO_SECTORS);
	if (ret)
		guest_panic("kvstore: disk of %lu sectors unusable (%d)",
			    (unsigned long)blk->capacity, ret);
	ret = wal__open(&kvstore__wal, &kvstore__state);
	if (ret)
		guest_panic("kvstore: cannot open the log (%d)", ret);
}

int guest_main(struct kemari_bootinfo *bi)
{
	struct kvstore k;
	uint32_t i, n;

	if (bi->magic != KEMARI_BOOTINFO_MAGIC ||
	    bi->version != KEMARI_ABI_VERSION)
		guest_panic("kvstore: bad boot info");
	kvstore__setup(&k, bi);
	for (i = 0; i < KVSTORE_RX_BUFS; i++)
		kvstore__post_rx(&k, i);

	bi->stats[KEMARI_STAT_REPLAYED] = kvstore__wal.replayed;
	bi->stats[KEMARI_STAT_READY] = 1;
	rt__printf("kvstore: ready, %lu records replayed, %u keys\n",
		   (unsigned long)kvstore__wal.replayed, kvstore__state.nkeys);

	for (;;) {
		int ret;

		n = kvstore__collect(&k);
		if (!n) {
			rt__hlt();
			continue;
		}
		ret = kv__run_batch(&kvstore__state, &kvstore__wal, kvstore__in,
				    kvstore__out, n);
		if (ret > 0)
			bi->stats[KEMARI_STAT_UPDATES] += (uint64_t)ret;
		bi->stats[KEMARI_STAT_REQUESTS] += kvstore__send(&k, n);
		/* Only now: in[] pointed into these buffers until the batch
		 * was done. */
		for (i = 0; i < n; i++)
			kvstore__post_rx(&k, kvstore__rxid[i]);
	}
}
