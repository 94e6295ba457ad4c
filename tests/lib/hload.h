/* SPDX-License-Identifier: MIT */
/*
 * A kvstore load on a thread of the test (kv_load__run: exactly-once INCRs
 * by several clients) and the exact check of what it saw: every
 * acknowledged update present once, nothing lost, nothing applied twice.
 */
#ifndef KEMARI_TEST_HLOAD_H
#define KEMARI_TEST_HLOAD_H

#include <pthread.h>
#include <stdbool.h>

#include "kvclient.h"

struct h_load {
	struct kv_load_cfg cfg;
	struct kv_load_result res;
	volatile int stop;
	int err;
	pthread_t tid;
	bool joined;
	char prefix[32];
	char server[64];
};

/* Start clients x INCR on keys at server, each request waiting up to
 * timeout_ms for its reply (a failover included). */
void h_load_start(struct h_load *l, const char *server, unsigned int clients,
		  unsigned int keys, int timeout_ms);
/* Ask the clients to stop and wait for the final check. */
void h_load_stop(struct h_load *l);
/* Stop, then assert the exact outcome; on failure the logs given (up to
 * two, NULL for none) are printed first. */
void h_load_check(struct h_load *l, const char *log1, const char *log2);

#endif
