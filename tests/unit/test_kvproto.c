// SPDX-License-Identifier: MIT
/*
 * kvstore protocol, exactly-once table, key table and write-ahead log, run
 * natively against the same sources the guest links (guest/kv, guest/rt).
 * The block device is a memory array that can be told to fail after a
 * number of sector writes, which is how crashes are simulated.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../guest/kv/kvcore.h"
#include "../../guest/kv/wal.h"

/* --- protocol fixture ---------------------------------------------------- */

static struct kv_state *st;
static struct kv_result res;
static char reply[KV_REPLY_MAX + 1];

static void proto_init(void)
{
	st = malloc(sizeof(*st));
	cr_assert(st != NULL);
	kv__init(st, KV_MAX_KEYS, KV_MAX_CLIENTS);
}

static void proto_fini(void)
{
	free(st);
}

/* Run one datagram of len bytes; the reply, or "<dropped>". */
static const char *reqn(const char *msg, size_t len)
{
	if (kv__handle(st, msg, len, &res))
		return "<dropped>";
	cr_assert(eq(u32, (uint32_t)strlen(res.reply), res.len));
	memcpy(reply, res.reply, res.len + 1);
	return reply;
}

static const char *req(const char *msg)
{
	return reqn(msg, strlen(msg));
}

static const char *value_of(const char *key)
{
	static char buf[KV_TOKEN_MAX + 1];
	const char *v;
	size_t n;

	v = kv__lookup(st, key, strlen(key), &n);
	if (!v)
		return "<none>";
	memcpy(buf, v, n);
	buf[n] = '\0';
	return buf;
}

/* A token of n copies of c. */
static const char *rep(char c, size_t n)
{
	static char buf[4][256];
	static int which;
	char *b = buf[which++ & 3];

	memset(b, c, n);
	b[n] = '\0';
	return b;
}

TestSuite(kvproto, .init = proto_init, .fini = proto_fini);

Test(kvproto, ping)
{
	cr_assert(eq(str, (char *)req("c1 1 PING"), "c1 1 OK PONG"));
}

Test(kvproto, set_get_del)
{
	cr_assert(eq(str, (char *)req("c1 1 GET k"), "c1 1 NOTFOUND"));
	cr_assert(eq(str, (char *)req("c1 2 SET k hello"), "c1 2 OK"));
	cr_assert(eq(str, (char *)req("c1 3 GET k"), "c1 3 OK hello"));
	cr_assert(eq(str, (char *)req("c1 4 SET k world"), "c1 4 OK"));
	cr_assert(eq(str, (char *)req("c1 5 GET k"), "c1 5 OK world"));
	cr_assert(eq(str, (char *)req("c1 6 DEL k"), "c1 6 OK"));
	cr_assert(eq(str, (char *)req("c1 7 DEL k"), "c1 7 NOTFOUND"));
	cr_assert(eq(str, (char *)req("c1 8 GET k"), "c1 8 NOTFOUND"));
	cr_assert(eq(u32, st->nkeys, 0));
}

Test(kvproto, logged_records)
{
	req("c1 1 GET k");
	cr_assert(not(res.logged));
	req("c1 2 SET k v");
	cr_assert(res.logged);
	cr_assert(eq(u8, res.rec.op, KV_OP_SET));
	cr_assert(
		eq(u8, res.rec.effects, KV_EFFECT_KEY_SET | KV_EFFECT_CLIENT));
	cr_assert(eq(u8, res.rec.reply_kind, KV_REPLY_OK));
	cr_assert(eq(u64, res.rec.seq, 2));
	req("c1 3 DEL nope");
	cr_assert(res.logged);
	cr_assert(eq(u8, res.rec.effects, KV_EFFECT_CLIENT));
	cr_assert(eq(u8, res.rec.reply_kind, KV_REPLY_NOTFOUND));
	req("c1 4 SET k");
	cr_assert(not(res.logged));
}

Test(kvproto, incr)
{
	cr_assert(eq(str, (char *)req("c 1 INCR n"), "c 1 OK 1"));
	cr_assert(eq(str, (char *)req("c 2 INCR n"), "c 2 OK 2"));
	cr_assert(eq(str, (char *)req("c 3 SET n -5"), "c 3 OK"));
	cr_assert(eq(str, (char *)req("c 4 INCR n"), "c 4 OK -4"));
	cr_assert(eq(str, (char *)req("c 5 SET n -1"), "c 5 OK"));
	cr_assert(eq(str, (char *)req("c 6 INCR n"), "c 6 OK 0"));
	cr_assert(eq(str, (char *)req("c 7 SET n 007"), "c 7 OK"));
	cr_assert(eq(str, (char *)req("c 8 INCR n"), "c 8 OK 8"));
	cr_assert(eq(str, (char *)req("c 9 SET n -9223372036854775808"),
		     "c 9 OK"));
	cr_assert(eq(str, (char *)req("c 10 INCR n"),
		     "c 10 OK -9223372036854775807"));
	cr_assert(eq(str, (char *)req("c 11 GET n"),
		     "c 11 OK -9223372036854775807"));
}

Test(kvproto, incr_overflow)
{
	req("c 1 SET n 9223372036854775806");
	cr_assert(eq(str, (char *)req("c 2 INCR n"),
		     "c 2 OK 9223372036854775807"));
	cr_assert(eq(str, (char *)req("c 3 INCR n"), "c 3 ERR overflow"));
	cr_assert(eq(str, (char *)value_of("n"), "9223372036854775807"));
	cr_assert(eq(str, (char *)req("c 4 INCR n"), "c 4 ERR overflow"));
	cr_assert(eq(str, (char *)value_of("n"), "9223372036854775807"));
	/* Still logged: its reply must survive a restart like any other. */
	cr_assert(res.logged);
	cr_assert(eq(u8, res.rec.effects, KV_EFFECT_CLIENT));
	cr_assert(eq(u8, res.rec.reply_kind, KV_REPLY_ERR));
}

Test(kvproto, incr_not_integer)
{
	static const char *const bad[] = {
		"abc",
		"1x",
		"-",
		"--1",
		"+1",
		"1-",
		"9223372036854775808",
		"-9223372036854775809",
		"99999999999999999999999",
	};
	char buf[128], want[128];
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(buf, sizeof(buf), "c %zu SET n %s", 2 * i + 1, bad[i]);
		snprintf(want, sizeof(want), "c %zu OK", 2 * i + 1);
		cr_assert(eq(str, (char *)req(buf), want));
		snprintf(buf, sizeof(buf), "c %zu INCR n", 2 * i + 2);
		snprintf(want, sizeof(want), "c %zu ERR not-integer",
			 2 * i + 2);
		cr_assert(eq(str, (char *)req(buf), want), "value %s", bad[i]);
		cr_assert(eq(str, (char *)value_of("n"), (char *)bad[i]));
	}
}

Test(kvproto, exactly_once_incr)
{
	cr_assert(eq(str, (char *)req("c 7 INCR n"), "c 7 OK 1"));
	cr_assert(eq(str, (char *)req("c 7 INCR n"), "c 7 OK 1"));
	cr_assert(not(res.logged));
	cr_assert(eq(str, (char *)value_of("n"), "1"));
	/* Same seq, different command: still the cached reply. */
	cr_assert(eq(str, (char *)req("c 7 GET n"), "c 7 OK 1"));
	cr_assert(eq(str, (char *)req("c 7 DEL n"), "c 7 OK 1"));
	cr_assert(eq(str, (char *)value_of("n"), "1"));
	cr_assert(eq(str, (char *)req("c 8 INCR n"), "c 8 OK 2"));
}

