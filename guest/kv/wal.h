/* SPDX-License-Identifier: MIT */
/*
 * kvstore write-ahead log on a sector device, pure logic over an ops table
 * so that host tests can run it on a memory array.
 *
 * Disk layout (512-byte sectors, capacity C >= 4; 64 KiB disks give 63-record
 * regions):
 *   sector 0, 1   superblock slots; a superblock write goes to slot seq & 1,
 *                 so a torn one leaves the previous slot intact. The valid
 *                 slot with the higher seq wins.
 *   sector 2      region 0: R = min((C - 2) / 2, WAL_REGION_MAX) sectors
 *   sector 2 + R  region 1: R sectors
 * The superblock names the active region, its generation and the LSN of its
 * first record. A region holds one record per sector: a snapshot written by
 * the last compaction, then appended log records. Each record carries magic,
 * generation, LSN (= region start LSN + position), the CRC-32 of the previous
 * record in the region (0 for the first) and its own CRC-32. Replay stops at
 * the first sector that fails any of these: a torn tail is normal, and the
 * CRC chain keeps a stale record behind it from ever being replayed after
 * the log has been rewritten past that point.
 *
 * Compaction (region full): write a snapshot of the state into the other
 * region under a new generation, flush, then point the superblock at it and
 * flush. A crash before the second flush leaves the old region current.
 * Generations are never reused, even by attempts a crash cut short: the
 * superblock's next_gen always lies beyond any generation this boot may
 * write, and opening the log bumps it once before anything is written.
 */
#ifndef KEMARI_GUEST_WAL_H
#define KEMARI_GUEST_WAL_H

#include "kvcore.h"

#define WAL_SECTOR 512
#define WAL_SB_SLOTS 2
#define WAL_REGION_MAX 65536 /* bounds replay time on big disks */
#define WAL_MIN_SECTORS (WAL_SB_SLOTS + 2)
#define WAL_SB_MAGIC 0x3142534c4157564bULL  /* "KVWALSB1" */
#define WAL_REC_MAGIC 0x3143524c4157564bULL /* "KVWALRC1" */
#define WAL_VERSION 1
#define KV_BATCH_MAX 64

/*
 * The device under the log. Both calls block until done and return 0 or a
 * negative errno; buf stays the caller's.
 *   read   nsect sectors at sector into buf
 *   write  nsect (possibly 0) sectors from buf at sector; with flush, also
 *          make every completed write durable before returning (the guest
 *          queues one WRITE and one FLUSH together behind a single kick)
 */
struct wal_dev_ops {
	int (*read)(void *ctx, uint64_t sector, uint32_t nsect, void *buf);
	int (*write)(void *ctx, uint64_t sector, uint32_t nsect,
		     const void *buf, bool flush);
};

struct wal {
	const struct wal_dev_ops *ops;
	void *ctx;
	uint64_t capacity;    /* sectors */
	uint8_t *buf;	      /* scratch, buf_sectors * WAL_SECTOR bytes */
	uint32_t buf_sectors; /* >= WAL_SB_SLOTS */
	/* The state may not match the disk: wal__open() before anything. */
	bool broken;

	/* from the current superblock */
	uint64_t sb_seq;
	uint64_t region_len;
	uint32_t active;
	uint64_t gen;
	uint64_t start_lsn;
	uint64_t next_gen; /* the generation the next compaction uses */

	uint64_t pos;	   /* next free position in the active region */
	uint32_t last_crc; /* CRC of the record before pos, 0 at pos 0 */

	uint64_t replayed;    /* records replayed by the last wal__open */
	uint64_t compactions; /* since wal__init */
};

/* Bind the log to a device of capacity sectors, with a scratch buffer.
 * Returns -EINVAL if the buffer is too small, -ENOSPC if the disk is. */
int wal__init(struct wal *w, const struct wal_dev_ops *ops, void *ctx,
	      uint64_t capacity, void *buf, uint32_t buf_sectors);

/*
 * Read the superblock (formatting a blank disk), reset st to the limits the
 * layout can snapshot and replay the active region into it, then bump the
 * superblock's next generation. Used at boot and to roll back after a failed
 * commit. Returns 0, -EIO (device), -EINVAL (not a kvstore disk, or a
 * superblock that does not fit the device) or -ENOSPC (the log holds more
 * keys than the limits). On error w stays broken.
 */
int wal__open(struct wal *w, struct kv_state *st);

/*
 * Make the n records durable, in order: appended with one write and one
 * flush, or, if they do not fit in the active region, by compacting st
 * (which already includes their effects). Returns 0, -ENOSPC if even a
 * snapshot does not fit, or the device error (then w is broken).
 */
int wal__commit(struct wal *w, struct kv_state *st,
		const struct kv_rec *const *recs, uint32_t n);

/* Write a snapshot of st to the other region and switch to it. */
int wal__compact(struct wal *w, struct kv_state *st);

/* First sector of region 0 or 1. */
uint64_t wal__region_start(const struct wal *w, uint32_t region);

/* Encode rec into one sector; returns the record's CRC. */
uint32_t wal__encode(const struct kv_rec *rec, uint64_t gen, uint64_t lsn,
		     uint32_t prev_crc, uint8_t *sector);

/* Decode and validate one sector as the record expected at (gen, lsn) after
 * a record with CRC prev_crc. Returns 0 and its CRC, or -EINVAL. */
int wal__decode(const uint8_t *sector, uint64_t gen, uint64_t lsn,
		uint32_t prev_crc, struct kv_rec *rec, uint32_t *crc);

/* One inbound datagram of a batch. */
struct kv_req {
	const char *msg;
	size_t len;
};

/*
 * Serve a burst of n (<= KV_BATCH_MAX) datagrams: execute them in order,
 * make their log records durable with one commit, and leave each reply in
 * out[i] (len 0: dropped, send nothing). Replies may be sent only after this
 * returns. Returns the number of key updates applied, or a negative errno if
 * the commit failed: then every reply reads "ERR io" (or "ERR full") and st
 * has been rolled back to the log by wal__open (if that failed too, w stays
 * broken and the next batch tries again).
 */
int kv__run_batch(struct kv_state *st, struct wal *w, const struct kv_req *in,
		  struct kv_result *out, uint32_t n);

#endif
