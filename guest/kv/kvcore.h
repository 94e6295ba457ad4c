/* SPDX-License-Identifier: MIT */
/*
 * kvstore protocol and state machine, free of any device access so that the
 * same code runs in the guest and in host unit tests.
 *
 * Wire protocol (one UDP-like datagram per request and per reply):
 *   request  "<client-id> <seq> <CMD> [args]"  CMD: PING | GET k | SET k v |
 *            INCR k | DEL k, tokens split by single spaces, one trailing
 *            "\n" or "\r\n" tolerated
 *   reply    "<client-id> <seq> OK [value]" | "... NOTFOUND" | "... ERR why"
 * client-id, keys and values are 1..64 bytes of 0x21..0x7e; seq is a u64.
 *
 * Exactly-once: per client the last applied seq and its reply are kept; the
 * same seq again gets that reply without re-executing, a lower one
 * "ERR stale". Executed SET/INCR/DEL produce a struct kv_rec that must be
 * durable (see wal.h) before their reply, or any later one, is sent.
 */
#ifndef KEMARI_GUEST_KVCORE_H
#define KEMARI_GUEST_KVCORE_H

#include "../rt/lib.h"

#define KV_TOKEN_MAX 64	       /* client-id, key and value bytes */
#define KV_MAX_KEYS 16384      /* key table capacity (compile-time bound) */
#define KV_KEY_BUCKETS 32768   /* power of two */
#define KV_MAX_CLIENTS 1024    /* clients remembered before LRU eviction */
#define KV_CLIENT_BUCKETS 2048 /* power of two */
/* The reply after "<client-id> <seq> ": at most "OK " + a 64-byte value. */
#define KV_SUFFIX_MAX 72
#define KV_REPLY_MAX (KV_TOKEN_MAX + 1 + RT_U64_DIGITS + 1 + KV_SUFFIX_MAX)
#define KV_NIL UINT32_MAX

enum kv_op {
	KV_OP_SET = 1,
	KV_OP_INCR = 2,
	KV_OP_DEL = 3,
	KV_OP_SNAP = 4, /* compaction snapshot record */
};

enum kv_reply_kind {
	KV_REPLY_OK = 1,       /* "OK" */
	KV_REPLY_VALUE = 2,    /* "OK <value>" */
	KV_REPLY_NOTFOUND = 3, /* "NOTFOUND" */
	KV_REPLY_ERR = 4,      /* "ERR <reason>" */
};

/* What replaying a record does; a record may carry both kinds. */
#define KV_EFFECT_KEY_SET 0x1 /* key := val */
#define KV_EFFECT_KEY_DEL 0x2 /* key removed */
#define KV_EFFECT_CLIENT 0x4  /* client cid: last seq := seq, reply := reply */

/*
 * One logical log record. Replay applies the recorded effects, never
 * re-executes the command, so its outcome cannot depend on replay order of
 * anything but the log itself.
 */
struct kv_rec {
	uint16_t op; /* enum kv_op, for inspection only */
	uint8_t effects;
	uint8_t reply_kind;
	uint8_t cid_len, key_len, val_len, reply_len;
	uint64_t seq;
	char cid[KV_TOKEN_MAX];
	char key[KV_TOKEN_MAX];
	char val[KV_TOKEN_MAX];
	char reply[KV_SUFFIX_MAX]; /* reply_len bytes, "OK 5", "NOTFOUND"... */
};

struct kv_key {
	uint32_t next; /* hash chain */
	uint8_t used;
	uint8_t klen, vlen;
	char key[KV_TOKEN_MAX];
	char val[KV_TOKEN_MAX];
};

struct kv_client {
	uint32_t next;		     /* hash chain */
	uint32_t lru_prev, lru_next; /* towards older / newer */
	uint8_t used;
	uint8_t id_len, reply_len, reply_kind;
	uint64_t seq;
	char id[KV_TOKEN_MAX];
	char reply[KV_SUFFIX_MAX];
};

/*
 * The whole service state. About 2.5 MiB, so guests keep it in .bss and
 * tests on the heap. Both tables are chained hash tables over fixed pools,
 * so deletion needs neither tombstones nor rehashing.
 */
struct kv_state {
	uint32_t max_keys, max_clients; /* effective limits, <= the pools */
	uint32_t nkeys, nclients;
	uint32_t key_free;	   /* free list through kv_key.next */
	uint32_t client_free;	   /* free list through kv_client.next */
	uint32_t lru_old, lru_new; /* client LRU list ends */
	uint32_t key_bucket[KV_KEY_BUCKETS];
	uint32_t client_bucket[KV_CLIENT_BUCKETS];
	struct kv_key key[KV_MAX_KEYS];
	struct kv_client client[KV_MAX_CLIENTS];
};

/* The outcome of one datagram. */
struct kv_result {
	bool logged;	     /* rec must be made durable before the reply */
	uint32_t prefix_len; /* bytes of "<client-id> <seq> " in reply */
	uint32_t len;	     /* reply bytes (no NUL counted) */
	char reply[KV_REPLY_MAX + 1];
	struct kv_rec rec;
};

/* Empty the state and set its limits (clamped to the pools, at least 1). */
void kv__init(struct kv_state *st, uint32_t max_keys, uint32_t max_clients);

/*
 * Execute one request datagram of len bytes. Returns 0 with the reply in res,
 * or -EINVAL if the datagram carries no readable client-id and must be
 * dropped without a reply. Never fails otherwise: bad input gets an ERR reply.
 * The state is updated at once; res->logged says the reply may only leave
 * after res->rec is durable.
 */
int kv__handle(struct kv_state *st, const char *msg, size_t len,
	       struct kv_result *res);

/* Replace the reply in res by "<client-id> <seq> ERR <reason>" (used when
 * the log write failed and the state was rolled back). */
void kv__reply_err(struct kv_result *res, const char *reason);

/* Apply a replayed record. Returns -ENOSPC if the key table is full (a log
 * written with larger limits), -EINVAL for a malformed record. */
int kv__apply(struct kv_state *st, const struct kv_rec *rec);

/* The value stored for a key, or NULL; *vlen gets its length. */
const char *kv__lookup(const struct kv_state *st, const char *key, size_t klen,
		       size_t *vlen);

/* The client entry for id, or NULL. Does not touch the LRU order. */
const struct kv_client *kv__client(const struct kv_state *st, const char *id,
				   size_t id_len);

/*
 * Snapshot iteration for compaction: kv__snap_count records are produced,
 * each carrying one live key (while keys last) and one client entry (while
 * clients last, oldest first so that replay rebuilds the LRU order).
 */
struct kv_snap_iter {
	uint32_t key_pos;
	uint32_t client;
};

uint32_t kv__snap_count(const struct kv_state *st);
void kv__snap_begin(const struct kv_state *st, struct kv_snap_iter *it);
/* Fill rec with the next snapshot record; false when done. */
bool kv__snap_next(const struct kv_state *st, struct kv_snap_iter *it,
		   struct kv_rec *rec);

#endif