Test(kvproto, exactly_once_every_command)
{
	cr_assert(eq(str, (char *)req("a 1 SET k v"), "a 1 OK"));
	cr_assert(eq(str, (char *)req("a 1 SET k other"), "a 1 OK"));
	cr_assert(eq(str, (char *)value_of("k"), "v"));
	cr_assert(eq(str, (char *)req("a 2 DEL k"), "a 2 OK"));
	req("b 1 SET k again");
	cr_assert(eq(str, (char *)req("a 2 DEL k"), "a 2 OK"));
	cr_assert(eq(str, (char *)value_of("k"), "again"));
	cr_assert(eq(str, (char *)req("a 3 GET k"), "a 3 OK again"));
	req("b 2 SET k changed");
	cr_assert(eq(str, (char *)req("a 3 GET k"), "a 3 OK again"));
	cr_assert(eq(str, (char *)req("a 4 PING"), "a 4 OK PONG"));
	cr_assert(eq(str, (char *)req("a 4 GET k"), "a 4 OK PONG"));
}

Test(kvproto, errors_are_cached)
{
	cr_assert(eq(str, (char *)req("c 5 FOO"), "c 5 ERR unknown-command"));
	cr_assert(eq(str, (char *)req("c 5 PING"), "c 5 ERR unknown-command"));
	cr_assert(eq(str, (char *)req("c 6 GET"), "c 6 ERR arity"));
	cr_assert(eq(str, (char *)req("c 6 PING"), "c 6 ERR arity"));
	cr_assert(eq(str, (char *)req("c 7 PING"), "c 7 OK PONG"));
}

Test(kvproto, stale)
{
	cr_assert(eq(str, (char *)req("c 10 SET k v"), "c 10 OK"));
	cr_assert(eq(str, (char *)req("c 9 SET k w"), "c 9 ERR stale"));
	cr_assert(eq(str, (char *)req("c 0 PING"), "c 0 ERR stale"));
	cr_assert(eq(str, (char *)value_of("k"), "v"));
	/* A stale request does not replace the cached reply. */
	cr_assert(eq(str, (char *)req("c 10 GET k"), "c 10 OK"));
	/* Gaps are fine: only lower seqs are stale. */
	cr_assert(eq(str, (char *)req("c 1000 GET k"), "c 1000 OK v"));
	cr_assert(eq(str, (char *)req("c 999 GET k"), "c 999 ERR stale"));
	/* Clients are independent. */
	cr_assert(eq(str, (char *)req("d 1 GET k"), "d 1 OK v"));
}

Test(kvproto, seq_limits)
{
	cr_assert(eq(str, (char *)req("c 0 PING"), "c 0 OK PONG"));
	cr_assert(eq(str, (char *)req("c 18446744073709551615 PING"),
		     "c 18446744073709551615 OK PONG"));
	cr_assert(eq(str, (char *)req("c 18446744073709551614 PING"),
		     "c 18446744073709551614 ERR stale"));
	/* Leading zeros parse; the reply carries the canonical number. */
	cr_assert(eq(str, (char *)req("z 0042 PING"), "z 42 OK PONG"));
}

Test(kvproto, bad_seq)
{
	cr_assert(eq(str, (char *)req("c x PING"), "c x ERR bad-seq"));
	cr_assert(eq(str, (char *)req("c -1 PING"), "c -1 ERR bad-seq"));
	cr_assert(eq(str, (char *)req("c +1 PING"), "c +1 ERR bad-seq"));
	cr_assert(eq(str, (char *)req("c 1.5 PING"), "c 1.5 ERR bad-seq"));
	cr_assert(eq(str, (char *)req("c 18446744073709551616 PING"),
		     "c 18446744073709551616 ERR bad-seq"));
	/* Not echoable: empty or non-printable seq tokens read as "?". */
	cr_assert(eq(str, (char *)req("c  PING"), "c ? ERR bad-seq"));
	cr_assert(eq(str, (char *)req("c "), "c ? ERR bad-seq"));
	cr_assert(eq(str, (char *)req("c 1\t PING"), "c ? ERR bad-seq"));
	/* A bad seq is not applied: the client's history is untouched. */
	cr_assert(eq(str, (char *)req("c 5 PING"), "c 5 OK PONG"));
	cr_assert(eq(str, (char *)req("c x PING"), "c x ERR bad-seq"));
	cr_assert(eq(str, (char *)req("c 5 GET k"), "c 5 OK PONG"));
}

Test(kvproto, unknown_command)
{
	cr_assert(eq(str, (char *)req("c 1 FOO"), "c 1 ERR unknown-command"));
	cr_assert(eq(str, (char *)req("c 2 get k"), "c 2 ERR unknown-command"));
	cr_assert(eq(str, (char *)req("c 3"), "c 3 ERR unknown-command"));
	cr_assert(eq(str, (char *)req("c 4 "), "c 4 ERR unknown-command"));
	cr_assert(eq(str, (char *)req("c 5 PINGX"), "c 5 ERR unknown-command"));
	cr_assert(eq(str, (char *)req("c 6 PING\n\n"),
		     "c 6 ERR unknown-command"));
}

Test(kvproto, arity)
{
	cr_assert(eq(str, (char *)req("c 1 PING x"), "c 1 ERR arity"));
	cr_assert(eq(str, (char *)req("c 2 GET"), "c 2 ERR arity"));
	cr_assert(eq(str, (char *)req("c 3 GET a b"), "c 3 ERR arity"));
	cr_assert(eq(str, (char *)req("c 4 SET k"), "c 4 ERR arity"));
	cr_assert(eq(str, (char *)req("c 5 SET k v extra"), "c 5 ERR arity"));
	cr_assert(
		eq(str, (char *)req("c 6 SET a b c d e f g"), "c 6 ERR arity"));
	cr_assert(eq(str, (char *)req("c 7 INCR"), "c 7 ERR arity"));
	cr_assert(eq(str, (char *)req("c 8 INCR a b"), "c 8 ERR arity"));
	cr_assert(eq(str, (char *)req("c 9 DEL"), "c 9 ERR arity"));
	cr_assert(eq(str, (char *)req("c 10 DEL a b"), "c 10 ERR arity"));
	/* Double space: an empty token, so one argument too many. */
	cr_assert(eq(str, (char *)req("c 11 GET  k"), "c 11 ERR arity"));
	cr_assert(eq(u32, st->nkeys, 0));
}

