// SPDX-License-Identifier: MIT
/* A kvstore load on a test thread and its exact check (hload.h). */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "hload.h"

static void *h_load__main(void *arg)
{
	struct h_load *l = arg;

	l->err = kv_load__run(&l->cfg, &l->res);
	return NULL;
}

void h_load_start(struct h_load *l, const char *server, unsigned int clients,
		  unsigned int keys, int timeout_ms)
{
	memset(l, 0, sizeof(*l));
	snprintf(l->prefix, sizeof(l->prefix), "r%x", (unsigned int)getpid());
	snprintf(l->server, sizeof(l->server), "%s", server);
	l->cfg.server = l->server;
	l->cfg.clients = clients;
	l->cfg.keys = keys;
	l->cfg.stop_flag = &l->stop;
	l->cfg.prefix = l->prefix;
	l->cfg.timeout_ms = timeout_ms;
	cr_assert(eq(int, pthread_create(&l->tid, NULL, h_load__main, l), 0));
}

void h_load_stop(struct h_load *l)
{
	l->stop = 1;
	if (!l->joined)
		pthread_join(l->tid, NULL);
	l->joined = true;
}

void h_load_check(struct h_load *l, const char *log1, const char *log2)
{
	h_load_stop(l);
	if (l->err) {
		if (log1)
			h_dump(log1);
		if (log2)
			h_dump(log2);
	}
	cr_assert(eq(int, l->err, 0), "load failed: %s", strerror(-l->err));
	cr_log_info(
		"acked %llu, final %llu, lost %llu, twice %llu, dup %llu, failed %llu",
		(unsigned long long)l->res.acked,
		(unsigned long long)l->res.final_sum,
		(unsigned long long)l->res.lost,
		(unsigned long long)l->res.phantom,
		(unsigned long long)l->res.duplicated,
		(unsigned long long)l->res.failed);
	cr_assert(gt(u64, l->res.acked, 0));
	cr_assert(eq(u64, l->res.failed, 0));
	cr_assert(eq(u64, l->res.lost, 0));
	cr_assert(eq(u64, l->res.phantom, 0));
	cr_assert(eq(u64, l->res.duplicated, 0));
	cr_assert(eq(u64, l->res.final_sum, l->res.acked));
}
