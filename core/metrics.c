// SPDX-License-Identifier: MIT
/*
 * Per-epoch metrics: JSON lines to --stats, pause-time quantiles, and the
 * counters and histograms other threads read (--metrics, --control)
 * through kemari_engine__stats(), all under one lock: the engine takes it
 * once per epoch, a reader once per snapshot.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "engine_priv.h"
#include "kemari/kemari.h"

const uint64_t kemari_hist_us_bounds[KEMARI_HIST_BUCKETS - 1] = {
	25,   50,    100,   250,   500,	   1000,   2500,
	5000, 10000, 25000, 50000, 100000, 250000, 1000000,
};
const uint64_t kemari_hist_pages_bounds[KEMARI_HIST_BUCKETS - 1] = {
	0,    1,     4,	    16,	    64,	     256,     1024,
	4096, 16384, 65536, 262144, 1048576, 4194304, 16777216,
};

static const char *const state_names[] = {
	[KEMARI_STATE_SYNCING] = "syncing",
	[KEMARI_STATE_PROTECTED] = "protected",
	[KEMARI_STATE_UNPROTECTED] = "unprotected",
	[KEMARI_STATE_TAKEN_OVER] = "taken-over",
};

static const char *const phase_names[] = {
	[KEMARI_PHASE_HARVEST] = "harvest",
	[KEMARI_PHASE_STATE] = "state",
	[KEMARI_PHASE_PUSH] = "push",
	[KEMARI_PHASE_COMMIT_ACK] = "commit_ack",
};

const char *kemari_state__name(enum kemari_state s)
{
	return (unsigned int)s < KEMARI_ARRAY_SIZE(state_names) ? state_names[s]
								: "?";
}

const char *kemari_phase__name(enum kemari_phase p)
{
	return (unsigned int)p < KEMARI_ARRAY_SIZE(phase_names) ? phase_names[p]
								: "?";
}

static void hist__add(struct kemari_hist *h, const uint64_t *bounds, uint64_t v)
{
	unsigned int i = 0;

	while (i < KEMARI_HIST_BUCKETS - 1 && v > bounds[i])
		i++;
	h->bucket[i]++;
	h->count++;
	h->sum += v;
}

int metrics__open(struct kemari_metrics *m, const char *path)
{
	memset(m, 0, sizeof(*m));
	pthread_mutex_init(&m->lock, NULL);
	if (!path)
		return 0;
	m->stats = fopen(path, "w");
	if (!m->stats) {
		int err = -errno;

		pthread_mutex_destroy(&m->lock);
		return kemari_err(err, "--stats=%s: %s", path, strerror(-err));
	}
	return 0;
}

void metrics__close(struct kemari_metrics *m)
{
	if (m->stats)
		fclose(m->stats);
	free(m->pause_us);
	pthread_mutex_destroy(&m->lock);
	memset(m, 0, sizeof(*m));
}

void metrics__record(struct kemari_metrics *m,
		     const struct kemari_epoch_stats *s)
{
	const uint64_t phase[KEMARI_NPHASES] = {
		[KEMARI_PHASE_HARVEST] = s->harvest_us,
		[KEMARI_PHASE_STATE] = s->state_us,
		[KEMARI_PHASE_PUSH] = s->push_us,
		[KEMARI_PHASE_COMMIT_ACK] = s->commit_ack_us,
	};

	pthread_mutex_lock(&m->lock);
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
	m->epoch = s->epoch;
	m->epochs++;
	m->bytes += s->bytes;
	m->pages += s->dirty_pages;
	hist__add(&m->pause, kemari_hist_us_bounds, s->pause_us);
	for (unsigned int i = 0; i < KEMARI_NPHASES; i++)
		hist__add(&m->phase[i], kemari_hist_us_bounds, phase[i]);
	hist__add(&m->dirty, kemari_hist_pages_bounds, s->dirty_pages);
	pthread_mutex_unlock(&m->lock);
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

void metrics__committed(struct kemari_engine *e, uint64_t epoch)
{
	pthread_mutex_lock(&e->metrics.lock);
	e->metrics.epoch = epoch;
	/* Epoch 0, the initial sync, is no epoch on the primary either. */
	if (epoch)
		e->metrics.epochs++;
	pthread_mutex_unlock(&e->metrics.lock);
	atomic_store(&e->state, KEMARI_STATE_PROTECTED);
}

void metrics__takeover(struct kemari_engine *e)
{
	pthread_mutex_lock(&e->metrics.lock);
	e->metrics.takeovers++;
	pthread_mutex_unlock(&e->metrics.lock);
	atomic_store(&e->state, KEMARI_STATE_TAKEN_OVER);
}

/*
 * One heartbeat period of silence is normal (the peer beats when its
 * period ends); each further whole period counts as one missed heartbeat,
 * once per silence: the count restarts when a message arrives.
 */
