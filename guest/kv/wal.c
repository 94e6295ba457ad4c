// SPDX-License-Identifier: MIT
/*
 * kvstore write-ahead log: superblock, record codec, replay, append,
 * compaction. Layout and crash rules are described in wal.h.
 */
#include "wal.h"

/* Superblock fields (byte offsets; little-endian like everything here). */
#define SB_MAGIC 0
#define SB_VERSION 8
#define SB_CRC 12
#define SB_SEQ 16
#define SB_REGION_LEN 24
#define SB_ACTIVE 32
#define SB_GEN 40
#define SB_START_LSN 48
#define SB_NEXT_GEN 56

/* Record fields. */
#define REC_MAGIC 0
#define REC_GEN 8
#define REC_LSN 16
#define REC_PREV_CRC 24
#define REC_CRC 28
#define REC_OP 32
#define REC_EFFECTS 34
#define REC_REPLY_KIND 35
#define REC_CID_LEN 36
#define REC_KEY_LEN 37
#define REC_VAL_LEN 38
#define REC_REPLY_LEN 39
#define REC_SEQ 40
#define REC_CID 48
#define REC_KEY (REC_CID + KV_TOKEN_MAX)
#define REC_VAL (REC_KEY + KV_TOKEN_MAX)
#define REC_REPLY (REC_VAL + KV_TOKEN_MAX)
#define REC_END (REC_REPLY + KV_SUFFIX_MAX)

_Static_assert(REC_END <= WAL_SECTOR, "a record must fit in a sector");

struct wal_sb {
	uint64_t seq;
	uint64_t region_len;
	uint32_t active;
	uint64_t gen;
	uint64_t start_lsn;
	uint64_t next_gen;
};

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, (uint16_t)v);
	put16(p + 2, (uint16_t)(v >> 16));
}

static void put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)v);
	put32(p + 4, (uint32_t)(v >> 32));
}

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get32(const uint8_t *p)
{
	return get16(p) | (uint32_t)get16(p + 2) << 16;
}

static uint64_t get64(const uint8_t *p)
{
	return get32(p) | (uint64_t)get32(p + 4) << 32;
}

/* CRC of a sector with its 4-byte CRC field at off taken as zero. */
static uint32_t wal__sector_crc(const uint8_t *s, size_t off)
{
	static const uint8_t zero[4];
	uint32_t crc;

	crc = rt__crc32(0, s, off);
	crc = rt__crc32(crc, zero, sizeof(zero));
	return rt__crc32(crc, s + off + 4, WAL_SECTOR - off - 4);
}

uint64_t wal__region_start(const struct wal *w, uint32_t region)
{
	return WAL_SB_SLOTS + (uint64_t)region * w->region_len;
}

/* --- records ------------------------------------------------------------- */

uint32_t wal__encode(const struct kv_rec *rec, uint64_t gen, uint64_t lsn,
		     uint32_t prev_crc, uint8_t *s)
{
	uint32_t crc;

	memset(s, 0, WAL_SECTOR);
	put64(s + REC_MAGIC, WAL_REC_MAGIC);
	put64(s + REC_GEN, gen);
	put64(s + REC_LSN, lsn);
	put32(s + REC_PREV_CRC, prev_crc);
	put16(s + REC_OP, rec->op);
	s[REC_EFFECTS] = rec->effects;
	s[REC_REPLY_KIND] = rec->reply_kind;
	s[REC_CID_LEN] = rec->cid_len;
	s[REC_KEY_LEN] = rec->key_len;
	s[REC_VAL_LEN] = rec->val_len;
	s[REC_REPLY_LEN] = rec->reply_len;
	put64(s + REC_SEQ, rec->seq);
	memcpy(s + REC_CID, rec->cid, rec->cid_len);
	memcpy(s + REC_KEY, rec->key, rec->key_len);
	memcpy(s + REC_VAL, rec->val, rec->val_len);
	memcpy(s + REC_REPLY, rec->reply, rec->reply_len);
	crc = wal__sector_crc(s, REC_CRC);
	put32(s + REC_CRC, crc);
	return crc;
}

int wal__decode(const uint8_t *s, uint64_t gen, uint64_t lsn, uint32_t prev_crc,
		struct kv_rec *rec, uint32_t *crc)
{
	const uint8_t all =
		KV_EFFECT_KEY_SET | KV_EFFECT_KEY_DEL | KV_EFFECT_CLIENT;
	uint8_t effects = s[REC_EFFECTS];

