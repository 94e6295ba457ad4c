// SPDX-License-Identifier: MIT
/*
 * Prometheus text exposition of an engine snapshot. Times in seconds,
 * counters named *_total; histograms cumulative per the format.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "kemari/kemari.h"
#include "kemari/prom.h"

struct prom {
	struct kemari_buf *out;
	int err;
};

static void prom__printf(struct prom *p, const char *fmt, ...)
	KEMARI_PRINTF(2, 3);
static void prom__printf(struct prom *p, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (p->err)
		return;
	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || kemari_buf__reserve(p->out, (size_t)n + 1)) {
		p->err = -ENOMEM;
		return;
	}
	va_start(ap, fmt);
	vsnprintf((char *)p->out->data + p->out->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	p->out->len += (size_t)n;
}

static void prom__head(struct prom *p, const char *name, const char *type,
		       const char *help)
{
	prom__printf(p, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void prom__value(struct prom *p, const char *name, const char *type,
			const char *help, uint64_t v)
{
	prom__head(p, name, type, help);
	prom__printf(p, "%s %llu\n", name, (unsigned long long)v);
}

/*
 * One histogram's samples; labels is "" or `phase="push",`; scale turns
 * the bounds and sum into the exposed unit (1e-6: microseconds to
 * seconds).
 */
static void prom__hist(struct prom *p, const char *name, const char *labels,
		       const struct kemari_hist *h, const uint64_t *bounds,
		       double scale)
{
	uint64_t cum = 0;

	for (unsigned int i = 0; i < KEMARI_HIST_BUCKETS; i++) {
		cum += h->bucket[i];
		if (i < KEMARI_HIST_BUCKETS - 1)
			prom__printf(p, "%s_bucket{%sle=\"%.9g\"} %llu\n", name,
				     labels, (double)bounds[i] * scale,
				     (unsigned long long)cum);
		else
			prom__printf(p, "%s_bucket{%sle=\"+Inf\"} %llu\n", name,
				     labels, (unsigned long long)cum);
	}
	/* The label set without its trailing comma, for _sum and _count. */
	if (*labels) {
		int n = (int)strlen(labels) - 1;

		prom__printf(p, "%s_sum{%.*s} %.9g\n%s_count{%.*s} %llu\n",
			     name, n, labels, (double)h->sum * scale, name, n,
			     labels, (unsigned long long)h->count);
	} else {
		prom__printf(p, "%s_sum %.9g\n%s_count %llu\n", name,
			     (double)h->sum * scale, name,
			     (unsigned long long)h->count);
	}
}

int kemari_prom__render(const struct kemari_engine_stats *s,
			struct kemari_buf *out)
{
	static const char *const roles[] = { "standalone", "primary",
					     "secondary" };
	struct prom p = { .out = out };
	char labels[64];

	prom__head(&p, "kemari_info", "gauge",
		   "This process: its role, state and version (always 1).");
	prom__printf(&p,
		     "kemari_info{role=\"%s\",state=\"%s\",version=\"%s\"} 1\n",
		     (unsigned int)s->role < 3 ? roles[s->role] : "?",
		     kemari_state__name(s->state), KEMARI_VERSION);
	prom__value(&p, "kemari_protected", "gauge",
		    "1 while a secondary holds the guest's last epoch.",
		    s->state == KEMARI_STATE_PROTECTED);
	prom__value(&p, "kemari_epoch", "gauge",
		    "The last committed epoch (primary: acknowledged).",
		    s->epoch);
	prom__value(
		&p, "kemari_epochs_total", "counter",
		"Epochs completed (secondary: committed) after the initial sync.",
		s->epochs);
	prom__value(&p, "kemari_pushed_bytes_total", "counter",
		    "Bytes of guest pages pushed to the secondary in epochs.",
		    s->bytes);
	prom__value(&p, "kemari_pushed_pages_total", "counter",
		    "Guest pages pushed to the secondary in epochs.", s->pages);
	prom__value(
		&p, "kemari_heartbeats_missed_total", "counter",
		"Heartbeat periods the peer stayed silent beyond the first.",
		s->heartbeats_missed);
	prom__value(&p, "kemari_takeovers_total", "counter",
		    "Times this secondary resumed the guest.", s->takeovers);
	prom__value(
		&p, "kemari_own_pauses_total", "counter",
		"Times this side did not look for its peer for over half the heartbeat timeout (its process or host stalled); not counted as the peer's silence.",
		s->own_pauses);
	prom__head(&p, "kemari_own_pause_max_seconds", "gauge",
		   "The longest of those pauses.");
	prom__printf(&p, "kemari_own_pause_max_seconds %.3f\n",
		     (double)s->own_pause_max_ms / 1000.0);
	prom__value(&p, "kemari_guest_ram_bytes", "gauge", "Guest RAM.",
		    s->ram_bytes);
	prom__value(&p, "kemari_guest_vcpus", "gauge", "Guest vCPUs.",
		    s->ncpus);
	prom__head(&p, "kemari_uptime_seconds", "gauge",
		   "Seconds since the engine was created.");
	prom__printf(&p, "kemari_uptime_seconds %.3f\n",
		     (double)s->uptime_ms / 1e3);

	prom__head(&p, "kemari_pause_seconds", "histogram",
		   "Time the guest was paused per epoch, tap to release.");
	prom__hist(&p, "kemari_pause_seconds", "", &s->pause_us,
		   kemari_hist_us_bounds, 1e-6);
	prom__head(
		&p, "kemari_pause_phase_seconds", "histogram",
		"The pause's phases per epoch: harvest, state, push, commit_ack.");
	for (unsigned int i = 0; i < KEMARI_NPHASES; i++) {
		snprintf(labels, sizeof(labels), "phase=\"%s\",",
			 kemari_phase__name((enum kemari_phase)i));
		prom__hist(&p, "kemari_pause_phase_seconds", labels,
			   &s->phase_us[i], kemari_hist_us_bounds, 1e-6);
	}
	prom__head(&p, "kemari_dirty_pages", "histogram",
		   "Dirty pages per epoch.");
	prom__hist(&p, "kemari_dirty_pages", "", &s->dirty_pages,
		   kemari_hist_pages_bounds, 1);
	return p.err;
}