void metrics__silence(struct kemari_engine *e, uint64_t now_ns)
{
	struct kemari_metrics *m = &e->metrics;
	uint64_t period = (uint64_t)e->cfg.heartbeat_ms * 1000000ULL;
	uint64_t missed;

	if (!period || now_ns <= e->last_rx_ns)
		return;
	missed = (now_ns - e->last_rx_ns) / period;
	missed = missed ? missed - 1 : 0;
	pthread_mutex_lock(&m->lock);
	if (m->silence_rx_ns != e->last_rx_ns) {
		m->silence_rx_ns = e->last_rx_ns;
		m->silence_missed = 0;
	}
	if (missed > m->silence_missed) {
		m->heartbeats_missed += missed - m->silence_missed;
		m->silence_missed = missed;
	}
	pthread_mutex_unlock(&m->lock);
}

/* A pause of this side's own (engine__silence), pause_ns long. */
void metrics__own_pause(struct kemari_engine *e, uint64_t pause_ns)
{
	struct kemari_metrics *m = &e->metrics;

	pthread_mutex_lock(&m->lock);
	m->own_pauses++;
	m->own_pause_max_ms =
		KEMARI_MAX(m->own_pause_max_ms, pause_ns / 1000000);
	pthread_mutex_unlock(&m->lock);
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* The pauses so far, sorted, in a copy the caller frees; *n may be 0. */
static int metrics__sorted(struct kemari_metrics *m, uint32_t **out, size_t *n)
{
	uint32_t *tmp;

	pthread_mutex_lock(&m->lock);
	*n = m->n;
	tmp = malloc((m->n ? m->n : 1) * sizeof(*tmp));
	if (tmp)
		memcpy(tmp, m->pause_us, m->n * sizeof(*tmp));
	pthread_mutex_unlock(&m->lock);
	if (!tmp)
		return -ENOMEM;
	qsort(tmp, *n, sizeof(*tmp), cmp_u32);
	*out = tmp;
	return 0;
}

/* Nearest-rank: the smallest value with at least q of samples <= it. */
static uint64_t quantile(const uint32_t *sorted, size_t n, double q)
{
	size_t idx = (size_t)(q * (double)n + 0.999999);

	idx = idx ? idx - 1 : 0;
	return sorted[KEMARI_MIN(idx, n - 1)];
}

int metrics__quantile(struct kemari_metrics *m, double q, uint64_t *out)
{
	uint32_t *tmp;
	size_t n;
	int err = metrics__sorted(m, &tmp, &n);

	if (err)
		return err;
	if (n)
		*out = quantile(tmp, n, q);
	free(tmp);
	return n ? 0 : -ENODATA;
}

void metrics__summary(struct kemari_metrics *m, FILE *f)
{
	uint32_t *tmp;
	size_t n;

	if (metrics__sorted(m, &tmp, &n))
		return;
	if (!n) {
		free(tmp);
		fprintf(f, "pause summary: 0 epochs\n");
		return;
	}
	fprintf(f,
		"pause summary: %zu epochs, p50 %llu us, p99 %llu us, max %llu us\n",
		n, (unsigned long long)quantile(tmp, n, 0.5),
		(unsigned long long)quantile(tmp, n, 0.99),
		(unsigned long long)quantile(tmp, n, 1.0));
	fflush(f);
	free(tmp);
}

int kemari_engine__stats(struct kemari_engine *e, struct kemari_engine_stats *s)
{
	struct kemari_metrics *m = &e->metrics;
	uint32_t *sorted;
	size_t n;
	int err;

	memset(s, 0, sizeof(*s));
	err = metrics__sorted(m, &sorted, &n);
	if (err)
		return err;
	s->role = e->cfg.role;
	s->state = (enum kemari_state)atomic_load(&e->state);
	s->peer = e->cfg.role == KEMARI_ROLE_PRIMARY	 ? e->cfg.peer
		  : e->cfg.role == KEMARI_ROLE_SECONDARY ? e->cfg.listen
							 : NULL;
	s->peer_connected = s->state == KEMARI_STATE_PROTECTED;
	s->ram_bytes = e->ram_size;
	s->ncpus = e->cfg.hv_cfg.ncpus;
	s->uptime_ms = (kemari_now_ns() - e->start_ns) / 1000000;
	pthread_mutex_lock(&m->lock);
	s->epoch = m->epoch;
	s->epochs = m->epochs;
	s->bytes = m->bytes;
	s->pages = m->pages;
	s->heartbeats_missed = m->heartbeats_missed;
	s->own_pauses = m->own_pauses;
	s->own_pause_max_ms = m->own_pause_max_ms;
	s->takeovers = m->takeovers;
	s->last_pause_us = m->n ? m->pause_us[m->n - 1] : 0;
	s->pause_us = m->pause;
	memcpy(s->phase_us, m->phase, sizeof(s->phase_us));
	s->dirty_pages = m->dirty;
	pthread_mutex_unlock(&m->lock);
	if (n) {
		s->p50_pause_us = quantile(sorted, n, 0.5);
		s->p99_pause_us = quantile(sorted, n, 0.99);
	}
	free(sorted);
	return 0;
}