	if (get64(s + REC_MAGIC) != WAL_REC_MAGIC ||
	    get64(s + REC_GEN) != gen || get64(s + REC_LSN) != lsn ||
	    get32(s + REC_PREV_CRC) != prev_crc ||
	    get32(s + REC_CRC) != wal__sector_crc(s, REC_CRC))
		return -EINVAL;
	/* A valid CRC over nonsense would be a bug of ours: refuse it too. */
	if (!effects || effects & ~all ||
	    (effects & KV_EFFECT_KEY_SET && effects & KV_EFFECT_KEY_DEL) ||
	    s[REC_CID_LEN] > KV_TOKEN_MAX || s[REC_KEY_LEN] > KV_TOKEN_MAX ||
	    s[REC_VAL_LEN] > KV_TOKEN_MAX || s[REC_REPLY_LEN] > KV_SUFFIX_MAX)
		return -EINVAL;

	rec->op = get16(s + REC_OP);
	rec->effects = effects;
	rec->reply_kind = s[REC_REPLY_KIND];
	rec->cid_len = s[REC_CID_LEN];
	rec->key_len = s[REC_KEY_LEN];
	rec->val_len = s[REC_VAL_LEN];
	rec->reply_len = s[REC_REPLY_LEN];
	rec->seq = get64(s + REC_SEQ);
	memcpy(rec->cid, s + REC_CID, KV_TOKEN_MAX);
	memcpy(rec->key, s + REC_KEY, KV_TOKEN_MAX);
	memcpy(rec->val, s + REC_VAL, KV_TOKEN_MAX);
	memcpy(rec->reply, s + REC_REPLY, KV_SUFFIX_MAX);
	*crc = get32(s + REC_CRC);
	return 0;
}

/* --- superblock ---------------------------------------------------------- */

static int wal__sb_decode(const uint8_t *s, struct wal_sb *sb)
{
	if (get64(s + SB_MAGIC) != WAL_SB_MAGIC ||
	    get32(s + SB_VERSION) != WAL_VERSION ||
	    get32(s + SB_CRC) != wal__sector_crc(s, SB_CRC))
		return -EINVAL;
	sb->seq = get64(s + SB_SEQ);
	sb->region_len = get64(s + SB_REGION_LEN);
	sb->active = get32(s + SB_ACTIVE);
	sb->gen = get64(s + SB_GEN);
	sb->start_lsn = get64(s + SB_START_LSN);
	sb->next_gen = get64(s + SB_NEXT_GEN);
	return 0;
}

/* A checksummed superblock that still does not describe this device. */
static bool wal__sb_fits(const struct wal *w, const struct wal_sb *sb)
{
	return sb->region_len >= 1 && sb->region_len <= WAL_REGION_MAX &&
	       WAL_SB_SLOTS + 2 * sb->region_len <= w->capacity &&
	       sb->active <= 1 && sb->gen >= 1 && sb->next_gen > sb->gen;
}

/*
 * Write the superblock for (active, gen, start_lsn) into the slot the last
 * one did not use, and flush. next_gen is written one beyond w->next_gen:
 * the generation the next compaction attempt uses is then never one that a
 * later boot will pick again, whether or not that attempt completes.
 */
static int wal__sb_write(struct wal *w, uint32_t active, uint64_t gen,
			 uint64_t start_lsn)
{
	uint64_t seq = w->sb_seq + 1;
	uint8_t *s = w->buf;
	int ret;

	memset(s, 0, WAL_SECTOR);
	put64(s + SB_MAGIC, WAL_SB_MAGIC);
	put32(s + SB_VERSION, WAL_VERSION);
	put64(s + SB_SEQ, seq);
	put64(s + SB_REGION_LEN, w->region_len);
	put32(s + SB_ACTIVE, active);
	put64(s + SB_GEN, gen);
	put64(s + SB_START_LSN, start_lsn);
	put64(s + SB_NEXT_GEN, w->next_gen + 1);
	put32(s + SB_CRC, wal__sector_crc(s, SB_CRC));
	ret = w->ops->write(w->ctx, seq & 1, 1, s, true);
	if (ret) {
		w->broken = true;
		return ret;
	}
	w->sb_seq = seq;
	w->active = active;
	w->gen = gen;
	w->start_lsn = start_lsn;
	return 0;
}