Test(kvproto, bad_token)
{
	char buf[512], want[512];

	snprintf(buf, sizeof(buf), "c 1 SET %s v", rep('k', 65));
	cr_assert(eq(str, (char *)req(buf), "c 1 ERR bad-token"));
	snprintf(buf, sizeof(buf), "c 2 SET k %s", rep('v', 65));
	cr_assert(eq(str, (char *)req(buf), "c 2 ERR bad-token"));
	snprintf(buf, sizeof(buf), "c 3 GET %s", rep('k', 200));
	cr_assert(eq(str, (char *)req(buf), "c 3 ERR bad-token"));
	cr_assert(eq(u32, st->nkeys, 0));

	/* Exactly 64 is fine, for keys and values. */
	snprintf(buf, sizeof(buf), "c 4 SET %s %s", rep('k', 64), rep('v', 64));
	cr_assert(eq(str, (char *)req(buf), "c 4 OK"));
	snprintf(buf, sizeof(buf), "c 5 GET %s", rep('k', 64));
	snprintf(want, sizeof(want), "c 5 OK %s", rep('v', 64));
	cr_assert(eq(str, (char *)req(buf), want));

	/* Non-printable bytes: control, DEL, high bit. */
	cr_assert(eq(str, (char *)req("c 6 SET k\x01 v"), "c 6 ERR bad-token"));
	cr_assert(eq(str, (char *)req("c 7 SET k v\x7f"), "c 7 ERR bad-token"));
	cr_assert(eq(str, (char *)req("c 8 SET k \xc3\xa9"),
		     "c 8 ERR bad-token"));
	cr_assert(eq(str, (char *)req("c 9 SET k\tx v"), "c 9 ERR bad-token"));
	/* Empty key from a trailing space. */
	cr_assert(eq(str, (char *)req("c 10 GET "), "c 10 ERR bad-token"));
	cr_assert(eq(str, (char *)req("c 11 SET k "), "c 11 ERR bad-token"));
	/* Only one trailing newline is forgiven. */
	cr_assert(eq(str, (char *)req("c 12 GET k\n\n"), "c 12 ERR bad-token"));
	cr_assert(eq(str, (char *)req("c 13 GET k\r"), "c 13 ERR bad-token"));
	/* All of 0x21..0x7e is allowed. */
	cr_assert(
		eq(str,
		   (char *)req("c 14 SET !~ \"#$%&'()*+,-./:;<=>?@[\\]^_`{|}"),
		   "c 14 OK"));
	cr_assert(eq(str, (char *)req("c 15 GET !~"),
		     "c 15 OK \"#$%&'()*+,-./:;<=>?@[\\]^_`{|}"));
	/* A datagram with a NUL inside is a non-printable token. */
	cr_assert(eq(str, (char *)reqn("c 16 GET a\0b", 12),
		     "c 16 ERR bad-token"));
}

Test(kvproto, trailing_newline)
{
	cr_assert(eq(str, (char *)req("c 1 SET k v\n"), "c 1 OK"));
	cr_assert(eq(str, (char *)value_of("k"), "v"));
	cr_assert(eq(str, (char *)req("c 2 GET k\r\n"), "c 2 OK v"));
	cr_assert(eq(str, (char *)req("c 3 PING\n"), "c 3 OK PONG"));
}

Test(kvproto, dropped)
{
	static const char *const drop[] = {
		"",	   "\n", "\r\n",	 "c",		"c1PING",
		" 1 PING", "  ", "c\x01 1 PING", "\xff 1 PING",
	};
	char buf[256];
	size_t i;

	for (i = 0; i < sizeof(drop) / sizeof(drop[0]); i++)
		cr_assert(eq(str, (char *)req(drop[i]), "<dropped>"),
			  "datagram %zu", i);
	snprintf(buf, sizeof(buf), "%s 1 PING", rep('c', 65));
	cr_assert(eq(str, (char *)req(buf), "<dropped>"));
	/* A 64-byte client-id is fine. */
	snprintf(buf, sizeof(buf), "%s 1 PING", rep('c', 64));
	snprintf(buf + 128, 128, "%s 1 OK PONG", rep('c', 64));
	cr_assert(eq(str, (char *)req(buf), buf + 128));
	/* Dropped datagrams leave no trace in the client table. */
	cr_assert(eq(u32, st->nclients, 1));
}

Test(kvproto, longest_reply)
{
	char buf[512], want[512];

	snprintf(buf, sizeof(buf), "%s 18446744073709551615 SET %s %s",
		 rep('c', 64), rep('k', 64), rep('v', 64));
	req(buf);
	snprintf(buf, sizeof(buf), "%s 18446744073709551615 GET %s",
		 rep('c', 64), rep('k', 64));
	snprintf(want, sizeof(want), "%s 18446744073709551615 OK",
		 rep('c', 64));
	cr_assert(eq(str, (char *)req(buf), want));
	snprintf(buf, sizeof(buf), "%s 1 GET %s", rep('d', 64), rep('k', 64));
	snprintf(want, sizeof(want), "%s 1 OK %s", rep('d', 64), rep('v', 64));
	cr_assert(eq(str, (char *)req(buf), want));
}

Test(kvproto, lru_eviction)
{
	char buf[64], want[64];
	int i;

	for (i = 0; i < KV_MAX_CLIENTS; i++) {
		snprintf(buf, sizeof(buf), "cl%d 1 INCR n%d", i, i);
		snprintf(want, sizeof(want), "cl%d 1 OK 1", i);
		cr_assert(eq(str, (char *)req(buf), want));
	}
	cr_assert(eq(u32, st->nclients, KV_MAX_CLIENTS));
	/* Touch cl0 so that cl1 is now the least recently used. */
	cr_assert(eq(str, (char *)req("cl0 1 INCR n0"), "cl0 1 OK 1"));
	cr_assert(eq(str, (char *)req("new 1 PING"), "new 1 OK PONG"));
	cr_assert(eq(u32, st->nclients, KV_MAX_CLIENTS));
	cr_assert(kv__client(st, "cl1", 3) == NULL);
	cr_assert(kv__client(st, "cl0", 3) != NULL);
	cr_assert(kv__client(st, "cl2", 3) != NULL);
	/* cl0 still gets its cached reply; cl1 was forgotten, so its retry
	 * executes again (the documented cost of eviction). */
	cr_assert(eq(str, (char *)req("cl0 1 INCR n0"), "cl0 1 OK 1"));
	cr_assert(eq(str, (char *)req("cl1 1 INCR n1"), "cl1 1 OK 2"));
	/* ...which evicted cl2, the next oldest. */
	cr_assert(kv__client(st, "cl2", 3) == NULL);
	for (i = 3; i < KV_MAX_CLIENTS; i++) {
		snprintf(buf, sizeof(buf), "cl%d 1 INCR n%d", i, i);
		snprintf(want, sizeof(want), "cl%d 1 OK 1", i);
		cr_assert(eq(str, (char *)req(buf), want));
	}
}

Test(kvproto, key_table_full)
{
	char buf[64], want[64];
	int i;

	for (i = 0; i < KV_MAX_KEYS; i++) {
		snprintf(buf, sizeof(buf), "c %d SET key%d %d", i + 1, i, i);
		snprintf(want, sizeof(want), "c %d OK", i + 1);
		cr_assert(eq(str, (char *)req(buf), want));
	}
	cr_assert(eq(u32, st->nkeys, KV_MAX_KEYS));
	cr_assert(eq(str, (char *)req("c 100000 SET another v"),
		     "c 100000 ERR full"));
	cr_assert(eq(str, (char *)req("c 100001 INCR another"),
		     "c 100001 ERR full"));
	cr_assert(eq(str, (char *)req("c 100002 GET another"),
		     "c 100002 NOTFOUND"));
	/* Overwriting needs no new slot. */
	cr_assert(eq(str, (char *)req("c 100003 SET key7 x"), "c 100003 OK"));
	cr_assert(eq(str, (char *)req("c 100004 INCR key8"), "c 100004 OK 9"));
	cr_assert(eq(str, (char *)req("c 100005 DEL key9"), "c 100005 OK"));
	cr_assert(
		eq(str, (char *)req("c 100006 SET another v"), "c 100006 OK"));
	cr_assert(
		eq(str, (char *)req("c 100007 GET another"), "c 100007 OK v"));
}

