// SPDX-License-Identifier: MIT
/* The test knobs, read once (see include/kemari/testcfg.h). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kemari/kemari.h"
#include "kemari/testcfg.h"

static struct kemari_testcfg testcfg;
static pthread_once_t testcfg_once = PTHREAD_ONCE_INIT;

static uint64_t size_or_0(const char *s)
{
	uint64_t k;

	return kemari_parse_size(s, &k) ? 0 : k;
}

void kemari_testcfg__parse(struct kemari_testcfg *c,
			   const char *(*get)(const char *name))
{
	const char *mr_max = get("KEMARI_RDMA_MR_MAX");
	const char *commit = get("KEMARI_RDMA_COMMIT");
	const char *v;

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
	c->ofi_no_saw = get("KEMARI_OFI_NO_SAW") != NULL;
	v = get("KEMARI_TEST_PROTO_VERSION");
	c->proto_version = v ? (uint32_t)strtoul(v, NULL, 10) : 0;
	v = get("KEMARI_TEST_TSC_KHZ");
	c->tsc_khz = v ? (uint32_t)strtoul(v, NULL, 10) : 0;
	v = get("KEMARI_KVM_DEV");
	c->kvm_dev = v && *v ? v : NULL;
	c->kvm_la57 = get("KEMARI_KVM_LA57") != NULL;
	v = get("KEMARI_TEST_SLOW_FLUSH");
	c->slow_flush_ms = v ? (uint32_t)strtoul(v, NULL, 10) : 0;
}

static const char *env(const char *name)
{
	return getenv(name);
}

static void testcfg_read(void)
{
	kemari_testcfg__parse(&testcfg, env);
}

const struct kemari_testcfg *kemari_testcfg__get(void)
{
	pthread_once(&testcfg_once, testcfg_read);
	return &testcfg;
}