static bool wal__all_zero(const uint8_t *s)
{
	size_t i;

	for (i = 0; i < WAL_SECTOR; i++) {
		if (s[i])
			return false;
	}
	return true;
}

/* Pick the newest valid superblock, or format a blank disk in memory. */
static int wal__sb_load(struct wal *w, struct wal_sb *out)
{
	struct wal_sb sb[WAL_SB_SLOTS];
	bool valid[WAL_SB_SLOTS], ours = false, blank = true;
	uint32_t i;
	int ret;

	ret = w->ops->read(w->ctx, 0, WAL_SB_SLOTS, w->buf);
	if (ret)
		return ret;
	for (i = 0; i < WAL_SB_SLOTS; i++) {
		const uint8_t *s = w->buf + i * WAL_SECTOR;

		valid[i] = !wal__sb_decode(s, &sb[i]);
		ours |= get64(s + SB_MAGIC) == WAL_SB_MAGIC;
		blank &= wal__all_zero(s);
	}
	if (valid[0] || valid[1]) {
		i = valid[0] && (!valid[1] || sb[0].seq > sb[1].seq) ? 0 : 1;
		if (!wal__sb_fits(w, &sb[i]))
			return -EINVAL;
		*out = sb[i];
		return 0;
	}
	/*
	 * Every superblock write leaves the other slot valid, so "ours but
	 * none valid" can only be a first format torn by a crash, before any
	 * record was written: formatting again loses nothing. Anything else
	 * is somebody else's disk.
	 */
	if (!blank && !ours)
		return -EINVAL;
	out->seq = 0;
	out->region_len = RT_MIN((w->capacity - WAL_SB_SLOTS) / 2,
				 (uint64_t)WAL_REGION_MAX);
	out->active = 0;
	out->gen = 1;
	out->start_lsn = 1;
	out->next_gen = 2;
	return 0;
}

/* --- open and replay ----------------------------------------------------- */

int wal__init(struct wal *w, const struct wal_dev_ops *ops, void *ctx,
	      uint64_t capacity, void *buf, uint32_t buf_sectors)
{
	memset(w, 0, sizeof(*w));
	if (buf_sectors < WAL_SB_SLOTS)
		return -EINVAL;
	if (capacity < WAL_MIN_SECTORS)
		return -ENOSPC;
	w->ops = ops;
	w->ctx = ctx;
	w->capacity = capacity;
	w->buf = buf;
	w->buf_sectors = buf_sectors;
	w->broken = true;
	return 0;
}

static int wal__replay(struct wal *w, struct kv_state *st)
{
	uint64_t base = wal__region_start(w, w->active);
	uint32_t last = 0;
	uint64_t pos = 0;
	struct kv_rec rec;
	int ret;

	while (pos < w->region_len) {
		uint32_t n = (uint32_t)RT_MIN((uint64_t)w->buf_sectors,
					      w->region_len - pos);
		uint32_t i;

		ret = w->ops->read(w->ctx, base + pos, n, w->buf);
		if (ret)
			return ret;
		for (i = 0; i < n; i++, pos++) {
			uint32_t crc;

			if (wal__decode(w->buf + (size_t)i * WAL_SECTOR, w->gen,
					w->start_lsn + pos, last, &rec, &crc))
				goto end;
			ret = kv__apply(st, &rec);
			if (ret)
				return ret;
			last = crc;
		}
	}
end:
	w->pos = pos;
	w->last_crc = last;
	w->replayed = pos;
	return 0;
}

int wal__open(struct wal *w, struct kv_state *st)
{
	struct wal_sb sb;
	uint32_t lim;
	int ret;

	w->broken = true;
	ret = wal__sb_load(w, &sb);
	if (ret)
		return ret;
	w->sb_seq = sb.seq;
	w->region_len = sb.region_len;
	w->active = sb.active;
	w->gen = sb.gen;
	w->start_lsn = sb.start_lsn;
	w->next_gen = sb.next_gen;

	/* Never hold more than one snapshot can carry (one record per key,
	 * paired with one client entry): compaction must always fit. */
	lim = (uint32_t)RT_MIN(w->region_len, (uint64_t)UINT32_MAX);
	kv__init(st, lim, lim);
	ret = wal__replay(w, st);
	if (ret)
		return ret;
	ret = wal__sb_write(w, w->active, w->gen, w->start_lsn);
	if (ret)
		return ret;
	w->broken = false;
	return 0;
}