Test(kvproto, key_table_delete_churn)
{
	char buf[64], want[64], key[32], val[32];
	uint32_t seq = 0;
	int i;

	/* Fill the table, delete every other key, refill with new names: a
	 * lookup must still find every live key and none of the dead ones,
	 * whatever chains the deletions cut through. */
	for (i = 0; i < KV_MAX_KEYS; i++) {
		snprintf(buf, sizeof(buf), "c %u SET k%d v%d", ++seq, i, i);
		snprintf(want, sizeof(want), "c %u OK", seq);
		cr_assert(eq(str, (char *)req(buf), want));
	}
	for (i = 0; i < KV_MAX_KEYS; i += 2) {
		snprintf(buf, sizeof(buf), "c %u DEL k%d", ++seq, i);
		snprintf(want, sizeof(want), "c %u OK", seq);
		cr_assert(eq(str, (char *)req(buf), want));
	}
	cr_assert(eq(u32, st->nkeys, KV_MAX_KEYS / 2));
	for (i = 0; i < KV_MAX_KEYS; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		snprintf(val, sizeof(val), "v%d", i);
		cr_assert(
			eq(str, (char *)value_of(key), i % 2 ? val : "<none>"));
	}
	for (i = 0; i < KV_MAX_KEYS / 2; i++) {
		snprintf(buf, sizeof(buf), "c %u SET n%d w%d", ++seq, i, i);
		snprintf(want, sizeof(want), "c %u OK", seq);
		cr_assert(eq(str, (char *)req(buf), want));
	}
	cr_assert(eq(u32, st->nkeys, KV_MAX_KEYS));
	for (i = 0; i < KV_MAX_KEYS / 2; i++) {
		snprintf(key, sizeof(key), "n%d", i);
		snprintf(val, sizeof(val), "w%d", i);
		cr_assert(eq(str, (char *)value_of(key), val));
		snprintf(key, sizeof(key), "k%d", 2 * i + 1);
		snprintf(val, sizeof(val), "v%d", 2 * i + 1);
		cr_assert(eq(str, (char *)value_of(key), val));
		snprintf(key, sizeof(key), "k%d", 2 * i);
		cr_assert(eq(str, (char *)value_of(key), "<none>"));
	}
}

/* --- write-ahead log ----------------------------------------------------- */

/*
 * A disk in memory with a volatile write cache: writes land in data (what
 * reads see), a flush makes them durable. "Crash" means: after budget more
 * sectors every write and flush fails, as if the VMM had been killed (with
 * torn set, the sector being written then gets a partial write); md_crash()
 * then decides which unflushed sectors survive.
 */
enum md_policy {
	MD_KEEP, /* every write reached the platter */
	MD_DROP, /* nothing since the last flush did */
	MD_LAST, /* only the last write call did: the cache reordered */
};

struct memdisk {
	uint8_t *data;
	uint8_t *durable;
	unsigned int *stamp; /* write call of an unflushed sector, 0: clean */
	uint64_t sectors;
	long budget; /* sectors that may still be written, < 0: unlimited */
	bool torn;
	bool fail_reads;
	unsigned int write_calls, flushes;
};

static int md_read(void *ctx, uint64_t sector, uint32_t n, void *buf)
{
	struct memdisk *d = ctx;

	cr_assert(sector + n <= d->sectors, "read past the end");
	if (d->fail_reads)
		return -EIO;
	memcpy(buf, d->data + sector * WAL_SECTOR, (size_t)n * WAL_SECTOR);
	return 0;
}

static int md_write(void *ctx, uint64_t sector, uint32_t n, const void *buf,
		    bool flush)
{
	struct memdisk *d = ctx;
	const uint8_t *src = buf;
	uint64_t i;

	cr_assert(sector + n <= d->sectors, "write past the end");
	d->write_calls++;
	for (i = 0; i < n; i++) {
		uint8_t *dst = d->data + (sector + i) * WAL_SECTOR;

		if (!d->budget) {
			if (d->torn) {
				memcpy(dst, src + i * WAL_SECTOR, 100);
				d->stamp[sector + i] = d->write_calls;
			}
			return -EIO;
		}
		if (d->budget > 0)
			d->budget--;
		memcpy(dst, src + i * WAL_SECTOR, WAL_SECTOR);
		d->stamp[sector + i] = d->write_calls;
	}
	if (flush) {
		if (!d->budget)
			return -EIO;
		for (i = 0; i < d->sectors; i++) {
			if (!d->stamp[i])
				continue;
			memcpy(d->durable + i * WAL_SECTOR,
			       d->data + i * WAL_SECTOR, WAL_SECTOR);
			d->stamp[i] = 0;
		}
		d->flushes++;
	}
	return 0;
}

/* Power comes back: what is on the disk now? */
static void md_crash(struct memdisk *d, enum md_policy policy)
{
	uint64_t i;

	for (i = 0; i < d->sectors; i++) {
		bool keep;

		if (!d->stamp[i])
			continue;
		keep = policy == MD_KEEP ||
		       (policy == MD_LAST && d->stamp[i] == d->write_calls);
		if (keep)
			memcpy(d->durable + i * WAL_SECTOR,
			       d->data + i * WAL_SECTOR, WAL_SECTOR);
		else
			memcpy(d->data + i * WAL_SECTOR,
			       d->durable + i * WAL_SECTOR, WAL_SECTOR);
		d->stamp[i] = 0;
	}
	d->budget = -1;
	d->torn = false;
}

static const struct wal_dev_ops md_ops = {
	.read = md_read,
	.write = md_write,
};

/* A kvstore instance on a memory disk: what guest/kvstore.c does, minus
 * the rings. The small scratch buffer makes the log I/O go in chunks. */
#define SRV_BUF_SECTORS 8

struct srv {
	struct memdisk d;
	struct wal w;
	struct kv_state *st;
	uint8_t buf[SRV_BUF_SECTORS * WAL_SECTOR];
	char out[KV_BATCH_MAX][KV_REPLY_MAX + 1];
	int last_ret;
};

static struct srv *srv_new(uint64_t sectors)
{
	struct srv *s = calloc(1, sizeof(*s));

	cr_assert(s != NULL);
	s->st = malloc(sizeof(*s->st));
	s->d.data = calloc(sectors, WAL_SECTOR);
	s->d.durable = calloc(sectors, WAL_SECTOR);
	s->d.stamp = calloc(sectors, sizeof(*s->d.stamp));
	cr_assert(s->st && s->d.data && s->d.durable && s->d.stamp);
	s->d.sectors = sectors;
	s->d.budget = -1;
	return s;
}

static void srv_free(struct srv *s)
{
	free(s->d.stamp);
	free(s->d.durable);
	free(s->d.data);
	free(s->st);
	free(s);
}

/* (Re)start: forget everything in memory, rebuild it from the disk. */
static int srv_boot(struct srv *s)
{
	int ret;

	memset(s->st, 0xa5, sizeof(*s->st));
	ret = wal__init(&s->w, &md_ops, &s->d, s->d.sectors, s->buf,
			SRV_BUF_SECTORS);
	if (ret)
		return ret;
	return wal__open(&s->w, s->st);
}

static void srv_boot_ok(struct srv *s)
{
	int ret = srv_boot(s);

	cr_assert(eq(int, ret, 0));
}

/* Serve n datagrams as one burst; replies land in s->out ("" if dropped). */
static int srv_batch(struct srv *s, const char *const *msgs, uint32_t n)
{
	static struct kv_result res_[KV_BATCH_MAX];
	struct kv_req in[KV_BATCH_MAX] = { { NULL, 0 } };
	uint32_t i;

	for (i = 0; i < n; i++) {
		in[i].msg = msgs[i];
		in[i].len = strlen(msgs[i]);
	}
	s->last_ret = kv__run_batch(s->st, &s->w, in, res_, n);
	for (i = 0; i < n; i++)
		memcpy(s->out[i], res_[i].reply, res_[i].len),
			s->out[i][res_[i].len] = '\0';
	return s->last_ret;
}

