// SPDX-License-Identifier: MIT
/*
 * --verify-replica (testing): at every commit point the primary hashes each
 * page of guest RAM and
 *  - names every page whose content changed since the last commit point
 *    although the hypervisor's dirty tracking and the device backends did
 *    not report it (a page the replica would silently miss), and
 *  - sends the hashes (VERIFY messages before the COMMIT), so the
 *    secondary, once it has applied the epoch, compares its replica page by
 *    page and names the first pages that differ.
 * So "the replica is wrong" is told apart from "the guest crashed by itself".
 * The cost is a pass over all of RAM per checked epoch on both sides: tests
 * only. With --verify-replica=N only every N-th commit is checked; a page
 * counts as reported if any epoch since the last check carried it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "engine_priv.h"
#include "kemari/kemari.h"

#define VERIFY_REPORT_MAX 3 /* pages named per epoch */

/* Not cryptographic: it only has to notice changes, at memory speed. */
static uint32_t verify__page_hash(const uint8_t *p)
{
	const uint64_t *w = (const uint64_t *)p;
	uint64_t h = 0x9e3779b97f4a7c15ULL;

	for (unsigned int i = 0; i < KEMARI_PAGE_SIZE / 8; i += 2) {
		h ^= w[i] * 0xff51afd7ed558ccdULL;
		h = (h << 31 | h >> 33) * 0xc4ceb9fe1a85ec53ULL;
		h ^= w[i + 1];
	}
	h ^= h >> 29;
	return (uint32_t)(h ^ h >> 32);
}

static int verify__alloc(struct kemari_engine *e)
{
	if (e->verify_cur)
		return 0;
	e->verify_cur = calloc(e->npages, sizeof(uint32_t));
	e->verify_prev = calloc(e->npages, sizeof(uint32_t));
	if (!e->verify_cur || !e->verify_prev)
		return -ENOMEM;
	return kemari_dirty__init(&e->verify_seen, e->npages);
}

/* Pages this epoch carries: reported, whether checked now or later. */
static void verify__note(struct kemari_engine *e)
{
	for (uint64_t i = 0; i < e->dirty.count; i++)
		kemari_dirty__mark(&e->verify_seen, e->dirty.pfns[i]);
	for (uint64_t i = 0; i < e->epoch_set.count; i++)
		kemari_dirty__mark(&e->verify_seen, e->epoch_set.pfns[i]);
}

int verify__primary(struct kemari_engine *e, uint64_t epoch, bool initial)
{
	size_t per = (kemari_xport__max_msg(e->conn) - sizeof(uint64_t)) /
		     sizeof(uint32_t);
	uint64_t missed = 0, first = 0;
	uint32_t *tmp;
	uint8_t *msg;
	int err = verify__alloc(e);

	if (err)
		return err;
	verify__note(e);
	if (!initial && epoch % e->cfg.verify_every)
		return 0;
	for (uint64_t p = 0; p < e->npages; p++) {
		e->verify_cur[p] =
			verify__page_hash(e->ram + p * KEMARI_PAGE_SIZE);
		if (initial || e->verify_cur[p] == e->verify_prev[p] ||
		    kemari_dirty__test(&e->verify_seen, p))
			continue;
		if (!missed++)
			first = p;
		if (missed <= VERIFY_REPORT_MAX)
			kemari_error(
				"replica check: epoch %llu: page %llu (gpa 0x%llx) changed since the last commit but neither the dirty tracking nor a device backend reported it: the replica misses it",
				(unsigned long long)epoch,
				(unsigned long long)p,
				(unsigned long long)(p * KEMARI_PAGE_SIZE));
	}
	if (missed) {
		e->verify_missed += missed;
		kemari_error(
			"replica check: epoch %llu: %llu changed pages unreported (first %llu)",
			(unsigned long long)epoch, (unsigned long long)missed,
			(unsigned long long)first);
	}
	e->verify_epochs++;
	kemari_dirty__clear(&e->verify_seen);
	tmp = e->verify_prev;
	e->verify_prev = e->verify_cur;
	e->verify_cur = tmp;

	msg = malloc(sizeof(uint64_t) + per * sizeof(uint32_t));
	if (!msg)
		return -ENOMEM;
	for (uint64_t p = 0; p < e->npages && !err; p += per) {
		uint64_t k = KEMARI_MIN((uint64_t)per, e->npages - p);

		memcpy(msg, &p, sizeof(p));
		memcpy(msg + sizeof(p), e->verify_prev + p,
		       k * sizeof(uint32_t));
		err = kemari_xport__send(
			e->conn, KEMARI_MSG_VERIFY, epoch, msg,
			(uint32_t)(sizeof(p) + k * sizeof(uint32_t)));
	}
	free(msg);
	return err;
}

