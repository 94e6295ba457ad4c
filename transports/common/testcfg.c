// SPDX-License-Identifier: MIT
/* The transports' test knobs, read once (see testcfg.h). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kemari/kemari.h"
#include "testcfg.h"

static struct xp_testcfg testcfg;
static pthread_once_t testcfg_once = PTHREAD_ONCE_INIT;

static uint64_t size_or_0(const char *s)
{
	uint64_t k;

	return kemari_parse_size(s, &k) ? 0 : k;
}

void xp_testcfg__parse(struct xp_testcfg *c, const char *mr_max,
		       const char *commit, const char *no_saw)
{
	memset(c, 0, sizeof(*c));
	if (mr_max && *mr_max) {
		const char *comma = strchr(mr_max, ',');
		char first[32];

		snprintf(first, sizeof(first), "%.*s",
			 comma ? (int)(comma - mr_max) : (int)strlen(mr_max),
			 mr_max);
		c->rdma_mr_max_src = size_or_0(first);
		/* One size: both. */
		c->rdma_mr_max_dst =
			comma ? size_or_0(comma + 1) : c->rdma_mr_max_src;
	}
	c->rdma_commit_send = commit && !strcmp(commit, "send");
	c->ofi_no_saw = no_saw != NULL;
}

static void testcfg_read(void)
{
	xp_testcfg__parse(&testcfg, getenv("KEMARI_RDMA_MR_MAX"),
			  getenv("KEMARI_RDMA_COMMIT"),
			  getenv("KEMARI_OFI_NO_SAW"));
}

const struct xp_testcfg *xp_testcfg__get(void)
{
	pthread_once(&testcfg_once, testcfg_read);
	return &testcfg;
}