static char *srv_req(struct srv *s, const char *msg)
{
	srv_batch(s, &msg, 1);
	return s->out[0];
}

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * The whole state as text: keys sorted, then clients from least to most
 * recently used (replay must rebuild the LRU order too).
 */
static char *digest(const struct kv_state *s)
{
	size_t cap = 1 << 20, len = 0, n = 0, i;
	char **keys = calloc(KV_MAX_KEYS, sizeof(*keys));
	char *out = malloc(cap);
	uint32_t c;

	cr_assert(keys && out);
	for (i = 0; i < KV_MAX_KEYS; i++) {
		const struct kv_key *k = &s->key[i];

		if (!k->used)
			continue;
		keys[n] = malloc(2 * KV_TOKEN_MAX + 2);
		snprintf(keys[n++], 2 * KV_TOKEN_MAX + 2, "%.*s=%.*s", k->klen,
			 k->key, k->vlen, k->val);
	}
	cr_assert(eq(sz, n, s->nkeys));
	qsort(keys, n, sizeof(*keys), str_cmp);
	for (i = 0; i < n; i++) {
		len += (size_t)snprintf(out + len, cap - len, "%s;", keys[i]);
		free(keys[i]);
	}
	free(keys);
	len += (size_t)snprintf(out + len, cap - len, "|");
	n = 0;
	for (c = s->lru_old; c != KV_NIL; c = s->client[c].lru_next) {
		const struct kv_client *cl = &s->client[c];

		n++;
		len += (size_t)snprintf(out + len, cap - len, "%.*s:%llu:%.*s;",
					cl->id_len, cl->id,
					(unsigned long long)cl->seq,
					cl->reply_len, cl->reply);
	}
	cr_assert(eq(sz, n, s->nclients));
	return out;
}

/* A deterministic pseudo-random stream, so failures reproduce. */
static uint32_t rnd_state;

static uint32_t rnd(uint32_t n)
{
	rnd_state = rnd_state * 1103515245u + 12345u;
	return (rnd_state >> 16) % n;
}

/* One random update for client c (SET/INCR/DEL over nkeys keys). */
static void random_update(char *buf, size_t cap, uint32_t c, uint64_t seq,
			  uint32_t nkeys)
{
	uint32_t k = rnd(nkeys);

	switch (rnd(4)) {
	case 0:
		snprintf(buf, cap, "c%u %llu SET k%u v%u", c,
			 (unsigned long long)seq, k, rnd(1000));
		break;
	case 1:
	case 2:
		snprintf(buf, cap, "c%u %llu INCR k%u", c,
			 (unsigned long long)seq, k);
		break;
	default:
		snprintf(buf, cap, "c%u %llu DEL k%u", c,
			 (unsigned long long)seq, k);
		break;
	}
}

static int dec(const uint8_t *sec, uint64_t gen, uint64_t lsn, uint32_t prev)
{
	struct kv_rec rec;
	uint32_t crc;

	return wal__decode(sec, gen, lsn, prev, &rec, &crc);
}

Test(kvwal, record_codec)
{
	uint8_t sec[WAL_SECTOR];
	struct kv_rec in = { 0 }, out;
	uint32_t crc, crc2;

	in.op = KV_OP_INCR;
	in.effects = KV_EFFECT_KEY_SET | KV_EFFECT_CLIENT;
	in.reply_kind = KV_REPLY_VALUE;
	in.seq = UINT64_MAX;
	in.cid_len = KV_TOKEN_MAX;
	memset(in.cid, 'c', KV_TOKEN_MAX);
	in.key_len = KV_TOKEN_MAX;
	memset(in.key, 'k', KV_TOKEN_MAX);
	in.val_len = 20;
	memcpy(in.val, "-9223372036854775808", 20);
	in.reply_len = 23;
	memcpy(in.reply, "OK -9223372036854775808", 23);

	crc = wal__encode(&in, 5, 9, 0x1234, sec);
	memset(&out, 0, sizeof(out));
	cr_assert(eq(int, wal__decode(sec, 5, 9, 0x1234, &out, &crc2), 0));
	cr_assert(eq(u32, crc, crc2));
	cr_assert(eq(u16, out.op, in.op));
	cr_assert(eq(u8, out.effects, in.effects));
	cr_assert(eq(u8, out.reply_kind, in.reply_kind));
	cr_assert(eq(u64, out.seq, in.seq));
	cr_assert(eq(u8, out.cid_len, in.cid_len));
	cr_assert(eq(u8, out.key_len, in.key_len));
	cr_assert(eq(u8, out.val_len, in.val_len));
	cr_assert(eq(u8, out.reply_len, in.reply_len));
	cr_assert(eq(int, memcmp(out.cid, in.cid, in.cid_len), 0));
	cr_assert(eq(int, memcmp(out.key, in.key, in.key_len), 0));
	cr_assert(eq(int, memcmp(out.val, in.val, in.val_len), 0));
	cr_assert(eq(int, memcmp(out.reply, in.reply, in.reply_len), 0));

	/* Wrong generation, position or predecessor: not the record we
	 * expect there. */
	cr_assert(eq(int, dec(sec, 6, 9, 0x1234), -EINVAL));
	cr_assert(eq(int, dec(sec, 5, 10, 0x1234), -EINVAL));
	cr_assert(eq(int, dec(sec, 5, 9, 0x1235), -EINVAL));
	/* Any flipped byte, even in the padding, fails the CRC. */
	sec[48 + 3] ^= 1;
	cr_assert(eq(int, dec(sec, 5, 9, 0x1234), -EINVAL));
	sec[48 + 3] ^= 1;
	sec[500] ^= 0x80;
	cr_assert(eq(int, dec(sec, 5, 9, 0x1234), -EINVAL));
	sec[500] ^= 0x80;
	cr_assert(eq(int, dec(sec, 5, 9, 0x1234), 0));
	memset(sec, 0, sizeof(sec));
	cr_assert(eq(int, dec(sec, 5, 9, 0x1234), -EINVAL));
}

Test(kvwal, crc32_vector)
{
	cr_assert(eq(u32, rt__crc32(0, "123456789", 9), 0xcbf43926));
	cr_assert(eq(u32, rt__crc32(rt__crc32(0, "1234", 4), "56789", 5),
		     0xcbf43926));
}

Test(kvwal, format_fresh_disk)
{
	struct srv *s = srv_new(128); /* 64 KiB, the smallest supported */

	srv_boot_ok(s);
	cr_assert(eq(u64, s->w.region_len, 63));
	cr_assert(eq(u64, s->w.replayed, 0));
	cr_assert(eq(u32, s->st->max_keys, 63));
	cr_assert(eq(u32, s->st->max_clients, 63));
	cr_assert(eq(str, srv_req(s, "c 1 SET k v"), "c 1 OK"));
	srv_boot_ok(s);
	cr_assert(eq(u64, s->w.replayed, 1));
	cr_assert(eq(str, srv_req(s, "c 2 GET k"), "c 2 OK v"));
	srv_free(s);
}

