// SPDX-License-Identifier: MIT
/*
 * The secondary's side of a replication connection (secondary__serve):
 * the version check, the key exchange's first steps, HELLO, then RUNS,
 * CPU_STATE, DEV_STATE, VERIFY and COMMIT messages and page data, each
 * committed epoch copied into the replica. Input: one flags byte
 * (FUZZ_SEC_*), then harness.h's records.
 *
 * Beyond the sanitizers: a serve never ends in a takeover without a
 * committed epoch and its state, without one the replica is untouched,
 * and what an epoch buffers stays within its caps (secondary.c).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_priv.h"
#include "harness.h"
#include "kemari/buf.h"
#include "kemari/kemari.h"
#include "kemari/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct kemari_hv_ops fuzz_hv = { .name = FUZZ_HV_NAME };
static struct kemari_engine *eng;
static uint8_t zero[FUZZ_RAM_PAGES * KEMARI_PAGE_SIZE];
static uint64_t ram_size = (uint64_t)FUZZ_RAM_PAGES * KEMARI_PAGE_SIZE;

static void setup(void)
{
	eng = calloc(1, sizeof(*eng));
	if (!eng)
		abort();
	/* What kemari_engine__create sets up that serving reads. */
	pthread_mutex_init(&eng->metrics.lock, NULL);
	eng->fence.fd = -1; /* no --fence */
	eng->cfg.role = KEMARI_ROLE_SECONDARY;
	eng->cfg.hv = &fuzz_hv;
	eng->cfg.hv_cfg.ncpus = FUZZ_NCPUS;
	eng->cfg.heartbeat_ms = 100;
	eng->cfg.heartbeat_timeout_ms = 1000;
	eng->ram_size = ram_size;
	eng->npages = FUZZ_RAM_PAGES;
	eng->image_hash = FUZZ_IMAGE_HASH;
	eng->ram = malloc(ram_size);
	/* Two banks of receive buffers, as secondary__run maps them for a
	 * one-sided transport; a stream one uses the first. */
	eng->shadow = malloc(2 * ram_size);
	if (!eng->ram || !eng->shadow)
		abort();
	memset(eng->key.bytes, 0x4b, sizeof(eng->key.bytes));
	snprintf(eng->key.path, sizeof(eng->key.path), "fuzz.key");
	fuzz__quiet();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_xport f;
	enum serve_end end;
	uint8_t flags;

	if (!eng)
		setup();
	if (size < 1)
		return 0;
	flags = data[0];
	/* The replica starts out zero: without a commit it stays so. */
	memset(eng->ram, 0, ram_size);
	eng->shadow_len = flags & FUZZ_SEC_ONESIDED ? 2 * ram_size : ram_size;
	memset(eng->shadow, 0, eng->shadow_len);
	eng->have_key = flags & FUZZ_SEC_KEY;
	eng->epoch = 0;
	fuzz_xport__init(&f, data + 1, size - 1,
			 flags & FUZZ_SEC_ONESIDED ? KEMARI_XPORT_CAP_ONESIDED
						   : 0);
	eng->conn = &f.x;
	end = secondary__serve(eng);
	if (end == SERVE_TAKEOVER && !eng->have_commit)
		abort(); /* a takeover with nothing committed */
	if (!eng->have_commit && memcmp(eng->ram, zero, ram_size))
		abort(); /* the replica changed without a commit */
	if (end == SERVE_TAKEOVER &&
	    (!eng->cpu_committed.len || !eng->dev_committed.len))
		abort(); /* a takeover from an epoch without its state */
	if (eng->pend_pages > FUZZ_RAM_PAGES ||
	    eng->pend_runs.len > FUZZ_RAM_PAGES * sizeof(struct kemari_run))
		abort(); /* an epoch's run list over its cap */
	eng->conn = NULL;
	fuzz_xport__fini(&f);
	kemari_err_clear();
	return 0;
}

/* One epoch: its page data, run list, state and commit. */
static void seed_epoch(struct kemari_buf *b, uint8_t epoch,
		       const struct kemari_run *runs, unsigned int n,
		       uint32_t flags)
{
	struct kemari_commit c = { .nruns = n, .flags = flags };
	static uint8_t page[4 + KEMARI_PAGE_SIZE];

	for (unsigned int i = 0; i < n; i++) {
		uint32_t off = (uint32_t)(runs[i].pfn * KEMARI_PAGE_SIZE);

		memcpy(page, &off, sizeof(off));
		memset(page + 4, 0x40 + epoch, KEMARI_PAGE_SIZE);
		fuzz__rec(b, KEMARI_MSG_PAGES, 0, page, sizeof(page));
		c.npages += runs[i].npages;
	}
	c.runs_crc = kemari_crc32c(0, runs, n * sizeof(*runs));
	fuzz__rec(b, KEMARI_MSG_RUNS, epoch, runs,
		  (uint16_t)(n * sizeof(*runs)));
	fuzz__rec(b, KEMARI_MSG_CPU_STATE, epoch, "cpu", 3);
	fuzz__rec(b, KEMARI_MSG_DEV_STATE, epoch, "dev", 3);
	fuzz__rec(b, KEMARI_MSG_COMMIT, epoch, &c, sizeof(c));
}