int verify__stash(struct kemari_engine *e, const struct kemari_msg *m)
{
	uint64_t first, have = e->pend_verify.len / sizeof(uint32_t);

	if (m->len < sizeof(first) ||
	    (m->len - sizeof(first)) % sizeof(uint32_t))
		return kemari_err(-EBADMSG, "VERIFY message of %u bytes",
				  m->len);
	memcpy(&first, m->payload, sizeof(first));
	if (first != have ||
	    (m->len - sizeof(first)) / sizeof(uint32_t) > e->npages - have)
		return kemari_err(-EBADMSG,
				  "VERIFY message for page %llu, expected %llu",
				  (unsigned long long)first,
				  (unsigned long long)have);
	return kemari_buf__append(&e->pend_verify,
				  (const uint8_t *)m->payload + sizeof(first),
				  m->len - sizeof(first));
}

void verify__secondary(struct kemari_engine *e, const struct kemari_run *runs,
		       size_t nruns)
{
	const uint32_t *want = (const uint32_t *)e->pend_verify.data;
	uint64_t bad = 0;

	if (!e->pend_verify.len)
		return;
	if (e->pend_verify.len != e->npages * sizeof(uint32_t)) {
		kemari_error(
			"replica check: epoch %llu: hashes for %zu of %llu pages arrived",
			(unsigned long long)e->epoch,
			e->pend_verify.len / sizeof(uint32_t),
			(unsigned long long)e->npages);
		e->verify_bad++;
		goto out;
	}
	for (uint64_t p = 0; p < e->npages; p++) {
		bool in_runs = false;

		if (verify__page_hash(e->ram + p * KEMARI_PAGE_SIZE) == want[p])
			continue;
		if (++bad > VERIFY_REPORT_MAX)
			continue;
		for (size_t i = 0; i < nruns && !in_runs; i++)
			in_runs = p >= runs[i].pfn &&
				  p < runs[i].pfn + runs[i].npages;
		kemari_error(
			"replica check: epoch %llu: page %llu (gpa 0x%llx) of the replica differs from the primary's (%s)",
			(unsigned long long)e->epoch, (unsigned long long)p,
			(unsigned long long)(p * KEMARI_PAGE_SIZE),
			in_runs ? "it was in this epoch's runs: pushed or applied wrong"
				: "not in this epoch's runs: an earlier epoch missed it, or pushed it wrong");
	}
	e->verify_bad += bad;
	e->verify_epochs++;
out:
	kemari_buf__reset(&e->pend_verify);
}

void verify__report(struct kemari_engine *e, bool primary)
{
	uint64_t bad = primary ? e->verify_missed : e->verify_bad;

	if (!e->verify_epochs)
		return;
	if (bad)
		kemari_error("replica check: %llu epochs checked, %llu %s",
			     (unsigned long long)e->verify_epochs,
			     (unsigned long long)bad,
			     primary ? "changed pages went unreported"
				     : "pages of the replica differed");
	else
		kemari_info(
			"replica check: %llu epochs checked, %s",
			(unsigned long long)e->verify_epochs,
			primary ? "every changed page was reported"
				: "the replica equalled the primary's RAM at every commit");
	/* A side that changes roles (switchover) reports each part alone. */
	e->verify_epochs = e->verify_missed = e->verify_bad = 0;
}

void verify__fini(struct kemari_engine *e)
{
	free(e->verify_cur);
	free(e->verify_prev);
	kemari_dirty__fini(&e->verify_seen);
	kemari_buf__fini(&e->pend_verify);
}