/* --- append and compaction ----------------------------------------------- */

int wal__commit(struct wal *w, struct kv_state *st,
		const struct kv_rec *const *recs, uint32_t n)
{
	uint64_t base, lsn;
	uint32_t done = 0, last;
	int ret;

	if (w->broken)
		return -EIO;
	if (!n)
		return 0;
	if (n > w->region_len - w->pos)
		return wal__compact(w, st);

	base = wal__region_start(w, w->active) + w->pos;
	lsn = w->start_lsn + w->pos;
	last = w->last_crc;
	while (done < n) {
		uint32_t chunk = RT_MIN(w->buf_sectors, n - done);
		uint32_t i;

		for (i = 0; i < chunk; i++)
			last = wal__encode(recs[done + i], w->gen,
					   lsn + done + i, last,
					   w->buf + (size_t)i * WAL_SECTOR);
		ret = w->ops->write(w->ctx, base + done, chunk, w->buf,
				    done + chunk == n);
		if (ret) {
			w->broken = true;
			return ret;
		}
		done += chunk;
	}
	w->pos += n;
	w->last_crc = last;
	return 0;
}

int wal__compact(struct wal *w, struct kv_state *st)
{
	uint32_t target = !w->active, count = kv__snap_count(st);
	uint64_t base, gen, lsn;
	struct kv_snap_iter it;
	uint32_t done = 0, last = 0;
	struct kv_rec rec;
	int ret;

	if (w->broken)
		return -EIO;
	if (count > w->region_len)
		return -ENOSPC;
	/* Spent even if this attempt fails: its sectors may be on disk. */
	gen = w->next_gen++;
	base = wal__region_start(w, target);
	lsn = w->start_lsn + w->pos;

	kv__snap_begin(st, &it);
	while (done < count) {
		uint32_t chunk = RT_MIN(w->buf_sectors, count - done);
		uint32_t i;

		for (i = 0; i < chunk; i++) {
			kv__snap_next(st, &it, &rec);
			last = wal__encode(&rec, gen, lsn + done + i, last,
					   w->buf + (size_t)i * WAL_SECTOR);
		}
		/* The last chunk's flush makes the snapshot durable before
		 * the superblock may point at it. */
		ret = w->ops->write(w->ctx, base + done, chunk, w->buf,
				    done + chunk == count);
		if (ret) {
			w->broken = true;
			return ret;
		}
		done += chunk;
	}
	ret = wal__sb_write(w, target, gen, lsn);
	if (ret)
		return ret;
	w->pos = count;
	w->last_crc = last;
	w->compactions++;
	return 0;
}

/* --- batches ------------------------------------------------------------- */

int kv__run_batch(struct kv_state *st, struct wal *w, const struct kv_req *in,
		  struct kv_result *out, uint32_t n)
{
	/* Initialised only to quiet gcc's -Wmaybe-uninitialized. */
	const struct kv_rec *recs[KV_BATCH_MAX] = { NULL };
	uint32_t i, nrec = 0;
	int updates = 0, ret = 0;

	if (n > KV_BATCH_MAX)
		return -EINVAL;
	/* A failed rollback is retried here; until it works, nothing the
	 * state says can be trusted, so every request gets "ERR io". */
	if (w->broken)
		ret = wal__open(w, st);

	for (i = 0; i < n; i++) {
		if (kv__handle(st, in[i].msg, in[i].len, &out[i])) {
			out[i].len = 0;
			continue;
		}
		if (!out[i].logged)
			continue;
		recs[nrec++] = &out[i].rec;
		if (out[i].rec.effects &
		    (KV_EFFECT_KEY_SET | KV_EFFECT_KEY_DEL))
			updates++;
	}
	if (!ret)
		ret = wal__commit(w, st, recs, nrec);
	if (!ret)
		return updates;

	for (i = 0; i < n; i++) {
		if (out[i].len)
			kv__reply_err(&out[i], ret == -ENOSPC ? "full" : "io");
	}
	/* The state ran ahead of the log: go back to what the disk holds. */
	w->broken = true;
	wal__open(w, st);
	return ret;
}