Test(kvwal, region_bounds)
{
	struct srv *s = srv_new(1 << 18); /* 128 MiB */

	srv_boot_ok(s);
	cr_assert(eq(u64, s->w.region_len, WAL_REGION_MAX));
	cr_assert(eq(u32, s->st->max_keys, KV_MAX_KEYS));
	cr_assert(eq(u32, s->st->max_clients, KV_MAX_CLIENTS));
	srv_free(s);

	s = srv_new(3);
	cr_assert(eq(int, srv_boot(s), -ENOSPC));
	srv_free(s);
	s = srv_new(4);
	srv_boot_ok(s);
	cr_assert(eq(u64, s->w.region_len, 1));
	cr_assert(eq(str, srv_req(s, "c 1 SET k v"), "c 1 OK"));
	cr_assert(eq(str, srv_req(s, "c 2 SET k w"), "c 2 OK"));
	cr_assert(eq(str, srv_req(s, "c 3 SET j w"), "c 3 ERR full"));
	srv_boot_ok(s);
	cr_assert(eq(str, srv_req(s, "c 3 GET k"), "c 3 ERR full"));
	cr_assert(eq(str, srv_req(s, "c 4 GET k"), "c 4 OK w"));
	srv_free(s);
}

Test(kvwal, foreign_and_torn_superblock)
{
	struct srv *s = srv_new(128);

	memset(s->d.data, 0x5a, 128 * WAL_SECTOR);
	cr_assert(eq(int, srv_boot(s), -EINVAL));
	/* Our magic but no valid copy: a first format cut short. */
	memset(s->d.data, 0, 128 * WAL_SECTOR);
	memcpy(s->d.data, "KVWALSB1garbage", 15);
	srv_boot_ok(s);
	cr_assert(eq(str, srv_req(s, "c 1 SET k v"), "c 1 OK"));
	/* Either superblock copy alone is enough. */
	memset(s->d.data, 0xee, WAL_SECTOR);
	srv_boot_ok(s);
	cr_assert(eq(str, srv_req(s, "c 2 GET k"), "c 2 OK v"));
	memset(s->d.data + WAL_SECTOR, 0xee, WAL_SECTOR);
	srv_boot_ok(s);
	cr_assert(eq(str, srv_req(s, "c 3 GET k"), "c 3 OK v"));
	srv_free(s);
}

Test(kvwal, replay_rebuilds_keys_and_clients)
{
	static const char *const burst[] = {
		"a 3 SET x 10", "b 1 INCR x",	"a 3 SET x 99",
		"junk",		"b 2 DEL gone", "c 1 SET y 9223372036854775807",
	};
	struct srv *s = srv_new(4096);
	char *before, *after;

	srv_boot_ok(s);
	cr_assert(eq(str, srv_req(s, "a 1 SET k hello"), "a 1 OK"));
	cr_assert(eq(str, srv_req(s, "a 2 INCR n"), "a 2 OK 1"));
	/* Three updates: the repeat, the drop and the NOTFOUND change
	 * nothing. */
	cr_assert(eq(int, srv_batch(s, burst, 6), 3));
	cr_assert(eq(str, s->out[0], "a 3 OK"));
	cr_assert(eq(str, s->out[1], "b 1 OK 11"));
	cr_assert(eq(str, s->out[2], "a 3 OK"));
	cr_assert(eq(str, s->out[3], ""));
	cr_assert(eq(str, s->out[4], "b 2 NOTFOUND"));
	cr_assert(eq(str, s->out[5], "c 1 OK"));
	cr_assert(eq(str, srv_req(s, "c 2 INCR y"), "c 2 ERR overflow"));
	cr_assert(eq(str, srv_req(s, "d 1 SET s abc"), "d 1 OK"));
	cr_assert(eq(str, srv_req(s, "d 2 INCR s"), "d 2 ERR not-integer"));
	cr_assert(eq(str, srv_req(s, "e 1 DEL k"), "e 1 OK"));
	before = digest(s->st);

	srv_boot_ok(s);
	/* Every executed SET/INCR/DEL, repeats excluded. */
	cr_assert(eq(u64, s->w.replayed, 10));
	after = digest(s->st);
	cr_assert(eq(str, after, before));
	cr_assert(eq(str, after,
		     "n=1;s=abc;x=11;y=9223372036854775807;|"
		     "a:3:OK;b:2:NOTFOUND;c:2:ERR overflow;"
		     "d:2:ERR not-integer;e:1:OK;"));
	free(before);
	free(after);

	/* Retries after the restart get the cached replies, not a second
	 * execution. */
	cr_assert(eq(str, srv_req(s, "b 2 DEL gone"), "b 2 NOTFOUND"));
	cr_assert(eq(str, srv_req(s, "a 3 INCR x"), "a 3 OK"));
	cr_assert(eq(str, srv_req(s, "c 2 INCR y"), "c 2 ERR overflow"));
	cr_assert(eq(str, srv_req(s, "b 1 INCR x"), "b 1 ERR stale"));
	cr_assert(eq(str, srv_req(s, "a 4 GET x"), "a 4 OK 11"));
	cr_assert(eq(str, srv_req(s, "e 1 DEL k"), "e 1 OK"));
	cr_assert(eq(str, srv_req(s, "e 2 GET k"), "e 2 NOTFOUND"));
	srv_free(s);
}

Test(kvwal, exactly_once_across_restart)
{
	struct srv *s = srv_new(256);

	srv_boot_ok(s);
	cr_assert(eq(str, srv_req(s, "c 7 INCR n"), "c 7 OK 1"));
	srv_boot_ok(s);
	cr_assert(eq(str, srv_req(s, "c 7 INCR n"), "c 7 OK 1"));
	srv_boot_ok(s);
	cr_assert(eq(str, srv_req(s, "c 7 INCR n"), "c 7 OK 1"));
	cr_assert(eq(str, srv_req(s, "c 8 GET n"), "c 8 OK 1"));
	srv_free(s);
}

Test(kvwal, one_write_one_flush_per_batch)
{
	static const char *const burst[] = {
		"a 1 SET k 1", "b 1 SET k 2", "c 1 INCR k",
		"d 1 GET k",   "e 1 DEL k",
	};
	static const char *const reads[] = { "a 2 GET k", "b 2 PING" };
	struct srv *s = srv_new(4096);
	unsigned int w0, f0;

	srv_boot_ok(s);
	w0 = s->d.write_calls;
	f0 = s->d.flushes;
	srv_batch(s, burst, 5);
	cr_assert(eq(u32, s->d.write_calls - w0, 1));
	cr_assert(eq(u32, s->d.flushes - f0, 1));
	cr_assert(eq(str, s->out[3], "d 1 OK 3"));
	cr_assert(eq(u64, s->w.pos, 4));
	/* Nothing to log, nothing written. */
	srv_batch(s, reads, 2);
	cr_assert(eq(u32, s->d.write_calls - w0, 1));
	cr_assert(eq(str, s->out[0], "a 2 NOTFOUND"));
	srv_free(s);
}

