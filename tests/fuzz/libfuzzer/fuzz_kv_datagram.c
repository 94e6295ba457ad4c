// SPDX-License-Identifier: MIT
/*
 * The kvstore's datagram handler (guest/kv/kvcore.c, kv__handle), as the
 * guest and kemari-kvstore serve it. Input: datagrams, each a u8 length
 * then that many bytes, into one state with small limits (so eviction and
 * a full key table are reached).
 *
 * Beyond the sanitizers: every reply is well formed (NUL-terminated at
 * its length, within KV_REPLY_MAX, its prefix inside it), and the log
 * records the replies wait for, replayed into a second state, rebuild
 * every key of the first: what a crash and restart recovers.
 */
#include <sanitizer/asan_interface.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "kemari/buf.h"
#include "kemari/kemari.h"
#include "kv/kvcore.h"

#define FUZZ_KV_KEYS 8
#define FUZZ_KV_CLIENTS 4
#define FUZZ_KV_TOUCHED 64    /* see reset() */
#define FUZZ_KV_DGRAM_MAX 256 /* a u8 length; a multiple of 8 */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct kv_state *st, *replay;
static struct kv_result *res;
static char *msg; /* the datagram: its own bytes, the rest poisoned */

/*
 * Nothing on the path fuzzed allocates, so ASan's quarantine holds only
 * libFuzzer's copies of past inputs; recycling them through the default
 * 256 MiB (page faults, fills) took 15 to 25% of the time.
 */
const char *__asan_default_options(void)
{
	return "quarantine_size_mb=16";
}

/*
 * Only the first FUZZ_KV_TOUCHED entries are ever used (see reset). The
 * clients are not compared: replies without effects (GET, errors) are
 * remembered but not logged, so the two tables evict different clients.
 */
static void check_replay(void)
{
	for (unsigned int i = 0; i < FUZZ_KV_TOUCHED; i++) {
		const struct kv_key *k = &st->key[i];
		const char *v;
		size_t vlen;

		if (k->used) {
			v = kv__lookup(replay, k->key, k->klen, &vlen);
			if (!v || vlen != k->vlen || memcmp(v, k->val, vlen))
				abort(); /* a key the log does not rebuild */
		}
	}
	if (st->nkeys != replay->nkeys)
		abort(); /* a key the log keeps and the state does not */
}

/*
 * kv__init writes all 2.5 MiB of a state, which would bound the harness at
 * a thousand inputs a second. With these limits only the first entries of
 * the pools are ever taken (allocation pops the free list, whose head is
 * always an entry freed or never used below the limit), so restoring the
 * tables and those entries from a state fresh from kv__init is the same.
 */
static struct kv_state *fresh;

static void reset(struct kv_state *s)
{
	if (s->key_free >= FUZZ_KV_TOUCHED || s->client_free >= FUZZ_KV_TOUCHED)
		abort(); /* the premise above no longer holds */
	memcpy(s, fresh, offsetof(struct kv_state, key[FUZZ_KV_TOUCHED]));
	memcpy(s->client, fresh->client,
	       FUZZ_KV_TOUCHED * sizeof(s->client[0]));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!st) {
		st = malloc(sizeof(*st));
		replay = malloc(sizeof(*replay));
		fresh = malloc(sizeof(*fresh));
		res = malloc(sizeof(*res));
		msg = malloc(FUZZ_KV_DGRAM_MAX);
		if (!st || !replay || !fresh || !res || !msg)
			abort();
		ASAN_POISON_MEMORY_REGION(msg, FUZZ_KV_DGRAM_MAX);
		kv__init(fresh, FUZZ_KV_KEYS, FUZZ_KV_CLIENTS);
		memcpy(st, fresh, sizeof(*st));
		memcpy(replay, fresh, sizeof(*replay));
	}
	reset(st);
	reset(replay);
	while (size > 0) {
		size_t len =
			(size_t)data[0] < size - 1 ? (size_t)data[0] : size - 1;
		int dropped;

		/*
		 * Exactly its bytes addressable: reading past the datagram
		 * (or into it when empty) is caught, as in an allocation of
		 * its own, without the allocator's cost per datagram.
		 */
		ASAN_UNPOISON_MEMORY_REGION(msg, len);
		memcpy(msg, data + 1, len);
		data += 1 + len;
		size -= 1 + len;
		memset(res, 0xa5, sizeof(*res));
		dropped = kv__handle(st, msg, len, res);
		ASAN_POISON_MEMORY_REGION(msg, FUZZ_KV_DGRAM_MAX);
		if (dropped)
			continue; /* no reply */
		if (res->len > KV_REPLY_MAX || res->prefix_len > res->len ||
		    strlen(res->reply) != res->len)
			abort();
		if (res->logged && kv__apply(replay, &res->rec))
			abort(); /* a record its own replay refuses */
	}
	check_replay();
	return 0;
}

static void seed_kv(const char *name, const char *const *dgrams, unsigned int n)
{
	struct kemari_buf b = { 0 };

	for (unsigned int i = 0; i < n; i++) {
		uint8_t len = (uint8_t)strlen(dgrams[i]);

		kemari_buf__append(&b, &len, 1);
		kemari_buf__append(&b, dgrams[i], len);
	}
	fuzz__seed(name, b.data, b.len);
	kemari_buf__fini(&b);
}

void fuzz_seeds(void)
{
	static const char *const ops[] = {
		"c1 1 SET k v", "c1 2 GET k", "c1 3 INCR n", "c1 3 INCR n",
		"c1 2 GET k",	"c2 1 DEL k", "c2 2 PING",   "c2 3 GET k",
	};
	static const char *const full[] = {
		"a 1 SET k1 1", "b 1 SET k2 2", "c 1 SET k3 3", "d 1 SET k4 4",
		"e 1 SET k5 5", "a 2 SET k6 6", "b 2 SET k7 7", "c 2 SET k8 8",
		"d 2 SET k9 9", "e 2 INCR k1",	"a 1 GET k1",	"f 1 DEL k2",
	};
	static const char *const bad[] = {
		"",
		"c1",
		"c1 x SET k v",
		"c1 1 SET",
		"c1 1 FOO k",
		"c1 18446744073709551615 INCR n",
		"c1 2 SET k \x01",
	};

	seed_kv("ops", ops, KEMARI_ARRAY_SIZE(ops));
	seed_kv("full", full, KEMARI_ARRAY_SIZE(full));
	seed_kv("bad", bad, KEMARI_ARRAY_SIZE(bad));
}
