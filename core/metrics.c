// SPDX-License-Identifier: MIT
/* Per-epoch metrics: JSON lines to --stats, pause-time quantiles. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "engine_priv.h"
#include "kemari/kemari.h"

int metrics__open(struct kemari_metrics *m, const char *path)
{
	memset(m, 0, sizeof(*m));
	if (!path)
		return 0;
	m->stats = fopen(path, "w");
	if (!m->stats)
		return kemari_err(-errno, "--stats=%s: %s", path,
				  strerror(errno));
	return 0;
}

void metrics__close(struct kemari_metrics *m)
{
	if (m->stats)
		fclose(m->stats);
	free(m->pause_us);
	memset(m, 0, sizeof(*m));
}

void metrics__record(struct kemari_metrics *m,
		     const struct kemari_epoch_stats *s)
{
	if (m->n == m->cap) {
		size_t ncap = m->cap ? m->cap * 2 : 1024;
		uint32_t *p = realloc(m->pause_us, ncap * sizeof(*p));

		if (p) {
			m->pause_us = p;
			m->cap = ncap;
		}
	}
	if (m->n < m->cap)
		m->pause_us[m->n++] =
			(uint32_t)KEMARI_MIN(s->pause_us, (uint64_t)UINT32_MAX);
	if (m->stats) {
		fprintf(m->stats,
			"{\"epoch\":%llu,\"dirty_pages\":%llu,\"runs\":%llu,"
			"\"bytes\":%llu,\"harvest_us\":%llu,\"state_us\":%llu,"
			"\"push_us\":%llu,\"commit_ack_us\":%llu,"
			"\"pause_us\":%llu,\"spec_pages\":%llu,"
			"\"spec_wait_us\":%llu}\n",
			(unsigned long long)s->epoch,
			(unsigned long long)s->dirty_pages,
			(unsigned long long)s->runs,
			(unsigned long long)s->bytes,
			(unsigned long long)s->harvest_us,
			(unsigned long long)s->state_us,
			(unsigned long long)s->push_us,
			(unsigned long long)s->commit_ack_us,
			(unsigned long long)s->pause_us,
			(unsigned long long)s->spec_pages,
			(unsigned long long)s->spec_wait_us);
		fflush(m->stats);
	}
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

int metrics__quantile(const struct kemari_metrics *m, double q, uint64_t *out)
{
	uint32_t *tmp;
	size_t idx;

	if (!m->n)
		return -ENODATA;
	tmp = malloc(m->n * sizeof(*tmp));
	if (!tmp)
		return -ENOMEM;
	memcpy(tmp, m->pause_us, m->n * sizeof(*tmp));
	qsort(tmp, m->n, sizeof(*tmp), cmp_u32);
	/* Nearest-rank: the smallest value with at least q of samples <= it. */
	idx = (size_t)(q * (double)m->n + 0.999999);
	idx = idx ? idx - 1 : 0;
	if (idx >= m->n)
		idx = m->n - 1;
	*out = tmp[idx];
	free(tmp);
	return 0;
}

void metrics__summary(const struct kemari_metrics *m, FILE *f)
{
	uint64_t p50, p99, max;

	if (metrics__quantile(m, 0.5, &p50) ||
	    metrics__quantile(m, 0.99, &p99) ||
	    metrics__quantile(m, 1.0, &max)) {
		fprintf(f, "pause summary: 0 epochs\n");
		return;
	}
	fprintf(f,
		"pause summary: %zu epochs, p50 %llu us, p99 %llu us, max %llu us\n",
		m->n, (unsigned long long)p50, (unsigned long long)p99,
		(unsigned long long)max);
	fflush(f);
}