static void seed_stream(const char *name, uint8_t flags, int end)
{
	static const struct kemari_run r0[] = { { .pfn = 0, .npages = 1 } },
				       r1[] = { { .pfn = 3, .npages = 2 },
						{ .pfn = 15, .npages = 1 } };
	struct kemari_hello h = {
		.proto_version = KEMARI_PROTO_VERSION,
		.page_size = KEMARI_PAGE_SIZE,
		.ram_size = (uint64_t)FUZZ_RAM_PAGES * KEMARI_PAGE_SIZE,
		.image_hash = FUZZ_IMAGE_HASH,
		.ncpus = FUZZ_NCPUS,
	};
	uint8_t verify[8 + 4 * FUZZ_RAM_PAGES] = { 0 };
	struct kemari_buf b = { 0 };

	snprintf(h.hv, sizeof(h.hv), "%s", FUZZ_HV_NAME);
	kemari_buf__append(&b, &flags, 1);
	fuzz__rec(&b, KEMARI_MSG_HELLO, 0, &h, sizeof(h));
	seed_epoch(&b, 0, r0, 1, KEMARI_COMMIT_INITIAL);
	fuzz__rec(&b, KEMARI_MSG_HEARTBEAT, 0, NULL, 0);
	fuzz__rec(&b, KEMARI_MSG_VERIFY, 1, verify, sizeof(verify));
	seed_epoch(&b, 1, r1, 2, 0);
	if (end)
		fuzz__rec(&b, (uint8_t)end, 1, NULL, 0);
	fuzz__seed(name, b.data, b.len);
	kemari_buf__fini(&b);
}

/*
 * Epoch 0 committed, then epoch 1's runs, each inside RAM, listing more
 * pages than RAM has: dropped there, never taken over from (the FAILED
 * after it is not read).
 */
static void seed_over_ram(void)
{
	static const struct kemari_run r0[] = { { .pfn = 0, .npages = 1 } },
				       all = { .pfn = 0,
					       .npages = FUZZ_RAM_PAGES },
				       more = { .pfn = 3, .npages = 1 };
	struct kemari_hello h = {
		.proto_version = KEMARI_PROTO_VERSION,
		.page_size = KEMARI_PAGE_SIZE,
		.ram_size = (uint64_t)FUZZ_RAM_PAGES * KEMARI_PAGE_SIZE,
		.image_hash = FUZZ_IMAGE_HASH,
		.ncpus = FUZZ_NCPUS,
	};
	struct kemari_buf b = { 0 };
	uint8_t flags = 0;

	snprintf(h.hv, sizeof(h.hv), "%s", FUZZ_HV_NAME);
	kemari_buf__append(&b, &flags, 1);
	fuzz__rec(&b, KEMARI_MSG_HELLO, 0, &h, sizeof(h));
	seed_epoch(&b, 0, r0, 1, KEMARI_COMMIT_INITIAL);
	fuzz__rec(&b, KEMARI_MSG_RUNS, 1, &all, sizeof(all));
	fuzz__rec(&b, KEMARI_MSG_RUNS, 1, &more, sizeof(more));
	fuzz__rec(&b, KEMARI_MSG_CPU_STATE, 1, "cpu", 3);
	fuzz__rec(&b, KEMARI_MSG_FAILED, 1, NULL, 0);
	fuzz__seed("runs-over-ram", b.data, b.len);
	kemari_buf__fini(&b);
}

void fuzz_seeds(void)
{
	struct kemari_auth a = { .proto_version = KEMARI_PROTO_VERSION,
				 .step = KEMARI_AUTH_INIT };
	struct kemari_buf b = { 0 };
	uint8_t flags = FUZZ_SEC_KEY;

	seed_stream("bye", 0, KEMARI_MSG_BYE);
	seed_stream("lost", 0, 0);
	seed_stream("failed", 0, KEMARI_MSG_FAILED);
	seed_stream("switchover", 0, KEMARI_MSG_SWITCHOVER);
	seed_stream("onesided", FUZZ_SEC_ONESIDED, KEMARI_MSG_BYE);
	seed_over_ram();
	kemari_buf__append(&b, &flags, 1);
	fuzz__rec(&b, KEMARI_MSG_AUTH, 0, &a, sizeof(a));
	fuzz__seed("keyed", b.data, b.len);
	kemari_buf__fini(&b);
}