Test(kvwal, torn_record_stops_replay)
{
	struct srv *s = srv_new(4096);
	char buf[64], want[64];
	uint64_t r0;
	int i;

	srv_boot_ok(s);
	for (i = 0; i < 10; i++) {
		snprintf(buf, sizeof(buf), "c %d SET k%d v%d", i + 1, i, i);
		cr_assert(eq(str, srv_req(s, buf),
			     (snprintf(want, sizeof(want), "c %d OK", i + 1),
			      want)));
	}
	r0 = wal__region_start(&s->w, s->w.active);
	/* Tear record 6 (one byte is enough). */
	s->d.data[(r0 + 6) * WAL_SECTOR + 200] ^= 0x40;
	srv_boot_ok(s);
	cr_assert(eq(u64, s->w.replayed, 6));
	cr_assert(eq(u32, s->st->nkeys, 6));
	cr_assert(eq(str, srv_req(s, "r 1 GET k5"), "r 1 OK v5"));
	cr_assert(eq(str, srv_req(s, "r 2 GET k6"), "r 2 NOTFOUND"));
	/* Client c's history ends at the last replayed record too. */
	cr_assert(eq(str, srv_req(s, "c 6 GET k5"), "c 6 OK"));
	cr_assert(eq(str, srv_req(s, "c 7 GET k6"), "c 7 NOTFOUND"));
	/* The log goes on where it stopped, over the torn record. The intact
	 * records 7..9 behind it carry the right generation and LSNs but
	 * chain to the old record 6: they must never come back. */
	cr_assert(eq(str, srv_req(s, "d 1 SET z 1"), "d 1 OK"));
	srv_boot_ok(s);
	cr_assert(eq(u64, s->w.replayed, 7));
	cr_assert(eq(str, srv_req(s, "d 2 GET k7"), "d 2 NOTFOUND"));
	cr_assert(eq(str, srv_req(s, "d 3 GET z"), "d 3 OK 1"));
	/* A record from another generation ends the log the same way. */
	memset(s->d.data + (r0 + 8) * WAL_SECTOR, 0, WAL_SECTOR);
	srv_boot_ok(s);
	cr_assert(eq(u64, s->w.replayed, 7));
	srv_free(s);
}

Test(kvwal, compaction_round_trip)
{
	struct srv *s = srv_new(128);
	uint64_t seq[8] = { 0 };
	char msgs[7][64];
	const char *p[7];
	char *before, *after;
	uint64_t compactions = 0;
	int i, j;

	rnd_state = 1;
	srv_boot_ok(s);
	for (i = 0; i < 600; i++) {
		uint32_t n = 1 + rnd(7);

		for (j = 0; j < (int)n; j++) {
			uint32_t c = rnd(8);

			random_update(msgs[j], sizeof(msgs[j]), c, ++seq[c],
				      40);
			p[j] = msgs[j];
		}
		cr_assert(ge(int, srv_batch(s, p, n), 0));
		if (i % 97 == 0) {
			before = digest(s->st);
			compactions += s->w.compactions;
			srv_boot_ok(s);
			after = digest(s->st);
			cr_assert(eq(str, after, before));
			free(before);
			free(after);
		}
	}
	compactions += s->w.compactions;
	cr_assert(gt(u64, compactions, 20));
	before = digest(s->st);
	srv_boot_ok(s);
	after = digest(s->st);
	cr_assert(eq(str, after, before));
	free(before);
	free(after);
	srv_free(s);
}

/*
 * Crash a compaction after every possible number of sector writes, torn or
 * not: the restarted service holds exactly the state before the batch or
 * after it (after it if its replies went out), and keeps working without
 * ever resurrecting anything from the cut-short attempt.
 */
Test(kvwal, compaction_crash_points)
{
	static const char *const burst[] = {
		"z 1 SET new1 a",
		"z 2 SET new2 b",
		"y 1 DEL k3",
	};
	int budget, torn, policy;

	for (policy = MD_KEEP; policy <= MD_LAST; policy++)
		for (torn = 0; torn < 2; torn++) {
			for (budget = 0; budget < 40; budget++) {
				struct srv *s = srv_new(128);
				char msg[64], *before, *after, *got;
				uint64_t seq = 0;
				bool acked;
				int i;

				srv_boot_ok(s);
				for (i = 0; i < 30; i++) {
					snprintf(msg, sizeof(msg),
						 "c %llu SET k%d %d",
						 (unsigned long long)++seq, i,
						 i);
					srv_req(s, msg);
				}
				while (s->w.pos < s->w.region_len) {
					snprintf(msg, sizeof(msg),
						 "c %llu INCR k1",
						 (unsigned long long)++seq);
					srv_req(s, msg);
				}
				before = digest(s->st);

				s->d.budget = budget;
				s->d.torn = torn;
				srv_batch(s, burst, 3);
				acked = s->last_ret >= 0;
				if (acked) {
					cr_assert(eq(str, s->out[0], "z 1 OK"));
					after = digest(s->st);
				} else {
					cr_assert(eq(str, s->out[0],
						     "z 1 ERR io"));
					cr_assert(eq(str, s->out[2],
						     "y 1 ERR io"));
					after = NULL;
				}

				md_crash(&s->d, policy);
				srv_boot_ok(s);
				got = digest(s->st);
				if (acked)
					cr_assert(eq(str, got, after),
						  "policy %d budget %d torn %d",
						  policy, budget, torn);
				else
					cr_assert(
						eq(int,
						   !strcmp(got, before) ||
							   strstr(got,
								  "new1=a"),
						   1),
						"policy %d budget %d torn %d: %s",
						policy, budget, torn, got);
				free(got);
				free(before);
				free(after);

				/* Go on past another compaction; restart; compare. */
				for (i = 0; i < 80; i++) {
					snprintf(msg, sizeof(msg),
						 "c %llu %s k%d",
						 (unsigned long long)++seq,
						 i % 3 ? "INCR" : "DEL",
						 i % 35);
					srv_req(s, msg);
					cr_assert(ge(int, s->last_ret, 0));
				}
				before = digest(s->st);
				srv_boot_ok(s);
				after = digest(s->st);
				cr_assert(eq(str, after, before),
					  "policy %d budget %d torn %d", policy,
					  budget, torn);
				free(before);
				free(after);
				srv_free(s);
			}
		}
}

/*
 * Crash an append of a 5-request burst at every point, under every cache
 * policy: afterwards the state is the one before the burst plus some prefix
 * of it (its replies were "ERR io": outcome unknown, retry the same seq),
 * and the whole burst if it was acknowledged.
 */
Test(kvwal, append_crash_points)
{
	static const char *const setup[] = {
		"a 1 SET x 1",
		"b 1 SET y 2",
		"a 2 INCR x",
	};
	static const char *const burst[] = {
		"a 3 INCR x", "b 2 DEL y",  "c 1 SET z 3",
		"a 4 PING",   "c 2 INCR x",
	};
	char *prefix[6];
	int policy, budget, k;

	for (k = 0; k <= 5; k++) {
		struct srv *r = srv_new(4096);

		srv_boot_ok(r);
		srv_batch(r, setup, 3);
		if (k)
			srv_batch(r, burst, (uint32_t)k);
		/* As replay shows it: the PING is not logged, so a's entry
		 * after a restart is the one of its last update. */
		srv_boot_ok(r);
		prefix[k] = digest(r->st);
		srv_free(r);
	}
	for (policy = MD_KEEP; policy <= MD_LAST; policy++) {
		for (budget = 0; budget < 8; budget++) {
			struct srv *s = srv_new(4096);
			char *got;
			bool ok = false;

			srv_boot_ok(s);
			srv_batch(s, setup, 3);
			s->d.budget = budget;
			s->d.torn = budget & 1;
			srv_batch(s, burst, 5);
			md_crash(&s->d, policy);
			srv_boot_ok(s);
			got = digest(s->st);
			if (s->last_ret >= 0) {
				cr_assert(eq(str, got, prefix[5]));
				ok = true;
			}
			for (k = 0; k <= 5 && !ok; k++)
				ok = !strcmp(got, prefix[k]);
			cr_assert(ok, "policy %d budget %d: %s", policy, budget,
				  got);
			free(got);
			srv_free(s);
		}
	}
	for (k = 0; k <= 5; k++)
		free(prefix[k]);
}

