/* SPDX-License-Identifier: MIT */
/*
 * Client side of the kvstore's datagram protocol (docs/kvstore.md), with
 * retries that rely on its exactly-once table: a request is re-sent with the
 * same seq until its reply arrives. Shared by kemari-kv and the tests.
 */
#ifndef KEMARI_KVCLIENT_H
#define KEMARI_KVCLIENT_H

#include <stddef.h>
#include <stdint.h>

struct kv_client {
	int fd;
	uint32_t ip;
	uint16_t port;
	char id[65];
	uint64_t seq;	  /* last seq used */
	int resend_ms;	  /* re-send after this much silence */
	int timeout_ms;	  /* give up after this long */
	uint64_t resends; /* statistics */
};

int kv_client__open(struct kv_client *c, const char *server, const char *id);
void kv_client__close(struct kv_client *c);
/*
 * Send "<id> <seq> <cmd>" with the next seq and wait for its reply; reply
 * gets the text after "<id> <seq> " (e.g. "OK 5"). 0, -ETIMEDOUT, or -errno.
 */
int kv_client__call(struct kv_client *c, const char *cmd, char *reply,
		    size_t cap);
/* The same with an explicit seq (seq is not advanced). */
int kv_client__call_seq(struct kv_client *c, uint64_t seq, const char *cmd,
			char *reply, size_t cap);
/* Send raw bytes and wait for any datagram (tests of malformed input). */
int kv_client__raw(struct kv_client *c, const void *buf, size_t len,
		   char *reply, size_t cap, int wait_ms);

/* The exactly-once INCR consistency check (demo and tests). */
struct kv_load_cfg {
	const char *server;
	unsigned int clients;
	unsigned int keys;
	unsigned int ops_per_client; /* 0: run until stop_flag */
	const volatile int *stop_flag;
	const char *prefix; /* key and client-id prefix, unique per run */
	int timeout_ms;	    /* per request, including failover */
};

struct kv_load_result {
	uint64_t acked;	     /* INCRs acknowledged */
	uint64_t lost;	     /* acked but missing from the final values */
	uint64_t duplicated; /* a value returned twice */
	uint64_t phantom;    /* applied but never acknowledged (double apply) */
	uint64_t final_sum;  /* sum of the keys' final values */
	uint64_t failed;     /* requests that never got a reply */
	uint64_t resends;
	uint64_t lat_p50_us, lat_p99_us, lat_max_us;
	uint64_t max_gap_us; /* longest wait for one reply (failover) */
};

int kv_load__run(const struct kv_load_cfg *cfg, struct kv_load_result *res);

#endif