Test(kvwal, failed_compaction_leaves_no_phantoms)
{
	const char *dels[12];
	char msgs[12][32], msg[64];
	struct srv *s = srv_new(128);
	uint64_t seq = 0, snap;
	char *before, *after;
	int i;

	srv_boot_ok(s);
	for (i = 0; i < 40; i++) {
		snprintf(msg, sizeof(msg), "a %llu SET k%d %d",
			 (unsigned long long)++seq, i, i);
		srv_req(s, msg);
	}
	while (s->w.pos < s->w.region_len) {
		snprintf(msg, sizeof(msg), "a %llu INCR k0",
			 (unsigned long long)++seq);
		srv_req(s, msg);
	}
	/* The whole snapshot (41 keys, with "phantom") reaches the disk,
	 * the superblock switch does not. */
	snap = s->st->nkeys + 1;
	s->d.budget = (long)snap;
	cr_assert(eq(str, srv_req(s, "p 1 SET phantom boo"), "p 1 ERR io"));
	md_crash(&s->d, MD_KEEP);
	srv_boot_ok(s);
	cr_assert(eq(str, srv_req(s, "q 1 GET phantom"), "q 1 NOTFOUND"));

	/* A smaller snapshot into the same region: the tail of the failed
	 * one stays on disk behind it. */
	for (i = 0; i < 12; i++) {
		snprintf(msgs[i], sizeof(msgs[i]), "a %llu DEL k%d",
			 (unsigned long long)++seq, i + 1);
		dels[i] = msgs[i];
	}
	cr_assert(ge(int, srv_batch(s, dels, 12), 0));
	cr_assert(lt(u64, s->w.pos, snap));
	before = digest(s->st);
	srv_boot_ok(s);
	after = digest(s->st);
	cr_assert(eq(str, after, before));
	cr_assert(eq(str, srv_req(s, "q 2 GET phantom"), "q 2 NOTFOUND"));
	free(before);
	free(after);
	srv_free(s);
}

/*
 * The nasty case for stale snapshot tails: the retried compaction writes the
 * same first records, byte for byte, as the attempt the crash cut short, so
 * the old tail chains onto it perfectly. Only a fresh generation keeps the
 * tail (k39 and the phantom key) from being replayed.
 */
Test(kvwal, retried_compaction_with_identical_prefix)
{
	struct srv *s = srv_new(128);
	char msg[64], *before, *after;
	uint64_t seq = 0;
	int i;

	srv_boot_ok(s);
	for (i = 0; i < 40; i++) {
		snprintf(msg, sizeof(msg), "a %llu SET k%d %d",
			 (unsigned long long)++seq, i, i);
		srv_req(s, msg);
	}
	while (s->w.pos < s->w.region_len) {
		snprintf(msg, sizeof(msg), "a %llu INCR k0",
			 (unsigned long long)++seq);
		srv_req(s, msg);
	}
	/* Snapshot k0..k39, phantom (41 records) durable; no switch. */
	s->d.budget = 41;
	snprintf(msg, sizeof(msg), "a %llu SET phantom boo",
		 (unsigned long long)++seq);
	srv_req(s, msg);
	cr_assert(eq(int, s->last_ret, -EIO));
	md_crash(&s->d, MD_KEEP);
	srv_boot_ok(s);

	/* Same seq, same "OK": client a's entry, which rides in record 0,
	 * comes out identical, and so do the records of k0..k38. */
	snprintf(msg, sizeof(msg), "a %llu DEL k39", (unsigned long long)seq);
	srv_req(s, msg);
	cr_assert(eq(int, s->last_ret, 1));
	cr_assert(eq(u64, s->w.pos, 39));
	before = digest(s->st);
	srv_boot_ok(s);
	after = digest(s->st);
	cr_assert(eq(str, after, before));
	cr_assert(eq(str, srv_req(s, "q 1 GET phantom"), "q 1 NOTFOUND"));
	cr_assert(eq(str, srv_req(s, "q 2 GET k39"), "q 2 NOTFOUND"));
	free(before);
	free(after);
	srv_free(s);
}

Test(kvwal, snapshot_limit_is_err_full)
{
	struct srv *s = srv_new(128); /* regions of 63 */
	char msg[64], want[64], *before, *after;
	int i;

	srv_boot_ok(s);
	for (i = 0; i < 63; i++) {
		snprintf(msg, sizeof(msg), "c %d SET k%d %d", i + 1, i, i);
		snprintf(want, sizeof(want), "c %d OK", i + 1);
		cr_assert(eq(str, srv_req(s, msg), want));
	}
	cr_assert(eq(str, srv_req(s, "c 64 SET k63 x"), "c 64 ERR full"));
	cr_assert(eq(str, srv_req(s, "c 65 INCR k63"), "c 65 ERR full"));
	/* Full table, every batch compacts the whole state: still correct. */
	for (i = 0; i < 200; i++) {
		snprintf(msg, sizeof(msg), "c %d INCR k%d", 66 + i, i % 63);
		srv_req(s, msg);
		cr_assert(ge(int, s->last_ret, 0));
	}
	cr_assert(gt(u64, s->w.compactions, 100));
	/* Clients are capped at the region size too, by LRU eviction. */
	for (i = 0; i < 70; i++) {
		snprintf(msg, sizeof(msg), "n%d 1 PING", i);
		srv_req(s, msg);
	}
	cr_assert(eq(u32, s->st->nclients, 63));
	cr_assert(eq(str, srv_req(s, "n99 1 INCR k0"), "n99 1 OK 5"));
	before = digest(s->st);
	srv_boot_ok(s);
	after = digest(s->st);
	cr_assert(eq(str, after, before));
	free(before);
	free(after);
	srv_free(s);
}

Test(kvwal, io_error_rolls_back)
{
	static const char *const burst[] = {
		"c 2 SET a 2",
		"c 3 GET a",
		"d 1 PING",
		"",
	};
	struct srv *s = srv_new(4096);

	srv_boot_ok(s);
	cr_assert(eq(str, srv_req(s, "c 1 SET a 1"), "c 1 OK"));
	s->d.budget = 0;
	cr_assert(eq(int, srv_batch(s, burst, 4), -EIO));
	cr_assert(eq(str, s->out[0], "c 2 ERR io"));
	cr_assert(eq(str, s->out[1], "c 3 ERR io"));
	cr_assert(eq(str, s->out[2], "d 1 ERR io"));
	cr_assert(eq(str, s->out[3], ""));
	cr_assert(s->w.broken);
	/* Still failing: every request of the next burst fails too. */
	cr_assert(eq(str, srv_req(s, "d 2 PING"), "d 2 ERR io"));
	/* The disk recovers: the log is reopened, "ERR io" was not cached
	 * and the retry executes against the durable state. */
	s->d.budget = -1;
	cr_assert(eq(str, srv_req(s, "c 3 GET a"), "c 3 OK 1"));
	cr_assert(not(s->w.broken));
	cr_assert(eq(str, srv_req(s, "c 4 SET a 2"), "c 4 OK"));
	cr_assert(eq(str, srv_req(s, "c 4 SET a 3"), "c 4 OK"));
	srv_boot_ok(s);
	cr_assert(eq(str, srv_req(s, "c 5 GET a"), "c 5 OK 2"));

	s->d.fail_reads = true;
	cr_assert(eq(int, srv_boot(s), -EIO));
	srv_free(s);
}
